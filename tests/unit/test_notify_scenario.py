"""Timeline with the real AlarmManager (style.md (d) 9): an unacknowledged red alarm reaches the plant at
once, then each tier up at the ack deadlines, with reminders, nothing more once acknowledged, and a restart in
the middle sends no duplicates. ManualClock, one-second pipeline ticks, in-memory channels.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from earlywarn.alarms.manager import AlarmManager
from earlywarn.clock import ManualClock
from earlywarn.config import AlarmsConfig, NotifyConfig, WebhookConfig
from earlywarn.model import Contact, Severity, Signal, SignalKind, Site, Tier
from earlywarn.notify import (
    Dispatcher,
    InMemoryNotificationLog,
    LinkSigner,
    MemoryChannel,
    Notice,
    recovery_items,
)

T0_MS = 1_764_316_800_000
MIN_MS = 60_000
SITE = Site(
    id="SZ-AL-0001", name="casting", plant="aluminum", district="wujiang",
    contacts=(Contact(Tier.PLANT, "plant", email="plant@s.cn"), Contact(Tier.TOWNSHIP, "town", email="town@g.cn"),
              Contact(Tier.COUNTY, "county", email="county@g.cn"), Contact(Tier.CITY, "city", email="city@g.cn")),
)
SITES = {SITE.id: SITE}
ALARMS = AlarmsConfig(reminder_interval_ms=5 * MIN_MS)  # red: ack 5 min


@dataclass
class Engine:
    """The slice of the pipeline that matters here: alarm manager -> dispatcher, on one clock."""

    clock: ManualClock
    log: InMemoryNotificationLog
    email: MemoryChannel = field(default_factory=lambda: MemoryChannel("email"))
    manager: AlarmManager | None = None
    dispatcher: Dispatcher | None = None

    def start(self, open_alarms: list = ()) -> None:  # type: ignore[assignment]
        self.manager = AlarmManager(SITES, ALARMS, open_alarms=open_alarms)
        self.dispatcher = Dispatcher(SITES, NotifyConfig(group_wait_ms=10_000, webhook=WebhookConfig()), ALARMS,
                                     channels={"email": self.email}, log=self.log, clock=self.clock,
                                     link_signer=LinkSigner(b"scenario-secret-0123456789", 86_400_000),
                                     public_url="https://ew.test")

    def feed(self, changes) -> None:
        assert self.dispatcher is not None
        self.dispatcher.submit(changes.notices)
        self.dispatcher.refresh(changes.alarms)

    def run_until(self, end_ms: int) -> None:
        assert self.manager is not None and self.dispatcher is not None
        while self.clock.now_ms() < end_ms:
            now = self.clock.advance(1000)
            self.feed(self.manager.tick(now))
            self.dispatcher.flush(now)

    def timeline(self) -> list[tuple[int, str, str, str]]:
        """(minutes after T0, reason, notice tier, e-mail recipient) of every e-mail handed over."""
        out = []
        for notice, r in self.email.sent:
            assert isinstance(notice, Notice)
            out.append(((notice.prepared_ms - T0_MS) // 1000, notice.reason.value, notice.tier.label, r.address))
        return out


def _raise(engine: Engine) -> str:
    assert engine.manager is not None
    sig = Signal(SITE.id, "cw_pressure_mpa", "cw_pressure_ll", Severity.RED, SignalKind.RAISE, T0_MS, 0.12,
                 "Cooling-water pressure low-low")
    changes = engine.manager.apply_signals([sig], T0_MS)
    engine.feed(changes)
    return changes.alarms[0].alarm_id


EXPECTED_UNTIL_22_MIN = [
    (10, "raised", "plant", "plant@s.cn"),  # at once (after the 10 s grouping window)
    (310, "escalated", "township", "plant@s.cn"),  # ack deadline missed: township, plant kept informed
    (310, "escalated", "township", "town@g.cn"),
    (610, "escalated", "county", "plant@s.cn"),
    (610, "escalated", "county", "county@g.cn"),
    (910, "escalated", "city", "plant@s.cn"),
    (910, "escalated", "city", "city@g.cn"),
    (1210, "reminder", "city", "city@g.cn"),  # top of the chain: reminders to the tier that is late
]


def test_unacknowledged_red_alarm_climbs_the_chain_then_stops_when_acknowledged() -> None:
    engine = Engine(ManualClock(T0_MS), InMemoryNotificationLog())
    engine.start()
    alarm_id = _raise(engine)
    engine.run_until(T0_MS + 22 * MIN_MS)
    assert engine.timeline() == EXPECTED_UNTIL_22_MIN
    assert engine.manager is not None
    engine.feed(engine.manager.ack(alarm_id, "email:city@g.cn", "on it", engine.clock.now_ms()))
    engine.run_until(T0_MS + 60 * MIN_MS)
    assert engine.timeline() == EXPECTED_UNTIL_22_MIN  # nothing more once acknowledged


def test_restart_in_the_middle_sends_no_duplicates() -> None:
    clock, log = ManualClock(T0_MS), InMemoryNotificationLog()
    first = Engine(clock, log)
    first.start()
    _raise(first)
    first.run_until(T0_MS + 7 * MIN_MS)
    assert first.manager is not None
    stored = first.manager.open_alarms()

    second = Engine(clock, log, email=first.email)  # same inboxes, same notification log, new everything else
    second.start(open_alarms=stored)
    assert second.dispatcher is not None
    # recovery after a crash: re-offer what the stored alarms may have missed; all of it was sent: dropped
    second.dispatcher.submit(recovery_items(stored))
    assert second.dispatcher.skipped.get("duplicate") == 2  # the raise and the escalation to the township
    second.run_until(T0_MS + 22 * MIN_MS)
    assert second.timeline() == EXPECTED_UNTIL_22_MIN


def test_recovery_sends_what_a_crash_lost() -> None:
    """Prepared-but-unlogged is the only window a crash can hit: simulate it by losing the log's last entry."""
    clock, log = ManualClock(T0_MS), InMemoryNotificationLog()
    first = Engine(clock, log)
    first.start()
    _raise(first)
    first.run_until(T0_MS + 5 * MIN_MS + 5_000)  # the escalation is waiting in its window: crash now
    assert first.manager is not None
    stored = first.manager.open_alarms()
    assert [t[1] for t in first.timeline()] == ["raised"]

    second = Engine(clock, log)
    second.start(open_alarms=stored)
    assert second.dispatcher is not None
    second.dispatcher.submit(recovery_items(stored))
    second.run_until(T0_MS + 6 * MIN_MS)
    assert [(t[1], t[2], t[3]) for t in second.timeline()] == [
        ("escalated", "township", "plant@s.cn"), ("escalated", "township", "town@g.cn")]


def test_alarm_acknowledged_inside_the_window_gets_no_reminder() -> None:
    engine = Engine(ManualClock(T0_MS), InMemoryNotificationLog())
    engine.start()
    alarm_id = _raise(engine)
    engine.run_until(T0_MS + 5 * MIN_MS + 2_000)  # escalation submitted at 5:00, its window closes at 5:10
    assert engine.manager is not None
    engine.feed(engine.manager.ack(alarm_id, "email:plant@s.cn", "", engine.clock.now_ms()))
    engine.run_until(T0_MS + 30 * MIN_MS)
    # the escalation still goes out (it happened; the township should know), nothing after it
    assert [t[1] for t in engine.timeline()] == ["raised", "escalated", "escalated"]
