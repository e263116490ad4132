"""Shared settings for the fuzz targets: example counts, a per-input time limit, the regression corpus.

`EARLYWARN_FUZZ_EXAMPLES=100000 pytest tests/fuzz` is the long mode (issue 9: at least 100 000 inputs per
target); the default keeps the normal suite fast. Each input runs under a SIGALRM time limit so a hang
fails the test with the input that caused it instead of stalling CI until the global timeout.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from pathlib import Path

from hypothesis import HealthCheck, settings

EXAMPLES = int(os.environ.get("EARLYWARN_FUZZ_EXAMPLES", "200"))
#: per input: generous, because a busy 2-core CI box is slow; a real hang is far beyond it
TIME_LIMIT_S = float(os.environ.get("EARLYWARN_FUZZ_TIME_LIMIT", "5"))
CORPUS = Path(__file__).resolve().parent / "corpus"

FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,  # wall-clock deadlines flake on a loaded machine; the alarm below catches hangs
    suppress_health_check=list(HealthCheck),
    database=None,  # found inputs go to corpus/ explicitly, not into a hidden database
    derandomize=EXAMPLES <= 1000,  # the short mode is reproducible in CI; the long mode explores
    print_blob=True,
)


class Hang(Exception):
    pass


@contextlib.contextmanager
def time_limit(seconds: float = TIME_LIMIT_S) -> Iterator[None]:
    """Raise Hang if the block runs longer than `seconds` (main thread only, as pytest runs tests)."""

    def on_alarm(signum: int, frame: object) -> None:
        raise Hang(f"input took longer than {seconds} s")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def corpus(target: str) -> list[Path]:
    """The saved regression inputs of one target (tests/fuzz/corpus/<target>/*), sorted by name."""
    d = CORPUS / target
    return sorted(p for p in d.iterdir() if p.is_file() and not p.name.startswith(".")) if d.is_dir() else []


# -- mutation fuzzing --------------------------------------------------------------------------------
# Rich structured strategies cost ~30 ms of generation per example; byte mutations of good seed inputs
# (replace, insert, delete, duplicate a span, swap in a "nasty" token) cost ~1 ms and still reach deep
# into the parsers, because most of each input stays well-formed. Each target runs both: the structured
# test at EXAMPLES // 20 and the mutation test at EXAMPLES.

from hypothesis import strategies as st

NASTY = [b"\x00", b"\xff", b"\xc3", b"\"", b"\\", b"{", b"}", b"[", b"]", b",", b":", b"=", b"\n", b"'''",
         b'"""', b"NaN", b"Infinity", b"-0", b"1e999", b"9" * 40, b"null", b"true", b"#", b"\\u0000", b"\xe2\x80\xae",
         b"(", b")", b"and", b"not", b"or", b"\t", b"[[", b"]]", b".", b"\r\n", b"\xf0\x9f\x92\xa5"]

mutations = st.lists(
    st.tuples(st.integers(0, 1 << 16), st.integers(0, 255), st.sampled_from("ridsn")), max_size=8
)


def mutate(data: bytes, ops: list[tuple[int, int, str]]) -> bytes:
    b = bytearray(data)
    for pos, val, op in ops:
        i = pos % (len(b) + 1)
        if op == "r" and b:
            b[i % len(b)] = val
        elif op == "i":
            b[i:i] = bytes([val])
        elif op == "d":
            del b[i : i + 1 + val % 8]
        elif op == "s":  # duplicate a span: repeated keys, repeated tables, doubled brackets
            span = bytes(b[i : i + 1 + val % 32])
            b[i:i] = span
        elif op == "n":
            b[i:i] = NASTY[val % len(NASTY)]
    return bytes(b)


COUNTS: dict[str, int] = {}


def count(target: str, n: int = 1) -> None:
    """Inputs tried per target, printed at the end of the run (tests/fuzz/conftest.py)."""
    COUNTS[target] = COUNTS.get(target, 0) + n
