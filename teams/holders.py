"""Who holds a lease: `host:pid:random`, so a lease left by a killed process on this host can be taken over."""

import os
import socket
import uuid


def new_holder() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def holder_is_gone(holder: str) -> bool:
    """True when the holder was a process on this host that no longer exists (a killed worker)."""
    host, _, rest = holder.partition(":")
    pid = rest.split(":")[0]
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False
