"""Clocks. The only module that reads the system time; everything else is handed a Clock.

Event time (a reading's own `ts_ms`) drives every rule. The *engine clock* only matters for things
that happen without a reading: `stale` rules, deadlines, shelve expiry, reminders. Live it is the
wall clock; in a replay it is the newest event time seen, so a replay gives the same alarms as the
live run did.
"""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    """Something that says what time it is, in epoch milliseconds (UTC)."""

    def now_ms(self) -> int: ...


class SystemClock:
    """The wall clock."""

    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000


class ManualClock:
    """A clock tests and replays move by hand. Never goes backwards."""

    def __init__(self, start_ms: int = 0) -> None:
        self._now_ms = int(start_ms)

    def now_ms(self) -> int:
        return self._now_ms

    def advance(self, delta_ms: int) -> int:
        if delta_ms < 0:
            msg = f"a clock does not go backwards (advance by {delta_ms} ms)"
            raise ValueError(msg)
        self._now_ms += int(delta_ms)
        return self._now_ms

    def set(self, now_ms: int) -> int:
        """Move to `now_ms` if it is later; an earlier time is ignored (event time may arrive out of order)."""
        if now_ms > self._now_ms:
            self._now_ms = int(now_ms)
        return self._now_ms


class ScaledClock:
    """A wall clock running `speed` times faster from `start_ms` (the demo's compressed plant time).

    Deadlines, escalations, stale rules and the simulated supervisors all live on it, so a five-minute
    acknowledgement deadline passes in five seconds at speed 60.
    """

    def __init__(self, start_ms: int, speed: float) -> None:
        self.start_ms = int(start_ms)
        self.speed = float(speed)
        self._t0_ns = time.monotonic_ns()

    def now_ms(self) -> int:
        return self.start_ms + int((time.monotonic_ns() - self._t0_ns) / 1e6 * self.speed)
