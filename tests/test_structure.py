"""Guards of the tree's shape (style.md 2–4): devices/ is pure and every family is registered."""

from __future__ import annotations

import ast
from pathlib import Path

from devices.registry import MODELS

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN = {
    "gateway",
    "asyncio",
    "socket",
    "time",
    "logging",
    "datetime.datetime.now",
    "os",
    "threading",
    "random",
}


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_devices_are_pure():
    """No codec touches the runtime, the clock, logging, sockets or threads."""
    for path in (ROOT / "devices").glob("*.py"):
        bad = _imports(path) & FORBIDDEN
        assert not bad, f"{path.name} imports {bad}"
        text = path.read_text()
        assert ".now(" not in text and "time_ns(" not in text, f"{path.name} reads the clock"


def test_every_family_module_is_registered():
    families = {m.decode.__module__.split(".")[-1] for m in MODELS.values()}
    helpers = {"__init__", "events", "registry", "epc", "resync"}  # shared by families, not families themselves
    modules = {p.stem for p in (ROOT / "devices").glob("*.py")} - helpers
    assert modules <= families, f"unregistered device modules: {modules - families}"


def test_every_family_has_an_emulator():
    stubs = {p.stem for p in (ROOT / "firmware-stubs").glob("*.py")}
    for m in MODELS.values():
        assert any(s.startswith(m.family) for s in stubs), f"no emulator for {m.family} in firmware-stubs/"
