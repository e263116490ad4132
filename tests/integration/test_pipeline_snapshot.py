"""The live engine's rule-state snapshot: its consistent copy is taken on the engine thread right after step k
is evaluated, packed off that thread once step k is committed (while step k + 1 has been evaluated), and the
store gets exactly the rule state step k left, tagged with step k's batch; a restart continues from there."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import numpy as np
from test_pipeline_runner import T0_MS, _config, _msg  # this directory is on sys.path (no __init__.py)

from earlywarn.app import build_engine
from earlywarn.metrics import Metrics
from earlywarn.pipeline import RULES_STATE_KEY
from earlywarn.rules.state import EngineState


def _same(blob_a: bytes, blob_b: bytes) -> None:
    (arr_a, doc_a), (arr_b, doc_b) = EngineState.load(blob_a), EngineState.load(blob_b)
    assert json.dumps(doc_a) == json.dumps(doc_b)
    assert list(arr_a) == list(arr_b)
    for k, a in arr_a.items():
        assert np.array_equal(a, arr_b[k], equal_nan=a.dtype.kind == "f"), k


def test_snapshot_packed_off_thread_is_the_state_its_batch_left(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    engine = build_engine(cfg, metrics=Metrics())
    store = engine.store
    try:
        first = engine.begin_messages([_msg(i) for i in range(120)])
        assert first is not None and first.snapshot is None  # not due yet
        r_first = engine.finish_step(first)
        engine._last_checkpoint_mono = -1e9  # the checkpoint interval has passed
        step_k = engine.begin_messages([_msg(i) for i in range(120, 260)])
        assert step_k is not None and step_k.snapshot is not None
        expected = engine.rules.snapshot()  # what a snapshot taken synchronously at step k holds
        # as the runner does: step k + 1 is evaluated (and moves the rule state on) before step k is finished
        step_next = engine.begin_messages([_msg(i) for i in range(260, 400)])
        assert step_next is not None and step_next.snapshot is None
        assert engine.rules.snapshot() != expected
        r_k = engine.finish_step(step_k)
        r_next = engine.finish_step(step_next)
        assert r_first.batch_seq < r_k.batch_seq < r_next.batch_seq
        engine.settle_snapshots()
        assert store.flush_background()
        saved = store.load_state(RULES_STATE_KEY)
        assert saved is not None
        blob, batch_seq = saved
        assert batch_seq == r_k.batch_seq
        _same(blob, expected)
        final = engine.rules.snapshot()
    finally:
        store.close()
    # a restart: the snapshot of step k, then step k + 1 caught up from the store: the state as it was
    again = build_engine(cfg, metrics=Metrics())
    try:
        _same(again.rules.snapshot(), final)
        assert again.rules._st.clock_ms >= T0_MS
    finally:
        again.store.close()


def test_checkpoint_waits_for_a_snapshot_being_packed(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    engine = build_engine(cfg, metrics=Metrics())
    calls: list[Any] = []
    real = engine.store.save_state_later
    checkpoint_waiting, release = threading.Event(), threading.Event()

    def held_save(*a: Any, **kw: Any) -> None:  # the packer thread, held until checkpoint() is waiting
        release.wait(30)
        calls.append(a[2])
        real(*a, **kw)

    real_settle = engine.settle_snapshots

    def settle(*a: Any, **kw: Any) -> None:
        checkpoint_waiting.set()
        real_settle(*a, **kw)

    engine.store.save_state_later = held_save  # type: ignore[method-assign]
    engine.settle_snapshots = settle  # type: ignore[method-assign]
    releaser = threading.Thread(target=lambda: checkpoint_waiting.wait(30) and release.set())
    releaser.start()
    try:
        engine._last_checkpoint_mono = -1e9
        step = engine.begin_messages([_msg(i) for i in range(50)])
        assert step is not None and step.snapshot is not None
        engine.finish_step(step)
        assert calls == []  # still being packed
        engine.checkpoint()  # clean shutdown: the packer is done before the final state is committed
        assert calls == [engine.store.batch_seq - 1]
    finally:
        release.set()
        releaser.join(30)
        engine.store.close()
