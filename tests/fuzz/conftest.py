from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

_T0 = time.monotonic()


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    from fuzzkit import COUNTS, EXAMPLES

    if COUNTS:
        terminalreporter.write_line(
            f"fuzz inputs (EARLYWARN_FUZZ_EXAMPLES={EXAMPLES}, {time.monotonic() - _T0:.0f} s): "
            + ", ".join(f"{k}={v}" for k, v in sorted(COUNTS.items()))
        )
