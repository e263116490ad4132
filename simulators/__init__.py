"""Seeded plant simulators, fault scenarios with ground truth, and a load generator.

They speak only the public payload format of product.md §3 and never import earlywarn internals.

Modules: `plants` (signal models per plant type), `scenarios` (faults + ground truth), `transport` (jitter,
duplicates, out-of-order, outages, malformed messages), `payload` (readings and MQTT payloads), `publish`
(replay files, paced MQTT publisher), `run` (site runs, the demo's compressed-clock run), `load` (load
generator), `cli` (`earlywarn simulate`).
"""

from __future__ import annotations

from collections.abc import Sequence

from simulators.load import LoadReport, run_load
from simulators.payload import Message, Readings, encode, render
from simulators.publish import (
    MqttPublisher,
    readings_frame,
    write_csv,
    write_ndjson,
    write_parquet,
    write_replay,
)
from simulators.run import (
    DEFAULT_START_MS,
    SiteRun,
    SitesRun,
    TimedMessage,
    run_scenario,
    simulate_site,
    simulate_sites,
)
from simulators.scenarios import (
    SCENARIOS,
    ExpectedAlarm,
    GroundTruth,
    read_ground_truth_json,
    scenarios_for,
    write_ground_truth_json,
)
from simulators.transport import TransportFaults, TransportLog


def cli_main(argv: Sequence[str] | None = None) -> int:
    """`earlywarn simulate ARGS` (see `simulators.cli`)."""
    from simulators.cli import cli_main as _main

    return _main(argv)


__all__ = [
    "DEFAULT_START_MS", "SCENARIOS", "ExpectedAlarm", "GroundTruth", "LoadReport", "Message", "MqttPublisher",
    "Readings", "SiteRun", "SitesRun", "TimedMessage", "TransportFaults", "TransportLog", "cli_main", "encode",
    "read_ground_truth_json", "readings_frame", "render", "run_load", "run_scenario", "scenarios_for",
    "simulate_site", "simulate_sites", "write_csv", "write_ground_truth_json", "write_ndjson", "write_parquet",
    "write_replay",
]
