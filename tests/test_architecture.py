"""The directions between apps (.importlinter) hold: pytest checks them too, not only `make test`."""

import ast
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


def backend_type_checks(source: str) -> list[str]:
    """Where code asks which backend it has instead of asking the backend (a capability or an optional method):
    isinstance/issubclass against a *Backend class, a comparison or a startswith/endswith with a backend class's
    name, or one reading a class's `__name__`."""
    tree = ast.parse(source)
    # Names bound to a backend's dotted path (LOCAL_BACKEND = "...LocalBackend") count as the path itself.
    path_names = {target.id for node in ast.walk(tree) if isinstance(node, ast.Assign)
                  and isinstance(node.value, ast.Constant) and str(node.value.value).endswith("Backend")
                  for target in node.targets if isinstance(target, ast.Name)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("isinstance", "issubclass"):
            classes = node.args[1].elts if isinstance(node.args[1], ast.Tuple) else [node.args[1]]
            if any(ast.unparse(cls).endswith("Backend") for cls in classes):
                found.append(ast.unparse(node))
        is_name_test = isinstance(node, ast.Compare) or (
            isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            and node.func.attr in ("endswith", "startswith"))
        if is_name_test and any(
                (isinstance(part, ast.Constant) and isinstance(part.value, str) and part.value.endswith("Backend"))
                or (isinstance(part, ast.Name) and part.id in path_names)
                or (isinstance(part, ast.Attribute) and part.attr in ("__name__", "__qualname__", "__class__"))
                for part in ast.walk(node)):
            found.append(ast.unparse(node))
    return found


def test_the_checker_finds_each_way_of_asking_for_a_backend_class():
    assert len(backend_type_checks(
        "isinstance(backend, FlyBackend)\nissubclass(cls, (int, backends.LocalBackend))\n"
        "settings.MACHINE_BACKEND.endswith('LocalBackend')\nif path == 'instances.backends.fly.FlyBackend': pass\n"
        "type(backend).__name__ == name\nLOCAL = 'x.LocalBackend'\nsettings.MACHINE_BACKEND != LOCAL\n")) == 6
    assert backend_type_checks("isinstance(observed, BackendError)\nif name == '__main__': pass\n") == []


def test_no_code_asks_which_backend_it_has():
    """Backend-specific behaviour is the backend's (its capabilities, its optional methods): no module of the apps
    that drive backends checks a backend's type or class name."""
    found = {str(path.relative_to(ROOT)): checks for app in ("instances", "deploys", "domains", "router", "console", "backups", "cloudctl")
             for path in sorted((ROOT / app).rglob("*.py")) if (checks := backend_type_checks(path.read_text()))}
    assert found == {}
