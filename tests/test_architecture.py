"""The directions between apps (.importlinter) hold: pytest checks them too, not only `make test`."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_import_contracts_are_kept():
    # In its own process, as `make test` runs it: lint-imports configures logging for itself, which would
    # silence the loggers of the tests that come after it.
    result = subprocess.run([str(Path(sys.executable).with_name("lint-imports")), "--no-cache"], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_image_copies_every_app_of_the_project(settings):
    dockerfile = (ROOT / "Dockerfile").read_text()
    project_apps = [app for app in settings.INSTALLED_APPS if (ROOT / app).is_dir()]
    assert "deploys" in project_apps and "console" in project_apps
    assert [app for app in project_apps if f"COPY {app} ./{app}\n" not in dockerfile] == []
