"""Notify-stage benchmark: a flood of alarms through the Dispatcher against a naive one-notice-per-alarm
sender, same run, same channels.

    python benchmarks/bench_notify.py [--quick]

Workload (seeded, built before timing): 10 000 `raised` alarms in one minute of event time across 500 sites
(--quick: 2 000 across 100), 10 % red; each site has plant (e-mail + webhook), township, county and city
contacts, red goes to plant + county at once, one global webhook. Channels are in memory but pay the real
rendering cost: JSON for MQTT / webhooks, the bilingual body for e-mail.

The flood is replayed on a ManualClock in ticks of --tick-ms (the pipeline's loop): each tick submits the
alarms raised in it, then calls flush(now). Deliveries run inline, so wall time = everything notify does.

Reported per variant:
- notices prepared per second and deliveries per second (wall), and notices/deliveries in total;
- engine delay: alarm event time -> notice handed to the channel, on the engine clock (p50/p99). With
  grouping this is group_wait by design (Alertmanager's group_wait: the price of "one notice, not 50");
- processing delay: wall time from the start of the flush that closes the notice to its hand-off (p50/p99),
  i.e. what notify adds on top of the configured wait;
- pipeline-thread cost: wall time of submit+flush per alarm with the ThreadedExecutor (what ingest pays).
Results go to benchmarks/results/notify.json (git-ignored).
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import random
import sys
import time
from pathlib import Path
from typing import Any

from earlywarn.clock import ManualClock
from earlywarn.config import AlarmsConfig, NotifyConfig, WebhookConfig
from earlywarn.model import Alarm, AlarmEvent, AlarmState, Contact, EventKind, Severity, Site, Tier
from earlywarn.notify import (
    Dispatcher,
    InMemoryNotificationLog,
    LinkSigner,
    Notice,
    Recipient,
    ThreadedExecutor,
    notice_bytes,
)
from earlywarn.notify.links import ack_url
from earlywarn.notify.nflog import NoticeKey
from earlywarn.notify.notice import NoticeAlarm, NoticeReason, email_body, email_subject, make_notice_id
from earlywarn.notify.routing import audience, parse_tiers, recipients

RESULTS = Path(__file__).resolve().parent / "results" / "notify.json"
T0_MS = 1_795_824_000_000  # 2026-11-28T00:00:00Z
FLOOD_MS = 60_000
PUBLIC_URL = "https://ew.example.cn"
SECRET = b"benchmark-link-secret-0123456789"
CHANNELS = ("mqtt", "log", "email", "webhook")


# ---------------------------------------------------------------------------------------------
# Workload


def build_workload(seed: int, n_alarms: int, n_sites: int) -> tuple[dict[str, Site], list[tuple[Alarm, AlarmEvent]]]:
    rng = random.Random(seed)
    sites = {}
    for i in range(n_sites):
        sid = f"SZ-{i:04d}"
        sites[sid] = Site(
            id=sid, name=f"plant {i}", plant="aluminum", district="wujiang",
            contacts=(
                Contact(Tier.PLANT, "safety officer", email=f"safety@{sid}.cn", webhook=f"http://hooks/{sid}"),
                Contact(Tier.TOWNSHIP, "township", email="town@wujiang.gov.cn"),
                Contact(Tier.COUNTY, "county", email="county@wujiang.gov.cn"),
                Contact(Tier.CITY, "city", email="city@suzhou.gov.cn"),
            ),
        )
    ids = list(sites)
    items = []
    for n in range(n_alarms):
        ts = T0_MS + rng.randrange(FLOOD_MS)
        site = rng.choice(ids)
        sev = Severity.RED if rng.random() < 0.10 else rng.choice((Severity.ORANGE, Severity.YELLOW, Severity.BLUE))
        a = Alarm(alarm_id=f"{site}:r{n % 40}:{n}", site=site, plant="aluminum", district="wujiang",
                  tag=f"tag_{n % 40}", rule_id=f"rule_{n % 40}", severity=sev, state=AlarmState.ACTIVE_UNACK,
                  raised_at_ms=ts, message="冷却水压力低低 / Cooling-water pressure low-low",
                  value=rng.uniform(0, 1), last_activation_ms=ts)
        items.append((a, AlarmEvent(a.alarm_id, ts, EventKind.RAISED)))
    items.sort(key=lambda it: it[1].ts_ms)
    return sites, items


# ---------------------------------------------------------------------------------------------
# Channels that stamp the hand-off and render what a real channel would


class StampChannel:
    """Renders like the real channel and stamps when each notice was handed to it."""

    def __init__(self, name: str, clock: ManualClock, flush_start: list[float]) -> None:
        self.name = name
        self._clock = clock
        self._flush_start = flush_start
        self.deliveries = 0
        self.engine_delays_ms: list[int] = []
        self.red_delays_ms: list[int] = []
        self.wall_delays_s: list[float] = []

    def send(self, notice: Notice, recipient: Recipient) -> None:
        now = self._clock.now_ms()
        self.wall_delays_s.append(time.perf_counter() - self._flush_start[0])
        self.engine_delays_ms.extend(now - na.event_ts_ms for na in notice.alarms)
        self.red_delays_ms.extend(now - na.event_ts_ms for na in notice.alarms if na.alarm.severity is Severity.RED)
        self.deliveries += 1
        if self.name == "email":
            email_subject(notice)
            email_body(notice, recipient, now)
        elif self.name != "log":
            notice_bytes(notice, recipient)


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


# ---------------------------------------------------------------------------------------------
# Variants


def run_dispatcher(sites: dict[str, Site], items: list[tuple[Alarm, AlarmEvent]], group_wait_ms: int,
                   tick_ms: int, *, threaded: bool = False, red_wait_ms: int | None = None) -> dict[str, Any]:
    clock = ManualClock(T0_MS)
    flush_start = [0.0]
    channels = {n: StampChannel(n, clock, flush_start) for n in CHANNELS}
    executor = ThreadedExecutor(queue_max=100_000) if threaded else None
    d = Dispatcher(sites, NotifyConfig(group_wait_ms=group_wait_ms, webhook=WebhookConfig(urls=("http://bureau",))),
                   AlarmsConfig(red_immediate_tiers=("plant", "county")), channels=channels,
                   log=InMemoryNotificationLog(), clock=clock, link_signer=LinkSigner(SECRET, 86_400_000),
                   public_url=PUBLIC_URL, executor=executor,
                   group_wait_ms_by_severity=None if red_wait_ms is None else {Severity.RED: red_wait_ms})
    notices = 0
    i = 0
    end_ms = T0_MS + FLOOD_MS + group_wait_ms + tick_ms
    gc.collect()
    t0 = time.perf_counter()
    cpu0 = time.thread_time()
    proc0 = time.process_time()
    now = T0_MS
    while now <= end_ms:
        now += tick_ms
        j = i
        while j < len(items) and items[j][1].ts_ms < now:
            j += 1
        if j > i:
            clock.set(items[j - 1][1].ts_ms)
            d.submit(items[i:j])
            i = j
        clock.set(now)
        flush_start[0] = time.perf_counter()
        notices += len(d.flush(now))
    pipeline_s = time.perf_counter() - t0
    pipeline_cpu_s = time.thread_time() - cpu0
    if threaded:
        d.wait_idle(120)
    wall_s = time.perf_counter() - t0
    cpu_s = time.process_time() - proc0
    d.close()
    return _summary(channels, notices, len(items), wall_s, cpu_s, pipeline_s, pipeline_cpu_s)


def run_naive(sites: dict[str, Site], items: list[tuple[Alarm, AlarmEvent]], tick_ms: int) -> dict[str, Any]:
    """The baseline: every alarm its own notice, prepared and sent the moment the tick sees it."""
    clock = ManualClock(T0_MS)
    flush_start = [0.0]
    channels = {n: StampChannel(n, clock, flush_start) for n in CHANNELS}
    signer = LinkSigner(SECRET, 86_400_000)
    log = InMemoryNotificationLog()
    deadlines = AlarmsConfig().deadlines
    red_immediate = parse_tiers(("plant", "county"))
    notices = 0
    i = 0
    gc.collect()
    t0 = time.perf_counter()
    cpu0 = time.thread_time()
    proc0 = time.process_time()
    now = T0_MS
    while now <= T0_MS + FLOOD_MS + tick_ms:
        now += tick_ms
        clock.set(now)
        flush_start[0] = time.perf_counter()
        while i < len(items) and items[i][1].ts_ms < now:
            alarm, event = items[i]
            i += 1
            key = NoticeKey.of(alarm.alarm_id, "raised", "plant", event.ts_ms)
            if log.seen(*key):
                continue
            nid = make_notice_id(alarm.site, "raised", Tier.PLANT, [alarm.alarm_id], event.ts_ms)
            to = recipients(sites.get(alarm.site), alarm.site, audience(alarm, NoticeReason.RAISED, red_immediate),
                            channels=CHANNELS, global_webhooks=("http://bureau",))
            links = {}
            for r in to:
                if r.channel != "log":
                    url = ack_url(PUBLIC_URL, signer.make(alarm.alarm_id, r.key, nid, now))
                    links[r.key] = {alarm.alarm_id: url, "*": url}
            notice = Notice(nid, alarm.site, alarm.site, NoticeReason.RAISED, Tier.PLANT,
                            (NoticeAlarm(alarm, event.ts_ms, alarm.raised_at_ms + deadlines[alarm.severity].ack_ms),),
                            event.ts_ms, now, to, links)
            log.record(*key, nid, now)
            for r in to:
                channels[r.channel].send(notice, r)
            notices += 1
    wall_s = time.perf_counter() - t0
    cpu_s = time.process_time() - proc0
    return _summary(channels, notices, len(items), wall_s, cpu_s, wall_s, time.thread_time() - cpu0)


def _summary(channels: dict[str, StampChannel], notices: int, alarms: int, wall_s: float, cpu_s: float,
             pipeline_s: float, pipeline_cpu_s: float) -> dict[str, Any]:
    engine = [d for ch in channels.values() for d in ch.engine_delays_ms]
    red = [d for ch in channels.values() for d in ch.red_delays_ms]
    wall = [d for ch in channels.values() for d in ch.wall_delays_s]
    deliveries = sum(ch.deliveries for ch in channels.values())
    return {
        "alarms": alarms,
        "notices": notices,
        "deliveries": deliveries,
        "deliveries_by_channel": {n: ch.deliveries for n, ch in channels.items()},
        "wall_s": wall_s,
        "cpu_s": cpu_s,
        "notices_per_cpu_s": notices / cpu_s,
        "notices_per_s": notices / wall_s,
        "deliveries_per_s": deliveries / wall_s,
        "alarms_per_s": alarms / wall_s,
        "engine_delay_p50_ms": _pct(engine, 0.50),
        "engine_delay_p99_ms": _pct(engine, 0.99),
        "red_engine_delay_p99_ms": _pct(red, 0.99),
        "processing_delay_p50_ms": _pct(wall, 0.50) * 1000,
        "processing_delay_p99_ms": _pct(wall, 0.99) * 1000,
        "pipeline_thread_s": pipeline_s,
        "pipeline_thread_us_per_alarm": pipeline_s / alarms * 1e6,
        "pipeline_thread_cpu_s": pipeline_cpu_s,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2 000 alarms across 100 sites (a smoke run)")
    ap.add_argument("--seed", type=int, default=20261128)
    ap.add_argument("--tick-ms", type=int, default=100, help="pipeline loop period: submit + flush")
    ap.add_argument("--group-wait-ms", type=int, default=10_000)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)

    n_alarms, n_sites = (2_000, 100) if args.quick else (10_000, 500)
    sites, items = build_workload(args.seed, n_alarms, n_sites)
    variants = {
        f"grouped, group_wait {wait_ms / 1000:g} s": run_dispatcher(sites, items, wait_ms, args.tick_ms)
        for wait_ms in dict.fromkeys((args.group_wait_ms, 1_000, 0))
    }
    variants[f"grouped, {args.group_wait_ms / 1000:g} s, red 1 s"] = run_dispatcher(
        sites, items, args.group_wait_ms, args.tick_ms, red_wait_ms=1_000)
    variants["naive one notice per alarm"] = run_naive(sites, items, args.tick_ms)
    threaded = run_dispatcher(sites, items, args.group_wait_ms, args.tick_ms, threaded=True)

    print(f"notify benchmark ({'quick' if args.quick else 'full'}): {n_alarms} alarms in {FLOOD_MS // 1000} s "
          f"across {n_sites} sites, tick {args.tick_ms} ms, in-memory channels rendering JSON/e-mail, "
          f"Python {platform.python_version()}")
    print(f"{'variant':<32}{'notices':>8}{'deliv.':>8}{'alarms/s':>10}{'notices/s':>11}{'(per CPU s)':>12}"
          f"{'deliv./s':>10}{'engine p50/p99 ms':>19}{'red p99':>8}{'proc. p50/p99 ms':>18}{'wall s':>8}{'CPU s':>7}")
    for name, r in variants.items():
        print(f"{name:<32}{r['notices']:>8}{r['deliveries']:>8}{r['alarms_per_s']:>10,.0f}"
              f"{r['notices_per_s']:>11,.0f}{r['notices_per_cpu_s']:>12,.0f}{r['deliveries_per_s']:>10,.0f}"
              f"{r['engine_delay_p50_ms']:>10,.0f}/{r['engine_delay_p99_ms']:<8,.0f}{r['red_engine_delay_p99_ms']:>8,.0f}"
              f"{r['processing_delay_p50_ms']:>9.2f}/{r['processing_delay_p99_ms']:<8.2f}{r['wall_s']:>8.2f}"
              f"{r['cpu_s']:>7.2f}")
    print("engine delay = alarm event -> handed to channel on the engine clock (includes group_wait by design);")
    print("proc. delay = wall time from the start of the closing flush to the hand-off (what notify adds).")
    print(f"threaded executor, grouped: the pipeline thread spent {threaded['pipeline_thread_s'] * 1000:.1f} ms wall "
          f"({threaded['pipeline_thread_cpu_s'] * 1000:.1f} ms CPU) in submit+flush for {n_alarms} alarms "
          f"({threaded['pipeline_thread_us_per_alarm']:.1f} µs/alarm wall, "
          f"{threaded['pipeline_thread_s'] / (FLOOD_MS / 1000) * 100:.2f} % of the flood minute); "
          f"workers done after {threaded['wall_s']:.2f} s")

    doc = {
        "benchmark": "notify",
        "quick": args.quick,
        "seed": args.seed,
        "alarms": n_alarms,
        "sites": n_sites,
        "flood_ms": FLOOD_MS,
        "tick_ms": args.tick_ms,
        "group_wait_ms": args.group_wait_ms,
        "python": sys.version,
        "platform": platform.platform(),
        "variants": variants,
        "threaded_grouped": threaded,
        "notice_reduction_vs_naive": variants["naive one notice per alarm"]["notices"]
        / max(1, next(iter(variants.values()))["notices"]),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
