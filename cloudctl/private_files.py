"""Files only the control plane's user may read: generated secrets, the local S3 admin keys, the SQLite database.

Modes are set when a file is created (never a moment of umask-given 0644 before a chmod) and tightened on files
an earlier run left looser. This keeps out other users of the machine; it cannot keep out processes running as
the same user, such as the local backend's instances (see README, "The local backend is for trusted code").
No Django import: the settings module uses it.
"""

import os
from pathlib import Path

DIRECTORY_MODE = 0o700
FILE_MODE = 0o600


def _tighten(path: Path, wanted: int) -> None:
    """chmod to `wanted` if looser, on what this user owns (a directory provided by an operator is left alone)."""
    info = path.stat()
    if info.st_uid == os.getuid() and info.st_mode & 0o777 != wanted:
        path.chmod(wanted)


def private_directory(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True, mode=DIRECTORY_MODE)
    _tighten(path, DIRECTORY_MODE)
    return path


def private_file(path: Path) -> Path:
    """Create the file (empty) if missing, 0600 either way; its directory is made private too."""
    private_directory(path.parent)
    os.close(os.open(path, os.O_CREAT | os.O_WRONLY, FILE_MODE))
    _tighten(path, FILE_MODE)
    return path


def write_private_file(path: Path, text: str) -> None:
    private_file(path)
    path.write_text(text)  # an existing file keeps its (now 0600) mode


def read_or_create_secret(path: Path, make) -> str:
    """The secret kept in `path`, created with `make()` on first use."""
    if not path.exists():
        write_private_file(path, make())
    private_file(path)
    return path.read_text().strip()
