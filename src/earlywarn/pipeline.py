"""Wiring: builds the stages from config and runs them.

    ingest (paho thread) -> queue -> [engine thread] collect -> decode -> sequence -> rules -> alarms
        -> store (one transaction) -> ack to the broker -> notify

The engine thread is the only writer: user actions from the HTTP API are queued to it and answered once
committed, so the alarm manager and the DuckDB connection never need locks. Acknowledgements to the broker
go out only after the commit that contains the message's readings (and every signal, alarm change and
reject derived from them): a crash at any moment loses nothing the broker considers delivered.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from earlywarn.alarms.manager import AlarmManager, Window
from earlywarn.batch import Sequencer, Split, collect
from earlywarn.clock import Clock, SystemClock
from earlywarn.config import Config, load_sites, shipped_rules_dir
from earlywarn.decode import Decoder
from earlywarn.errors import StoreError
from earlywarn.metrics import Metrics
from earlywarn.model import (
    Alarm,
    AlarmEvent,
    NoticeRecord,
    RawMessage,
    ReadingBatch,
    Reject,
    Signal,
    Site,
)
from earlywarn.rules.engine import NameCodes, RuleEngine
from earlywarn.rules.state import EngineState
from earlywarn.rules.spec import load_packs, rules_for_sites
from earlywarn.rules.types import RuleSpec
from earlywarn.store import CommitBatch, Store

log = logging.getLogger("earlywarn.pipeline")

RULES_STATE_KEY = "rules"
_BYTES_PER_READING = 48


@dataclass
class Action:
    """A user action queued for the engine thread; `done` resolves after the commit."""

    apply: Callable[[AlarmManager, int], Any]  # (manager, now_ms) -> Changes
    done: Future[Any] = field(default_factory=Future)


@dataclass
class StepResult:
    messages: int = 0
    readings: int = 0
    stored: int = 0
    rejects: int = 0
    signals: int = 0
    late: int = 0
    duplicates: int = 0
    batch_seq: int = 0
    #: a replay chunk committed in the background: resolves to its CommitResult (see run_replay)
    pending: Future[Any] | None = None


@dataclass
class PendingStep:
    """A step evaluated and applied, its CommitBatch built; what is left to do after its commit."""

    cb: CommitBatch
    split: Split
    readings: int
    rejects: int
    signals: list[Signal]
    alarms: list[Alarm]
    events: list[AlarmEvent]
    notices: list[tuple[Alarm, AlarmEvent]]
    action_results: list[tuple[Action, Any]]
    now_ms: int
    t0: float
    timings: dict[str, float]
    messages: int = 0
    #: the consistent copy of the rule state this step leaves (RuleEngine.snapshot_parts, begin_messages);
    #: packed into snapshot bytes off the engine thread once the step is committed (finish_step)
    snapshot: tuple[dict[str, Any], dict[str, Any]] | None = None
    future: Future[Any] | None = None  # its commit on the committer thread (begin_messages)


class Engine:
    """Everything after ingest, run by one thread: decode -> sequence -> rules -> alarms -> store."""

    def __init__(
        self,
        cfg: Config,
        *,
        sites: Mapping[str, Site],
        site_rules: Mapping[str, Sequence[RuleSpec]],
        store: Store,
        clock: Clock | None = None,
        metrics: Metrics | None = None,
        replay: bool = False,
        dispatcher: Any = None,
    ) -> None:
        self.cfg = cfg
        self.sites = dict(sites)
        self.site_rules = dict(site_rules)
        self.store = store
        self.clock = clock or SystemClock()
        self.metrics = metrics or Metrics()
        self.replay = replay
        self.dispatcher = dispatcher
        ic = cfg.ingest
        self.decoder = Decoder(
            known_sites=None if ic.accept_unknown_sites else frozenset(self.sites),
            accept_unknown_sites=ic.accept_unknown_sites,
            max_future_ms=ic.max_future_ms,
            max_payload_bytes=ic.max_payload_bytes,
        )
        self.sequencer = Sequencer(store.last_ts_by_sensor())
        self.rules = self._restore_rules()
        self.alarms = AlarmManager(
            self.sites,
            cfg.alarms,
            open_alarms=store.open_alarms(),
            # recently closed alarms: a redelivered raise must not reopen them, and they seed the
            # chattering and flood counters
            history=store.list_alarms(state="closed", limit=10_000),
            windows=store.maintenance_windows(),
        )
        self.metrics.open_alarms.set(len(self.alarms))
        self._event_clock_ms = 0  # newest event time seen (the engine clock of a replay)
        self._last_checkpoint_mono = time.monotonic()
        self._snapshot_seq = store.batch_seq  # batch of the newest rule-state snapshot taken by this engine
        self._committer: Any = None  # replay: the thread committing chunk k while chunk k + 1 is evaluated
        self._commits_submitted = self._commits_started = 0
        self._packer: Any = None  # the thread that packs rule-state snapshots and hands them to the store
        self._packing: Future[Any] | None = None  # the newest snapshot handed to it
        self._pending_notices: list[NoticeRecord] = []
        #: per-step timings for benchmarks and debugging (None: off). A list gets one dict per step:
        #: seconds spent in each stage (see process_batch and Runner._loop) and the step's sizes.
        self.trace: list[dict[str, float]] | None = None

    # -- restart -------------------------------------------------------------------------------------

    def _restore_rules(self) -> RuleEngine:
        saved = self.store.load_state(RULES_STATE_KEY)
        if saved is None:
            engine = RuleEngine(self.site_rules)
            since = 0
        else:
            blob, since = saved
            try:
                engine = RuleEngine.restore(self.site_rules, blob)
            except Exception:  # rules changed incompatibly since the snapshot: start fresh, say so
                log.warning("rule-state snapshot does not fit the current rules; starting with fresh rule state")
                return RuleEngine(self.site_rules)
        # Re-evaluate what was committed after the snapshot at the engine clock of its commit: this
        # reproduces the rule state exactly. Its signals were committed with those batches already.
        n = 0
        for now_ms, batch in self.store.batches_since(since):
            engine.evaluate(batch, now_ms)
            n += len(batch)
        if n:
            log.info("rule state caught up over %d readings committed after the last snapshot", n)
        return engine

    # -- one step --------------------------------------------------------------------------------------

    def now_ms(self) -> int:
        if self.replay:
            return self._event_clock_ms
        return self.clock.now_ms()

    def process_messages(self, messages: Sequence[RawMessage], actions: Sequence[Action] = ()) -> StepResult:
        """Decode and process a list of MQTT messages; returns after the commit."""
        t0 = time.perf_counter()
        now_ms = self.clock.now_ms()
        decoded = self.decoder.decode(messages, now_ms)
        t_decode = time.perf_counter() - t0
        res = self.process_batch(decoded.batch, decoded.rejects, actions=actions)
        res.messages = len(messages)
        if self.trace is not None and self.trace:
            self.trace[-1]["decode"] = t_decode
            self.trace[-1]["messages"] = len(messages)
        return res

    def process_batch(
        self,
        batch: ReadingBatch,
        rejects: Sequence[Reject] = (),
        *,
        actions: Sequence[Action] = (),
        store_readings: bool = True,
        split: Split | None = None,
        commit_in_background: bool = False,
    ) -> StepResult:
        """Sequence, evaluate, apply to alarms and commit one batch of decoded readings.

        Replay only: `split` is the batch already sequenced by the caller (run_replay: every reading of a
        sorted, deduplicated input into a store without readings is fresh), and `commit_in_background`
        hands the commit to one committer thread (commits stay in order) and returns at once with the
        commit's future in `pending`, so that the store inserts this chunk while the rules evaluate the next.
        """
        if commit_in_background and (actions or self.dispatcher is not None or not self.replay):
            msg = "commit_in_background is for replay chunks only"
            raise ValueError(msg)
        step = self._prepare(batch, rejects, actions, store_readings, split)
        if step is None:
            return StepResult()
        m = self.metrics
        if commit_in_background:
            fut = self._submit_commit(self._commit_pooled, step.cb)
            self.sequencer.advance(step.split)  # in-memory marks; a failed commit fails the whole replay
            for s in step.signals:
                m.signals.labels(s.kind.value).inc()
            for e in step.events:
                m.alarm_events.labels(e.kind.value).inc()
            m.open_alarms.set(len(self.alarms))
            m.batch_readings.observe(step.readings)
            return StepResult(readings=step.readings, rejects=step.rejects, signals=len(step.signals),
                              duplicates=step.split.in_batch_dups, pending=fut)
        t_commit = time.perf_counter()
        committed = self._commit(step.cb)
        self.sequencer.advance(step.split)
        t_snapshot = time.perf_counter()
        self._maybe_snapshot(committed.batch_seq, step.now_ms)
        step.timings["commit"] = t_snapshot - t_commit
        step.timings["snapshot"] = time.perf_counter() - t_snapshot
        return self._finish(step, committed)

    def begin_messages(
        self, messages: Sequence[RawMessage], actions: Sequence[Action] = (), *,
        between: Callable[[], None] | None = None,
    ) -> PendingStep | None:
        """The live runner's step, pipelined: decode, sequence, evaluate and apply `messages` (and
        `actions`), then hand the commit to the committer thread and return without waiting for it.

        The caller must pass every returned step to `finish_step`, in order, before acknowledging its
        messages; while the store commits this step the caller may collect and begin the next one
        (DuckDB and the rule kernels release the GIL). Commits run on one thread, so they keep their
        order, and nothing is acknowledged, answered or notified before its commit returns. The
        in-memory sequencer marks move at once (as in a replay): the next step's possible copies of
        these readings are checked against the store by a commit that runs after this one.
        Returns None when nothing happened (no readings, rejects, signals, actions or changes).

        `between` is called after the decode and after the rules (before this step touches the alarms):
        the runner finishes the previous step there once its commit is done, so its acknowledgements and
        notices do not wait for this whole step.
        """
        t0 = time.perf_counter()
        decoded = self.decoder.decode(messages, self.clock.now_ms())
        t_decode = time.perf_counter() - t0
        if between is not None:
            between()
        step = self._prepare(decoded.batch, decoded.rejects, actions, True, None, between)
        if step is None:
            return None
        step.messages = len(messages)
        step.timings["decode"] = t_decode
        self.sequencer.advance(step.split)
        if self._snapshot_due(step):
            # the rule state this step leaves, copied before the next step is evaluated; packed and handed
            # to the store with this step's batch_seq once the commit returns (finish_step)
            t = time.perf_counter()
            step.snapshot = self.rules.snapshot_parts()
            self._last_checkpoint_mono = time.monotonic()
            step.timings["snapshot"] = time.perf_counter() - t
        step.future = self._submit_commit(self._commit_step, step)
        return step

    def _submit_commit(self, fn: Callable[..., Any], arg: Any) -> Future[Any]:
        self._commits_submitted += 1  # written by the engine thread only
        return self._committer_pool().submit(fn, arg)

    def _commit_pooled(self, cb: CommitBatch) -> Any:  # on the committer thread
        self._commits_started += 1  # written by the committer thread only
        return self._commit(cb)

    def _more_commits_queued(self) -> bool:
        """Another step's commit waits behind the one running (asked by the store right after COMMIT)."""
        return self._commits_submitted > self._commits_started

    def _commit_step(self, step: PendingStep) -> Any:  # on the committer thread
        self._commits_started += 1
        t = time.perf_counter()
        res = self._commit(step.cb)
        step.timings["commit"] = time.perf_counter() - t  # read after the future resolved
        step.timings["commit_at"] = t
        return res

    def finish_step(self, step: PendingStep) -> StepResult:
        """Wait for the commit of a step from `begin_messages`, then what follows a commit: the rule-state
        snapshot handed to the store, actions answered, notices handed to the dispatcher, metrics."""
        assert step.future is not None
        t = time.perf_counter()
        committed = step.future.result()
        step.timings["commit_wait"] = time.perf_counter() - t
        if step.snapshot is not None:
            self._pack_later(step.snapshot, committed.batch_seq, step.now_ms)
            step.snapshot = None
        res = self._finish(step, committed)
        res.messages = step.messages
        return res

    def _committer_pool(self) -> Any:
        if self._committer is None:
            from concurrent.futures import ThreadPoolExecutor

            self._committer = ThreadPoolExecutor(1, thread_name_prefix="earlywarn-commit")
        return self._committer

    def _pack_later(self, parts: tuple[dict[str, Any], dict[str, Any]], batch_seq: int, now_ms: int) -> None:
        """Hand the parts of a rule-state snapshot of the state committed batch `batch_seq` left to the
        packer thread: it packs them into bytes (the JSON text and the npz archive, 10-30 ms for a few MB
        that used to stall the engine thread) and hands those to the store, which writes them on its own
        background thread. The parts are a copy: the engine evaluates on meanwhile."""
        if self._packer is None:
            from concurrent.futures import ThreadPoolExecutor

            self._packer = ThreadPoolExecutor(1, thread_name_prefix="earlywarn-snapshot")
        self._packing = self._packer.submit(self._pack_and_save, parts, batch_seq, now_ms)
        self._snapshot_seq = batch_seq

    def _pack_and_save(self, parts: tuple[dict[str, Any], dict[str, Any]], batch_seq: int,
                       now_ms: int) -> None:
        try:  # on the packer thread
            t0 = time.perf_counter()
            blob = EngineState.pack(*parts)
            self.store.save_state_later(RULES_STATE_KEY, blob, batch_seq, now_ms)
        except Exception:  # noqa: BLE001 - a lost snapshot means a longer catch-up at restart, no more
            log.exception("rule-state snapshot of batch %d not handed to the store", batch_seq)
            return
        log.debug("rule-state snapshot of batch %d: %d bytes packed in %.1f ms", batch_seq, len(blob),
                  (time.perf_counter() - t0) * 1e3)

    def settle_snapshots(self, timeout_s: float | None = 60.0) -> None:
        """Wait until the snapshots given to the packer thread are handed to the store (shutdown, tests)."""
        if self._packing is not None:
            self._packing.exception(timeout_s)

    def _snapshot_due(self, step: PendingStep) -> bool:
        return not self.replay and (
            time.monotonic() - self._last_checkpoint_mono >= self.cfg.store.checkpoint_interval_ms / 1000)

    def _prepare(
        self, batch: ReadingBatch, rejects: Sequence[Reject], actions: Sequence[Action], store_readings: bool,
        split: Split | None, between: Callable[[], None] | None = None,
    ) -> PendingStep | None:
        """Everything of a step before its commit: sequence, rules, alarms, actions; the CommitBatch.
        None when nothing happened (then no transaction and no batch number is spent)."""
        t0 = time.perf_counter()
        m = self.metrics
        for r in rejects:
            m.rejected.labels(r.reason).inc()
        m.readings.inc(len(batch))
        if split is None:
            split = self.sequencer.split(batch)
        if self.replay and len(split.fresh):
            self._event_clock_ms = max(self._event_clock_ms, int(split.fresh.frame.get_column("ts_ms").max()))
        now_ms = self.now_ms()

        t_rules = time.perf_counter()
        result = self.rules.evaluate(split.fresh, now_ms)
        signals = list(result.signals)
        signals.extend(self.rules.tick(now_ms))
        m.rules_seconds.observe(time.perf_counter() - t_rules)
        if between is not None:
            between()
        t_alarms = time.perf_counter()

        if self.replay:
            # a chunk spans hours of event time: each escalation / reminder fires at its own due time between
            # the signals, not at the chunk's end (the same alarms for any chunk size)
            changes = [self.alarms.apply_in_event_time(signals, now_ms)]
        else:
            changes = [self.alarms.apply_signals(signals, now_ms)]
        action_results: list[tuple[Action, Any]] = []
        for a in actions:
            try:
                action_results.append((a, a.apply(self.alarms, now_ms)))
            except Exception as e:  # refused action: answer the caller, change nothing
                a.done.set_exception(e)
        windows = [r for _, r in action_results if isinstance(r, Window)]
        changes.extend(ch for _, ch in action_results if ch is not None and not isinstance(ch, Window))
        changes.append(self.alarms.tick(now_ms))

        alarms, events, notices = _merge_changes(changes)
        notice_rows, self._pending_notices = self._pending_notices, []
        if not (len(batch) or rejects or signals or alarms or events or notice_rows or actions or windows):
            # nothing happened: no empty transaction, no batch number spent. Notices grouped earlier still
            # go out when their window ends (their records are committed with the next step).
            if self.dispatcher is not None:
                self.dispatcher.flush(now_ms)
                self._pending_notices.extend(self.dispatcher.drain_records())
            return None
        cb = CommitBatch(
            fresh=split.fresh if store_readings else ReadingBatch.empty(),
            maybe_dup=split.maybe_dup if store_readings else ReadingBatch.empty(),
            rejects=tuple(rejects),
            signals=tuple(signals),
            alarms=tuple(alarms),
            events=tuple(events),
            notices=tuple(notice_rows),
            windows=tuple(windows),
            now_ms=now_ms,
        )
        t_end = time.perf_counter()
        return PendingStep(
            cb=cb, split=split, readings=len(batch), rejects=len(rejects), signals=signals, alarms=alarms,
            events=events, notices=notices, action_results=action_results, now_ms=now_ms, t0=t0,
            timings={"sequence": t_rules - t0, "rules": t_alarms - t_rules, "alarms": t_end - t_alarms},
        )

    def _finish(self, step: PendingStep, committed: Any) -> StepResult:
        """After the commit of `step`: answer its actions, hand its notices over, count it."""
        t_notify = time.perf_counter()
        m = self.metrics
        for a, ch in step.action_results:
            a.done.set_result(ch)
        if self.dispatcher is not None:
            d = self.dispatcher
            if step.notices:
                d.submit(step.notices)
            if step.alarms:
                d.refresh(step.alarms)
            d.flush(step.now_ms)
            self._pending_notices.extend(d.drain_records())

        split = step.split
        m.late.inc(committed.late)
        m.duplicates.inc(committed.duplicates + split.in_batch_dups)
        m.stored.inc(committed.inserted)
        for s in step.signals:
            m.signals.labels(s.kind.value).inc()
        for e in step.events:
            m.alarm_events.labels(e.kind.value).inc()
        m.open_alarms.set(len(self.alarms))  # not open_alarms(): that sorts every open alarm
        m.batch_readings.observe(step.readings)
        t_end = time.perf_counter()
        m.batch_seconds.observe(t_end - step.t0)
        if self.trace is not None:
            self.trace.append(step.timings | {
                "notify": t_end - t_notify, "readings": step.readings, "signals": len(step.signals),
                "alarm_rows": len(step.alarms), "events": len(step.events), "end": t_end,
                "end_wall": time.time(),
            })
        return StepResult(
            readings=step.readings,
            stored=committed.inserted,
            rejects=step.rejects,
            signals=len(step.signals),
            late=committed.late,
            duplicates=committed.duplicates + split.in_batch_dups,
            batch_seq=committed.batch_seq,
        )

    def _maybe_snapshot(self, batch_seq: int, now_ms: int) -> None:
        """Hand a rule-state snapshot to the store on the checkpoint interval (live runs only).

        Copied right after the commit of `batch_seq`, before the next batch is evaluated, so the snapshot
        is exactly the rule state that batch left; it is packed on the packer thread and the store writes
        it (a few MB) on its background thread with that batch_seq, and a restart replays the batches
        after it. `RuleEngine.snapshot_parts()` is the only part on this thread: it is the consistent
        copy. A replay takes one snapshot at its end (`checkpoint`); an engine that committed nothing
        since the last snapshot takes none.
        """
        if self.replay or batch_seq <= self._snapshot_seq:
            return
        if time.monotonic() - self._last_checkpoint_mono < self.cfg.store.checkpoint_interval_ms / 1000:
            return
        self._pack_later(self.rules.snapshot_parts(), batch_seq, now_ms)
        self._last_checkpoint_mono = time.monotonic()

    def _commit(self, cb: CommitBatch) -> Any:
        """Commit, retrying with backoff until the store takes it.

        While the store fails (disk full, locked file) nothing is acknowledged and nothing new is consumed:
        the broker holds the rest, which is the back-pressure we want. The batch is kept in memory.
        """
        delay_s = 0.05
        while True:
            t0 = time.perf_counter()
            try:
                # a background checkpoint due now waits while the next step's commit is already queued
                res = self.store.commit(cb, more_coming=self._more_commits_queued)
            except StoreError as e:
                self.metrics.store_errors.inc()
                log.error("commit failed, retrying in %.2f s (nothing acknowledged): %s", delay_s, e)
                time.sleep(delay_s)
                delay_s = min(delay_s * 2, 5.0)
                continue
            self.metrics.write_seconds.observe(time.perf_counter() - t0)
            return res

    def link_verify(self, token: str, now_ms: int) -> tuple[str, str, str]:
        """Check an acknowledge link (HMAC, expiry); raises when tampered or expired."""
        signer = getattr(self.dispatcher, "_signer", None)
        if signer is None:
            msg = "acknowledge links are not configured"
            raise ValueError(msg)
        link = signer.verify(token, now_ms)
        return link.alarm_id, link.recipient, link.notice_id

    def idle(self) -> StepResult | None:
        """Called when no message came: engine-clock rules, deadlines and notices still move."""
        return self.process_batch(ReadingBatch.empty())

    def add_notice_records(self, rows: Iterable[NoticeRecord]) -> None:
        self._pending_notices.extend(rows)

    def checkpoint(self) -> None:
        """Write a rule-state snapshot now (clean shutdown)."""
        self.settle_snapshots()  # an older snapshot still being packed must not reach a closed store
        cb = CommitBatch(
            fresh=ReadingBatch.empty(), maybe_dup=ReadingBatch.empty(),
            notices=tuple(self._pending_notices), state={RULES_STATE_KEY: self.rules.snapshot()},
            now_ms=self.now_ms(),
        )
        self._pending_notices = []
        self._commit(cb)


def _merge_changes(changes: Iterable[Any]) -> tuple[list[Alarm], list[AlarmEvent], list[tuple[Alarm, AlarmEvent]]]:
    """Flatten alarm-manager Changes; an alarm changed twice keeps its final state."""
    final: dict[str, Alarm] = {}
    events: list[AlarmEvent] = []
    notices: list[tuple[Alarm, AlarmEvent]] = []
    for ch in changes:
        if ch is None:
            continue
        for a in ch.alarms:
            final[a.alarm_id] = a
        events.extend(ch.events)
        notices.extend(getattr(ch, "notices", ()))
    return list(final.values()), events, notices


def build_dispatcher(cfg: Config, *, engine: Engine, publish: Callable[[str, bytes, int], None] | None,
                     metrics: Metrics) -> Any:
    """The notify stage for a live engine: channels from config, log restored from `notices`."""
    import os

    from earlywarn.errors import ConfigError
    from earlywarn.notify import (
        Dispatcher, EmailChannel, LinkSigner, LogChannel, MqttChannel, RestoredNotificationLog, ThreadedExecutor,
        WebhookChannel, recovery_items,
    )

    nc = cfg.notify
    channels: dict[str, Any] = {}
    if nc.mqtt and cfg.broker.notices and publish is not None:
        channels["mqtt"] = MqttChannel(publish)
    if nc.webhook.urls or any(c.webhook for s in engine.sites.values() for c in s.contacts):
        channels["webhook"] = WebhookChannel(nc.webhook.timeout_ms)
    if nc.smtp.host:
        channels["email"] = EmailChannel(nc.smtp, clock=engine.clock)
    if nc.log:
        channels["log"] = LogChannel()
    nflog = RestoredNotificationLog()
    open_ids = [a.alarm_id for a in engine.alarms.open_alarms()]
    if open_ids:
        nflog.load(engine.store.sql(
            "SELECT alarm_id, reason, tier, max(epoch_ms(sent_at)) FROM notices "
            "WHERE alarm_id IN (SELECT unnest(?)) GROUP BY ALL", [open_ids],
        ))
    signer = None
    if os.environ.get(cfg.http.link_secret_env):
        try:
            signer = LinkSigner.from_env(cfg.http.link_secret_env, cfg.http.link_ttl_ms)
        except ConfigError as e:
            log.warning("acknowledge links off: %s", e)
    elif cfg.http.public_url:
        log.warning("acknowledge links off: set $%s to a secret of 32+ bytes", cfg.http.link_secret_env)
    d = Dispatcher(
        engine.sites, nc, cfg.alarms, channels=channels, log=nflog, clock=engine.clock, link_signer=signer,
        public_url=cfg.http.public_url, metrics=metrics, executor=ThreadedExecutor(),
    )
    d.submit(recovery_items(engine.alarms.open_alarms()))
    return d


def load_site_rules(cfg: Config) -> tuple[dict[str, Site], dict[str, tuple[RuleSpec, ...]]]:
    """Sites and each site's rules, from the files the config names (fails at start on any problem)."""
    sites = load_sites(cfg.rules.sites) if cfg.rules.sites else {}
    packs = load_packs(cfg.rules.dir or shipped_rules_dir())
    return sites, rules_for_sites(packs, sites, cfg.rules.sites)


# ---------------------------------------------------------------------------------------------------
# Live run


#: Put in the inbox by Runner.submit to end the engine thread's wait for messages; never decoded.
_WAKE = RawMessage("$earlywarn/wake", b"")


class Runner:
    """`earlywarn run`: ingest thread + engine thread until stop()."""

    def __init__(
        self,
        cfg: Config,
        *,
        engine: Engine,
        metrics: Metrics,
        ingest: Any,
        inbox: queue.SimpleQueue[RawMessage],
    ) -> None:
        self.cfg = cfg
        self.engine = engine
        self.metrics = metrics
        self.ingest = ingest
        self.inbox = inbox
        self.actions: queue.SimpleQueue[Action] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="earlywarn-engine", daemon=True)
        self.error: BaseException | None = None
        self._wakes = 0  # wake-up markers put in the inbox by submit() and not yet taken out
        self._wake_lock = threading.Lock()
        #: the step whose commit runs on the committer thread, and its messages (acknowledged once committed)
        self._inflight: tuple[PendingStep, list[RawMessage]] | None = None

    def start(self) -> None:
        self.ingest.start()
        self._thread.start()

    def submit(self, apply: Callable[[AlarmManager, int], Any]) -> Future[Any]:
        """Queue a user action for the engine thread; the future resolves after the commit.

        The engine thread waits on the inbox (up to 100 ms when no reading comes), so the action also
        drops a wake-up marker there: an idle engine commits it within `idle_flush` instead of at the end
        of that wait.
        """
        a = Action(apply)
        self.actions.put(a)
        with self._wake_lock:
            self._wakes += 1
        self.inbox.put(_WAKE)
        return a.done

    def _drain_actions(self) -> list[Action]:
        out = []
        while True:
            try:
                out.append(self.actions.get_nowait())
            except queue.Empty:
                return out

    def _loop(self) -> None:
        """Collect -> begin step k (decode, rules, alarms; its commit handed to the committer thread) ->
        finish step k - 1 (wait for its commit, then ack its messages, answer, notify).

        So the store commits step k - 1 while this thread collects and evaluates step k, and at most two
        commits are queued. A step is finished (acknowledged) only after its commit returned, and steps
        are finished in order. When nothing is waiting in the inbox the step in flight is finished at
        once, so an idle stream gets its acks and notices without waiting for more messages.
        """
        ic = self.cfg.ingest
        try:
            while True:
                stopping = self._stop.is_set()
                self._finish_if_committed()
                inflight = self._inflight
                t_collect = time.perf_counter()
                msgs = collect(
                    self.inbox, max_messages=ic.batch_max_readings, max_age_ms=ic.batch_max_age_ms,
                    idle_ms=ic.idle_flush_ms,
                    # with a commit in flight, only what is there already: else finish that step first
                    first_wait_ms=0 if inflight is not None else 10 if stopping else 100,
                    # readings are not counted before decode; a compact reading is ~45 bytes of JSON
                    max_bytes=ic.batch_max_readings * _BYTES_PER_READING,
                )
                if self._wakes:
                    n = len(msgs)
                    msgs = [m for m in msgs if m is not _WAKE]
                    with self._wake_lock:
                        self._wakes -= n - len(msgs)
                actions = self._drain_actions()
                self.metrics.queue_depth.set(self.inbox.qsize())
                if msgs:
                    t_step = time.perf_counter()
                    step = self.engine.begin_messages(msgs, actions, between=self._between_stages)
                    if step is not None:
                        step.timings["collect"] = t_step - t_collect
                    self._finish_inflight()
                    if step is None:  # nothing to commit (e.g. only empty payloads)
                        self.ingest.ack(msgs)
                    else:
                        self._inflight = (step, msgs)
                else:
                    self._finish_inflight()
                    if stopping and not actions:
                        break
                    self.engine.process_batch(ReadingBatch.empty(), actions=actions)
                if self.engine.dispatcher is not None:
                    self.engine.add_notice_records(self.engine.dispatcher.drain_records())
            d = self.engine.dispatcher
            if d is not None:
                d.close()  # sends the groups still in their window
                self.engine.add_notice_records(d.drain_records())
            self.engine.checkpoint()
        except BaseException as e:  # the engine must not die silently: record and surface it
            log.exception("engine thread failed")
            self.error = e
            self._stop.set()
            inflight = self._inflight
            if inflight is not None and inflight[0].future is not None:
                inflight[0].future.exception()  # let a commit in flight end before the store is closed
            self.engine.settle_snapshots()  # and a snapshot being packed

    def _finish_inflight(self) -> None:
        """Finish the step in flight, waiting for its commit if need be."""
        inflight, self._inflight = self._inflight, None
        if inflight is not None:
            self._finish(*inflight)

    def _finish_if_committed(self) -> None:
        inflight = self._inflight
        if inflight is not None and inflight[0].future is not None and inflight[0].future.done():
            self._finish_inflight()

    def _between_stages(self) -> None:
        """Between the stages of the next step (see Engine.begin_messages): the step in flight is finished as
        soon as its commit is done, and notice groups whose window has ended are flushed."""
        self._finish_if_committed()
        d = self.engine.dispatcher
        if d is not None:
            d.flush(self.engine.now_ms())

    def _finish(self, step: PendingStep, msgs: list[RawMessage]) -> None:
        """Wait for the step's commit, then acknowledge its messages (never before)."""
        tr = self.engine.trace
        n_trace = len(tr) if tr is not None else 0
        self.engine.finish_step(step)
        t_ack = time.perf_counter()
        self.ingest.ack(msgs)
        if tr is not None and len(tr) > n_trace:
            tr[-1].update(ack=time.perf_counter() - t_ack, backlog=self.inbox.qsize())

    def stop(self, timeout_s: float = 30.0) -> None:
        """Drain what was received, commit, acknowledge, then disconnect."""
        self._stop.set()
        self._thread.join(timeout_s)
        self.ingest.stop()

    def wait(self, timeout_s: float | None = None) -> bool:
        self._thread.join(timeout_s)
        return not self._thread.is_alive()


# ---------------------------------------------------------------------------------------------------
# Replay (back-testing): recorded readings through exactly the same engine, in event time, no broker.

REPLAY_COLUMNS = ("site", "tag", "ts", "value")
#: Rows per replay chunk. The rules cost less CPU per reading on 500 k-row chunks than on 1 M (their
#: working arrays stay closer to the caches: 4.3 vs 5.0-5.1 CPU s per 10 M readings of the shipped packs,
#: `bench_replay.py --rules-only`), and the extra commits cost less than that.
REPLAY_CHUNK = 500_000


def read_replay_files(paths: Sequence[str]) -> tuple[ReadingBatch, list[Reject]]:
    """Read CSV / Parquet / NDJSON files with `site, tag, ts, value[, quality]` into one batch.

    `ts` is epoch milliseconds or an RFC 3339 string with an offset. Rows that do not parse are returned
    as rejects (reason and an excerpt), never silently dropped. Sorted by ts (stable) so that file order
    does not matter.
    """
    import polars as pl

    from earlywarn.model import QUALITY_LABELS, READING_SCHEMA

    frames = []
    rejects: list[Reject] = []
    for path in paths:
        lower = path.lower()
        if lower.endswith(".parquet"):
            df = pl.read_parquet(path)
        elif lower.endswith((".ndjson", ".jsonl", ".json")):
            df = pl.read_ndjson(path, infer_schema_length=None)
        elif lower.endswith(".csv"):
            df = pl.read_csv(path, infer_schema_length=10_000)
        else:
            msg = f"{path}: unknown input format (expected .csv, .parquet, .ndjson or .jsonl)"
            raise ValueError(msg)
        missing = [c for c in REPLAY_COLUMNS if c not in df.columns]
        if missing:
            msg = f"{path}: missing column(s) {', '.join(missing)} (need site, tag, ts, value[, quality])"
            raise ValueError(msg)
        # one lazy query per file (polars runs the column expressions in parallel, in one pass)
        ts_dtype = df.schema["ts"]
        ts = pl.col("ts")
        if ts_dtype.is_integer():
            ts_ms = ts.cast(pl.Int64)
        elif ts_dtype == pl.String:
            ts_ms = ts.str.to_integer(strict=False).fill_null(
                ts.str.to_datetime(time_zone="UTC", strict=False, time_unit="ms").dt.epoch("ms"))
        elif isinstance(ts_dtype, pl.Datetime):
            ts_ms = ts.dt.epoch("ms")
        else:
            ts_ms = ts.cast(pl.Int64, strict=False)
        if "quality" in df.columns:
            q = pl.col("quality")
            if df.schema["quality"] == pl.String:
                # labels in any case: the few distinct spellings are lower-cased and mapped, not every row
                # (lower-casing 10 M strings costs twice the whole mapping)
                spelled = df.get_column("quality").drop_nulls().unique()
                codes = {lab: i for i, lab in enumerate(QUALITY_LABELS)}
                quality = q.replace_strict(
                    {x: codes[lo] for x, lo in zip(spelled.to_list(), spelled.str.to_lowercase().to_list(),
                                                   strict=True) if lo in codes},
                    default=None, return_dtype=pl.Int8,
                )
            else:
                quality = q.cast(pl.Int8, strict=False)
        else:
            quality = pl.lit(0, dtype=pl.Int8)
        value = pl.col("value").cast(pl.Float64, strict=False)
        out = df.lazy().select(
            pl.col("site").cast(pl.String), pl.col("tag").cast(pl.String), ts_ms.alias("ts_ms"),
            value.alias("value"), quality.alias("quality"),
        ).with_columns(
            (pl.col("ts_ms").is_null() | pl.col("site").is_null() | pl.col("tag").is_null()
             | pl.col("quality").is_null() | pl.col("value").is_nan().fill_null(False)
             | pl.col("value").is_infinite().fill_null(False)).alias("_bad")
        ).collect()
        bad = out.get_column("_bad")
        if bad.any():
            for row in df.filter(bad).head(100_000).iter_rows(named=True):
                rejects.append(Reject(0, path, "bad_replay_row", str(row)[:200]))
            out = out.filter(~bad)
        # a null value is stored with quality bad (product.md §3)
        out = out.lazy().select(
            "site", "tag", "ts_ms", "value",
            pl.when(pl.col("value").is_null()).then(pl.lit(2, dtype=pl.Int8)).otherwise(pl.col("quality")).alias("quality"),
        ).cast(READING_SCHEMA).collect()  # type: ignore[arg-type]
        frames.append(out)
    if not frames:
        return ReadingBatch.empty(), rejects
    full = frames[0] if len(frames) == 1 else pl.concat(frames)
    if not full.get_column("ts_ms").is_sorted():  # a recording is usually in time order already
        full = full.sort("ts_ms", maintain_order=True)
    return ReadingBatch(full), rejects


def _chunk_bounds(ts_ms: np.ndarray, chunk: int) -> list[tuple[int, int]]:
    """[start, end) row ranges of about `chunk` rows over ts-sorted readings, never splitting a millisecond:
    the alarm timers due at a chunk's last millisecond fire after all of that millisecond's signals."""
    n = len(ts_ms)
    if n == 0:
        return [(0, 0)]
    out, off = [], 0
    while off < n:
        end = min(off + max(chunk, 1), n)
        if end < n:
            end = int(np.searchsorted(ts_ms, ts_ms[end - 1], side="right"))
        out.append((off, end))
        off = end
    return out


def _replay_names(frame: Any) -> NameCodes:
    """The rows' site and tag as codes into the lists of distinct names (in order of first appearance),
    once for the whole input: exact (an Enum cast of each column, in parallel), and cheaper than hashing
    both string columns chunk by chunk, or grouping by them."""
    import polars as pl

    site_names = frame.get_column("site").unique(maintain_order=True)
    tag_names = frame.get_column("tag").unique(maintain_order=True)
    codes = frame.select(pl.col("site").cast(pl.Enum(site_names)).to_physical(),
                         pl.col("tag").cast(pl.Enum(tag_names)).to_physical())
    return NameCodes(codes.get_column("site").to_numpy(), codes.get_column("tag").to_numpy(),
                     site_names.to_list(), tag_names.to_list())


def _replay_sensors(frame: Any, names: NameCodes) -> Any:
    """Per (site, tag) of a ts-sorted frame: `site`, `tag`, readings `n`, distinct timestamps `distinct`
    and `max_ts`, grouped by the integer pair code (a group-by on the two string columns costs ~4x)."""
    import polars as pl

    n_tags = max(len(names.tag_names), 1)
    pair = names.site.astype(np.int64) * n_tags + names.tag
    per = pl.DataFrame({"pair": pair, "ts_ms": frame.get_column("ts_ms")}).group_by("pair").agg(
        pl.len().alias("n"), pl.col("ts_ms").n_unique().alias("distinct"), pl.col("ts_ms").max().alias("max_ts"))
    p = per.get_column("pair").to_numpy()
    return per.select(
        pl.Series("site", names.site_names, dtype=pl.String).gather(p // n_tags),
        pl.Series("tag", names.tag_names, dtype=pl.String).gather(p % n_tags),
        "n", "distinct", "max_ts",
    )


def run_replay(
    engine: Engine, batch: ReadingBatch, rejects: Sequence[Reject] = (), *, chunk: int = REPLAY_CHUNK,
    store_readings: bool = True,
) -> StepResult:
    """Feed a ts-sorted batch through the engine in chunks; the engine clock follows event time.

    Same signals, alarms and stored readings as feeding the chunks to `process_batch` one by one (the
    micro-batch split never changes a result), but faster:
    - the names are coded once for the whole input (`_replay_names`): the copy check, the sequencer's
      marks and the rule engine's row mapping use the codes, not the strings;
    - copies of the same (site, tag, ts) are dropped once, up front (the first one stays, as the sequencer
      would keep it); when the store holds no reading yet, every remaining reading is fresh, so the
      per-chunk sequencing (two group-bys and a duplicate check against the store) is skipped;
    - chunk k is committed on a committer thread while the rules evaluate chunk k + 1 (DuckDB and the
      rule kernels release the GIL); at most one commit is in flight, and commits keep their order;
    - no rule-state snapshot per chunk: one at the end (`Engine.checkpoint`).
    """
    import polars as pl

    total = StepResult()
    frame = batch.frame
    n_in = frame.height
    names = _replay_names(frame) if n_in else None
    sensors = _replay_sensors(frame, names) if names is not None else None
    # an order-keeping unique() costs more than the whole check, and a recording rarely holds copies
    if sensors is not None and sensors.select((pl.col("n") != pl.col("distinct")).any()).item():
        frame = frame.unique(subset=["site", "tag", "ts_ms"], keep="first", maintain_order=True)
        names = _replay_names(frame)  # (copies share their ts: the sensors' max_ts stay)
    total.duplicates += n_in - frame.height
    presplit = len(engine.sequencer) == 0 and engine.store.batch_seq == 0
    empty = ReadingBatch.empty()
    no_maxima = pl.DataFrame(schema={"site": pl.String, "tag": pl.String, "max_ts": pl.Int64})
    pending: Future[Any] | None = None

    def settle(fut: Future[Any] | None) -> None:
        if fut is None:
            return
        committed = fut.result()
        total.stored += committed.inserted
        total.late += committed.late
        total.duplicates += committed.duplicates
        total.batch_seq = committed.batch_seq or total.batch_seq
        m = engine.metrics
        m.late.inc(committed.late)
        m.duplicates.inc(committed.duplicates)
        m.stored.inc(committed.inserted)

    first = True
    try:
        for off, end in _chunk_bounds(frame.get_column("ts_ms").to_numpy(), chunk):
            part = ReadingBatch(frame.slice(off, end - off))
            split = Split(part, empty, 0, no_maxima) if presplit else None
            if presplit and names is not None:
                # the rows are the chunk itself (split.fresh): the engine maps them by the codes
                engine.rules.prime_names(part, names.slice(off, end))
            r = engine.process_batch(part, rejects if first else (), store_readings=store_readings, split=split,
                                     commit_in_background=True)
            first = False
            settle(pending)  # the previous chunk's commit, which ran while this chunk was evaluated
            pending = r.pending
            total.readings += r.readings
            total.rejects += r.rejects
            total.signals += r.signals
            total.duplicates += r.duplicates
        settle(pending)
        pending = None
    finally:
        if pending is not None:
            pending.exception()  # let an in-flight commit end before the caller closes the store
    if presplit and sensors is not None:  # the sequencer's marks, once for the whole input
        engine.sequencer.advance(Split(empty, empty, 0, sensors.select("site", "tag", "max_ts")))
    engine.checkpoint()
    return total
