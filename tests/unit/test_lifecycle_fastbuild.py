"""The fast record builders of alarms/lifecycle.py give exactly what the dataclass machinery gives."""

from __future__ import annotations

import dataclasses
import math
import pickle

import pytest

from earlywarn.alarms import lifecycle as lc
from earlywarn.model import Alarm, AlarmEvent, AlarmState, Disposition, EventKind, Severity, Tier

FULL = {
    "alarm_id": "A1",
    "site": "s",
    "plant": "hazchem",
    "district": "d",
    "tag": "t",
    "rule_id": "r",
    "severity": Severity.ORANGE,
    "state": AlarmState.CLEARED_ACK,
    "raised_at_ms": 10,
    "message": "m",
    "acked_at_ms": 11,
    "acked_by": "op",
    "cleared_at_ms": 12,
    "closed_at_ms": 13,
    "closed_by": "op2",
    "disposition": Disposition.OTHER,
    "note": "n",
    "occurrences": 3,
    "value": 1.5,
    "peak_value": 2.5,
    "escalation_tier": Tier.COUNTY,
    "last_activation_ms": 9,
    "shelved_until_ms": 99,
    "shelved_by": "sup",
    "shelve_reason": "why",
    "suppressed": True,
    "chattering": True,
    "flood": True,
    "last_notified_ms": 8,
    "unacked_since_ms": 7,
    "ack_escalations": 2,
    "close_escalated": True,
    "last_reminded_ms": 6,
}


def test_full_covers_every_field() -> None:
    assert set(FULL) == {f.name for f in dataclasses.fields(Alarm)}


def _same(a: Alarm, b: Alarm) -> None:
    assert type(a) is Alarm and type(b) is Alarm
    assert a == b and hash(a) == hash(b) and repr(a) == repr(b)
    for f in dataclasses.fields(Alarm):
        assert getattr(a, f.name) is getattr(b, f.name) or getattr(a, f.name) == getattr(b, f.name)


def test_new_alarm_is_the_constructor() -> None:
    _same(lc.new_alarm(**FULL), Alarm(**FULL))
    minimal = ("A2", "s", "p", "d", "t", "r", Severity.RED, AlarmState.ACTIVE_UNACK, 5)
    a, b = lc.new_alarm(*minimal), Alarm(*minimal)
    assert math.isnan(a.value) and math.isnan(a.peak_value)
    assert dataclasses.replace(a, value=0.0, peak_value=0.0) == dataclasses.replace(b, value=0.0, peak_value=0.0)
    with pytest.raises(TypeError):
        lc.new_alarm("A3")
    with pytest.raises(TypeError):
        lc.new_alarm(**FULL, bogus=1)


def test_built_alarms_are_ordinary_frozen_alarms() -> None:
    a = lc.new_alarm(**FULL)
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.state = AlarmState.CLOSED  # type: ignore[misc]
    assert pickle.loads(pickle.dumps(a)) == a
    assert dataclasses.asdict(a) == FULL
    assert not hasattr(a, "__dict__")


def test_new_event_is_the_constructor() -> None:
    assert lc.new_event("A1", 5, EventKind.RAISED) == AlarmEvent("A1", 5, EventKind.RAISED)
    e = lc.new_event("A1", 5, EventKind.CLEARED, "op", "d")
    assert type(e) is AlarmEvent and e == AlarmEvent("A1", 5, EventKind.CLEARED, "op", "d")
    assert hash(e) == hash(AlarmEvent("A1", 5, EventKind.CLEARED, "op", "d"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        e.detail = "x"  # type: ignore[misc]


@pytest.mark.parametrize("name", [f.name for f in dataclasses.fields(Alarm)])
def test_evolver_of_each_field_is_replace(name: str) -> None:
    base = Alarm(**FULL)
    other = {**FULL, "alarm_id": "B", "severity": Severity.BLUE, "state": AlarmState.ACTIVE_UNACK}
    value = other[name] if other[name] != FULL[name] else None
    _same(lc.evolver(name)(base, value), dataclasses.replace(base, **{name: value}))
    _same(lc.evolve(base, **{name: value}), dataclasses.replace(base, **{name: value}))


def test_evolver_of_several_fields_is_replace_and_cached() -> None:
    base = Alarm(**FULL)
    changes = {"state": AlarmState.ACTIVE_UNACK, "cleared_at_ms": None, "occurrences": 4, "message": "x"}
    _same(lc.evolver(*changes)(base, *changes.values()), dataclasses.replace(base, **changes))  # type: ignore[arg-type]
    assert lc.evolver(*changes) is lc.evolver(*changes)
    assert lc.evolve(base) == base and lc.evolve(base) is not base
    with pytest.raises(TypeError):
        lc.evolver("bogus")
    with pytest.raises(TypeError):
        lc.evolver("state", "state")


def test_fast_maker_falls_back_where_it_would_not_be_exact() -> None:
    @dataclasses.dataclass(frozen=True, slots=True)
    class Post:
        x: int

        def __post_init__(self) -> None:
            pass

    @dataclasses.dataclass(frozen=True, slots=True)
    class Factory:
        x: list[int] = dataclasses.field(default_factory=list)

    @dataclasses.dataclass(frozen=True)
    class NoSlots:
        x: int

    assert lc.fast_maker(Post) is Post
    assert lc.fast_maker(Factory) is Factory
    assert lc.fast_maker(NoSlots) is NoSlots


@pytest.mark.parametrize("state", [AlarmState.ACTIVE_UNACK, AlarmState.ACTIVE_ACK])
@pytest.mark.parametrize("shelved", [None, 10_000_000])
@pytest.mark.parametrize("suppressed", [False, True])
@pytest.mark.parametrize("tier", list(Tier))
@pytest.mark.parametrize("severity", list(Severity))
def test_a_clear_never_moves_the_next_timer(
    state: AlarmState, shelved: int | None, suppressed: bool, tier: Tier, severity: Severity
) -> None:
    # AlarmManager.apply_signals relies on this to keep the heap entry of a cleared alarm as it is
    policy = lc.Policy()
    for extra in ({}, {"ack_escalations": 1, "last_reminded_ms": 400_000, "close_escalated": True}):
        a = Alarm(
            "A1", "s", "p", "d", "t", "r", severity, state, 1_000,
            last_activation_ms=2_000, unacked_since_ms=1_500, shelved_until_ms=shelved,
            suppressed=suppressed, escalation_tier=tier, **extra,  # type: ignore[arg-type]
        )
        out = lc.step(a, lc.Clear(3_000, 1.0), 3_000, policy)
        assert out.reason is lc.Reason.CLEARED
        assert lc.next_due_ms(out.alarm, policy) == lc.next_due_ms(a, policy)
        assert out.alarm.suppressed == a.suppressed


def test_fast_inputs_are_the_constructors() -> None:
    assert lc.new_raise(5) == lc.Raise(5) or math.isnan(lc.new_raise(5).value)
    r = lc.new_raise(5, 1.0, "m", "d", "w", True)
    assert type(r) is lc.Raise and r == lc.Raise(5, 1.0, "m", "d", "w", True) and r.kind is lc.InputKind.RAISE
    c = lc.new_clear(6, 2.0, "d")
    assert type(c) is lc.Clear and c == lc.Clear(6, 2.0, "d") and c.kind is lc.InputKind.CLEAR


def test_the_fast_paths_are_in_use() -> None:
    # Not a correctness matter (the fallbacks are exact) but a 2x one for bench_lifecycle: if the model
    # gains a __post_init__, a default_factory or another layout, the builders silently fall back.
    assert lc._ALARM_SHELL is not None, "Alarm can no longer be built through a shell (see lifecycle.py)"
    for made, cls in ((lc.new_alarm, Alarm), (lc.new_event, AlarmEvent), (lc.new_raise, lc.Raise), (lc.new_clear, lc.Clear)):
        assert made is not cls, f"{cls.__name__} can no longer be built through a shell (see lifecycle.py)"
