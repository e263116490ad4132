"""The layers of style.md, enforced by reading imports: stages never import each other.

    cli -> demo -> app -> [pipeline, api] -> stages -> config, metrics -> model, errors, clock
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "earlywarn"

LAYER = {
    "model": 0, "errors": 0, "clock": 0,
    "config": 1, "metrics": 1,
    "ingest": 2, "decode": 2, "batch": 2, "rules": 2, "alarms": 2, "notify": 2, "store": 2, "reports": 2,
    "pipeline": 3, "api": 3, "app": 4, "demo": 5,
    "cli": 6, "__main__": 7, "__init__": 7,
}
STAGES = {name for name, layer in LAYER.items() if layer == 2}


def _unit(path: Path) -> str:
    rel = path.relative_to(SRC)
    return rel.parts[0].removesuffix(".py")


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import: stays inside its own package
                names = [] if len(path.relative_to(SRC).parts) > 1 and node.level == 1 else ["earlywarn.?"]
            else:
                names = [node.module or ""]
        else:
            continue
        for n in names:
            parts = n.split(".")
            if parts[0] == "earlywarn" and len(parts) > 1:
                found.add(parts[1])
    return found


MODULES = sorted(p for p in SRC.rglob("*.py"))


def test_every_module_has_a_layer() -> None:
    unknown = {_unit(p) for p in MODULES} - set(LAYER)
    assert not unknown, f"give these modules a layer in this test: {unknown}"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(SRC)))
def test_imports_only_go_down(path: Path) -> None:
    me = _unit(path)
    for dep in _imports(path):
        assert dep != "?", f"{path.name}: no relative imports across packages"
        if dep == me:
            continue
        assert dep in LAYER, f"{path}: imports unknown earlywarn.{dep}"
        assert LAYER[dep] < LAYER[me], f"{path}: {me} (layer {LAYER[me]}) may not import {dep} (layer {LAYER[dep]})"
        assert not (me in STAGES and dep in STAGES), f"stage {me} imports stage {dep}"
