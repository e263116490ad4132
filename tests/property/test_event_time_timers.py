"""Replay's alarm timers fire at their own due time, whatever the split of the stream into chunks.

`AlarmManager.apply_in_event_time` is compared with a plain reference written from its contract: the signals
of each millisecond t are applied one by one in (site, rule, tag, raise first) order; before them every timer
due before t fires at its due time (at the latest signal time if a signal left it overdue); timers due at the
end time wait for the next call. Calls hold whole milliseconds (replay cuts its chunks between them).
"""

from __future__ import annotations

from itertools import pairwise

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from earlywarn.alarms.lifecycle import next_due_ms
from earlywarn.alarms.manager import AlarmManager
from earlywarn.config import AlarmsConfig
from earlywarn.model import AlarmEvent, EventKind, Severity, Signal, SignalKind, Site

T0 = 1_767_225_600_000
MIN = 60_000
SITES = {"s1": Site("s1", "S1", "hazchem", "d1"), "s2": Site("s2", "S2", "dust", "d2")}
KEYS = [(s, r, t) for s in ("s1", "s2") for r in ("r1", "r2") for t in ("t1", "t2")]
SEVERITY = {"r1": Severity.RED, "r2": Severity.YELLOW}
CONFIG = AlarmsConfig(chatter_count=3, chatter_window_ms=MIN, flood_count=3, flood_window_ms=10 * MIN)


def _order(s: Signal) -> tuple[int, str, str, str, bool]:
    return (s.ts_ms, s.site, s.rule_id, s.tag, s.kind is not SignalKind.RAISE)


def reference(m: AlarmManager, signals: list[Signal], end_ms: int) -> list[AlarmEvent]:
    """One signal at a time; one tick per due time, found by asking every open alarm."""
    events: list[AlarmEvent] = []
    clock = 0

    def fire(until_ms: int) -> None:
        while True:
            dues = [d for a in m.open_alarms() if (d := next_due_ms(a, m.policy)) is not None]
            dues += [w.ends_ms for w in m.windows()]
            if not dues or min(dues) > until_ms:
                return
            events.extend(m.tick(max(min(dues), clock)).events)

    for s in sorted(signals, key=_order):
        fire(s.ts_ms - 1)
        events.extend(m.apply_signals([s], s.ts_ms).events)
        clock = max(clock, s.ts_ms)
    fire(end_ms - 1)
    return events


def stream(steps: list[tuple[int, bool, int]]) -> list[Signal]:
    out, ts = [], T0
    for key_i, up, dt in steps:
        ts += dt
        site, rule, tag = KEYS[key_i]
        kind = SignalKind.RAISE if up else SignalKind.CLEAR
        out.append(Signal(site, tag, rule, SEVERITY[rule], kind, ts, float(dt % 7)))
    return out


steps_st = st.lists(
    st.tuples(
        st.integers(0, len(KEYS) - 1),
        st.booleans(),
        # ties, seconds, and gaps long enough for ack / close deadlines and reminders to fall due
        st.one_of(st.just(0), st.integers(0, 5_000), st.integers(0, 40 * MIN)),
    ),
    min_size=1,
    max_size=60,
)


#: maintenance windows: (site, tag or None, start after T0, length); alarms raised inside are suppressed,
#: and lifted at the window's end with a fresh ack period, or left overdue by a reactivation outside it
windows_st = st.lists(
    st.tuples(
        st.sampled_from(["s1", "s2"]),
        st.sampled_from([None, "t1"]),
        st.integers(0, 60 * MIN),
        st.integers(1, 60 * MIN),
    ),
    max_size=2,
)


def manager(windows: list[tuple[str, str | None, int, int]]) -> AlarmManager:
    m = AlarmManager(SITES, CONFIG)
    for site, tag, start, length in windows:
        m.add_window(site, tag, T0 + start, T0 + start + length, "maintenance", "op")
    return m


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps_st, st.lists(st.integers(0, 60), max_size=6), st.integers(1, 3 * 3_600_000), windows_st)
def test_any_split_fires_the_same_timers_as_the_reference(
    steps: list[tuple[int, bool, int]], cuts: list[int], tail_ms: int, windows: list
) -> None:
    sigs = stream(steps)
    end_ms = sigs[-1].ts_ms + tail_ms
    expected = reference(manager(windows), sigs, end_ms)

    whole = manager(windows)
    got_whole = whole.apply_in_event_time(sigs, sigs[-1].ts_ms).events
    got_whole += whole.apply_in_event_time([], end_ms).events
    assert got_whole == expected

    # chunks of the ts-sorted stream, cut between milliseconds (replay never splits one millisecond's
    # readings); each call's end time is its newest signal, as replay's event clock is
    cut_ok = {i for i in range(1, len(sigs)) if sigs[i].ts_ms != sigs[i - 1].ts_ms}
    bounds = sorted({c for c in cuts if c in cut_ok} | {0, len(sigs)})
    split = manager(windows)
    got_split: list[AlarmEvent] = []
    clock = T0
    for a, b in pairwise(bounds):
        chunk = sigs[a:b]
        clock = max(clock, max(s.ts_ms for s in chunk))
        got_split += split.apply_in_event_time(chunk, clock).events
    got_split += split.apply_in_event_time([], end_ms).events
    assert got_split == expected
    assert split.open_alarms() == whole.open_alarms()


def test_an_escalation_in_a_long_chunk_carries_its_due_time_not_the_chunk_end() -> None:
    """A red alarm unacknowledged past its ack deadline escalates at raised + ack deadline exactly."""
    ack_ms = CONFIG.deadlines[Severity.RED].ack_ms
    raise_ = Signal("s1", "t1", "r1", Severity.RED, SignalKind.RAISE, T0, 9.0)
    later = Signal("s2", "t1", "r2", Severity.YELLOW, SignalKind.RAISE, T0 + 3 * 3_600_000, 1.0)
    m = AlarmManager(SITES, CONFIG)
    events = m.apply_in_event_time([raise_, later], later.ts_ms).events
    escalated = [e for e in events if e.alarm_id == events[0].alarm_id and e.kind is EventKind.ESCALATED]
    assert escalated and escalated[0].ts_ms == T0 + ack_ms
    # every event of the first alarm comes before the second alarm is raised: event-time order
    second_raised = next(i for i, e in enumerate(events) if e.alarm_id != events[0].alarm_id)
    assert all(e.ts_ms <= later.ts_ms for e in events[:second_raised])
    assert [e.ts_ms for e in events[:second_raised]] == sorted(e.ts_ms for e in events[:second_raised])

    # the live path ticks at the end of the step: the same escalation, stamped when the engine noticed it
    live = AlarmManager(SITES, CONFIG)
    live_events = live.apply_signals([raise_, later], later.ts_ms).events
    live_events += live.tick(later.ts_ms).events
    live_esc = [e for e in live_events if e.kind is EventKind.ESCALATED]
    assert live_esc and live_esc[0].ts_ms == later.ts_ms


def test_a_timer_a_signal_left_overdue_fires_at_that_signal_not_in_the_past() -> None:
    """Raised and cleared inside a window (suppressed, so no ack clock ran), reactivated after it: the ack
    deadline counted from the raise has long passed, and the escalation is stamped at the reactivation."""
    ack_ms = CONFIG.deadlines[Severity.RED].ack_ms
    m = manager([("s1", None, 0, 10 * MIN)])
    up, down = SignalKind.RAISE, SignalKind.CLEAR
    sigs = [
        Signal("s1", "t1", "r1", Severity.RED, up, T0 + 1, 9.0),
        Signal("s1", "t1", "r1", Severity.RED, down, T0 + 2, 1.0),
        Signal("s1", "t1", "r1", Severity.RED, up, T0 + 20 * MIN, 9.0),
    ]
    events = m.apply_in_event_time(sigs, T0 + 20 * MIN + 1).events
    kinds = [(e.kind, e.ts_ms - T0) for e in events]
    assert (EventKind.REACTIVATED, 20 * MIN) in kinds
    escalated = [e for e in events if e.kind is EventKind.ESCALATED]
    assert escalated, kinds
    assert escalated[0].ts_ms == T0 + 20 * MIN > T0 + 1 + ack_ms  # at the signal, not back at the due time
    assert events == reference(manager([("s1", None, 0, 10 * MIN)]), sigs, T0 + 20 * MIN + 1)
