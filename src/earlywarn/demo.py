"""`earlywarn demo`: the whole job on one machine.

Starts a broker (mosquitto when it is on PATH, otherwise the embedded amqtt broker), the engine with the
shipped rule packs, and a few simulated plants of each type running fault scenarios on a compressed clock
(`--speed` plant seconds per wall second). Simulated supervisors acknowledge and close some alarms, as
real ones would, and leave others unanswered so that escalation and the closure report have something to
show. On exit it prints the closure report and where the DuckDB file is.
"""

from __future__ import annotations

import logging
import os
import random
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from earlywarn.clock import ScaledClock

log = logging.getLogger("earlywarn.demo")

DEMO_SITES: list[tuple[str, str, str, str]] = [  # id, plant, district, name
    ("SZ-HC-0001", "hazchem", "wujiang", "Example LPG terminal"),
    ("SZ-HC-0002", "hazchem", "kunshan", "Example fine-chemicals plant"),
    ("SZ-DU-0001", "dust", "wujiang", "Example aluminium polishing works"),
    ("SZ-DU-0002", "dust", "changshu", "Example wood-flour mill"),
    ("SZ-AL-0001", "aluminum", "wujiang", "Example casting plant"),
    ("SZ-AL-0002", "aluminum", "kunshan", "Example billet casthouse"),
]
#: sites whose simulated safety officer never answers: they show up in the non-responding report
SILENT_SITES = {"SZ-HC-0002", "SZ-AL-0002"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return True
        except OSError:
            time.sleep(0.05)
    return False


class Broker:
    """mosquitto if installed, else amqtt in a thread (MQTT 3.1.1 only)."""

    def __init__(self, workdir: Path) -> None:
        self.port = _free_port()
        self.protocol = "5"
        self.kind = ""
        self._proc: subprocess.Popen[bytes] | None = None
        self._loop: Any = None
        exe = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if os.path.exists("/usr/sbin/mosquitto") else None)
        if os.environ.get("EARLYWARN_DEMO_BROKER") == "embedded":  # e.g. to try the fallback where mosquitto is
            exe = None
        if exe:
            conf = workdir / "mosquitto.conf"
            conf.write_text(
                f"listener {self.port} 127.0.0.1\nallow_anonymous true\n"
                # acknowledgements wait for a micro-batch's commit: a wide in-flight window keeps the stream going
                "max_inflight_messages 1000\nmax_queued_messages 0\npersistence false\n"
                + ("user root\n" if hasattr(os, "geteuid") and os.geteuid() == 0 else "")
            )
            self._proc = subprocess.Popen([exe, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            self.kind = f"mosquitto ({exe})"
        else:
            self._start_amqtt()
        if not _wait_port(self.port):
            msg = f"the demo broker ({self.kind}) did not start on port {self.port}"
            raise RuntimeError(msg)

    def _start_amqtt(self) -> None:
        import asyncio

        from amqtt.broker import Broker as AmqttBroker

        self.protocol = "3.1.1"  # amqtt speaks MQTT 3.1.1 only
        self.kind = "amqtt (embedded)"
        cfg = {
            "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{self.port}"}},
            "sys_interval": 0,
            "auth": {"allow-anonymous": True, "plugins": ["auth_anonymous"]},
            "topic-check": {"enabled": False},
        }
        loop = asyncio.new_event_loop()
        self._loop = loop

        def run() -> None:
            asyncio.set_event_loop(loop)
            broker = AmqttBroker(cfg, loop=loop)
            loop.run_until_complete(broker.start())
            loop.run_forever()

        logging.getLogger("amqtt").setLevel(logging.CRITICAL)  # it logs every client disconnect as an error
        logging.getLogger("transitions").setLevel(logging.ERROR)
        threading.Thread(target=run, name="demo-broker", daemon=True).start()

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)


def _write_files(workdir: Path, broker: Broker, db: Path, http_port: int) -> Path:
    tiers = ("plant", "township", "county", "city")
    sites = []
    for sid, plant, district, name in DEMO_SITES:
        contacts = "".join(
            f'[[site.contacts]]\ntier = "{t}"\nname = "{t} duty officer"\nemail = "{t}.{sid.lower()}@example.org"\n'
            for t in tiers
        )
        sites.append(f'[[site]]\nid = "{sid}"\nname = "{name}"\nplant = "{plant}"\ndistrict = "{district}"\n{contacts}')
    (workdir / "demo-sites.toml").write_text("\n".join(sites))
    cfg = workdir / "demo-earlywarn.toml"
    cfg.write_text(
        f'[broker]\nurl = "mqtt://127.0.0.1:{broker.port}"\nprotocol = "{broker.protocol}"\n'
        f'client_id = "earlywarn-demo-{os.getpid()}"\n'
        f'[store]\npath = "{db.name}"\n'
        f'[rules]\nsites = "demo-sites.toml"\n'
        f'[http]\nlisten = "127.0.0.1:{http_port}"\npublic_url = "http://127.0.0.1:{http_port}"\n'
        '[metrics]\nlisten = ""\n'
        '[notify]\nlog = false\n'
    )
    return cfg


def _disposition(rule_id: str, rng: random.Random) -> str:
    if rule_id.startswith("interlock"):
        return "real_handled"
    if rule_id.endswith(("_fault", "_flatline")):
        return "instrument_fault"
    if rule_id.startswith("stale"):
        return "comm_fault"
    return rng.choice(["real_handled", "process_normal", "process_normal", "maintenance_test", "false_alarm"])


class Supervisors:
    """Simulated people answering alarms through the same queue the HTTP API uses.

    Answer delays are drawn in plant time (minutes), so deadlines are met or missed as in a real shift.
    """

    def __init__(self, runner: Any, clock: ScaledClock, seed: int) -> None:
        self.runner = runner
        self.clock = clock
        self.rng = random.Random(seed)
        self._plans: dict[str, tuple[int, int]] = {}  # alarm id -> (ack at, close at) in plant ms
        self.acked = 0
        self.closed = 0

    def step(self) -> None:
        now = self.clock.now_ms()
        for a in self.runner.engine.store.list_alarms(open_only=True, limit=10_000):
            if a.site in SILENT_SITES:
                continue
            plan = self._plans.get(a.alarm_id)
            if plan is None:
                ack_after = self.rng.uniform(1, 12) * 60_000  # some answer in time, some late
                plan = (a.raised_at_ms + int(ack_after), int(self.rng.uniform(5, 50) * 60_000))
                self._plans[a.alarm_id] = plan
            ack_at, close_after = plan
            if not a.state.is_acked and now >= ack_at and a.state.value != "closed":
                if self._do(lambda m, t, i=a.alarm_id: m.ack(i, "duty officer (simulated)", "checking on site", t)):
                    self.acked += 1
            elif a.state.value == "cleared_ack" and a.cleared_at_ms is not None and now >= a.cleared_at_ms + close_after:
                d = _disposition(a.rule_id, self.rng)
                note = "handled by the shift" if d != "other" else "see shift log"
                if self._do(lambda m, t, i=a.alarm_id, d=d, n=note: m.close(i, "duty officer (simulated)", d, n, t)):
                    self.closed += 1

    def _do(self, fn: Callable[[Any, int], Any]) -> bool:
        try:
            self.runner.submit(fn).result(timeout=10)
        except Exception as e:  # noqa: BLE001 - the alarm changed meanwhile (e.g. reactivated): a person would just retry later
            log.debug("simulated supervisor: %s", e)
            return False
        return True


def run_demo(*, duration_s: float = 120.0, speed: float = 60.0, seed: int = 7, workdir: str = ".") -> int:
    """Run the demo for `duration_s` wall seconds; returns the exit code."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

    import simulators
    from earlywarn import reports
    from earlywarn.app import start_runner
    from earlywarn.config import load_config

    wd = Path(workdir).resolve()
    wd.mkdir(parents=True, exist_ok=True)
    db = wd / "earlywarn-demo.duckdb"
    for stale in (db, Path(str(db) + ".wal")):
        if stale.exists():
            stale.unlink()
    tmp = Path(tempfile.mkdtemp(prefix="earlywarn-demo-"))
    os.environ.setdefault("EARLYWARN_LINK_SECRET", secrets.token_urlsafe(32))
    logging.getLogger("earlywarn").setLevel(logging.WARNING)

    broker = Broker(tmp)
    http_port = _free_port()
    cfg_path = _write_files(wd, broker, db, http_port)
    cfg = load_config(cfg_path)
    span_s = duration_s * speed
    start_ms = int(time.time() * 1000 - span_s * 1000)  # the plant time runs up to about "now"
    clock = ScaledClock(start_ms, speed)
    print(f"earlywarn demo: broker {broker.kind} on 127.0.0.1:{broker.port}; plant clock x{speed:g}; "
          f"{len(DEMO_SITES)} plants; {duration_s:g} s", flush=True)
    runner = start_runner(cfg, clock=clock)
    if not runner.ingest.wait_connected(15):
        print("earlywarn demo: the engine could not connect to the demo broker", file=sys.stderr)
        runner.stop()
        broker.stop()
        return 1
    print(f"HTTP API: http://127.0.0.1:{http_port}/api/alarms   DuckDB: {db}", flush=True)

    run = simulators.simulate_sites([(s, p) for s, p, _, _ in DEMO_SITES], start_ms, duration_s, seed, speed)
    pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"demo-plants-{os.getpid()}",
                      protocol=MQTTProtocolVersion.MQTTv311)
    pub.max_inflight_messages_set(1000)
    pub.max_queued_messages_set(0)
    pub.connect("127.0.0.1", broker.port)
    pub.loop_start()
    stop = threading.Event()
    sent = [0]

    def plants() -> None:
        t0 = time.monotonic()
        for m in run.messages():
            if stop.is_set():
                return
            delay = m.at_s - (time.monotonic() - t0)
            if delay > 0 and stop.wait(delay):
                return
            pub.publish(m.topic, m.payload, qos=1)
            sent[0] += 1

    feeder = threading.Thread(target=plants, name="demo-plants", daemon=True)
    feeder.start()
    sups = Supervisors(runner, clock, seed)
    t_end = time.monotonic() + duration_s
    next_print = 0.0
    rc = 0
    try:
        while time.monotonic() < t_end:
            time.sleep(0.5)
            if runner.error is not None:
                print(f"earlywarn demo: engine failed: {runner.error}", file=sys.stderr)
                rc = 1
                break
            sups.step()
            if time.monotonic() >= next_print:
                next_print = time.monotonic() + 5
                _progress(runner, sent[0], sups, clock)
    except KeyboardInterrupt:
        print("\ninterrupted: stopping", flush=True)
    stop.set()
    feeder.join(5)
    pub.disconnect()
    pub.loop_stop()
    runner.stop()
    if runner.api_server is not None:
        runner.api_server.stop()
    _progress(runner, sent[0], sups, clock)
    store = runner.engine.store
    cur = store.read_cursor()
    as_of = clock.now_ms()
    df = reports.closure(cur, since_ms=start_ms, until_ms=as_of + 1, as_of_ms=as_of, by=["site"])
    print("\nClosure report (plant time, as of the end of the demo):")
    print(reports.render(df, "table", None))
    by_plant = dict(cur.execute("SELECT plant, count(*) FROM alarms GROUP BY plant").fetchall())
    states = dict(cur.execute("SELECT state = 'closed', count(*) FROM alarms GROUP BY ALL").fetchall())
    store.close()
    broker.stop()
    print(f"alarms by plant type: {by_plant}; closed {states.get(True, 0)}, open {states.get(False, 0)}")
    print(f"DuckDB file: {db}")
    print(f"Try: earlywarn report closure --db {db} --by plant --as-of now")
    print(f"     earlywarn report non-responding --db {db}")
    print(f"     earlywarn sql --db {db} \"SELECT site, rule_id, state, raised_at FROM alarms ORDER BY raised_at\"")
    print("(the HTTP API stopped with the demo; `earlywarn run --config "
          f"{cfg_path}` serves it again on the same files)")
    shutil.rmtree(tmp, ignore_errors=True)
    return rc


def _progress(runner: Any, sent: int, sups: Supervisors, clock: ScaledClock) -> None:
    m = runner.metrics.registry
    stored = int(m.get_sample_value("earlywarn_store_readings_total") or 0)
    open_alarms = int(m.get_sample_value("earlywarn_alarms_open_alarms") or 0)
    raised = int(m.get_sample_value("earlywarn_alarms_events_total", {"kind": "raised"}) or 0)
    esc = int(m.get_sample_value("earlywarn_alarms_events_total", {"kind": "escalated"}) or 0)
    plant_time = time.strftime("%Y-%m-%d %H:%M", time.gmtime(clock.now_ms() / 1000))
    print(f"[plant time {plant_time}Z] messages {sent:>7,}  readings stored {stored:>9,}  alarms raised {raised:>4}"
          f"  open {open_alarms:>4}  escalations {esc:>3}  acked {sups.acked:>4}  closed {sups.closed:>4}", flush=True)
    recent = runner.engine.store.list_alarms(open_only=True, limit=5)
    for a in recent[:3]:
        print(f"    {a.severity.value:<6} {a.site:<11} {a.rule_id:<28} {a.state.value:<13} tier {a.escalation_tier.label}",
              flush=True)
