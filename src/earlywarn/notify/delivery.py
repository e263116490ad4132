"""Delivery jobs, the retry policy, and the executors that run deliveries off the pipeline thread.

The Dispatcher hands the (notice, recipient) jobs of a flush to an Executor with `offer_many`, which never
blocks: the jobs whose lane is full come back, and the Dispatcher keeps them in its backlog for the next flush. Retries are not slept on:
a failed attempt is rescheduled at `clock + backoff` and the Dispatcher offers it again at the first flush
at or after that time.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from earlywarn.config import WebhookConfig

from .notice import Notice, Recipient


@dataclass(slots=True)
class Delivery:
    """One notice to one recipient over one channel; `attempt` is the number of the next attempt (1-based)."""

    notice: Notice
    recipient: Recipient
    attempt: int = 1
    due_ms: int = 0

    @property
    def channel(self) -> str:
        return self.recipient.channel


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff: attempt n+1 waits min(initial · 2^(n-1), max) after attempt n failed."""

    max_attempts: int = 5
    backoff_initial_ms: int = 500
    backoff_max_ms: int = 60_000

    @classmethod
    def from_config(cls, cfg: WebhookConfig) -> RetryPolicy:
        return cls(cfg.max_attempts, cfg.backoff_initial_ms, cfg.backoff_max_ms)

    def backoff_ms(self, failed_attempt: int) -> int:
        """Wait after attempt number `failed_attempt` (1-based) failed."""
        return min(self.backoff_initial_ms * (1 << max(0, failed_attempt - 1)), self.backoff_max_ms)


Runner = Callable[[Delivery], None]


class Executor(Protocol):
    """Runs deliveries. `offer` must not block; False means "full, offer again later"."""

    def start(self, run: Runner) -> None: ...

    def offer(self, delivery: Delivery) -> bool: ...

    def offer_many(self, deliveries: Sequence[Delivery]) -> list[Delivery]:
        """Offer each delivery without blocking; return those not taken (full), in their order. Once one is
        refused, the later ones of its channel are refused too, so each channel keeps its order."""
        ...

    def wait_idle(self, timeout_s: float) -> bool: ...

    def close(self, timeout_s: float = 5.0) -> None: ...


class InlineExecutor:
    """Runs each delivery at once in the caller's thread: deterministic, for unit tests and benchmarks."""

    def __init__(self) -> None:
        self._run: Runner | None = None

    def start(self, run: Runner) -> None:
        self._run = run

    def offer(self, delivery: Delivery) -> bool:
        assert self._run is not None, "start() first"
        self._run(delivery)
        return True

    def offer_many(self, deliveries: Sequence[Delivery]) -> list[Delivery]:
        for d in deliveries:
            self.offer(d)
        return []

    def wait_idle(self, timeout_s: float) -> bool:
        return True

    def close(self, timeout_s: float = 5.0) -> None:
        return None


_STOP = object()


class _Lane:
    """One channel's bounded queue and its worker threads.

    A deque under one lock rather than a `queue.Queue`: a flush hands a lane all its deliveries with one
    lock acquisition and wakes only as many idle workers as there are deliveries, instead of a locked put
    and a notify per delivery on the engine thread (during a flood, hundreds a second; the notify stage runs
    in the engine's process, so every bytecode it executes is taken from the engine thread through the GIL).
    """

    def __init__(self, name: str, workers: int, queue_max: int, run: Runner, on_done: Callable[[], None]) -> None:
        self._lock = threading.Lock()
        self._ready = threading.Condition(self._lock)
        self._items: deque[object] = deque()
        self._max = queue_max
        self._idle = 0  # workers waiting for an item (an upper bound while woken ones have not run yet)
        self._run = run
        self._on_done = on_done
        self.threads = [
            threading.Thread(target=self._work, name=f"notify-{name}-{i}", daemon=True) for i in range(workers)
        ]
        for t in self.threads:
            t.start()

    def put_many(self, items: Sequence[object]) -> int:
        """Queue the first items that fit (the queue holds at most queue_max); return how many."""
        with self._lock:
            n = min(len(items), self._max - len(self._items))
            if n <= 0:
                return 0
            self._items.extend(items[:n] if n < len(items) else items)
            if self._idle:
                self._ready.notify(min(n, self._idle))
        return n

    def stop(self) -> None:
        """Ask every worker to end once the items before are done (not bounded by queue_max)."""
        with self._lock:
            self._items.extend(_STOP for _ in self.threads)
            self._ready.notify_all()

    def _work(self) -> None:
        while True:
            with self._lock:
                while not self._items:
                    self._idle += 1
                    try:
                        self._ready.wait()
                    finally:
                        self._idle -= 1
                item = self._items.popleft()
            if item is _STOP:
                return
            try:
                self._run(item)  # type: ignore[arg-type]
            finally:
                self._on_done()


class ThreadedExecutor:
    """A lane per channel (own bounded queue, own workers), so a hanging SMTP server or webhook holds up
    only its own channel, and within the webhook lane only one of its workers.
    """

    DEFAULT_WORKERS: Mapping[str, int] = {"webhook": 4, "email": 2, "mqtt": 1, "log": 1}

    def __init__(self, workers: Mapping[str, int] | None = None, queue_max: int = 1_000) -> None:
        self._workers = dict(self.DEFAULT_WORKERS)
        self._workers.update(workers or {})
        self._queue_max = queue_max
        self._lanes: dict[str, _Lane] = {}
        self._run: Runner | None = None
        self._cond = threading.Condition(threading.Lock())
        self._outstanding = 0
        self._closed = False

    def start(self, run: Runner) -> None:
        self._run = run

    def _done(self, n: int = 1) -> None:
        with self._cond:
            self._outstanding -= n
            if self._outstanding == 0:  # only wait_idle waits, and only for this
                self._cond.notify_all()

    def _lane(self, channel: str) -> _Lane:
        lane = self._lanes.get(channel)
        if lane is None:
            assert self._run is not None, "start() first"
            lane = _Lane(channel, self._workers.get(channel, 1), self._queue_max, self._run, self._done)
            self._lanes[channel] = lane
        return lane

    def offer(self, delivery: Delivery) -> bool:
        return not self.offer_many((delivery,))

    def offer_many(self, deliveries: Sequence[Delivery]) -> list[Delivery]:
        if self._closed:
            return list(deliveries)
        by_lane: dict[str, list[Delivery]] = {}
        for d in deliveries:
            by_lane.setdefault(d.channel, []).append(d)
        with self._cond:  # counted before a worker can finish one
            self._outstanding += len(deliveries)
        refused: list[Delivery] = []
        for channel, items in by_lane.items():
            taken = self._lane(channel).put_many(items)
            if taken < len(items):
                refused.extend(items[taken:])
        if not refused:
            return []
        self._done(len(refused))
        if len(by_lane) == 1:
            return refused
        ids = {id(d) for d in refused}
        return [d for d in deliveries if id(d) in ids]  # in the order offered

    def wait_idle(self, timeout_s: float) -> bool:
        """Wait (bounded) until every offered delivery has run; for tests and shutdown."""
        with self._cond:
            return self._cond.wait_for(lambda: self._outstanding == 0, timeout=timeout_s)

    def close(self, timeout_s: float = 5.0) -> None:
        """Finish queued deliveries (up to `timeout_s`), then stop the workers."""
        self.wait_idle(timeout_s)
        self._closed = True
        for lane in self._lanes.values():
            lane.stop()
        for lane in self._lanes.values():
            for t in lane.threads:
                t.join(timeout=timeout_s)
