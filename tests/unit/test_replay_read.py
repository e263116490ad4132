"""read_replay_files: quality labels in any case, unknown labels rejected, a null value stored as bad."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from earlywarn.pipeline import _replay_names, read_replay_files


def test_quality_labels_in_any_case_and_unknown_ones_rejected(tmp_path: Path) -> None:
    rows = [
        ("s1", "a", 1, 1.0, "good"), ("s1", "a", 2, 1.0, "GOOD"), ("s1", "b", 3, 2.0, "Uncertain"),
        ("s1", "b", 4, 2.0, "bAd"), ("s2", "a", 5, 3.0, "weird"), ("s2", "a", 6, 3.0, None),
        ("s2", "b", 7, None, "good"), ("s2", "b", 8, 4.0, "uncertain"),
    ]
    df = pl.DataFrame(rows, schema={"site": pl.String, "tag": pl.String, "ts": pl.Int64, "value": pl.Float64,
                                    "quality": pl.String}, orient="row")
    for path in (tmp_path / "in.parquet", tmp_path / "in.csv", tmp_path / "in.ndjson"):
        {".parquet": df.write_parquet, ".csv": df.write_csv, ".ndjson": df.write_ndjson}[path.suffix](path)
        batch, rejects = read_replay_files([str(path)])
        got = batch.frame.select("ts_ms", "quality").rows()
        # good 0, uncertain 1, bad 2; a null value is stored as bad whatever its label
        assert got == [(1, 0), (2, 0), (3, 1), (4, 2), (7, 2), (8, 1)], path.suffix
        assert len(rejects) == 2 and all(r.reason == "bad_replay_row" for r in rejects)


def test_replay_names_code_each_row_exactly() -> None:
    frame = pl.DataFrame({"site": ["b", "a", "b", "c", "a"], "tag": ["x", "y", "y", "x", "x"]})
    names = _replay_names(frame)
    assert names.site_names == ["b", "a", "c"] and names.tag_names == ["x", "y"]
    assert [names.site_names[c] for c in names.site] == frame["site"].to_list()
    assert [names.tag_names[c] for c in names.tag] == frame["tag"].to_list()
    part = names.slice(1, 4)
    assert [part.site_names[c] for c in part.site] == ["a", "b", "c"]
