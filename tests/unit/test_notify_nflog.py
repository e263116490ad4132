"""Notification logs: keys, the in-memory log, and the log restored from the `notices` table at start."""

from __future__ import annotations

from earlywarn.notify.nflog import InMemoryNotificationLog, NoticeKey, RestoredNotificationLog


def test_key_keeps_the_event_ts_only_for_recurring_reasons() -> None:
    assert NoticeKey.of("A", "raised", "plant", 5) == ("A", "raised", "plant", None)
    assert NoticeKey.of("A", "escalated", "county", 5) == ("A", "escalated", "county", None)
    assert NoticeKey.of("A", "reminder", "county", 5) == ("A", "reminder", "county", 5)
    assert NoticeKey.of("A", "reactivated", "plant", 5) == ("A", "reactivated", "plant", 5)


def test_in_memory_log() -> None:
    log = InMemoryNotificationLog()
    assert not log.seen("A", "raised", "plant")
    log.record("A", "raised", "plant", None, "n-1", 10)
    log.record("A", "raised", "plant", None, "n-2", 20)  # the first notice stays the one on record
    assert log.seen("A", "raised", "plant") and not log.seen("A", "raised", "township")
    assert log.notice_of(NoticeKey("A", "raised", "plant")) == "n-1" and len(log) == 1


def test_restored_log_answers_from_the_table_rows() -> None:
    log = RestoredNotificationLog()
    log.load([("A", "raised", "plant", 1_000), ("A", "reminder", "county", 9_000),
              ("A", "reminder", "county", 5_000)])
    assert log.seen("A", "raised", "plant")
    assert not log.seen("A", "escalated", "township")
    assert log.seen("A", "reminder", "county", 8_990)  # sent at 9 000, after this reminder's event: handled
    assert log.seen("A", "reminder", "county", 9_000)
    assert not log.seen("A", "reminder", "county", 9_001)  # a later reminder: not yet sent
    log.record("A", "reminder", "county", 9_001, "n-9", 9_010)
    assert log.seen("A", "reminder", "county", 9_001)
    log.forget(["A"])
    assert not log.seen("A", "raised", "plant") and not log.seen("A", "reminder", "county", 9_001)
