"""Architectural boundaries that code review alone would let slip."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
APPS = ("vdi", "tenants", "hypervisors", "brokers")
DRIVERS = [ROOT / "hypervisors" / "drivers" / name
           for name in ("libvirt_connections.py", "libvirt_driver.py", "libvirt_network.py")]


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
    assert sorted(importers) == [str(path.relative_to(ROOT)) for path in DRIVERS]


def test_web_code_never_reaches_the_driver():
    """Views and API modules go through services; only services and tasks use the driver."""
    offenders = []
    for app in APPS:
        for path in (ROOT / app).rglob("*.py"):
            if path.name == "views.py" or "api" in path.relative_to(ROOT).parts:
                if "hypervisors.drivers" in path.read_text():
                    offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []


# --- the layers (docs/architecture.md); .importlinter checks the direction of every import --
LAYERS = ("core", "tenants", "hypervisors", "vdi", "brokers", "config")
# Imports inside a function that cross apps, allowed where a module must load before Django
# is set up: the console proxy process and the Celery app's logging hooks.
LAZY_IMPORTERS = {"brokers/proxy/broker.py", "config/celery.py"}


def cross_app_imports(path: Path, app: str):
    """(imported app, inside a function) for each import of another layer in ``path``."""
    tree = ast.parse(path.read_text(), filename=str(path))

    def visit(node, in_function):
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            modules = []
            if isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                modules = [child.module]
            elif isinstance(child, ast.Import):
                modules = [alias.name for alias in child.names]
            for module in modules:
                top = module.split(".")[0]
                if top in LAYERS and top != app:
                    yield top, in_function
            yield from visit(child, inner)

    yield from visit(tree, False)


def project_modules():
    for app in LAYERS:
        for path in (ROOT / app).rglob("*.py"):
            if "migrations" not in path.parts:
                yield app, path


def test_no_import_inside_a_function_crosses_apps():
    """Upward news travels as events; a function-level import would hide a cycle."""
    offenders = sorted(
        str(path.relative_to(ROOT)) for app, path in project_modules()
        if path.name != "apps.py" and str(path.relative_to(ROOT)) not in LAZY_IMPORTERS
        and any(inside for _top, inside in cross_app_imports(path, app)))
    assert offenders == []


def test_apps_import_only_downward_counting_every_import():
    upward = sorted(
        f"{path.relative_to(ROOT)} -> {top}" for app, path in project_modules()
        for top, _inside in cross_app_imports(path, app)
        if LAYERS.index(top) > LAYERS.index(app))
    assert upward == []


def test_every_event_is_listed_once_and_answered():
    """config/events.py lists every signal the layers define, and each has a receiver."""
    from django.dispatch import Signal

    from config.events import EVENTS
    from core import events as core_events
    from hypervisors import events as host_events
    from tenants import events as tenant_events
    from vdi import events as vdi_events

    defined = {id(value): f"{module.__name__}.{name}"
               for module in (core_events, tenant_events, host_events, vdi_events)
               for name, value in vars(module).items() if isinstance(value, Signal)}
    listed = [id(signal) for signal, *_rest in EVENTS]
    assert sorted(defined[key] for key in listed) == sorted(defined.values())
    assert len(listed) == len(set(listed))
    assert [defined[id(signal)] for signal, *_rest in EVENTS if not signal.receivers] == []
