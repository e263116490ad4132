"""Helpers for tests that run `earlywarn run` as a real subprocess: a config on disk, the engine's metrics
endpoint, its log, kill -9 and RSS. Shared by tests/chaos, tests/security and tests/soak."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import duckdb
import waiting
from brokers import free_port

SITES = ["SZ-HC-0001", "SZ-DU-0001", "SZ-AL-0001", "SZ-AL-0002"]
PLANTS = {"SZ-HC-0001": "hazchem", "SZ-DU-0001": "dust", "SZ-AL-0001": "aluminum", "SZ-AL-0002": "aluminum"}


def write_config(
    d: Path, broker_url: str, *, client_id: str = "ew-chaos", metrics_port: int = 0, broker_extra: str = "",
    extra: str = "", sites: Sequence[str] = SITES, rules: str | None = None, store_extra: str = "",
) -> Path:
    """A config, a sites file and one small rule pack per plant (tag_0 > 99 -> blue; tag_1 > 50 -> red)."""
    d.mkdir(parents=True, exist_ok=True)
    (d / "sites.toml").write_text("".join(
        f'[[site]]\nid = "{s}"\nname = "{s}"\nplant = "{PLANTS.get(s, "aluminum")}"\ndistrict = "wujiang"\n\n'
        for s in sites))
    rd = d / "rules"
    rd.mkdir(exist_ok=True)
    for plant in sorted(set(PLANTS.values())):
        (rd / f"{plant}.toml").write_text(rules or (
            f'plant = "{plant}"\n[[tag]]\nname = "tag_0"\n[[tag]]\nname = "tag_1"\n'
            '[[rule]]\nid = "tag_0_h"\nkind = "threshold"\ntag = "tag_0"\nop = ">"\nlimit = 99.0\n'
            'severity = "blue"\nmessage = "tag_0 high"\n'
            '[[rule]]\nid = "tag_1_h"\nkind = "threshold"\ntag = "tag_1"\nop = ">"\nlimit = 50.0\n'
            'severity = "red"\nmessage = "tag_1 high"\n'))
    cfg = d / "earlywarn.toml"
    cfg.write_text(
        f'[broker]\nurl = "{broker_url}"\nclient_id = "{client_id}"\nreconnect_min = "1s"\nreconnect_max = "2s"\n'
        + broker_extra
        + '[store]\npath = "ew.duckdb"\n' + store_extra
        + '[rules]\nsites = "sites.toml"\ndir = "rules"\n[http]\nlisten = ""\n'
        f'[metrics]\nlisten = "{f"127.0.0.1:{metrics_port}" if metrics_port else ""}"\n'
        '[ingest]\nmax_future = "3650d"\n'
        + extra
    )
    return cfg


def wait_until(pred: Callable[[], bool], timeout_s: float, what: str) -> None:
    waiting.wait_until(pred, timeout_s, what)


def metrics_text(port: int) -> str | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
            return r.read().decode()
    except OSError:
        return None


def metric(port: int, name: str) -> float:
    """A sample of the engine's metrics endpoint; -1 when the endpoint does not answer, 0 when absent."""
    text = metrics_text(port)
    if text is None:
        return -1.0
    for line in text.splitlines():
        if line.startswith((name + " ", name + "{")):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


class EngineProc:
    """`python -m earlywarn run --config CFG` with stdout+stderr appended to `log`."""

    def __init__(self, cfg: Path, log: Path, metrics_port: int, env: Mapping[str, str] | None = None,
                 args: Sequence[str] = ()) -> None:
        self.cfg, self.log, self.port = cfg, log, metrics_port
        self.env = {**os.environ, **(env or {})}
        self.args = list(args)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> EngineProc:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "earlywarn", *self.args, "run", "--config", str(self.cfg)],
                stdout=out, stderr=subprocess.STDOUT, env=self.env,
            )
        return self

    def metric(self, name: str) -> float:
        return metric(self.port, name)

    def wait_connected(self, timeout_s: float = 30) -> None:
        wait_until(lambda: self.metric("earlywarn_ingest_broker_connected") == 1.0, timeout_s, "engine connected")

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self, timeout_s: float = 60) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def rss_kb(self) -> int:
        """Resident set of the engine process (the MQTT child excluded: it is bounded by the broker window)."""
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def readings_stats(db: Path) -> tuple[int, int]:
    """(rows, distinct (site, tag, ts)) of the readings table."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        total, distinct = con.execute("SELECT count(*), count(DISTINCT (site, tag, ts)) FROM readings").fetchone()
    finally:
        con.close()
    return int(total), int(distinct)


def stored_keys(db: Path) -> set[tuple[str, str, int]]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        rows = con.execute("SELECT site, tag, epoch_ms(ts) FROM readings").fetchall()
    finally:
        con.close()
    return {(s, t, int(ts)) for s, t, ts in rows}


def new_metrics_port() -> int:
    return free_port()
