"""Load generator: a steady, measured publish rate of synthetic readings, for benchmarks and soak tests.

    report = run_load("127.0.0.1", 1883, sites=10, tags_per_site=100, rate_readings_s=100_000,
                      duration_s=10, readings_per_message=100, seed=1)

Each of `sites * tags_per_site` sensors is read once per *round*; rounds are `sites * tags_per_site / rate`
seconds apart and that is also their event-time spacing, so the event clock advances with the wall clock
(timestamps start at the wall clock's now). A message carries `readings_per_message` readings of one site:
a slice of one round's tags, or several whole rounds when a site has fewer tags than that (readings of
later rounds carry their own `ts`).

Payloads are pre-built outside the timed loop as templates in which only timestamps are filled in (so a
soak test of hours does not need gigabytes of pre-built payloads), and the loop is paced by a token bucket
on `time.monotonic`. The rate is measured from the first publish to the end of the last message's slot
(the run is not declared over before its schedule is), and the broker's PUBACKs are awaited afterwards.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from simulators.publish import MqttPublisher, TokenBucket
from simulators.signals import rng_for

VALUE_VARIANTS = 8  # each message template exists with this many value sets, cycled per round


@dataclass(frozen=True)
class LoadReport:
    """What a load run achieved. Rates in readings per second."""

    requested_rate: float
    achieved_rate: float
    messages: int
    readings: int
    seconds: float          # first publish -> end of the last slot
    drain_s: float          # after the last publish until every PUBACK arrived
    all_acked: bool
    connections: int
    readings_per_message: int
    sites: int
    tags_per_site: int

    @property
    def error_pct(self) -> float:
        return 100.0 * (self.achieved_rate - self.requested_rate) / self.requested_rate

    def to_json(self) -> str:
        d = asdict(self)
        d["error_pct"] = round(self.error_pct, 3)
        return json.dumps(d, sort_keys=True)


@dataclass
class _Template:
    """One message shape: byte pieces between which round timestamps are inserted."""

    topic: str
    pieces: list[list[bytes]]  # per value variant: len(slots) + 1 pieces
    slots: list[int]           # the round (0 = the batch's own) whose ts goes into each slot
    readings: int


def _template(tags: list[str], values: list[list[float]]) -> tuple[list[bytes], list[int]]:
    """Pieces of `{"ts":T0,"readings":[{"tag":..,"value":..}, .., {"tag":..,"ts":T1,"value":..}]}`."""
    pieces: list[bytes] = []
    slots: list[int] = []
    buf = ['{"ts":']

    def slot(r: int) -> None:
        pieces.append("".join(buf).encode())
        buf.clear()
        slots.append(r)

    slot(0)
    buf.append(',"readings":[')
    first = True
    for r, row in enumerate(values):
        for tag, v in zip(tags, row, strict=True):
            if not first:
                buf.append(",")
            first = False
            if r == 0:
                buf.append(f'{{"tag":"{tag}","value":{float(v)!r}}}')
            else:
                buf.append(f'{{"tag":"{tag}","ts":')
                slot(r)
                buf.append(f',"value":{float(v)!r}}}')
    buf.append("]}")
    pieces.append("".join(buf).encode())
    return pieces, slots


class LoadPlan:
    """Pre-built templates and the message order of a load run (no I/O)."""

    def __init__(self, *, sites: int, tags_per_site: int, rate_readings_s: float, duration_s: float,
                 readings_per_message: int, seed: int = 0, site_prefix: str = "LOAD", start_ms: int | None = None,
                 site_offset: int = 0) -> None:
        if sites < 1 or tags_per_site < 1 or readings_per_message < 1:
            msg = "sites, tags_per_site and readings_per_message must be >= 1"
            raise ValueError(msg)
        if rate_readings_s <= 0 or duration_s <= 0:
            msg = "rate and duration must be > 0"
            raise ValueError(msg)
        sensors = sites * tags_per_site
        self.round_ms = 1000.0 * sensors / rate_readings_s
        if self.round_ms < 1.0:
            # ms timestamps would repeat for a sensor, and the engine would drop the repeats as duplicates.
            msg = (f"rate {rate_readings_s:g}/s over {sensors} sensors is more than 1000 readings/s per sensor; "
                   "add sites or tags")
            raise ValueError(msg)
        self.sites, self.tags = sites, tags_per_site
        self.rate = float(rate_readings_s)
        self.total_readings = round(rate_readings_s * duration_s)
        self.start_ms = int(time.time() * 1000) if start_ms is None else int(start_ms)
        k = readings_per_message
        self.site_ids = [f"{site_prefix}-{s:04d}" for s in range(site_offset, site_offset + sites)]
        rng = rng_for(seed, "load", str(site_offset))
        tag_names = [f"t{t:05d}" for t in range(tags_per_site)]
        # A message is `rounds_per_msg` whole rounds of a site, or a slice of `k` tags of one round.
        if tags_per_site <= k:
            self.rounds_per_msg = max(1, k // tags_per_site)
            chunks = [tag_names]
        else:
            self.rounds_per_msg = 1
            chunks = [tag_names[i:i + k] for i in range(0, tags_per_site, k)]
        self.chunks_per_site = len(chunks)
        self.templates: list[list[_Template]] = []  # [site][chunk]
        for site in self.site_ids:
            per_site = []
            for chunk in chunks:
                variants, slots = [], []
                for _ in range(VALUE_VARIANTS):
                    values = np.round(rng.uniform(0.0, 100.0, size=(self.rounds_per_msg, len(chunk))), 2).tolist()
                    pieces, slots = _template(chunk, values)
                    variants.append(pieces)
                per_site.append(_Template(f"ew/{site}/telemetry", variants, slots, len(chunk) * self.rounds_per_msg))
            self.templates.append(per_site)
        self.readings_per_message = self.templates[0][0].readings

    def ts_of_round(self, r: int) -> bytes:
        return str(self.start_ms + int(r * self.round_ms)).encode()

    def messages(self) -> Iterator[tuple[str, bytes, int]]:
        """`(topic, payload, readings)` in publish order, until `total_readings` are out."""
        remaining = self.total_readings
        group = 0
        while remaining > 0:
            r0 = group * self.rounds_per_msg
            ts_cache = [self.ts_of_round(r0 + r) for r in range(self.rounds_per_msg)]
            variant = group % VALUE_VARIANTS
            for per_site in self.templates:
                for tpl in per_site:
                    if remaining <= 0:
                        return
                    pieces = tpl.pieces[variant]
                    out = [pieces[0]]
                    for i, r in enumerate(tpl.slots):
                        out.append(ts_cache[r])
                        out.append(pieces[i + 1])
                    yield tpl.topic, b"".join(out), tpl.readings
                    remaining -= tpl.readings
            group += 1


def _paced_publish(plan: LoadPlan, host: str, port: int, *, qos: int, connections: int, seed: int,
                   drain_timeout_s: float, barrier: Any = None) -> dict[str, Any]:
    """Connect, (wait at `barrier`), publish `plan` paced by a token bucket, await the PUBACKs."""
    # Materialise the whole run's payloads before the clock starts when it is small enough (short benchmark
    # runs); otherwise fill templates in the loop, which costs a few microseconds per message.
    items = list(plan.messages()) if plan.total_readings / plan.readings_per_message <= 200_000 else plan.messages()
    pub = MqttPublisher(host, port, qos=qos, connections=connections,
                        client_id_prefix=f"ew-load-{seed}-{plan.site_ids[0]}")
    pub.connect()
    try:
        if barrier is not None:
            barrier.wait()
        # burst: 100 ms of traffic absorbs sleep overshoot and short scheduling stalls on a busy machine
        # without a visible catch-up spike on the scale of a second
        bucket = TokenBucket(plan.rate, max(plan.readings_per_message, plan.rate * 0.1))
        readings = messages = 0
        start = time.monotonic()
        bucket.t = start
        for topic, payload, n in items:
            bucket.take(n)
            pub.publish(topic, payload)
            readings += n
            messages += 1
        # The run lasts until the end of the last message's slot, not until its first byte went out.
        end_of_schedule = start + readings / plan.rate
        now = time.monotonic()
        if now < end_of_schedule:
            time.sleep(end_of_schedule - now)
        end = time.monotonic()
        all_acked = pub.flush(drain_timeout_s)
        drain_s = time.monotonic() - end
    finally:
        pub.close()
    return {"readings": readings, "messages": messages, "start": start, "end": end, "all_acked": all_acked,
            "drain_s": drain_s}


def _worker(kw: dict[str, Any], barrier: Any, results: Any) -> None:
    """One publisher process (multiprocessing target)."""
    try:
        plan = LoadPlan(**kw["plan"])
        results.put(_paced_publish(plan, kw["host"], kw["port"], qos=kw["qos"], connections=kw["connections"],
                                   seed=kw["seed"], drain_timeout_s=kw["drain_timeout_s"], barrier=barrier))
    except Exception as e:  # noqa: BLE001 - reported to the parent, which must never hang on the barrier
        barrier.abort()
        results.put({"error": f"{type(e).__name__}: {e}"})


def run_load(host: str, port: int, *, sites: int, tags_per_site: int, rate_readings_s: float, duration_s: float,
             readings_per_message: int, qos: int = 1, seed: int = 0, connections: int | None = None,
             processes: int | None = None, site_prefix: str = "LOAD", drain_timeout_s: float = 60.0) -> LoadReport:
    """Publish `rate_readings_s * duration_s` readings at a steady `rate_readings_s`; measure what was achieved.

    One paho client in one Python process tops out near 10 000 publishes/s (measured 9 700/s at one reading
    per message on 2 cores), and more clients in the same process only add GIL contention. So high reading
    rates come from batches (`readings_per_message`), and high *message* rates from `processes` publisher
    processes (default: one per 6 000 messages/s, at most the CPU count), each with its own connection(s)
    and its share of the sites, started together at a barrier.
    """
    start_ms = int(time.time() * 1000)
    common = {"tags_per_site": tags_per_site, "duration_s": duration_s, "readings_per_message": readings_per_message,
              "seed": seed, "site_prefix": site_prefix, "start_ms": start_ms}
    probe = LoadPlan(sites=sites, rate_readings_s=rate_readings_s, **common)
    msg_rate = rate_readings_s / probe.readings_per_message
    n_proc = processes or max(1, min(os.cpu_count() or 1, math.ceil(msg_rate / 6000)))
    n_proc = max(1, min(n_proc, sites))
    n_conn = connections or 1
    if n_proc == 1:
        res = _paced_publish(probe, host, port, qos=qos, connections=n_conn, seed=seed, drain_timeout_s=drain_timeout_s)
        parts = [res]
    else:
        ctx = mp.get_context("spawn")  # no paho threads or sockets inherited through fork
        barrier = ctx.Barrier(n_proc)
        results = ctx.Queue()
        procs = []
        bounds = np.linspace(0, sites, n_proc + 1).round().astype(int)
        for w in range(n_proc):
            lo, hi = int(bounds[w]), int(bounds[w + 1])
            plan_kw = {**common, "sites": hi - lo, "site_offset": lo,
                       "rate_readings_s": rate_readings_s * (hi - lo) / sites, "seed": seed}
            kw = {"plan": plan_kw, "host": host, "port": port, "qos": qos, "connections": n_conn, "seed": seed,
                  "drain_timeout_s": drain_timeout_s}
            p = ctx.Process(target=_worker, args=(kw, barrier, results), daemon=True)
            p.start()
            procs.append(p)
        parts = [results.get(timeout=duration_s + drain_timeout_s + 120) for _ in procs]
        for p in procs:
            p.join(timeout=10)
        errors = [r["error"] for r in parts if "error" in r]
        if errors:
            msg = f"load worker failed: {errors[0]}"
            raise ConnectionError(msg)
    readings = sum(r["readings"] for r in parts)
    messages = sum(r["messages"] for r in parts)
    # time.monotonic is CLOCK_MONOTONIC, shared by the processes of one machine
    seconds = max(r["end"] for r in parts) - min(r["start"] for r in parts)
    return LoadReport(float(rate_readings_s), readings / seconds if seconds > 0 else 0.0, messages, readings, seconds,
                      max(r["drain_s"] for r in parts), all(r["all_acked"] for r in parts), n_conn * n_proc,
                      probe.readings_per_message, sites, tags_per_site)


def build_parser(prog: str = "earlywarn simulate") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description="Publish synthetic readings at a steady, measured rate.")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=1883)
    p.add_argument("--sites", type=int, default=10)
    p.add_argument("--tags-per-site", type=int, default=100)
    p.add_argument("--rate", type=float, default=10_000.0, help="readings per second")
    p.add_argument("--duration", type=float, default=10.0, help="seconds")
    p.add_argument("--batch", type=int, default=100, help="readings per message")
    p.add_argument("--qos", type=int, choices=(0, 1, 2), default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--connections", type=int, default=None, help="paho connections per publisher process (default 1)")
    p.add_argument("--processes", type=int, default=None,
                   help="publisher processes (default: one per 6000 messages/s, at most the CPU count)")
    p.add_argument("--site-prefix", default="LOAD")
    p.add_argument("--json", action="store_true", help="print the report as one JSON line")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """`earlywarn simulate` load mode. Prints the report; exit 1 when the rate is off by more than 5 %."""
    args = build_parser().parse_args(argv)
    try:
        rep = run_load(args.host, args.port, sites=args.sites, tags_per_site=args.tags_per_site,
                       rate_readings_s=args.rate, duration_s=args.duration, readings_per_message=args.batch,
                       qos=args.qos, seed=args.seed, connections=args.connections, processes=args.processes,
                       site_prefix=args.site_prefix)
    except (ValueError, ConnectionError, OSError, mp.TimeoutError) as e:
        print(f"simulate: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(rep.to_json())
    else:
        print(f"requested {rep.requested_rate:,.0f} readings/s, achieved {rep.achieved_rate:,.0f} readings/s "
              f"({rep.error_pct:+.2f} %); {rep.readings:,} readings in {rep.messages:,} messages "
              f"({rep.readings_per_message}/message, {rep.connections} connection(s)) over {rep.seconds:.2f} s; "
              f"acks {'complete' if rep.all_acked else 'INCOMPLETE'} {rep.drain_s:.2f} s after the last publish")
    return 0 if abs(rep.error_pct) <= 5.0 and rep.all_acked else 1
