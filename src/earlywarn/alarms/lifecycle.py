"""The alarm lifecycle as a pure transition function (product.md §6, ISA-18.2 with close-out).

`step(alarm, input, now_ms, policy) -> Outcome` decides one move of one alarm: the new alarm record, the
`alarm_events` it appends, and a `Reason` saying why (in the manner of Alertmanager's `needsUpdate`). It
reads no clock and keeps no state, so a replay, a restart and a test all get the same answer. The
`AlarmManager` (manager.py) owns the open alarms and feeds `step`; the timers it needs (which engine input
is due when) are pure functions here too: `next_due_ms` and `first_due_input`.

States are those of `AlarmState`. `TABLE` below is the contract: for each (state, input kind) the next
state, a harmless no-op, or a refusal (`ActionError`, HTTP 409). The conditional refusals that depend on
the input (a missing reason or note, a shelve too long) are checked on top of it.

Decisions where the spec is silent (each has a test):

- *Ack twice* records nothing: no event, the alarm is unchanged, reason `ALREADY_ACKED`.
- `acked_at` / `acked_by` keep the **first** acknowledgement of the episode (time to first response is
  what the closure KPIs measure); later acks after a reactivation appear in `alarm_events`.
- *Close* of a `cleared_unack` alarm is allowed and acknowledges it on the way (an `acked` event, then
  `closed`): recording a disposition is a stronger answer than an ack.
- *Unshelve* of an alarm that is not shelved is a harmless no-op (`NOT_SHELVED`), like ack twice.
- *Comment* is allowed on a closed alarm (the store/API applies it to the stored record); every other
  user action on a closed alarm is refused.
- Signals are applied in event time per alarm. A signal older than the alarm's latest signal-driven time
  (`last_activation_ms`, `cleared_at_ms`) is stale and ignored (`STALE_SIGNAL`): that is what makes a
  re-delivered batch after a restart harmless.
- Action timestamps are clamped so they never precede the alarm's latest event time (a device clock may
  run ahead of the engine clock; a negative response time would corrupt the KPIs).
- `peak_value` follows the rule's direction from `Policy.directions` (max for high-side, min for
  low-side). When the direction is unknown it is the **max**: almost all rules are high-side, and
  "max of abs" would be wrong for signed quantities (a vacuum, a negative rate). NaN values never win.
- Timers: the ack deadline counts from the start of the current unacknowledged period
  (`unacked_since_ms`; raised_at for a fresh alarm). Each missed ack deadline escalates one tier and the
  next one is due one ack interval later; the close deadline counts from raised_at and escalates once.
  A reactivation of a still-unacknowledged alarm keeps the running ack clock (else a chattering alarm
  would never escalate); one of an acknowledged alarm starts a new period. Unshelving (or the end of a
  suppression) while unacknowledged also starts a new period: the shelve was deliberate and recorded,
  and escalating three tiers the moment it ends would punish the people who used it.
- Reminders are due `reminder_interval_ms` after the last reminder **or escalation** of the period
  (an escalation notice reminds too), so a red alarm does not send two notices at the same minute.
- Shelved or suppressed alarms never escalate nor remind; a close deadline missed meanwhile escalates
  once the mute ends (the feedback deadline is a KPI counted from raised_at, a shelve does not move it).
- A deadline of 0 means "no deadline" for that severity.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field, fields, replace
from datetime import UTC, datetime
from typing import Any, ClassVar, NamedTuple

from earlywarn.config import DEFAULT_DEADLINES, AlarmsConfig, Deadline
from earlywarn.errors import ActionError
from earlywarn.model import Alarm, AlarmEvent, AlarmState, Disposition, EventKind, Severity, Tier

AU, AA, CU, CA, CL = (
    AlarmState.ACTIVE_UNACK,
    AlarmState.ACTIVE_ACK,
    AlarmState.CLEARED_UNACK,
    AlarmState.CLEARED_ACK,
    AlarmState.CLOSED,
)
ENGINE = "engine"

# ---------------------------------------------------------------------------------------------
# Inputs


class InputKind(enum.StrEnum):
    """What happened to an alarm: a signal, a user action or an engine timer."""

    RAISE = "raise"
    CLEAR = "clear"
    ACK = "ack"
    CLOSE = "close"
    COMMENT = "comment"
    SHELVE = "shelve"
    UNSHELVE = "unshelve"
    SUPPRESS = "suppress"
    UNSUPPRESS = "unsuppress"
    ESCALATE = "escalate"
    REMIND = "remind"
    SHELVE_EXPIRED = "shelve_expired"


class Direction(enum.StrEnum):
    """Which side of a limit a rule alarms on; decides whether `peak_value` is a max or a min."""

    HIGH = "high"
    LOW = "low"


class EscalationCause(enum.StrEnum):
    """Which deadline was missed."""

    ACK = "ack"
    CLOSE = "close"


@dataclass(frozen=True, slots=True)
class Raise:
    """A raise signal at event time `ts_ms`. `suppress_reason` is set when a maintenance window covers it."""

    ts_ms: int
    value: float = math.nan
    message: str = ""
    detail: str = ""
    suppress_reason: str | None = None
    #: the manager's chatter detector says this activation makes the (site, rule, tag) chatter
    chattering: bool = False
    kind: ClassVar[InputKind] = InputKind.RAISE


@dataclass(frozen=True, slots=True)
class Clear:
    """A clear (return to normal) signal at event time `ts_ms`."""

    ts_ms: int
    value: float = math.nan
    detail: str = ""
    kind: ClassVar[InputKind] = InputKind.CLEAR


@dataclass(frozen=True, slots=True)
class Ack:
    """A user acknowledges (签收)."""

    actor: str
    note: str = ""
    kind: ClassVar[InputKind] = InputKind.ACK


@dataclass(frozen=True, slots=True)
class Close:
    """A user closes out (消警/办结) with a disposition; `other` needs a note."""

    actor: str
    disposition: Disposition | str
    note: str = ""
    kind: ClassVar[InputKind] = InputKind.CLOSE


@dataclass(frozen=True, slots=True)
class Comment:
    """A user adds a note."""

    actor: str
    note: str
    kind: ClassVar[InputKind] = InputKind.COMMENT


@dataclass(frozen=True, slots=True)
class Shelve:
    """A user shelves the alarm until `until_ms` (at most policy.max_shelve_ms from now), with a reason."""

    actor: str
    until_ms: int
    reason: str
    kind: ClassVar[InputKind] = InputKind.SHELVE


@dataclass(frozen=True, slots=True)
class Unshelve:
    """A user ends a shelve early."""

    actor: str
    note: str = ""
    kind: ClassVar[InputKind] = InputKind.UNSHELVE


@dataclass(frozen=True, slots=True)
class Suppress:
    """The engine suppresses the alarm (a maintenance window covers it)."""

    reason: str = "maintenance window"
    kind: ClassVar[InputKind] = InputKind.SUPPRESS


@dataclass(frozen=True, slots=True)
class Unsuppress:
    """The engine lifts suppression (the window ended while the alarm is still open)."""

    reason: str = "maintenance window ended"
    kind: ClassVar[InputKind] = InputKind.UNSUPPRESS


@dataclass(frozen=True, slots=True)
class Escalate:
    """The engine escalates one tier because the `cause` deadline (due at `due_ms`) was missed."""

    cause: EscalationCause = EscalationCause.ACK
    due_ms: int = 0
    kind: ClassVar[InputKind] = InputKind.ESCALATE


@dataclass(frozen=True, slots=True)
class Remind:
    """The engine reminds: still unacknowledged."""

    due_ms: int = 0
    kind: ClassVar[InputKind] = InputKind.REMIND


@dataclass(frozen=True, slots=True)
class ShelveExpired:
    """The engine ends a shelve whose time is up."""

    kind: ClassVar[InputKind] = InputKind.SHELVE_EXPIRED


Input = (
    Raise
    | Clear
    | Ack
    | Close
    | Comment
    | Shelve
    | Unshelve
    | Suppress
    | Unsuppress
    | Escalate
    | Remind
    | ShelveExpired
)

# ---------------------------------------------------------------------------------------------
# Outcomes


class Reason(enum.StrEnum):
    """Why `step` did what it did. The first group changes the alarm; the second leaves it as it was."""

    RAISED = "raised"
    REACTIVATED = "reactivated"
    CLEARED = "cleared"
    ACKED = "acked"
    CLOSED = "closed"
    COMMENTED = "commented"
    SHELVED = "shelved"
    UNSHELVED = "unshelved"
    SHELVE_EXPIRED = "shelve_expired"
    SUPPRESSED = "suppressed"
    UNSUPPRESSED = "unsuppressed"
    ESCALATED = "escalated"
    REMINDED = "reminded"
    # no-ops
    ALREADY_ACTIVE = "already_active"
    ALREADY_CLEARED = "already_cleared"
    ALREADY_ACKED = "already_acked"
    ALREADY_SUPPRESSED = "already_suppressed"
    NOT_SUPPRESSED = "not_suppressed"
    NOT_SHELVED = "not_shelved"
    STALE_SIGNAL = "stale_signal"
    ALARM_CLOSED = "alarm_closed"
    MUTED = "muted"
    NOT_DUE = "not_due"
    AT_TOP_TIER = "at_top_tier"


NO_OPS: frozenset[Reason] = frozenset(
    {
        Reason.ALREADY_ACTIVE,
        Reason.ALREADY_CLEARED,
        Reason.ALREADY_ACKED,
        Reason.ALREADY_SUPPRESSED,
        Reason.NOT_SUPPRESSED,
        Reason.NOT_SHELVED,
        Reason.STALE_SIGNAL,
        Reason.ALARM_CLOSED,
        Reason.MUTED,
        Reason.NOT_DUE,
        Reason.AT_TOP_TIER,
    }
)

#: NO_OPS as plain strings. Hot paths look enums up by `_value_`: `Enum.__hash__` is a Python function.
NO_OP_VALUES: frozenset[str] = frozenset(r.value for r in NO_OPS)


class Outcome(NamedTuple):
    """The result of one `step`: the alarm after it, the events it appends (in order), and why."""

    alarm: Alarm
    events: tuple[AlarmEvent, ...]
    reason: Reason

    @property
    def changed(self) -> bool:
        """Whether the move changed the alarm (no-ops return the very same object)."""
        return self.reason._value_ not in NO_OP_VALUES


# ---------------------------------------------------------------------------------------------
# The table


@dataclass(frozen=True, slots=True)
class Refused:
    """A refused move: `step` raises ActionError(alarm_id, state, why)."""

    why: str


#: What a (state, input) pair does when the input itself is valid and the alarm is neither shelved nor
#: suppressed: the next state, a no-op `Reason`, or a refusal. Conditional outcomes (stale signal,
#: missing note, shelve too long, muted timers, escalation at the top tier) come on top; see `step`.
Move = AlarmState | Reason | Refused

_CLOSED_REFUSAL = Refused("the alarm is closed; a new activation opens a new alarm")
TABLE: dict[tuple[AlarmState, InputKind], Move] = {}
for _s in AlarmState:
    for _k in InputKind:
        TABLE[(_s, _k)] = _s  # default: stays in its state (flags / fields change)
TABLE.update(
    {
        # signals
        (AU, InputKind.RAISE): Reason.ALREADY_ACTIVE,
        (AA, InputKind.RAISE): Reason.ALREADY_ACTIVE,
        (CU, InputKind.RAISE): AU,
        (CA, InputKind.RAISE): AU,
        (CL, InputKind.RAISE): Reason.ALARM_CLOSED,
        (AU, InputKind.CLEAR): CU,
        (AA, InputKind.CLEAR): CA,
        (CU, InputKind.CLEAR): Reason.ALREADY_CLEARED,
        (CA, InputKind.CLEAR): Reason.ALREADY_CLEARED,
        (CL, InputKind.CLEAR): Reason.ALARM_CLOSED,
        # user actions
        (AU, InputKind.ACK): AA,
        (AA, InputKind.ACK): Reason.ALREADY_ACKED,
        (CU, InputKind.ACK): CA,
        (CA, InputKind.ACK): Reason.ALREADY_ACKED,
        (CL, InputKind.ACK): Refused("the alarm is closed; there is nothing left to acknowledge"),
        (AU, InputKind.CLOSE): Refused("cannot close an active alarm: it must clear first"),
        (AA, InputKind.CLOSE): Refused("cannot close an active alarm: it must clear first"),
        (CU, InputKind.CLOSE): CL,
        (CA, InputKind.CLOSE): CL,
        (CL, InputKind.CLOSE): Refused("the alarm is already closed"),
        (CL, InputKind.COMMENT): CL,
        (CL, InputKind.SHELVE): _CLOSED_REFUSAL,
        (CL, InputKind.UNSHELVE): _CLOSED_REFUSAL,
        # engine inputs never fail: on a closed alarm they do nothing
        (CL, InputKind.SUPPRESS): Reason.ALARM_CLOSED,
        (CL, InputKind.UNSUPPRESS): Reason.ALARM_CLOSED,
        (CL, InputKind.ESCALATE): Reason.ALARM_CLOSED,
        (CL, InputKind.REMIND): Reason.ALARM_CLOSED,
        (CL, InputKind.SHELVE_EXPIRED): Reason.ALARM_CLOSED,
        # reminders and ack escalations are for unacknowledged alarms only
        (AA, InputKind.REMIND): Reason.NOT_DUE,
        (CA, InputKind.REMIND): Reason.NOT_DUE,
    }
)

# ---------------------------------------------------------------------------------------------
# Policy


@dataclass(frozen=True, slots=True)
class Policy:
    """What `step` and the timers need from the config. Build it with `Policy.from_config`."""

    deadlines: Mapping[Severity, Deadline] = field(default_factory=lambda: dict(DEFAULT_DEADLINES))
    max_shelve_ms: int = 8 * 3_600_000
    reminder_interval_ms: int = 5 * 60_000
    #: rule_id -> side of the limit; rules not listed are treated as high-side for `peak_value`
    directions: Mapping[str, Direction] = field(default_factory=dict)
    _by_value: dict[str, Deadline] = field(default_factory=dict, init=False, repr=False, compare=False)

    @classmethod
    def from_config(
        cls, cfg: AlarmsConfig, directions: Mapping[str, Direction | str] | None = None
    ) -> Policy:
        """The policy of an `[alarms]` config section, plus the rules' directions when known."""
        return cls(
            deadlines=dict(cfg.deadlines),
            max_shelve_ms=cfg.max_shelve_ms,
            reminder_interval_ms=cfg.reminder_interval_ms,
            directions={k: Direction(v) for k, v in (directions or {}).items()},
        )

    def __post_init__(self) -> None:
        by_value = {sev.value: self.deadlines.get(sev) or DEFAULT_DEADLINES[sev] for sev in Severity}
        object.__setattr__(self, "_by_value", by_value)

    def deadline(self, severity: Severity) -> Deadline:
        """The ack / close deadline of a severity (the built-in default when the config has none)."""
        return self._by_value[severity._value_]


# ---------------------------------------------------------------------------------------------
# Helpers


def fmt_ms(ts_ms: int) -> str:
    """An epoch-ms time as ISO-8601 UTC, for event details.

    >>> fmt_ms(0)
    '1970-01-01T00:00:00Z'
    """
    return datetime.fromtimestamp(ts_ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def more_severe(current: float, new: float, direction: Direction | None) -> float:
    """The more severe of two values for a rule of `direction` (None: high-side). NaN never wins.

    >>> more_severe(1.0, 2.0, Direction.HIGH), more_severe(1.0, 2.0, Direction.LOW), more_severe(math.nan, 3.0, None)
    (2.0, 1.0, 3.0)
    """
    if math.isnan(new):
        return current
    if math.isnan(current):
        return new
    return min(current, new) if direction is Direction.LOW else max(current, new)


# ---------------------------------------------------------------------------------------------
# Building frozen records fast
#
# The signal hot path makes one Alarm (33 fields) and one AlarmEvent per signal. A frozen dataclass's
# `__init__` sets each field through `object.__setattr__` (about 0.2 us a field here), and so does every
# other way of filling a frozen slot from outside. A *shell* class with the very same `__slots__` and no
# frozen `__setattr__` is filled with plain attribute stores (specialised by the interpreter), and then
# becomes the real class by `__class__` assignment, which CPython allows between classes of the same
# layout. The result is an ordinary instance of the frozen class (type, equality, hash, pickling,
# immutability all as usual), built about five times faster. It is only exact when the class runs no
# code of its own at construction (`__post_init__`, `default_factory`, `init=False` fields); for any
# other class, or if the layouts do not match, the plain constructor / `dataclasses.replace` is used.
# test_lifecycle checks both against the dataclass machinery.


def _shell_of(cls: type) -> type | None:
    """A non-frozen class with cls's slots whose instances can become cls instances; None if not exact."""
    flds = fields(cls)
    names = tuple(f.name for f in flds)
    if (
        getattr(cls, "__slots__", None) != names
        or hasattr(cls, "__post_init__")
        or any(not f.init or f.default_factory is not MISSING for f in flds)
        or cls.__bases__ != (object,)
    ):
        return None
    shell = type(f"_{cls.__name__}Shell", (), {"__slots__": names, "__module__": __name__})
    try:
        probe = object.__new__(shell)
        probe.__class__ = cls
    except TypeError:  # pragma: no cover - incompatible layout
        return None
    return shell


def fast_maker(cls: type[Any]) -> Callable[..., Any]:
    """A function with `cls`'s constructor signature that builds the same frozen instance faster.

    `cls` itself when the shortcut would not be exact (see above).
    """
    shell = _shell_of(cls)
    if shell is None:  # pragma: no cover - model changed
        return cls
    env: dict[str, object] = {"_new": object.__new__, "_shell": shell, "_cls": cls}
    params = []
    for i, f in enumerate(fields(cls)):
        if f.default is MISSING:
            params.append(f.name)
        else:
            env[f"_d{i}"] = f.default
            params.append(f"{f.name}=_d{i}")
    lines = [f"def make({', '.join(params)}):", "    o = _new(_shell)"]
    lines += [f"    o.{f.name} = {f.name}" for f in fields(cls)]
    lines += ["    o.__class__ = _cls", "    return o"]
    exec("\n".join(lines), env)  # noqa: S102 - fixed text built from the dataclass's own field names
    make = env["make"]
    make.__doc__ = f"Same as {cls.__name__}(...), faster (lifecycle.fast_maker)."  # type: ignore[attr-defined]
    return make  # type: ignore[return-value]


_ALARM_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(Alarm))
_ALARM_SHELL = _shell_of(Alarm)
_EVOLVERS: dict[tuple[str, ...], Callable[..., Alarm]] = {}


def evolver(*names: str) -> Callable[..., Alarm]:
    """`f(alarm, *values)`: a copy of `alarm` with the fields `names` set to `values` (in that order).

    The same result as `dataclasses.replace(alarm, **dict(zip(names, values)))`; made once per set of
    names and cached. The hot paths of `step` hold theirs.
    """
    fn = _EVOLVERS.get(names)
    if fn is not None:
        return fn
    unknown = [n for n in names if n not in _ALARM_FIELDS]
    if unknown or len(set(names)) != len(names):
        msg = f"evolve: unknown or repeated Alarm fields {names}"
        raise TypeError(msg)
    if _ALARM_SHELL is None:  # pragma: no cover - model changed

        def fn(alarm: Alarm, *values: object) -> Alarm:
            return replace(alarm, **dict(zip(names, values, strict=True)))  # type: ignore[arg-type]

    else:
        env: dict[str, object] = {"_new": object.__new__, "_shell": _ALARM_SHELL, "_cls": Alarm}
        args = {n: f"v{i}" for i, n in enumerate(names)}
        lines = [f"def evolve_{len(_EVOLVERS)}(a{''.join(', ' + v for v in args.values())}):"]
        lines.append("    o = _new(_shell)")
        lines += [f"    o.{n} = {args.get(n, 'a.' + n)}" for n in _ALARM_FIELDS]
        lines += ["    o.__class__ = _cls", "    return o"]
        exec("\n".join(lines), env)  # noqa: S102 - fixed text built from the dataclass's own field names
        fn = env[f"evolve_{len(_EVOLVERS)}"]  # type: ignore[assignment]
    _EVOLVERS[names] = fn  # type: ignore[assignment]
    return fn  # type: ignore[return-value]


def evolve(alarm: Alarm, **changes: object) -> Alarm:
    """`dataclasses.replace` for Alarm, several times faster (see `evolver`)."""
    return evolver(*changes)(alarm, *changes.values())


#: Alarm(...) / AlarmEvent(...), faster (see above)
new_alarm: Callable[..., Alarm] = fast_maker(Alarm)
new_event: Callable[..., AlarmEvent] = fast_maker(AlarmEvent)
#: Raise(...) / Clear(...), faster: the manager makes one per signal
new_raise: Callable[..., Raise] = fast_maker(Raise)
new_clear: Callable[..., Clear] = fast_maker(Clear)


def signal_floor_ms(alarm: Alarm) -> int:
    """The alarm's latest signal-driven time; signals older than this are stale."""
    floor = alarm.last_activation_ms if alarm.last_activation_ms else alarm.raised_at_ms
    if alarm.cleared_at_ms is not None and alarm.cleared_at_ms > floor:
        floor = alarm.cleared_at_ms
    return floor


def unacked_since(alarm: Alarm) -> int:
    """Start of the current unacknowledged period (meaningful while the alarm is unacknowledged)."""
    return alarm.unacked_since_ms if alarm.unacked_since_ms is not None else alarm.raised_at_ms


def is_muted(alarm: Alarm) -> bool:
    """Shelved or suppressed: no notices, no escalations, no reminders."""
    return alarm.shelved_until_ms is not None or alarm.suppressed


_isnan = math.isnan


def _value_detail(value: float, extra: str) -> str:
    """Event detail of a signal: its value and the rule's detail ("no value" for e.g. a stale rule)."""
    head = "no value" if _isnan(value) else f"value {value:g}"
    return f"{head}; {extra}" if extra else head


def _refuse(alarm: Alarm, why: str) -> ActionError:
    return ActionError(alarm.alarm_id, alarm.state.value, why)


# ---------------------------------------------------------------------------------------------
# Opening an alarm


def open_alarm(
    alarm_id: str,
    *,
    site: str,
    plant: str,
    district: str,
    tag: str,
    rule_id: str,
    severity: Severity,
    raise_: Raise,
    policy: Policy,
    flood: bool = False,
) -> Outcome:
    """A new alarm from a raise signal: `active_unack`, event `raised` at the signal's event time.

    When `raise_.suppress_reason` is set the alarm is born suppressed and a `suppressed` event follows.
    """
    ts = raise_.ts_ms
    alarm = new_alarm(
        alarm_id,
        site,
        plant,
        district,
        tag,
        rule_id,
        severity,
        AU,
        ts,
        message=raise_.message,
        value=raise_.value,
        peak_value=raise_.value,
        last_activation_ms=ts,
        unacked_since_ms=ts,
        suppressed=raise_.suppress_reason is not None,
        chattering=raise_.chattering,
        flood=flood,
    )
    extra = raise_.detail
    if raise_.chattering:
        extra = f"{extra}; chattering" if extra else "chattering"
    if flood:
        extra = f"{extra}; flood" if extra else "flood"
    raised = new_event(alarm_id, ts, _EV_RAISED, ENGINE, _value_detail(raise_.value, extra))
    if raise_.suppress_reason is None:
        return Outcome(alarm, (raised,), Reason.RAISED)
    events = (raised, new_event(alarm_id, ts, EventKind.SUPPRESSED, ENGINE, raise_.suppress_reason))
    return Outcome(alarm, events, Reason.RAISED)


# ---------------------------------------------------------------------------------------------
# step


def step(alarm: Alarm, inp: Input, now_ms: int, policy: Policy) -> Outcome:
    """Apply one input to one alarm.

    Signals use their own event time; actions and timers use `now_ms` (clamped to the alarm's latest
    event time). No-ops return the same alarm object and no events. Refused user actions raise
    `ActionError` naming the alarm, its state and why.

    Args:
        alarm: the alarm as it is now.
        inp: what happened.
        now_ms: the engine clock (epoch ms, UTC).
        policy: deadlines, shelve limit, reminder interval, rule directions.

    Returns:
        The Outcome (new alarm, events appended in order, reason).

    Raises:
        ActionError: the move is refused (see TABLE and the conditional checks).
    """
    handler, move, clamp = _DISPATCH[(alarm.state._value_, inp.kind._value_)]
    if handler is None:
        if move.__class__ is Refused:
            raise _refuse(alarm, move.why)
        return Outcome(alarm, (), move)
    if clamp:  # signals carry their own time; actions and timers never precede the latest event
        now_ms = max(now_ms, signal_floor_ms(alarm))
    return handler(alarm, inp, now_ms, policy, move)


def _same(alarm: Alarm, reason: Reason) -> Outcome:
    return Outcome(alarm, (), reason)


_REACTIVATE = (
    "state",
    "occurrences",
    "last_activation_ms",
    "cleared_at_ms",
    "value",
    "peak_value",
    "suppressed",
    "chattering",
    "message",
)
_reactivated = evolver(*_REACTIVATE)
#: a reactivation of an acknowledged alarm also starts a new unacknowledged period
_reactivated_unacked = evolver(*_REACTIVATE, "unacked_since_ms", "ack_escalations", "last_reminded_ms")
_cleared = evolver("state", "cleared_at_ms")
_EV_RAISED, _EV_REACTIVATED, _EV_CLEARED = EventKind.RAISED, EventKind.REACTIVATED, EventKind.CLEARED


def _on_raise(alarm: Alarm, inp: Raise, now_ms: int, policy: Policy, nxt: AlarmState) -> Outcome:
    # only cleared -> active reaches here (TABLE): a reactivation of the same episode
    ts = inp.ts_ms
    cleared_at = alarm.cleared_at_ms
    if ts < (alarm.last_activation_ms or alarm.raised_at_ms) or (cleared_at is not None and ts < cleared_at):
        return Outcome(alarm, (), Reason.STALE_SIGNAL)  # older than signal_floor_ms(alarm)
    suppressed = inp.suppress_reason is not None
    newly_chattering = inp.chattering and not alarm.chattering
    occurrences = alarm.occurrences + 1
    value = inp.value
    args = (
        nxt,
        occurrences,
        ts,
        None,
        value,
        more_severe(alarm.peak_value, value, policy.directions.get(alarm.rule_id)),
        suppressed,
        alarm.chattering or inp.chattering,
        inp.message or alarm.message,
    )
    state = alarm.state
    if state is AA or state is CA:
        # a new unacknowledged period; the running one (cleared_unack) keeps its clock
        new = _reactivated_unacked(alarm, *args, ts, 0, None)
    else:
        new = _reactivated(alarm, *args)
    extra = f"{inp.detail}; occurrence {occurrences}" if inp.detail else f"occurrence {occurrences}"
    if newly_chattering:
        extra += "; chattering"
    aid = alarm.alarm_id
    ev = new_event(aid, ts, _EV_REACTIVATED, ENGINE, _value_detail(value, extra))
    if suppressed and not alarm.suppressed:
        sup = new_event(aid, ts, EventKind.SUPPRESSED, ENGINE, inp.suppress_reason or "")
        return Outcome(new, (ev, sup), Reason.REACTIVATED)
    return Outcome(new, (ev,), Reason.REACTIVATED)


def _on_clear(alarm: Alarm, inp: Clear, now_ms: int, policy: Policy, nxt: AlarmState) -> Outcome:
    ts = inp.ts_ms
    cleared_at = alarm.cleared_at_ms
    if ts < (alarm.last_activation_ms or alarm.raised_at_ms) or (cleared_at is not None and ts < cleared_at):
        return Outcome(alarm, (), Reason.STALE_SIGNAL)  # older than signal_floor_ms(alarm)
    ev = new_event(alarm.alarm_id, ts, _EV_CLEARED, ENGINE, _value_detail(inp.value, inp.detail))
    return Outcome(_cleared(alarm, nxt, ts), (ev,), Reason.CLEARED)


def _acked(alarm: Alarm, actor: str, now_ms: int, nxt: AlarmState) -> Alarm:
    first = alarm.acked_at_ms is None
    return evolve(
        alarm,
        state=nxt,
        acked_at_ms=now_ms if first else alarm.acked_at_ms,
        acked_by=actor if first else alarm.acked_by,
        unacked_since_ms=None,
        ack_escalations=0,
        last_reminded_ms=None,
    )


def _on_ack(alarm: Alarm, inp: Ack, now_ms: int, policy: Policy, nxt: AlarmState) -> Outcome:
    new = _acked(alarm, inp.actor, now_ms, nxt)
    detail = inp.note.strip() or f"acknowledged ({'active' if alarm.state.is_active else 'cleared'})"
    return Outcome(
        new, (new_event(alarm.alarm_id, now_ms, EventKind.ACKED, inp.actor, detail),), Reason.ACKED
    )


def _on_close(alarm: Alarm, inp: Close, now_ms: int, policy: Policy, nxt: AlarmState) -> Outcome:
    try:
        disposition = Disposition(inp.disposition)
    except ValueError:
        known = ", ".join(d.value for d in Disposition)
        raise _refuse(alarm, f"unknown disposition {inp.disposition!r} (one of {known})") from None
    note = inp.note.strip()
    if disposition is Disposition.OTHER and not note:
        raise _refuse(alarm, "disposition 'other' needs a note saying what happened")
    events: list[AlarmEvent] = []
    cur = alarm
    if not alarm.state.is_acked:
        # closing answers the alarm: acknowledge it on the way (see module doc)
        cur = _acked(alarm, inp.actor, now_ms, CA)
        events.append(new_event(alarm.alarm_id, now_ms, EventKind.ACKED, inp.actor, "acknowledged by close"))
    new = evolve(
        cur,
        state=nxt,
        closed_at_ms=now_ms,
        closed_by=inp.actor,
        disposition=disposition,
        note=note or None,
        shelved_until_ms=None,
    )
    detail = f"{disposition.value}: {note}" if note else disposition.value
    events.append(new_event(alarm.alarm_id, now_ms, EventKind.CLOSED, inp.actor, detail))
    return Outcome(new, tuple(events), Reason.CLOSED)


def _on_comment(alarm: Alarm, inp: Comment, now_ms: int, policy: Policy, nxt: AlarmState) -> Outcome:
    note = inp.note.strip()
    if not note:
        raise _refuse(alarm, "a comment needs a note")
    return Outcome(
        alarm, (new_event(alarm.alarm_id, now_ms, EventKind.COMMENTED, inp.actor, note),), Reason.COMMENTED
    )


def _on_shelve(alarm: Alarm, inp: Shelve, now_ms: int, policy: Policy, nxt: AlarmState) -> Outcome:
    reason = inp.reason.strip()
    if not reason:
        raise _refuse(alarm, "shelving needs a reason")
    if inp.until_ms <= now_ms:
        raise _refuse(alarm, f"shelve end {fmt_ms(inp.until_ms)} is not in the future (now {fmt_ms(now_ms)})")
    if inp.until_ms - now_ms > policy.max_shelve_ms:
        raise _refuse(
            alarm,
            f"a shelve may last at most {policy.max_shelve_ms // 60_000} min (alarms.max_shelve); "
            f"asked {(inp.until_ms - now_ms) // 60_000} min",
        )
    new = evolve(alarm, shelved_until_ms=inp.until_ms, shelved_by=inp.actor, shelve_reason=reason)
    ev = new_event(
        alarm.alarm_id, now_ms, EventKind.SHELVED, inp.actor, f"until {fmt_ms(inp.until_ms)}: {reason}"
    )
    return Outcome(new, (ev,), Reason.SHELVED)


def _unmuted(alarm: Alarm, now_ms: int, **changes: object) -> Alarm:
    """The alarm after a shelve or suppression ends: unacknowledged ones start a new ack period now."""
    if not alarm.state.is_acked:
        changes.update(unacked_since_ms=now_ms, ack_escalations=0, last_reminded_ms=None)
    return evolve(alarm, **changes)


def _unshelved(alarm: Alarm, now_ms: int, actor: str, detail: str, reason: Reason) -> Outcome:
    new = _unmuted(alarm, now_ms, shelved_until_ms=None, shelved_by=None, shelve_reason=None)
    return Outcome(new, (new_event(alarm.alarm_id, now_ms, EventKind.UNSHELVED, actor, detail),), reason)


def _on_unshelve(alarm: Alarm, inp: Unshelve, now_ms: int, policy: Policy, nxt: AlarmState) -> Outcome:
    if alarm.shelved_until_ms is None:
        return _same(alarm, Reason.NOT_SHELVED)
    return _unshelved(alarm, now_ms, inp.actor, inp.note.strip() or "unshelved early", Reason.UNSHELVED)


def _on_shelve_expired(
    alarm: Alarm, inp: ShelveExpired, now_ms: int, policy: Policy, nxt: AlarmState
) -> Outcome:
    if alarm.shelved_until_ms is None:
        return _same(alarm, Reason.NOT_SHELVED)
    if alarm.shelved_until_ms > now_ms:
        return _same(alarm, Reason.NOT_DUE)
    return _unshelved(
        alarm, now_ms, ENGINE, f"shelve expired at {fmt_ms(alarm.shelved_until_ms)}", Reason.SHELVE_EXPIRED
    )


def _on_suppress(alarm: Alarm, inp: Suppress, now_ms: int, policy: Policy, nxt: AlarmState) -> Outcome:
    if alarm.suppressed:
        return _same(alarm, Reason.ALREADY_SUPPRESSED)
    new = evolve(alarm, suppressed=True)
    return Outcome(
        new,
        (new_event(alarm.alarm_id, now_ms, EventKind.SUPPRESSED, ENGINE, inp.reason),),
        Reason.SUPPRESSED,
    )


def _on_unsuppress(alarm: Alarm, inp: Unsuppress, now_ms: int, policy: Policy, nxt: AlarmState) -> Outcome:
    if not alarm.suppressed:
        return _same(alarm, Reason.NOT_SUPPRESSED)
    # There is no `unsuppressed` event kind. A suppressed alarm was never announced, so lifting the
    # suppression is recorded as a reminder: "still here, now it counts" (and it is notice-worthy).
    new = _unmuted(alarm, now_ms, suppressed=False)
    detail = f"{inp.reason}; alarm still {alarm.state.value}"
    return Outcome(
        new, (new_event(alarm.alarm_id, now_ms, EventKind.REMINDED, ENGINE, detail),), Reason.UNSUPPRESSED
    )


def _on_escalate(alarm: Alarm, inp: Escalate, now_ms: int, policy: Policy, nxt: AlarmState) -> Outcome:
    if is_muted(alarm):
        return _same(alarm, Reason.MUTED)
    if inp.cause is EscalationCause.ACK:
        if alarm.state.is_acked:
            return _same(alarm, Reason.NOT_DUE)
        counted: dict[str, object] = {"ack_escalations": alarm.ack_escalations + 1}
    else:
        if alarm.close_escalated:
            return _same(alarm, Reason.NOT_DUE)
        counted = {"close_escalated": True}
    if alarm.escalation_tier >= Tier.CITY:
        return _same(alarm, Reason.AT_TOP_TIER)
    tier = Tier(alarm.escalation_tier + 1)
    new = evolve(alarm, escalation_tier=tier, last_reminded_ms=now_ms, **counted)
    due = f" (due {fmt_ms(inp.due_ms)})" if inp.due_ms else ""
    detail = f"{inp.cause.value} deadline missed{due}: {alarm.escalation_tier.label} -> {tier.label}"
    return Outcome(
        new, (new_event(alarm.alarm_id, now_ms, EventKind.ESCALATED, ENGINE, detail),), Reason.ESCALATED
    )


def _on_remind(alarm: Alarm, inp: Remind, now_ms: int, policy: Policy, nxt: AlarmState) -> Outcome:
    # acked states are NOT_DUE in the TABLE already
    if is_muted(alarm):
        return _same(alarm, Reason.MUTED)
    new = evolve(alarm, last_reminded_ms=now_ms)
    detail = f"unacknowledged since {fmt_ms(unacked_since(alarm))}; tier {alarm.escalation_tier.label}"
    return Outcome(
        new, (new_event(alarm.alarm_id, now_ms, EventKind.REMINDED, ENGINE, detail),), Reason.REMINDED
    )


#: (alarm, input, now_ms, policy, next state from TABLE) -> Outcome
Handler = Callable[[Alarm, Any, int, Policy, AlarmState], Outcome]
_HANDLERS: dict[InputKind, Handler] = {
    InputKind.RAISE: _on_raise,
    InputKind.CLEAR: _on_clear,
    InputKind.ACK: _on_ack,
    InputKind.CLOSE: _on_close,
    InputKind.COMMENT: _on_comment,
    InputKind.SHELVE: _on_shelve,
    InputKind.UNSHELVE: _on_unshelve,
    InputKind.SUPPRESS: _on_suppress,
    InputKind.UNSUPPRESS: _on_unsuppress,
    InputKind.ESCALATE: _on_escalate,
    InputKind.REMIND: _on_remind,
    InputKind.SHELVE_EXPIRED: _on_shelve_expired,
}
_HANDLERS_BY_VALUE: dict[str, Handler] = {k.value: h for k, h in _HANDLERS.items()}
_TABLE_BY_VALUE = {(s.value, k.value): m for (s, k), m in TABLE.items()}
#: TABLE by plain strings (Enum.__hash__ is slow), resolved for `step`: (handler, move, clamp_now);
#: handler None when the move is a no-op Reason or a Refused
_DISPATCH: dict[tuple[str, str], tuple[Handler | None, Move, bool]] = {
    (s.value, k.value): (
        None if isinstance(m, Reason | Refused) else _HANDLERS[k],
        m,
        k not in (InputKind.RAISE, InputKind.CLEAR),
    )
    for (s, k), m in TABLE.items()
}

# ---------------------------------------------------------------------------------------------
# Timers


def _timer_candidates(alarm: Alarm, policy: Policy) -> list[tuple[int, int, Input]]:
    """(due_ms, order, input) of every timer of an open alarm, shelve expiry included."""
    out: list[tuple[int, int, Input]] = []
    if alarm.state is CL:
        return out
    if alarm.shelved_until_ms is not None:
        out.append((alarm.shelved_until_ms, 0, ShelveExpired()))
    if is_muted(alarm):
        return out
    dl = policy.deadline(alarm.severity)
    below_top = alarm.escalation_tier < Tier.CITY
    if not alarm.state.is_acked:
        since = unacked_since(alarm)
        if dl.ack_ms > 0 and below_top:
            due = since + (alarm.ack_escalations + 1) * dl.ack_ms
            out.append((due, 1, Escalate(EscalationCause.ACK, due)))
        if policy.reminder_interval_ms > 0:
            last = alarm.last_reminded_ms
            base = last if last is not None and last > since else since
            due = base + policy.reminder_interval_ms
            out.append((due, 3, Remind(due)))
    if dl.close_ms > 0 and below_top and not alarm.close_escalated:
        due = alarm.raised_at_ms + dl.close_ms
        out.append((due, 2, Escalate(EscalationCause.CLOSE, due)))
    return out


def next_due_ms(alarm: Alarm, policy: Policy) -> int | None:
    """When the next engine input of this alarm falls due (None: nothing scheduled).

    The same answer as the earliest of `_timer_candidates`, computed without building inputs: the
    manager calls it after every change of every alarm.

    >>> a = Alarm("A1", "s", "hazchem", "d", "t", "r", Severity.RED, AU, raised_at_ms=0)
    >>> next_due_ms(a, Policy())  # red: ack deadline 5 min (the first reminder is due then too)
    300000
    """
    state = alarm.state
    if state is CL:
        return None
    if alarm.shelved_until_ms is not None:
        return alarm.shelved_until_ms  # muted: only the shelve expiry is left
    if alarm.suppressed:
        return None
    dl = policy.deadline(alarm.severity)
    below_top = alarm.escalation_tier < Tier.CITY
    best: int | None = None
    if state is AU or state is CU:
        since = alarm.unacked_since_ms if alarm.unacked_since_ms is not None else alarm.raised_at_ms
        if dl.ack_ms > 0 and below_top:
            best = since + (alarm.ack_escalations + 1) * dl.ack_ms
        interval = policy.reminder_interval_ms
        if interval > 0:
            last = alarm.last_reminded_ms
            due = (last if last is not None and last > since else since) + interval
            if best is None or due < best:
                best = due
    if dl.close_ms > 0 and below_top and not alarm.close_escalated:
        due = alarm.raised_at_ms + dl.close_ms
        if best is None or due < best:
            best = due
    return best


def first_due_input(alarm: Alarm, now_ms: int, policy: Policy) -> Input | None:
    """The earliest engine input due at `now_ms` (ties: shelve expiry, ack escalation, close, reminder)."""
    due = [c for c in _timer_candidates(alarm, policy) if c[0] <= now_ms]
    if not due:
        return None
    return min(due, key=lambda c: (c[0], c[1]))[2]


def run_timers(alarm: Alarm, now_ms: int, policy: Policy) -> tuple[Alarm, list[AlarmEvent], list[Reason]]:
    """Apply every engine input due at `now_ms`, in due order. Idempotent: a second call does nothing.

    Each applied input moves its timer past `now_ms` (or stops it), so the loop ends. Should a timer
    ever fail to move (a bug), the loop stops and the last reason returned is the no-op it got; the
    manager counts it and retries later instead of spinning or crashing the pipeline.
    """
    events: list[AlarmEvent] = []
    reasons: list[Reason] = []
    for _ in range(64):
        inp = first_due_input(alarm, now_ms, policy)
        if inp is None:
            break
        out = step(alarm, inp, now_ms, policy)
        reasons.append(out.reason)
        if not out.changed:  # pragma: no cover - no timer input is a no-op by construction
            break
        alarm = out.alarm
        events.extend(out.events)
    return alarm, events, reasons
