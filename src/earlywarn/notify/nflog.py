"""The notification log: what has already been notified, so nothing is sent twice (also after a restart).

Key: `(alarm_id, reason, tier, event_ts_ms)`.
- `raised` and `escalated` happen once per alarm and tier: `event_ts_ms` is None, the key is (alarm, reason, tier).
- `reminder` and `reactivated` recur: each event is distinct, `event_ts_ms` is that event's ts, so a restart
  that re-emits the same reminder does not resend it, while the next reminder still goes out.

The pipeline backs this with the `notices` table (product.md §8), which has no event-ts column:
`RestoredNotificationLog` below is that log, seeded by one query at start. A table-backed log answers a recurring key with "a row for (alarm_id, reason, tier) whose sent_at ≥ event_ts_ms exists":
a notice for an event is always sent at or after that event, and the next event comes a reminder interval later.
`record` is called when the notice is prepared, before any delivery: a crash after it resends nothing, a crash
before it resends the notice (at-least-once up to the prepare step, exactly-once after).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import NamedTuple, Protocol

#: Reasons whose key carries the event ts (each occurrence is notified on its own).
RECURRING_REASONS = frozenset({"reminder", "reactivated"})


class NoticeKey(NamedTuple):
    alarm_id: str
    reason: str
    tier: str  # Tier.label
    event_ts_ms: int | None = None

    @classmethod
    def of(cls, alarm_id: str, reason: str, tier: str, event_ts_ms: int) -> NoticeKey:
        """The key for an event, dropping the ts for once-only reasons."""
        return cls(alarm_id, reason, tier, event_ts_ms if reason in RECURRING_REASONS else None)


class NotificationLog(Protocol):
    """Remembers notified keys. Implementations must be safe to call from the pipeline thread."""

    def seen(self, alarm_id: str, reason: str, tier: str, event_ts_ms: int | None = None) -> bool:
        """True if a notice for this key was already prepared (now or before a restart)."""
        ...

    def record(
        self, alarm_id: str, reason: str, tier: str, event_ts_ms: int | None, notice_id: str, prepared_ms: int
    ) -> None:
        """Remember that notice `notice_id` covers this key."""
        ...

    def forget(self, alarm_ids: Iterable[str]) -> None:
        """Drop the keys of closed alarms: a closed alarm notifies no more (routing.decide), so the log's
        memory follows the open alarms instead of every alarm since the engine started."""
        ...


class InMemoryNotificationLog:
    """A NotificationLog in a dict, for tests and for replays that need no persistence.

    Share one instance between two Dispatchers to simulate a restart.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[NoticeKey, tuple[str, int]] = {}

    def seen(self, alarm_id: str, reason: str, tier: str, event_ts_ms: int | None = None) -> bool:
        with self._lock:
            return NoticeKey(alarm_id, reason, tier, event_ts_ms) in self._entries

    def record(
        self, alarm_id: str, reason: str, tier: str, event_ts_ms: int | None, notice_id: str, prepared_ms: int
    ) -> None:
        with self._lock:
            self._entries.setdefault(NoticeKey(alarm_id, reason, tier, event_ts_ms), (notice_id, prepared_ms))

    def forget(self, alarm_ids: Iterable[str]) -> None:
        gone = set(alarm_ids)
        if not gone:
            return
        with self._lock:
            self._entries = {k: v for k, v in self._entries.items() if k.alarm_id not in gone}

    def notice_of(self, key: NoticeKey) -> str | None:
        """The notice that covered `key`, if any (for tests and diagnostics)."""
        with self._lock:
            entry = self._entries.get(key)
        return entry[0] if entry else None

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)


class RestoredNotificationLog(InMemoryNotificationLog):
    """The pipeline's log: in memory, seeded at start from the `notices` table.

    At start, load one row per (alarm_id, reason, tier) of the open alarms with the latest `sent_at`:

        SELECT alarm_id, reason, tier, max(epoch_ms(sent_at)) FROM notices
        WHERE alarm_id IN (<open alarms>) GROUP BY ALL

    A once-only key is seen if its (alarm, reason, tier) was loaded; a recurring key (reminder, reactivated)
    if a notice for its (alarm, reason, tier) was sent at or after the event's ts. Keys recorded since start
    are exact. The pipeline thread only: no I/O on the hot path, one query at start.
    """

    def __init__(self) -> None:
        super().__init__()
        self._restored: dict[tuple[str, str, str], int] = {}

    def load(self, rows: Iterable[tuple[str, str, str, int]]) -> None:
        """Rows of (alarm_id, reason, tier, latest sent_at_ms) from the `notices` table."""
        with self._lock:
            for alarm_id, reason, tier, sent_at_ms in rows:
                k = (alarm_id, reason, tier)
                self._restored[k] = max(int(sent_at_ms), self._restored.get(k, int(sent_at_ms)))

    def seen(self, alarm_id: str, reason: str, tier: str, event_ts_ms: int | None = None) -> bool:
        if super().seen(alarm_id, reason, tier, event_ts_ms):
            return True
        with self._lock:
            sent_at_ms = self._restored.get((alarm_id, reason, tier))
        if sent_at_ms is None:
            return False
        return event_ts_ms is None or sent_at_ms >= event_ts_ms

    def forget(self, alarm_ids: Iterable[str]) -> None:
        """Drop the entries of closed alarms (they notify no more), so memory follows the open alarms."""
        gone = set(alarm_ids)
        if not gone:
            return
        super().forget(gone)
        with self._lock:
            self._restored = {k: v for k, v in self._restored.items() if k[0] not in gone}
