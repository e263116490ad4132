from __future__ import annotations

import sys
from pathlib import Path

# tests/chaos/enginekit.py is shared by the chaos, security and soak tests
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "chaos"))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def pytest_addoption(parser) -> None:
    # honoured when tests/soak is on the command line (`pytest tests/soak --soak`); from the repo root use
    # EARLYWARN_SOAK_SECONDS=1800 instead (a non-initial conftest cannot add options)
    parser.addoption("--soak", action="store_true", default=False, help="run the full soak test")
    parser.addoption("--soak-seconds", type=float, default=1800.0, help="duration of the full soak test")


def pytest_collection_modifyitems(config, items) -> None:
    """The full soak is opt-in: without --soak or EARLYWARN_SOAK_SECONDS it is deselected, not skipped, so
    the default suite reports no skips."""
    import os

    if os.environ.get("EARLYWARN_SOAK_SECONDS") or config.getoption("--soak", default=False):
        return
    keep, drop = [], []
    for item in items:
        (drop if item.get_closest_marker("soak") is not None else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
