"""`python -m benchmarks [--quick] [--only NAME ...]`: the performance suite (see benchmarks/run.py)."""

from __future__ import annotations

import sys
from pathlib import Path

# the stage benchmarks are scripts that import each other by module name (bench_ingest, common, ...)
sys.path.insert(0, str(Path(__file__).resolve().parent))

from run import main

raise SystemExit(main())
