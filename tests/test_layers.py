"""The architecture is the file list, and its layer rule holds: every import points down.

`LAYERS` is docs/architecture.md's table in code: a module may import from its own layer or
from the layers before it, never from a later one. A new module must be given a layer here (and
a row in docs/architecture.md), so the rule cannot be bypassed by forgetting it.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src" / "fastforward"

pytestmark = pytest.mark.skipif(
    not SRC.is_dir(), reason="runs from a source checkout only (not against an installed wheel)"
)

LAYERS: list[tuple[str, set[str]]] = [
    ("base", {"errors", "_version", "__init__"}),
    ("codec", {"_codec_rules", "_codec", "_codec_py", "codec"}),
    ("config", {"endpoints", "options", "checks", "twistd", "config", "manpage", "logsetup"}),
    ("io", {"sockets", "framing", "spoolfile", "bodies", "compression", "memtune", "plainhttp"}),
    (
        "routing",
        {"routing", "routing.ruleset", "routing.tags", "routing.schemas", "routing.budget"}
        | {"routing.router"},
    ),
    (
        "daemon",
        {"stats", "attribution", "blueflood", "auth", "pidfile", "spool", "protocols", "outbox"}
        | {"delivery", "target", "replay", "poison", "sending", "flushing", "health"}
        | {"forwarder", "tenants", "routes", "receiver", "admin", "lifecycle"},
    ),
    ("service", {"service"}),
    (
        "workers",
        {"workers", "workers.spec", "workers.channel", "workers.loads", "workers.balancer"}
        | {"workers.logs", "workers.worker", "workers.supervisor"},
    ),
    ("entry", {"cli", "__main__", "decode", "send", "rulescmd"}),
]
LAYER_OF = {module: i for i, (_name, modules) in enumerate(LAYERS) for module in modules}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    found = {module_name(p): p for p in SRC.rglob("*.py")}
    found.update({module_name(p): p for p in SRC.glob("*.pyx")})
    return found


def imported(path: Path, name: str) -> set[str]:
    """The fastforward modules a module imports (relative or absolute), by module name."""
    if path.suffix == ".pyx":  # the compiled codec imports only the shared rules
        text = path.read_text()
        return {m for m in re.findall(r"^from \.(\w+) import", text, re.M)}
    package = name.split(".")[:-1] if path.name != "__init__.py" else name.split(".")
    known = set(modules())
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package[: len(package) - (node.level - 1)]
            target = ".".join([*base, node.module]) if node.module else ".".join(base)
            out.add(target)
            for alias in node.names:  # `from . import codec` names a module
                if f"{target}.{alias.name}".strip(".") in known:
                    out.add(f"{target}.{alias.name}".strip("."))
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("fastforward."):
            out.add(node.module.removeprefix("fastforward."))  # type: ignore[union-attr]
    return {m.strip(".") or "__init__" for m in out} & known


def test_every_module_has_a_layer_and_a_row_in_the_architecture():
    doc = (ROOT / "docs" / "architecture.md").read_text()
    missing_layer = sorted(set(modules()) - set(LAYER_OF))
    assert not missing_layer, f"give these a layer in LAYERS: {missing_layer}"
    skip = {"__init__", "__main__", "_version", "workers", "routing"}
    file_names = {m: m.rsplit(".", 1)[-1] + "." for m in modules() if m not in skip}
    undocumented = [m for m, file_name in file_names.items() if file_name not in doc]
    assert not undocumented, f"no row in docs/architecture.md: {undocumented}"


def upward_imports(found: dict[str, Path]) -> list[str]:
    """Every import of a later layer, as 'a (layer) imports b (layer)'."""
    upward = []
    for name, path in found.items():
        for target in imported(path, name):
            if LAYER_OF[target] > LAYER_OF[name]:
                upward.append(
                    f"{name} ({LAYERS[LAYER_OF[name]][0]}) imports {target} "
                    f"({LAYERS[LAYER_OF[target]][0]})"
                )
    return upward


def test_imports_point_down_the_layers():
    upward = upward_imports(modules())
    assert not upward, "\n".join(upward)


def test_the_checker_sees_an_upward_import(tmp_path: Path):
    # The rule must be able to fail: a config module that imports the service is caught.
    fake = tmp_path / "checks.py"
    fake.write_text("from .service import Service\nfrom . import errors\n")
    found = {**modules(), "checks": fake}
    assert upward_imports(found) == ["checks (config) imports service (service)"]
