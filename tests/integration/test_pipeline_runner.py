"""The live runner's pipelined loop (pipeline.Runner): step k is committed on the committer thread while step
k + 1 is collected and evaluated. Checked with a real engine and DuckDB store, slow commits and an in-memory
ingest: every message is acknowledged once, only after the commit that holds its reading, in order; commits
never overlap and keep their order; nothing is lost or doubled; an action is answered after its commit."""

from __future__ import annotations

import json
import queue
import threading
import time
from pathlib import Path
from typing import Any

from waiting import wait_until

from earlywarn.app import build_engine
from earlywarn.config import load_config
from earlywarn.metrics import Metrics
from earlywarn.model import RawMessage
from earlywarn.pipeline import Runner

SITE = "SZ-HC-0001"
T0_MS = 1_764_316_800_000


def _config(tmp_path: Path) -> Any:
    sites = f'[[site]]\nid = "{SITE}"\nplant = "hazchem"\ndistrict = "wujiang"\n'
    (tmp_path / "sites.toml").write_text(sites)
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "hazchem.toml").write_text(
        'plant = "hazchem"\n[[tag]]\nname = "t"\n[[rule]]\nid = "t_h"\nkind = "threshold"\ntag = "t"\n'
        'op = ">"\nlimit = 99.0\nseverity = "blue"\nmessage = "t high"\n'
    )
    cfg = tmp_path / "earlywarn.toml"
    cfg.write_text(
        '[broker]\nurl = "mqtt://127.0.0.1:1"\nclient_id = "t"\n'
        f'[store]\npath = "{tmp_path / "ew.duckdb"}"\n'
        f'[rules]\nsites = "{tmp_path / "sites.toml"}"\ndir = "{rules}"\n'
        '[http]\nlisten = ""\n[metrics]\nlisten = ""\n[notify]\nlog = false\n'
        '[ingest]\nmax_future = "3650d"\nbatch_max_age = "20ms"\nidle_flush = "2ms"\n'
    )
    return load_config(cfg)


class _Ingest:
    """Acks recorded with what the store had committed at that moment."""

    def __init__(self, committed: set[int], lock: threading.Lock) -> None:
        self.acks: list[int] = []
        self.not_committed_at_ack: list[int] = []
        self._committed = committed
        self._lock = lock

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def ack(self, messages: Any) -> int:
        with self._lock:
            for m in messages:
                self.acks.append(m.mid)
                if m.mid not in self._committed:
                    self.not_committed_at_ack.append(m.mid)
        return len(messages)


def _msg(i: int) -> RawMessage:
    value = 120.0 if i % 50 == 0 else 1.0  # a raise now and then, cleared by the next reading
    body = json.dumps({"tag": "t", "ts": T0_MS + i, "value": value}).encode()
    return RawMessage(f"ew/{SITE}/telemetry", body, i + 1, T0_MS + i)


def test_pipelined_runner_acks_after_commit_in_order_and_loses_nothing(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    metrics = Metrics()
    engine = build_engine(cfg, metrics=metrics)
    store = engine.store
    committed: set[int] = set()
    lock = threading.Lock()
    in_commit = [0]
    overlaps: list[int] = []
    commit_threads: set[str] = set()
    orig = store.commit

    def slow_commit(cb: Any, **kw: Any) -> Any:
        with lock:
            in_commit[0] += 1
            if in_commit[0] > 1:
                overlaps.append(in_commit[0])
        commit_threads.add(threading.current_thread().name)
        time.sleep(0.01)  # pacing, not waiting: slower than a step's evaluation, so the next one overlaps it
        try:
            res = orig(cb, **kw)
        finally:
            with lock:
                in_commit[0] -= 1
        with lock:
            for ts in (cb.fresh.frame.get_column("ts_ms").to_list() if len(cb.fresh) else []):
                committed.add(ts - T0_MS + 1)  # the message id of that reading
        return res

    store.commit = slow_commit  # type: ignore[method-assign]
    ingest = _Ingest(committed, lock)
    inbox: queue.SimpleQueue[RawMessage] = queue.SimpleQueue()
    runner = Runner(cfg, engine=engine, metrics=metrics, ingest=ingest, inbox=inbox)
    runner.start()
    n = 3_000
    try:
        answered = None
        for i in range(n):
            inbox.put(_msg(i))
            if i % 300 == 0:
                time.sleep(0.005)  # pacing: bursts, so that steps of several sizes overlap commits
            if i == n // 2:
                answered = runner.submit(lambda alarms, now_ms: None)
        assert answered is not None
        answered.result(timeout=30)
        wait_until(lambda: len(ingest.acks) >= n, 30, f"{n} messages acknowledged")
    finally:
        runner.stop()
    assert runner.error is None
    assert ingest.not_committed_at_ack == []
    assert ingest.acks == list(range(1, n + 1))  # each once, in order
    assert overlaps == []
    assert any(name.startswith("earlywarn-commit") for name in commit_threads)  # the pipelined path ran
    assert store.sql("SELECT count(*), count(DISTINCT ts) FROM readings") == [(n, n)]
    rows = store.sql("SELECT batch_seq FROM store_commits ORDER BY committed_at, batch_seq")
    batch_seqs = [r[0] for r in rows]
    assert batch_seqs == sorted(batch_seqs)
    assert store.sql("SELECT count(*) FROM alarms") == [(1,)]  # one alarm, reopened on each raise
    store.close()
