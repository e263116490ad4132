"""Table-driven tests of the pure alarm lifecycle (alarms/lifecycle.py).

`EXPECTED` below is written out by hand from product.md §6: it is the spec, and `TABLE` in the module
must agree with it. Every (state, input) pair of the cross product is exercised through `step`.
"""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from earlywarn.alarms import lifecycle as lc
from earlywarn.alarms.lifecycle import (
    Ack,
    Clear,
    Close,
    Comment,
    Direction,
    Escalate,
    EscalationCause,
    InputKind,
    Policy,
    Raise,
    Reason,
    Remind,
    Shelve,
    ShelveExpired,
    Suppress,
    Unshelve,
    Unsuppress,
    first_due_input,
    next_due_ms,
    open_alarm,
    run_timers,
    step,
)
from earlywarn.errors import ActionError
from earlywarn.model import Alarm, AlarmState, Disposition, EventKind, Severity, Tier

AU, AA, CU, CA, CL = (
    AlarmState.ACTIVE_UNACK,
    AlarmState.ACTIVE_ACK,
    AlarmState.CLEARED_UNACK,
    AlarmState.CLEARED_ACK,
    AlarmState.CLOSED,
)
K = InputKind
NOW_MS = 100_000
POLICY = Policy()
MIN_MS = 60_000


def alarm_in(state: AlarmState, **kw: object) -> Alarm:
    """A consistent alarm in `state`: raised at 1 s, acked at 2 s, cleared at 3 s, closed at 4 s as applicable."""
    base = Alarm(
        alarm_id="A1",
        site="s1",
        plant="hazchem",
        district="d1",
        tag="t1",
        rule_id="r1",
        severity=Severity.RED,
        state=AU,
        raised_at_ms=1_000,
        value=5.0,
        peak_value=5.0,
        last_activation_ms=1_000,
        unacked_since_ms=1_000,
    )
    if state.is_acked or state is CL:
        base = replace(base, acked_at_ms=2_000, acked_by="op1", unacked_since_ms=None)
    if state in (CU, CA, CL):
        base = replace(base, cleared_at_ms=3_000)
    if state is CL:
        base = replace(base, closed_at_ms=4_000, closed_by="op1", disposition=Disposition.REAL_HANDLED)
    return replace(base, state=state, **kw)  # type: ignore[arg-type]


#: One valid input of each kind.
INPUTS = {
    K.RAISE: Raise(ts_ms=50_000, value=9.0),
    K.CLEAR: Clear(ts_ms=50_000, value=1.0),
    K.ACK: Ack("op2", "seen"),
    K.CLOSE: Close("op2", Disposition.REAL_HANDLED, "valve closed"),
    K.COMMENT: Comment("op2", "checking on site"),
    K.SHELVE: Shelve("op2", NOW_MS + 30 * MIN_MS, "transmitter replacement"),
    K.UNSHELVE: Unshelve("op2"),
    K.SUPPRESS: Suppress("maintenance window W1"),
    K.UNSUPPRESS: Unsuppress(),
    K.ESCALATE: Escalate(EscalationCause.ACK, 301_000),
    K.REMIND: Remind(301_000),
    K.SHELVE_EXPIRED: ShelveExpired(),
}

S = "state"  # ("state", next_state, [event kinds])
N = "noop"  # ("noop", reason)
R = "refused"  # ("refused", part of the message)
E = EventKind

#: The whole cross product, by hand. The alarm is neither shelved nor suppressed (those are below).
EXPECTED: dict[tuple[AlarmState, InputKind], tuple] = {
    # raise: reactivates a cleared alarm; ignored while active; a closed alarm never reopens
    (AU, K.RAISE): (N, Reason.ALREADY_ACTIVE),
    (AA, K.RAISE): (N, Reason.ALREADY_ACTIVE),
    (CU, K.RAISE): (S, AU, [E.REACTIVATED]),
    (CA, K.RAISE): (S, AU, [E.REACTIVATED]),
    (CL, K.RAISE): (N, Reason.ALARM_CLOSED),
    # clear
    (AU, K.CLEAR): (S, CU, [E.CLEARED]),
    (AA, K.CLEAR): (S, CA, [E.CLEARED]),
    (CU, K.CLEAR): (N, Reason.ALREADY_CLEARED),
    (CA, K.CLEAR): (N, Reason.ALREADY_CLEARED),
    (CL, K.CLEAR): (N, Reason.ALARM_CLOSED),
    # ack: any open state, twice harmless
    (AU, K.ACK): (S, AA, [E.ACKED]),
    (AA, K.ACK): (N, Reason.ALREADY_ACKED),
    (CU, K.ACK): (S, CA, [E.ACKED]),
    (CA, K.ACK): (N, Reason.ALREADY_ACKED),
    (CL, K.ACK): (R, "closed"),
    # close: only once cleared
    (AU, K.CLOSE): (R, "cannot close an active alarm: it must clear first"),
    (AA, K.CLOSE): (R, "cannot close an active alarm: it must clear first"),
    (CU, K.CLOSE): (S, CL, [E.ACKED, E.CLOSED]),
    (CA, K.CLOSE): (S, CL, [E.CLOSED]),
    (CL, K.CLOSE): (R, "already closed"),
    # comment: always, even closed
    (AU, K.COMMENT): (S, AU, [E.COMMENTED]),
    (AA, K.COMMENT): (S, AA, [E.COMMENTED]),
    (CU, K.COMMENT): (S, CU, [E.COMMENTED]),
    (CA, K.COMMENT): (S, CA, [E.COMMENTED]),
    (CL, K.COMMENT): (S, CL, [E.COMMENTED]),
    # shelve: any open state
    (AU, K.SHELVE): (S, AU, [E.SHELVED]),
    (AA, K.SHELVE): (S, AA, [E.SHELVED]),
    (CU, K.SHELVE): (S, CU, [E.SHELVED]),
    (CA, K.SHELVE): (S, CA, [E.SHELVED]),
    (CL, K.SHELVE): (R, "closed"),
    # unshelve of an alarm that is not shelved: harmless
    (AU, K.UNSHELVE): (N, Reason.NOT_SHELVED),
    (AA, K.UNSHELVE): (N, Reason.NOT_SHELVED),
    (CU, K.UNSHELVE): (N, Reason.NOT_SHELVED),
    (CA, K.UNSHELVE): (N, Reason.NOT_SHELVED),
    (CL, K.UNSHELVE): (R, "closed"),
    # engine inputs never raise
    (AU, K.SUPPRESS): (S, AU, [E.SUPPRESSED]),
    (AA, K.SUPPRESS): (S, AA, [E.SUPPRESSED]),
    (CU, K.SUPPRESS): (S, CU, [E.SUPPRESSED]),
    (CA, K.SUPPRESS): (S, CA, [E.SUPPRESSED]),
    (CL, K.SUPPRESS): (N, Reason.ALARM_CLOSED),
    (AU, K.UNSUPPRESS): (N, Reason.NOT_SUPPRESSED),
    (AA, K.UNSUPPRESS): (N, Reason.NOT_SUPPRESSED),
    (CU, K.UNSUPPRESS): (N, Reason.NOT_SUPPRESSED),
    (CA, K.UNSUPPRESS): (N, Reason.NOT_SUPPRESSED),
    (CL, K.UNSUPPRESS): (N, Reason.ALARM_CLOSED),
    # an ack-deadline escalation is for unacknowledged alarms
    (AU, K.ESCALATE): (S, AU, [E.ESCALATED]),
    (AA, K.ESCALATE): (N, Reason.NOT_DUE),
    (CU, K.ESCALATE): (S, CU, [E.ESCALATED]),
    (CA, K.ESCALATE): (N, Reason.NOT_DUE),
    (CL, K.ESCALATE): (N, Reason.ALARM_CLOSED),
    (AU, K.REMIND): (S, AU, [E.REMINDED]),
    (AA, K.REMIND): (N, Reason.NOT_DUE),
    (CU, K.REMIND): (S, CU, [E.REMINDED]),
    (CA, K.REMIND): (N, Reason.NOT_DUE),
    (CL, K.REMIND): (N, Reason.ALARM_CLOSED),
    (AU, K.SHELVE_EXPIRED): (N, Reason.NOT_SHELVED),
    (AA, K.SHELVE_EXPIRED): (N, Reason.NOT_SHELVED),
    (CU, K.SHELVE_EXPIRED): (N, Reason.NOT_SHELVED),
    (CA, K.SHELVE_EXPIRED): (N, Reason.NOT_SHELVED),
    (CL, K.SHELVE_EXPIRED): (N, Reason.ALARM_CLOSED),
}

PAIRS = [(s, k) for s in AlarmState for k in InputKind]


def test_expected_covers_the_cross_product() -> None:
    assert set(EXPECTED) == set(PAIRS)
    assert set(lc.TABLE) == set(PAIRS)


@pytest.mark.parametrize(("state", "kind"), PAIRS, ids=[f"{s.value}-{k.value}" for s, k in PAIRS])
def test_step_every_state_and_input(state: AlarmState, kind: InputKind) -> None:
    alarm = alarm_in(state)
    exp = EXPECTED[(state, kind)]
    if exp[0] == R:
        with pytest.raises(ActionError) as ei:
            step(alarm, INPUTS[kind], NOW_MS, POLICY)
        assert exp[1] in ei.value.why
        assert ei.value.state == state.value
        assert ei.value.alarm_id == "A1"
        assert isinstance(lc.TABLE[(state, kind)], lc.Refused)
        return
    out = step(alarm, INPUTS[kind], NOW_MS, POLICY)
    if exp[0] == N:
        assert out.reason is exp[1]
        assert out.alarm is alarm
        assert out.events == ()
        assert not out.changed
        return
    _, nxt, kinds = exp
    assert out.changed
    assert out.alarm.state is nxt
    assert [e.kind for e in out.events] == kinds
    assert all(e.alarm_id == "A1" and e.actor and e.detail for e in out.events)
    signal = kind in (K.RAISE, K.CLEAR)
    for e in out.events:
        assert e.ts_ms == (50_000 if signal else NOW_MS)
    table_move = lc.TABLE[(state, kind)]
    assert table_move is nxt


# --- signals ----------------------------------------------------------------------------------


def test_reactivation_counts_and_resets_to_unack() -> None:
    out = step(alarm_in(CA), Raise(50_000, 7.0, "again"), NOW_MS, POLICY)
    a = out.alarm
    assert out.reason is Reason.REACTIVATED
    assert (a.state, a.occurrences, a.last_activation_ms, a.cleared_at_ms) == (AU, 2, 50_000, None)
    assert a.value == 7.0 and a.peak_value == 7.0 and a.message == "again"
    # acked before: a new unacknowledged period starts at the reactivation
    assert a.unacked_since_ms == 50_000 and a.ack_escalations == 0
    # the first acknowledgement is kept for the KPIs
    assert a.acked_at_ms == 2_000 and a.acked_by == "op1"


def test_reactivation_of_unacked_keeps_the_running_ack_clock() -> None:
    a = alarm_in(CU, ack_escalations=1, escalation_tier=Tier.TOWNSHIP)
    out = step(a, Raise(50_000, 4.0), NOW_MS, POLICY)
    assert out.alarm.unacked_since_ms == 1_000 and out.alarm.ack_escalations == 1
    assert out.alarm.escalation_tier is Tier.TOWNSHIP
    assert out.alarm.peak_value == 5.0  # 4 is less severe on a high-side rule


@pytest.mark.parametrize(
    ("direction", "values", "peak"),
    [
        (None, [5.0, 9.0, 3.0], 9.0),
        (Direction.HIGH, [5.0, 9.0, 3.0], 9.0),
        (Direction.LOW, [5.0, 9.0, 3.0], 3.0),
        (None, [5.0, math.nan], 5.0),
        (Direction.LOW, [-1.0, -3.0], -3.0),
    ],
)
def test_peak_value_follows_direction(direction: Direction | None, values: list[float], peak: float) -> None:
    policy = Policy(directions={"r1": direction} if direction else {})
    a = alarm_in(AU, value=values[0], peak_value=values[0])
    t = 10_000
    for v in values[1:]:
        a = step(a, Clear(t), t, policy).alarm
        a = step(a, Raise(t + 1, v), t + 1, policy).alarm
        t += 10
    assert a.peak_value == peak


def test_stale_signals_are_ignored() -> None:
    cleared = alarm_in(CU)  # raised 1 s, cleared 3 s
    assert step(cleared, Raise(2_000, 9.0), NOW_MS, POLICY).reason is Reason.STALE_SIGNAL
    active = step(cleared, Raise(5_000, 9.0), NOW_MS, POLICY).alarm
    assert step(active, Clear(4_000), NOW_MS, POLICY).reason is Reason.STALE_SIGNAL
    assert step(active, Clear(5_000), NOW_MS, POLICY).reason is Reason.CLEARED


def test_raise_inside_a_window_suppresses_and_outside_lifts_it() -> None:
    a = alarm_in(CU)
    out = step(a, Raise(50_000, 9.0, suppress_reason="window W1"), NOW_MS, POLICY)
    assert out.alarm.suppressed
    assert [e.kind for e in out.events] == [E.REACTIVATED, E.SUPPRESSED]
    b = step(out.alarm, Clear(60_000), NOW_MS, POLICY).alarm
    out2 = step(b, Raise(70_000, 9.0), NOW_MS, POLICY)
    assert not out2.alarm.suppressed and [e.kind for e in out2.events] == [E.REACTIVATED]


def test_chattering_flag_stays_on_the_episode() -> None:
    out = step(alarm_in(CU), Raise(50_000, 9.0, chattering=True), NOW_MS, POLICY)
    assert out.alarm.chattering and "chattering" in out.events[0].detail
    b = step(out.alarm, Clear(60_000), NOW_MS, POLICY).alarm
    assert step(b, Raise(70_000, 9.0), NOW_MS, POLICY).alarm.chattering


def test_open_alarm() -> None:
    out = open_alarm(
        "A9",
        site="s1",
        plant="dust",
        district="d",
        tag="t",
        rule_id="r",
        severity=Severity.ORANGE,
        raise_=Raise(7_000, 2.5, "high", "detail", suppress_reason="window"),
        policy=POLICY,
        flood=True,
    )
    a = out.alarm
    assert out.reason is Reason.RAISED
    assert (a.state, a.raised_at_ms, a.last_activation_ms, a.unacked_since_ms, a.occurrences) == (
        AU,
        7_000,
        7_000,
        7_000,
        1,
    )
    assert a.suppressed and a.flood and a.peak_value == 2.5 and a.message == "high"
    assert [(e.kind, e.ts_ms) for e in out.events] == [(E.RAISED, 7_000), (E.SUPPRESSED, 7_000)]
    assert "flood" in out.events[0].detail and "value 2.5" in out.events[0].detail


# --- user actions -----------------------------------------------------------------------------


def test_ack_twice_records_nothing() -> None:
    a = step(alarm_in(AU), Ack("op2"), NOW_MS, POLICY).alarm
    assert (a.acked_at_ms, a.acked_by, a.unacked_since_ms) == (NOW_MS, "op2", None)
    again = step(a, Ack("op3"), NOW_MS + 5, POLICY)
    assert again.reason is Reason.ALREADY_ACKED and again.events == () and again.alarm is a


def test_action_time_never_precedes_the_alarm() -> None:
    # device clock ahead of the engine clock: the ack is recorded at the alarm's own latest time
    a = alarm_in(AU, raised_at_ms=500_000, last_activation_ms=500_000, unacked_since_ms=500_000)
    out = step(a, Ack("op"), NOW_MS, POLICY)
    assert out.alarm.acked_at_ms == 500_000 and out.events[0].ts_ms == 500_000


def test_close_records_disposition() -> None:
    out = step(alarm_in(CA), Close("op2", "false_alarm", " wrong span "), NOW_MS, POLICY)
    a = out.alarm
    assert (a.state, a.closed_at_ms, a.closed_by, a.disposition, a.note) == (
        CL,
        NOW_MS,
        "op2",
        Disposition.FALSE_ALARM,
        "wrong span",
    )
    assert out.events[-1].detail == "false_alarm: wrong span"


def test_close_of_cleared_unack_acknowledges_on_the_way() -> None:
    out = step(alarm_in(CU), Close("op2", Disposition.PROCESS_NORMAL), NOW_MS, POLICY)
    assert out.alarm.acked_at_ms == NOW_MS and out.alarm.acked_by == "op2"
    assert [(e.kind, e.actor) for e in out.events] == [(E.ACKED, "op2"), (E.CLOSED, "op2")]


@pytest.mark.parametrize(
    ("inp", "why"),
    [
        (Close("op", Disposition.OTHER, ""), "'other' needs a note"),
        (Close("op", Disposition.OTHER, "   "), "'other' needs a note"),
        (Close("op", "tea_break", "x"), "unknown disposition"),
        (Comment("op", " "), "needs a note"),
        (Shelve("op", NOW_MS + MIN_MS, ""), "needs a reason"),
        (Shelve("op", NOW_MS + 8 * 3_600_000 + 1, "long job"), "at most 480 min"),
        (Shelve("op", NOW_MS, "now"), "not in the future"),
    ],
)
def test_conditional_refusals(inp: lc.Input, why: str) -> None:
    with pytest.raises(ActionError, match="cleared_ack") as ei:
        step(alarm_in(CA), inp, NOW_MS, POLICY)
    assert why in ei.value.why


def test_other_with_a_note_closes() -> None:
    assert step(alarm_in(CA), Close("op", "other", "rat in the cabinet"), NOW_MS, POLICY).alarm.state is CL


def test_shelve_limit_is_from_policy() -> None:
    policy = Policy(max_shelve_ms=10 * MIN_MS)
    assert (
        step(alarm_in(AU), Shelve("op", NOW_MS + 10 * MIN_MS, "x"), NOW_MS, policy).reason is Reason.SHELVED
    )
    with pytest.raises(ActionError):
        step(alarm_in(AU), Shelve("op", NOW_MS + 10 * MIN_MS + 1, "x"), NOW_MS, policy)


def test_shelve_and_unshelve() -> None:
    out = step(alarm_in(AU), Shelve("op2", NOW_MS + MIN_MS, " pump swap "), NOW_MS, POLICY)
    a = out.alarm
    assert (a.shelved_until_ms, a.shelved_by, a.shelve_reason) == (NOW_MS + MIN_MS, "op2", "pump swap")
    # reshelving extends
    assert step(a, Shelve("op3", NOW_MS + 2 * MIN_MS, "more"), NOW_MS, POLICY).alarm.shelved_by == "op3"
    un = step(a, Unshelve("op4", "done"), NOW_MS + 1_000, POLICY)
    assert un.reason is Reason.UNSHELVED and un.alarm.shelved_until_ms is None
    assert [(e.kind, e.actor, e.detail) for e in un.events] == [(E.UNSHELVED, "op4", "done")]
    # still unacknowledged: the ack clock restarts when the shelve ends
    assert un.alarm.unacked_since_ms == NOW_MS + 1_000 and un.alarm.ack_escalations == 0


def test_close_ends_a_shelve() -> None:
    a = step(alarm_in(CA), Shelve("op2", NOW_MS + MIN_MS, "x"), NOW_MS, POLICY).alarm
    assert step(a, Close("op2", "comm_fault"), NOW_MS, POLICY).alarm.shelved_until_ms is None


# --- engine inputs ----------------------------------------------------------------------------


def test_shelve_expired() -> None:
    a = alarm_in(AU, shelved_until_ms=NOW_MS, shelved_by="op", shelve_reason="x")
    assert step(a, ShelveExpired(), NOW_MS - 1, POLICY).reason is Reason.NOT_DUE
    out = step(a, ShelveExpired(), NOW_MS, POLICY)
    assert out.reason is Reason.SHELVE_EXPIRED and out.events[0].actor == "engine"
    assert out.events[0].kind is E.UNSHELVED


def test_escalate_counts_and_caps() -> None:
    a = alarm_in(AU)
    for tier in (Tier.TOWNSHIP, Tier.COUNTY, Tier.CITY):
        out = step(a, Escalate(EscalationCause.ACK), NOW_MS, POLICY)
        a = out.alarm
        assert a.escalation_tier is tier and out.reason is Reason.ESCALATED
        assert a.last_reminded_ms == NOW_MS  # an escalation reminds too
    assert a.ack_escalations == 3
    assert step(a, Escalate(EscalationCause.ACK), NOW_MS, POLICY).reason is Reason.AT_TOP_TIER


def test_close_escalation_once_even_when_acked() -> None:
    out = step(alarm_in(CA), Escalate(EscalationCause.CLOSE), NOW_MS, POLICY)
    assert out.reason is Reason.ESCALATED and out.alarm.close_escalated
    assert "close deadline missed" in out.events[0].detail
    assert step(out.alarm, Escalate(EscalationCause.CLOSE), NOW_MS, POLICY).reason is Reason.NOT_DUE


@pytest.mark.parametrize("muted", [{"suppressed": True}, {"shelved_until_ms": NOW_MS * 2}])
@pytest.mark.parametrize("inp", [Escalate(EscalationCause.ACK), Escalate(EscalationCause.CLOSE), Remind()])
def test_muted_alarms_neither_escalate_nor_remind(muted: dict, inp: lc.Input) -> None:
    assert step(alarm_in(AU, **muted), inp, NOW_MS, POLICY).reason is Reason.MUTED


def test_suppress_twice_and_unsuppress() -> None:
    a = step(alarm_in(AU), Suppress("W1"), NOW_MS, POLICY).alarm
    assert step(a, Suppress("W2"), NOW_MS, POLICY).reason is Reason.ALREADY_SUPPRESSED
    out = step(a, Unsuppress(), NOW_MS + 5, POLICY)
    assert not out.alarm.suppressed and out.reason is Reason.UNSUPPRESSED
    # never announced while suppressed: lifting it is recorded as a (notice-worthy) reminder
    assert [e.kind for e in out.events] == [E.REMINDED]
    assert out.alarm.unacked_since_ms == NOW_MS + 5


# --- timers -----------------------------------------------------------------------------------


def fresh(severity: Severity = Severity.RED) -> Alarm:
    return alarm_in(AU, severity=severity, raised_at_ms=0, last_activation_ms=0, unacked_since_ms=0)


def test_next_due_follows_severity_deadlines() -> None:
    assert next_due_ms(fresh(Severity.RED), POLICY) == 5 * MIN_MS
    assert next_due_ms(fresh(Severity.ORANGE), POLICY) == 5 * MIN_MS  # the reminder comes first
    assert next_due_ms(fresh(Severity.YELLOW), Policy(reminder_interval_ms=0)) == 30 * MIN_MS
    acked = replace(fresh(Severity.BLUE), state=AA, unacked_since_ms=None)
    assert next_due_ms(acked, POLICY) == 24 * 60 * MIN_MS  # only the close deadline is left
    assert next_due_ms(replace(acked, close_escalated=True), POLICY) is None
    assert next_due_ms(alarm_in(CL), POLICY) is None
    assert next_due_ms(replace(fresh(), suppressed=True), POLICY) is None
    assert next_due_ms(replace(fresh(), shelved_until_ms=123), POLICY) == 123


def test_first_due_input_orders_ties() -> None:
    a = fresh()
    assert first_due_input(a, 5 * MIN_MS - 1, POLICY) is None
    inp = first_due_input(a, 5 * MIN_MS, POLICY)
    assert isinstance(inp, Escalate) and inp.cause is EscalationCause.ACK and inp.due_ms == 5 * MIN_MS


def test_run_timers_catches_up_and_is_idempotent() -> None:
    # engine down for 40 minutes: red escalates three times (to city, not beyond) and reminds once
    a, events, reasons = run_timers(fresh(), 40 * MIN_MS, POLICY)
    assert a.escalation_tier is Tier.CITY
    assert [e.kind for e in events] == [E.ESCALATED] * 3
    assert reasons == [Reason.ESCALATED] * 3
    again = run_timers(a, 40 * MIN_MS, POLICY)
    assert again[0] is a and again[1] == []
    later, ev2, _ = run_timers(a, 45 * MIN_MS, POLICY)
    assert [e.kind for e in ev2] == [E.REMINDED] and later.last_reminded_ms == 45 * MIN_MS


def test_orange_reminder_then_escalation() -> None:
    a = fresh(Severity.ORANGE)
    kinds = []
    for t in range(MIN_MS, 31 * MIN_MS, MIN_MS):
        a, events, _ = run_timers(a, t, POLICY)
        kinds += [(t // MIN_MS, e.kind.value) for e in events]
    # 5: reminder, 10: ack deadline escalates (no second notice), 15: reminder, 20: escalates, ...
    assert kinds == [
        (5, "reminded"),
        (10, "escalated"),
        (15, "reminded"),
        (20, "escalated"),
        (25, "reminded"),
        (30, "escalated"),
    ]
    assert a.escalation_tier is Tier.CITY


def test_evolve_is_dataclasses_replace() -> None:
    import dataclasses

    a = alarm_in(CA, shelved_until_ms=5, note="n")
    changes = {
        "state": AU,
        "cleared_at_ms": None,
        "occurrences": 7,
        "escalation_tier": Tier.CITY,
        "suppressed": True,
    }
    b = lc.evolve(a, **changes)
    assert b == dataclasses.replace(a, **changes)  # type: ignore[arg-type]
    assert hash(b) == hash(dataclasses.replace(a, **changes))  # type: ignore[arg-type]
    assert lc.evolve(a) == a and lc.evolve(a) is not a
    with pytest.raises(dataclasses.FrozenInstanceError):
        b.state = CL  # type: ignore[misc]
