"""Decode-stage benchmark: earlywarn's Decoder against a naive per-reading stdlib-json decoder, same run.

    python benchmarks/bench_decode.py [--quick]

Workloads are seeded and built before any timing. Each is a list of RawMessages cut into decode() calls
of about `--call-readings` readings (what the pipeline hands decode at a time). Reported per workload:
readings/s of both decoders and their ratio. Also the raw parse rate of stdlib json, orjson and msgspec
(generic and typed) on the batch payloads: the ceiling any decoder built on each parser can reach.
Results go to benchmarks/results/decode.json (git-ignored).
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import platform
import random
import re
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import msgspec
import polars as pl

from earlywarn.decode import Decoder, _FastMessage
from earlywarn.model import READING_SCHEMA, RawMessage, ReadingBatch, Reject

orjson: Any
try:  # a dev extra: only the raw-parser comparison needs it
    import orjson
except ImportError:  # pragma: no cover
    orjson = None

_CST = timezone(timedelta(hours=8))  # plants report local time with its offset
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
NOW_MS = 1_795_824_000_000  # 2026-11-28T00:00:00Z; every generated ts is before it
RESULTS = Path(__file__).resolve().parent / "results" / "decode.json"


# ---------------------------------------------------------------------------------------------
# Workloads (seeded, built outside the timed part)


def _reading(rng: random.Random, tag: str, with_ts: int | None) -> dict[str, Any]:
    """A realistic reading: mostly analog floats, some digital bools, rare nulls, occasional quality."""
    r: dict[str, Any] = {"tag": tag}
    if with_ts is not None:
        r["ts"] = with_ts
    kind = rng.random()
    if kind < 0.80:
        r["value"] = round(rng.uniform(-50.0, 500.0), rng.choice((1, 2, 3, 4)))
    elif kind < 0.90:
        r["value"] = rng.randint(0, 5000)
    elif kind < 0.99:
        r["value"] = rng.random() < 0.5
    else:
        r["value"] = None
    if rng.random() < 0.05:
        r["q"] = rng.choice(("uncertain", "bad", "good"))
    return r


def build_workloads(seed: int, messages_single: int, messages_batch: int) -> dict[str, list[RawMessage]]:
    rng = random.Random(seed)
    sites = [f"SZ-AL-{i:04d}" for i in range(20)]
    tags = [f"{p}_{i:02d}" for p in ("cw_pressure_mpa", "cw_flow_m3h", "mold_temp_c", "casting_active")
            for i in range(25)]
    t0 = NOW_MS - 3_600_000
    dumps = json.dumps

    single = []
    for i in range(messages_single):
        site = rng.choice(sites)
        payload = dumps(_reading(rng, rng.choice(tags), t0 + i)).encode()
        single.append(RawMessage(f"ew/{site}/telemetry", payload, mid=i, received_ms=NOW_MS))

    batch = []
    for i in range(messages_batch):
        site = rng.choice(sites)
        ts = t0 + i * 100
        readings = [_reading(rng, tag, ts + k if rng.random() < 0.3 else None) for k, tag in
                    enumerate(rng.sample(tags, 100))]
        payload = dumps({"ts": ts, "readings": readings}).encode()
        batch.append(RawMessage(f"ew/{site}/telemetry/gw1", payload, mid=i, received_ms=NOW_MS))

    # RFC 3339 local time with offset: the batch ts of every message, and in every other message also
    # each reading's own ts. Then the same with 1 % bad readings, which sends ~63 % of the messages
    # (those holding one) to the slow path.
    def iso(ts_ms: int) -> str:
        return datetime.fromtimestamp(ts_ms / 1000, tz=_CST).isoformat(timespec="milliseconds")

    rfc3339: list[RawMessage] = []
    dirty: list[RawMessage] = []
    for out, bad_share in ((rfc3339, 0.0), (dirty, 0.01)):
        for i in range(max(1, messages_batch // 4)):
            site = rng.choice(sites)
            ts = t0 + i * 100
            readings = []
            for k, tag in enumerate(rng.sample(tags, 100)):
                r = _reading(rng, tag, None)
                if i % 2:
                    r["ts"] = iso(ts - k)
                if rng.random() < bad_share:
                    r["value"] = "n/a"
                readings.append(r)
            payload = dumps({"ts": iso(ts), "readings": readings}).encode()
            out.append(RawMessage(f"ew/{site}/telemetry", payload, mid=i, received_ms=NOW_MS))

    return {"single": single, "batch100": batch, "batch100_rfc3339": rfc3339, "batch100_dirty": dirty}


# ---------------------------------------------------------------------------------------------
# The naive baseline: what one would write first. stdlib json, a Python loop and a row per reading.

_SITE_RE = re.compile(r"ew/([A-Za-z0-9_.-]{1,64})/telemetry(/.*)?", re.DOTALL)
_TAG_RE = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
_Q = {"good": 0, "uncertain": 1, "bad": 2}


class NaiveDecoder:
    """Per-reading stdlib-json decoding, plainly written. Same output as earlywarn's Decoder."""

    def __init__(self, known_sites: set[str] | None, max_future_ms: int = 300_000) -> None:
        self.known_sites = known_sites
        self.max_future_ms = max_future_ms

    def decode(self, messages: Sequence[RawMessage], now_ms: int) -> tuple[ReadingBatch, list[Reject]]:
        rows: list[tuple[Any, ...]] = []
        rejects: list[Reject] = []
        for msg in messages:
            m = _SITE_RE.fullmatch(msg.topic)
            if not m:
                rejects.append(Reject(msg.received_ms, msg.topic, "bad_topic", ""))
                continue
            site = m.group(1)
            if self.known_sites is not None and site not in self.known_sites:
                rejects.append(Reject(msg.received_ms, msg.topic, "unknown_site", ""))
                continue
            try:
                obj = json.loads(msg.payload)
            except (ValueError, RecursionError):
                rejects.append(Reject(msg.received_ms, msg.topic, "not_json", ""))
                continue
            if "readings" in obj:
                readings, batch_ts = obj["readings"], obj.get("ts")
            else:
                readings, batch_ts = [obj], None
            for r in readings:
                reason = None
                tag = r.get("tag")
                ts = r.get("ts", batch_ts)
                value = r.get("value")
                if not isinstance(tag, str) or not _TAG_RE.fullmatch(tag):
                    reason = "bad_tag"
                elif isinstance(ts, str):
                    try:
                        dt = datetime.fromisoformat(ts)
                        ts = (dt - _EPOCH) // timedelta(milliseconds=1) if dt.tzinfo else None
                    except ValueError:
                        ts = None
                if reason is None and (not isinstance(ts, int) or isinstance(ts, bool)):
                    reason = "bad_ts"
                elif reason is None and not (946_684_800_000 <= ts <= now_ms + self.max_future_ms):
                    reason = "ts_out_of_range"
                if reason is None:
                    if isinstance(value, bool):
                        value = float(value)
                    elif isinstance(value, (int, float)):
                        value = float(value)
                        if not math.isfinite(value):
                            reason = "non_finite_value"
                    elif value is not None:
                        reason = "bad_value"
                q = _Q.get(r.get("q", "good"))
                if reason is None and q is None:
                    reason = "bad_quality"
                if reason is not None:
                    rejects.append(Reject(msg.received_ms, msg.topic, reason, json.dumps(r)[:200]))
                    continue
                rows.append((site, tag, ts, value, 2 if value is None else q))
        frame = pl.DataFrame(rows, schema=READING_SCHEMA, orient="row")
        return ReadingBatch(frame), rejects


# ---------------------------------------------------------------------------------------------
# Timing


def _chunks(messages: list[RawMessage], per_call: int) -> list[list[RawMessage]]:
    return [messages[i : i + per_call] for i in range(0, len(messages), per_call)]


def _time_calls(
    fns: dict[str, Callable[[Any], Any]], items: Sequence[Any], repeats: int
) -> dict[str, dict[str, float]]:
    """Time each `fn(item)`, interleaving the functions call by call, `repeats` times over.

    For each function: the sum over items of each item's best wall time and best CPU time (this thread).
    Best-per-call resists a shared machine: a pause spoils one call's sample, not a whole pass; and
    interleaving exposes every function to the same load, so their ratio stays fair. CPU time is the
    "one core" figure when other processes compete for the cores. GC is collected before each pass.
    """
    best_wall = {k: [math.inf] * len(items) for k in fns}
    best_cpu = {k: [math.inf] * len(items) for k in fns}
    wall, cpu = time.perf_counter, time.thread_time
    for _ in range(repeats):
        gc.collect()
        for i, item in enumerate(items):
            for name, fn in fns.items():
                c0, w0 = cpu(), wall()
                fn(item)
                w1, c1 = wall(), cpu()
                best_wall[name][i] = min(best_wall[name][i], w1 - w0)
                best_cpu[name][i] = min(best_cpu[name][i], c1 - c0)
    return {k: {"wall_s": sum(best_wall[k]), "cpu_s": sum(best_cpu[k])} for k in fns}


def _count_readings(messages: list[RawMessage]) -> int:
    n = 0
    for m in messages:
        obj = json.loads(m.payload)
        n += len(obj["readings"]) if "readings" in obj else 1
    return n


def bench_decoders(name: str, messages: list[RawMessage], per_call_readings: int, repeats: int,
                   known_sites: set[str]) -> dict[str, Any]:
    readings = _count_readings(messages)
    per_msg = max(1, readings // len(messages))
    calls = _chunks(messages, max(1, per_call_readings // per_msg))
    ours = Decoder(known_sites=known_sites)
    # The same Decoder with its typed fast path off: generic parse + per-reading Python validation,
    # i.e. what a decoder built on any dict-producing parser (json, orjson, msgspec generic) costs.
    slow_only = Decoder(known_sites=known_sites, fast=False)
    naive = NaiveDecoder(known_sites)

    # Same output first: a benchmark of a wrong decoder is worthless.
    ours_frames = [ours.decode(c, NOW_MS) for c in calls]
    naive_frames = [naive.decode(c, NOW_MS) for c in calls]
    got = pl.concat([r.batch.frame for r in ours_frames])
    want = pl.concat([b.frame for b, _ in naive_frames])
    assert got.equals(want), f"{name}: Decoder and the naive baseline disagree"
    ours_rejects = sum(len(r.rejects) for r in ours_frames)

    t = _time_calls(
        {
            "decoder": lambda c: ours.decode(c, NOW_MS),
            "slow_path_only": lambda c: slow_only.decode(c, NOW_MS),
            "naive": lambda c: naive.decode(c, NOW_MS),
        },
        calls,
        repeats,
    )
    return {
        "workload": name,
        "messages": len(messages),
        "readings": readings,
        "accepted": got.height,
        "rejected": ours_rejects,
        "decode_calls": len(calls),
        "decoder_readings_per_s": readings / t["decoder"]["wall_s"],
        "slow_path_only_readings_per_s": readings / t["slow_path_only"]["wall_s"],
        "naive_readings_per_s": readings / t["naive"]["wall_s"],
        "ratio_vs_naive": t["naive"]["wall_s"] / t["decoder"]["wall_s"],
        "decoder_readings_per_cpu_s": readings / t["decoder"]["cpu_s"],
        "naive_readings_per_cpu_s": readings / t["naive"]["cpu_s"],
        "ratio_vs_naive_cpu": t["naive"]["cpu_s"] / t["decoder"]["cpu_s"],
        "seconds": t,
    }


def bench_parsers(messages: list[RawMessage], repeats: int) -> list[dict[str, Any]]:
    """Raw parse rate of each JSON library on the same payloads (no validation, no columns)."""
    payloads = [m.payload for m in messages]
    readings = _count_readings(messages)
    mbytes = sum(map(len, payloads)) / 1e6
    typed = msgspec.json.Decoder(_FastMessage)
    generic = msgspec.json.Decoder()
    parsers: dict[str, Callable[[bytes], Any]] = {
        "json.loads": json.loads,
        "msgspec generic": generic.decode,
        "msgspec typed Structs": typed.decode,
    }
    if orjson is not None:
        parsers["orjson.loads"] = orjson.loads
    chunks = [payloads[i : i + 100] for i in range(0, len(payloads), 100)]
    out = []
    for label, parse in parsers.items():
        def run(chunk: list[bytes], parse: Callable[[bytes], Any] = parse) -> None:
            for p in chunk:
                parse(p)

        t = _time_calls({label: run}, chunks, repeats)[label]["wall_s"]
        out.append({"parser": label, "readings_per_s": readings / t, "mb_per_s": mbytes / t})
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small workload, few repeats (a smoke run)")
    ap.add_argument("--seed", type=int, default=20261128)
    ap.add_argument("--call-readings", type=int, default=10_000, help="readings per decode() call")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)

    n_single, n_batch, repeats = (20_000, 1_000, 3) if args.quick else (100_000, 2_000, 7)
    workloads = build_workloads(args.seed, n_single, n_batch)
    known = {f"SZ-AL-{i:04d}" for i in range(20)}

    results = [
        bench_decoders(name, msgs, args.call_readings, repeats, known) for name, msgs in workloads.items()
    ]
    parsers = bench_parsers(workloads["batch100"], repeats)

    print(f"decode benchmark ({'quick' if args.quick else 'full'}; per call best of {repeats}; "
          f"~{args.call_readings} readings per decode() call; Python {platform.python_version()})")
    print(f"{'workload':<17}{'messages':>9}{'readings':>9}{'Decoder r/s':>13}{'(slow path only)':>17}"
          f"{'naive r/s':>11}{'ratio':>7}{'Decoder r/cpu-s':>17}{'cpu ratio':>10}")
    for r in results:
        print(f"{r['workload']:<17}{r['messages']:>9}{r['readings']:>9}"
              f"{r['decoder_readings_per_s']:>13,.0f}{r['slow_path_only_readings_per_s']:>17,.0f}"
              f"{r['naive_readings_per_s']:>11,.0f}"
              f"{r['ratio_vs_naive']:>6.1f}x{r['decoder_readings_per_cpu_s']:>17,.0f}"
              f"{r['ratio_vs_naive_cpu']:>9.1f}x")
    print("ratio = naive time / Decoder time (wall; cpu = this thread's CPU time), same readings, "
          "same output (checked before timing)")
    print("\nraw parse only, batch100 payloads:")
    print(f"{'parser':<24}{'readings/s':>14}{'MB/s':>9}")
    for p in parsers:
        print(f"{p['parser']:<24}{p['readings_per_s']:>14,.0f}{p['mb_per_s']:>9.0f}")

    doc = {
        "benchmark": "decode",
        "quick": args.quick,
        "seed": args.seed,
        "repeats": repeats,
        "call_readings": args.call_readings,
        "python": sys.version,
        "platform": platform.platform(),
        "versions": {"msgspec": msgspec.__version__, "polars": pl.__version__,
                     "orjson": getattr(orjson, "__version__", None)},
        "decoders": results,
        "parsers": parsers,
        "median_ratio_vs_naive": statistics.median(r["ratio_vs_naive"] for r in results),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
