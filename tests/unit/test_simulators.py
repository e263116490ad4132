"""Simulators: determinism, the public payload format, scenario signatures and ground truth, transport
faults, replay files, the load plan and its pacing. No broker and no wall-clock sleeps here."""

from __future__ import annotations

import ast
import itertools
import json
import math
import re
import tomllib
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from simulators.load import LoadPlan
from simulators.payload import encode, render
from simulators.plants import PHASE_STEADY, build_trace
from simulators.publish import TokenBucket, readings_frame, write_csv, write_ndjson, write_parquet
from simulators.run import DEFAULT_START_MS, auto_schedule, run_scenario, simulate_site, simulate_sites
from simulators.scenarios import (
    SCENARIOS,
    check_against_truth,
    read_ground_truth_json,
    scenarios_for,
    write_ground_truth_json,
)
from simulators.transport import MALFORMED_KINDS, TransportFaults, apply

ROOT = Path(__file__).resolve().parents[2]
TAG_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
TOPIC_RE = re.compile(r"^ew/[A-Za-z0-9_.-]{1,64}/telemetry$")


def _rule_ids(plant: str) -> set[str]:
    data = tomllib.loads((ROOT / "rules" / f"{plant}.toml").read_text(encoding="utf-8"))
    return {r["id"] for r in data.get("rule", [])}


def _pack_tags(plant: str) -> set[str]:
    data = tomllib.loads((ROOT / "rules" / f"{plant}.toml").read_text(encoding="utf-8"))
    return {t["name"] for t in data.get("tag", [])}


def _public_readings(payload: bytes) -> list[dict]:
    """Parse one payload strictly as product.md §3 says; return its readings with ts filled in."""
    obj = json.loads(payload.decode("utf-8"), parse_constant=lambda c: pytest.fail(f"non-finite {c}"))
    assert isinstance(obj, dict)
    if "readings" in obj:
        assert set(obj) == {"ts", "readings"}
        assert isinstance(obj["ts"], int)
        out = []
        for r in obj["readings"]:
            assert set(r) <= {"tag", "ts", "value", "q"} and {"tag", "value"} <= set(r)
            out.append({**r, "ts": r.get("ts", obj["ts"])})
    else:
        assert set(obj) <= {"tag", "ts", "value", "q"} and {"tag", "ts", "value"} <= set(obj)
        out = [obj]
    for r in out:
        assert TAG_RE.match(r["tag"])
        assert isinstance(r["ts"], int) and not isinstance(r["ts"], bool)
        assert isinstance(r["value"], (int, float, bool))
        assert r.get("q", "good") in ("good", "uncertain", "bad")
    return out


# ---------------------------------------------------------------------------------------------
# layering


def test_simulators_never_import_earlywarn() -> None:
    for path in (ROOT / "simulators").rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            assert not any(n == "earlywarn" or n.startswith("earlywarn.") for n in names), path


# ---------------------------------------------------------------------------------------------
# determinism


def test_same_seed_gives_identical_bytes() -> None:
    def once(seed: int) -> list[bytes]:
        run = run_scenario("flange_leak", seed=seed)
        msgs, _ = run.messages(transport=TransportFaults.realistic(malformed_rate=0.01))
        return [m.topic.encode() + b" " + str(m.publish_ms).encode() + b" " + m.payload for m in msgs]

    a, b = once(11), once(11)
    assert a == b
    assert once(12) != a
    pairs = list(run_scenario("flange_leak", seed=11).publish_order())
    assert pairs == [(m.topic, m.payload) for m in run_scenario("flange_leak", seed=11).messages()[0]]


def test_same_seed_same_demo_stream_and_truth(tmp_path: Path) -> None:
    sites = [("HZ-1", "hazchem"), ("DU-1", "dust"), ("AL-1", "aluminum")]
    a = simulate_sites(sites, DEFAULT_START_MS, duration_s=20, seed=5, speed=60)
    b = simulate_sites(sites, DEFAULT_START_MS, duration_s=20, seed=5, speed=60)
    assert list(a.messages()) == list(b.messages())
    pa = write_ground_truth_json(tmp_path / "a.json", a.truths)
    pb = write_ground_truth_json(tmp_path / "b.json", b.truths)
    assert pa.read_bytes() == pb.read_bytes()


# ---------------------------------------------------------------------------------------------
# plant models and payloads


@pytest.mark.parametrize("plant", ["hazchem", "dust", "aluminum", "steel"])
@pytest.mark.parametrize("window", [None, 1000])
def test_payloads_are_public_format(plant: str, window: int | None) -> None:
    trace, _ = build_trace(plant, f"S-{plant}", DEFAULT_START_MS, 1200, seed=1)
    readings = render(trace, seed=1)
    msgs = encode(readings, batch_window_ms=window)
    n = 0
    for m in msgs:
        assert TOPIC_RE.match(m.topic)
        n += len(_public_readings(m.payload))
    assert n == len(readings)


@pytest.mark.parametrize("plant", ["hazchem", "dust", "aluminum", "steel"])
def test_plant_tags_are_declared_in_the_rule_pack(plant: str) -> None:
    trace, _ = build_trace(plant, "S", DEFAULT_START_MS, 60, seed=1)
    assert set(trace.specs) <= _pack_tags(plant)


def test_booleans_are_json_booleans_and_enums_integers() -> None:
    trace, _ = build_trace("aluminum", "AL", DEFAULT_START_MS, 600, seed=2)
    readings = [r for m in encode(render(trace, 2), batch_window_ms=None) for r in _public_readings(m.payload)]
    by_tag = {}
    for r in readings:
        by_tag.setdefault(r["tag"], []).append(r["value"])
    assert all(isinstance(v, bool) for v in by_tag["casting_active"])
    assert all(type(v) is int for v in by_tag["casting_phase"])
    assert all(type(v) is int for v in by_tag["casting_mode"])


def test_state_tags_change_immediately_and_repeat_every_10s() -> None:
    trace, _ = build_trace("dust", "DU", DEFAULT_START_MS, 3 * 86400 // 8, seed=3)
    r = render(trace, 3)
    ts, _ = r.of("fan_running")
    assert np.all(np.diff(ts) <= 10_000)
    edges = trace.states["fan_running"].edges(trace.n * 1000)
    for t_ms, val in edges[1:]:
        assert DEFAULT_START_MS + t_ms in set(ts.tolist())


def test_hazchem_dynamics() -> None:
    trace, _ = build_trace("hazchem", "HZ", DEFAULT_START_MS, 12 * 3600, seed=4)
    level, temp, press = (trace.analog[t] for t in ("tank_level_pct", "tank_temp_c", "tank_pressure_mpa"))
    assert 15 <= level.min() and level.max() <= 80  # the normal band of domain §1a
    assert np.corrcoef(temp, press)[0, 1] > 0.99  # pressure follows temperature
    assert 0.3 <= press.min() and press.max() <= 1.1
    assert temp.max() - temp.min() > 3  # diurnal swing shows through the sphere's lag
    rt = trace.analog["reactor_temp_c"]
    assert 58 <= rt.min() and rt.max() <= 80 and np.abs(np.diff(rt)).max() * 60 < 2.0  # no RoC alarm in normal ops


def test_dust_fan_starts_first_and_stops_last() -> None:
    trace, _ = build_trace("dust", "DU", DEFAULT_START_MS, 2 * 86400, seed=5)
    fan = trace.states["fan_running"].on_grid(trace.n)
    prod = trace.states["production_running"].on_grid(trace.n)
    assert not np.any((prod == 1) & (fan == 0))
    assert prod.sum() > 0.4 * trace.n  # two shifts


def test_casting_drops() -> None:
    trace, plan = build_trace("aluminum", "AL", DEFAULT_START_MS, 86400, seed=6)
    durations_min = [(d.cast_end_s - d.cast_start_s) / 60 for d in plan.drops if 0 <= d.cast_start_s < 80000]
    assert 6 <= len(durations_min) <= 12
    assert all(45 <= d <= 120 for d in durations_min)
    length = trace.analog["cast_length_mm"]
    assert length.max() <= 8000
    phase = trace.states["casting_phase"]
    assert PHASE_STEADY in phase.values


# ---------------------------------------------------------------------------------------------
# scenarios and ground truth


def test_at_least_eight_scenarios_per_main_plant() -> None:
    for plant in ("hazchem", "dust", "aluminum"):
        assert len(scenarios_for(plant)) >= 8, plant


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_scenario_ground_truth_is_consistent(name: str) -> None:
    sc = SCENARIOS[name]
    run = run_scenario(name, seed=1)
    (gt,) = run.truths
    ids = _rule_ids(sc.plant)
    assert gt.expected or gt.max_raises
    for e in gt.expected:
        assert e.rule_id in ids, f"{e.rule_id} not in rules/{sc.plant}.toml"
        assert e.lo_s <= e.hi_s and e.order >= 1
    assert not {e.rule_id for e in gt.expected} & set(gt.forbidden)
    assert set(gt.forbidden) <= ids and set(gt.max_raises) <= ids
    assert gt.injected_at_ms == DEFAULT_START_MS + sc.pre_s * 1000
    assert gt.window_start_ms <= gt.injected_at_ms < gt.window_end_ms
    orders = [e.order for e in sorted(gt.expected, key=lambda e: e.lo_s)]
    assert orders == sorted(orders)


def _first(ts: np.ndarray, mask: np.ndarray) -> int | None:
    return int(ts[np.argmax(mask)]) if mask.any() else None


def test_cw_pump_trip_signature() -> None:
    run = run_scenario("cw_pump_trip", seed=2)
    t0 = run.truths[0].injected_at_ms
    r = run.readings()
    ts, p = r.of("cw_pressure_mpa")
    t_ll = _first(ts, (ts >= t0) & (p < 0.15))
    assert t_ll is not None and t_ll - t0 <= 3000
    _, f = r.of("cw_flow_m3h")
    assert f[ts >= t0 + 5000][:10].max() < 60
    gts, g = r.of("cutoff_gate_closed")
    t_gate = _first(gts, (gts >= t0) & (g == 1))
    assert t_gate is not None and 0 < t_gate - t_ll <= 2000
    tts, tilt = r.of("furnace_tilt_deg")
    assert tilt[(tts > t_ll + 20_000) & (tts < t_ll + 30_000)].max() < 2
    _, length = r.of("cast_length_mm")
    lts, _ = r.of("cast_length_mm")
    assert 2300 <= length[np.searchsorted(lts, t0)] <= 2700


def test_flange_leak_signature() -> None:
    run = run_scenario("flange_leak", seed=3)
    t0 = run.truths[0].injected_at_ms
    r = run.readings()
    peak = {d: r.of(f"gas_lel_pct_{d}")[1][r.of(f"gas_lel_pct_{d}")[0] >= t0].max() for d in "abc"}
    assert peak["a"] >= 50 and 25 <= peak["b"] < 50 and peak["c"] < 10
    ts, a = r.of("gas_lel_pct_a")
    t50 = _first(ts, (ts >= t0) & (a >= 50))
    ets, esd = r.of("esd_valve_closed")
    t_esd = _first(ets, esd == 1)
    assert t50 is not None and t_esd is not None and 0 <= t_esd - t50 <= 10_000


def test_overfill_signature() -> None:
    run = run_scenario("overfill_esd_fails", seed=4)
    t0 = run.truths[0].injected_at_ms
    ts, level = run.readings().of("tank_level_pct")
    assert abs(level[np.searchsorted(ts, t0)] - 70) < 2
    t90 = _first(ts, (ts >= t0) & (level > 90))
    assert t90 is not None and 35 * 60_000 <= t90 - t0 <= 41 * 60_000
    assert level.max() >= 94
    _, esd = run.readings().of("esd_valve_closed")
    assert not esd.any()


def test_spark_burst_seventh_spark_not_extinguished() -> None:
    run = run_scenario("spark_burst", seed=5)
    sparks = run.truths[0].details["sparks"]
    assert [s["extinguished_after_ms"] is None for s in sparks].index(True) == 6
    assert all(150 <= s["extinguished_after_ms"] <= 400 for k, s in enumerate(sparks) if k != 6)


def test_frozen_transmitter_is_exact() -> None:
    run = run_scenario("frozen_pressure_transmitter", seed=6)
    t0 = run.truths[0].injected_at_ms
    ts, p = run.readings().of("cw_pressure_mpa")
    window = p[(ts >= t0) & (ts < t0 + 2400_000)]
    assert len(window) > 2000 and np.all(window == 0.245)


def test_outage_without_backlog_leaves_a_gap_and_reconnect_republishes_states() -> None:
    run = run_scenario("outage_running", seed=7)
    t0 = run.truths[0].injected_at_ms
    r = run.readings()
    inside = (r.ts_ms >= t0) & (r.ts_ms < t0 + 45 * 60_000)
    assert not inside.any()
    ts, _ = r.of("fan_running")
    assert t0 + 45 * 60_000 in set(ts.tolist())


def test_outage_with_backlog_flushes_original_timestamps() -> None:
    run = run_scenario("gateway_outage", seed=8)
    t0 = run.truths[0].injected_at_ms
    end = t0 + 45 * 60_000
    msgs, log = run.messages()
    assert log.held_in_outage > 0
    assert not any(t0 <= m.publish_ms < end for m in msgs)
    flushed = [m for m in msgs if m.publish_ms >= end]
    ts_in_flush = [r["ts"] for m in flushed[:log.held_in_outage] for r in _public_readings(m.payload)]
    assert min(ts_in_flush) < t0 + 60_000  # old readings arrive late, with their own timestamps
    assert sum(len(_public_readings(m.payload)) for m in msgs) == len(run.readings())


def test_ground_truth_json_round_trip(tmp_path: Path) -> None:
    truths = run_scenario("launder_drop", seed=9).truths + run_scenario("bag_rupture", seed=9).truths
    path = write_ground_truth_json(tmp_path / "truth.json", truths)
    assert read_ground_truth_json(path) == truths
    data = json.loads(path.read_text())
    assert data[0]["expected"][0]["rule_id"]


def test_check_against_truth() -> None:
    (gt,) = run_scenario("cw_pump_trip_interlock_fails", seed=1).truths
    t0 = gt.injected_at_ms
    perfect = [(e.rule_id, t0 + int((e.lo_s + e.hi_s) / 2 * 1000)) for e in gt.expected]
    assert check_against_truth(gt, perfect) == []
    missing = [r for r in perfect if r[0] != "interlock_cw_cutoff"]
    assert any("interlock_cw_cutoff not raised" in p for p in check_against_truth(gt, missing))
    forbidden = [*perfect, ("interlock_cw_tilt", t0 + 30_000)]
    assert any("forbidden interlock_cw_tilt" in p for p in check_against_truth(gt, forbidden))
    outside = [*perfect, ("interlock_cw_tilt", gt.window_end_ms + 1)]
    assert check_against_truth(gt, outside) == []
    too_early = [(r, t0 + 1000 if r == "emergency_tank_level_l" else ts) for r, ts in perfect]
    assert any("emergency_tank_level_l not raised" in p for p in check_against_truth(gt, too_early))


def test_scheduled_scenarios_on_one_site() -> None:
    run = simulate_site("HZ-9", "hazchem", duration_s=4 * 3600, seed=3,
                        scenarios=[("span_gas_test", 1200.0), ("agitator_stop", 7200.0)])
    assert [t.scenario for t in run.truths] == ["span_gas_test", "agitator_stop"]
    with pytest.raises(ValueError, match="plant"):
        simulate_site("X", "dust", duration_s=600, scenarios=[("overfill", 100.0)])


# ---------------------------------------------------------------------------------------------
# transport faults


def _clean_messages():
    run = run_scenario("span_gas_test", seed=1)
    return run.messages()[0]


def test_transport_off_is_identity() -> None:
    msgs = _clean_messages()
    out, log = apply(msgs, TransportFaults.none(), site="S", seed=1)
    assert out == msgs
    assert log.duplicates == log.out_of_order == log.held_in_outage == 0 and not log.malformed


def test_jitter_delays_without_reordering() -> None:
    msgs = _clean_messages()
    out, _ = apply(msgs, TransportFaults(jitter_max_s=3.0, duplicate_rate=0, out_of_order_rate=0), site="S", seed=1)
    assert [m.payload for m in out] == [m.payload for m in msgs]
    delays = [o.publish_ms - m.publish_ms for o, m in zip(out, msgs, strict=True)]
    assert min(delays) >= 0 and max(delays) > 1000


def test_duplicates_are_exact_copies() -> None:
    msgs = _clean_messages()
    out, log = apply(msgs, TransportFaults(jitter_max_s=0, duplicate_rate=0.05, out_of_order_rate=0), site="S", seed=1)
    assert log.duplicates > 0 and len(out) == len(msgs) + log.duplicates
    assert {m.payload for m in out} == {m.payload for m in msgs}


def test_out_of_order_is_switchable() -> None:
    msgs = _clean_messages()

    def inversions(ms):
        ts = [_public_readings(m.payload)[0]["ts"] for m in ms]
        return sum(1 for a, b in itertools.pairwise(ts) if b < a)

    base, _ = apply(msgs, TransportFaults.none(), site="S", seed=1)
    assert inversions(base) == 0
    out, log = apply(msgs, TransportFaults(jitter_max_s=0, duplicate_rate=0, out_of_order_rate=0.05), site="S", seed=1)
    assert log.out_of_order > 0 and inversions(out) > 0
    assert sorted(m.payload for m in out) == sorted(m.payload for m in msgs)


def test_one_switch_does_not_shift_another() -> None:
    msgs = _clean_messages()
    a, _ = apply(msgs, TransportFaults(jitter_max_s=3, duplicate_rate=0, out_of_order_rate=0), site="S", seed=2)
    b, _ = apply(msgs, TransportFaults(jitter_max_s=3, duplicate_rate=0, out_of_order_rate=0, malformed_rate=0.05),
                 site="S", seed=2)
    good = {m.payload for m in msgs}
    assert [m for m in b if m.payload in good] == a


def test_malformed_messages_are_extra_and_invalid() -> None:
    msgs = _clean_messages()
    out, log = apply(msgs, TransportFaults(jitter_max_s=0, duplicate_rate=0, out_of_order_rate=0, malformed_rate=0.3),
                     site="S", seed=3)
    assert len(out) == len(msgs) + len(log.malformed)
    assert {k for _, k in log.malformed} == set(MALFORMED_KINDS)
    good = {m.payload for m in msgs}
    for m in out:
        if m.payload in good:
            continue
        try:
            readings = _public_readings(m.payload)
        except (ValueError, AssertionError, UnicodeDecodeError, KeyError, TypeError, pytest.fail.Exception):
            continue
        ts_ok = all(0 < r["ts"] < 10**13 for r in readings)
        assert not ts_ok, m.payload  # anything that parses must carry an out-of-range ts


def test_outage_window_holds_and_flushes() -> None:
    msgs = _clean_messages()
    a, b = msgs[100].publish_ms, msgs[200].publish_ms
    out, log = apply(msgs, TransportFaults(jitter_max_s=0, duplicate_rate=0, out_of_order_rate=0, outages_ms=((a, b),)),
                     site="S", seed=1)
    assert log.held_in_outage == 100
    assert not any(a <= m.publish_ms < b for m in out)
    assert [m.payload for m in out] == [m.payload for m in msgs]


# ---------------------------------------------------------------------------------------------
# files


def test_replay_files_readable_by_polars(tmp_path: Path) -> None:
    runs = [run_scenario("launder_surge", seed=1), run_scenario("fan_trip_production_on", seed=1)]
    readings = [r.readings() for r in runs]
    expect = readings_frame(readings)
    assert expect.columns == ["site", "tag", "ts", "value", "quality"]
    nd = pl.read_ndjson(write_ndjson(tmp_path / "r.ndjson", readings))
    csv = pl.read_csv(write_csv(tmp_path / "r.csv", readings))
    pq = pl.read_parquet(write_parquet(tmp_path / "r.parquet", readings))
    for df in (nd, csv, pq):
        assert df.height == sum(len(r) for r in readings)
        assert df["ts"].dtype == pl.Int64 and df["value"].dtype == pl.Float64
        assert df.equals(expect)
    assert set(pq["quality"].unique()) <= {"good", "uncertain", "bad"}
    assert (tmp_path / "r.ndjson").read_bytes() == write_ndjson(tmp_path / "r2.ndjson", readings).read_bytes()


# ---------------------------------------------------------------------------------------------
# demo run


def test_simulate_sites_compressed_clock() -> None:
    sites = [("HZ-1", "hazchem"), ("HZ-2", "hazchem"), ("DU-1", "dust"), ("AL-1", "aluminum")]
    run = simulate_sites(sites, DEFAULT_START_MS, duration_s=30, seed=1, speed=120)
    msgs = list(run.messages())
    at = [m.at_s for m in msgs]
    assert at == sorted(at) and 0 <= at[0] and at[-1] <= 30 + 0.1
    spans = [(m.publish_ms - DEFAULT_START_MS) / 1000 / 120 for m in msgs]
    assert np.allclose(spans, at)
    plants = {t.plant for t in run.truths}
    assert plants == {"hazchem", "dust", "aluminum"}
    assert run.truths[0].scenario != run.truths[[t.site for t in run.truths].index("HZ-2")].scenario
    for m in msgs[:200]:
        _public_readings(m.payload)


def test_auto_schedule_fits() -> None:
    for plant in ("hazchem", "dust", "aluminum"):
        for nth in range(3):
            sched = auto_schedule(plant, 4 * 3600, nth)
            assert len(sched) >= 2, plant
            prev_end = 0.0
            for k, (name, at) in enumerate(sched):
                sc = SCENARIOS[name]
                assert at - (sc.pre_s if k == 0 else sc.reach_s) >= prev_end and at + sc.post_s <= 4 * 3600
                prev_end = at + sc.post_s


def test_scenario_effects_end_with_their_window() -> None:
    run = simulate_site("DU-9", "dust", duration_s=3 * 3600, seed=4,
                        scenarios=[("deflagration", 900.0), ("fan_trip_production_on", 2 * 3600.0)])
    vent = run.trace.states["vent_burst"]
    assert vent.value_at(1000_000) == 1 and vent.value_at(1900_000) == 0
    fan = run.trace.states["fan_running"]
    assert fan.value_at(2 * 3600_000 - 1000) == 1 and fan.value_at(2 * 3600_000 + 1000) == 0


# ---------------------------------------------------------------------------------------------
# load generator (no broker)


@pytest.mark.parametrize(("tags", "k"), [(3, 7), (250, 100), (100, 100), (10, 1)])
def test_load_plan_payloads(tags: int, k: int) -> None:
    plan = LoadPlan(sites=4, tags_per_site=tags, rate_readings_s=4000, duration_s=1, readings_per_message=k,
                    seed=1, start_ms=1_000_000)
    seen: dict[tuple[str, str], list[int]] = {}
    total = 0
    for topic, payload, n in plan.messages():
        readings = _public_readings(payload)
        assert len(readings) == n
        total += n
        site = topic.split("/")[1]
        for r in readings:
            seen.setdefault((site, r["tag"]), []).append(r["ts"])
    assert total >= plan.total_readings
    assert len(seen) == 4 * tags
    for ts in seen.values():
        assert all(b > a for a, b in itertools.pairwise(ts))  # unique, increasing per sensor


def test_load_plan_rejects_sub_millisecond_rounds() -> None:
    with pytest.raises(ValueError, match="per sensor"):
        LoadPlan(sites=1, tags_per_site=1, rate_readings_s=5000, duration_s=1, readings_per_message=1)


def test_token_bucket_paces_on_a_fake_clock() -> None:
    now = [0.0]

    def clock() -> float:
        return now[0]

    def sleep(s: float) -> None:
        now[0] += s + 0.0003  # every sleep overshoots a little, as real sleeps do

    bucket = TokenBucket(100_000, burst=2000, clock=clock, sleep=sleep)
    for _ in range(10_000):
        bucket.take(100)
    rate = 10_000 * 100 / now[0]
    assert math.isclose(rate, 100_000, rel_tol=0.01)


def test_cli_writes_replay_and_truth(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from simulators import cli_main

    assert cli_main(["--list-scenarios"]) == 0
    assert "cw_pump_trip" in capsys.readouterr().out
    out, truth = tmp_path / "r.csv", tmp_path / "t.json"
    assert cli_main(["--plants", "hazchem", "--scenario", "span_gas_test", "--out", str(out), "--truth", str(truth)]) == 0
    df = pl.read_csv(out)
    assert df.columns == ["site", "tag", "ts", "value", "quality"] and df.height > 1000
    assert read_ground_truth_json(truth)[0].scenario == "span_gas_test"
    assert cli_main(["--rate", "0", "--port", "1"]) == 2  # a bad rate is refused before any connection


def test_inject_on_demand_keeps_the_published_past() -> None:
    sites = [("HZ-1", "hazchem"), ("AL-1", "aluminum")]
    plain = list(simulate_sites(sites, DEFAULT_START_MS, duration_s=120, seed=2, speed=60).messages())
    live = simulate_sites(sites, DEFAULT_START_MS, duration_s=120, seed=2, speed=60)
    out, truth = [], None
    for i, m in enumerate(live.messages()):
        out.append(m)
        if i == 500:
            truth = live.inject("AL-1", "launder_surge")
    assert out[:501] == plain[:501]
    assert out != plain
    assert truth is not None and truth in live.truths
    assert truth.injected_at_ms - SCENARIOS["launder_surge"].reach_s * 1000 >= out[500].publish_ms
    assert all(a.at_s <= b.at_s for a, b in itertools.pairwise(out))
    with pytest.raises(ValueError, match="run ends"):
        live.inject("HZ-1", "bypass_left_on")
