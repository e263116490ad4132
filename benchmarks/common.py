"""Shared helpers of the performance suite: machine info, versions, git commit, results, a broker, timing.

Everything here is setup or bookkeeping: nothing in this module is inside a timed part.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
CACHE = RESULTS / "cache"  # seeded workloads built once and reused (git-ignored with the rest of results/)

# tests/brokers.py starts a real mosquitto on a free port; the suite reuses it rather than a second copy
if str(ROOT / "tests") not in sys.path:
    sys.path.insert(0, str(ROOT / "tests"))


# ---------------------------------------------------------------------------------------------
# machine, versions, commit


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def load_avg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def machine_info() -> dict[str, Any]:
    return {
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model(),
        "platform": platform.platform(),
        "load_avg": load_avg(),  # 1, 5, 15 min: the machine is shared, say how busy it was
    }


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for mod in ("numpy", "polars", "duckdb", "paho.mqtt", "msgspec", "pyarrow"):
        try:
            m = __import__(mod, fromlist=["__version__"])
            out[mod.split(".")[0]] = getattr(m, "__version__", None)
        except ImportError:
            out[mod.split(".")[0]] = None
    try:
        out["mosquitto"] = subprocess.run(
            [mosquitto_binary(), "-h"], capture_output=True, text=True, timeout=5, check=False
        ).stdout.splitlines()[0].strip()
    except (OSError, IndexError, RuntimeError, subprocess.TimeoutExpired):
        out["mosquitto"] = None
    return out


def git_commit() -> dict[str, Any]:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], capture_output=True, text=True, cwd=ROOT, check=False).stdout.strip()

    # the working tree is shared: say whether the measured code had uncommitted changes under src/
    return {"commit": git("rev-parse", "--short", "HEAD"), "src_dirty": bool(git("status", "--porcelain", "src"))}


def env_block() -> dict[str, Any]:
    return {"when_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "machine": machine_info(),
            "versions": versions(), "git": git_commit()}


def write_json(name: str, doc: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / name
    path.write_text(json.dumps(doc, indent=2, default=str) + "\n", encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------
# figures: one row of the summary table


@dataclass
class Figure:
    """One measured figure, its same-run baseline and its target. `higher_is_better` orients ratio and target."""

    stage: str
    figure: str
    value: float
    unit: str
    baseline: float | None = None
    baseline_label: str = ""
    target: float | None = None  # an absolute target in `unit`
    target_ratio: float | None = None  # a target on value / baseline
    higher_is_better: bool = True
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if self.baseline in (None, 0) or self.value is None:
            return None
        return self.value / self.baseline if self.higher_is_better else self.baseline / self.value

    @property
    def met(self) -> bool | None:
        checks = []
        if self.target is not None:
            checks.append(self.value >= self.target if self.higher_is_better else self.value <= self.target)
        if self.target_ratio is not None and self.ratio is not None:
            checks.append(self.ratio >= self.target_ratio)
        return None if not checks else all(checks)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ratio": self.ratio, "met": self.met}


# ---------------------------------------------------------------------------------------------
# broker, memory, timing


def mosquitto_binary() -> str:
    from brokers import mosquitto_binary as find

    return find()


@contextmanager
def mosquitto(workdir: Path, *, max_inflight: int = 1000) -> Iterator[Any]:
    """A fresh mosquitto (tests/brokers.py) on a free loopback port, stopped on exit."""
    from brokers import Mosquitto

    b = Mosquitto(workdir, max_inflight=max_inflight).start()
    try:
        yield b
    finally:
        b.stop()


def mosquitto_sub_binary() -> str | None:
    return shutil.which("mosquitto_sub")


def peak_rss_mb() -> float:
    """Peak RSS of this process so far: VmHWM, which starts afresh at exec (ru_maxrss may carry the
    parent's peak into a child started by fork + exec, which made a small point look like the runner)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def timed(fn: Callable[[], Any]) -> tuple[float, float, Any]:
    """(wall s, process CPU s, result) of one call."""
    c0, w0 = time.process_time(), time.perf_counter()
    r = fn()
    return time.perf_counter() - w0, time.process_time() - c0, r


def fmt_rate(x: float | None) -> str:
    if x is None:
        return "-"
    if abs(x) >= 1e6:
        return f"{x / 1e6:.2f} M"
    if abs(x) >= 1e3:
        return f"{x / 1e3:.1f} k"
    return f"{x:.3g}"


# ---------------------------------------------------------------------------------------------
# realistic sites: every plant pack active, simulated by `simulators` (seeded)

PLANT_PREFIX = {"hazchem": "HZ", "dust": "DU", "aluminum": "AL", "steel": "ST"}


def plant_sites(per_plant: int, plants: tuple[str, ...] = tuple(PLANT_PREFIX)) -> list[tuple[str, str]]:
    """`(site, plant)` pairs, `per_plant` of each plant type, interleaved so every prefix covers each plant."""
    return [(f"B{PLANT_PREFIX[p]}-{i:04d}", p) for i in range(per_plant) for p in plants]


def sites_toml(sites: list[tuple[str, str]]) -> str:
    return "".join(f'[[site]]\nid = "{s}"\nplant = "{p}"\ndistrict = "bench"\n' for s, p in sites)


def engine_config(tmp: Path, name: str, sites: list[tuple[str, str]], *, broker_url: str = "mqtt://127.0.0.1:1",
                  mode: str = "process", extra: str = "") -> Path:
    """A config for the shipped rule packs (rules.dir unset) over `sites`; store and files in `tmp`."""
    (tmp / f"{name}-sites.toml").write_text(sites_toml(sites))
    cfg = tmp / f"{name}.toml"
    cfg.write_text(
        f'[broker]\nurl = "{broker_url}"\nclient_id = "{name}"\n'
        f'[store]\npath = "{name}.duckdb"\n[rules]\nsites = "{name}-sites.toml"\n'
        f'[http]\nlisten = ""\n[metrics]\nlisten = ""\n'
        f'[ingest]\nmax_future = "3650d"\nmode = "{mode}"\n' + extra
    )
    return cfg
