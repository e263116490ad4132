"""Test-side helpers for the HTTP API."""

from __future__ import annotations

from typing import Any

from earlywarn.model import ReadingBatch
from earlywarn.pipeline import Action


class SyncRunner:
    """What build_app needs of a Runner, with actions committed at once on the calling thread."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.error = None

    def submit(self, apply: Any) -> Any:
        a = Action(apply)
        self.engine.process_batch(ReadingBatch.empty(), actions=[a])
        return a.done
