"""The HTTP API over a real uvicorn server on loopback: a request waiting for the engine's commit does not
block the server, and actions that arrive together are committed together (one engine step, one fsync),
which is what makes actions/s grow with concurrent clients instead of being one commit per request."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from earlywarn.model import RawMessage, ReadingBatch
from earlywarn.pipeline import Action

pytestmark = pytest.mark.integration


class GatedRunner:
    """A Runner whose engine thread is 'busy' until the test opens the gate, then commits every queued
    action in one step, as the real Runner's loop does with the actions it drains."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.error = None
        self.queued: list[Action] = []
        self.cond = threading.Condition()
        self.steps = 0

    def submit(self, apply: Any) -> Future[Any]:
        a = Action(apply)
        with self.cond:
            self.queued.append(a)
            self.cond.notify_all()
        return a.done

    def wait_queued(self, n: int, timeout_s: float = 10.0) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: len(self.queued) >= n, timeout_s)

    def run_queued(self) -> int:
        with self.cond:
            actions, self.queued = self.queued, []
        self.engine.process_batch(ReadingBatch.empty(), actions=actions)
        self.steps += 1
        return len(actions)


@pytest.fixture
def served(tmp_path: Path):
    from earlywarn.api import serve_in_thread
    from earlywarn.cli import build_engine
    from earlywarn.config import load_config

    (tmp_path / "sites.toml").write_text('[[site]]\nid = "S1"\nplant = "aluminum"\ndistrict = "d1"\n')
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "aluminum.toml").write_text(
        'plant = "aluminum"\n' + "".join(f'[[tag]]\nname = "t{i}"\n' for i in range(8)) + "".join(
            f'[[rule]]\nid = "t{i}_h"\nkind = "threshold"\ntag = "t{i}"\nop = ">"\nlimit = 1.0\n'
            f'severity = "red"\nmessage = "t{i} high"\n' for i in range(8)))
    cfg_path = tmp_path / "ew.toml"
    cfg_path.write_text('[store]\npath = "ew.duckdb"\n[rules]\nsites = "sites.toml"\ndir = "rules"\n'
                        '[metrics]\nlisten = ""\n[http]\nlisten = "127.0.0.1:0"\n')
    cfg = load_config(cfg_path)
    engine = build_engine(cfg)
    now = int(time.time() * 1000)
    engine.process_messages([RawMessage("ew/S1/telemetry", json.dumps(
        {"ts": now, "readings": [{"tag": f"t{i}", "value": 5.0} for i in range(8)]}).encode(), 0, now)])
    ids = [a.alarm_id for a in engine.store.list_alarms()]
    assert len(ids) == 8
    runner = GatedRunner(engine)
    server = serve_in_thread(cfg, runner)
    try:
        yield f"http://127.0.0.1:{server.port}", runner, ids
    finally:
        server.stop()
        engine.store.close()


def _http(method: str, url: str, body: dict | None = None, timeout_s: float = 10) -> tuple[int, dict]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout_s) as r:
        return r.status, json.loads(r.read())


def test_a_request_waiting_for_the_engine_does_not_block_the_server(served) -> None:
    base, runner, ids = served
    with ThreadPoolExecutor(4) as pool:
        ack = pool.submit(_http, "POST", f"{base}/api/alarms/{ids[0]}/ack", {"note": "on my way"})
        assert runner.wait_queued(1), "the ack never reached the engine"
        # the ack is still waiting for its commit; the server answers other requests meanwhile
        t0 = time.monotonic()
        status, _ = _http("GET", f"{base}/health", timeout_s=5)
        status2, shown = _http("GET", f"{base}/api/alarms/{ids[1]}", timeout_s=5)
        assert (status, status2) == (200, 200) and time.monotonic() - t0 < 5
        assert shown["state"] == "active_unack"
        assert not ack.done()
        assert runner.run_queued() == 1
        status, body = ack.result(timeout=10)
    assert status == 200 and body["state"] == "active_ack"


def test_concurrent_actions_share_one_engine_step(served) -> None:
    base, runner, ids = served
    with ThreadPoolExecutor(len(ids)) as pool:
        futs = [pool.submit(_http, "POST", f"{base}/api/alarms/{i}/ack", {}) for i in ids]
        # all eight are queued at once: the event loop did not serve them one commit at a time
        assert runner.wait_queued(len(ids)), f"{len(runner.queued)} of {len(ids)} actions reached the engine"
        assert runner.run_queued() == len(ids)
        results = [f.result(timeout=10) for f in futs]
    assert runner.steps == 1
    assert all(s == 200 and b["state"] == "active_ack" for s, b in results)
    acked = runner.engine.store.sql("SELECT count(*) FROM alarms WHERE state = 'active_ack'")[0][0]
    assert acked == len(ids)
