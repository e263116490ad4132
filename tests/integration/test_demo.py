"""Issue 7: `earlywarn demo` runs on embedded defaults and leaves a DuckDB file worth querying."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

pytestmark = pytest.mark.integration


def run_demo(tmp_path: Path, duration_s: int, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "earlywarn", "demo", "--duration", str(duration_s), "--dir", str(tmp_path)],
        capture_output=True, text=True, timeout=duration_s + 120, env={**os.environ, **env}, cwd=tmp_path, check=False,
    )


def test_demo_60s_leaves_alarms_of_every_plant_type_some_closed_some_open(tmp_path: Path) -> None:
    r = run_demo(tmp_path, 60)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "Closure report" in r.stdout and "earlywarn-demo.duckdb" in r.stdout
    con = duckdb.connect(str(tmp_path / "earlywarn-demo.duckdb"), read_only=True)
    plants = {p for (p,) in con.execute("SELECT DISTINCT plant FROM alarms").fetchall()}
    closed = con.execute("SELECT count(*) FROM alarms WHERE state = 'closed'").fetchone()[0]
    still_open = con.execute("SELECT count(*) FROM alarms WHERE state <> 'closed'").fetchone()[0]
    readings = con.execute("SELECT count(*) FROM readings").fetchone()[0]
    dispositions = con.execute("SELECT count(*) FROM alarms WHERE state = 'closed' AND disposition IS NULL").fetchone()[0]
    con.close()
    assert {"hazchem", "dust", "aluminum"} <= plants
    assert closed > 0 and still_open > 0 and readings > 10_000
    assert dispositions == 0  # every closed alarm carries its recorded cause


def test_demo_falls_back_to_the_embedded_broker(tmp_path: Path) -> None:
    r = run_demo(tmp_path, 15, EARLYWARN_DEMO_BROKER="embedded")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "amqtt" in r.stdout
    con = duckdb.connect(str(tmp_path / "earlywarn-demo.duckdb"), read_only=True)
    assert con.execute("SELECT count(*) FROM readings").fetchone()[0] > 1_000
    con.close()
