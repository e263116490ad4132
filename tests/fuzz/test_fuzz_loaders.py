"""Fuzz targets: the rule-file loader (load_pack) and the config and sites loaders (load_config, load_sites),
fed generated and mutated TOML *text* through real files. Each input gives a value or the loader's own
error (ConfigErrors / ConfigError naming the file), never another exception, never a hang."""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
from fuzzkit import EXAMPLES, FUZZ, corpus, count, mutate, mutations, time_limit
from hypothesis import given
from hypothesis import strategies as st
from tomlgen import dumps

from earlywarn.config import Config, load_config, load_sites
from earlywarn.errors import ConfigError, ConfigErrors
from earlywarn.rules.spec import load_pack
from earlywarn.rules.types import RuleKind, RulePack

REPO = Path(__file__).resolve().parents[2]
WORK = Path(tempfile.mkdtemp(prefix="ew-fuzz-"))
atexit.register(shutil.rmtree, WORK, ignore_errors=True)


def _write(name: str, data: bytes) -> Path:
    p = WORK / name
    p.write_bytes(data)
    return p


def check_pack(data: bytes) -> None:
    p = _write("aluminum.toml", data)
    with time_limit():
        try:
            pack = load_pack(p)
        except ConfigErrors as e:
            assert e.errors and all(isinstance(x, ConfigError) and x.file == str(p) for x in e.errors)
            str(e)
            return
    assert isinstance(pack, RulePack)


def check_config(data: bytes) -> None:
    p = _write("earlywarn.toml", data)
    with time_limit():
        try:
            cfg = load_config(p)
        except ConfigError as e:
            assert e.file == str(p) and e.key
            str(e)
            return
    assert isinstance(cfg, Config)


def check_sites(data: bytes) -> None:
    p = _write("sites.toml", data)
    with time_limit():
        try:
            sites = load_sites(p)
        except ConfigError as e:
            assert e.file == str(p) and e.key
            str(e)
            return
    assert isinstance(sites, dict)


# -- generated documents ----------------------------------------------------------------------------

scalars = st.one_of(
    st.booleans(), st.integers(min_value=-(2**63), max_value=2**63 - 1), st.floats(), st.text(max_size=20),
    st.sampled_from(["5s", "500ms", "8h", "-1s", "1e999s", "", "*", ">", "red", "a > 1", "((", "mqtt://h:1",
                     "mqtts://h", "mqtt://u:p@h:1", "127.0.0.1:0", "aluminum", "hazchem", "3.1.1", "process"]),
)
values = st.one_of(scalars, st.lists(scalars, max_size=3), st.dictionaries(st.text(max_size=8), scalars, max_size=3))
RULE_KEYS = sorted({"id", "kind", "tag", "tags", "op", "limit", "severity", "message", "when", "window", "k",
                    "expr", "trigger", "expect", "within", "horizon", "timeout", "deadband", "min_r2", "bogus"})
rule_docs = st.fixed_dictionaries(
    {"plant": st.one_of(st.just("aluminum"), scalars)},
    optional={
        "tag": st.lists(st.fixed_dictionaries({"name": st.one_of(st.sampled_from(["a", "b"]), scalars)},
                                              optional={"range": values, "unit": values}), max_size=3),
        "rule": st.lists(st.dictionaries(st.sampled_from(RULE_KEYS),
                                         st.one_of(values, st.sampled_from([k.value for k in RuleKind])),
                                         max_size=8), max_size=3),
    },
)
SECTIONS = {
    "broker": ["url", "protocol", "client_id", "topics", "keepalive", "session_expiry", "receive_maximum",
               "reconnect_min", "reconnect_max", "username_env", "password_env", "ca_file", "notices", "bogus"],
    "store": ["path", "checkpoint_interval"],
    "ingest": ["max_future", "max_payload", "accept_unknown_sites", "batch_max_readings", "mode", "queue_max_messages"],
    "http": ["listen", "public_url", "tokens", "link_ttl"],
    "alarms": ["deadlines", "max_shelve", "chatter_count", "red_immediate_tiers"],
    "notify": ["group_wait", "mqtt", "smtp", "webhook"],
    "metrics": ["listen"],
}
config_docs = st.dictionaries(
    st.sampled_from([*SECTIONS, "nonsense"]),
    st.one_of(st.sampled_from(list(SECTIONS)).flatmap(
        lambda s: st.dictionaries(st.sampled_from(SECTIONS[s]), values, max_size=4)), scalars),
    max_size=4,
)
site_docs = st.fixed_dictionaries({}, optional={"site": st.one_of(st.lists(st.dictionaries(
    st.sampled_from(["id", "name", "plant", "district", "township", "contacts", "overrides", "bogus"]),
    st.one_of(values, st.just([{"tier": "plant", "email": "a@b"}]), st.just({"r1": {"limit": 1}})), max_size=6),
    max_size=3), scalars), "x": scalars})

STRUCTURED = FUZZ.__class__(FUZZ, max_examples=max(50, EXAMPLES // 20))


@STRUCTURED
@given(rule_docs)
def test_generated_rule_files(doc: dict[str, Any]) -> None:
    check_pack(dumps(doc).encode())
    count("rules")


@STRUCTURED
@given(config_docs)
def test_generated_config_files(doc: dict[str, Any]) -> None:
    check_config(dumps(doc).encode())
    count("config")


@STRUCTURED
@given(site_docs)
def test_generated_sites_files(doc: dict[str, Any]) -> None:
    check_sites(dumps(doc).encode())
    count("sites")


# -- mutated real files -----------------------------------------------------------------------------

RULE_SEEDS = [(REPO / "rules" / "steel.toml").read_bytes(), b"""plant = "aluminum"
[[tag]]
name = "a"
range = [0.0, 10.0]
[[tag]]
name = "b"
[[rule]]
id = "a_h"
kind = "threshold"
tag = "a"
op = ">"
limit = 9.5
severity = "red"
message = "a high"
when = "b == 1"
"""]
CONFIG_SEED = b"""[broker]
url = "mqtts://broker.example:8883"
protocol = "3.1.1"
client_id = "ew"
topics = ["ew/+/telemetry/#"]
ca_file = "ca.pem"
username_env = "EW_USER"
password_env = "EW_PASS"
reconnect_min = "1s"
[store]
path = "ew.duckdb"
[rules]
sites = "sites.toml"
dir = "rules"
[http]
listen = "127.0.0.1:8080"
[[http.tokens]]
name = "ops"
role = "plant"
sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
sites = ["S1"]
[ingest]
max_future = "5m"
batch_max_readings = 5000
[alarms.deadlines.red]
ack = "5m"
[notify.smtp]
host = "mail"
port = 25
"""
SITES_SEED = b"""[[site]]
id = "SZ-AL-0001"
name = "Plant"
plant = "aluminum"
district = "wujiang"
[[site.contacts]]
tier = "plant"
email = "a@example.com"
[site.overrides.cw_pressure_low]
limit = 0.2
"""


@FUZZ
@given(st.sampled_from(RULE_SEEDS), mutations)
def test_mutated_rule_files(seed: bytes, ops: list) -> None:
    check_pack(mutate(seed, ops))
    count("rules")


@FUZZ
@given(mutations)
def test_mutated_config_files(ops: list) -> None:
    check_config(mutate(CONFIG_SEED, ops))
    count("config")


@FUZZ
@given(mutations)
def test_mutated_sites_files(ops: list) -> None:
    check_sites(mutate(SITES_SEED, ops))
    count("sites")


@pytest.mark.parametrize("path", corpus("rules"), ids=lambda p: p.name)
def test_rules_corpus_regressions(path: Path) -> None:
    check_pack(path.read_bytes())


@pytest.mark.parametrize("path", corpus("config"), ids=lambda p: p.name)
def test_config_corpus_regressions(path: Path) -> None:
    check_config(path.read_bytes())


@pytest.mark.parametrize("path", corpus("sites"), ids=lambda p: p.name)
def test_sites_corpus_regressions(path: Path) -> None:
    check_sites(path.read_bytes())
