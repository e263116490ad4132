"""Properties of the Dispatcher under arbitrary interleavings of events, clock steps and restarts.

- exactly once: every notice-worthy key of an unmuted alarm is notified exactly once, whatever the
  duplicates and restarts (restart = new Dispatcher, same log, after a close() that sends open groups);
- a muted alarm is never notified;
- a notice holds one site's alarms and goes out at the first flush after its window (group_wait) has passed,
  or at a shutdown.
"""

from __future__ import annotations

from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from earlywarn.clock import ManualClock
from earlywarn.config import AlarmsConfig, NotifyConfig, WebhookConfig
from earlywarn.model import Alarm, AlarmEvent, AlarmState, Contact, EventKind, Severity, Site, Tier
from earlywarn.notify import Dispatcher, InMemoryNotificationLog, MemoryChannel
from earlywarn.notify.nflog import NoticeKey
from earlywarn.notify.notice import REASON_OF_EVENT, NoticeReason

T0_MS = 1_764_316_800_000
GROUP_WAIT_MS = 10_000
SITES = {
    s: Site(id=s, name=s, plant="dust", district="d",
            contacts=tuple(Contact(t, t.label, email=f"{t.label}@{s}.cn") for t in Tier))
    for s in ("S1", "S2", "S3")
}
KINDS = [EventKind.RAISED, EventKind.REACTIVATED, EventKind.ESCALATED, EventKind.REMINDED]

op = st.one_of(
    st.tuples(st.just("event"), st.integers(0, 7), st.sampled_from(KINDS), st.integers(0, 3), st.integers(0, 3)),
    st.tuples(st.just("advance"), st.integers(0, 25_000)),
    st.tuples(st.just("restart")),
)


MUTED = {6, 7}  # A6 suppressed, A7 shelved


def _alarm(i: int, tier: int) -> Alarm:
    muted = i in MUTED
    return Alarm(alarm_id=f"A{i}", site=f"S{i % 3 + 1}", plant="dust", district="d", tag="t", rule_id=f"r{i}",
                 severity=Severity.RED if i % 2 else Severity.YELLOW, state=AlarmState.ACTIVE_UNACK,
                 raised_at_ms=T0_MS, escalation_tier=Tier(tier), suppressed=muted and i % 2 == 0,
                 shelved_until_ms=T0_MS + 10**9 if muted and i % 2 else None)


@settings(max_examples=150, deadline=None)
@given(st.lists(op, max_size=60))
def test_exactly_once_across_restarts(ops: list[tuple]) -> None:
    clock, log, mqtt = ManualClock(T0_MS), InMemoryNotificationLog(), MemoryChannel("mqtt", render=False)
    email = MemoryChannel("email", render=False)

    def start() -> Dispatcher:
        return Dispatcher(SITES, NotifyConfig(group_wait_ms=GROUP_WAIT_MS, webhook=WebhookConfig()),
                          AlarmsConfig(red_immediate_tiers=("plant", "county")),
                          channels={"mqtt": mqtt, "email": email}, log=log, clock=clock)

    d = start()
    flushes: list[int] = []
    closes: list[int] = []
    # ((alarm id, reason, tier), handed over at, due at, flushes before it) of each new notice key
    dues: list[tuple[tuple[str, str, str], int, int, int]] = []
    expected: set[NoticeKey] = set()
    muted_ids: set[str] = set()
    for o in ops:
        if o[0] == "event":
            _, i, kind, tier, ts_step = o
            a = _alarm(i, tier)
            muted = i in MUTED
            reason = REASON_OF_EVENT[kind]
            ts_ms = T0_MS + ts_step * 1000
            key_tier = "plant" if reason is NoticeReason.RAISED else a.escalation_tier.label
            key = NoticeKey.of(a.alarm_id, reason.value, key_tier, ts_ms)
            if muted:
                muted_ids.add(a.alarm_id)
            elif key not in expected:  # a repeated key is skipped as a duplicate: it joins no group
                expected.add(key)
                # the window counts from the raise, never before the hand-over (product.md §7)
                now = clock.now_ms()
                due = max(now, min(now, ts_ms) + GROUP_WAIT_MS)
                dues.append(((a.alarm_id, reason.value, key_tier), now, due, len(flushes)))
            d.submit([(a, AlarmEvent(a.alarm_id, ts_ms, kind))])
        elif o[0] == "advance":
            flushes.append(clock.advance(o[1]))
            d.flush(flushes[-1])
        else:
            closes.append(clock.now_ms())
            d.close()
            d = start()
    flushes.append(clock.advance(GROUP_WAIT_MS))
    d.flush(flushes[-1])

    notices = {n.notice_id: n for n, _ in mqtt.sent}
    assert len(notices) == len(mqtt.sent)  # one MQTT message per notice
    notified = Counter()
    for n in notices.values():
        assert {na.alarm.site for na in n.alarms} == {n.site}
        members = {(na.alarm.alarm_id, n.reason.value, n.tier.label) for na in n.alarms}
        # what joined this notice's group while it was open: each member pulls the group to its own due time
        joined = [(due, k) for aid, at, due, k in dues if aid in members and n.window_start_ms <= at <= n.prepared_ms]
        due_ms = min(due for due, _ in joined)
        if n.prepared_ms in closes and n.prepared_ms < due_ms:
            pass  # a shutdown sends the groups still in their window
        else:
            assert n.prepared_ms >= due_ms  # never before the window has passed ...
            for due, k in joined:  # ... and at the first flush after a member's due time (once it was handed over)
                assert not [f for f in flushes[k:] if due <= f < n.prepared_ms]
        for na in n.alarms:
            assert na.alarm.alarm_id not in muted_ids
            notified[na.alarm.alarm_id, n.reason.value, n.tier.label] += 1
    # exactly once per key: the log holds every expected key, each covered by a notice that was sent
    for key in expected:
        assert log.notice_of(key) in notices, key
    # once-only reasons: at most one notice per (alarm, reason, tier)
    for (alarm_id, reason, tier), count in notified.items():
        if reason in ("raised", "escalated"):
            assert count == 1, (alarm_id, reason, tier)
    # e-mails: each notice reached each of its recipients once
    per_recipient = Counter((n.notice_id, r.address) for n, r in email.sent)
    assert set(per_recipient.values()) <= {1}
