"""The vocabulary every stage speaks. Stages never import each other; they exchange these types.

Times are integers in epoch milliseconds UTC and their names end in `_ms`; durations end in `_ms`
or `_s`. Batches of readings are columnar (a polars frame with a fixed schema), because the hot
path is vectorized; alarms, signals and events are few and stay plain frozen dataclasses.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

# ---------------------------------------------------------------------------------------------
# Readings


class Quality(enum.IntEnum):
    """Quality code of a reading. Stored as its lower-case name."""

    GOOD = 0
    UNCERTAIN = 1
    BAD = 2

    @property
    def label(self) -> str:
        return self.name.lower()


QUALITY_LABELS: tuple[str, ...] = tuple(q.label for q in Quality)

#: Schema of a ReadingBatch frame. `quality` holds Quality codes.
READING_SCHEMA: dict[str, pl.DataType] = {
    "site": pl.String(),
    "tag": pl.String(),
    "ts_ms": pl.Int64(),
    "value": pl.Float64(),
    "quality": pl.Int8(),
}


@dataclass(frozen=True, slots=True)
class RawMessage:
    """One MQTT message as ingest received it. `mid` is what must be acknowledged after commit."""

    topic: str
    payload: bytes
    mid: int = 0
    received_ms: int = 0
    session: int = 0  # broker connection it arrived on: an ack is only valid on the same connection


@dataclass(frozen=True, slots=True)
class Reject:
    """A reading or message refused by decode, with the reason. Lands in the `rejects` table."""

    received_ms: int
    topic: str
    reason: str
    payload: str  # an excerpt, never the whole (possibly huge) payload


@dataclass(frozen=True, slots=True)
class ReadingBatch:
    """A columnar batch of valid readings (schema READING_SCHEMA)."""

    frame: pl.DataFrame

    def __post_init__(self) -> None:
        if self.frame.schema != pl.Schema(READING_SCHEMA):
            msg = f"ReadingBatch needs schema {READING_SCHEMA}, got {dict(self.frame.schema)}"
            raise TypeError(msg)

    @classmethod
    def empty(cls) -> ReadingBatch:
        return cls(pl.DataFrame(schema=READING_SCHEMA))

    @classmethod
    def from_columns(
        cls,
        site: list[str],
        tag: list[str],
        ts_ms: Any,
        value: Any,
        quality: Any,
    ) -> ReadingBatch:
        return cls(
            pl.DataFrame(
                {"site": site, "tag": tag, "ts_ms": ts_ms, "value": value, "quality": quality},
                schema=READING_SCHEMA,
            )
        )

    def __len__(self) -> int:
        return self.frame.height


# ---------------------------------------------------------------------------------------------
# Rule output


class Severity(enum.StrEnum):
    """Severity of a rule / alarm. Order: red > orange > yellow > blue."""

    RED = "red"
    ORANGE = "orange"
    YELLOW = "yellow"
    BLUE = "blue"

    @property
    def rank(self) -> int:
        """0 for red (most severe) .. 3 for blue."""
        return _SEVERITY_RANK[self]


_SEVERITY_RANK = {Severity.RED: 0, Severity.ORANGE: 1, Severity.YELLOW: 2, Severity.BLUE: 3}


class SignalKind(enum.StrEnum):
    RAISE = "raise"
    CLEAR = "clear"


@dataclass(frozen=True, slots=True)
class Signal:
    """Raw rule output: a rule instance on (site, tag) raised or cleared at event time `ts_ms`.

    `tag` is the rule's tag, or for `vote`/`expr`/`interlock` its first tag or the rule id.
    `value` is the reading's value that caused it (NaN when there is none, e.g. `stale`).
    """

    site: str
    tag: str
    rule_id: str
    severity: Severity
    kind: SignalKind
    ts_ms: int
    value: float
    message: str = ""
    detail: str = ""  # e.g. the interlock outcome, the forecast crossing time


# ---------------------------------------------------------------------------------------------
# Alarms


class AlarmState(enum.StrEnum):
    ACTIVE_UNACK = "active_unack"
    ACTIVE_ACK = "active_ack"
    CLEARED_UNACK = "cleared_unack"
    CLEARED_ACK = "cleared_ack"
    CLOSED = "closed"

    @property
    def is_active(self) -> bool:
        return self in (AlarmState.ACTIVE_UNACK, AlarmState.ACTIVE_ACK)

    @property
    def is_acked(self) -> bool:
        return self in (AlarmState.ACTIVE_ACK, AlarmState.CLEARED_ACK)


class EventKind(enum.StrEnum):
    RAISED = "raised"
    REACTIVATED = "reactivated"
    CLEARED = "cleared"
    ACKED = "acked"
    COMMENTED = "commented"
    SHELVED = "shelved"
    UNSHELVED = "unshelved"
    SUPPRESSED = "suppressed"
    ESCALATED = "escalated"
    REMINDED = "reminded"
    CLOSED = "closed"


class Disposition(enum.StrEnum):
    """Recorded cause when an alarm is closed (domain.md §3b feedback categories)."""

    REAL_HANDLED = "real_handled"
    PROCESS_NORMAL = "process_normal"
    MAINTENANCE_TEST = "maintenance_test"
    INSTRUMENT_FAULT = "instrument_fault"
    COMM_FAULT = "comm_fault"
    FALSE_ALARM = "false_alarm"
    OUT_OF_SERVICE = "out_of_service"
    OTHER = "other"


class Tier(enum.IntEnum):
    """Escalation chain, bottom to top."""

    PLANT = 0
    TOWNSHIP = 1
    COUNTY = 2
    CITY = 3

    @property
    def label(self) -> str:
        return self.name.lower()


@dataclass(frozen=True, slots=True)
class Alarm:
    """One episode of one rule on one (site, tag), tracked until closed."""

    alarm_id: str
    site: str
    plant: str
    district: str
    tag: str
    rule_id: str
    severity: Severity
    state: AlarmState
    raised_at_ms: int
    message: str = ""
    acked_at_ms: int | None = None
    acked_by: str | None = None
    cleared_at_ms: int | None = None
    closed_at_ms: int | None = None
    closed_by: str | None = None
    disposition: Disposition | None = None
    note: str | None = None
    occurrences: int = 1
    value: float = float("nan")
    peak_value: float = float("nan")
    escalation_tier: Tier = Tier.PLANT
    last_activation_ms: int = 0
    shelved_until_ms: int | None = None
    shelved_by: str | None = None
    shelve_reason: str | None = None
    suppressed: bool = False
    chattering: bool = False
    flood: bool = False
    last_notified_ms: int | None = None
    # Timer bookkeeping of the alarm lifecycle (alarms/lifecycle.py). Persist these with the alarm: a
    # restart derives "already escalated / reminded" from them, never from memory.
    #: start of the current unacknowledged period (None: raised_at_ms); the ack deadline counts from here
    unacked_since_ms: int | None = None
    #: ack-deadline escalations already done in the current unacknowledged period
    ack_escalations: int = 0
    #: the close deadline has been escalated (it escalates once per episode)
    close_escalated: bool = False
    #: last reminder (an escalation counts as one); the next is due reminder_interval after it
    last_reminded_ms: int | None = None

    @property
    def is_open(self) -> bool:
        return self.state is not AlarmState.CLOSED


@dataclass(frozen=True, slots=True)
class AlarmEvent:
    """One transition of one alarm, appended to `alarm_events`."""

    alarm_id: str
    ts_ms: int
    kind: EventKind
    actor: str = "engine"
    detail: str = ""


# ---------------------------------------------------------------------------------------------
# Maintenance windows


@dataclass(frozen=True, slots=True)
class MaintenanceWindow:
    """A maintenance window on a site (tag None) or one tag, `[starts_ms, ends_ms)`: alarms raised in it
    are suppressed. The alarm manager keeps them, the store persists them."""

    window_id: str
    site: str
    tag: str | None
    starts_ms: int
    ends_ms: int
    reason: str
    created_by: str
    created_at_ms: int = 0

    def covers(self, site: str, tag: str, ts_ms: int) -> bool:
        """Whether a reading of (site, tag) at `ts_ms` falls inside this window (end exclusive)."""
        in_scope = site == self.site and (self.tag is None or tag == self.tag)
        return in_scope and self.starts_ms <= ts_ms < self.ends_ms


# ---------------------------------------------------------------------------------------------
# Sites


@dataclass(frozen=True, slots=True)
class Contact:
    """Someone to notify at one tier of a site's escalation chain."""

    tier: Tier
    name: str
    email: str | None = None
    webhook: str | None = None


@dataclass(frozen=True, slots=True)
class Site:
    """A registered plant site (sites file, product.md §4)."""

    id: str
    name: str
    plant: str
    district: str
    township: str = ""
    contacts: tuple[Contact, ...] = ()
    #: rule_id -> {key: value} overrides of rule parameters, already validated by the rules loader
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)

    def contacts_at(self, tier: Tier) -> tuple[Contact, ...]:
        return tuple(c for c in self.contacts if c.tier == tier)


PLANTS: tuple[str, ...] = ("hazchem", "dust", "aluminum", "steel")


# ---------------------------------------------------------------------------------------------
# Notices


@dataclass(frozen=True, slots=True)
class NoticeRecord:
    """One delivery attempt of one notice for one alarm on one channel: a row of the `notices` table."""

    notice_id: str
    alarm_id: str
    channel: str  # mqtt | webhook | email | log
    recipient: str
    tier: str
    reason: str  # raised | reactivated | escalated | reminder
    sent_at_ms: int
    outcome: str  # delivered | failed | retrying | dead_letter | suppressed
    error: str = ""
    attempt: int = 1


# ---------------------------------------------------------------------------------------------
# Name hashing shared by the stages that map (site, tag) columns to codes without a join

SITE_HASH_SEED = 1
TAG_HASH_SEED = 2


def name_hashes(frame: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """64-bit hashes (uint64) of the `site` and `tag` of every row. Polars' fixed-seed hashes are stable
    within a process; whatever is keyed by them (the sequencer's marks, the rule engine's table of names)
    is rebuilt per process. A list of names hashes alike: `pl.Series(names).hash(seed=SITE_HASH_SEED)`."""
    h = frame.select(pl.col("site").hash(seed=SITE_HASH_SEED), pl.col("tag").hash(seed=TAG_HASH_SEED))
    return (h.get_column("site").to_numpy().astype(np.uint64, copy=False),
            h.get_column("tag").to_numpy().astype(np.uint64, copy=False))

