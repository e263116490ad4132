from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from brokers import Mosquitto
from hypothesis import settings

# CI runs the same examples every time (a red build means a change broke something, not that today's random
# draw found an old bug); `EARLYWARN_HYPOTHESIS=explore` draws fresh examples and keeps failures in the
# local example database. Explore before a release and pin what it finds with @example.
settings.register_profile("ci", derandomize=True, print_blob=True)
settings.register_profile("explore", derandomize=False, print_blob=True)
settings.load_profile(os.environ.get("EARLYWARN_HYPOTHESIS", "ci"))


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    """A real mosquitto on a free loopback port (persistence on, max_inflight_messages 1000)."""
    broker = Mosquitto(tmp_path / "broker").start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def mosquitto_default_window(tmp_path: Path) -> Iterator[Mosquitto]:
    """A mosquitto with the stock in-flight window (20), to show acks held for a batch do not stall."""
    broker = Mosquitto(tmp_path / "broker20", max_inflight=20).start()
    try:
        yield broker
    finally:
        broker.stop()
