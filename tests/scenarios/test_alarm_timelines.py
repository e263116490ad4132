"""Alarm timelines on a ManualClock (style.md (d) 9): push signals and actions at t, tick, expect events.

No sleeping: the clock is moved by hand and `tick(now)` fires what is due. Times are written in minutes
from T0 so each scenario reads like the operator's log.
"""

from __future__ import annotations

from collections.abc import Iterable

import pytest

from earlywarn.alarms.manager import AlarmClosed, AlarmManager, Changes, alarm_id_for
from earlywarn.clock import ManualClock
from earlywarn.config import AlarmsConfig
from earlywarn.errors import ActionError, NotFound
from earlywarn.model import (
    Alarm,
    AlarmEvent,
    AlarmState,
    Disposition,
    Severity,
    Signal,
    SignalKind,
    Site,
    Tier,
)

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
MIN = 60_000
SEC = 1_000
SITES = {
    "hz1": Site("hz1", "Tank farm 1", "hazchem", "district-east"),
    "al1": Site("al1", "Casthouse 1", "aluminum", "district-west"),
}


class Timeline:
    """A manager, a manual clock and everything it produced, with helpers to drive and query it."""

    def __init__(
        self, config: AlarmsConfig | None = None, manager: AlarmManager | None = None, start_ms: int = T0
    ):
        self.clock = ManualClock(start_ms)
        self.m = manager or AlarmManager(SITES, config or AlarmsConfig())
        self.events: list[AlarmEvent] = []
        self.notices: list[tuple[Alarm, AlarmEvent]] = []

    def at(self, minutes: float) -> Timeline:
        self.clock.set(T0 + round(minutes * MIN))
        return self

    @property
    def now(self) -> int:
        return self.clock.now_ms()

    def _take(self, ch: Changes) -> Changes:
        self.events += ch.events
        self.notices += ch.notices
        return ch

    def signal(
        self,
        kind: SignalKind,
        tag: str = "lt101",
        value: float = 9.5,
        *,
        site: str = "hz1",
        rule: str = "level_hh",
        severity: Severity = Severity.RED,
    ) -> Changes:
        sig = Signal(site, tag, rule, severity, kind, self.now, value, "level high-high")
        return self._take(self.m.apply_signals([sig], self.now))

    def raise_(self, tag: str = "lt101", value: float = 9.5, **kw: object) -> Changes:
        return self.signal(SignalKind.RAISE, tag, value, **kw)  # type: ignore[arg-type]

    def clear(self, tag: str = "lt101", value: float = 5.0, **kw: object) -> Changes:
        return self.signal(SignalKind.CLEAR, tag, value, **kw)  # type: ignore[arg-type]

    def tick(self) -> Changes:
        return self._take(self.m.tick(self.now))

    def run_until(self, minutes: float, every_s: float = 30) -> None:
        """Tick every `every_s` seconds up to and including `minutes`."""
        t = self.now
        end = T0 + round(minutes * MIN)
        while t < end:
            t = min(end, t + round(every_s * SEC))
            self.clock.set(t)
            self.tick()

    def act(self, verb: str, alarm_id: str, *args: object) -> Changes:
        return self._take(getattr(self.m, verb)(alarm_id, *args, self.now))

    def kinds(self, alarm_id: str | None = None) -> list[tuple[float, str]]:
        """(minute, kind) of the events so far, of one alarm or all."""
        return [((e.ts_ms - T0) / MIN, e.kind.value) for e in self.events if alarm_id in (None, e.alarm_id)]

    def notice_kinds(self) -> list[tuple[float, str]]:
        return [((e.ts_ms - T0) / MIN, e.kind.value) for _, e in self.notices]


def only(alarms: Iterable[Alarm]) -> Alarm:
    (a,) = list(alarms)
    return a


# ---------------------------------------------------------------------------------------------


def test_raise_ack_clear_close_records_times_and_events() -> None:
    tl = Timeline()
    ch = tl.at(0).raise_(value=9.5)
    a = only(ch.alarms)
    assert a.alarm_id == alarm_id_for("hz1", "level_hh", "lt101", T0)
    assert (a.plant, a.district, a.state, a.raised_at_ms) == (
        "hazchem",
        "district-east",
        AlarmState.ACTIVE_UNACK,
        T0,
    )
    assert [e.kind.value for _, e in ch.notices] == ["raised"]
    tl.at(2).act("ack", a.alarm_id, "zhang.wei", "on my way")
    tl.at(3).clear(value=6.0)
    tl.at(4).act("comment", a.alarm_id, "zhang.wei", "inlet valve stuck open")
    ch = tl.at(9).act("close", a.alarm_id, "zhang.wei", Disposition.REAL_HANDLED, "valve replaced")
    closed = only(ch.alarms)
    assert closed.state is AlarmState.CLOSED
    assert (closed.acked_at_ms, closed.acked_by) == (T0 + 2 * MIN, "zhang.wei")
    assert (closed.cleared_at_ms, closed.closed_at_ms, closed.closed_by) == (
        T0 + 3 * MIN,
        T0 + 9 * MIN,
        "zhang.wei",
    )
    assert (closed.disposition, closed.note, closed.occurrences, closed.peak_value) == (
        Disposition.REAL_HANDLED,
        "valve replaced",
        1,
        9.5,
    )
    assert tl.kinds() == [(0, "raised"), (2, "acked"), (3, "cleared"), (4, "commented"), (9, "closed")]
    assert [e.actor for e in tl.events] == ["engine", "zhang.wei", "engine", "zhang.wei", "zhang.wei"]
    assert tl.m.open_alarms() == []
    with pytest.raises(AlarmClosed):
        tl.m.ack(a.alarm_id, "x", "", tl.now)
    with pytest.raises(NotFound):
        tl.m.ack("Anope", "x", "", tl.now)


def test_close_of_an_active_alarm_is_refused() -> None:
    tl = Timeline()
    a = only(tl.at(0).raise_().alarms)
    with pytest.raises(ActionError, match="cannot close an active alarm: it must clear first"):
        tl.at(1).act("close", a.alarm_id, "op", "real_handled", "")
    assert tl.m.get(a.alarm_id).state is AlarmState.ACTIVE_UNACK


def test_reactivation_before_close_reopens_the_same_alarm() -> None:
    tl = Timeline()
    a = only(tl.at(0).raise_(value=9.0).alarms)
    tl.at(1).act("ack", a.alarm_id, "op", "")
    tl.at(2).clear()
    ch = tl.at(5).raise_(value=9.8)
    b = only(ch.alarms)
    assert b.alarm_id == a.alarm_id
    assert (b.state, b.occurrences, b.peak_value, b.last_activation_ms) == (
        AlarmState.ACTIVE_UNACK,
        2,
        9.8,
        T0 + 5 * MIN,
    )
    assert [e.kind.value for _, e in ch.notices] == ["reactivated"]
    assert len(tl.m.open_alarms()) == 1


def test_activation_after_close_opens_a_new_alarm() -> None:
    tl = Timeline()
    a = only(tl.at(0).raise_().alarms)
    tl.at(1).clear()
    tl.at(2).act("close", a.alarm_id, "op", "process_normal", "")
    b = only(tl.at(3).raise_().alarms)
    assert b.alarm_id != a.alarm_id and b.occurrences == 1 and b.raised_at_ms == T0 + 3 * MIN
    assert b.alarm_id == alarm_id_for("hz1", "level_hh", "lt101", T0 + 3 * MIN)
    with pytest.raises(AlarmClosed):
        tl.m.get(a.alarm_id)


def test_unacknowledged_red_escalates_every_ack_deadline_and_reminds() -> None:
    tl = Timeline()
    a = only(tl.at(0).raise_().alarms)
    tl.run_until(27)
    assert tl.kinds(a.alarm_id) == [
        (0, "raised"),
        (5, "escalated"),
        (10, "escalated"),
        (15, "escalated"),
        (20, "reminded"),
        (25, "reminded"),
    ]
    assert tl.m.get(a.alarm_id).escalation_tier is Tier.CITY
    assert [e.detail.split(": ")[-1] for e in tl.events if e.kind.value == "escalated"] == [
        "plant -> township",
        "township -> county",
        "county -> city",
    ]
    # every one of them deserves a notice
    assert tl.notice_kinds() == [(k, v) for k, v in tl.kinds()]
    tl.at(27).act("ack", a.alarm_id, "li.na", "")
    n = len(tl.events)
    tl.run_until(120)
    assert tl.events[n:] == []  # acknowledged; close deadline (30 min) cannot go above city


def test_ack_stops_escalation_and_reminders_but_close_deadline_escalates_once() -> None:
    tl = Timeline()
    a = only(tl.at(0).raise_().alarms)
    tl.run_until(7)
    assert tl.m.get(a.alarm_id).escalation_tier is Tier.TOWNSHIP
    tl.at(7).act("ack", a.alarm_id, "op", "")
    tl.run_until(29.5)
    assert tl.kinds(a.alarm_id)[-1] == (7, "acked")
    tl.run_until(120)
    assert tl.kinds(a.alarm_id)[-1] == (30, "escalated")
    assert "close deadline missed" in tl.events[-1].detail
    assert tl.m.get(a.alarm_id).escalation_tier is Tier.COUNTY
    assert tl.notices[-1][1] is tl.events[-1]


def test_orange_deadlines_from_config() -> None:
    cfg = AlarmsConfig(reminder_interval_ms=0)
    tl = Timeline(cfg)
    a = only(tl.at(0).raise_(severity=Severity.ORANGE, rule="level_h").alarms)
    tl.run_until(25)
    assert tl.kinds(a.alarm_id) == [(0, "raised"), (10, "escalated"), (20, "escalated")]


def test_shelved_alarm_sends_nothing_and_unshelves_at_expiry() -> None:
    tl = Timeline()
    a = only(tl.at(0).raise_().alarms)
    tl.at(1).act("shelve", a.alarm_id, "wang.fang", T0 + 21 * MIN, "level transmitter being replaced")
    n_notices = len(tl.notices)
    tl.run_until(20.9)
    assert len(tl.notices) == n_notices
    assert tl.kinds(a.alarm_id) == [(0, "raised"), (1, "shelved")]
    tl.at(3).clear()
    tl.at(4).raise_()  # reactivation while shelved: recorded, but no notice
    assert len(tl.notices) == n_notices
    tl.run_until(21)
    ev = tl.events[-1]
    assert (ev.kind.value, ev.actor, ev.ts_ms) == ("unshelved", "engine", T0 + 21 * MIN)
    assert tl.m.get(a.alarm_id).shelved_until_ms is None
    # still unacknowledged: the ack clock restarted when the shelve ended
    tl.run_until(26)
    assert tl.kinds(a.alarm_id)[-1] == (26, "escalated")
    assert tl.notices[-1][1].kind.value == "escalated"


def test_shelve_longer_than_max_is_refused() -> None:
    tl = Timeline(AlarmsConfig(max_shelve_ms=60 * MIN))
    a = only(tl.at(0).raise_().alarms)
    with pytest.raises(ActionError, match="at most 60 min"):
        tl.act("shelve", a.alarm_id, "op", T0 + 61 * MIN, "long job")
    with pytest.raises(ActionError, match="needs a reason"):
        tl.act("shelve", a.alarm_id, "op", T0 + 10 * MIN, "")


def test_chattering_tag_is_flagged() -> None:
    tl = Timeline()
    tl.at(0).raise_()
    tl.at(10 / 60).clear()
    a = only(tl.at(20 / 60).raise_().alarms)
    assert not a.chattering and a.occurrences == 2
    tl.at(30 / 60).clear()
    a = only(tl.at(40 / 60).raise_().alarms)
    assert a.chattering and a.occurrences == 3  # 3 activations within 60 s
    assert tl.m.stats["chattering"] == 1
    tl.at(5).clear()
    assert tl.m.get(a.alarm_id).chattering  # stays on the episode
    assert only(tl.at(30).raise_().alarms).chattering


def test_slow_repeats_are_not_chattering() -> None:
    tl = Timeline()
    for i in range(4):
        tl.at(i).raise_()
        tl.at(i + 0.5).clear()
    assert not tl.m.open_alarms()[0].chattering
    assert "chattering" not in tl.m.stats


def test_chattering_counts_across_episodes() -> None:
    tl = Timeline()
    for i in range(3):
        a = only(tl.at(i * 10 / 60).raise_().alarms)
        tl.at(i * 10 / 60 + 1 / 60).clear()
        tl.act("close", a.alarm_id, "op", "instrument_fault", "")
    assert a.chattering and a.occurrences == 1


def test_flood_is_flagged() -> None:
    tl = Timeline()
    flags = []
    for i in range(13):
        flags.append(
            only(tl.at(i * 0.5).raise_(tag=f"gt{i:03d}", rule="gas_h", severity=Severity.ORANGE).alarms).flood
        )
    assert flags == [False] * 10 + [True] * 3  # more than 10 alarms within 10 minutes
    assert tl.m.stats["flood"] == 3
    # another site is not flooded
    assert not only(tl.at(7).raise_(site="al1", tag="cw_pressure_mpa").alarms).flood
    # once the storm is over, new alarms are normal again
    assert not only(tl.at(30).raise_(tag="gt999", rule="gas_h").alarms).flood


def test_maintenance_window_suppresses_and_ends_by_itself() -> None:
    tl = Timeline()
    w = tl.m.add_window("hz1", None, T0, T0 + 10 * MIN, "annual calibration", "chen.jie")
    assert tl.m.windows() == [w]
    ch = tl.at(1).raise_()
    a = only(ch.alarms)
    assert a.suppressed and ch.notices == []
    assert [e.kind.value for e in ch.events] == ["raised", "suppressed"]
    assert w.window_id in ch.events[1].detail
    tl.run_until(9.9)
    assert tl.kinds(a.alarm_id) == [(1, "raised"), (1, "suppressed")]  # no escalation, no reminder
    tl.run_until(10)
    assert tl.m.windows() == []
    b = tl.m.get(a.alarm_id)
    assert not b.suppressed
    assert tl.kinds(a.alarm_id)[-1] == (10, "reminded") and tl.notice_kinds() == [(10, "reminded")]
    tl.run_until(15)
    assert tl.kinds(a.alarm_id)[-1] == (15, "escalated")  # ack clock from the end of the window


def test_window_on_one_tag_and_cleared_alarms_stay_suppressed() -> None:
    tl = Timeline()
    tl.m.add_window("hz1", "lt101", T0, T0 + 10 * MIN, "span-gas test", "op")
    a = only(tl.at(1).raise_().alarms)
    other = only(tl.at(1).raise_(tag="lt102").alarms)
    assert a.suppressed and not other.suppressed
    tl.at(2).clear()
    tl.run_until(12)
    assert tl.m.get(a.alarm_id).suppressed  # cleared inside the window: stays suppressed for the episode
    assert not any(e.alarm_id == a.alarm_id for _, e in tl.notices)
    # a reactivation after the window is a real event again
    ch = tl.at(13).raise_()
    assert not only(ch.alarms).suppressed and [e.kind.value for _, e in ch.notices] == ["reactivated"]


def test_window_validation_and_removal() -> None:
    tl = Timeline()
    with pytest.raises(ActionError):
        tl.m.add_window("hz1", None, T0, T0, "x", "op")
    with pytest.raises(ActionError):
        tl.m.add_window("hz1", None, T0, T0 + MIN, " ", "op")
    w = tl.m.add_window("hz1", None, T0, T0 + 60 * MIN, "x", "op")
    a = only(tl.at(1).raise_().alarms)
    tl.m.remove_window(w.window_id)
    tl.at(2).tick()
    assert not tl.m.get(a.alarm_id).suppressed
    with pytest.raises(NotFound):
        tl.m.remove_window(w.window_id)


def test_restart_continues_without_re_escalating_or_duplicating() -> None:
    tl = Timeline()
    a = only(tl.at(0).raise_().alarms)
    tl.at(0.5).raise_(tag="lt102")
    tl.run_until(7)
    assert tl.m.get(a.alarm_id).escalation_tier is Tier.TOWNSHIP
    # restart: a new manager from the stored open alarms
    m2 = AlarmManager(SITES, AlarmsConfig(), open_alarms=tl.m.open_alarms())
    tl2 = Timeline(manager=m2, start_ms=tl.now)
    assert sorted(x.alarm_id for x in m2.open_alarms()) == sorted(x.alarm_id for x in tl.m.open_alarms())
    assert tl2.tick().events == []  # same now: nothing again
    # the rules engine re-delivers the raise after the restart: nothing new
    sig = Signal("hz1", "lt101", "level_hh", Severity.RED, SignalKind.RAISE, T0, 9.5)
    assert m2.apply_signals([sig], tl2.now).events == []
    tl2.run_until(10)
    assert [(t, k) for t, k in tl2.kinds(a.alarm_id)] == [(10, "escalated")]
    assert m2.get(a.alarm_id).escalation_tier is Tier.COUNTY
    assert len(m2.open_alarms()) == 2


def test_restart_after_close_ignores_a_redelivered_raise() -> None:
    tl = Timeline()
    a = only(tl.at(0).raise_().alarms)
    tl.at(1).clear()
    closed = only(tl.at(2).act("close", a.alarm_id, "op", "false_alarm", "").alarms)
    # in the same run
    sig = Signal("hz1", "lt101", "level_hh", Severity.RED, SignalKind.RAISE, T0, 9.5)
    assert tl.m.apply_signals([sig], tl.now).events == []
    # after a restart that knows the recently closed alarms
    m2 = AlarmManager(SITES, AlarmsConfig(), history=[closed])
    assert m2.apply_signals([sig], tl.now).events == []
    with pytest.raises(AlarmClosed):
        m2.get(a.alarm_id)
    later = Signal("hz1", "lt101", "level_hh", Severity.RED, SignalKind.RAISE, T0 + 5 * MIN, 9.5)
    assert only(m2.apply_signals([later], tl.now).alarms).alarm_id != a.alarm_id


def test_replay_and_live_give_the_same_ids() -> None:
    sigs = [
        Signal(
            "hz1",
            f"t{i % 7}",
            "r",
            Severity.YELLOW,
            SignalKind.RAISE if i % 2 == 0 else SignalKind.CLEAR,
            T0 + i * SEC,
            float(i),
        )
        for i in range(40)
    ]
    live = AlarmManager(SITES, AlarmsConfig())
    for s in sigs:
        live.apply_signals([s], s.ts_ms)
    replay = AlarmManager(SITES, AlarmsConfig())
    replay.apply_signals(sigs, T0 + 100 * SEC)
    assert [a.alarm_id for a in live.open_alarms()] == [a.alarm_id for a in replay.open_alarms()]
    assert live.open_alarms() == replay.open_alarms()


def test_unknown_site_gets_empty_plant_and_district() -> None:
    tl = Timeline()
    a = only(tl.at(0).raise_(site="nowhere").alarms)
    assert (a.site, a.plant, a.district) == ("nowhere", "", "")


def test_changes_list_each_alarm_once_with_its_final_state() -> None:
    m = AlarmManager(SITES, AlarmsConfig())
    r = Signal("hz1", "lt101", "level_hh", Severity.RED, SignalKind.RAISE, T0, 9.5)
    c = Signal("hz1", "lt101", "level_hh", Severity.RED, SignalKind.CLEAR, T0 + SEC, 5.0)
    ch = m.apply_signals([r, c], T0 + SEC)
    assert len(ch.alarms) == 1 and ch.alarms[0].state is AlarmState.CLEARED_UNACK
    assert [e.kind.value for e in ch.events] == ["raised", "cleared"]
    assert [e.kind.value for _, e in ch.notices] == ["raised"]
    assert ch.notices[0][0].state is AlarmState.ACTIVE_UNACK  # the alarm as it was at the event
    assert m.apply_signals([c], T0 + 2 * SEC).events == []  # clear on a cleared alarm: ignored
    assert m.stats["already_cleared"] == 1


def test_restart_unsuppresses_when_the_window_ended_during_downtime() -> None:
    tl = Timeline()
    tl.m.add_window("hz1", None, T0, T0 + 10 * MIN, "calibration", "op")
    a = only(tl.at(1).raise_().alarms)
    assert a.suppressed
    # down from minute 2 to 15; the window ended meanwhile and is not stored any more
    m2 = AlarmManager(SITES, AlarmsConfig(), open_alarms=tl.m.open_alarms(), windows=())
    ch = m2.tick(T0 + 15 * MIN)
    assert [e.kind.value for e in ch.events] == ["reminded"] and len(ch.notices) == 1
    assert not m2.get(a.alarm_id).suppressed


def test_restart_keeps_suppression_while_the_stored_window_lasts() -> None:
    tl = Timeline()
    w = tl.m.add_window("hz1", None, T0, T0 + 10 * MIN, "calibration", "op")
    a = only(tl.at(1).raise_().alarms)
    m2 = AlarmManager(SITES, AlarmsConfig(), open_alarms=tl.m.open_alarms(), windows=[w])
    assert m2.tick(T0 + 5 * MIN).events == []
    assert m2.get(a.alarm_id).suppressed
    assert [e.kind.value for e in m2.tick(T0 + 10 * MIN).events] == ["reminded"]


def test_many_reschedules_keep_the_timer_heap_small_and_right() -> None:
    tl = Timeline(AlarmsConfig(reminder_interval_ms=0))
    a = only(tl.at(0).raise_(severity=Severity.BLUE, rule="flatline").alarms)
    # acknowledge / reactivate 5 000 times within the first minute: the ack period restarts each time
    for i in range(5_000):
        t = T0 + 1 + i * 10
        tl.clock.set(t)
        tl.m.ack(a.alarm_id, "op", "", t)
        tl.clear(rule="flatline", severity=Severity.BLUE)
        tl.clock.set(t + 5)
        tl.raise_(rule="flatline", severity=Severity.BLUE)
    assert len(tl.m._heap) <= 2 * len(tl.m._due) + 1024
    last = tl.m.get(a.alarm_id)
    assert last.occurrences == 5_001 and last.unacked_since_ms == T0 + 1 + 4_999 * 10 + 5
    # blue: 60 min to acknowledge from the last reactivation
    assert tl.m.tick(last.unacked_since_ms + 60 * MIN - 1).events == []
    assert [e.kind.value for e in tl.m.tick(last.unacked_since_ms + 60 * MIN).events] == ["escalated"]


@pytest.mark.parametrize(
    ("verb", "args"),
    [
        ("ack", ("op", "")),
        ("close", ("op", "real_handled", "")),
        ("comment", ("op", "x")),
        ("shelve", ("op", T0 + MIN, "x")),
        ("unshelve", ("op", "")),
    ],
)
def test_every_action_on_an_unknown_or_closed_id(verb: str, args: tuple[object, ...]) -> None:
    tl = Timeline()
    a = only(tl.at(0).raise_().alarms)
    tl.at(0.5).clear()
    tl.at(0.6).act("close", a.alarm_id, "op", "comm_fault", "")
    with pytest.raises(NotFound) as unknown:
        getattr(tl.m, verb)("A" + "0" * 20, *args, tl.now)
    assert not isinstance(unknown.value, AlarmClosed)
    with pytest.raises(AlarmClosed, match="closed"):
        getattr(tl.m, verb)(a.alarm_id, *args, tl.now)


def test_queries() -> None:
    tl = Timeline()
    a = only(tl.at(0).raise_().alarms)
    b = only(tl.at(1).raise_(tag="lt102").alarms)
    assert len(tl.m) == 2 and tl.m.open_alarms() == [a, b]
    assert tl.m.find("hz1", "level_hh", "lt102") == b and tl.m.find("hz1", "level_hh", "nope") is None
    assert tl.m.get(a.alarm_id) == a
