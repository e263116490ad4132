"""The AlarmManager: one open alarm per (site, rule_id, tag), driven by signals, user actions and a clock.

It owns the open alarms and the indexes around them and feeds the pure `lifecycle.step`; every decision
about a single alarm is made there. What lives here is what needs more than one alarm: which alarm a
signal belongs to, deterministic ids, maintenance windows, chattering and flood detection, and the heap
of timers that makes `tick` cheap with 100 000 open alarms.

Nothing here reads a clock: signals carry event time and every other call takes `now_ms`. Everything a
restart needs is in the alarm records (see the timer fields of `Alarm`), so a manager rebuilt from the
stored open alarms continues with the same ids, deadlines and tiers and fires nothing twice.

Decisions where the spec is silent:

- Closed alarms are not kept. An action on an alarm this manager closed (or saw closed in `history`)
  raises `AlarmClosed`, a `NotFound` subclass: the store holds closed alarms (comments on them go there,
  via `lifecycle.step(alarm, Comment(...))`). Unknown ids raise plain `NotFound`.
- A raise for a key whose last alarm was closed, at an event time not after that alarm's last signal,
  is a re-delivery and is ignored (it would otherwise reopen the closed alarm under the same id).
- A maintenance window suppresses alarms *raised or reactivated* (by event time) inside it. Alarms
  already announced when a window starts are left alone (shelve them). When a window ends, suppressed
  alarms that are still active are unsuppressed with a `reminded` event (a notice: they were never
  announced); cleared ones stay suppressed for the episode and are expected to be closed
  (`maintenance_test`).
- Chattering counts activations (raise + reactivations) of the key across episodes, in event time;
  it needs only the last `chatter_count - 1` times per key. Flood counts alarms raised at a site; the
  `flood_count + 1`-th within `flood_window_ms` and later ones get `flood = True`. Both limits are
  inclusive ("within 60 s" means a span of at most 60 s).
- Notices are not filtered for chattering or flood alarms: the flags travel with the alarm and the
  notify stage groups (product.md §7).
"""

from __future__ import annotations

import hashlib
import heapq
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from earlywarn.alarms.lifecycle import (
    NO_OP_VALUES,
    Ack,
    Close,
    Comment,
    Direction,
    Input,
    Outcome,
    Policy,
    Reason,
    Shelve,
    Unshelve,
    Unsuppress,
    fmt_ms,
    new_clear,
    new_raise,
    next_due_ms,
    open_alarm,
    run_timers,
    signal_floor_ms,
    step,
)
from earlywarn.config import AlarmsConfig
from earlywarn.errors import ActionError, NotFound
from earlywarn.model import (
    Alarm,
    AlarmEvent,
    AlarmState,
    Disposition,
    EventKind,
    MaintenanceWindow,
    Signal,
    SignalKind,
    Site,
)

Key = tuple[str, str, str]
"""(site, rule_id, tag): the identity of an alarm episode's source."""

#: Event kinds that deserve a notice (product.md §7), unless the alarm is shelved or suppressed.
NOTICE_KINDS: frozenset[EventKind] = frozenset(
    {EventKind.RAISED, EventKind.REACTIVATED, EventKind.ESCALATED, EventKind.REMINDED}
)

_NOTICE_VALUES = frozenset(k.value for k in NOTICE_KINDS)  # plain strings: Enum.__hash__ is slow
_RAISE = SignalKind.RAISE


def _event_order(s: Signal) -> tuple[int, str, str, str, bool]:
    """Event-time order of signals, whichever call of the rule engine produced them (raise first)."""
    return (s.ts_ms, s.site, s.rule_id, s.tag, s.kind is not _RAISE)
_REACTIVATED = Reason.REACTIVATED
_CLOSED = AlarmState.CLOSED
_AU, _AA = AlarmState.ACTIVE_UNACK, AlarmState.ACTIVE_ACK


def alarm_id_for(site: str, rule_id: str, tag: str, raised_at_ms: int) -> str:
    """The deterministic id of the alarm raised on (site, rule_id, tag) at `raised_at_ms`.

    A replay and the live run, or a run before and after a restart, give the same id.

    >>> alarm_id_for("s1", "r1", "t1", 0)
    'A924373572590c44d8cdf'
    """
    h = hashlib.sha256(f"{site}\x1f{rule_id}\x1f{tag}\x1f{raised_at_ms}".encode()).hexdigest()
    return "A" + h[:20]


class AlarmClosed(NotFound):
    """An action names an alarm that is closed: closed alarms live in the store, not in the manager."""

    def __init__(self, alarm_id: str) -> None:
        self.alarm_id = alarm_id
        super().__init__(
            f"alarm {alarm_id} is closed; closed alarms are kept by the store only (a comment goes there)"
        )


#: the alarm manager's name for a maintenance window
Window = MaintenanceWindow


@dataclass(slots=True)
class Changes:
    """What one call changed: each changed alarm once (its final state), the events in order, the notices.

    `notices` pairs each notice-worthy event with the alarm as it was right after that event.
    """

    alarms: list[Alarm] = field(default_factory=list)
    events: list[AlarmEvent] = field(default_factory=list)
    notices: list[tuple[Alarm, AlarmEvent]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.events)


class _Acc:
    """Collects Changes; an alarm changed several times appears once, at its first position."""

    __slots__ = ("alarms", "events", "notices")

    def __init__(self) -> None:
        self.alarms: dict[str, Alarm] = {}
        self.events: list[AlarmEvent] = []
        self.notices: list[tuple[Alarm, AlarmEvent]] = []

    def add(self, alarm: Alarm, events: Sequence[AlarmEvent]) -> None:
        self.alarms[alarm.alarm_id] = alarm
        self.events.extend(events)
        if alarm.shelved_until_ms is None and not alarm.suppressed:
            for ev in events:
                if ev.kind._value_ in _NOTICE_VALUES:
                    self.notices.append((alarm, ev))

    def build(self) -> Changes:
        return Changes(list(self.alarms.values()), self.events, self.notices)


class AlarmManager:
    """Holds the open alarms, one per (site, rule_id, tag), and applies signals, actions and timers.

    Args:
        sites: registered sites (plant / district are copied onto alarms; unknown sites get "").
        config: the `[alarms]` section.
        open_alarms: stored open alarms to continue with after a restart.
        windows: stored maintenance windows.
        history: recently closed alarms (e.g. the last day): they keep a re-delivered raise from
            reopening a closed alarm, and seed the chattering and flood counters.
        directions: rule_id -> "high" / "low" for `peak_value` (unknown: high).

    `stats` counts, since this manager started: `signals`; every `lifecycle.Reason` that came out of a
    step (`raised`, `cleared`, `already_active`, `stale_signal`, `escalated`, ...); `chattering` (episodes
    flagged), `flood` (alarms flagged), `clear_without_alarm`, and `timer_stuck` (should stay absent).
    """

    def __init__(
        self,
        sites: Mapping[str, Site],
        config: AlarmsConfig,
        *,
        open_alarms: Iterable[Alarm] = (),
        windows: Iterable[Window] = (),
        history: Iterable[Alarm] | None = None,
        directions: Mapping[str, Direction | str] | None = None,
    ) -> None:
        self.sites = dict(sites)
        self.config = config
        self.policy = Policy.from_config(config, directions)
        self.stats: dict[str, int] = {}
        self._alarms: dict[str, Alarm] = {}  # open alarms by id
        self._by_key: dict[Key, str] = {}  # the open alarm of each key
        self._closed: dict[Key, tuple[str, int]] = {}  # key -> (last closed id, its signal floor)
        self._closed_ids: dict[str, Key] = {}
        self._due: dict[str, int] = {}  # alarm id -> the due time it has in the heap
        self._heap: list[tuple[int, str]] = []
        self._windows: dict[str, dict[str, Window]] = {}  # site -> window id -> window
        self._window_ends: list[tuple[int, str, str]] = []  # (ends_ms, site, window id)
        self._suppressed: dict[str, set[str]] = {}  # site -> ids of open suppressed alarms
        self._recheck_sites: set[str] = set()
        self._chatter: dict[Key, list[int]] = {}  # last chatter_count - 1 activation times
        self._flood: dict[str, deque[int]] = {}  # last flood_count raise times per site
        for w in windows:
            self._put_window(w)
        restored = sorted((a for a in open_alarms if a.is_open), key=lambda a: a.raised_at_ms)
        restored_ids = {a.alarm_id for a in restored}
        past = sorted(
            (a for a in history or () if a.alarm_id not in restored_ids), key=lambda a: a.raised_at_ms
        )
        for a in past:
            if a.state is AlarmState.CLOSED:
                self._remember_closed(a)
        for a in sorted(past + restored, key=lambda a: a.raised_at_ms):
            self._note_activation((a.site, a.rule_id, a.tag), a.last_activation_ms or a.raised_at_ms)
            self._note_raise(a.site, a.raised_at_ms)
        for a in restored:
            self._put(a)
            if a.suppressed:
                # its window may have ended (or been deleted) while the engine was down: look at the first tick
                self._recheck_sites.add(a.site)

    # -- queries -----------------------------------------------------------------------------------

    def open_alarms(self) -> list[Alarm]:
        """Every open alarm, oldest first."""
        return sorted(self._alarms.values(), key=lambda a: (a.raised_at_ms, a.alarm_id))

    def get(self, alarm_id: str) -> Alarm:
        """The open alarm `alarm_id`; AlarmClosed / NotFound otherwise."""
        alarm = self._alarms.get(alarm_id)
        if alarm is None:
            if alarm_id in self._closed_ids:
                raise AlarmClosed(alarm_id)
            msg = f"no open alarm {alarm_id}"
            raise NotFound(msg)
        return alarm

    def find(self, site: str, rule_id: str, tag: str) -> Alarm | None:
        """The open alarm of (site, rule_id, tag), if any."""
        aid = self._by_key.get((site, rule_id, tag))
        return None if aid is None else self._alarms[aid]

    def __len__(self) -> int:
        return len(self._alarms)

    def windows(self) -> list[Window]:
        """The maintenance windows not yet ended (as of the last tick)."""
        return sorted((w for ws in self._windows.values() for w in ws.values()), key=lambda w: w.starts_ms)

    # -- signals -----------------------------------------------------------------------------------

    def apply_signals(self, signals: Sequence[Signal], now_ms: int) -> Changes:
        """Apply rule signals in order. A raise with no open alarm opens one; see lifecycle for the rest."""
        acc = _Acc()
        self._apply(signals, now_ms, acc)
        return acc.build()

    def apply_in_event_time(self, signals: Sequence[Signal], now_ms: int) -> Changes:
        """Replay: apply signals in event-time order, firing each timer at its own due time, before `now_ms`.

        Live, timers fire when the engine clock passes them (`tick`), at most one micro-batch late. A replay
        chunk spans hours of event time: ticking at its end would stamp an escalation hours late, and
        differently for every chunk size. Here the signals of each millisecond t are applied together,
        ordered by (site, rule, tag, raise first); before them every timer due before t fires, at its due
        time (`step` stamps a timer no earlier than the alarm's latest activity, so one a signal left
        overdue — a reactivation that un-muted an alarm whose ack deadline had passed — fires at that signal). Timers due at `now_ms` itself wait for the next
        call, since the readings of one millisecond can straddle two chunks. So any split of a stream into
        calls gives the same events, as long as no call holds signals older than an earlier call's `now_ms`
        (replay feeds ts-sorted chunks).
        """
        acc = _Acc()
        ordered = sorted(signals, key=_event_order)
        n = len(ordered)
        i = 0
        while i < n:
            ts = ordered[i].ts_ms
            self._fire_due(ts - 1, acc)
            j = i + 1
            while j < n and ordered[j].ts_ms == ts:
                j += 1
            self._apply(ordered[i:j], ts, acc)
            i = j
        self._fire_due(now_ms - 1, acc)
        if self._recheck_sites:  # a window removed meanwhile
            self._tick(now_ms - 1, acc)
        return acc.build()

    def _next_due(self) -> int | None:
        """The earliest timer or window end (superseded heap entries are dropped on the way)."""
        heap, due_of = self._heap, self._due
        while heap and due_of.get(heap[0][1]) != heap[0][0]:
            heapq.heappop(heap)
        due = heap[0][0] if heap else None
        if self._window_ends and (due is None or self._window_ends[0][0] < due):
            due = self._window_ends[0][0]
        return due

    def _fire_due(self, until_ms: int, acc: _Acc) -> None:
        """Tick at each due time up to `until_ms`, in order, so that each event carries its own time."""
        while (due := self._next_due()) is not None and due <= until_ms:
            self._tick(due, acc)

    def _apply(self, signals: Sequence[Signal], now_ms: int, acc: _Acc) -> None:
        stats = self.stats
        stats["signals"] = stats.get("signals", 0) + len(signals)
        alarms = self._alarms
        by_key = self._by_key
        policy = self.policy
        windows = self._windows
        for s in signals:
            key = (s.site, s.rule_id, s.tag)
            aid = by_key.get(key)
            if s.kind is _RAISE:
                if aid is None:
                    self._raise_new(key, s, acc)
                    continue
                alarm = alarms[aid]
                state = alarm.state
                if state is _AU or state is _AA:  # fast path of the common case: still active, nothing to do
                    stats["already_active"] = stats.get("already_active", 0) + 1
                    continue
                ts = s.ts_ms
                chattering = self._would_chatter(key, ts)
                window = self._window_reason(s.site, s.tag, ts) if windows else None
                inp = new_raise(ts, s.value, s.message, s.detail, window, chattering)
                out = step(alarm, inp, now_ms, policy)
                if out.reason is _REACTIVATED:
                    self._note_activation(key, ts)
                    if chattering and not alarm.chattering:
                        self._count("chattering")
                self._commit(out, acc, alarm)
            else:
                if aid is None:
                    self._count("clear_without_alarm")
                    continue
                alarm = alarms[aid]
                out = step(alarm, new_clear(s.ts_ms, s.value, s.detail), now_ms, policy)
                what = out.reason._value_
                stats[what] = stats.get(what, 0) + 1
                if what == "cleared":
                    # A clear moves active -> cleared keeping the ack state, flags, tier and timer fields,
                    # so `next_due_ms` (and the alarm's index entries) stay as they were: no reschedule.
                    new = out.alarm
                    alarms[aid] = new
                    acc.add(new, out.events)
                elif what not in NO_OP_VALUES:  # pragma: no cover - a clear either clears or is a no-op
                    self._commit(out, acc, alarm)

    def _raise_new(self, key: Key, s: Signal, acc: _Acc) -> None:
        closed = self._closed.get(key)
        if closed is not None and s.ts_ms <= closed[1]:
            self._count("stale_signal")
            return
        site = self.sites.get(s.site)
        chattering = self._would_chatter(key, s.ts_ms)
        flood = self._would_flood(s.site, s.ts_ms)
        window = self._window_reason(s.site, s.tag, s.ts_ms) if self._windows else None
        out = open_alarm(
            alarm_id_for(s.site, s.rule_id, s.tag, s.ts_ms),
            site=s.site,
            plant=site.plant if site else "",
            district=site.district if site else "",
            tag=s.tag,
            rule_id=s.rule_id,
            severity=s.severity,
            raise_=new_raise(s.ts_ms, s.value, s.message, s.detail, window, chattering),
            policy=self.policy,
            flood=flood,
        )
        self._note_activation(key, s.ts_ms)
        self._note_raise(s.site, s.ts_ms)
        if chattering:
            self._count("chattering")
        if flood:
            self._count("flood")
        self._commit(out, acc)

    # -- actions -----------------------------------------------------------------------------------

    def ack(self, alarm_id: str, actor: str, note: str, now_ms: int) -> Changes:
        """Acknowledge; twice is harmless (nothing recorded the second time)."""
        return self._act(alarm_id, Ack(actor, note), now_ms)

    def close(
        self, alarm_id: str, actor: str, disposition: Disposition | str, note: str, now_ms: int
    ) -> Changes:
        """Close out a cleared alarm with a disposition (`other` needs a note). The alarm leaves memory."""
        return self._act(alarm_id, Close(actor, disposition, note), now_ms)

    def comment(self, alarm_id: str, actor: str, note: str, now_ms: int) -> Changes:
        """Add a note to an open alarm."""
        return self._act(alarm_id, Comment(actor, note), now_ms)

    def shelve(self, alarm_id: str, actor: str, until_ms: int, reason: str, now_ms: int) -> Changes:
        """Shelve until `until_ms` (at most alarms.max_shelve from now), with a reason."""
        return self._act(alarm_id, Shelve(actor, until_ms, reason), now_ms)

    def unshelve(self, alarm_id: str, actor: str, note: str, now_ms: int) -> Changes:
        """End a shelve early; harmless when not shelved."""
        return self._act(alarm_id, Unshelve(actor, note), now_ms)

    def _act(self, alarm_id: str, inp: Input, now_ms: int) -> Changes:
        acc = _Acc()
        alarm = self.get(alarm_id)
        self._commit(step(alarm, inp, now_ms, self.policy), acc, alarm)
        return acc.build()

    # -- maintenance windows -----------------------------------------------------------------------

    def add_window(
        self,
        site: str,
        tag: str | None,
        starts_ms: int,
        ends_ms: int,
        reason: str,
        actor: str,
        created_at_ms: int = 0,
    ) -> Window:
        """Register a maintenance window; alarms raised inside it are suppressed. Returns it (to store)."""
        h = hashlib.sha256(
            f"{site}\x1f{tag or ''}\x1f{starts_ms}\x1f{ends_ms}\x1f{reason}".encode()
        ).hexdigest()
        wid = "W" + h[:20]
        if ends_ms <= starts_ms:
            raise ActionError(wid, "new", "a maintenance window must end after it starts")
        if not reason.strip():
            raise ActionError(wid, "new", "a maintenance window needs a reason")
        w = Window(wid, site, tag, starts_ms, ends_ms, reason.strip(), actor, created_at_ms)
        self._put_window(w)
        return w

    def remove_window(self, window_id: str) -> Window:
        """End a window now; alarms it suppressed are re-checked at the next tick."""
        for site, ws in self._windows.items():
            if window_id in ws:
                self._recheck_sites.add(site)
                return ws.pop(window_id)
        msg = f"no maintenance window {window_id}"
        raise NotFound(msg)

    def _put_window(self, w: Window) -> None:
        self._windows.setdefault(w.site, {})[w.window_id] = w
        heapq.heappush(self._window_ends, (w.ends_ms, w.site, w.window_id))

    def _still_covered(self, alarm: Alarm, now_ms: int) -> bool:
        """Whether a suppressed alarm stays suppressed: a live window covers now or its last activation.

        The activation may lie ahead of the engine clock (event time runs ahead of `now_ms`), so a window
        that starts after `now_ms` but covers the activation still holds it. The running manager and one
        restarted from the stored alarms both decide with this, so a restart changes nothing.
        """
        site, tag = alarm.site, alarm.tag
        return (
            self._window_reason(site, tag, now_ms) is not None
            or self._window_reason(site, tag, alarm.last_activation_ms or alarm.raised_at_ms) is not None
        )

    def _window_reason(self, site: str, tag: str, ts_ms: int) -> str | None:
        ws = self._windows.get(site)
        if not ws:
            return None
        for w in ws.values():
            if w.covers(site, tag, ts_ms):
                return f"maintenance window {w.window_id} until {fmt_ms(w.ends_ms)}: {w.reason}"
        return None

    # -- timers ------------------------------------------------------------------------------------

    def tick(self, now_ms: int) -> Changes:
        """Fire what is due at `now_ms`: window ends, shelve expiry, escalations, reminders.

        Idempotent for the same `now_ms`; "already done" comes from the alarm records, not from memory.
        """
        acc = _Acc()
        self._tick(now_ms, acc)
        return acc.build()

    def _tick(self, now_ms: int, acc: _Acc) -> None:
        ends = self._window_ends
        while ends and ends[0][0] <= now_ms:
            _, site, wid = heapq.heappop(ends)
            ws = self._windows.get(site)
            if ws is not None and wid in ws and ws[wid].ends_ms <= now_ms:
                del ws[wid]
                self._recheck_sites.add(site)
        if self._recheck_sites:
            sites, self._recheck_sites = self._recheck_sites, set()
            for site in sorted(sites):
                for aid in sorted(self._suppressed.get(site, ())):
                    alarm = self._alarms[aid]
                    if alarm.state.is_active and not self._still_covered(alarm, now_ms):
                        self._commit(step(alarm, Unsuppress(), now_ms, self.policy), acc)
        while self._heap and self._heap[0][0] <= now_ms:  # not a local: _schedule may rebuild the heap
            due_ms, aid = heapq.heappop(self._heap)
            if self._due.get(aid) != due_ms:
                continue  # superseded by a later reschedule, or the alarm is gone
            del self._due[aid]
            before = self._alarms[aid]
            alarm, events, reasons = run_timers(before, now_ms, self.policy)
            for r in reasons:
                self._count(r.value)
            if alarm is not before:
                self._alarms[aid] = alarm
                acc.add(alarm, events)
            due = next_due_ms(alarm, self.policy)
            if due is not None and due <= now_ms:  # pragma: no cover - a timer that did not move (a bug)
                # count it and look again next millisecond rather than spin in this loop
                self._count("timer_stuck")
                due = now_ms + 1
            if due is not None:
                self._due[aid] = due
                heapq.heappush(self._heap, (due, aid))

    # -- bookkeeping -------------------------------------------------------------------------------

    def _count(self, what: str) -> None:
        self.stats[what] = self.stats.get(what, 0) + 1

    def _commit(self, out: Outcome, acc: _Acc, prev: Alarm | None = None) -> None:
        """Keep the outcome of one step. `prev`: the alarm it started from, when it was already open."""
        stats = self.stats
        what = out.reason._value_
        stats[what] = stats.get(what, 0) + 1
        if what in NO_OP_VALUES:
            return
        alarm = out.alarm
        if alarm.state is _CLOSED:
            self._drop(alarm)
        elif prev is not None and prev.suppressed == alarm.suppressed:
            self._alarms[alarm.alarm_id] = alarm  # same key, same index entries: only the timer may move
            self._schedule(alarm)
        else:
            self._put(alarm)
        acc.add(alarm, out.events)

    def _put(self, alarm: Alarm) -> None:
        aid = alarm.alarm_id
        key = (alarm.site, alarm.rule_id, alarm.tag)
        self._alarms[aid] = alarm
        cur = self._by_key.get(key)
        if cur is None or cur == aid or self._alarms[cur].raised_at_ms <= alarm.raised_at_ms:
            self._by_key[key] = aid
        if alarm.suppressed:
            self._suppressed.setdefault(alarm.site, set()).add(aid)
        else:
            s = self._suppressed.get(alarm.site)
            if s:
                s.discard(aid)
        self._schedule(alarm)

    def _schedule(self, alarm: Alarm) -> None:
        due = next_due_ms(alarm, self.policy)
        aid = alarm.alarm_id
        if due is None:
            self._due.pop(aid, None)
        elif self._due.get(aid) != due:
            self._due[aid] = due
            heap = self._heap
            heapq.heappush(heap, (due, aid))
            if len(heap) > 2 * len(self._due) + 1024:
                # superseded entries wait in the heap until their time comes; with far deadlines (blue: a
                # day) they could pile up, so rebuild from the live ones now and then (amortised O(1))
                self._heap = [(d, i) for i, d in self._due.items()]
                heapq.heapify(self._heap)

    def _drop(self, alarm: Alarm) -> None:
        aid = alarm.alarm_id
        key = (alarm.site, alarm.rule_id, alarm.tag)
        self._alarms.pop(aid, None)
        if self._by_key.get(key) == aid:
            del self._by_key[key]
        self._due.pop(aid, None)
        s = self._suppressed.get(alarm.site)
        if s:
            s.discard(aid)
        self._remember_closed(alarm)

    def _remember_closed(self, alarm: Alarm) -> None:
        key = (alarm.site, alarm.rule_id, alarm.tag)
        prev = self._closed.get(key)
        floor = signal_floor_ms(alarm)
        if prev is not None:
            if prev[1] > floor:
                return
            self._closed_ids.pop(prev[0], None)
        self._closed[key] = (alarm.alarm_id, floor)
        self._closed_ids[alarm.alarm_id] = key

    def _would_chatter(self, key: Key, ts_ms: int) -> bool:
        n = self.config.chatter_count
        if n <= 1:
            return True
        prev = self._chatter.get(key)
        return (
            prev is not None
            and len(prev) >= n - 1
            and ts_ms - prev[-(n - 1)] <= self.config.chatter_window_ms
        )

    def _note_activation(self, key: Key, ts_ms: int) -> None:
        keep = self.config.chatter_count - 1
        if keep <= 0:
            return
        prev = self._chatter.get(key)
        if prev is None:
            self._chatter[key] = [ts_ms]
        else:
            prev.append(ts_ms)
            if len(prev) > keep:
                del prev[0]

    def _would_flood(self, site: str, ts_ms: int) -> bool:
        dq = self._flood.get(site)
        n = self.config.flood_count
        return dq is not None and len(dq) >= n and ts_ms - dq[0] <= self.config.flood_window_ms

    def _note_raise(self, site: str, ts_ms: int) -> None:
        dq = self._flood.get(site)
        if dq is None:
            dq = self._flood[site] = deque(maxlen=self.config.flood_count)
        dq.append(ts_ms)


__all__ = [
    "NOTICE_KINDS",
    "AlarmClosed",
    "AlarmManager",
    "Changes",
    "Key",
    "Window",
    "alarm_id_for",
]

