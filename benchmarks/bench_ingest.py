"""Ingest -> store through a real mosquitto at QoS 1, against a bare paho subscriber, in the same run.

    python benchmarks/bench_ingest.py [--quick] [--window 20|1000] [--mode process|thread]

For each payload shape (100-reading batches, single readings) and each mode:
- drain: the broker holds the whole workload (persistent session, subscriber offline) before the
  subscriber connects; we time from connect to the last reading received (bare) / stored (engine);
- live: the subscriber is connected while a separate publisher process sends as fast as it can.
The bare subscriber only counts and acknowledges on receipt: what the MQTT client library alone can take.
Ratios (engine / bare) are what count on a shared, noisy machine. Writes benchmarks/results/ingest.json.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

import paho.mqtt.client as mqtt
from brokers import Mosquitto
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

SITES = [f"S{i:04d}" for i in range(20)]
T0_MS = 1_764_316_800_000


def workload(n_readings: int, per_msg: int) -> list[tuple[str, bytes]]:
    """Deterministic messages: `per_msg` readings each, distinct (site, tag, ts)."""
    out = []
    i = 0
    while i < n_readings:
        site = SITES[(i // per_msg) % len(SITES)]
        if per_msg == 1:
            out.append((f"ew/{site}/telemetry", b'{"tag":"t%d","ts":%d,"value":%d.5}' % (i % 50, T0_MS + i, i % 97)))
        else:
            body = b",".join(
                b'{"tag":"t%d","ts":%d,"value":%d.25}' % (j % 50, T0_MS + j, j % 97) for j in range(i, i + per_msg)
            )
            out.append((f"ew/{site}/telemetry", b'{"ts":%d,"readings":[%s]}' % (T0_MS + i, body)))
        i += per_msg
    return out


def _publisher_proc(host: str, port: int, msgs: list[tuple[str, bytes]], done: mp.Event) -> None:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-pub-{os.getpid()}")
    c.max_inflight_messages_set(1000)
    c.max_queued_messages_set(0)
    acked = [0]
    c.on_publish = lambda *a: acked.__setitem__(0, acked[0] + 1)
    c.connect(host, port)
    c.loop_start()
    for t, p in msgs:
        c.publish(t, p, qos=1)
    while acked[0] < len(msgs):
        time.sleep(0.005)
    c.disconnect()
    c.loop_stop()
    done.set()


def publish(host: str, port: int, msgs: list[tuple[str, bytes]]) -> tuple[mp.Process, mp.Event]:
    done = mp.Event()
    p = mp.Process(target=_publisher_proc, args=(host, port, msgs, done), daemon=True)
    p.start()
    return p, done


def prefill_while_away(start: object, broker: Mosquitto, msgs: list[tuple[str, bytes]], wait_s: float = 20) -> None:
    """Drain set-up: `start()` an engine once so its persistent session exists, stop it, then let the broker
    take the whole workload for that session while nobody consumes it."""
    r = start()  # type: ignore[operator]
    r.ingest.wait_connected(wait_s)
    time.sleep(0.3)
    r.stop()
    r.engine.store.close()
    p, done = publish(broker.host, broker.port, msgs)
    done.wait()
    p.join()


# -- bare subscriber -------------------------------------------------------------------------------------


class Bare:
    def __init__(self, broker: Mosquitto, client_id: str, readings_per_msg: int) -> None:
        self.n = 0
        self.per = readings_per_msg
        self.first = 0.0
        self.last = 0.0
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                                  protocol=MQTTProtocolVersion.MQTTv5)
        self.client.on_message = self._on
        self.broker = broker
        self.connected = threading.Event()
        self.client.on_connect = lambda c, u, f, rc, p: (c.subscribe("ew/+/telemetry/#", 1), self.connected.set())

    def _on(self, c: mqtt.Client, u: object, m: mqtt.MQTTMessage) -> None:
        if self.n == 0:
            self.first = time.perf_counter()
        self.n += self.per
        self.last = time.perf_counter()

    def connect(self) -> float:
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600
        props.ReceiveMaximum = 65535
        t0 = time.perf_counter()
        self.client.connect(self.broker.host, self.broker.port, clean_start=False, properties=props)
        self.client.loop_start()
        self.connected.wait(10)
        return t0

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def run_bare(broker: Mosquitto, msgs: list[tuple[str, bytes]], per: int, live: bool, tag: str,
             detail: dict[str, float] | None = None) -> float:
    """Readings/s of the bare subscriber; `detail` gets the CPU s of this process (the subscriber) over
    the timed part, comparable with the engine's processes."""
    n_readings = len(msgs) * per
    b = Bare(broker, f"bare-{tag}", per)
    if live:
        b.connect()
        time.sleep(0.3)
        cpu0 = time.process_time()
        p, done = publish(broker.host, broker.port, msgs)
        while b.n < n_readings:
            time.sleep(0.002)
        cpu1 = time.process_time()
        p.join()
        rate = n_readings / (b.last - b.first)
    else:
        b.connect()
        time.sleep(0.3)
        b.stop()
        b = Bare(broker, f"bare-{tag}", per)
        p, done = publish(broker.host, broker.port, msgs)
        done.wait()
        p.join()
        cpu0 = time.process_time()
        t0 = b.connect()
        while b.n < n_readings:
            time.sleep(0.002)
        cpu1 = time.process_time()
        rate = n_readings / (b.last - t0)
    b.stop()
    if detail is not None:
        detail["bare_cpu_s"] = round(cpu1 - cpu0, 3)
    return rate


# -- engine -----------------------------------------------------------------------------------------------


def _engine_config(tmp: Path, broker: Mosquitto, client_id: str, mode: str) -> Path:
    (tmp / "sites.toml").write_text(
        "".join(f'[[site]]\nid = "{s}"\nplant = "hazchem"\ndistrict = "d"\n' for s in SITES)
    )
    (tmp / "rules").mkdir(exist_ok=True)
    (tmp / "rules" / "hazchem.toml").write_text(
        'plant = "hazchem"\n[[tag]]\nname = "t1"\n[[rule]]\nid = "t1_h"\nkind = "threshold"\ntag = "t1"\n'
        'op = ">"\nlimit = 1000.0\nseverity = "blue"\nmessage = "t1 high"\n'
    )
    cfg = tmp / f"{client_id}.toml"
    cfg.write_text(
        f'[broker]\nurl = "{broker.url}"\nclient_id = "{client_id}"\n'
        f'[store]\npath = "{client_id}.duckdb"\n[rules]\nsites = "sites.toml"\ndir = "rules"\n'
        f'[http]\nlisten = ""\n[metrics]\nlisten = ""\n[ingest]\nmax_future = "3650d"\nmode = "{mode}"\n'
    )
    return cfg


def _stored_counter(r: object) -> object:
    """A cheap reader of the engine's stored-readings counter.

    `registry.get_sample_value` collects every metric of the registry; polled every 2 ms from the engine's
    own process it took ~0.3 s of GIL time per million readings away from the engine thread.
    """
    counter = r.metrics.stored  # type: ignore[attr-defined]
    value = getattr(counter, "_value", None)
    if value is not None and hasattr(value, "get"):
        return value.get
    return lambda: r.metrics.registry.get_sample_value("earlywarn_store_readings_total") or 0.0  # type: ignore[attr-defined]


def _cpu_s(proc: object) -> float:
    t = proc.cpu_times()  # type: ignore[attr-defined]
    return t.user + t.system


def run_engine(broker: Mosquitto, tmp: Path, msgs: list[tuple[str, bytes]], per: int, live: bool, tag: str,
               mode: str) -> float:
    """Readings/s of the engine (see run_engine_detail)."""
    return run_engine_detail(broker, tmp, msgs, per, live, tag, mode)["readings_s"]


def run_engine_detail(broker: Mosquitto, tmp: Path, msgs: list[tuple[str, bytes]], per: int, live: bool, tag: str,
                      mode: str) -> dict[str, float]:
    """Readings/s from the engine's connection (like the bare subscriber's clock, which starts at connect())
    to the last reading stored; start-up (spawning the MQTT process, store, rules) is reported apart, and so
    is the CPU time of the engine process, its MQTT process and the broker over the timed part."""
    import psutil

    from earlywarn.app import start_runner
    from earlywarn.config import load_config

    n_readings = len(msgs) * per
    cfg = load_config(_engine_config(tmp, broker, f"ew-{tag}", mode))

    if not live:
        prefill_while_away(lambda: start_runner(cfg), broker, msgs)
    t_start = time.perf_counter()
    r = start_runner(cfg)
    r.ingest.wait_connected(10)
    # messages of a persistent session flow from the CONNACK on, before the SUBACK that makes it `connected`
    connack_ms = getattr(r.ingest, "connack_ms", None)
    t0 = time.perf_counter() - (max(0.0, time.time() - connack_ms / 1000) if connack_ms else 0.0)
    stored = _stored_counter(r)
    me = psutil.Process()
    child_pid = getattr(getattr(r.ingest, "_proc", None), "pid", None)
    procs = {"engine": me, "broker": psutil.Process(broker.proc.pid)}  # type: ignore[union-attr]
    if child_pid:
        procs["mqtt_child"] = psutil.Process(child_pid)
    cpu0 = {k: _cpu_s(p) for k, p in procs.items()}
    if live:
        time.sleep(0.3)
        p, _ = publish(broker.host, broker.port, msgs)
    first = None
    deadline = time.monotonic() + 600
    while stored() < n_readings:
        if first is None and stored() > 0:
            first = time.perf_counter()
        time.sleep(0.002)
        if r.error is not None or time.monotonic() > deadline:
            raise RuntimeError(f"engine failed or stalled at {stored()} of {n_readings}: {r.error}")
    t_end = time.perf_counter()
    cpu = {f"cpu_{k}_s": round(_cpu_s(p) - cpu0[k], 3) for k, p in procs.items()}
    if live:
        p.join()
    r.stop()
    r.engine.store.close()
    start = t0 if not live else (first or t0)
    return {"readings_s": n_readings / (t_end - start), "seconds": round(t_end - start, 3),
            "startup_s": round(t0 - t_start, 3), **cpu}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--window", type=int, default=1000, help="mosquitto max_inflight_messages")
    ap.add_argument("--mode", default="process", choices=["process", "thread"])
    args = ap.parse_args(argv)
    n_batch = 300_000 if args.quick else 2_000_000
    n_single = 20_000 if args.quick else 100_000
    results = []
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for shape, per, n in (("batch100", 100, n_batch), ("single", 1, n_single)):
            msgs = workload(n, per)
            for live in (False, True):
                broker = Mosquitto(tmp / f"b-{shape}-{live}", max_inflight=args.window).start()
                try:
                    label = f"{shape}-{'live' if live else 'drain'}"
                    bare_detail: dict[str, float] = {}
                    bare = run_bare(broker, msgs, per, live, label, bare_detail)
                    e = run_engine_detail(broker, tmp, msgs, per, live, label, args.mode)
                finally:
                    broker.stop()
                eng = e.pop("readings_s")
                results.append({"case": label, "readings": n, "bare_readings_s": round(bare),
                                "engine_readings_s": round(eng), "ratio": round(eng / bare, 3), **e, **bare_detail})
                cpu = "  ".join(f"{k[4:-2]} {v:.2f}" for k, v in e.items() if k.startswith("cpu_"))
                cpu += f"; bare subscriber {bare_detail['bare_cpu_s']:.2f}"
                print(f"{label:16} bare {bare:>12,.0f} r/s   engine {eng:>12,.0f} r/s   ratio {eng / bare:5.2f}"
                      f"   ({e['seconds']:.2f} s; start-up {e['startup_s']:.2f} s apart; CPU s: {cpu})",
                      flush=True)
    load_after = os.getloadavg()
    print(f"load average before {load_before[0]:.2f} / {load_before[1]:.2f} / {load_before[2]:.2f}, "
          f"after {load_after[0]:.2f} / {load_after[1]:.2f} / {load_after[2]:.2f}", flush=True)
    out = {
        "benchmark": "ingest",
        "window": args.window,
        "mode": args.mode,
        "machine": {"python": platform.python_version(), "cpu_count": os.cpu_count(), "platform": platform.platform(),
                    "loadavg_before": load_before, "loadavg_after": load_after},
        "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False,
                                 cwd=HERE).stdout.strip(),
        "results": results,
    }
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / f"ingest-w{args.window}-{args.mode}.json").write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
