"""Runs: one site with scheduled scenarios, a single scenario with its ground truth, and the demo's
compressed-clock multi-site plant run.

    run = run_scenario("cw_pump_trip", seed=7)           # one site, one scenario, sized to fit it
    run.truths[0].expected                                # what a correct engine raises
    msgs, log = run.messages(transport=TransportFaults())  # (publish_ms, topic, payload) in publish order

    sites = simulate_sites([("HZ-01", "hazchem"), ("AL-01", "aluminum")], start_ms, duration_s=60, seed=1, speed=60)
    for m in sites.messages(): ...                        # m.at_s = wall offset at which to publish
"""

from __future__ import annotations

import heapq
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from simulators.payload import Message, Readings, encode, render
from simulators.plants import PLANTS, build_trace
from simulators.scenarios import SCENARIOS, GroundTruth, InjectContext, finalize_order, scenarios_for
from simulators.signals import Trace, rng_for
from simulators.transport import TransportFaults, TransportLog, apply

#: 2025-11-28 08:00 local (UTC+8, 00:00 UTC), the start of a morning shift: a convenient default start.
DEFAULT_START_MS = 1_764_288_000_000


@dataclass
class SiteRun:
    """One simulated site: the truth trace, the ground truth of its scenarios, and its readings."""

    site: str
    plant: str
    seed: int
    trace: Trace
    truths: list[GroundTruth]
    outages_ms: list[tuple[int, int, bool]] = field(default_factory=list)
    schedule: list[tuple[str, float]] = field(default_factory=list)  # (scenario, injection offset s)
    state_refresh_s: float = 10.0
    _readings: Readings | None = None

    @property
    def start_ms(self) -> int:
        return self.trace.start_ms

    @property
    def end_ms(self) -> int:
        return self.trace.start_ms + self.trace.n * 1000

    def readings(self) -> Readings:
        """The readings as sampled at the gateway (sorted by ts), before any transport fault."""
        if self._readings is None:
            self._readings = render(self.trace, self.seed)
        return self._readings

    def publish_order(self, *, batch_window_ms: int | None = 1000,
                      transport: TransportFaults | None = None) -> Iterator[tuple[str, bytes]]:
        """`(topic, payload_bytes)` in publish order (what an MQTT publisher sends, in that order)."""
        for m in self.messages(batch_window_ms=batch_window_ms, transport=transport)[0]:
            yield m.topic, m.payload

    def messages(self, *, batch_window_ms: int | None = 1000,
                 transport: TransportFaults | None = None) -> tuple[list[Message], TransportLog]:
        """MQTT messages in publish order. Scenario outages with a backlog flush are applied even with
        `transport=None` (they are part of the scenario); other faults only when `transport` says so.
        """
        msgs = encode(self.readings(), batch_window_ms=batch_window_ms)
        faults = transport or TransportFaults.none()
        flush_outages = tuple((a, b) for a, b, flush in self.outages_ms if flush)
        if flush_outages:
            faults = TransportFaults(**{**faults.__dict__, "outages_ms": tuple(faults.outages_ms) + flush_outages})
        return apply(msgs, faults, site=self.site, seed=self.seed)


def simulate_site(site: str, plant: str, *, start_ms: int = DEFAULT_START_MS, duration_s: int = 3600,
                  seed: int = 0, scenarios: Sequence[tuple[str, float]] = (), state_refresh_s: float = 10.0) -> SiteRun:
    """Simulate one site for `duration_s`, injecting `scenarios` as `(name, at_offset_s)` pairs.

    Discrete tags are published on change and re-published every `state_refresh_s` (0 = on change only).
    """
    if plant not in PLANTS:
        msg = f"unknown plant {plant!r}; known: {sorted(PLANTS)}"
        raise ValueError(msg)
    chosen = []
    for name, at_s in scenarios:
        if name not in SCENARIOS:
            msg = f"unknown scenario {name!r}; known for {plant}: {[s.name for s in scenarios_for(plant)]}"
            raise ValueError(msg)
        sc = SCENARIOS[name]
        if sc.plant != plant:
            msg = f"scenario {name!r} is for plant {sc.plant!r}, not {plant!r}"
            raise ValueError(msg)
        chosen.append((sc, float(at_s)))
    chosen.sort(key=lambda x: x[1])
    arrange = [(lambda p, sc=sc, at=at: sc.arrange(p, at)) for sc, at in chosen if sc.arrange is not None]
    trace, plan = build_trace(plant, site, start_ms, duration_s, seed, arrange)
    trace.state_refresh_s = state_refresh_s
    truths, outages = [], []
    for sc, at_s in chosen:
        ctx = InjectContext(trace, plan, at_s, seed, rng_for(seed, site, "scenario", sc.name, str(at_s)))
        # A scenario's effects end with its window: what comes after is the plant's own schedule again
        # (the bag replaced, the cast restarted), so the next scenario on the same site starts from normal.
        end_i = trace.idx(at_s + sc.post_s)
        tail = _snapshot_tail(trace, end_i) if end_i < trace.n else None
        sc.inject(ctx)
        if tail is not None:
            _restore_tail(trace, end_i, tail)
        truths.append(GroundTruth(
            scenario=sc.name, plant=plant, site=site,
            injected_at_ms=start_ms + round(at_s * 1000),
            injected=ctx.description or sc.title,
            expected=finalize_order(ctx.expected),
            forbidden=sorted(set(ctx.forbidden)),
            feedback=sc.feedback,
            window_start_ms=start_ms + round(max(at_s - sc.pre_s, 0) * 1000),
            window_end_ms=start_ms + round(min(at_s + sc.post_s, duration_s) * 1000),
            details=ctx.details, max_raises=dict(ctx.max_raises), mode=ctx.mode,
        ))
        outages += [(start_ms + int(a * 1000), start_ms + int(b * 1000), flush) for a, b, flush in ctx.outages]
    return SiteRun(site, plant, seed, trace, truths, outages, [(sc.name, at) for sc, at in chosen], state_refresh_s)


def _snapshot_tail(trace: Trace, end_i: int) -> dict[str, Any]:
    end_ms = end_i * 1000
    return {
        "analog": {k: v[end_i:].copy() for k, v in trace.analog.items()},
        "masks": {name: {k: v[end_i:].copy() for k, v in getattr(trace, name).items()}
                  for name in ("frozen", "quality", "silent")},
        "states": {k: (st.value_at(end_ms), [(t, v) for t, v in zip(st.times_ms, st.values, strict=True) if t > end_ms])
                   for k, st in trace.states.items()},
    }


def _restore_tail(trace: Trace, end_i: int, snap: dict[str, Any]) -> None:
    end_ms = end_i * 1000
    for k, tail in snap["analog"].items():
        trace.analog[k][end_i:] = tail
    for name, saved in snap["masks"].items():
        for k, arr in getattr(trace, name).items():
            arr[end_i:] = saved.get(k, 0)
    for k, (value, later) in snap["states"].items():
        st = trace.states[k]
        st.hold(end_ms, None, value)
        for t, v in later:
            st.set(t, v)


def run_scenario(name: str, *, site: str | None = None, start_ms: int = DEFAULT_START_MS, seed: int = 0) -> SiteRun:
    """One site running exactly one scenario, sized to the scenario's pre- and post-injection spans."""
    sc = SCENARIOS[name]
    site = site or f"SIM-{sc.plant.upper()}-{name}"[:64]
    return simulate_site(site, sc.plant, start_ms=start_ms, duration_s=sc.span_s, seed=seed,
                         scenarios=[(name, float(sc.pre_s))])


# ---------------------------------------------------------------------------------------------
# Compressed-clock multi-site run (the demo)


class TimedMessage(NamedTuple):
    """A message and the wall-clock offset (s from the run's start) at which to publish it."""

    at_s: float
    topic: str
    payload: bytes
    publish_ms: int  # the event-time instant the gateway would have published it


@dataclass
class SitesRun:
    """Several sites on one compressed clock. `messages()` is a plain generator: the caller paces."""

    runs: list[SiteRun]
    start_ms: int
    speed: float
    batch_window_ms: int | None = 1000
    transport: TransportFaults | None = None
    _pending: list[tuple[int, SiteRun]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _last_ms: int | None = None

    @property
    def truths(self) -> list[GroundTruth]:
        return [t for r in self.runs for t in r.truths]

    @property
    def end_ms(self) -> int:
        return max((r.end_ms for r in self.runs), default=self.start_ms)

    def inject(self, site: str, scenario: str, at_ms: int | None = None) -> GroundTruth:
        """Inject a scenario on demand while `messages()` is being consumed (thread-safe).

        Default injection time: the newest event time already yielded plus the scenario's reach (its set-up
        time), so everything the scenario arranges lies in the future and what was published stays valid.
        Scheduled scenarios of that site whose windows would overlap the new one are dropped. The site is
        re-simulated from the same seed; the stream switches to it after the last yielded message.
        """
        k = next((i for i, r in enumerate(self.runs) if r.site == site), None)
        if k is None:
            msg = f"unknown site {site!r}; sites: {[r.site for r in self.runs]}"
            raise ValueError(msg)
        sc = SCENARIOS[scenario]
        old = self.runs[k]
        now_s = ((self._last_ms if self._last_ms is not None else self.start_ms) - self.start_ms) / 1000.0
        # a scenario already injected keeps its window: the new one is set up after it
        busy_s = max([now_s] + [t + SCENARIOS[n].post_s for n, t in old.schedule if t <= now_s])
        at_s = (at_ms - self.start_ms) / 1000.0 if at_ms is not None else busy_s + sc.reach_s
        lo, hi = at_s - sc.reach_s, at_s + sc.post_s
        if hi > old.trace.n:
            msg = (f"{scenario} needs {sc.reach_s + sc.post_s:.0f} s of event time from now (set-up and observation); "
                   f"the run ends {old.trace.n - now_s:.0f} s from now")
            raise ValueError(msg)
        keep = [(n, t) for n, t in old.schedule
                if t + SCENARIOS[n].post_s < lo or t - SCENARIOS[n].reach_s > hi or t <= now_s]
        new = simulate_site(site, old.plant, start_ms=self.start_ms, duration_s=old.trace.n, seed=old.seed,
                            scenarios=[*keep, (scenario, at_s)], state_refresh_s=old.state_refresh_s)
        with self._lock:
            self._pending.append((k, new))
            self.runs[k] = new
        return next(t for t in new.truths if t.scenario == scenario and t.injected_at_ms == self.start_ms + round(at_s * 1000))

    def messages(self) -> Iterator[TimedMessage]:
        """All sites' messages merged in publish order; `at_s` = event offset / speed."""
        per_site = [r.messages(batch_window_ms=self.batch_window_ms, transport=self.transport)[0] for r in self.runs]
        pos = [0] * len(per_site)
        heap = [(ms[0].publish_ms, k) for k, ms in enumerate(per_site) if ms]
        heapq.heapify(heap)
        while heap:
            if self._pending:
                with self._lock:
                    pending, self._pending = self._pending, []
                last = self._last_ms if self._last_ms is not None else self.start_ms - 1
                for k, run in pending:
                    ms = run.messages(batch_window_ms=self.batch_window_ms, transport=self.transport)[0]
                    per_site[k] = ms
                    pos[k] = next((j for j, m in enumerate(ms) if m.publish_ms > last), len(ms))
                heap = [(per_site[k][pos[k]].publish_ms, k) for k in range(len(per_site)) if pos[k] < len(per_site[k])]
                heapq.heapify(heap)
                if not heap:
                    return
            publish_ms, k = heapq.heappop(heap)
            m = per_site[k][pos[k]]
            pos[k] += 1
            if pos[k] < len(per_site[k]):
                heapq.heappush(heap, (per_site[k][pos[k]].publish_ms, k))
            self._last_ms = publish_ms
            yield TimedMessage((publish_ms - self.start_ms) / 1000.0 / self.speed, m.topic, m.payload, publish_ms)


def auto_schedule(plant: str, span_s: int, nth: int, settle_s: float = 300.0) -> list[tuple[str, float]]:
    """Scenarios that fit one after another in `span_s`, starting from a different one for each `nth` site.

    Short scenarios first, so a one-minute demo still shows alarms of every plant type.
    """
    catalog = sorted(scenarios_for(plant), key=lambda s: (s.span_s, s.name))
    fitting = [s for s in catalog if s.span_s <= span_s]
    if not fitting:
        return []
    out, t = [], 0.0
    k = nth % len(fitting)
    for step in range(len(fitting)):
        sc = fitting[(k + step) % len(fitting)]
        # the first scenario may reach back before the run; a later one must not reach into the previous
        before = sc.pre_s if not out else sc.reach_s
        if t + before + sc.post_s > span_s:
            continue
        out.append((sc.name, t + before))
        t += before + sc.post_s + settle_s  # let the plant settle after a scenario's effects are lifted
    return out


def simulate_sites(sites: Sequence[tuple[str, str]], start_ms: int, duration_s: float, seed: int, speed: float = 60.0,
                   scenarios: Mapping[str, Sequence[tuple[str, float]]] | str | None = "auto", *,
                   batch_window_ms: int | None = 1000, transport: TransportFaults | None = None) -> SitesRun:
    """A compressed-clock plant run for the demo.

    `duration_s` is wall-clock seconds; the sites cover `duration_s * speed` seconds of event time from
    `start_ms`. `scenarios` is `"auto"` (each site gets scenarios that fit, rotated across sites of the same
    plant), `None` (normal operation only) or a mapping `site -> [(scenario_name, at_offset_s in event time)]`.
    Iterate `.messages()` and publish each message at `at_s` wall seconds after you start; `.truths` holds the
    ground truth. Event timestamps run `speed` times faster than the wall clock: to end at "now", pass
    `start_ms = now_ms - duration_s * speed * 1000` (or tell the engine to run on event time).
    """
    span_s = int(duration_s * speed)
    runs, nth_by_plant = [], {}
    for site, plant in sites:
        nth = nth_by_plant.get(plant, 0)
        nth_by_plant[plant] = nth + 1
        if scenarios == "auto":
            sched = auto_schedule(plant, span_s, nth)
        elif scenarios is None:
            sched = []
        elif isinstance(scenarios, Mapping):
            sched = list(scenarios.get(site, ()))
        else:
            msg = f"scenarios must be 'auto', None or a mapping, got {scenarios!r}"
            raise ValueError(msg)
        runs.append(simulate_site(site, plant, start_ms=start_ms, duration_s=span_s, seed=seed, scenarios=sched))
    return SitesRun(runs, start_ms, float(speed), batch_window_ms, transport)
