"""Issue 6: the same report numbers through the HTTP API of a running engine, the CLI on the stopped
engine's file, and the library; analysts' free SQL is read-only with no file or network access."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from brokers import free_port
from publish import Publisher
from waiting import wait_until

pytestmark = pytest.mark.integration


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "earlywarn", *args], capture_output=True, text=True, timeout=120,
                          check=False)


def test_closure_report_same_through_api_cli_and_file(tmp_path: Path, mosquitto) -> None:
    from earlywarn.app import start_runner
    from earlywarn.config import load_config

    port = free_port()
    (tmp_path / "sites.toml").write_text(
        "".join(f'[[site]]\nid = "SZ-AL-000{i}"\nplant = "aluminum"\ndistrict = "d{i % 2}"\n' for i in range(1, 5))
    )
    cfg_path = tmp_path / "ew.toml"
    cfg_path.write_text(
        f'[broker]\nurl = "{mosquitto.url}"\nclient_id = "ew-rep"\n[store]\npath = "ew.duckdb"\n'
        f'[rules]\nsites = "sites.toml"\n[metrics]\nlisten = ""\n[http]\nlisten = "127.0.0.1:{port}"\n'
    )
    runner = start_runner(load_config(cfg_path))
    url = f"http://127.0.0.1:{port}"
    assert runner.ingest.wait_connected(10)
    pub = Publisher(mosquitto.host, mosquitto.port, client_id="rep-gw")
    now = int(time.time() * 1000)
    try:
        for i in range(1, 5):
            site = f"SZ-AL-000{i}"
            pub.publish(f"ew/{site}/telemetry", json.dumps({"tag": "power_ok", "ts": now - 9000, "value": False}).encode())
            if i % 2:  # two of them recover
                pub.publish(f"ew/{site}/telemetry", json.dumps({"tag": "power_ok", "ts": now - 8000, "value": True}).encode())
        pub.wait_all_acked()
        def power_loss_alarms() -> list[dict] | None:
            alarms = httpx.get(f"{url}/api/alarms").json()["alarms"]
            mine = [a for a in alarms if a["rule_id"] == "power_loss"]
            return alarms if len(mine) == 4 and sum(a["state"] == "cleared_unack" for a in mine) == 2 else None

        alarms = wait_until(power_loss_alarms, 20, "4 power-loss alarms, 2 of them cleared", interval_s=0.1)
        ids = {a["site"]: a["alarm_id"] for a in alarms if a["rule_id"] == "power_loss"}
        assert len(ids) == 4
        httpx.post(f"{url}/api/alarms/{ids['SZ-AL-0001']}/close", json={"disposition": "false_alarm", "note": "test"})
        httpx.post(f"{url}/api/alarms/{ids['SZ-AL-0002']}/ack", json={})
        since = "2020-01-01T00:00:00Z"
        until = "2100-01-01T00:00:00Z"
        as_of = "2100-01-01T00:00:00Z"  # far ahead: every open alarm is past its deadline (due, overdue)
        q = {"since": since, "until": until, "as_of": as_of, "by": "site", "format": "json"}
        api = httpx.get(f"{url}/api/reports/closure", params=q)
        assert api.status_code == 200, api.text
        api_rows = api.json()
        csv = httpx.get(f"{url}/api/reports/closure", params={**q, "format": "csv"})
        assert csv.status_code == 200 and csv.text.splitlines()[0].startswith("site,")
    finally:
        pub.close()
        runner.stop()
        runner.api_server.stop()
        runner.engine.store.close()
    r = _cli("report", "closure", "--db", str(tmp_path / "ew.duckdb"), "--since", since, "--until", until,
             "--as-of", as_of, "--by", "site", "--format", "json")
    assert r.returncode == 0, r.stderr
    cli_rows = json.loads(r.stdout)
    key = lambda rows: sorted(rows, key=lambda x: x["site"])
    assert key(cli_rows) == key(api_rows)
    by_site = {row["site"]: row for row in cli_rows}
    assert by_site["SZ-AL-0001"]["closed"] == 1 and by_site["SZ-AL-0001"]["false_alarm_share"] == 1.0
    assert sum(row["raised"] for row in cli_rows) == 4
    assert sum(row["overdue"] for row in cli_rows) == 3 and sum(row["due"] for row in cli_rows) == 4
    # the config route reads the same file
    r2 = _cli("report", "closure", "--config", str(cfg_path), "--since", since, "--until", until,
              "--as-of", as_of, "--by", "site", "--format", "json")
    assert r2.returncode == 0 and key(json.loads(r2.stdout)) == key(cli_rows)


@pytest.mark.parametrize(
    "query",
    [
        "COPY alarms TO 'x.csv'",
        "SELECT * FROM read_csv('/etc/passwd')",
        "ATTACH '/tmp/other.duckdb' AS o",
        "INSTALL httpfs",
        "DELETE FROM alarms",
    ],
)
def test_free_sql_is_read_only_without_file_or_network_access(tmp_path: Path, query: str) -> None:
    from earlywarn.store import Store

    db = tmp_path / "ew.duckdb"
    Store.open(db).close()
    r = _cli("sql", "--db", str(db), query)
    assert r.returncode != 0, r.stdout
    assert not (Path.cwd() / "x.csv").exists()
    ok = _cli("sql", "--db", str(db), "SELECT count(*) AS n FROM alarms", "--format", "json")
    assert ok.returncode == 0 and json.loads(ok.stdout) == [{"n": 0}]
