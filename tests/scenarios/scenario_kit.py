"""Shared by the scenario suites: a config and a sites file for one simulated site in a folder."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
#: the shipped rule packs: the scenario suites test them, not copies
RULES_DIR = REPO / "rules"
#: one seed for every run, so each scenario's readings are the same byte for byte on every run
SEED = 0


def write_config(d: Path, site: str, plant: str, *, broker_url: str | None = None) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / "sites.toml").write_text(
        f'[[site]]\nid = "{site}"\nname = "{site}"\nplant = "{plant}"\ndistrict = "test"\n'
    )
    broker = (f'[broker]\nurl = "{broker_url}"\nclient_id = "ew-scenario"\nreconnect_min = "1s"\n'
              'reconnect_max = "2s"\n') if broker_url else ""
    cfg = d / "earlywarn.toml"
    cfg.write_text(
        broker
        + f'[store]\npath = "{d / "ew.duckdb"}"\n'
        + f'[rules]\nsites = "{d / "sites.toml"}"\ndir = "{RULES_DIR}"\n'
        + '[http]\nlisten = ""\n[metrics]\nlisten = ""\n'
        # live chunks are published up to a minute ahead of the test's clock (see LiveClock)
        + '[ingest]\nmax_future = "3650d"\n'
    )
    return cfg
