from __future__ import annotations

import sys
from pathlib import Path

# tests/chaos/enginekit.py is shared by the chaos, security and soak tests
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "chaos"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
