"""The Dispatcher: pacing (grouping, de-duplication), routing, signing links, and handing deliveries out.

Alertmanager's pipeline, in one object driven by an injected clock:

    submit(items)  ->  decide (shelved / suppressed / closed / acked?)  ->  dedup (notification log)
                   ->  group by (site, reason, tier, audience) for group_wait_ms
    flush(now_ms)  ->  close due groups into Notices  ->  record in the log  ->  sign ack links
                   ->  one Delivery per recipient  ->  Executor (worker lanes, bounded queues, never blocks)
    worker         ->  channel.send  ->  NoticeRecord per alarm  ->  retry on the clock with backoff / dead letter

All methods except the worker callback are meant for the pipeline thread; the worker only touches the
lock-protected retry heap, records and metrics.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from earlywarn.clock import Clock
from earlywarn.config import AlarmsConfig, NotifyConfig
from earlywarn.metrics import Metrics
from earlywarn.model import Alarm, AlarmEvent, AlarmState, EventKind, NoticeRecord, Severity, Site, Tier

from .channels import Channel, DeliveryError
from .delivery import Delivery, Executor, InlineExecutor, RetryPolicy
from .links import ALL_ALARMS, LinkSigner, ack_url
from .nflog import NoticeKey, NotificationLog
from .notice import REASON_OF_EVENT, Notice, NoticeAlarm, NoticeReason, Recipient, make_notice_id
from .routing import Decision, audience, decide, parse_tiers, recipients

log = logging.getLogger("earlywarn.notify")

_REASON_KIND = {reason: kind for kind, reason in REASON_OF_EVENT.items()}
#: Recipients whose copy of a notice needs no acknowledge links (they never show them).
_NO_LINKS = frozenset({"log"})


@dataclass(slots=True)
class _Item:
    alarm: Alarm
    event_ts_ms: int
    keys: list[NoticeKey]


@dataclass(slots=True)
class _Group:
    site: str
    reason: NoticeReason
    tier: Tier
    tiers: frozenset[Tier]
    window_start_ms: int
    due_ms: int
    items: dict[str, _Item] = field(default_factory=dict)


GroupKey = tuple[str, NoticeReason, Tier, frozenset[Tier]]


def recovery_items(open_alarms: Iterable[Alarm]) -> list[tuple[Alarm, AlarmEvent]]:
    """What to submit once after a start, so notices lost in a crash (prepared but not logged) still go out.

    For each open alarm: its raise, its latest reactivation, and its current escalation. The notification
    log drops every one that was already notified, so this is harmless when nothing was lost. Reminders are
    not re-offered: the alarm manager sends the next one an interval later anyway.
    """
    items: list[tuple[Alarm, AlarmEvent]] = []
    for a in open_alarms:
        items.append((a, AlarmEvent(a.alarm_id, a.raised_at_ms, EventKind.RAISED, "recovery")))
        if a.occurrences > 1 and a.last_activation_ms:
            items.append((a, AlarmEvent(a.alarm_id, a.last_activation_ms, EventKind.REACTIVATED, "recovery")))
        if a.escalation_tier > Tier.PLANT:
            ts_ms = a.last_reminded_ms or a.raised_at_ms
            items.append((a, AlarmEvent(a.alarm_id, ts_ms, EventKind.ESCALATED, "recovery")))
    return items


class Dispatcher:
    """Turns notice-worthy alarm events into paced, routed, recorded deliveries.

    Args:
        sites: site id -> Site (contacts by tier).
        config: [notify] (group_wait_ms and group_wait_by_severity_ms, webhook URLs and retry settings).
        alarms_config: [alarms] (ack deadlines per severity, red_immediate_tiers).
        channels: channel name ("mqtt", "webhook", "email", "log") -> Channel. Only these are used.
        log: the notification log (persistent in the pipeline, InMemoryNotificationLog in tests).
        clock: the engine clock; stamps attempts and schedules retries.
        link_signer: signs acknowledge links; with `public_url`, notices carry `ack_url`s.
        public_url: the HTTP API's public base URL (HttpConfig.public_url); "" = no links.
        metrics: earlywarn_notices_total{channel,outcome} and notice latency, when given.
        executor: where deliveries run. Default InlineExecutor (deterministic, for tests and replays);
            the live pipeline passes a ThreadedExecutor so delivery never blocks ingest.
        retry: the retry policy for every channel; default from [notify.webhook].
        group_wait_ms_by_severity: a shorter (or longer) grouping window per severity, e.g. {RED: 1000}:
            a group closes at the earliest window of its members. Default: `config.group_wait_by_severity_ms`
            ([notify.group_wait_by_severity]), then `config.group_wait_ms` for the severities it leaves out;
            given here, it overrides both for the severities it names.
    """

    def __init__(
        self,
        sites: Mapping[str, Site],
        config: NotifyConfig,
        alarms_config: AlarmsConfig,
        *,
        channels: Mapping[str, Channel],
        log: NotificationLog,
        clock: Clock,
        link_signer: LinkSigner | None = None,
        public_url: str = "",
        metrics: Metrics | None = None,
        executor: Executor | None = None,
        retry: RetryPolicy | None = None,
        group_wait_ms_by_severity: Mapping[Severity, int] | None = None,
    ) -> None:
        self._sites = sites
        self.config = config
        self._deadlines = alarms_config.deadlines
        self._red_immediate = parse_tiers(alarms_config.red_immediate_tiers)
        self._channels = dict(channels)
        self._log = log
        self._clock = clock
        self._signer = link_signer
        self._public_url = public_url
        self._metrics = metrics
        self._retry = retry or RetryPolicy.from_config(config.webhook)
        self._wait_ms = {sev: config.group_wait_ms for sev in Severity}
        self._wait_ms.update(config.group_wait_by_severity_ms)
        self._wait_ms.update(group_wait_ms_by_severity or {})
        self._executor: Executor = executor or InlineExecutor()
        self._executor.start(self._attempt)
        # pipeline-thread state
        self._groups: dict[GroupKey, _Group] = {}
        self._pending: set[NoticeKey] = set()
        self._in_groups: dict[str, int] = {}  # alarm_id -> number of open groups holding it
        self._latest: dict[str, Alarm] = {}  # newest snapshot of alarms in open groups
        self._backlog: deque[Delivery] = deque()
        self._routes: dict[tuple[str, frozenset[Tier]], tuple[Site | None, tuple[Recipient, ...]]] = {}
        # shared with workers
        self._lock = threading.Lock()
        self._retries: list[tuple[int, int, Delivery]] = []
        self._seq = itertools.count()
        self._records: list[NoticeRecord] = []
        self._counters: dict[tuple[str, str], Any] = {}  # (channel, outcome) -> child of earlywarn_notices_total
        #: counts of events not turned into notices, by Decision (and "duplicate"); for tests and diagnostics
        self.skipped: dict[str, int] = {}

    # -------------------------------------------------------------------------------- pacing

    def submit(self, items: Sequence[tuple[Alarm, AlarmEvent]]) -> None:
        """Take alarm events. Notice-worthy ones join a group; every event refreshes its alarm's snapshot,
        so an alarm shelved or acknowledged inside the window is re-checked at flush."""
        now_ms = self._clock.now_ms()
        closed: list[str] = []
        for alarm, event in items:
            if alarm.alarm_id in self._in_groups:
                self._latest[alarm.alarm_id] = alarm
            if alarm.state is AlarmState.CLOSED and alarm.alarm_id not in self._in_groups:
                closed.append(alarm.alarm_id)
            decision = decide(alarm, event.kind, now_ms)
            if decision is not Decision.NOTIFY:
                if decision is not Decision.NOT_A_NOTICE:
                    self._skip(decision.value)
                continue
            reason = REASON_OF_EVENT[event.kind]
            # A raise happens once per alarm and always starts at the plant; keying it by the alarm's current
            # tier would let a recovery re-offer (see recovery_items) re-send it after an escalation.
            tier = Tier.PLANT if reason is NoticeReason.RAISED else alarm.escalation_tier
            key = NoticeKey.of(alarm.alarm_id, reason.value, tier.label, event.ts_ms)
            if key in self._pending or self._log.seen(*key):
                self._skip("duplicate")
                continue
            tiers = audience(alarm, reason, self._red_immediate)
            gkey: GroupKey = (alarm.site, reason, tier, tiers)
            group = self._groups.get(gkey)
            # The window counts from the raise (product.md §7: alarms *raised* within it are coalesced), not
            # from when the engine got round to it: the queue and the step that raised it are inside the
            # window, not added on top. An event older than its window goes out at the next flush; one
            # stamped ahead of the engine clock (a device clock running fast) waits the whole window.
            due_ms = max(now_ms, min(now_ms, event.ts_ms) + self._wait_ms[alarm.severity])
            if group is None:
                group = _Group(alarm.site, reason, tier, tiers, now_ms, due_ms)
                self._groups[gkey] = group
            elif due_ms < group.due_ms:  # a member with a shorter window (red) pulls the group forward
                group.due_ms = due_ms
            item = group.items.get(alarm.alarm_id)
            if item is None:
                group.items[alarm.alarm_id] = _Item(alarm, event.ts_ms, [key])
                self._in_groups[alarm.alarm_id] = self._in_groups.get(alarm.alarm_id, 0) + 1
            else:  # the same alarm again in one window (a chattering reactivation): one entry, newest event
                item.alarm, item.event_ts_ms = alarm, max(item.event_ts_ms, event.ts_ms)
                item.keys.append(key)
            self._latest[alarm.alarm_id] = alarm
            self._pending.add(key)
        if closed:  # a closed alarm notifies no more: its notification-log keys would only take memory
            self._log.forget(closed)

    def refresh(self, alarms: Iterable[Alarm]) -> None:
        """Newest snapshots of alarms (e.g. AlarmManager `Changes.alarms`, or an ack from the API): an alarm
        waiting in an open group that got shelved, suppressed, closed or acknowledged meanwhile is re-checked
        on this snapshot when its group closes."""
        for alarm in alarms:
            if alarm.alarm_id in self._in_groups:
                self._latest[alarm.alarm_id] = alarm

    def next_due_ms(self) -> int | None:
        """When flush next has something to do (a group closing or a retry due); None when idle."""
        dues = [g.due_ms for g in self._groups.values()]
        with self._lock:
            if self._retries:
                dues.append(self._retries[0][0])
        if self._backlog:
            dues.append(self._clock.now_ms())
        return min(dues) if dues else None

    def flush(self, now_ms: int, *, all_groups: bool = False) -> list[Notice]:
        """Close the groups whose window has passed, hand their deliveries (and due retries) to the executor.

        Returns the notices prepared by this call. Call it often (every pipeline tick, or at next_due_ms()).
        `all_groups` closes every open group now, whatever its window (shutdown).
        """
        notices: list[Notice] = []
        for gkey in [k for k, g in self._groups.items() if all_groups or g.due_ms <= now_ms]:
            notice = self._close(self._groups.pop(gkey), now_ms)
            if notice is not None:
                notices.append(notice)
                self._backlog.extend(Delivery(notice, r, 1, now_ms) for r in notice.recipients)
        with self._lock:
            while self._retries and self._retries[0][0] <= now_ms:
                self._backlog.append(heapq.heappop(self._retries)[2])
        if self._backlog:
            # those whose lane is full stay for the next flush: never block the pipeline, and a full lane
            # (a hanging webhook) holds up only its own channel
            self._backlog = deque(self._executor.offer_many(list(self._backlog)))
        return notices

    def _close(self, group: _Group, now_ms: int) -> Notice | None:
        """A group's window has passed: re-check each alarm on its newest snapshot, then build the notice."""
        kind = _REASON_KIND[group.reason]
        kept: list[NoticeAlarm] = []
        keys: list[NoticeKey] = []
        for alarm_id, item in group.items.items():
            self._pending.difference_update(item.keys)
            alarm = self._latest.get(alarm_id, item.alarm)
            left = self._in_groups.get(alarm_id, 1) - 1
            if left <= 0:
                self._in_groups.pop(alarm_id, None)
                self._latest.pop(alarm_id, None)
            else:
                self._in_groups[alarm_id] = left
            decision = decide(alarm, kind, now_ms)
            if decision is not Decision.NOTIFY:
                self._skip(decision.value)
                continue
            kept.append(NoticeAlarm(alarm, item.event_ts_ms, self._ack_deadline_ms(alarm)))
            keys.extend(item.keys)
        if not kept:
            return None
        kept.sort(key=lambda na: (na.alarm.severity.rank, na.alarm.raised_at_ms, na.alarm.alarm_id))
        # the events' times are part of the identity: a reactivation re-offered after a restart within the
        # same window is a different notice from the one already sent and must not reuse its id
        notice_id = make_notice_id(
            group.site, group.reason.value, group.tier, [f"{na.alarm.alarm_id}@{na.event_ts_ms}" for na in kept],
            group.window_start_ms,
        )
        site = self._sites.get(group.site)
        to = self._recipients(site, group.site, group.tiers)
        notice = Notice(
            notice_id=notice_id,
            site=group.site,
            site_name=site.name if site else group.site,
            reason=group.reason,
            tier=group.tier,
            alarms=tuple(kept),
            window_start_ms=group.window_start_ms,
            prepared_ms=now_ms,
            recipients=to,
            ack_urls=self._sign(notice_id, kept, to, now_ms),
        )
        for key in keys:
            self._log.record(*key, notice_id, now_ms)
        return notice

    def _recipients(self, site: Site | None, site_id: str, tiers: frozenset[Tier]) -> tuple[Recipient, ...]:
        """routing.recipients, remembered per (site, tiers): the same few routes come back for every notice of a
        flood (a Site is frozen; a site replaced in the mapping is routed afresh)."""
        key = (site_id, tiers)
        hit = self._routes.get(key)
        if hit is not None and hit[0] is site:
            return hit[1]
        to = recipients(site, site_id, tiers, channels=self._channels, global_webhooks=self.config.webhook.urls)
        self._routes[key] = (site, to)
        return to

    def _ack_deadline_ms(self, alarm: Alarm) -> int | None:
        """The next ack deadline, as the alarm lifecycle counts it: from the start of the unacknowledged period,
        one ack interval per escalation already done; None when the severity has no ack deadline."""
        ack_ms = self._deadlines[alarm.severity].ack_ms
        if ack_ms <= 0:
            return None
        start = alarm.unacked_since_ms if alarm.unacked_since_ms is not None else alarm.raised_at_ms
        return start + ack_ms * (alarm.ack_escalations + 1)

    def _sign(
        self, notice_id: str, alarms: list[NoticeAlarm], to: tuple[Recipient, ...], now_ms: int
    ) -> dict[str, dict[str, str]]:
        if self._signer is None or not self._public_url:
            return {}
        out: dict[str, dict[str, str]] = {}
        for r in to:
            if r.channel in _NO_LINKS:
                continue
            links = {
                na.alarm.alarm_id: ack_url(self._public_url, self._signer.make(na.alarm.alarm_id, r.key, notice_id,
                                                                              now_ms))
                for na in alarms
            }
            # The notice-level link: the alarm's own for a single alarm, otherwise "all alarms of this notice".
            links[ALL_ALARMS] = (
                next(iter(links.values())) if len(alarms) == 1
                else ack_url(self._public_url, self._signer.make(ALL_ALARMS, r.key, notice_id, now_ms))
            )
            out[r.key] = links
        return out

    def _skip(self, why: str) -> None:
        self.skipped[why] = self.skipped.get(why, 0) + 1

    # -------------------------------------------------------------------------------- delivery (worker side)

    def _attempt(self, d: Delivery) -> None:
        """Run one attempt of one delivery; record it; schedule a retry or give up. Runs on a worker."""
        channel = self._channels.get(d.channel)
        now_ms = self._clock.now_ms()
        if self._metrics is not None and d.attempt == 1:
            for na in d.notice.alarms:
                self._metrics.notice_latency.observe(max(0, now_ms - na.event_ts_ms) / 1000)
        error = ""
        try:
            if channel is None:
                raise DeliveryError(f"no channel {d.channel!r}", recoverable=False)
            channel.send(d.notice, d.recipient)
            outcome = "delivered"
        except DeliveryError as e:
            error, recoverable = str(e), e.recoverable
            outcome = self._after_failure(d, recoverable, now_ms)
        except Exception as e:  # a bug in a channel must not kill the worker; treat it as transient
            log.exception("notify channel %s crashed", d.channel)
            error = f"{type(e).__name__}: {e}"
            outcome = self._after_failure(d, True, now_ms)
        if outcome != "delivered":
            log.warning("notice %s to %s attempt %d: %s (%s)", d.notice.notice_id, d.recipient.key, d.attempt,
                        outcome, error)
        n, tier, reason = d.notice, d.notice.tier.label, d.notice.reason.value
        # positional: (notice_id, alarm_id, channel, recipient, tier, reason, sent_at_ms, outcome, error, attempt)
        records = [
            NoticeRecord(n.notice_id, na.alarm.alarm_id, d.channel, d.recipient.address, tier, reason, now_ms,
                         outcome, error, d.attempt)
            for na in n.alarms
        ]
        with self._lock:
            self._records.extend(records)
        if self._metrics is not None:
            counter = self._counters.get((d.channel, outcome))
            if counter is None:  # labels() takes a lock and builds a key each time: once per (channel, outcome)
                counter = self._counters[(d.channel, outcome)] = self._metrics.notices.labels(
                    channel=d.channel, outcome=outcome)
            counter.inc()

    def _after_failure(self, d: Delivery, recoverable: bool, now_ms: int) -> str:
        if not recoverable:
            return "failed"
        if d.attempt >= self._retry.max_attempts:
            return "dead_letter"
        retry = Delivery(d.notice, d.recipient, d.attempt + 1, now_ms + self._retry.backoff_ms(d.attempt))
        with self._lock:
            heapq.heappush(self._retries, (retry.due_ms, next(self._seq), retry))
        return "retrying"

    # -------------------------------------------------------------------------------- hand-off

    def drain_records(self) -> list[NoticeRecord]:
        """Every attempt recorded since the last call (rows for the `notices` table)."""
        with self._lock:
            out, self._records = self._records, []
        return out

    def pending(self) -> dict[str, int]:
        """Sizes of the internal queues: open groups, backlog, scheduled retries."""
        with self._lock:
            retries = len(self._retries)
        return {"groups": len(self._groups), "backlog": len(self._backlog), "retries": retries}

    def wait_idle(self, timeout_s: float) -> bool:
        """Wait until the executor has run everything offered so far (tests, shutdown)."""
        return self._executor.wait_idle(timeout_s)

    def close(self, timeout_s: float = 5.0, *, send_open_groups: bool = True) -> None:
        """Shut down: send the groups still waiting out their window (unless told not to), let the executor
        finish what it holds (up to `timeout_s`), then stop it. Retries still scheduled are dropped: their
        earlier attempts are recorded as `retrying`.

        After a crash (no close), nothing is lost either if the pipeline, on start, submits the latest
        notice-worthy event of every open alarm: the notification log drops those already notified.
        """
        if send_open_groups and self._groups:
            self.flush(self._clock.now_ms(), all_groups=True)
            while self._backlog and self._executor.wait_idle(timeout_s):
                before = len(self._backlog)
                self.flush(self._clock.now_ms())
                if len(self._backlog) >= before:
                    break  # the executor takes nothing more (closed): give up rather than spin
        self._executor.close(timeout_s)
