"""Issue 7 acceptance: every simulator scenario through the engine, checked against its ground truth.

Each scenario of `simulators.SCENARIOS` runs alone on its own site (seed 0, so every run is the same byte
for byte) through the real replay path: its readings written to Parquet, a sites file and a config in
tmp_path, `build_engine(cfg, replay=True)` + `read_replay_files` + `run_replay`, then the raise rows of the
`signals` table in the DuckDB file go to `simulators.scenarios.check_against_truth`: every expected alarm
raised, in order, within its window; no forbidden rule raised; `max_raises` respected.

Scenarios whose effect lives in arrival time (`mode == "live"`: a gateway outage whose backlog is flushed
later with the original timestamps; the replay file holds every reading, so a replay sees no gap) run
through a real mosquitto and `earlywarn.app.start_runner` instead, with a sample of ordinary scenarios.
The live engine's clock is the wall clock, so the test gives it a manual clock that it moves the way the
wall clock would move for the gateway (to each chunk's publish time before publishing it, and through an
outage in steps), and waits until the engine has stored a chunk before moving on. That is what makes the
live runs deterministic without publishing in real time. Timestamps are shifted so the data ends just
before the real now.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

import duckdb
import pytest
from waiting import wait_until

from earlywarn.clock import ManualClock
from simulators import SCENARIOS, GroundTruth, run_scenario, write_replay
from simulators.scenarios import check_against_truth

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scenario_kit import SEED, write_config

LIVE_ONLY = sorted(n for n in SCENARIOS if run_scenario(n, seed=SEED).truths[0].mode == "live")
REPLAYABLE = [n for n in SCENARIOS if n not in LIVE_ONLY]
#: ordinary scenarios also run through the broker: interlocks within 1-2 s (spark extinguisher, cooling
#: water cut-off), a span-gas test on one detector (no vote), one per plant family
LIVE_SAMPLE = ["spark_burst", "cw_pump_trip", "span_gas_test"]


def raises_in(db: Path, site: str) -> list[tuple[str, int]]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        rows = con.execute(
            "SELECT rule_id, epoch_ms(ts) FROM signals WHERE kind = 'raise' AND site = ? ORDER BY ts, rule_id",
            [site],
        ).fetchall()
    finally:
        con.close()
    return [(r, int(t)) for r, t in rows]


def replay_scenario(name: str, d: Path) -> tuple[GroundTruth, list[tuple[str, int]]]:
    """One scenario through `replay`: Parquet in, DuckDB out; the truth and the engine's raises."""
    from earlywarn.app import build_engine
    from earlywarn.config import load_config
    from earlywarn.pipeline import read_replay_files, run_replay

    run = run_scenario(name, seed=SEED)
    cfg = write_config(d, run.site, run.plant)
    data = d / f"{name}.parquet"
    write_replay(str(data), run.readings())
    engine = build_engine(load_config(cfg), replay=True)
    try:
        batch, rejects = read_replay_files([str(data)])
        assert not rejects
        run_replay(engine, batch, rejects)
    finally:
        engine.store.close()
    return run.truths[0], raises_in(d / "ew.duckdb", run.site)


@pytest.mark.parametrize("name", REPLAYABLE)
def test_scenario_through_replay_matches_ground_truth(name: str, tmp_path: Path) -> None:
    truth, raises = replay_scenario(name, tmp_path)
    problems = check_against_truth(truth, raises)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("name", LIVE_ONLY)
def test_live_only_scenario_replayed_is_just_data(name: str, tmp_path: Path) -> None:
    """In a replay file the flushed backlog is ordinary data with no gap: no stale alarm at all, and
    nothing the scenario forbids (late data raises nothing retroactively)."""
    truth, raises = replay_scenario(name, tmp_path)
    assert [r for r in raises if r[0].startswith("stale")] == []
    assert [r for r in raises if r[0] in truth.forbidden] == []


# ---------------------------------------------------------------------------------------------
# Live: a real broker, the real runner, a clock moved like the gateway's wall clock


class LiveClock(ManualClock):
    """A manual clock that counts how often the engine thread read it (one read per engine loop)."""

    def __init__(self, start_ms: int) -> None:
        super().__init__(start_ms)
        self.engine_reads = 0

    def now_ms(self) -> int:
        if threading.current_thread().name == "earlywarn-engine":
            self.engine_reads += 1
        return super().now_ms()

    def wait_engine_loops(self, n: int = 2, timeout_s: float = 10.0) -> None:
        """Until the engine has looped `n` more times: a tick at the current time has run."""
        target = self.engine_reads + n
        wait_until(lambda: self.engine_reads >= target, timeout_s, "the engine thread to read the clock",
                   interval_s=0.005)


def shifted(payload: bytes, shift_ms: int) -> bytes:
    """A payload with every timestamp moved by `shift_ms` (readings keep their values byte for byte)."""
    doc = json.loads(payload)
    if "ts" in doc:
        doc["ts"] += shift_ms
    for r in doc.get("readings", ()):
        if "ts" in r:
            r["ts"] += shift_ms
    return json.dumps(doc, separators=(",", ":")).encode()


#: a chunk of messages spans at most this much publish time; the engine clock sits at the chunk's first
#: publish time while it is processed, so it is never ahead of the data it sees (live, it is ahead by the
#: transport delay only) and the next chunk's clock is about one batch window after this chunk's data
CHUNK_MS = 120_000
#: a pause in publishing longer than this (an outage) gets a tick at its end, before the next message
SILENCE_MS = 30_000


def live_scenario(name: str, d: Path, broker: Any) -> tuple[GroundTruth, list[tuple[str, int]]]:
    from publish import Publisher

    from earlywarn.app import start_runner
    from earlywarn.config import load_config

    run = run_scenario(name, seed=SEED)
    msgs, _ = run.messages()  # publish order; a flushed outage's backlog is published when it ends
    end_ms = max(m.publish_ms for m in msgs)
    shift = (int(time.time() * 1000) - 10_000 - end_ms) // 1000 * 1000
    truth = dataclasses.replace(
        run.truths[0], injected_at_ms=run.truths[0].injected_at_ms + shift,
        window_start_ms=run.truths[0].window_start_ms + shift, window_end_ms=run.truths[0].window_end_ms + shift,
    )
    chunks: list[list[Any]] = []
    for m in msgs:
        if not chunks or m.publish_ms - chunks[-1][0].publish_ms >= CHUNK_MS:
            chunks.append([])
        chunks[-1].append(m)

    cfg = write_config(d, run.site, run.plant, broker_url=broker.url)
    clock = LiveClock(chunks[0][0].publish_ms + shift)
    runner = start_runner(load_config(cfg), clock=clock)
    pub = None
    try:
        assert runner.ingest.wait_connected(10)
        pub = Publisher(broker.host, broker.port, client_id=f"gw-{name}"[:23])
        registry = runner.metrics.registry
        sent = 0
        for chunk in chunks:
            start = chunk[0].publish_ms + shift
            silence = start - clock.now_ms() > SILENCE_MS
            clock.set(start)
            if silence:
                # the wall clock passed the outage with nothing received: the engine ticks at its end
                # (a stale alarm is raised at last + timeout whenever the tick that sees it runs)
                clock.wait_engine_loops()
            pub.publish_many((m.topic, shifted(m.payload, shift)) for m in chunk)
            pub.wait_all_acked()
            sent += sum(m.payload.count(b'"tag"') for m in chunk)  # one "tag" key per reading
            deadline = time.monotonic() + 60
            while (registry.get_sample_value("earlywarn_store_readings_total") or 0) < sent:
                if runner.error is not None or time.monotonic() > deadline:
                    raise AssertionError(f"{name}: engine stored {registry.get_sample_value('earlywarn_store_readings_total')} "
                                         f"of {sent} readings (error: {runner.error!r})")
                time.sleep(0.005)
    finally:
        if pub is not None:
            pub.close()
        runner.stop()
        runner.engine.store.close()
    assert runner.error is None
    return truth, raises_in(d / "ew.duckdb", run.site)


def test_live_only_scenarios_exist() -> None:
    """The broker tests below are the only check of these: make sure the list is not silently empty."""
    assert LIVE_ONLY == ["gateway_outage"]


@pytest.mark.integration
@pytest.mark.parametrize("name", LIVE_ONLY + LIVE_SAMPLE)
def test_scenario_through_a_broker_matches_ground_truth(name: str, tmp_path: Path, mosquitto: Any) -> None:
    truth, raises = live_scenario(name, tmp_path / "engine", mosquitto)
    problems = check_against_truth(truth, raises)
    assert not problems, "\n".join(problems)
    if name == "gateway_outage":
        # the backlog flushed after the outage (original timestamps) cleared the alarm once and did not
        # raise it again, nor anything else the scenario forbids
        assert [r for r, _ in raises].count("stale_gateway") == 1
