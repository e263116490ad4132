"""Every Prometheus metric of earlywarn, built from an injected registry.

Names follow `earlywarn_<subsystem>_<name>_<unit>` (counters end in `_total`). Tests build
`Metrics(CollectorRegistry())` and read values with `registry.get_sample_value(...)`.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector

_BATCH_BUCKETS = (10, 100, 1_000, 5_000, 10_000, 50_000, 100_000, 500_000)
_SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)


class Metrics:
    """The engine's metrics. One instance per engine, registered on `registry`."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = registry if registry is not None else CollectorRegistry()
        self.registry = r
        # process_resident_memory_bytes, process_cpu_seconds_total, open fds: what an operator (and the soak
        # test) watches to tell a bounded cache from a leak
        ProcessCollector(registry=r)
        # ingest
        self.messages = Counter(
            "earlywarn_ingest_messages_total", "MQTT messages received.", registry=r
        )
        self.broker_connected = Gauge(
            "earlywarn_ingest_broker_connected", "1 while connected to the broker.", registry=r
        )
        self.reconnects = Counter(
            "earlywarn_ingest_reconnects_total", "Connections to the broker after the first.", registry=r
        )
        self.queue_depth = Gauge(
            "earlywarn_ingest_queue_messages", "Messages received and not yet committed.", registry=r
        )
        self.pending_acks = Gauge(
            "earlywarn_ingest_pending_acks_messages", "Messages waiting for their commit before the ack.",
            registry=r,
        )
        # decode
        self.readings = Counter(
            "earlywarn_decode_readings_total", "Valid readings decoded.", registry=r
        )
        self.rejected = Counter(
            "earlywarn_rejected_total", "Readings or messages rejected, by reason.", ["reason"], registry=r
        )
        # batch
        self.batch_readings = Histogram(
            "earlywarn_batch_readings", "Readings per micro-batch.", buckets=_BATCH_BUCKETS, registry=r
        )
        self.batch_seconds = Histogram(
            "earlywarn_batch_duration_seconds", "Time to process one micro-batch end to end.",
            buckets=_SECONDS_BUCKETS, registry=r,
        )
        self.late = Counter(
            "earlywarn_late_readings_total", "Readings older than the last evaluated for their sensor.", registry=r
        )
        self.duplicates = Counter(
            "earlywarn_batch_duplicate_readings_total", "Readings dropped as duplicates of (site, tag, ts).",
            registry=r,
        )
        # rules
        self.signals = Counter(
            "earlywarn_rules_signals_total", "Signals emitted by the rules, by kind.", ["kind"], registry=r
        )
        self.rules_seconds = Histogram(
            "earlywarn_rules_duration_seconds", "Rule evaluation time per batch.", buckets=_SECONDS_BUCKETS,
            registry=r,
        )
        # store
        self.write_seconds = Histogram(
            "earlywarn_store_write_duration_seconds", "Time to commit one batch to DuckDB.",
            buckets=_SECONDS_BUCKETS, registry=r,
        )
        self.store_errors = Counter(
            "earlywarn_store_errors_total", "Failed commits (retried; nothing is acknowledged).", registry=r
        )
        self.store_memory = Gauge(
            "earlywarn_store_memory_bytes",
            "Memory DuckDB holds (buffer pool: cached table blocks, appends not yet checkpointed); "
            "bounded by store.memory_limit.", registry=r,
        )
        self.stored = Counter(
            "earlywarn_store_readings_total", "Readings committed to the readings table.", registry=r
        )
        # alarms
        self.alarm_events = Counter(
            "earlywarn_alarms_events_total", "Alarm lifecycle events, by kind.", ["kind"], registry=r
        )
        self.open_alarms = Gauge(
            "earlywarn_alarms_open_alarms", "Alarms not yet closed.", registry=r
        )
        # notify
        self.notices = Counter(
            "earlywarn_notices_total", "Notice delivery attempts by channel and outcome.", ["channel", "outcome"],
            registry=r,
        )
        self.notice_latency = Histogram(
            "earlywarn_notify_latency_seconds", "Delay from alarm event to notice handed to a channel.",
            buckets=_SECONDS_BUCKETS, registry=r,
        )
