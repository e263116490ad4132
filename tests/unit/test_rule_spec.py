"""Rule files -> RuleSpecs: each validation error (file, rule, key, expected), overrides, shipped packs."""

from __future__ import annotations

from pathlib import Path

import pytest

from earlywarn.config import load_sites
from earlywarn.errors import ConfigError, ConfigErrors
from earlywarn.model import PLANTS, Severity
from earlywarn.rules.spec import check_path, load_pack, load_packs, rules_for_sites
from earlywarn.rules.types import And, Cmp, RuleKind, expr_tags

REPO = Path(__file__).resolve().parents[2]
RULES_DIR = REPO / "rules"

HEADER = """
plant = "aluminum"

[[tag]]
name = "cw_pressure_mpa"
unit = "MPa"
description = "cooling-water pressure"
range = [0.0, 1.0]

[[tag]]
name = "casting_active"
unit = "bool"

[[tag]]
name = "cutoff_gate_closed"

[[tag]]
name = "p_a"
[[tag]]
name = "p_b"
[[tag]]
name = "p_c"
"""

GOOD_RULE = """
[[rule]]
id = "cw_pressure_ll"
kind = "threshold"
tag = "cw_pressure_mpa"
op = "<"
limit = 0.15
deadband = 0.01
on_delay = "1s"
when = "casting_active == 1"
severity = "red"
message = "Cooling-water pressure low-low while casting"
"""


def write(tmp_path: Path, body: str, *, name: str = "aluminum.toml", header: str = HEADER) -> Path:
    p = tmp_path / name
    p.write_text(header + body, encoding="utf-8")
    return p


def problems(path: Path) -> list[tuple[str, str]]:
    """(key, expected) of every error the loader reports; asserts they all name the file."""
    with pytest.raises(ConfigErrors) as info:
        load_pack(path)
    for e in info.value.errors:
        assert e.file == str(path)
    assert [str(e) for e in check_path(path)] == [str(e) for e in info.value.errors]
    return [(e.key, e.expected) for e in info.value.errors]


def one_problem(path: Path) -> tuple[str, str]:
    found = problems(path)
    assert len(found) == 1, found
    return found[0]


def rule(rid: str, kind: str, **keys: str) -> str:
    """A [[rule]] table; `keys` values are TOML literals. Severity and message are filled in."""
    lines = [f'id = "{rid}"', f'kind = "{kind}"', *(f"{k} = {v}" for k, v in keys.items())]
    return "\n[[rule]]\n" + "\n".join([*lines, 'severity = "blue"', 'message = "m"']) + "\n"


# ---------------------------------------------------------------------------------------------
# the good path


def test_a_good_file_loads_into_specs(tmp_path: Path) -> None:
    pack = load_pack(write(tmp_path, GOOD_RULE))
    assert pack.plant == "aluminum"
    assert [t.name for t in pack.tags][:2] == ["cw_pressure_mpa", "casting_active"]
    assert pack.tags[0].range == (0.0, 1.0) and pack.tags[0].unit == "MPa"
    (r,) = pack.rules
    assert r.id == "cw_pressure_ll" and r.kind is RuleKind.THRESHOLD and r.severity is Severity.RED
    assert (r.tag, r.op, r.limit, r.deadband, r.on_delay_ms) == ("cw_pressure_mpa", "<", 0.15, 0.01, 1000)
    assert r.when == Cmp("casting_active", "==", 1.0)
    assert r.plant == "aluminum" and r.source.endswith("aluminum.toml") and r.enabled


ALL_KINDS = """
[[rule]]
id = "r.rate"
kind = "rate"
tag = "cw_pressure_mpa"
op = "<"
limit = -0.5
window = "3s"
severity = "orange"
message = "m"

[[rule]]
id = "r-stale"
kind = "stale"
tag = "*"
timeout = 180
severity = "yellow"
message = "m"

[[rule]]
id = "r_flat"
kind = "flatline"
tag = "cw_pressure_mpa"
window = "40m"
severity = "yellow"
message = "m"

[[rule]]
id = "q_default"
kind = "quality"
tag = "cw_pressure_mpa"
severity = "yellow"
message = "m"

[[rule]]
id = "q_explicit"
kind = "quality"
tag = "cw_pressure_mpa"
range = [-0.05, 1.05]
severity = "yellow"
message = "m"

[[rule]]
id = "q_none"
kind = "quality"
tag = "casting_active"
severity = "yellow"
message = "m"

[[rule]]
id = "v"
kind = "vote"
tags = ["p_a", "p_b", "p_c"]
op = ">="
limit = 25
k = 2
severity = "orange"
message = "m"

[[rule]]
id = "e"
kind = "expr"
expr = "casting_active == 1 and not cutoff_gate_closed == 1"
on_delay = "500ms"
off_delay = "2s"
enabled = false
severity = "blue"
message = "m"

[[rule]]
id = "i"
kind = "interlock"
trigger = "cw_pressure_mpa < 0.15 and casting_active == 1"
expect = "cutoff_gate_closed == 1"
within = "2s"
severity = "red"
message = "m"

[[rule]]
id = "t"
kind = "trend"
tag = "cw_pressure_mpa"
op = "<"
limit = 0.15
window = "10m"
horizon = "30m"
severity = "blue"
message = "m"

[[rule]]
id = "t2"
kind = "trend"
tag = "cw_pressure_mpa"
op = "<"
limit = 0.15
window = "10m"
horizon = "8h"
min_r2 = 0
severity = "blue"
message = "m"
"""


def test_every_kind_loads_with_durations_in_ms_and_defaults(tmp_path: Path) -> None:
    rules = {r.id: r for r in load_pack(write(tmp_path, ALL_KINDS)).rules}
    assert rules["r.rate"].window_ms == 3000 and rules["r.rate"].limit == -0.5
    assert rules["r-stale"].tag == "*" and rules["r-stale"].timeout_ms == 180_000
    assert rules["r_flat"].window_ms == 40 * 60_000 and rules["r_flat"].epsilon == 0.0
    assert rules["q_default"].range == (0.0, 1.0)  # the tag's declared instrument range
    assert rules["q_explicit"].range == (-0.05, 1.05)
    assert rules["q_none"].range is None  # no declared range: only bad quality raises
    assert rules["v"].tags == ("p_a", "p_b", "p_c") and rules["v"].k == 2 and rules["v"].limit == 25.0
    e = rules["e"]
    assert (e.on_delay_ms, e.off_delay_ms, e.enabled) == (500, 2000, False)
    assert expr_tags(e.expr) == ("casting_active", "cutoff_gate_closed")  # type: ignore[arg-type]
    i = rules["i"]
    assert isinstance(i.trigger, And) and i.within_ms == 2000
    assert i.expect == Cmp("cutoff_gate_closed", "==", 1.0)
    assert i.signal_tag == "cw_pressure_mpa"
    assert (rules["t"].window_ms, rules["t"].horizon_ms, rules["t"].min_r2) == (600_000, 1_800_000, 0.8)
    assert rules["t2"].min_r2 == 0.0


# ---------------------------------------------------------------------------------------------
# one error per case: (rule body, key, words in the expected text)

CASES = [
    pytest.param(GOOD_RULE.replace('kind = "threshold"', 'kind = "thresold"'),
                 "rule[cw_pressure_ll].kind", "one of threshold, rate", id="unknown-kind"),
    pytest.param(GOOD_RULE.replace('kind = "threshold"\n', ""),
                 "rule[cw_pressure_ll].kind", "required", id="missing-kind"),
    pytest.param(GOOD_RULE.replace("deadband = 0.01", "deadband = 0.01\nwindow = '5s'"),
                 "rule[cw_pressure_ll].window", "unknown key for a threshold rule", id="key-of-another-kind"),
    pytest.param(GOOD_RULE.replace("deadband = 0.01", "deadbnd = 0.01"),
                 "rule[cw_pressure_ll].deadbnd", "unknown key", id="typo-key"),
    pytest.param(GOOD_RULE.replace("limit = 0.15\n", ""),
                 "rule[cw_pressure_ll].limit", "required in threshold rules", id="missing-limit"),
    pytest.param(GOOD_RULE.replace('message = "Cooling-water pressure low-low while casting"\n', ""),
                 "rule[cw_pressure_ll].message", "required", id="missing-message"),
    pytest.param(GOOD_RULE.replace('severity = "red"', 'severity = "purple"'),
                 "rule[cw_pressure_ll].severity", "one of red, orange, yellow, blue", id="bad-severity"),
    pytest.param(GOOD_RULE.replace('on_delay = "1s"', 'on_delay = "1 sec"'),
                 "rule[cw_pressure_ll].on_delay", "a duration", id="bad-duration"),
    pytest.param(GOOD_RULE.replace('on_delay = "1s"', "on_delay = -1"),
                 "rule[cw_pressure_ll].on_delay", "non-negative", id="negative-duration"),
    pytest.param(GOOD_RULE.replace('on_delay = "1s"', "off_delay = true"),
                 "rule[cw_pressure_ll].off_delay", "a duration", id="bool-duration"),
    pytest.param(GOOD_RULE.replace('op = "<"', 'op = "=="'),
                 "rule[cw_pressure_ll].op", "one of '>', '>=', '<', '<='", id="bad-op"),
    pytest.param(GOOD_RULE.replace("limit = 0.15", 'limit = "0.15"'),
                 "rule[cw_pressure_ll].limit", "a number, got string", id="limit-string"),
    pytest.param(GOOD_RULE.replace("limit = 0.15", "limit = nan"),
                 "rule[cw_pressure_ll].limit", "finite", id="limit-nan"),
    pytest.param(GOOD_RULE.replace("limit = 0.15", "limit = true"),
                 "rule[cw_pressure_ll].limit", "a number, got boolean", id="limit-bool"),
    pytest.param(GOOD_RULE.replace("deadband = 0.01", "deadband = -0.01"),
                 "rule[cw_pressure_ll].deadband", ">= 0", id="negative-deadband"),
    pytest.param(GOOD_RULE.replace('tag = "cw_pressure_mpa"', 'tag = "cw_presure_mpa"'),
                 "rule[cw_pressure_ll].tag", "declared in this file's [[tag]] list, got 'cw_presure_mpa'",
                 id="unknown-tag"),
    pytest.param(GOOD_RULE.replace('tag = "cw_pressure_mpa"', 'tag = "*"'),
                 "rule[cw_pressure_ll].tag", "only in stale rules", id="star-outside-stale"),
    pytest.param(GOOD_RULE.replace('"casting_active == 1"', '"casting_on == 1"'),
                 "rule[cw_pressure_ll].when", "not in this file's [[tag]] list: casting_on",
                 id="unknown-tag-in-when"),
    pytest.param(GOOD_RULE.replace('"casting_active == 1"', '"casting_active == 1 and"'),
                 "rule[cw_pressure_ll].when",
                 "at column 24 of 'casting_active == 1 and': expected a tag name",
                 id="bad-expression"),
    pytest.param(GOOD_RULE.replace('"casting_active == 1"', "1"),
                 "rule[cw_pressure_ll].when", "a string", id="expression-not-string"),
    pytest.param(GOOD_RULE.replace('id = "cw_pressure_ll"', 'id = "cw pressure"'),
                 "rule[1].id", "a rule id matching", id="bad-id"),
    pytest.param(GOOD_RULE.replace('id = "cw_pressure_ll"\n', ""),
                 "rule[1].id", "required", id="missing-id"),
    pytest.param(GOOD_RULE + GOOD_RULE,
                 "rule[cw_pressure_ll].id", "a unique rule id (also rule #1", id="duplicate-id"),
    pytest.param(GOOD_RULE.replace('severity = "red"', 'severity = "red"\nenabled = "yes"'),
                 "rule[cw_pressure_ll].enabled", "true or false", id="enabled-not-bool"),
    pytest.param(rule("s", "stale", tag='"*"', timeout="0"),
                 "rule[s].timeout", "a duration > 0", id="zero-timeout"),
    pytest.param(rule("s", "stale", tag='"p_a"', timeout='"3m"', when='"p_b == 1"'),
                 "rule[s].when", 'a gate only on a site-wide stale rule (tag = "*")', id="gate-on-per-tag-stale"),
    pytest.param(rule("r", "rate", tag='"p_a"', op='">"', limit="1", window='"0s"'),
                 "rule[r].window", "a duration > 0", id="zero-window"),
    pytest.param(rule("f", "flatline", tag='"p_a"', window='"1h"', epsilon="-1"),
                 "rule[f].epsilon", ">= 0", id="negative-epsilon"),
    pytest.param(rule("i", "interlock", trigger='"p_a > 1"', expect='"p_b == 1"', within="0"),
                 "rule[i].within", "a duration > 0", id="zero-within"),
    pytest.param(rule("i", "interlock", trigger='"p_a > 1"', within='"1s"'),
                 "rule[i].expect", "required in interlock rules", id="missing-expect"),
    pytest.param(rule("i", "interlock", trigger='"p_a > 1"', expect='"p_z == 1"', within='"1s"'),
                 "rule[i].expect", "p_z", id="unknown-tag-in-expect"),
    pytest.param(rule("v", "vote", tags='["p_a", "p_b"]', op='">"', limit="1", k="3"),
                 "rule[v].k", "at most the size of the vote group (2 tags), got 3", id="k-too-large"),
    pytest.param(rule("v", "vote", tags='["p_a", "p_b"]', op='">"', limit="1", k="0"),
                 "rule[v].k", "an integer >= 1", id="k-zero"),
    pytest.param(rule("v", "vote", tags='["p_a"]', op='">"', limit="1", k="1"),
                 "rule[v].tags", "at least 2 tags", id="vote-one-tag"),
    pytest.param(rule("v", "vote", tags='["p_a", "p_a"]', op='">"', limit="1", k="1"),
                 "rule[v].tags", "distinct", id="vote-repeated-tag"),
    pytest.param(rule("v", "vote", tags='["p_a", "p_x"]', op='">"', limit="1", k="1"),
                 "rule[v].tags", "got 'p_x'", id="vote-unknown-tag"),
    pytest.param(rule("q", "quality", tag='"p_a"', range="[1, 0]"),
                 "rule[q].range", "lo < hi", id="range-reversed"),
    pytest.param(rule("q", "quality", tag='"p_a"', range="[0]"),
                 "rule[q].range", "[lo, hi]", id="range-one-number"),
    pytest.param(rule("t", "trend", tag='"p_a"', op='">"', limit="1", window='"10m"', horizon='"30m"',
                      min_r2="1.5"),
                 "rule[t].min_r2", "in [0, 1]", id="min-r2-out-of-range"),
    pytest.param(rule("t", "trend", tag='"p_a"', op='">"', limit="1", window='"10m"', horizon="0"),
                 "rule[t].horizon", "a duration > 0", id="zero-horizon"),
    pytest.param(rule("x", "expr", expr='"p_a > 1 &&"'), "rule[x].expr", "column 9", id="expr-syntax"),
    pytest.param('\n[[tag]]\nname = "p_a"\n', "tag[p_a].name", "declared twice", id="duplicate-tag"),
    pytest.param('\n[[tag]]\nname = "bad tag"\n', "tag[bad tag].name", "a tag name matching",
                 id="bad-tag-name"),
    pytest.param('\n[[tag]]\nname = "z"\nunits = "m"\n', "tag[z].units", "unknown key", id="unknown-tag-key"),
    pytest.param('\n[[tag]]\nname = "z"\nrange = [0, "1"]\n', "tag[z].range", "a number", id="bad-tag-range"),
    pytest.param('\n[[tag]]\nunit = "m"\n', "tag[7].name", "required", id="tag-without-name"),
]


@pytest.mark.parametrize(("body", "key", "words"), CASES)
def test_each_problem_names_rule_key_and_expectation(tmp_path: Path, body: str, key: str, words: str) -> None:
    found = problems(write(tmp_path, body))
    assert any(k == key and words in exp for k, exp in found), found


def test_every_problem_of_a_file_is_reported_at_once(tmp_path: Path) -> None:
    body = (
        GOOD_RULE.replace('op = "<"', 'op = "=<"').replace('on_delay = "1s"', 'on_delay = "soon"')
        + rule("b", "stale", tag='"nope"', timeout="0", foo="1")
        + rule("c", "magic")
    )
    keys = {k for k, _ in problems(write(tmp_path, body))}
    assert keys == {
        "rule[cw_pressure_ll].op",
        "rule[cw_pressure_ll].on_delay",
        "rule[b].tag",
        "rule[b].timeout",
        "rule[b].foo",
        "rule[c].kind",
    }


def test_error_text_names_file_rule_key_and_expected(tmp_path: Path) -> None:
    p = write(tmp_path, GOOD_RULE.replace("limit = 0.15", 'limit = "low"'))
    with pytest.raises(ConfigErrors) as info:
        load_pack(p)
    assert str(info.value) == f"{p}: rule[cw_pressure_ll].limit: a number, got string 'low'"


# ---------------------------------------------------------------------------------------------
# file-level problems


def test_toml_syntax_error_gives_the_line(tmp_path: Path) -> None:
    key, expected = one_problem(write(tmp_path, GOOD_RULE + "\nlimit = = 3\n"))
    assert key == "(syntax)" and "valid TOML" in expected and "line" in expected


@pytest.mark.parametrize(
    ("top", "key", "words"),
    [
        ("rule = 5", "rule", "an array of tables [[rule]]"),
        ("tag = 'x'", "tag", "an array of tables [[tag]]"),
        ("version = 2", "version", "unknown top-level key"),
    ],
)
def test_top_level_problems(tmp_path: Path, top: str, key: str, words: str) -> None:
    # top-level keys must come before the first [[table]] in TOML
    tags_and_rule = HEADER.replace('plant = "aluminum"', "") + GOOD_RULE
    body = {"rule": HEADER.replace('plant = "aluminum"', ""), "tag": GOOD_RULE}.get(key, tags_and_rule)
    found = problems(write(tmp_path, body, header=f'plant = "aluminum"\n{top}\n'))
    assert any(k == key and words in exp for k, exp in found), found


def test_missing_file(tmp_path: Path) -> None:
    assert one_problem(tmp_path / "nope.toml") == ("(file)", "an existing rule file")


@pytest.mark.parametrize(
    ("header_plant", "name", "words"),
    [
        ('plant = "bakery"', "aluminum.toml", "one of hazchem, dust, aluminum, steel, got 'bakery'"),
        ('plant = "dust"', "aluminum.toml", "'aluminum' in a file named aluminum.toml"),
        ("", "aluminum.toml", "required"),
    ],
    ids=["unknown-plant", "plant-does-not-match-file", "missing-plant"],
)
def test_wrong_plant(tmp_path: Path, header_plant: str, name: str, words: str) -> None:
    p = write(tmp_path, GOOD_RULE, name=name, header=HEADER.replace('plant = "aluminum"', header_plant))
    key, expected = one_problem(p)
    assert key == "plant" and words in expected


def test_a_file_not_named_after_a_plant_may_hold_any_plant(tmp_path: Path) -> None:
    assert load_pack(write(tmp_path, GOOD_RULE, name="table-7.toml")).plant == "aluminum"


def test_load_packs_maps_plant_to_pack_and_rejects_two_files_for_one_plant(tmp_path: Path) -> None:
    write(tmp_path, GOOD_RULE)
    assert set(load_packs(tmp_path)) == {"aluminum"}
    write(tmp_path, GOOD_RULE, name="extra.toml")
    with pytest.raises(ConfigErrors) as info:
        load_packs(tmp_path)
    (err,) = info.value.errors
    assert err.file.endswith("extra.toml") and err.key == "plant" and "one file per plant" in err.expected


def test_load_packs_collects_errors_of_every_file(tmp_path: Path) -> None:
    write(tmp_path, GOOD_RULE.replace('op = "<"', 'op = "<>"'))
    write(tmp_path, GOOD_RULE.replace("limit = 0.15", "limit = []"), name="dust.toml",
          header=HEADER.replace('plant = "aluminum"', 'plant = "dust"'))
    errors = check_path(tmp_path)
    assert sorted((Path(e.file).name, e.key) for e in errors) == [
        ("aluminum.toml", "rule[cw_pressure_ll].op"),
        ("dust.toml", "rule[cw_pressure_ll].limit"),
    ]
    with pytest.raises(ConfigErrors):
        load_packs(tmp_path)


def test_check_path_on_missing_or_empty_directory(tmp_path: Path) -> None:
    assert [e.key for e in check_path(tmp_path)] == ["(dir)"]
    assert [e.key for e in check_path(tmp_path / "missing")] == ["(file)"]
    with pytest.raises(ConfigErrors):
        load_packs(tmp_path / "missing")


# ---------------------------------------------------------------------------------------------
# site overrides

SITES = """
[[site]]
id = "SZ-AL-0001"
name = "Casting plant one"
plant = "aluminum"
district = "wujiang"
{overrides}

[[site]]
id = "SZ-AL-0002"
name = "Casting plant two"
plant = "aluminum"
district = "wujiang"
"""


def site_rules(
    tmp_path: Path, overrides: str, rules: str = GOOD_RULE + ALL_KINDS
) -> dict[str, dict[str, object]]:
    pack_dir = tmp_path / "rules"
    pack_dir.mkdir(exist_ok=True)
    write(pack_dir, rules)
    sites_file = tmp_path / "sites.toml"
    sites_file.write_text(SITES.format(overrides=overrides), encoding="utf-8")
    out = rules_for_sites(load_packs(pack_dir), load_sites(sites_file), str(sites_file))
    return {site: {r.id: r for r in rs} for site, rs in out.items()}


def override_error(tmp_path: Path, overrides: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        site_rules(tmp_path, overrides)
    assert info.value.file == str(tmp_path / "sites.toml")
    return info.value


def test_override_changes_only_its_site(tmp_path: Path) -> None:
    got = site_rules(tmp_path, "[site.overrides.cw_pressure_ll]\nlimit = 0.18\non_delay = '2s'\n")
    one, two = got["SZ-AL-0001"]["cw_pressure_ll"], got["SZ-AL-0002"]["cw_pressure_ll"]
    assert (one.limit, one.on_delay_ms) == (0.18, 2000)  # type: ignore[attr-defined]
    assert (two.limit, two.on_delay_ms) == (0.15, 1000)  # type: ignore[attr-defined]
    assert one.deadband == two.deadband == 0.01  # type: ignore[attr-defined]


def test_sites_with_equal_rules_share_one_tuple(tmp_path: Path) -> None:
    """The rule engine builds one template per rule-list object: equal lists are handed out as one."""
    pack_dir = tmp_path / "rules"
    pack_dir.mkdir()
    write(pack_dir, GOOD_RULE + ALL_KINDS)
    sites_file = tmp_path / "sites.toml"
    for overrides, shared in (("", True), ("[site.overrides.cw_pressure_ll]\nlimit = 0.18\n", False)):
        sites_file.write_text(SITES.format(overrides=overrides), encoding="utf-8")
        out = rules_for_sites(load_packs(pack_dir), load_sites(sites_file), str(sites_file))
        assert (out["SZ-AL-0001"] is out["SZ-AL-0002"]) is shared
        assert (out["SZ-AL-0001"] == out["SZ-AL-0002"]) is shared


def test_only_enabled_rules_and_override_can_enable(tmp_path: Path) -> None:
    got = site_rules(tmp_path, "[site.overrides.e]\nenabled = true\n[site.overrides.v]\nenabled = false\n")
    assert "e" in got["SZ-AL-0001"] and "v" not in got["SZ-AL-0001"]
    assert "e" not in got["SZ-AL-0002"] and "v" in got["SZ-AL-0002"]


def test_override_of_expressions_and_severity_is_parsed(tmp_path: Path) -> None:
    got = site_rules(
        tmp_path,
        "[site.overrides.i]\ntrigger = 'cw_pressure_mpa < 0.18'\nwithin = '1s'\nseverity = 'orange'\n",
    )["SZ-AL-0001"]["i"]
    assert got.trigger == Cmp("cw_pressure_mpa", "<", 0.18)  # type: ignore[attr-defined]
    assert got.within_ms == 1000  # type: ignore[attr-defined]
    assert got.severity is Severity.ORANGE  # type: ignore[attr-defined]


def test_quality_override_of_tag_takes_that_tags_range(tmp_path: Path) -> None:
    got = site_rules(tmp_path, "[site.overrides.q_none]\ntag = 'cw_pressure_mpa'\n")
    assert got["SZ-AL-0001"]["q_none"].range == (0.0, 1.0)  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("overrides", "key", "words"),
    [
        ("[site.overrides.cw_pressure_lll]\nlimit = 0.1\n", "site[SZ-AL-0001].overrides.cw_pressure_lll",
         "the id of a rule in the aluminum rule pack"),
        ("[site.overrides.cw_pressure_ll]\nlimt = 0.1\n", "site[SZ-AL-0001].overrides.cw_pressure_ll.limt",
         "a key of a threshold rule"),
        ("[site.overrides.cw_pressure_ll]\nwindow = '1s'\n",
         "site[SZ-AL-0001].overrides.cw_pressure_ll.window",
         "a key of a threshold rule"),
        ("[site.overrides.cw_pressure_ll]\nlimit = 'low'\n",
         "site[SZ-AL-0001].overrides.cw_pressure_ll.limit",
         "a number"),
        ("[site.overrides.cw_pressure_ll]\nkind = 'rate'\n", "site[SZ-AL-0001].overrides.cw_pressure_ll.kind",
         "not overridable"),
        ("[site.overrides.cw_pressure_ll]\nwhen = 'casting == 1'\n",
         "site[SZ-AL-0001].overrides.cw_pressure_ll.when", "casting"),
        ("[site.overrides.v]\nk = 4\n", "site[SZ-AL-0001].overrides.v.k",
         "at most the size of the vote group"),
        ("[site.overrides.i]\nwithin = 0\n", "site[SZ-AL-0001].overrides.i.within", "a duration > 0"),
    ],
    ids=["unknown-rule", "unknown-key", "key-of-another-kind", "bad-value", "kind", "unknown-tag-in-when",
         "k-too-large", "zero-within"],
)
def test_bad_override_names_sites_file_site_rule_and_key(
    tmp_path: Path, overrides: str, key: str, words: str
) -> None:
    err = override_error(tmp_path, overrides)
    assert err.key == key and words in err.expected, str(err)


def test_site_with_a_plant_without_rule_pack(tmp_path: Path) -> None:
    pack_dir = tmp_path / "rules"
    pack_dir.mkdir()
    write(pack_dir, GOOD_RULE)
    sites_file = tmp_path / "sites.toml"
    sites_file.write_text('[[site]]\nid = "S1"\nplant = "dust"\ndistrict = "d"\n', encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        rules_for_sites(load_packs(pack_dir), load_sites(sites_file), str(sites_file))
    assert info.value.key == "site[S1].plant" and "aluminum" in info.value.expected


# ---------------------------------------------------------------------------------------------
# the shipped packs


def test_rules_check_of_the_repo_is_clean(monkeypatch: pytest.MonkeyPatch) -> None:
    assert check_path(RULES_DIR) == []
    monkeypatch.chdir(REPO)  # as `earlywarn rules check rules` is run from the repo
    assert check_path("rules") == []
    assert set(load_packs("rules")) == set(PLANTS)


@pytest.mark.parametrize("plant", PLANTS)
def test_every_shipped_pack_loads(plant: str) -> None:
    pack = load_pack(RULES_DIR / f"{plant}.toml")
    assert pack.plant == plant and pack.rules
    for r in pack.rules:
        assert r.message and r.plant == plant


REQUIRED_IDS = {
    "aluminum": {
        "cw_pressure_ll": (RuleKind.THRESHOLD, Severity.RED),
        "interlock_cw_cutoff": (RuleKind.INTERLOCK, Severity.RED),
        "start_no_cooling": (RuleKind.EXPR, Severity.RED),
        "casting_not_auto": (RuleKind.EXPR, Severity.ORANGE),
        "launder_level_hh": (RuleKind.THRESHOLD, Severity.ORANGE),
        "launder_level_ll": (RuleKind.THRESHOLD, Severity.ORANGE),
        "pit_water_level_trend_hh": (RuleKind.TREND, Severity.BLUE),
        "emergency_tank_low_at_start": (RuleKind.EXPR, Severity.ORANGE),
    },
    "hazchem": {
        "tank_level_hh": (RuleKind.THRESHOLD, Severity.ORANGE),
        "tank_level_trend_hh": (RuleKind.TREND, Severity.BLUE),
        "interlock_tank_esd": (RuleKind.INTERLOCK, Severity.RED),
        "lel_2oo3": (RuleKind.VOTE, Severity.ORANGE),
        "reactor_temp_rate": (RuleKind.RATE, Severity.ORANGE),
        "agitator_stopped_feeding": (RuleKind.EXPR, Severity.ORANGE),
        "stale_gateway": (RuleKind.STALE, Severity.YELLOW),
        "sis_bypass_8h": (RuleKind.THRESHOLD, Severity.YELLOW),
    },
    "dust": {
        "fan_off_production_on": (RuleKind.EXPR, Severity.ORANGE),
        "interlock_spark_extinguish": (RuleKind.INTERLOCK, Severity.RED),
        "vent_burst": (RuleKind.THRESHOLD, Severity.RED),
        "interlock_wet_ll_production": (RuleKind.INTERLOCK, Severity.RED),
        "hopper_level_high_30m": (RuleKind.THRESHOLD, Severity.YELLOW),
        "dp_flatline": (RuleKind.FLATLINE, Severity.YELLOW),
    },
    "steel": {
        "co_2oo3": (RuleKind.VOTE, Severity.ORANGE),
        "gas_main_pressure_ll": (RuleKind.THRESHOLD, Severity.ORANGE),
        "interlock_gas_main_burner": (RuleKind.INTERLOCK, Severity.RED),
    },
}


@pytest.mark.parametrize("plant", sorted(REQUIRED_IDS))
def test_shipped_packs_keep_the_ids_others_reference(plant: str) -> None:
    rules = {r.id: r for r in load_pack(RULES_DIR / f"{plant}.toml").rules}
    for rid, (kind, severity) in REQUIRED_IDS[plant].items():
        assert rid in rules, rid
        assert (rules[rid].kind, rules[rid].severity) == (kind, severity), rid


def test_acceptance_examples_of_the_aluminum_pack() -> None:
    rules = {r.id: r for r in load_pack(RULES_DIR / "aluminum.toml").rules}
    ll = rules["cw_pressure_ll"]
    assert (ll.tag, ll.op, ll.limit) == ("cw_pressure_mpa", "<", 0.15)
    assert ll.when == Cmp("casting_active", "==", 1.0)
    il = rules["interlock_cw_cutoff"]
    assert il.trigger == And((Cmp("cw_pressure_mpa", "<", 0.15), Cmp("casting_active", "==", 1.0)))
    assert il.expect == Cmp("cutoff_gate_closed", "==", 1.0) and il.within_ms == 2000


def test_hazchem_vote_uses_the_three_suffixed_detectors() -> None:
    rules = {r.id: r for r in load_pack(RULES_DIR / "hazchem.toml").rules}
    vote = rules["lel_2oo3"]
    assert vote.tags == ("gas_lel_pct_a", "gas_lel_pct_b", "gas_lel_pct_c") and vote.k == 2
    assert (vote.op, vote.limit) == (">=", 25.0)
    assert rules["stale_gateway"].tag == "*"
    assert rules["sis_bypass_8h"].on_delay_ms == 8 * 3_600_000
