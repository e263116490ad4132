"""Delivery jobs, the retry policy, and the executors that run deliveries off the pipeline thread.

The Dispatcher hands each (notice, recipient) to an Executor with `offer`, which never blocks: a full queue
answers False and the Dispatcher keeps the job in its backlog for the next flush. Retries are not slept on:
a failed attempt is rescheduled at `clock + backoff` and the Dispatcher offers it again at the first flush
at or after that time.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Mapping
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

    def wait_idle(self, timeout_s: float) -> bool:
        return True

    def close(self, timeout_s: float = 5.0) -> None:
        return None


_STOP = object()


class _Lane:
    """One channel's bounded queue and its worker threads."""

    def __init__(self, name: str, workers: int, queue_max: int, run: Runner, on_done: Callable[[], None]) -> None:
        self.queue: queue.Queue[object] = queue.Queue(maxsize=queue_max)
        self._run = run
        self._on_done = on_done
        self.threads = [
            threading.Thread(target=self._work, name=f"notify-{name}-{i}", daemon=True) for i in range(workers)
        ]
        for t in self.threads:
            t.start()

    def _work(self) -> None:
        while True:
            item = self.queue.get()
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
        self._cond = threading.Condition()
        self._outstanding = 0
        self._closed = False

    def start(self, run: Runner) -> None:
        self._run = run

    def _done(self) -> None:
        with self._cond:
            self._outstanding -= 1
            self._cond.notify_all()

    def offer(self, delivery: Delivery) -> bool:
        if self._closed:
            return False
        lane = self._lanes.get(delivery.channel)
        if lane is None:
            assert self._run is not None, "start() first"
            lane = _Lane(delivery.channel, self._workers.get(delivery.channel, 1), self._queue_max, self._run,
                         self._done)
            self._lanes[delivery.channel] = lane
        with self._cond:
            self._outstanding += 1
        try:
            lane.queue.put_nowait(delivery)
        except queue.Full:
            self._done()
            return False
        return True

    def wait_idle(self, timeout_s: float) -> bool:
        """Wait (bounded) until every offered delivery has run; for tests and shutdown."""
        with self._cond:
            return self._cond.wait_for(lambda: self._outstanding == 0, timeout=timeout_s)

    def close(self, timeout_s: float = 5.0) -> None:
        """Finish queued deliveries (up to `timeout_s`), then stop the workers."""
        self.wait_idle(timeout_s)
        self._closed = True
        for lane in self._lanes.values():
            for _ in lane.threads:
                try:
                    lane.queue.put(_STOP, timeout=timeout_s)
                except queue.Full:
                    break
        for lane in self._lanes.values():
            for t in lane.threads:
                t.join(timeout=timeout_s)
