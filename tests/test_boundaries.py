"""Architectural boundaries that code review alone would let slip."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
APPS = ("vdi", "tenants", "hypervisors", "brokers")
DRIVER = ROOT / "hypervisors" / "drivers" / "libvirt_driver.py"


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_only_the_driver_imports_libvirt():
    importers = [
        str(path.relative_to(ROOT))
        for app in APPS
        for path in (ROOT / app).rglob("*.py")
        if "libvirt" in imported_modules(path)
    ]
    assert importers == [str(DRIVER.relative_to(ROOT))]


def test_web_code_never_reaches_the_driver():
    """Views and API modules go through services; only services and tasks use the driver."""
    offenders = []
    for app in APPS:
        for path in (ROOT / app).rglob("*.py"):
            if path.name == "views.py" or "api" in path.relative_to(ROOT).parts:
                if "hypervisors.drivers" in path.read_text():
                    offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []
