"""The directions between apps (.importlinter) hold: pytest checks them too, not only `make test`."""

from pathlib import Path

from importlinter.cli import lint_imports

ROOT = Path(__file__).resolve().parent.parent


def test_import_contracts_are_kept(monkeypatch):
    monkeypatch.chdir(ROOT)
    assert lint_imports(config_filename=str(ROOT / ".importlinter"), no_cache=True) == 0


def test_the_image_copies_every_app_of_the_project(settings):
    dockerfile = (ROOT / "Dockerfile").read_text()
    project_apps = [app for app in settings.INSTALLED_APPS if (ROOT / app).is_dir()]
    assert "deploys" in project_apps and "console" in project_apps
    assert [app for app in project_apps if f"COPY {app} ./{app}\n" not in dockerfile] == []
