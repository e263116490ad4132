"""Dispatcher: grouping, never twice, restart, routing, mute, retries on the clock, records, JSON, metrics.

Pure: a ManualClock, in-memory channels, deliveries run inline (InlineExecutor), except the two tests of the
threaded executor, which wait on events (never on wall time).
"""

from __future__ import annotations

import dataclasses
import json
import re
import threading

import pytest
from prometheus_client import CollectorRegistry

from earlywarn.clock import ManualClock
from earlywarn.config import AlarmsConfig, NotifyConfig, WebhookConfig
from earlywarn.metrics import Metrics
from earlywarn.model import (
    Alarm,
    AlarmEvent,
    AlarmState,
    Contact,
    EventKind,
    NoticeRecord,
    Severity,
    Site,
    Tier,
)
from earlywarn.notify import (
    Delivery,
    DeliveryError,
    Dispatcher,
    InMemoryNotificationLog,
    LinkSigner,
    MemoryChannel,
    Notice,
    Recipient,
    ThreadedExecutor,
    notice_json,
)
from earlywarn.notify.nflog import NoticeKey

T0_MS = 1_764_316_800_000  # 2025-11-28T08:00:00Z
GROUP_WAIT_MS = 10_000
SECRET = b"unit-test-link-secret-0123456789"
PUBLIC_URL = "https://ew.example.cn"

SITE = Site(
    id="SZ-AL-0001", name="吴江铸造 Wujiang casting", plant="aluminum", district="wujiang",
    contacts=(
        Contact(Tier.PLANT, "安全员 Li", email="li@plant.cn", webhook="http://hooks.test/plant"),
        Contact(Tier.TOWNSHIP, "Township Wang", email="wang@town.gov.cn"),
        Contact(Tier.COUNTY, "County Zhao", email="zhao@county.gov.cn"),
        Contact(Tier.CITY, "City Sun", email="sun@city.gov.cn"),
    ),
)
OTHER = Site(id="SZ-DU-0002", name="dust", plant="dust", district="wujiang",
             contacts=(Contact(Tier.PLANT, "Qian", email="qian@dust.cn"),))
SITES = {s.id: s for s in (SITE, OTHER)}


def alarm(n: int, *, site: str = SITE.id, severity: Severity = Severity.RED, tier: Tier = Tier.PLANT,
          state: AlarmState = AlarmState.ACTIVE_UNACK, raised_at_ms: int = T0_MS, value: float = 0.12,
          **kw: object) -> Alarm:
    return Alarm(
        alarm_id=f"{site}:cw_pressure_ll:{n}", site=site, plant="aluminum", district="wujiang",
        tag="cw_pressure_mpa", rule_id="cw_pressure_ll", severity=severity, state=state,
        raised_at_ms=raised_at_ms, message="冷却水压力低低 / Cooling-water pressure low-low",
        value=value, escalation_tier=tier, **kw,  # type: ignore[arg-type]
    )


def ev(a: Alarm, kind: EventKind = EventKind.RAISED, ts_ms: int | None = None) -> AlarmEvent:
    return AlarmEvent(a.alarm_id, a.raised_at_ms if ts_ms is None else ts_ms, kind)


class Flaky:
    """A channel that fails its first `failures` sends (recoverable unless told), then delivers."""

    def __init__(self, name: str, failures: int = 0, *, recoverable: bool = True, only: str | None = None):
        self.name = name
        self.failures = failures
        self.recoverable = recoverable
        self.only = only  # fail only for this recipient address
        self.calls: list[tuple[int, str, str]] = []  # (clock ms, notice id, recipient address)
        self.clock: ManualClock | None = None

    def send(self, notice: Notice, recipient: Recipient) -> None:
        self.calls.append((self.clock.now_ms() if self.clock else 0, notice.notice_id, recipient.address))
        if self.only is not None and recipient.address != self.only:
            return
        if self.failures > 0:
            self.failures -= 1
            raise DeliveryError("HTTP 500 Internal Server Error", recoverable=self.recoverable)


class Rig:
    """A dispatcher with in-memory channels on a manual clock."""

    def __init__(self, *, log: InMemoryNotificationLog | None = None, channels: dict | None = None,
                 red_immediate: tuple[str, ...] = ("plant",), metrics: Metrics | None = None,
                 webhook: WebhookConfig | None = None, clock: ManualClock | None = None) -> None:
        self.clock = clock or ManualClock(T0_MS)
        self.log = log if log is not None else InMemoryNotificationLog()
        self.channels = channels or {n: MemoryChannel(n) for n in ("mqtt", "log", "email", "webhook")}
        for ch in self.channels.values():
            if isinstance(ch, Flaky):
                ch.clock = self.clock
        cfg = NotifyConfig(group_wait_ms=GROUP_WAIT_MS,
                           webhook=webhook or WebhookConfig(urls=("http://bureau.test/hook",)))
        self.signer = LinkSigner(SECRET, 24 * 3_600_000)
        self.d = Dispatcher(SITES, cfg, AlarmsConfig(red_immediate_tiers=red_immediate), channels=self.channels,
                            log=self.log, clock=self.clock, link_signer=self.signer, public_url=PUBLIC_URL,
                            metrics=metrics)

    def tick(self, delta_ms: int) -> list[Notice]:
        return self.d.flush(self.clock.advance(delta_ms))

    def sent(self, channel: str) -> list[tuple[Notice, Recipient]]:
        return self.channels[channel].sent


# ------------------------------------------------------------------------------------------------ grouping


def test_fifty_alarms_in_the_window_make_one_notice_per_recipient() -> None:
    rig = Rig()
    for n in range(50):
        a = alarm(n, raised_at_ms=T0_MS + n * 100)
        rig.clock.set(a.raised_at_ms)
        rig.d.submit([(a, ev(a))])
    assert rig.d.flush(rig.clock.now_ms()) == []  # the window (opened at T0) is still open
    notices = rig.d.flush(rig.clock.set(T0_MS + GROUP_WAIT_MS))
    assert len(notices) == 1
    (notice,) = notices
    assert len(notice.alarms) == 50 and notice.reason == "raised" and notice.tier is Tier.PLANT
    keys = [r.key for r in notice.recipients]
    assert keys == ["mqtt:ew/SZ-AL-0001/notices", "log:log", "email:li@plant.cn", "webhook:http://hooks.test/plant",
                    "webhook:http://bureau.test/hook"]
    assert [r.address for _, r in rig.sent("email")] == ["li@plant.cn"]
    assert [r.address for _, r in rig.sent("mqtt")] == ["ew/SZ-AL-0001/notices"]  # one per notice
    assert sorted(r.address for _, r in rig.sent("webhook")) == ["http://bureau.test/hook", "http://hooks.test/plant"]
    assert len(rig.sent("log")) == 1
    # one record per alarm per delivery, all delivered on attempt 1
    records = rig.d.drain_records()
    assert len(records) == 50 * 5 and {(r.outcome, r.attempt) for r in records} == {("delivered", 1)}
    assert rig.d.drain_records() == []


def test_window_opens_at_the_first_alarm_and_later_alarms_start_a_new_group() -> None:
    rig = Rig()
    # each alarm raised when it is submitted (the engine hands it over at once)
    a, b, c = alarm(1), alarm(2, raised_at_ms=T0_MS + GROUP_WAIT_MS - 1), alarm(3, raised_at_ms=T0_MS + GROUP_WAIT_MS)
    rig.d.submit([(a, ev(a))])
    rig.clock.advance(GROUP_WAIT_MS - 1)
    rig.d.submit([(b, ev(b))])
    assert rig.d.flush(rig.clock.now_ms()) == []
    assert rig.d.next_due_ms() == T0_MS + GROUP_WAIT_MS
    (n1,) = rig.tick(1)
    assert [na.alarm.alarm_id for na in n1.alarms] == [a.alarm_id, b.alarm_id]
    rig.d.submit([(c, ev(c))])
    assert rig.tick(GROUP_WAIT_MS - 1) == []
    (n2,) = rig.tick(1)
    assert [na.alarm.alarm_id for na in n2.alarms] == [c.alarm_id]
    assert rig.d.next_due_ms() is None


def test_the_window_counts_from_the_raise_not_from_the_hand_over() -> None:
    """product.md §7: alarms *raised* within the window are coalesced. The engine's queue and step before
    the hand-over are inside the window, not added on top of it."""
    rig = Rig()
    rig.clock.advance(400)  # the engine took 400 ms from the reading to the committed alarm
    a = alarm(1)  # raised at T0
    rig.d.submit([(a, ev(a))])
    assert rig.d.next_due_ms() == T0_MS + GROUP_WAIT_MS  # not T0 + 400 + window
    assert rig.tick(GROUP_WAIT_MS - 400 - 1) == []
    (n1,) = rig.tick(1)
    assert [na.alarm.alarm_id for na in n1.alarms] == [a.alarm_id]

    # older than its window (late data, a backlog after an outage): out at the next flush, not later
    late = alarm(2, raised_at_ms=rig.clock.now_ms() - 3 * GROUP_WAIT_MS)
    rig.d.submit([(late, ev(late))])
    assert rig.d.next_due_ms() == rig.clock.now_ms()
    (n2,) = rig.tick(0)
    assert [na.alarm.alarm_id for na in n2.alarms] == [late.alarm_id]

    # stamped ahead of the engine clock (a device clock running fast): the whole window from now
    ahead = alarm(3, raised_at_ms=rig.clock.now_ms() + 60_000)
    rig.d.submit([(ahead, ev(ahead))])
    assert rig.d.next_due_ms() == rig.clock.now_ms() + GROUP_WAIT_MS


def test_sites_reasons_and_audiences_group_separately() -> None:
    rig = Rig(red_immediate=("plant", "county"))
    red, yellow = alarm(1), alarm(2, severity=Severity.YELLOW)
    other = alarm(3, site=OTHER.id)
    esc = alarm(4, tier=Tier.TOWNSHIP)
    rig.d.submit([(red, ev(red)), (yellow, ev(yellow)), (other, ev(other)),
                  (esc, ev(esc, EventKind.ESCALATED, T0_MS))])
    notices = rig.tick(GROUP_WAIT_MS)
    got = {(n.site, n.reason.value, n.tier.label, tuple(na.alarm.alarm_id[-1] for na in n.alarms)) for n in notices}
    assert got == {
        (SITE.id, "raised", "plant", ("1",)),  # red: plant + county at once
        (SITE.id, "raised", "plant", ("2",)),  # yellow: plant only
        (OTHER.id, "raised", "plant", ("3",)),
        (SITE.id, "escalated", "township", ("4",)),
    }
    emails = {(n.alarms[0].alarm.alarm_id[-1], r.address) for n, r in rig.sent("email")}
    assert emails == {("1", "li@plant.cn"), ("1", "zhao@county.gov.cn"), ("2", "li@plant.cn"),
                      ("3", "qian@dust.cn"), ("4", "li@plant.cn"), ("4", "wang@town.gov.cn")}


def test_reminder_goes_to_the_current_tier_only() -> None:
    rig = Rig()
    a = alarm(1, tier=Tier.COUNTY)
    rig.d.submit([(a, ev(a, EventKind.REMINDED, T0_MS + 900_000))])
    (n,) = rig.tick(GROUP_WAIT_MS)
    assert n.reason == "reminder" and n.tier is Tier.COUNTY
    assert [r.address for _, r in rig.sent("email")] == ["zhao@county.gov.cn"]


def test_most_severe_first_and_deterministic_id() -> None:
    def run() -> Notice:
        rig = Rig()
        a, b = alarm(1, severity=Severity.YELLOW), alarm(2, severity=Severity.RED)
        rig.d.submit([(a, ev(a)), (b, ev(b))])
        return rig.tick(GROUP_WAIT_MS)[0]

    n1, n2 = run(), run()
    assert [na.alarm.severity for na in n1.alarms] == [Severity.RED, Severity.YELLOW]
    assert n1.notice_id == n2.notice_id and re.fullmatch(r"n-[0-9a-f]{24}", n1.notice_id)


# ------------------------------------------------------------------------------------------------ never twice


def test_never_twice_for_the_same_alarm_reason_tier() -> None:
    rig = Rig()
    a = alarm(1)
    rig.d.submit([(a, ev(a)), (a, ev(a))])  # QoS-1 style duplicate inside the window
    assert len(rig.tick(GROUP_WAIT_MS)) == 1
    rig.d.submit([(a, ev(a))])  # again after it was sent
    assert rig.tick(GROUP_WAIT_MS) == []
    assert rig.d.skipped == {"duplicate": 2}
    # escalation to a new tier is a new key; the same escalation twice is not
    up = dataclasses.replace(a, escalation_tier=Tier.TOWNSHIP)
    rig.d.submit([(up, ev(up, EventKind.ESCALATED, T0_MS + 300_000))])
    rig.d.submit([(up, ev(up, EventKind.ESCALATED, T0_MS + 300_001))])
    (n,) = rig.tick(GROUP_WAIT_MS)
    assert n.reason == "escalated" and len(n.alarms) == 1
    assert len(rig.sent("mqtt")) == 2


def test_restart_sends_no_duplicates() -> None:
    """A new Dispatcher with the same notification log (the pipeline's is the notices table) resends nothing."""
    log = InMemoryNotificationLog()
    first = Rig(log=log)
    a, b = alarm(1), alarm(2)
    first.d.submit([(a, ev(a)), (b, ev(b))])
    first.tick(GROUP_WAIT_MS)
    reminder = ev(a, EventKind.REMINDED, T0_MS + 600_000)
    first.d.submit([(a, reminder)])
    first.tick(GROUP_WAIT_MS)
    assert len(first.sent("mqtt")) == 2

    second = Rig(log=log, clock=ManualClock(T0_MS + 700_000))  # "restart": the alarm stage replays its events
    second.d.submit([(a, ev(a)), (b, ev(b)), (a, reminder)])
    assert second.tick(GROUP_WAIT_MS) == []
    assert second.d.skipped == {"duplicate": 3}
    # ...while the next reminder, a distinct event, still goes out
    second.d.submit([(a, ev(a, EventKind.REMINDED, T0_MS + 900_000))])
    (n,) = second.tick(GROUP_WAIT_MS)
    assert n.reason == "reminder"
    assert log.notice_of(NoticeKey(a.alarm_id, "reminder", "plant", T0_MS + 900_000)) == n.notice_id


def test_each_reminder_and_each_reactivation_is_its_own_notice() -> None:
    rig = Rig()
    a = alarm(1)
    for i in range(3):
        rig.d.submit([(a, ev(a, EventKind.REMINDED, T0_MS + (i + 1) * 300_000))])
        assert len(rig.tick(GROUP_WAIT_MS)) == 1
    for i in range(2):
        again = dataclasses.replace(a, occurrences=2 + i)
        rig.d.submit([(again, ev(again, EventKind.REACTIVATED, T0_MS + 2_000_000 + i))])
        assert len(rig.tick(GROUP_WAIT_MS)) == 1
    assert [n.reason.value for n, _ in rig.sent("mqtt")] == ["reminder"] * 3 + ["reactivated"] * 2


def test_chattering_alarm_in_one_window_is_one_entry_with_its_newest_snapshot() -> None:
    rig = Rig()
    a = alarm(1)
    rig.d.submit([(dataclasses.replace(a, occurrences=k), ev(a, EventKind.REACTIVATED, T0_MS + k))
                  for k in (2, 3, 4)])
    (n,) = rig.tick(GROUP_WAIT_MS)
    assert len(n.alarms) == 1 and n.alarms[0].alarm.occurrences == 4 and n.alarms[0].event_ts_ms == T0_MS + 4
    assert all(rig.log.seen(a.alarm_id, "reactivated", "plant", T0_MS + k) for k in (2, 3, 4))


# ------------------------------------------------------------------------------------------------ mute


@pytest.mark.parametrize("muted", [{"shelved_until_ms": T0_MS + 3_600_000}, {"suppressed": True},
                                   {"state": AlarmState.CLOSED}])
@pytest.mark.parametrize("kind", [EventKind.RAISED, EventKind.REACTIVATED, EventKind.ESCALATED, EventKind.REMINDED])
def test_shelved_suppressed_or_closed_notify_no_one(muted: dict, kind: EventKind) -> None:
    rig = Rig()
    a = alarm(1, **muted)
    rig.d.submit([(a, ev(a, kind))])
    assert rig.tick(GROUP_WAIT_MS) == []
    assert all(not ch.sent for ch in rig.channels.values()) and rig.d.drain_records() == []
    assert len(rig.log) == 0  # not logged: once the mute ends the alarm manager's next event may notify


def test_shelved_or_acked_inside_the_window_is_dropped_at_flush() -> None:
    rig = Rig()
    a, b, c = alarm(1), alarm(2), alarm(3)
    rig.d.submit([(a, ev(a)), (b, ev(b)), (c, ev(c, EventKind.REMINDED, T0_MS + 1))])
    shelved = dataclasses.replace(a, shelved_until_ms=T0_MS + 3_600_000, shelved_by="li")
    acked = dataclasses.replace(c, state=AlarmState.ACTIVE_ACK)
    rig.clock.advance(1000)
    rig.d.submit([(shelved, AlarmEvent(a.alarm_id, T0_MS + 1000, EventKind.SHELVED)),
                  (acked, AlarmEvent(c.alarm_id, T0_MS + 1000, EventKind.ACKED))])
    notices = rig.tick(GROUP_WAIT_MS)
    assert [[na.alarm.alarm_id for na in n.alarms] for n in notices] == [[b.alarm_id]]
    assert rig.d.skipped == {"shelved": 1, "acked": 1}


def test_unknown_site_still_reaches_mqtt_log_and_global_webhooks() -> None:
    rig = Rig()
    a = alarm(1, site="UNREGISTERED")
    rig.d.submit([(a, ev(a))])
    (n,) = rig.tick(GROUP_WAIT_MS)
    assert [r.key for r in n.recipients] == ["mqtt:ew/UNREGISTERED/notices", "log:log",
                                             "webhook:http://bureau.test/hook"]


# ------------------------------------------------------------------------------------------------ retries


def _webhook_rig(flaky: Flaky, metrics: Metrics | None = None) -> Rig:
    return Rig(channels={"mqtt": MemoryChannel("mqtt"), "email": MemoryChannel("email"), "webhook": flaky},
               webhook=WebhookConfig(urls=(), max_attempts=4, backoff_initial_ms=500, backoff_max_ms=1500),
               metrics=metrics)


def test_fails_twice_then_delivered_after_three_attempts_on_the_clock() -> None:
    flaky = Flaky("webhook", failures=2)
    rig = _webhook_rig(flaky)
    a = alarm(1)
    rig.d.submit([(a, ev(a))])
    rig.tick(GROUP_WAIT_MS)  # attempt 1 at T0+10 s fails
    t1 = T0_MS + GROUP_WAIT_MS
    rig.tick(499)
    assert len(flaky.calls) == 1  # not before its backoff
    assert rig.d.next_due_ms() == t1 + 500
    rig.tick(1)  # attempt 2 at +500 ms fails
    rig.tick(999)
    assert len(flaky.calls) == 2
    rig.tick(1)  # attempt 3 at +1000 ms more succeeds
    assert [t for t, _, _ in flaky.calls] == [t1, t1 + 500, t1 + 1500]
    hooks = [(r.attempt, r.outcome, r.error) for r in rig.d.drain_records() if r.channel == "webhook"]
    assert hooks == [(1, "retrying", "HTTP 500 Internal Server Error"),
                     (2, "retrying", "HTTP 500 Internal Server Error"), (3, "delivered", "")]
    rig.tick(60_000)
    assert len(flaky.calls) == 3 and rig.d.pending() == {"groups": 0, "backlog": 0, "retries": 0}


def test_always_failing_webhook_dead_letters_and_others_are_unaffected() -> None:
    metrics = Metrics(CollectorRegistry())
    flaky = Flaky("webhook", failures=10**9, only="http://hooks.test/plant")
    rig = _webhook_rig(flaky, metrics)
    a, b = alarm(1), alarm(2, site=OTHER.id)
    rig.d.submit([(a, ev(a)), (b, ev(b))])
    rig.tick(GROUP_WAIT_MS)
    for _ in range(50):
        rig.tick(100)
    plant_hook = [(r.attempt, r.outcome) for r in rig.d.drain_records() if r.recipient == "http://hooks.test/plant"]
    assert plant_hook == [(1, "retrying"), (2, "retrying"), (3, "retrying"), (4, "dead_letter")]
    assert [t - flaky.calls[0][0] for t, _, addr in flaky.calls] == [0, 500, 1500, 3000]  # 500, 1000, 1500(max)
    assert {r.address for _, r in rig.sent("email")} == {"li@plant.cn", "qian@dust.cn"}
    assert len(rig.sent("mqtt")) == 2
    value = metrics.registry.get_sample_value
    assert value("earlywarn_notices_total", {"channel": "webhook", "outcome": "dead_letter"}) == 1
    assert value("earlywarn_notices_total", {"channel": "webhook", "outcome": "retrying"}) == 3
    assert value("earlywarn_notices_total", {"channel": "email", "outcome": "delivered"}) == 2
    # one observation per alarm per delivery, at its first hand-off: mqtt + email + plant hook, mqtt + email
    assert value("earlywarn_notify_latency_seconds_count") == 5
    assert value("earlywarn_notify_latency_seconds_sum") == pytest.approx(5 * GROUP_WAIT_MS / 1000)


def test_unrecoverable_failure_is_not_retried() -> None:
    flaky = Flaky("webhook", failures=1, recoverable=False)
    rig = _webhook_rig(flaky)
    a = alarm(1)
    rig.d.submit([(a, ev(a))])
    rig.tick(GROUP_WAIT_MS)
    rig.tick(60_000)
    assert len(flaky.calls) == 1
    assert [r.outcome for r in rig.d.drain_records() if r.channel == "webhook"] == ["failed"]


def test_a_crashing_channel_is_retried_not_fatal() -> None:
    class Crash:
        name = "email"
        calls = 0

        def send(self, notice: Notice, recipient: Recipient) -> None:
            Crash.calls += 1
            if Crash.calls == 1:
                raise KeyError("bug")

    rig = Rig(channels={"email": Crash()})
    a = alarm(1)
    rig.d.submit([(a, ev(a))])
    rig.tick(GROUP_WAIT_MS)
    rig.tick(500)
    assert [(r.outcome, r.error) for r in rig.d.drain_records()] == [("retrying", "KeyError: 'bug'"),
                                                                     ("delivered", "")]


# ------------------------------------------------------------------------------------------------ records, JSON


def test_records_one_row_per_alarm_channel_recipient_attempt() -> None:
    rig = Rig(channels={"email": MemoryChannel("email")})
    a, b = alarm(1), alarm(2)
    rig.d.submit([(a, ev(a)), (b, ev(b))])
    (n,) = rig.tick(GROUP_WAIT_MS)
    assert rig.d.drain_records() == [
        NoticeRecord(n.notice_id, a.alarm_id, "email", "li@plant.cn", "plant", "raised", T0_MS + GROUP_WAIT_MS,
                     "delivered", "", 1),
        NoticeRecord(n.notice_id, b.alarm_id, "email", "li@plant.cn", "plant", "raised", T0_MS + GROUP_WAIT_MS,
                     "delivered", "", 1),
    ]


def test_notice_json_fields() -> None:
    rig = Rig()
    a = alarm(1, raised_at_ms=T0_MS + 250)
    b = alarm(2, severity=Severity.ORANGE, value=float("nan"))
    rig.d.submit([(a, ev(a)), (b, ev(b))])
    rig.tick(GROUP_WAIT_MS)
    (notice, mqtt), = rig.sent("mqtt")
    doc = json.loads(rig.channels["mqtt"].payloads[0])
    assert doc == notice_json(notice, mqtt)  # what goes on the wire is exactly this
    assert doc["notice_id"] == notice.notice_id
    assert doc["site"] == "SZ-AL-0001" and doc["site_name"] == SITE.name
    assert doc["reason"] == "raised" and doc["tier"] == "plant" and doc["severity"] == "red"
    assert doc["sent_at"] == "2025-11-28T08:00:10.000Z"
    first, second = doc["alarms"]
    assert first == {
        "alarm_id": a.alarm_id, "rule_id": "cw_pressure_ll", "tag": "cw_pressure_mpa", "severity": "red",
        "state": "active_unack", "raised_at": "2025-11-28T08:00:00.250Z", "value": 0.12,
        "message": "冷却水压力低低 / Cooling-water pressure low-low", "event_at": "2025-11-28T08:00:00.250Z",
        "ack_deadline": "2025-11-28T08:05:00.250Z", "occurrences": 1, "escalation_tier": "plant",
        "ack_url": first["ack_url"],
    }
    assert second["value"] is None and second["ack_deadline"] == "2025-11-28T08:10:00.000Z"  # orange: 10 min
    # links: each bound to its alarm and this recipient; the top one to the whole notice
    for item in (first, second):
        token = item["ack_url"].removeprefix(PUBLIC_URL + "/ack/")
        assert rig.signer.verify(token, T0_MS) == (item["alarm_id"], "mqtt:ew/SZ-AL-0001/notices", notice.notice_id)
    top = doc["ack_url"].removeprefix(PUBLIC_URL + "/ack/")
    assert rig.signer.verify(top, T0_MS) == ("*", "mqtt:ew/SZ-AL-0001/notices", notice.notice_id)
    # the webhook copy of the same notice is the same document but for the recipient and its links
    hook = next(json.loads(p) for p in rig.channels["webhook"].payloads if b"bureau.test" in p)
    strip = lambda d: {k: v for k, v in d.items() if k not in ("recipient", "ack_url", "alarms")}
    assert strip(hook) == strip(doc)
    assert [strip(x) for x in hook["alarms"]] == [strip(x) for x in doc["alarms"]]


def test_single_alarm_notice_top_link_is_the_alarm_link_and_no_links_without_public_url() -> None:
    rig = Rig()
    a = alarm(1)
    rig.d.submit([(a, ev(a))])
    (n,) = rig.tick(GROUP_WAIT_MS)
    r = n.recipients[2]
    assert n.ack_url(r) == n.ack_url(r, a.alarm_id) is not None
    assert n.ack_url(n.recipients[1]) is None  # the log never shows links

    plain = Dispatcher(SITES, NotifyConfig(), AlarmsConfig(), channels={"mqtt": MemoryChannel("mqtt")},
                       log=InMemoryNotificationLog(), clock=ManualClock(T0_MS))
    plain.submit([(a, ev(a))])
    (n2,) = plain.flush(T0_MS + 10_000)
    assert "ack_url" not in notice_json(n2, n2.recipients[0])


def test_escalated_deadline_counts_one_ack_interval_per_escalation() -> None:
    rig = Rig()
    a = alarm(1, tier=Tier.TOWNSHIP, ack_escalations=1, unacked_since_ms=T0_MS)
    rig.d.submit([(a, ev(a, EventKind.ESCALATED, T0_MS + 300_000))])
    (n,) = rig.tick(GROUP_WAIT_MS)
    assert n.alarms[0].ack_deadline_ms == T0_MS + 2 * 300_000


# ------------------------------------------------------------------------------------------------ threads


class Gate:
    """A channel that blocks until released (a hanging webhook)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.entered = threading.Event()
        self.release = threading.Event()
        self.sent: list[str] = []

    def send(self, notice: Notice, recipient: Recipient) -> None:
        self.entered.set()
        assert self.release.wait(10)
        self.sent.append(notice.notice_id)


def test_a_hanging_webhook_blocks_neither_flush_nor_other_channels() -> None:
    hook, mqtt = Gate("webhook"), MemoryChannel("mqtt")
    clock = ManualClock(T0_MS)
    d = Dispatcher(SITES, NotifyConfig(webhook=WebhookConfig(urls=("http://slow",))), AlarmsConfig(),
                   channels={"webhook": hook, "mqtt": mqtt}, log=InMemoryNotificationLog(), clock=clock,
                   executor=ThreadedExecutor(workers={"webhook": 1}, queue_max=1))
    try:
        for n in range(4):  # four notices (four sites' worth): more than the webhook lane can hold
            a = alarm(n, site=f"S{n}")
            d.submit([(a, ev(a))])
        d.flush(T0_MS + 10_000)  # returns although the first webhook delivery hangs
        assert hook.entered.wait(5)
        d.flush(T0_MS + 10_001)
        assert d.pending()["backlog"] >= 1  # lane full: kept, not dropped, not blocking
        hook.release.set()
        for _ in range(20):  # the pipeline keeps ticking; the backlog drains into the lane
            d.wait_idle(5)
            d.flush(T0_MS + 10_002)
            if d.pending()["backlog"] == 0 and len(hook.sent) == 4:
                break
        assert d.wait_idle(5)
        assert len(hook.sent) == 4 and len(mqtt.sent) == 4
        assert sum(r.outcome == "delivered" for r in d.drain_records()) == 8
    finally:
        hook.release.set()
        d.close()


class Counting(MemoryChannel):
    """A MemoryChannel that sets `reached` once it has sent `n` notices."""

    def __init__(self, name: str, n: int) -> None:
        super().__init__(name)
        self.n = n
        self.reached = threading.Event()

    def send(self, notice: Notice, recipient: Recipient) -> None:
        super().send(notice, recipient)
        if len(self.sent) >= self.n:
            self.reached.set()


def test_a_full_lane_holds_up_only_its_own_channel() -> None:
    """The deliveries a full lane refuses wait in the backlog; the other channels' deliveries of the same
    flush, offered after them, go out at once."""
    hook, mqtt = Gate("webhook"), Counting("mqtt", 4)
    clock = ManualClock(T0_MS)
    d = Dispatcher(SITES, NotifyConfig(webhook=WebhookConfig(urls=("http://slow",))), AlarmsConfig(),
                   channels={"webhook": hook, "mqtt": mqtt}, log=InMemoryNotificationLog(), clock=clock,
                   executor=ThreadedExecutor(workers={"webhook": 1}, queue_max=1))
    try:
        for n in range(4):
            a = alarm(n, site=f"S{n}")
            d.submit([(a, ev(a))])
        # each notice: mqtt then webhook. The webhook lane takes two at most (one hanging, one queued); the
        # mqtt lane (queue_max 1 as well) takes what fits at each flush, however many webhooks wait before it
        for _ in range(50):
            d.flush(T0_MS + 10_000)
            if mqtt.reached.wait(0.1):
                break
        assert mqtt.reached.is_set(), f"mqtt held up behind the webhook lane: {len(mqtt.sent)} of 4 sent"
        assert d.pending()["backlog"] >= 2 and len(hook.sent) == 0
        hook.release.set()
        for _ in range(20):
            d.wait_idle(5)
            d.flush(T0_MS + 10_001)
            if d.pending()["backlog"] == 0 and len(hook.sent) == 4:
                break
        assert d.wait_idle(5)
        assert sorted(hook.sent) == sorted({n.notice_id for n, _ in mqtt.sent})  # each once, none lost
    finally:
        hook.release.set()
        d.close()


def test_threaded_executor_offer_many_keeps_each_lanes_order_and_returns_the_refused_in_order() -> None:
    gate = threading.Event()
    started = threading.Event()
    ran: list[str] = []

    def run(dl: Delivery) -> None:
        if dl.channel == "webhook" and not started.is_set():
            started.set()
            assert gate.wait(10)
        ran.append(f"{dl.channel}:{dl.recipient.address}")

    ex = ThreadedExecutor(workers={"webhook": 1, "mqtt": 1}, queue_max=1)
    ex.start(run)
    # the runner above never looks at the notice
    mk = [Delivery(None, Recipient(ch, addr)) for ch, addr in  # type: ignore[arg-type]
          (("webhook", "w1"), ("mqtt", "m1"), ("webhook", "w2"), ("webhook", "w3"), ("mqtt", "m2"))]
    try:
        assert ex.offer_many(mk[:1]) == []
        assert started.wait(5)  # w1 is running (and blocked): the webhook queue is empty again
        refused = ex.offer_many(mk[1:])
        # the webhook lane holds one (w2): w3 refused; mqtt takes m1 (m2 refused: queue_max 1, unless m1 ran)
        assert [r.recipient.address for r in refused if r.channel == "webhook"] == ["w3"]
        assert refused == sorted(refused, key=mk.index)
        gate.set()
        left = refused
        while left:
            assert ex.wait_idle(5)
            left = ex.offer_many(left)
        assert ex.wait_idle(5)
        hooks = [r for r in ran if r.startswith("webhook")]
        assert hooks == ["webhook:w1", "webhook:w2", "webhook:w3"]
        assert sorted(r for r in ran if r.startswith("mqtt")) == ["mqtt:m1", "mqtt:m2"]
    finally:
        gate.set()
        ex.close()


def test_routes_are_remembered_per_site_and_recomputed_for_a_replaced_site() -> None:
    sites = dict(SITES)
    clock = ManualClock(T0_MS)
    email = MemoryChannel("email")
    d = Dispatcher(sites, NotifyConfig(group_wait_ms=0), AlarmsConfig(red_immediate_tiers=("plant",)),
                   channels={"email": email}, log=InMemoryNotificationLog(), clock=clock)
    a = alarm(1)
    d.submit([(a, ev(a))])
    d.flush(T0_MS)
    assert [r.address for _, r in email.sent] == ["li@plant.cn"]
    sites[SITE.id] = dataclasses.replace(SITE, contacts=(Contact(Tier.PLANT, "New", email="new@plant.cn"),))
    b = alarm(2)
    d.submit([(b, ev(b))])
    d.flush(T0_MS)
    assert [r.address for _, r in email.sent] == ["li@plant.cn", "new@plant.cn"]


# ------------------------------------------------------------------------------------------------ lifecycle


def test_close_sends_groups_still_in_their_window() -> None:
    rig = Rig()
    a = alarm(1)
    rig.d.submit([(a, ev(a))])
    rig.clock.advance(1000)
    rig.d.close()
    assert len(rig.sent("mqtt")) == 1 and rig.sent("mqtt")[0][0].prepared_ms == T0_MS + 1000
    assert rig.log.seen(a.alarm_id, "raised", "plant")


def test_refresh_applies_newer_snapshots_to_waiting_alarms_only() -> None:
    rig = Rig()
    a, b = alarm(1), alarm(2)
    rig.d.submit([(a, ev(a, EventKind.REMINDED, T0_MS + 5))])
    rig.d.refresh([dataclasses.replace(a, state=AlarmState.ACTIVE_ACK), dataclasses.replace(b, suppressed=True)])
    assert rig.tick(GROUP_WAIT_MS) == []  # a was acknowledged meanwhile: no reminder
    rig.d.submit([(b, ev(b))])  # b's earlier snapshot was not kept (it was not waiting)
    assert len(rig.tick(GROUP_WAIT_MS)) == 1


def test_raise_is_keyed_at_the_plant_whatever_the_current_tier() -> None:
    """A re-offered raise of an alarm that has escalated since must not be sent again."""
    rig = Rig()
    a = alarm(1)
    rig.d.submit([(a, ev(a))])
    rig.tick(GROUP_WAIT_MS)
    rig.d.submit([(dataclasses.replace(a, escalation_tier=Tier.COUNTY), ev(a))])
    assert rig.tick(GROUP_WAIT_MS) == []


def test_a_shorter_window_per_severity_pulls_the_group_forward() -> None:
    clock = ManualClock(T0_MS)
    mqtt = MemoryChannel("mqtt")
    d = Dispatcher(SITES, NotifyConfig(group_wait_ms=GROUP_WAIT_MS), AlarmsConfig(), channels={"mqtt": mqtt},
                   log=InMemoryNotificationLog(), clock=clock, group_wait_ms_by_severity={Severity.RED: 1_000})
    yellow, red = alarm(1, severity=Severity.YELLOW), alarm(2, raised_at_ms=T0_MS + 500)
    d.submit([(yellow, ev(yellow))])
    assert d.next_due_ms() == T0_MS + GROUP_WAIT_MS
    clock.advance(500)
    d.submit([(red, ev(red))])  # same site, same audience (red_immediate is plant only): same group
    assert d.next_due_ms() == T0_MS + 1_500
    assert d.flush(T0_MS + 1_499) == []
    (n,) = d.flush(T0_MS + 1_500)
    assert [na.alarm.severity for na in n.alarms] == [Severity.RED, Severity.YELLOW]


def test_a_closed_alarm_leaves_the_notification_log_and_still_notifies_no_more() -> None:
    """The log's memory follows the open alarms: without it an engine running for years keeps a key per
    notice ever prepared. Forgetting is safe because a closed alarm never notifies again."""
    rig = Rig()
    a, b = alarm(1), alarm(2)
    rig.d.submit([(a, ev(a)), (b, ev(b))])
    rig.tick(GROUP_WAIT_MS)
    assert len(rig.log) == 2
    shut = dataclasses.replace(a, state=AlarmState.CLOSED, closed_at_ms=T0_MS + 60_000)
    rig.d.submit([(shut, ev(shut, EventKind.CLOSED, T0_MS + 60_000))])
    assert len(rig.log) == 1 and rig.log.seen(b.alarm_id, "raised", "plant")
    # a re-delivered raise of the closed alarm still goes nowhere
    rig.d.submit([(shut, ev(shut))])
    assert rig.tick(GROUP_WAIT_MS) == []
    # an alarm closed while it waits in a group keeps its keys until that group is flushed (no resend either)
    c = alarm(3)
    rig.d.submit([(c, ev(c))])
    c_shut = dataclasses.replace(c, state=AlarmState.CLOSED, closed_at_ms=T0_MS + 61_000)
    rig.d.submit([(c_shut, ev(c_shut, EventKind.CLOSED, T0_MS + 61_000))])
    rig.tick(GROUP_WAIT_MS)
    rig.d.submit([(c_shut, ev(c_shut))])
    assert rig.tick(GROUP_WAIT_MS) == []
