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
Variants (issue 5's target: raised -> handed to the channel p99 <= 1 s): (a) the default window
(`notify.group_wait` 10 s; its p99 minus the window is the engine's own delay, the rest is policy), (b) red
alarms on a short window of their own (`[notify.group_wait_by_severity] red`, --red-wait-ms, 500 ms), (c) no
grouping (group_wait 0); a 1 s window and the naive sender for comparison.

--realtime (on in full runs): (b) and (c) again on the wall clock with the ThreadedExecutor, as in
production: the flood is raised over a real minute, the pipeline ticks every --tick-ms, and the delay is wall
time from the alarm's raise to the channel's send (window + tick + queueing + rendering, all of it).

--engine (on in full runs): the ingest-rate drop during a flood. The real Engine (`earlywarn.app.build_engine`,
DuckDB store, rules, alarm lifecycle) and the production Dispatcher (`pipeline.build_dispatcher`: MQTT channel
through a pipe to another process, as ProcessIngest does; webhooks POSTed to a real HTTP server on loopback in
another process; the log channel to a file; ThreadedExecutor), fed pre-built 100-reading payloads of 500 sites
at its maximum rate: through the live `pipeline.Runner` loop (collect, pipelined commit, ack, notify) from
an in-memory inbox topped up with a round of payloads (50 000 readings) whenever less than one is waiting,
or with --inline as before: process_messages back to back on the bench thread, one round a batch. Every batch also carries
the flood-shaped readings due at 10 000 per minute: in the baseline phases on tags whose rules never fire, in
the flood phase on tags that raise 10 000 alarms (10 % red) over the minute — the same work except for the
alarms and their notices. Per variant (a, b, c; a fresh engine each): baseline, flood, drain (window + 1 s,
untimed), baseline again; readings/s of the flood phase over the baselines', and the raised -> received delay
measured at the MQTT process and the webhook server. --rounds R (default 3): the flood minute in R chunks,
each between two baselines of --base-s (15 s), and the median of the R chunks' ratios (each chunk over the
mean of the baselines on either side) is the figure: the machine's load drifting over minutes (another
benchmark on a shared machine) moves a chunk and its neighbours alike, where one flood between two baselines 2
minutes apart took the drift as flood cost or gain. The chunks raise the alarms at the flood's rate (10 000 in
--flood-s); with a notice window W (a, b) a chunk is timed only after its first W seconds (at most half the
chunk), once the notices of its first alarms go out, so that the timed part carries alarms and notices both at
the flood's rate (steady state) and no chunk's notify work is left to the untimed drain. --rounds 1 is the
single flood as before. Deadlines are set to 1 h so no escalation or reminder
falls inside a run. Where the flood's extra CPU goes: CPU seconds per role (engine thread, committer, DuckDB's
own threads, notify workers per lane, the bench feeder, the sink processes), from /proc, as cores used and as
CPU ms per 100 000 readings, baselines against flood; and where the engine thread's wall time goes per step part
(Engine.trace: decode, sequence, rules, commit_wait, ...), baseline against flood. --profile (with --inline)
also writes the profile for pstats (results/profile-notify-flood-*.prof).
Results go to benchmarks/results/notify.json (git-ignored).
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import logging
import math
import multiprocessing as mp
import os
import platform
import random
import statistics
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from earlywarn.clock import ManualClock, SystemClock
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

    def __init__(self, name: str, clock: ManualClock | SystemClock, flush_start: list[float]) -> None:
        self.name = name
        self._clock = clock
        self._flush_start = flush_start
        self._lock = threading.Lock()  # workers of one lane (webhook: 4) send at once
        self.deliveries = 0
        self.engine_delays_ms: list[int] = []
        self.red_delays_ms: list[int] = []
        self.other_delays_ms: list[int] = []  # not red
        self.wall_delays_s: list[float] = []

    def send(self, notice: Notice, recipient: Recipient) -> None:
        now = self._clock.now_ms()
        wall = time.perf_counter() - self._flush_start[0]
        red = [now - na.event_ts_ms for na in notice.alarms if na.alarm.severity is Severity.RED]
        other = [now - na.event_ts_ms for na in notice.alarms if na.alarm.severity is not Severity.RED]
        with self._lock:
            self.wall_delays_s.append(wall)
            self.engine_delays_ms.extend(red + other)
            self.red_delays_ms.extend(red)
            self.other_delays_ms.extend(other)
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


def notify_config(group_wait_ms: int, red_wait_ms: int | None = None) -> NotifyConfig:
    """[notify] as an operator would write it: group_wait, and `[notify.group_wait_by_severity] red`."""
    return NotifyConfig(group_wait_ms=group_wait_ms,
                        group_wait_by_severity_ms={} if red_wait_ms is None else {Severity.RED: red_wait_ms},
                        webhook=WebhookConfig(urls=("http://bureau",)))


def _dispatcher(sites: dict[str, Site], cfg: NotifyConfig, channels: dict[str, StampChannel],
                clock: ManualClock | SystemClock, executor: ThreadedExecutor | None) -> Dispatcher:
    return Dispatcher(sites, cfg, AlarmsConfig(red_immediate_tiers=("plant", "county")), channels=channels,
                      log=InMemoryNotificationLog(), clock=clock, link_signer=LinkSigner(SECRET, 86_400_000),
                      public_url=PUBLIC_URL, executor=executor)


def run_dispatcher(sites: dict[str, Site], items: list[tuple[Alarm, AlarmEvent]], cfg: NotifyConfig,
                   tick_ms: int, *, threaded: bool = False) -> dict[str, Any]:
    clock = ManualClock(T0_MS)
    flush_start = [0.0]
    channels = {n: StampChannel(n, clock, flush_start) for n in CHANNELS}
    executor = ThreadedExecutor(queue_max=100_000) if threaded else None
    d = _dispatcher(sites, cfg, channels, clock, executor)
    notices = 0
    i = 0
    end_ms = T0_MS + FLOOD_MS + max([cfg.group_wait_ms, *cfg.group_wait_by_severity_ms.values()]) + tick_ms
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
    return {**_summary(channels, notices, len(items), wall_s, cpu_s, pipeline_s, pipeline_cpu_s), **_windows(cfg)}


def _windows(cfg: NotifyConfig) -> dict[str, Any]:
    return {"group_wait_ms": cfg.group_wait_ms,
            "group_wait_by_severity_ms": {s.value: ms for s, ms in cfg.group_wait_by_severity_ms.items()}}


def run_realtime(sites: dict[str, Site], items: list[tuple[Alarm, AlarmEvent]], cfg: NotifyConfig,
                 tick_ms: int) -> dict[str, Any]:
    """The flood over a real minute on the wall clock, ThreadedExecutor: delay = send wall time - raise time."""
    clock = SystemClock()
    flush_start = [0.0]
    channels = {n: StampChannel(n, clock, flush_start) for n in CHANNELS}
    d = _dispatcher(sites, cfg, channels, clock, ThreadedExecutor(queue_max=100_000))
    start_ms = clock.now_ms() + 100
    shift = start_ms - T0_MS
    flood = []
    for a, e in items:  # the same flood, moved to start now
        ts = e.ts_ms + shift
        a2 = Alarm(alarm_id=a.alarm_id, site=a.site, plant=a.plant, district=a.district, tag=a.tag, rule_id=a.rule_id,
                   severity=a.severity, state=a.state, raised_at_ms=ts, message=a.message, value=a.value,
                   last_activation_ms=ts)
        flood.append((a2, AlarmEvent(a.alarm_id, ts, EventKind.RAISED)))
    notices = i = ticks = late_ticks = 0
    next_tick = start_ms
    gc.collect()
    t0 = time.perf_counter()
    proc0 = time.process_time()
    while i < len(flood) or d.next_due_ms() is not None:
        now = clock.now_ms()
        if now < next_tick:
            time.sleep((next_tick - now) / 1000)
            continue
        late_ticks += now - next_tick > tick_ms
        j = i
        while j < len(flood) and flood[j][1].ts_ms <= now:
            j += 1
        if j > i:
            d.submit(flood[i:j])
            i = j
        flush_start[0] = time.perf_counter()
        notices += len(d.flush(clock.now_ms()))
        ticks += 1
        next_tick += tick_ms
    d.wait_idle(60)
    wall_s = time.perf_counter() - t0
    cpu_s = time.process_time() - proc0
    d.close()
    out = _summary(channels, notices, len(items), wall_s, cpu_s, wall_s, cpu_s)
    out.update(_windows(cfg), ticks=ticks, ticks_late_by_more_than_a_tick=late_ticks)
    return out


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
    other = [d for ch in channels.values() for d in ch.other_delays_ms]
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
        "red_engine_delay_p50_ms": _pct(red, 0.50),
        "red_engine_delay_p99_ms": _pct(red, 0.99),
        "not_red_engine_delay_p50_ms": _pct(other, 0.50),
        "not_red_engine_delay_p99_ms": _pct(other, 0.99),
        "processing_delay_p50_ms": _pct(wall, 0.50) * 1000,
        "processing_delay_p99_ms": _pct(wall, 0.99) * 1000,
        "pipeline_thread_s": pipeline_s,
        "pipeline_thread_us_per_alarm": pipeline_s / alarms * 1e6,
        "pipeline_thread_cpu_s": pipeline_cpu_s,
    }


# ---------------------------------------------------------------------------------------------
# The engine under a flood: ingest rate with and without 10 000 alarms a minute being raised and notified

E_SITES = 500
E_BG_TAGS = 100  # readings per site message (a 100-reading batch payload)
E_BG_RULES = 10  # threshold rules on the first background tags (never crossed)
E_FLOOD_TAGS = 20  # per site: 500 x 20 = 10 000 (site, tag) pairs, each raising once
E_FLOOD_PER_MIN = 10_000
E_LIMIT = 100.0
E_SEVERITIES = ("red", "red", *(["orange", "yellow", "blue"] * 6))  # 2 of 20 tags red: 10 %


def _iso_ms(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp() * 1000)


def _delays_of(received: list[tuple[float, bytes]]) -> dict[str, list[int]]:
    """(wall time received, notice JSON) -> delays in ms from each alarm's event to receipt, red and not."""
    out: dict[str, list[Any]] = {"red": [], "other": [], "received": []}
    for t, body in received:
        doc = json.loads(body)
        t_ms = round(t * 1000)
        out["received"].append((doc["notice_id"], t_ms))
        for a in doc["alarms"]:
            out["red" if a["severity"] == "red" else "other"].append(t_ms - _iso_ms(a["event_at"]))
    return out


def _mqtt_sink(conn: Any) -> None:
    """Stands in for ProcessIngest's MQTT process: takes ("pub", topic, payload, qos) off the pipe, stamps it."""
    got: list[tuple[float, bytes]] = []
    while True:
        msg = conn.recv()
        if msg[0] == "stop":
            break
        if msg[0] == "pub":
            got.append((time.time(), msg[2]))
        elif msg[0] == "take":
            conn.send(_delays_of(got) | {"n": [len(got)]})
            got = []


def _webhook_server(port_q: Any, conn: Any) -> None:
    """A real HTTP/1.1 server on loopback (keep-alive): 200 to every POST, stamps each notice on receipt."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    got: list[tuple[float, bytes]] = []
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        # HTTP/1.1 with keep-alive, as real receivers (nginx, any web framework) speak: http.server's default
        # HTTP/1.0 closes every connection, which would make a client's connection reuse unmeasurable
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:  # http.server's name
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            t = time.time()
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()
            with lock:
                got.append((t, body))

        def log_message(self, *args: Any) -> None:
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    port_q.put(srv.server_address[1])
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    while True:
        msg = conn.recv()
        if msg == "stop":
            break
        with lock:
            taken, got[:] = list(got), []
        conn.send(_delays_of(taken) | {"n": [len(taken)]})
    srv.shutdown()


class _Sinks:
    """The MQTT pipe process and the webhook server process, started once for all variants."""

    def __init__(self) -> None:
        ctx = mp.get_context("spawn")
        self.mqtt_conn, child = ctx.Pipe()
        self.mqtt = ctx.Process(target=_mqtt_sink, args=(child,), daemon=True)
        self.mqtt.start()
        self._lock = threading.Lock()
        port_q = ctx.Queue()
        self.hook_conn, hchild = ctx.Pipe()
        self.hook = ctx.Process(target=_webhook_server, args=(port_q, hchild), daemon=True)
        self.hook.start()
        self.url = f"http://127.0.0.1:{port_q.get(timeout=30)}/hook"
        _SINK_PIDS.update({"sink: mqtt pipe process": self.mqtt.pid, "sink: webhook server process": self.hook.pid})

    def publish(self, topic: str, payload: bytes, qos: int = 1) -> None:
        """What ProcessIngest.publish does: one pickled message down a pipe to the MQTT process."""
        with self._lock:
            self.mqtt_conn.send(("pub", topic, payload, qos))

    def take(self) -> dict[str, dict[str, list[int]]]:
        with self._lock:
            self.mqtt_conn.send(("take",))
            mqtt_d = self.mqtt_conn.recv()
        self.hook_conn.send("take")
        return {"mqtt": mqtt_d, "webhook": self.hook_conn.recv()}

    def close(self) -> None:
        with self._lock:
            self.mqtt_conn.send(("stop",))
        self.hook_conn.send("stop")
        self.mqtt.join(10)
        self.hook.join(10)


# ---------------------------------------------------------------------------------------------
# Where the CPU goes: CPU seconds per thread of this process (DuckDB's own threads included, which Python
# does not list) and of the sink processes, from /proc, summed by role. The machine has two cores, so
# whatever the committer, the notify workers, DuckDB's threads and the sinks burn comes out of the engine's
# wall-time rate; per-role CPU per reading, baseline against flood, says which role takes the difference.

_SINK_PIDS: dict[str, int] = {}  # role -> pid of a sink process (set by _Sinks)
_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _stat_cpu_s(path: str) -> float:
    """utime + stime of a /proc stat file, in seconds (0 when the task is gone)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return 0.0
    fields = data[data.rindex(b")") + 2:].split()  # after "pid (comm) ": state is field 3
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK  # fields 14 and 15


def _thread_role(name: str | None) -> str:
    if name is None:
        return "native threads (DuckDB's pool)"
    if name.startswith("notify-"):
        return "notify workers: " + name.split("-")[1]
    return {"earlywarn-engine": "engine thread", "earlywarn-store-bg": "store background",
            "MainThread": "bench feeder (main thread)"}.get(
        name, "committer thread" if name.startswith("earlywarn-commit") else
        "snapshot packer" if name.startswith("earlywarn-snapshot") else f"other: {name.split('-')[0]}")


def _cpu_sample() -> dict[str, float]:
    """CPU seconds so far, per thread id of this process (key "tid:N") and per sink process."""
    out = {}
    try:
        tids = os.listdir("/proc/self/task")
    except OSError:
        return {}
    for tid in tids:
        out[f"tid:{tid}"] = _stat_cpu_s(f"/proc/self/task/{tid}/stat")
    for role, pid in _SINK_PIDS.items():
        out[role] = _stat_cpu_s(f"/proc/{pid}/stat")
    return out


def _cpu_by_role(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """CPU seconds spent between two samples, summed by role (a thread started meanwhile counts whole)."""
    names = {t.native_id: t.name for t in threading.enumerate()}
    roles: dict[str, float] = {}
    for key, cpu in after.items():
        role = _thread_role(names.get(int(key[4:]))) if key.startswith("tid:") else key
        roles[role] = roles.get(role, 0.0) + cpu - before.get(key, 0.0)
    return dict(sorted(roles.items(), key=lambda kv: -kv[1]))


def _engine_files(tmp: Path, hook_url: str, notify_toml: str) -> Path:
    sites = [f"FL-{i:04d}" for i in range(E_SITES)]
    (tmp / "sites.toml").write_text("".join(
        f'[[site]]\nid = "{s}"\nplant = "hazchem"\ndistrict = "bench"\n'
        f'[[site.contacts]]\ntier = "plant"\nname = "safety {s}"\nwebhook = "{hook_url}"\n'
        f'[[site.contacts]]\ntier = "township"\nname = "township"\n'
        for s in sites))
    (tmp / "rules").mkdir(exist_ok=True)
    tags = [f"b{j}" for j in range(E_BG_TAGS)] + [f"{k}{j}" for k in "zf" for j in range(E_FLOOD_TAGS)]
    rules = [f'[[rule]]\nid = "b{j}_h"\nkind = "threshold"\ntag = "b{j}"\nop = ">"\nlimit = 1000.0\n'
             f'severity = "blue"\nmessage = "b{j} high"\n' for j in range(E_BG_RULES)]
    rules += [f'[[rule]]\nid = "{k}{j}_h"\nkind = "threshold"\ntag = "{k}{j}"\nop = ">"\nlimit = {E_LIMIT}\n'
              f'severity = "{E_SEVERITIES[j]}"\nmessage = "{k}{j} 超限 / high"\n'
              for k in "zf" for j in range(E_FLOOD_TAGS)]
    (tmp / "rules" / "hazchem.toml").write_text(
        'plant = "hazchem"\n' + "".join(f'[[tag]]\nname = "{t}"\n' for t in tags) + "".join(rules))
    cfg = tmp / "earlywarn.toml"
    cfg.write_text(
        '[broker]\nurl = "mqtt://127.0.0.1:1"\nclient_id = "bench-notify"\n'
        '[store]\npath = "engine.duckdb"\n[rules]\nsites = "sites.toml"\ndir = "rules"\n'
        '[http]\nlisten = ""\n[metrics]\nlisten = ""\n[ingest]\nmax_future = "3650d"\n'
        '[alarms]\nreminder_interval = "1h"\n'
        + "".join(f'[alarms.deadlines.{sev}]\nack = "1h"\nclose = "2h"\n' for sev in E_SEVERITIES[1:5])
        + notify_toml
    )
    return cfg


class _Feed:
    """Pre-built 100-reading payloads of every site; a batch = each site once (50 000 readings) plus the
    flood-shaped readings due by now, appended to their site's message."""

    def __init__(self, seed: int) -> None:
        rng = random.Random(seed)
        self.sites = [f"FL-{i:04d}" for i in range(E_SITES)]
        self.topics = [f"ew/{s}/telemetry" for s in self.sites]
        self.bodies = [b",".join(b'{"tag":"b%d","value":%d.5}' % (j, rng.randrange(900)) for j in range(E_BG_TAGS))
                       for _ in self.sites]
        pairs = [(i, j) for i in range(E_SITES) for j in range(E_FLOOD_TAGS)]
        rng.shuffle(pairs)
        self.pairs = pairs
        self.last_ts = 0

    def batch(self, extra: dict[int, list[bytes]]) -> list[Any]:
        from earlywarn.model import RawMessage

        ts = max(time.time_ns() // 1_000_000, self.last_ts + 1)
        self.last_ts = ts
        out = []
        for i, body in enumerate(self.bodies):
            more = extra.get(i)
            payload = (b'{"ts":%d,"readings":[%s%s]}' % (ts, body, b"," + b",".join(more) if more else b""))
            out.append(RawMessage(self.topics[i], payload, i + 1, ts))
        return out


class _NoDispatcher:
    def drain_records(self) -> list[Any]:
        return []

    def pending(self) -> dict[str, int]:
        return {"groups": 0}

    def wait_idle(self, timeout_s: float) -> bool:
        return True

    def close(self) -> None:
        pass


class _FeedIngest:
    """The live Runner's ingest for the engine phases: the bench fills the inbox; acks are counted."""

    def __init__(self) -> None:
        self.acked = 0

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def ack(self, messages: Any) -> int:
        n = len(messages)
        self.acked += n
        return n


class _RunnerDriver:
    """`earlywarn run`'s engine loop (pipeline.Runner: collect, step, commit, ack, notify) on its own thread,
    fed from an in-memory inbox kept about a payload round ahead: the engine drains a backlog at its maximum
    rate, in the micro-batches `collect` cuts, as it would from the broker."""

    def __init__(self, cfg: Any, engine: Any, metrics: Any) -> None:
        import queue

        from earlywarn.pipeline import Runner

        self.inbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.ingest = _FeedIngest()
        self.metrics = metrics
        self.runner = Runner(cfg, engine=engine, metrics=metrics, ingest=self.ingest, inbox=self.inbox)
        engine.trace = self.trace = []  # the engine thread's step timings (Engine.trace): where its wall time goes
        self.runner.start()
        self._cpu_clock = time.pthread_getcpuclockid(self.runner._thread.ident)  # type: ignore[arg-type]
        self.stopped = False

    def thread_cpu_s(self) -> float:
        return time.clock_gettime(self._cpu_clock)

    def counter(self, name: str) -> float:
        return self.metrics.registry.get_sample_value(name) or 0.0

    def signals(self) -> float:
        return sum(s.value for m in self.metrics.registry.collect() if m.name == "earlywarn_rules_signals"
                   for s in m.samples if s.name.endswith("_total"))

    def stop(self) -> None:
        if not self.stopped:
            self.stopped = True
            self.runner.stop(120)
            if self.runner.error is not None:
                raise RuntimeError(f"engine thread failed: {self.runner.error!r}")


def _run_phase(engine: Any, feed: _Feed, duration_s: float, set_name: bytes, value: float,
               pairs: Any, driver: _RunnerDriver | None = None) -> dict[str, Any]:
    """The engine at its maximum rate for `duration_s`, with flood-shaped readings due at 10 000 / minute.

    Without `driver`: process_messages back to back on this thread, one 50 000-reading batch a step. With it:
    the live Runner's loop drains an inbox this thread tops up with a payload round whenever less than one is
    waiting."""
    if driver is not None:
        return _run_phase_runner(driver, feed, duration_s, set_name, value, pairs)
    d = engine.dispatcher or _NoDispatcher()
    readings = batches = flood = 0
    signals = 0
    per_s = E_FLOOD_PER_MIN / 60
    v = b"%g" % value
    roles0 = _cpu_sample()
    t0 = time.perf_counter()
    cpu0 = time.thread_time()
    proc0 = time.process_time()
    while (el := time.perf_counter() - t0) < duration_s:
        extra: dict[int, list[bytes]] = {}
        while flood < int(el * per_s):
            i, j = next(pairs)
            extra.setdefault(i, []).append(b'{"tag":"%s%d","value":%s}' % (set_name, j, v))
            flood += 1
        res = engine.process_messages(feed.batch(extra))
        engine.add_notice_records(d.drain_records())  # what Runner._loop does after each step
        readings += res.readings
        signals += res.signals
        batches += 1
    wall = time.perf_counter() - t0
    cpu = time.thread_time() - cpu0
    proc = time.process_time() - proc0
    return {"readings": readings, "batches": batches, "flood_readings": flood, "signals": signals,
            "cpu_s_by_role": _cpu_by_role(roles0, _cpu_sample()),
            "wall_s": wall, "engine_thread_cpu_s": cpu, "process_cpu_s": proc,
            "readings_per_s": readings / wall, "readings_per_engine_cpu_s": readings / cpu,
            "readings_per_process_cpu_s": readings / proc, "mean_batch_s": wall / max(1, batches)}


_STEP_PARTS = ("collect", "decode", "sequence", "rules", "alarms", "snapshot", "commit_wait", "notify", "ack")


def _steps(trace: list[dict[str, float]], wall_s: float) -> dict[str, Any]:
    """The engine thread's wall time per step part over a phase, as fractions of the phase's wall time, and
    the committer's time per commit (which overlaps the next step)."""
    out: dict[str, Any] = {"steps": len(trace)}
    for part in _STEP_PARTS:
        out[f"{part}_share"] = sum(t.get(part, 0.0) for t in trace) / wall_s
    out["commit_ms_mean"] = sum(t.get("commit", 0.0) for t in trace) / max(1, len(trace)) * 1000
    return out


def _run_phase_runner(driver: _RunnerDriver, feed: _Feed, duration_s: float, set_name: bytes, value: float,
                      pairs: Any) -> dict[str, Any]:
    flood = 0
    per_s = E_FLOOD_PER_MIN / 60
    v = b"%g" % value
    trace0 = len(driver.trace)
    stored0 = driver.counter("earlywarn_store_readings_total")
    batches0 = driver.counter("earlywarn_batch_readings_count")
    signals0 = driver.signals()
    roles0 = _cpu_sample()
    t0 = time.perf_counter()
    cpu0 = driver.thread_cpu_s()
    proc0 = time.process_time()
    while (el := time.perf_counter() - t0) < duration_s:
        if driver.inbox.qsize() >= E_SITES:  # one payload round (50 000 readings) waiting at most
            time.sleep(0.002)
            continue
        extra: dict[int, list[bytes]] = {}
        while flood < int(el * per_s):
            i, j = next(pairs)
            extra.setdefault(i, []).append(b'{"tag":"%s%d","value":%s}' % (set_name, j, v))
            flood += 1
        for m in feed.batch(extra):
            driver.inbox.put(m)
    wall = time.perf_counter() - t0
    cpu = driver.thread_cpu_s() - cpu0
    proc = time.process_time() - proc0
    readings = int(driver.counter("earlywarn_store_readings_total") - stored0)
    batches = int(driver.counter("earlywarn_batch_readings_count") - batches0)
    return {"readings": readings, "batches": batches, "flood_readings": flood,
            "signals": int(driver.signals() - signals0), "cpu_s_by_role": _cpu_by_role(roles0, _cpu_sample()),
            "engine_steps": _steps(driver.trace[trace0:], wall),
            "wall_s": wall, "engine_thread_cpu_s": cpu,
            "process_cpu_s": proc, "readings_per_s": readings / wall,
            "readings_per_engine_cpu_s": readings / cpu,
            "readings_per_process_cpu_s": readings / proc, "mean_batch_s": wall / max(1, batches)}


def _drain(engine: Any, feed: _Feed, d: Any, window_s: float, below: Any,
           driver: _RunnerDriver | None) -> None:
    """Untimed, after a flood (chunk): telemetry goes on (the engine flushes notices only on a step that
    did something: an idle step with nothing to commit returns before the dispatcher's flush) until the last
    windows have closed and their deliveries are done."""
    _run_phase(engine, feed, window_s + 1, b"z", E_LIMIT / 2, below, driver)
    if driver is None:
        while d.pending()["groups"]:
            _run_phase(engine, feed, 0.5, b"z", E_LIMIT / 2, below)
        d.wait_idle(60)
        engine.add_notice_records(d.drain_records())
        engine.idle()
    else:  # the engine thread owns the dispatcher: let it go idle (its idle steps flush)
        while not driver.inbox.empty():
            time.sleep(0.01)
        time.sleep(1.0)


def _merge_phases(phases: list[dict[str, Any]]) -> dict[str, Any]:
    """Several timed phases of one kind as one: counts and times summed, rates and step shares recomputed."""
    if len(phases) == 1:
        return phases[0]
    out: dict[str, Any] = {k: sum(p[k] for p in phases) for k in (
        "readings", "batches", "flood_readings", "signals", "wall_s", "engine_thread_cpu_s", "process_cpu_s")}
    roles: dict[str, float] = {}
    for p in phases:
        for role, cpu in p["cpu_s_by_role"].items():
            roles[role] = roles.get(role, 0.0) + cpu
    out["cpu_s_by_role"] = roles
    if all("engine_steps" in p for p in phases):
        steps = sum(p["engine_steps"]["steps"] for p in phases)
        es: dict[str, Any] = {"steps": steps}
        for part in _STEP_PARTS:
            key = f"{part}_share"
            es[key] = sum(p["engine_steps"][key] * p["wall_s"] for p in phases) / out["wall_s"]
        es["commit_ms_mean"] = sum(p["engine_steps"]["commit_ms_mean"] * p["engine_steps"]["steps"]
                                   for p in phases) / max(1, steps)
        out["engine_steps"] = es
    out |= {"readings_per_s": out["readings"] / out["wall_s"],
            "readings_per_engine_cpu_s": out["readings"] / out["engine_thread_cpu_s"],
            "readings_per_process_cpu_s": out["readings"] / out["process_cpu_s"],
            "mean_batch_s": out["wall_s"] / max(1, out["batches"])}
    return out


def run_engine_flood(variant: str, notify_toml: str | None, sinks: _Sinks, *, flood_s: float, base_s: float,
                     seed: int, profile: Path | None = None, runner: bool = True,
                     rounds: int = 1) -> dict[str, Any]:
    """One variant on a fresh engine; `notify_toml` None = no dispatcher at all (what the alarms alone cost).
    `runner`: the phases run through the live Runner loop (see _RunnerDriver), else process_messages
    inline. `rounds` > 1: the flood minute in that many chunks between baselines (see --rounds)."""
    from earlywarn.app import build_engine
    from earlywarn.config import load_config
    from earlywarn.metrics import Metrics
    from earlywarn.pipeline import build_dispatcher

    with tempfile.TemporaryDirectory(prefix="bench-notify-") as tmpd:
        tmp = Path(tmpd)
        cfg = load_config(_engine_files(tmp, sinks.url, notify_toml or ""))
        handler = logging.FileHandler(tmp / "engine.log")  # `earlywarn run` logs at INFO (to stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root = logging.getLogger()
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        metrics = Metrics()
        engine = build_engine(cfg, metrics=metrics)
        if notify_toml is not None:
            engine.dispatcher = build_dispatcher(cfg, engine=engine, publish=sinks.publish, metrics=metrics)
        d = engine.dispatcher or _NoDispatcher()
        flushed: dict[str, int] = {}  # notice id -> wall ms when the flush that prepared it returned
        if notify_toml is not None:
            flush = engine.dispatcher.flush

            def stamped_flush(now_ms: int, **kw: Any) -> list[Notice]:
                notices = flush(now_ms, **kw)
                t = time.time_ns() // 1_000_000
                for n in notices:
                    flushed[n.notice_id] = t
                return notices

            engine.dispatcher.flush = stamped_flush
        feed = _Feed(seed)
        driver: _RunnerDriver | None = None
        below = itertools.cycle(feed.pairs)
        flood_pairs = itertools.cycle(feed.pairs)
        try:
            # warm-up: one batch registers every sensor, the flood tags included (below their limit: they report
            # all along, a flood is their values crossing), then a few steady batches
            engine.process_messages(feed.batch({i: [b'{"tag":"%s%d","value":%g}' % (k, j, E_LIMIT / 2)
                                                    for k in (b"z", b"f") for j in range(E_FLOOD_TAGS)]
                                                for i in range(E_SITES)}))
            if runner:
                driver = _RunnerDriver(cfg, engine, metrics)
            _run_phase(engine, feed, 3.0, b"z", E_LIMIT / 2, below, driver)
            sinks.take()
            window_s = max([cfg.notify.group_wait_ms, *cfg.notify.group_wait_by_severity_ms.values()]) / 1000
            if notify_toml is None:
                window_s = 0.0
            chunk_s = flood_s / rounds
            # rounds > 1: a chunk is timed once its first alarms' notices go out (steady state: alarms and
            # notices both at the flood's rate), so that the window's lag does not push the notify work of a
            # short chunk into the untimed drain; the chunks still raise the flood's alarms at its rate,
            # 10 000 in flood_s
            settle_s = min(window_s, chunk_s / 2) if rounds > 1 else 0.0
            baselines = [_run_phase(engine, feed, base_s, b"z", E_LIMIT / 2, below, driver)]
            floods = []
            prof = None
            if profile is not None and driver is None:
                import cProfile

                prof = cProfile.Profile()
                prof.enable()
            for r in range(rounds):
                if settle_s:
                    _run_phase(engine, feed, settle_s, b"f", E_LIMIT * 1.5, flood_pairs, driver)
                floods.append(
                    _run_phase(engine, feed, chunk_s - settle_s, b"f", E_LIMIT * 1.5, flood_pairs, driver))
                if r < rounds - 1:
                    _drain(engine, feed, d, window_s, below, driver)
                    baselines.append(_run_phase(engine, feed, base_s, b"z", E_LIMIT / 2, below, driver))
            during = _merge_phases(floods)
            if prof is not None:
                prof.disable()
                import pstats

                prof.dump_stats(profile.with_suffix(".prof"))  # for pstats: callers / callees
                with profile.open("w") as f:
                    st = pstats.Stats(prof, stream=f)
                    st.sort_stats("tottime").print_stats(25)
                    st.sort_stats("cumulative").print_stats(40)
            _drain(engine, feed, d, window_s, below, driver)
            received = sinks.take()
            after = _run_phase(engine, feed, base_s, b"z", E_LIMIT / 2, below, driver)
            baselines.append(after)
            before = baselines[0]
            if driver is not None:
                driver.stop()  # drains, commits, closes the dispatcher (sends open groups), checkpoints
            open_alarms = len(engine.alarms.open_alarms())
            n_notices = engine.store.sql("SELECT count(DISTINCT notice_id), count(*) FROM notices")[0]
            outcomes = dict(engine.store.sql("SELECT outcome, count(*) FROM notices GROUP BY ALL"))
        finally:
            if driver is not None:
                driver.stop()
            else:
                d.close()
            engine.store.close()
            root.removeHandler(handler)
            handler.close()
    # each chunk against the baselines on either side of it: drift of the machine's load over minutes (another
    # process's benchmark starting) moves both; the median of the chunks' ratios is reported
    per_round = [f["readings_per_s"] / ((b0["readings_per_s"] + b1["readings_per_s"]) / 2)
                 for f, b0, b1 in zip(floods, baselines, baselines[1:], strict=False)]
    per_round_cpu = [f["readings_per_engine_cpu_s"]
                     / ((b0["readings_per_engine_cpu_s"] + b1["readings_per_engine_cpu_s"]) / 2)
                     for f, b0, b1 in zip(floods, baselines, baselines[1:], strict=False)]
    base_all = _merge_phases(baselines)
    base_proc = base_all["readings_per_process_cpu_s"]
    red = received["mqtt"]["red"]
    other = received["mqtt"]["other"]
    # flush returned -> received: what the executor, the worker threads and the channel add (GIL included)
    handoff = {ch: [t - flushed[nid] for nid, t in received[ch]["received"] if nid in flushed]
               for ch in ("mqtt", "webhook")}
    hook_all = received["webhook"]["red"] + received["webhook"]["other"]
    return {
        "variant": variant,
        "cpu_by_role": _roles_table(base_all, during),
        "notify_toml": notify_toml,
        "rounds": rounds,
        "flood_timed_s_per_round": chunk_s - settle_s,
        "baseline_before": before,
        "flood": during,
        "baseline_after": after,
        "baselines": baselines,
        "baselines_merged": base_all,
        "flood_rounds": floods,
        "ratios_per_round": per_round,
        "ratio_flood_over_baselines": statistics.median(per_round),
        "ratio_pooled": during["readings_per_s"] / base_all["readings_per_s"],
        "ratio_flood_over_before": floods[0]["readings_per_s"] / before["readings_per_s"],
        "ratio_per_engine_cpu_s": statistics.median(per_round_cpu),
        "ratio_per_process_cpu_s": during["readings_per_process_cpu_s"] / base_proc,
        "open_alarms_after": open_alarms,
        "notices": n_notices[0],
        "notice_rows": n_notices[1],
        "notice_outcomes": outcomes,
        "mqtt_notices_received": received["mqtt"]["n"][0],
        "webhook_posts_received": received["webhook"]["n"][0],
        "mqtt_delay_p50_ms": _pct(red + other, 0.50),
        "mqtt_delay_p99_ms": _pct(red + other, 0.99),
        "mqtt_red_delay_p50_ms": _pct(red, 0.50),
        "mqtt_red_delay_p99_ms": _pct(red, 0.99),
        "mqtt_red_delay_max_ms": max(red, default=float("nan")),
        "mqtt_not_red_delay_p99_ms": _pct(other, 0.99),
        "webhook_delay_p50_ms": _pct(hook_all, 0.50),
        "webhook_delay_p99_ms": _pct(hook_all, 0.99),
        "webhook_red_delay_p99_ms": _pct(received["webhook"]["red"], 0.99),
        "mqtt_handoff_p50_ms": _pct(handoff["mqtt"], 0.50),
        "mqtt_handoff_p99_ms": _pct(handoff["mqtt"], 0.99),
        "webhook_handoff_p50_ms": _pct(handoff["webhook"], 0.50),
        "webhook_handoff_p99_ms": _pct(handoff["webhook"], 0.99),
    }


def _roles_table(base: dict[str, Any], during: dict[str, Any]) -> dict[str, Any]:
    """Per role: cores used (CPU s / wall s) and CPU ms per 100 000 readings, baselines (all) and flood."""
    out: dict[str, Any] = {}
    roles = {*base["cpu_s_by_role"], *during["cpu_s_by_role"]}
    for role in roles:
        def per(ph: dict[str, Any], role: str = role) -> tuple[float, float]:
            cpu = ph["cpu_s_by_role"].get(role, 0.0)
            return cpu / ph["wall_s"], cpu / max(1, ph["readings"]) * 1e8  # ms per 100 000 readings
        (c0, r0), (c1, r1) = per(base), per(during)
        out[role] = {"base_cores": c0, "flood_cores": c1, "base_ms_per_100k": r0, "flood_ms_per_100k": r1}
    return dict(sorted(out.items(), key=lambda kv: -kv[1]["flood_cores"]))


def _print_roles(table: dict[str, Any]) -> None:
    print(f"  {'':<30} CPU by role: cores used baseline -> flood; CPU ms per 100 000 readings baseline -> flood")
    for role, r in table.items():
        if max(r["base_cores"], r["flood_cores"]) < 0.005:
            continue
        print(f"  {'':<32}{role:<34}{r['base_cores']:>6.2f} -> {r['flood_cores']:<6.2f}"
              f"{r['base_ms_per_100k']:>8.1f} -> {r['flood_ms_per_100k']:<8.1f}"
              f"({r['flood_ms_per_100k'] - r['base_ms_per_100k']:+.1f})")


def _print_steps(r: dict[str, Any]) -> None:
    b0 = r.get("baselines_merged", r["baseline_before"]).get("engine_steps")
    f = r["flood"].get("engine_steps")
    if not b0 or not f:
        return
    parts = " ".join(f"{p} {b0[p + '_share'] * 100:.0f}->{f[p + '_share'] * 100:.0f}" for p in _STEP_PARTS)
    print(f"  {'':<30} engine thread, % of wall, baselines -> flood: {parts}; steps {b0['steps']}->"
          f"{f['steps']}, commit {b0['commit_ms_mean']:.1f}->{f['commit_ms_mean']:.1f} ms each")


def _kilo(phases: list[dict[str, Any]]) -> str:
    return " ".join(f"{p['readings_per_s'] / 1e3:,.0f}k" for p in phases)


def _fmt(x: float) -> str:
    return "-" if math.isnan(x) else f"{x:,.0f}"  # NaN when nothing was measured


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2 000 alarms across 100 sites (a smoke run)")
    ap.add_argument("--seed", type=int, default=20261128)
    ap.add_argument("--tick-ms", type=int, default=100, help="pipeline loop period: submit + flush")
    ap.add_argument("--group-wait-ms", type=int, default=10_000)
    ap.add_argument("--red-wait-ms", type=int, default=500, help="variant (b): red's own window")
    ap.add_argument("--realtime", action=argparse.BooleanOptionalAction, default=None,
                    help="(b) and (c) on the wall clock, a real minute each (default: on in full runs)")
    ap.add_argument("--engine", action=argparse.BooleanOptionalAction, default=None,
                    help="ingest-rate drop of the engine during a flood (default: on in full runs)")
    ap.add_argument("--engine-variants", default="nabc",
                    help="which of n (no notify stage), a, b, c to run with --engine")
    ap.add_argument("--flood-s", type=float, default=None, help="engine flood phase (default 60 s; quick 15 s)")
    ap.add_argument("--base-s", type=float, default=None,
                    help="engine baseline phases (default 30 s, 15 s with --rounds > 1; quick 10 s)")
    ap.add_argument("--rounds", type=int, default=3,
                    help="engine: the flood in this many chunks, each between two baselines; the median "
                         "of the chunks' ratios is reported (1: one flood between two baselines, as before)")
    ap.add_argument("--inline", action="store_true",
                    help="engine phases: process_messages back to back on the bench thread (as before) "
                         "instead of the live Runner loop")
    ap.add_argument("--profile", action="store_true", help="cProfile the engine's flood phase (results/)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    realtime = (not args.quick) if args.realtime is None else args.realtime
    with_engine = (not args.quick) if args.engine is None else args.engine
    load_before = [round(x, 2) for x in os.getloadavg()]

    n_alarms, n_sites = (2_000, 100) if args.quick else (10_000, 500)
    sites, items = build_workload(args.seed, n_alarms, n_sites)
    gw, red_ms = args.group_wait_ms, args.red_wait_ms
    name_a = f"grouped, group_wait {gw / 1000:g} s"
    name_b = f"grouped, {gw / 1000:g} s, red {red_ms / 1000:g} s"
    name_c = "grouped, group_wait 0 s"
    configs = {
        name_a: notify_config(gw),  # (a) the default
        name_b: notify_config(gw, red_ms),  # (b) [notify.group_wait_by_severity] red
        name_c: notify_config(0),  # (c) no grouping
        f"grouped, group_wait {1:g} s": notify_config(1_000),
    }
    variants = {name: run_dispatcher(sites, items, cfg, args.tick_ms) for name, cfg in configs.items()}
    variants["naive one notice per alarm"] = run_naive(sites, items, args.tick_ms)
    threaded = run_dispatcher(sites, items, configs[name_a], args.tick_ms, threaded=True)

    print(f"notify benchmark ({'quick' if args.quick else 'full'}): {n_alarms} alarms in {FLOOD_MS // 1000} s "
          f"across {n_sites} sites, tick {args.tick_ms} ms, in-memory channels rendering JSON/e-mail, "
          f"Python {platform.python_version()}, load {load_before}")
    print("\n1. Dispatcher alone, engine clock (ManualClock), deliveries inline:")
    print(f"{'variant':<32}{'notices':>8}{'deliv.':>8}{'alarms/s':>10}{'notices/s':>11}{'(per CPU s)':>12}"
          f"{'deliv./s':>10}{'all p50/p99 ms':>16}{'red p50/p99':>13}{'proc. p50/p99 ms':>18}{'wall s':>8}"
          f"{'CPU s':>7}")
    for name, r in variants.items():
        print(f"{name:<32}{r['notices']:>8}{r['deliveries']:>8}{r['alarms_per_s']:>10,.0f}"
              f"{r['notices_per_s']:>11,.0f}{r['notices_per_cpu_s']:>12,.0f}{r['deliveries_per_s']:>10,.0f}"
              f"{r['engine_delay_p50_ms']:>8,.0f}/{r['engine_delay_p99_ms']:<7,.0f}"
              f"{_fmt(r['red_engine_delay_p50_ms']):>6}/{_fmt(r['red_engine_delay_p99_ms']):<6}"
              f"{r['processing_delay_p50_ms']:>9.2f}/{r['processing_delay_p99_ms']:<8.2f}{r['wall_s']:>8.2f}"
              f"{r['cpu_s']:>7.2f}")
    a = variants[name_a]
    print(f"(a) policy: the {gw / 1000:g} s window; p99 {a['engine_delay_p99_ms']:,.0f} ms - window = "
          f"{a['engine_delay_p99_ms'] - gw:,.0f} ms of the engine's own (the {args.tick_ms} ms tick), "
          f"+ processing p99 {a['processing_delay_p99_ms']:.1f} ms")
    print("all/red = alarm event -> handed to the channel on the engine clock (window + tick, by design);")
    print("proc. = wall time from the start of the closing flush to the hand-off (what notify adds).")
    print(f"threaded executor, (a): the pipeline thread spent {threaded['pipeline_thread_s'] * 1000:.1f} ms wall "
          f"({threaded['pipeline_thread_cpu_s'] * 1000:.1f} ms CPU) in submit+flush for {n_alarms} alarms "
          f"({threaded['pipeline_thread_us_per_alarm']:.1f} µs/alarm wall, "
          f"{threaded['pipeline_thread_s'] / (FLOOD_MS / 1000) * 100:.2f} % of the flood minute); "
          f"workers done after {threaded['wall_s']:.2f} s")

    rt: dict[str, Any] = {}
    if realtime:
        print(f"\n2. Real time: the flood over a real minute, wall clock, ThreadedExecutor, tick {args.tick_ms} ms "
              "(delay = send wall time - raise time):")
        for name in (name_b, name_c):
            r = rt[name] = run_realtime(sites, items, configs[name], args.tick_ms)
            met = r["red_engine_delay_p99_ms"] <= 1000
            print(f"  {name:<30} notices {r['notices']:>6}  all p50/p99 {_fmt(r['engine_delay_p50_ms'])}/"
                  f"{_fmt(r['engine_delay_p99_ms'])} ms  red p50/p99 {_fmt(r['red_engine_delay_p50_ms'])}/"
                  f"{_fmt(r['red_engine_delay_p99_ms'])} ms  not red p99 {_fmt(r['not_red_engine_delay_p99_ms'])} ms"
                  f"  (red p99 <= 1 s: {'yes' if met else 'NO'}; ticks late {r['ticks_late_by_more_than_a_tick']})")

    eng: dict[str, Any] = {}
    if with_engine:
        flood_s = args.flood_s or (15.0 if args.quick else 60.0)
        rounds = max(1, args.rounds)
        base_s = args.base_s or (10.0 if args.quick else 30.0 if rounds == 1 else 15.0)
        tomls: dict[str, tuple[str, str | None]] = {
            "n": ("(n) alarms, no notify stage", None),
            "a": ("(a) default: group_wait 10 s", ""),
            "b": (f"(b) red {red_ms} ms", f'[notify.group_wait_by_severity]\nred = "{red_ms}ms"\n'),
            "c": ("(c) group_wait 0", '[notify]\ngroup_wait = "0s"\n'),
        }
        print(f"\n3. Engine ingest rate during a flood: {E_SITES} sites x {E_BG_TAGS}-reading payloads, "
              f"{E_FLOOD_PER_MIN:,} alarms/min for {flood_s:g} s in {rounds} chunk(s), each between "
              f"baselines of {base_s:g} s; "
              f"MQTT to a pipe process, webhooks to a loopback HTTP server")
        sinks = _Sinks()
        try:
            for key in args.engine_variants:
                label, toml = tomls[key]
                prof = RESULTS.parent / f"profile-notify-flood-{key}.txt" if args.profile else None
                r = eng[label] = run_engine_flood(label, toml, sinks, flood_s=flood_s, base_s=base_s,
                                                  seed=args.seed, profile=prof, runner=not args.inline,
                                                  rounds=rounds)
                b0, f, b1 = r["baseline_before"], r["flood"], r["baseline_after"]
                print(f"  {label:<30} readings/s before {b0['readings_per_s']:,.0f}, flood {f['readings_per_s']:,.0f},"
                      f" after {b1['readings_per_s']:,.0f}: flood / baselines {r['ratio_flood_over_baselines']:.3f}"
                      f" (median of {' '.join(f'{x:.3f}' for x in r['ratios_per_round'])}; pooled "
                      f"{r['ratio_pooled']:.3f}; baselines {_kilo(r['baselines'])})"
                      f" (/ before {r['ratio_flood_over_before']:.3f}; per engine-thread CPU s "
                      f"{r['ratio_per_engine_cpu_s']:.3f}, per process CPU s {r['ratio_per_process_cpu_s']:.3f};"
                      f" mean batch {f['mean_batch_s'] * 1000:.0f} ms)")
                print(f"  {'':<30} {f['signals']:,} signals, {r['notices']:,} notices ({r['notice_rows']:,} rows: "
                      f"{r['notice_outcomes']}), MQTT {r['mqtt_notices_received']:,} / webhook "
                      f"{r['webhook_posts_received']:,} received; raised -> MQTT p50/p99 "
                      f"{_fmt(r['mqtt_delay_p50_ms'])}/{_fmt(r['mqtt_delay_p99_ms'])} ms, red p50/p99/max "
                      f"{_fmt(r['mqtt_red_delay_p50_ms'])}/{_fmt(r['mqtt_red_delay_p99_ms'])}/"
                      f"{_fmt(r['mqtt_red_delay_max_ms'])} ms; -> webhook p99 {_fmt(r['webhook_delay_p99_ms'])} ms"
                      f" (red {_fmt(r['webhook_red_delay_p99_ms'])}); flush -> received p50/p99 MQTT "
                      f"{_fmt(r['mqtt_handoff_p50_ms'])}/{_fmt(r['mqtt_handoff_p99_ms'])} ms, webhook "
                      f"{_fmt(r['webhook_handoff_p50_ms'])}/{_fmt(r['webhook_handoff_p99_ms'])} ms; "
                      f"open alarms after {r['open_alarms_after']:,}")
                _print_roles(r["cpu_by_role"])
                _print_steps(r)
        finally:
            sinks.close()
    load_after = [round(x, 2) for x in os.getloadavg()]
    print(f"load average before {load_before}, after {load_after}")

    doc = {
        "benchmark": "notify",
        "quick": args.quick,
        "seed": args.seed,
        "alarms": n_alarms,
        "sites": n_sites,
        "flood_ms": FLOOD_MS,
        "tick_ms": args.tick_ms,
        "group_wait_ms": args.group_wait_ms,
        "red_wait_ms": args.red_wait_ms,
        "python": sys.version,
        "platform": platform.platform(),
        "load_avg_before": load_before,
        "load_avg_after": load_after,
        "variants": variants,
        "threaded_grouped": threaded,
        "realtime": rt,
        "engine_flood": eng,
        "notice_reduction_vs_naive": variants["naive one notice per alarm"]["notices"]
        / max(1, variants[name_a]["notices"]),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
