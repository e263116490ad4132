"""The rule loader never crashes: any parsed TOML document yields a RulePack or ConfigErrors, nothing else."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from earlywarn.errors import ConfigError
from earlywarn.rules.spec import KIND_KEYS, _pack_from_doc, allowed_keys
from earlywarn.rules.types import RuleKind, RulePack

TAGS = ["p_a", "p_b", "casting_active"]
KEYS = sorted({k for kind in RuleKind for k in allowed_keys(kind)} | {"bogus"})

scalars = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),  # beyond float range on purpose
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["5s", "500ms", "8h", "0", "-1s", "", "*", ">", "<=", "==", "red", "blue", "nope"]),
    st.sampled_from(TAGS),
    st.sampled_from(["p_a > 1", "p_a > 1 and casting_active == 1", "p_z == 1", "p_a >", "((", "not p_b < 0"]),
    st.sampled_from([k.value for k in RuleKind]),
)
values = st.one_of(
    scalars, st.lists(scalars, max_size=4), st.dictionaries(st.sampled_from(KEYS), scalars, max_size=2)
)
rules = st.dictionaries(st.sampled_from(KEYS), values, max_size=10)
tags = st.fixed_dictionaries(
    {"name": st.one_of(st.sampled_from(TAGS), scalars)},
    optional={"unit": values, "range": values, "description": values, "junk": values},
)
docs = st.fixed_dictionaries(
    {},
    optional={
        "plant": st.one_of(st.sampled_from(["aluminum", "dust", "x"]), scalars),
        "tag": st.one_of(st.lists(tags, max_size=4), values),
        "rule": st.one_of(st.lists(rules, max_size=4), values),
        "extra": values,
    },
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(docs)
def test_any_document_gives_a_pack_or_config_errors(doc: dict[str, Any]) -> None:
    pack, errors = _pack_from_doc(doc, Path("aluminum.toml"))
    assert (pack is None) == bool(errors)
    assert all(isinstance(e, ConfigError) and e.file == "aluminum.toml" for e in errors)
    if pack is not None:
        assert isinstance(pack, RulePack)


def _complete_rule(kind: RuleKind) -> dict[str, Any]:
    base: dict[str, Any] = {"id": "r", "kind": kind.value, "severity": "red", "message": "m"}
    sample = {
        "tag": "p_a", "tags": ["p_a", "p_b"], "op": ">", "limit": 1, "k": 1, "window": "5s", "timeout": "5s",
        "expr": "p_a > 1", "trigger": "p_a > 1", "expect": "p_b == 1", "within": "2s", "horizon": "1m",
    }
    base.update({k: sample[k] for k in KIND_KEYS[kind][0]})
    return base


def test_the_complete_rule_of_every_kind_loads() -> None:
    for kind in RuleKind:
        doc = {"plant": "aluminum", "tag": [{"name": t} for t in TAGS], "rule": [_complete_rule(kind)]}
        pack, errors = _pack_from_doc(doc, Path("aluminum.toml"))
        assert errors == [] and pack is not None and pack.rules[0].kind is kind


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(list(RuleKind)), st.sampled_from(KEYS), values)
def test_one_changed_key_of_a_good_rule_never_crashes(kind: RuleKind, key: str, value: Any) -> None:
    rule = _complete_rule(kind)
    rule[key] = value
    doc = {"plant": "aluminum", "tag": [{"name": t} for t in TAGS], "rule": [rule]}
    pack, errors = _pack_from_doc(doc, Path("aluminum.toml"))
    assert (pack is None) == bool(errors)
    for e in errors:
        assert e.key.startswith(("rule[", "plant", "tag")), e
