"""Fuzz target: analysts' SQL (reports.run_sql). Any text either runs as a read-only query or is refused
with SqlRefused; nothing else escapes, the store file is never changed, no file is read or written outside
it (a canary file's content never comes back, no new file appears)."""

from __future__ import annotations

import atexit
import hashlib
import os
import shutil
import tempfile
from pathlib import Path

import duckdb
import pytest
from fuzzkit import EXAMPLES, FUZZ, corpus, count, mutate, mutations, time_limit
from hypothesis import given
from hypothesis import strategies as st

from earlywarn import reports

# Each input opens a guarded DuckDB connection (~40-80 ms): a tenth of the other targets' count, so the
# default suite stays fast; EARLYWARN_FUZZ_SQL_EXAMPLES overrides it.
SQL_EXAMPLES = int(os.environ.get("EARLYWARN_FUZZ_SQL_EXAMPLES", str(max(20, EXAMPLES // 10))))

WORK = Path(tempfile.mkdtemp(prefix="ew-fuzz-sql-"))
atexit.register(shutil.rmtree, WORK, ignore_errors=True)
DB = WORK / "ew.duckdb"
CANARY = WORK / "canary.csv"
CANARY.write_text("secret_column\nCANARY-6d1f0e\n")
_con = duckdb.connect(str(DB))
_con.execute("CREATE TABLE readings AS SELECT 'S1' AS site, 'a' AS tag, 1.5 AS value")
_con.execute("CREATE TABLE alarms AS SELECT 'x' AS alarm_id, 'S1' AS site")
_con.close()
DB_HASH = hashlib.sha256(DB.read_bytes()).hexdigest()
FILES = sorted(p.name for p in WORK.iterdir())


def check(sql: str) -> None:
    with time_limit():
        try:
            df = reports.run_sql(DB, sql)
        except reports.SqlRefused:
            df = None
    if df is not None:
        assert "CANARY-6d1f0e" not in str(df.rows())
    assert hashlib.sha256(DB.read_bytes()).hexdigest() == DB_HASH
    assert sorted(p.name for p in WORK.iterdir()) == FILES


SEEDS = [s.encode() for s in [
    "SELECT site, count(*) FROM readings GROUP BY site",
    f"SELECT * FROM read_csv('{CANARY}')",
    f"SELECT * FROM '{CANARY}'",
    f"COPY readings TO '{WORK}/out.csv'",
    f"ATTACH '{WORK}/other.duckdb' AS o",
    "INSTALL httpfs; LOAD httpfs",
    "SET enable_external_access = true; SELECT 1",
    "CREATE TABLE x AS SELECT 1",
    "DELETE FROM alarms",
    "PRAGMA database_list",
    "SELECT * FROM glob('/etc/*')",
    f"WITH t AS (SELECT * FROM read_text('{CANARY}')) SELECT * FROM t",
    "EXPLAIN SELECT * FROM readings",
    "SELECT getenv('HOME')",
    "CALL checkpoint()",
    "SELECT * FROM duckdb_settings()",
]]


@FUZZ.__class__(FUZZ, max_examples=max(10, SQL_EXAMPLES // 5))
@given(st.lists(st.sampled_from([s.decode() for s in SEEDS] + [";", " UNION ALL ", "(", ")", "--", "/*", "*/",
                                                                 "'", '"', "\\", "SELECT", "FROM", "\x00"]),
                min_size=1, max_size=5).map(" ".join))
def test_composed_statements_are_read_only_or_refused(sql: str) -> None:
    check(sql)
    count("sql")


@FUZZ.__class__(FUZZ, max_examples=SQL_EXAMPLES)
@given(st.sampled_from(SEEDS), mutations)
def test_mutated_statements_are_read_only_or_refused(seed: bytes, ops: list) -> None:
    check(mutate(seed, ops).decode("utf-8", "replace"))
    count("sql")


@pytest.mark.parametrize("path", corpus("sql"), ids=lambda p: p.name)
def test_sql_corpus_regressions(path: Path) -> None:
    check(path.read_text(encoding="utf-8").replace("{CANARY}", str(CANARY)).replace("{WORK}", str(WORK)))
