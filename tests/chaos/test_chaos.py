"""Issue 9, chaos: the engine under repeated kill -9, broker restarts and a failing DuckDB write.

Each case asserts "nothing lost, nothing duplicated, recovered by itself": every published reading is in
the readings table exactly once, and the engine got there without help (a kill -9 is followed by a plain
restart, as systemd would do; a broker restart and a full disk need nothing at all).
"""

from __future__ import annotations

import logging
import random
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from enginekit import (
    SITES,
    EngineProc,
    new_metrics_port,
    readings_stats,
    stored_keys,
    wait_until,
    write_config,
)
from publish import Publisher, telemetry_messages

pytestmark = pytest.mark.integration


def expected_keys(msgs: list[tuple[str, bytes]]) -> set[tuple[str, str, int]]:
    import json

    out = set()
    for topic, payload in msgs:
        site = topic.split("/")[1]
        doc = json.loads(payload)
        for r in doc.get("readings", [doc]):
            out.add((site, r["tag"], r.get("ts", doc.get("ts"))))
    return out


class SteadyPublisher(threading.Thread):
    """Publishes `msgs` in `slices` equal parts, `pause_s` apart: a stream that spans the faults."""

    def __init__(self, pub: Publisher, msgs: list[tuple[str, bytes]], slices: int, pause_s: float) -> None:
        super().__init__(daemon=True)
        self.pub, self.msgs, self.slices, self.pause_s = pub, msgs, slices, pause_s
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            step = -(-len(self.msgs) // self.slices)
            for off in range(0, len(self.msgs), step):
                self.pub.publish_many(self.msgs[off : off + step])
                time.sleep(self.pause_s)
        except BaseException as e:  # noqa: BLE001 - surfaced by the test
            self.error = e


def wait_engine_idle(eng: EngineProc, timeout_s: float = 120) -> None:
    """Connected, queue empty and no new message for 2 s: the broker has nothing more for us."""
    deadline = time.monotonic() + timeout_s
    last, since = -2.0, time.monotonic()
    while time.monotonic() < deadline:
        n = eng.metric("earlywarn_ingest_messages_total")
        busy = eng.metric("earlywarn_ingest_queue_messages") != 0 or eng.metric("earlywarn_ingest_broker_connected") != 1
        if n != last or busy:
            last, since = n, time.monotonic()
        elif time.monotonic() - since >= 2:
            return
        time.sleep(0.1)
    raise AssertionError("engine did not become idle")


def test_kill_9_three_times_during_a_stream_loses_and_duplicates_nothing(tmp_path: Path, mosquitto) -> None:
    port = new_metrics_port()
    cfg = write_config(tmp_path / "engine", mosquitto.url, client_id="ew-kill3", metrics_port=port)
    eng = EngineProc(cfg, tmp_path / "engine.log", port).start()
    eng.wait_connected()
    msgs = telemetry_messages(SITES, 60_000, single_share=0.1)
    pub = Publisher(mosquitto.host, mosquitto.port, client_id="pub-kill3")
    # ~12 s of stream: longer than three restarts of the engine, so every kill lands mid-stream
    stream = SteadyPublisher(pub, msgs, slices=40, pause_s=0.3)
    rng = random.Random(9)
    try:
        stream.start()
        for k in range(3):
            # each incarnation commits something, then dies mid-batch with acks pending
            wait_until(lambda: eng.metric("earlywarn_store_readings_total") > 1_000, 60, f"incarnation {k} storing")
            time.sleep(rng.uniform(0, 0.5))
            eng.kill9()
            eng.start()
            eng.wait_connected()
        stream.join(120)
        assert stream.error is None
        pub.wait_all_acked()
        wait_engine_idle(eng)
    finally:
        pub.close()
        rc = eng.stop()
    assert rc == 0, eng.log_text()[-3000:]
    assert eng.log_text().count("running: broker") == 4  # three restarts after three kills
    total, distinct = readings_stats(tmp_path / "engine" / "ew.duckdb")
    assert (total, distinct) == (60_000, 60_000), eng.log_text()[-3000:]
    assert stored_keys(tmp_path / "engine" / "ew.duckdb") == expected_keys(msgs)


def test_broker_restarted_twice_during_a_stream_loses_and_duplicates_nothing(tmp_path: Path, mosquitto) -> None:
    port = new_metrics_port()
    cfg = write_config(tmp_path / "engine", mosquitto.url, client_id="ew-brk2", metrics_port=port)
    eng = EngineProc(cfg, tmp_path / "engine.log", port).start()
    eng.wait_connected()
    msgs = telemetry_messages(SITES, 60_000, single_share=0.1)
    pub = Publisher(mosquitto.host, mosquitto.port, client_id="pub-brk2")
    stream = SteadyPublisher(pub, msgs, slices=30, pause_s=0.25)
    try:
        stream.start()
        for _ in range(2):
            wait_until(lambda: eng.metric("earlywarn_store_readings_total") > 2_000, 60, "readings flowing")
            mosquitto.stop()  # SIGTERM: mosquitto writes its persistence file (sessions, queued messages)
            wait_until(lambda: eng.metric("earlywarn_ingest_broker_connected") == 0, 30, "engine sees the outage")
            time.sleep(1)  # the publisher queues meanwhile; the engine retries
            mosquitto.start()
            eng.wait_connected()
        stream.join(120)
        assert stream.error is None
        pub.wait_all_acked()
        wait_engine_idle(eng)
        assert eng.metric("earlywarn_ingest_reconnects_total") >= 2
    finally:
        pub.close()
        rc = eng.stop()
    assert rc == 0, eng.log_text()[-3000:]
    assert readings_stats(tmp_path / "engine" / "ew.duckdb") == (60_000, 60_000), eng.log_text()[-3000:]
    assert stored_keys(tmp_path / "engine" / "ew.duckdb") == expected_keys(msgs)


# -- a DuckDB write that fails ------------------------------------------------------------------------


class DiskFull:
    """The store on a small tmpfs that the test fills up and frees again (needs root and mount(2))."""

    def __init__(self, where: Path) -> None:
        self.dir = where
        self.filler = where / "filler"

    @staticmethod
    def mount(where: Path) -> DiskFull | None:
        where.mkdir(parents=True, exist_ok=True)
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(where)], capture_output=True, check=False)
        return DiskFull(where) if r.returncode == 0 else None

    def fill(self) -> None:
        # unbuffered: a buffered file would fail again at close() with the unwritten rest
        with open(self.filler, "wb", buffering=0) as f:
            for size in (1 << 20, 4096, 1):  # big writes, then top up: no free block left for DuckDB
                try:
                    while True:
                        f.write(b"\0" * size)
                except OSError:
                    pass

    def clear(self) -> None:
        self.filler.unlink()

    def unmount(self) -> None:
        subprocess.run(["umount", "-l", str(self.dir)], capture_output=True, check=False)


class StoreFault:
    """Fallback where mount(2) is not allowed: Store.commit raises StoreError while `failing` is set (the
    same contract as a real I/O error: nothing of the batch stored, the caller keeps it and retries)."""

    def __init__(self, store) -> None:
        from earlywarn.errors import StoreError

        self.failing = threading.Event()
        real = store.commit

        def commit(cb, **kw):
            if self.failing.is_set():
                raise StoreError("injected: No space left on device (test fault)")
            return real(cb, **kw)

        store.commit = commit

    def fill(self) -> None:
        self.failing.set()

    def clear(self) -> None:
        self.failing.clear()


@pytest.fixture(params=["disk_full_tmpfs", "store_raises"])
def fault_kind(request) -> str:
    return request.param


@pytest.fixture
def small_disk(tmp_path: Path, fault_kind: str) -> Iterator[DiskFull | None]:
    if fault_kind != "disk_full_tmpfs":
        yield None
        return
    disk = DiskFull.mount(tmp_path / "disk")
    if disk is None:
        pytest.skip("mount -t tmpfs is not permitted here; the store_raises variant covers the fault path")
    try:
        yield disk
    finally:
        disk.unmount()


def test_a_failing_store_write_stops_acks_keeps_the_backlog_and_recovers_by_itself(
    tmp_path: Path, mosquitto, fault_kind: str, small_disk: DiskFull | None, caplog: pytest.LogCaptureFixture,
) -> None:
    from earlywarn.cli import start_runner
    from earlywarn.config import load_config

    disk = small_disk
    store_dir = disk.dir if disk is not None else tmp_path / "engine"
    # the engine's window (MQTT 5 Receive Maximum) bounds what it holds while it cannot commit; the
    # broker keeps the rest. A small window here, so the bound is visible in a short test.
    cfg_path = write_config(tmp_path / "engine", mosquitto.url, client_id=f"ew-{fault_kind}",
                            broker_extra="receive_maximum = 2000\n")
    text = cfg_path.read_text().replace('path = "ew.duckdb"', f'path = "{store_dir / "ew.duckdb"}"')
    cfg_path.write_text(text)
    caplog.set_level(logging.ERROR, logger="earlywarn.pipeline")
    runner = start_runner(load_config(cfg_path))
    assert runner.ingest.wait_connected(10)
    fault = disk if disk is not None else StoreFault(runner.engine.store)
    acks: list[tuple[float, int]] = []
    real_ack = runner.ingest.ack

    def recording_ack(messages):
        msgs = list(messages)
        acks.append((time.monotonic(), len(msgs)))
        return real_ack(msgs)

    runner.ingest.ack = recording_ack
    reg = runner.metrics.registry

    def stored() -> float:
        return reg.get_sample_value("earlywarn_store_readings_total") or 0.0

    def errors() -> float:
        return reg.get_sample_value("earlywarn_store_errors_total") or 0.0

    msgs = telemetry_messages(SITES, 40_000, single_share=0.25)  # 10 000 single + 300 batch messages
    first, second = msgs[:2000], msgs[2000:]
    pub = Publisher(mosquitto.host, mosquitto.port, client_id=f"pub-{fault_kind}")
    try:
        pub.publish_many(first)
        wait_until(lambda: stored() >= 2000, 30, "the first readings stored")
        fault.fill()
        pub.publish_many(second)
        pub.wait_all_acked()  # the broker has taken every message: from now on it holds what we do not
        wait_until(lambda: errors() >= 3, 60, "failed commits counted")
        t_fault = time.monotonic()
        stored_at_fault = stored()
        time.sleep(1.5)  # the fault persists: the engine keeps retrying and must not move
        assert stored() == stored_at_fault
        assert not [a for a in acks if a[0] > t_fault], "acknowledged while the store was failing"
        # back-pressure: the engine holds at most its receive window (the batch being retried was taken
        # out of the inbox and is part of the window), the broker the rest
        assert runner.inbox.qsize() <= 2000
        # (4 001 was seen once on a loaded machine: the broker's count of the window can be one over, so
        # allow a handful; what matters is that the engine does not take the whole 11 000-message backlog)
        assert runner.metrics.registry.get_sample_value("earlywarn_ingest_messages_total") <= 2000 + 2000 + 20
        assert runner.error is None
        fault.clear()
        wait_until(lambda: stored() >= 40_000, 120, "every reading stored after the fault cleared")
        wait_until(lambda: runner.inbox.qsize() == 0, 30, "the backlog drained")
        assert [a for a in acks if a[0] > t_fault], "acknowledgements resumed"
    finally:
        pub.close()
        runner.stop()
        runner.engine.store.close()
    db = store_dir / "ew.duckdb"
    assert readings_stats(db) == (40_000, 40_000)
    assert stored_keys(db) == expected_keys(msgs)
    assert errors() >= 3
    logged = [r.getMessage() for r in caplog.records if "commit failed" in r.getMessage()]
    assert logged and all("nothing acknowledged" in m for m in logged)
    if disk is not None:
        assert any("No space left on device" in m for m in logged), logged[:3]
