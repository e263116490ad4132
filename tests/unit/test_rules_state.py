"""Rule state: restoring a snapshot written by an earlier engine, bad blobs, and the sensor table as
sensors keep arriving (incremental inserts and rebuilds of the hash table)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from earlywarn.model import ReadingBatch, Severity
from earlywarn.rules.engine import RuleEngine
from earlywarn.rules.types import Cmp, RuleKind, RuleSpec

DATA = Path(__file__).parent / "data"
# written by the engine of commit 0ebfd90 (before the memory layout of per-site templates and int32
# codes) after the first three batches of stream(); see write_fixture()
OLD_SNAPSHOT = DATA / "rules_snapshot_0ebfd90.npz"


def pack() -> list[RuleSpec]:
    sev = Severity.ORANGE
    return [
        RuleSpec(id="hi_a", kind=RuleKind.THRESHOLD, plant="t", severity=sev, tag="a", op=">", limit=6.0,
                 deadband=1.0, on_delay_ms=20, off_delay_ms=10),
        RuleSpec(id="lo_b", kind=RuleKind.THRESHOLD, plant="t", severity=sev, tag="b", op="<", limit=4.0,
                 when=Cmp("c", ">", 5.0)),
        RuleSpec(id="hi_a2", kind=RuleKind.THRESHOLD, plant="t", severity=sev, tag="a", op=">=", limit=8.0),
        RuleSpec(id="roc_a", kind=RuleKind.RATE, plant="t", severity=sev, tag="a", op=">", limit=30.0,
                 window_ms=30),
        RuleSpec(id="stale_b", kind=RuleKind.STALE, plant="t", severity=sev, tag="b", timeout_ms=25),
        RuleSpec(id="offline", kind=RuleKind.STALE, plant="t", severity=sev, tag="*", timeout_ms=50),
        RuleSpec(id="vote", kind=RuleKind.VOTE, plant="t", severity=sev, tags=("a", "b", "c"), k=2, op=">",
                 limit=5.0),
        RuleSpec(id="il", kind=RuleKind.INTERLOCK, plant="t", severity=sev, trigger=Cmp("a", ">", 8.0),
                 expect=Cmp("c", "<", 3.0), within_ms=20),
        RuleSpec(id="flat_c", kind=RuleKind.FLATLINE, plant="t", severity=sev, tag="c", window_ms=40,
                 epsilon=0.0),
        RuleSpec(id="q_c", kind=RuleKind.QUALITY, plant="t", severity=sev, tag="c", range=(0.0, 9.0)),
        RuleSpec(id="trend_b", kind=RuleKind.TREND, plant="t", severity=sev, tag="b", op=">", limit=9.0,
                 window_ms=40, horizon_ms=40, min_r2=0.5),
    ]


def stream(n_batches: int = 6, seed: int = 3) -> list[ReadingBatch]:
    """Random walks on a 0.5 grid for sites s1, s2 (ruled) and sx (no rules), tags a, b, c; gaps, a few bad
    and late readings, shuffled inside batches."""
    rng = np.random.default_rng(seed)
    rows = []
    level = {}
    ts = 0
    for _ in range(n_batches * 40):
        ts += int(rng.choice([0, 5, 5, 10, 40]))
        site = str(rng.choice(["s1", "s1", "s2", "sx"]))
        tag = str(rng.choice(["a", "a", "b", "c"]))
        lv = level.get((site, tag), int(rng.integers(0, 20)))
        lv = int(np.clip(lv + rng.integers(-2, 3), 0, 20))
        level[(site, tag)] = lv
        t = ts - (int(rng.choice([5, 30])) if rng.random() < 0.05 else 0)
        rows.append((site, tag, t, lv * 0.5, 2 if rng.random() < 0.05 else 0))
    batches = []
    for k in range(n_batches):
        part = rows[k * 40:(k + 1) * 40]
        order = rng.permutation(len(part))
        part = [part[i] for i in order]
        batches.append(ReadingBatch.from_columns(
            [r[0] for r in part], [r[1] for r in part], [r[2] for r in part], [r[3] for r in part],
            [r[4] for r in part]))
    return batches


def now_of(b: ReadingBatch) -> int:
    return int(b.frame["ts_ms"].max())


def site_rules() -> dict[str, list[RuleSpec]]:
    p = pack()
    return {"s1": p, "s2": p}


def write_fixture() -> None:  # run with the old engine on the path to regenerate the fixture
    eng = RuleEngine(site_rules())
    for b in stream()[:3]:
        eng.evaluate(b, now_of(b))
    DATA.mkdir(exist_ok=True)
    OLD_SNAPSHOT.write_bytes(eng.snapshot())


def test_snapshot_of_the_earlier_engine_restores_and_continues_exactly() -> None:
    batches = stream()
    whole = RuleEngine(site_rules())
    expected = []
    for k, b in enumerate(batches):
        sigs = whole.evaluate(b, now_of(b)).signals
        if k >= 3:
            expected.extend(sigs)
    eng = RuleEngine.restore(site_rules(), OLD_SNAPSHOT.read_bytes())
    got = [s for b in batches[3:] for s in eng.evaluate(b, now_of(b)).signals]
    assert expected  # the stream raises and clears after the snapshot
    assert repr(got) == repr(expected)  # repr: NaN values compare equal
    # and a snapshot of this engine restores the same way
    again = RuleEngine(site_rules())
    for b in batches[:3]:
        again.evaluate(b, now_of(b))
    eng2 = RuleEngine.restore(site_rules(), again.snapshot())
    assert repr([s for b in batches[3:] for s in eng2.evaluate(b, now_of(b)).signals]) == repr(expected)


@pytest.mark.parametrize("blob", [b"", b"not a snapshot", b"PK\x03\x04garbage"])
def test_a_blob_that_is_not_a_snapshot_fails_clearly(blob: bytes) -> None:
    with pytest.raises(ValueError, match="snapshot"):
        RuleEngine.restore(site_rules(), blob)


def test_sensor_table_as_sensors_keep_arriving() -> None:
    """Waves of new sensors (incremental inserts, then rebuilds as the table fills) map like the exact join,
    sensors of sites without rules included; ids stay those of first appearance."""
    eng = RuleEngine({f"s{k}": [RuleSpec(id="hi", kind=RuleKind.THRESHOLD, plant="t", severity=Severity.RED,
                                         tag="t0", op=">", limit=1.0)] for k in range(20)})
    seen: dict[tuple[str, str], int] = {}
    for wave in range(5):
        n = 50 * 4**wave
        keys = [(f"s{(wave * 7 + i) % 23}", f"t{(i * 13 + wave) % (n // 3 + 1)}") for i in range(n)]
        frame = pl.DataFrame({"site": [k[0] for k in keys], "tag": [k[1] for k in keys]})
        got = eng._map_sids(frame).tolist()
        for k in keys:
            seen.setdefault(k, len(seen))
        assert got == [seen[k] for k in keys]
        assert got == eng._map_sids_exact(frame).tolist()
