"""Assembly of a live engine: store, rules, alarms, ingest, notify, metrics server, HTTP API.

`earlywarn run` and `earlywarn demo` both start the engine through `start_runner`.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger("earlywarn")


def build_engine(cfg: Any, *, replay: bool = False, clock: Any = None, metrics: Any = None) -> Any:
    from earlywarn.pipeline import Engine, load_site_rules
    from earlywarn.store import Store

    sites, site_rules = load_site_rules(cfg)
    store = Store.open(
        cfg.store.path, deadlines=cfg.alarms.deadlines, checkpoint_interval_ms=cfg.store.checkpoint_interval_ms,
        memory_limit=cfg.store.memory_limit,
    )
    return Engine(cfg, sites=sites, site_rules=site_rules, store=store, replay=replay, clock=clock, metrics=metrics)


def start_runner(cfg: Any, *, clock: Any = None) -> Any:
    """Build and start everything `earlywarn run` runs; returns the Runner (and its API server, if on)."""
    import queue

    from earlywarn.ingest import MqttIngest, ProcessIngest
    from earlywarn.metrics import Metrics
    from earlywarn.pipeline import Runner

    metrics = Metrics()
    engine = build_engine(cfg, clock=clock, metrics=metrics)
    metrics.store_memory.set_function(_store_memory_probe(engine.store))
    inbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
    ingest_cls = ProcessIngest if cfg.ingest.mode == "process" else MqttIngest
    ingest = ingest_cls(cfg.broker, inbox, metrics=metrics, clock=engine.clock)
    engine.dispatcher = _build_dispatcher(cfg, engine, ingest, metrics)
    runner = Runner(cfg, engine=engine, metrics=metrics, ingest=ingest, inbox=inbox)
    if cfg.metrics.listen:
        from prometheus_client import start_http_server

        host, port = cfg.metrics.listen.rsplit(":", 1)
        start_http_server(int(port), addr=host, registry=metrics.registry)
    runner.start()
    runner.api_server = None
    if cfg.http.listen:
        try:
            from earlywarn.api import serve_in_thread
        except ImportError:  # the API lands separately; the engine runs without it
            log.warning("HTTP API not available in this build")
        else:
            runner.api_server = serve_in_thread(cfg, runner)
    return runner


def _store_memory_probe(store: Any) -> Any:
    """The bytes DuckDB's buffer manager holds, read at scrape time on a cursor of its own.

    RSS alone cannot tell DuckDB's cache filling up to `store.memory_limit` (expected, bounded) from a leak
    elsewhere; with this gauge next to process_resident_memory_bytes it can.
    """

    def probe() -> float:
        try:
            cur = store.read_cursor()
        except Exception:  # noqa: BLE001 - closed at shutdown: the scrape reports NaN instead of failing
            return float("nan")
        try:
            row = cur.execute("SELECT coalesce(sum(memory_usage_bytes), 0) FROM duckdb_memory()").fetchone()
            return float(row[0]) if row else 0.0
        finally:
            cur.close()

    return probe


def _build_dispatcher(cfg: Any, engine: Any, ingest: Any, metrics: Any) -> Any:
    from earlywarn.pipeline import build_dispatcher

    return build_dispatcher(cfg, engine=engine, publish=ingest.publish, metrics=metrics)
