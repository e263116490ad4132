"""Rule files (TOML, one per plant type) -> validated RulePacks of RuleSpecs; site overrides applied.

A rule file is data, never code (product.md §5): it declares its `plant`, its tags (`[[tag]]`) and its
rules (`[[rule]]`). Loading is strict and exhaustive: every problem in a file is collected and reported
together (ConfigErrors), each naming the file, the rule id and the key and saying what was expected, so
`earlywarn rules check` shows everything to fix in one pass. In a safety system a typo must never fall
back silently to a default, hence unknown keys are errors.

Site overrides (`[site.overrides.RULE_ID]` in the sites file) go through the very same per-key
converters and whole-rule checks as the rule file itself (rules_for_sites).
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from earlywarn.config import parse_duration_ms
from earlywarn.errors import ConfigError, ConfigErrors, ExprError
from earlywarn.model import PLANTS, Severity, Site
from earlywarn.rules.expr import parse_expr
from earlywarn.rules.types import LIMIT_OPS, Expr, RuleKind, RulePack, RuleSpec, TagSpec, expr_tags

RULE_ID_RE = re.compile(r"[A-Za-z0-9_.-]{1,128}")
#: Same alphabet as the telemetry contract's `tag` field (product.md §3).
TAG_NAME_RE = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
#: `stale` only: any tag of the site (the gateway as a whole).
ANY_TAG = "*"
#: Default goodness of fit a trend line needs before its forecast counts (domain.md R11).
DEFAULT_MIN_R2 = 0.8

_TOP_KEYS = ("plant", "tag", "rule")
_TAG_KEYS = ("name", "unit", "description", "range")
_COMMON_REQUIRED = ("id", "kind", "severity", "message")
_COMMON_OPTIONAL = ("when", "on_delay", "off_delay", "enabled")

#: kind -> (required keys, optional keys), on top of the common keys. README.md in rules/ mirrors this.
KIND_KEYS: dict[RuleKind, tuple[tuple[str, ...], tuple[str, ...]]] = {
    RuleKind.THRESHOLD: (("tag", "op", "limit"), ("deadband",)),
    RuleKind.RATE: (("tag", "op", "limit", "window"), ("deadband",)),
    RuleKind.STALE: (("tag", "timeout"), ()),
    RuleKind.FLATLINE: (("tag", "window"), ("epsilon",)),
    RuleKind.QUALITY: (("tag",), ("range",)),
    RuleKind.VOTE: (("tags", "op", "limit", "k"), ("deadband",)),
    RuleKind.EXPR: (("expr",), ()),
    RuleKind.INTERLOCK: (("trigger", "expect", "within"), ()),
    RuleKind.TREND: (("tag", "op", "limit", "window", "horizon"), ("min_r2",)),
}

#: Keys a site may not override: they are the rule's identity, not its parameters.
_NOT_OVERRIDABLE = ("id", "kind")


class _Bad(Exception):
    """A value is wrong; carries what was expected (becomes a ConfigError once the location is known)."""

    def __init__(self, expected: str) -> None:
        super().__init__(expected)
        self.expected = expected


@dataclass(frozen=True, slots=True)
class _Ctx:
    """What the converters need to know about the file: its declared tags and the rule's kind."""

    tags: Mapping[str, TagSpec]
    kind: RuleKind


# ---------------------------------------------------------------------------------------------
# Value converters: (value, ctx) -> converted value, or raise _Bad(expected).


def _type_name(v: Any) -> str:
    names = {bool: "boolean", int: "integer", float: "number", str: "string", list: "array", dict: "table"}
    return names.get(type(v), type(v).__name__)


def _number(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise _Bad(f"a number, got {_type_name(v)} {v!r}")
    try:
        f = float(v)
    except OverflowError:  # a TOML integer too large for a float
        f = math.inf
    if not math.isfinite(f):
        raise _Bad(f"a finite number, got {v!r}")
    return f


def _nonneg_number(v: Any) -> float:
    f = _number(v)
    if f < 0:
        raise _Bad(f"a number >= 0, got {v!r}")
    return f


def _range(v: Any) -> tuple[float, float]:
    if not isinstance(v, list) or len(v) != 2:
        raise _Bad(f"[lo, hi], two numbers, got {v!r}")
    lo, hi = _number(v[0]), _number(v[1])
    if not lo < hi:
        raise _Bad(f"[lo, hi] with lo < hi, got {v!r}")
    return (lo, hi)


def _text(v: Any) -> str:
    if not isinstance(v, str):
        raise _Bad(f"a string, got {_type_name(v)} {v!r}")
    return v


def _duration_ms(v: Any, *, positive: bool) -> int:
    try:
        ms = parse_duration_ms(v)
    except ValueError as e:
        raise _Bad(f"{e}, got {v!r}") from None
    except OverflowError:  # finite seconds whose milliseconds are not
        raise _Bad(f"a duration of reasonable length, got {v!r}") from None
    if positive and ms <= 0:
        raise _Bad(f"a duration > 0, got {v!r}")
    return ms


def _declared(name: str, ctx: _Ctx) -> str:
    if name not in ctx.tags:
        raise _Bad(f"a tag declared in this file's [[tag]] list, got {name!r}")
    return name


def _conv_tag(v: Any, ctx: _Ctx) -> str:
    name = _text(v)
    if name == ANY_TAG:
        if ctx.kind is RuleKind.STALE:
            return name
        raise _Bad(f"a declared tag ('*' = any tag is allowed only in stale rules), got {name!r}")
    return _declared(name, ctx)


def _conv_tags(v: Any, ctx: _Ctx) -> tuple[str, ...]:
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise _Bad(f"an array of tag names, got {v!r}")
    if len(v) < 2:
        raise _Bad(f"at least 2 tags in a vote group, got {len(v)}")
    if len(set(v)) != len(v):
        raise _Bad(f"distinct tags (a detector votes once), got {v!r}")
    return tuple(_declared(x, ctx) for x in v)


def _conv_expr(v: Any, ctx: _Ctx) -> Expr:
    text = _text(v)
    try:
        e = parse_expr(text)
    except ExprError as err:
        raise _Bad(f"a valid expression: {err}") from None
    unknown = [t for t in expr_tags(e) if t not in ctx.tags]
    if unknown:
        raise _Bad(f"an expression over declared tags; not in this file's [[tag]] list: {', '.join(unknown)}")
    return e


def _conv_op(v: Any, ctx: _Ctx) -> str:
    if v not in LIMIT_OPS:
        raise _Bad(f"one of {', '.join(repr(o) for o in LIMIT_OPS)}, got {v!r}")
    return str(v)


def _conv_k(v: Any, ctx: _Ctx) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise _Bad(f"an integer >= 1, got {v!r}")
    return v


def _conv_min_r2(v: Any, ctx: _Ctx) -> float:
    f = _number(v)
    if not 0.0 <= f <= 1.0:
        raise _Bad(f"a number in [0, 1], got {v!r}")
    return f


def _conv_severity(v: Any, ctx: _Ctx) -> Severity:
    if v not in Severity.__members__.values():
        raise _Bad(f"one of {', '.join(s.value for s in Severity)}, got {v!r}")
    return Severity(v)


def _conv_id(v: Any, ctx: _Ctx) -> str:
    s = _text(v)
    if not RULE_ID_RE.fullmatch(s):
        raise _Bad(f"a rule id matching [A-Za-z0-9_.-]{{1,128}}, got {s!r}")
    return s


def _conv_message(v: Any, ctx: _Ctx) -> str:
    s = _text(v)
    if not s.strip():
        raise _Bad("a non-empty message")
    return s


def _conv_bool(v: Any, ctx: _Ctx) -> bool:
    if not isinstance(v, bool):
        raise _Bad(f"true or false, got {v!r}")
    return v


Conv = Callable[[Any, _Ctx], Any]

#: rule-file key -> (RuleSpec field, converter)
_KEYS: dict[str, tuple[str, Conv]] = {
    "id": ("id", _conv_id),
    "severity": ("severity", _conv_severity),
    "message": ("message", _conv_message),
    "enabled": ("enabled", _conv_bool),
    "when": ("when", _conv_expr),
    "on_delay": ("on_delay_ms", lambda v, c: _duration_ms(v, positive=False)),
    "off_delay": ("off_delay_ms", lambda v, c: _duration_ms(v, positive=False)),
    "tag": ("tag", _conv_tag),
    "tags": ("tags", _conv_tags),
    "op": ("op", _conv_op),
    "limit": ("limit", lambda v, c: _number(v)),
    "deadband": ("deadband", lambda v, c: _nonneg_number(v)),
    "window": ("window_ms", lambda v, c: _duration_ms(v, positive=True)),
    "timeout": ("timeout_ms", lambda v, c: _duration_ms(v, positive=True)),
    "within": ("within_ms", lambda v, c: _duration_ms(v, positive=True)),
    "horizon": ("horizon_ms", lambda v, c: _duration_ms(v, positive=True)),
    "epsilon": ("epsilon", lambda v, c: _nonneg_number(v)),
    "range": ("range", lambda v, c: _range(v)),
    "k": ("k", _conv_k),
    "expr": ("expr", _conv_expr),
    "trigger": ("trigger", _conv_expr),
    "expect": ("expect", _conv_expr),
    "min_r2": ("min_r2", _conv_min_r2),
}


def allowed_keys(kind: RuleKind) -> tuple[str, ...]:
    """Every key a rule of this kind may have (common keys first)."""
    req, opt = KIND_KEYS[kind]
    return _COMMON_REQUIRED + _COMMON_OPTIONAL + req + opt


# ---------------------------------------------------------------------------------------------
# Whole-rule checks (after every key converted), shared by the loader and the override path.


def _check_rule(r: RuleSpec, tags: Mapping[str, TagSpec]) -> list[tuple[str, str]]:
    """Cross-key problems of a built rule as (key, expected) pairs."""
    out: list[tuple[str, str]] = []
    if r.kind is RuleKind.VOTE and r.tags and r.k > len(r.tags):
        out.append(("k", f"at most the size of the vote group ({len(r.tags)} tags), got {r.k}"))
    if r.kind is RuleKind.STALE and r.when is not None and r.tag != ANY_TAG:
        # the gate of a site-wide stale rule is read when the whole site went silent; a per-tag gap has
        # no such instant (the gate's tags keep moving), so the engine honours `when` only with tag "*"
        out.append(("when", 'a gate only on a site-wide stale rule (tag = "*")'))
    return out


# ---------------------------------------------------------------------------------------------
# The file loader


class _Errors:
    """Collects ConfigErrors of one file."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.items: list[ConfigError] = []

    def add(self, key: str, expected: str) -> None:
        self.items.append(ConfigError(self.file, key, expected))


def _load_tags(raw: Any, errs: _Errors) -> dict[str, TagSpec]:
    tags: dict[str, TagSpec] = {}
    if raw is None:
        return tags
    if not isinstance(raw, list):
        errs.add("tag", "an array of tables [[tag]]")
        return tags
    for i, t in enumerate(raw):
        if not isinstance(t, dict):
            errs.add(f"tag[{i + 1}]", "a table [[tag]] with name, unit, description, range")
            continue
        name = t.get("name")
        label = f"tag[{name}]" if isinstance(name, str) and name else f"tag[{i + 1}]"
        ok = True
        for key in t:
            if key not in _TAG_KEYS:
                errs.add(f"{label}.{key}", f"unknown key (known keys here: {', '.join(_TAG_KEYS)})")
                ok = False
        if "name" not in t:
            errs.add(f"{label}.name", "a tag name (required)")
            continue
        if not isinstance(name, str) or not TAG_NAME_RE.fullmatch(name):
            errs.add(f"{label}.name", f"a tag name matching [A-Za-z0-9_.:-]{{1,128}}, got {name!r}")
            continue
        if name in tags:
            errs.add(f"{label}.name", "a unique tag name (this one is declared twice)")
            continue
        values: dict[str, Any] = {}
        for key, conv in (("unit", _text), ("description", _text), ("range", _range)):
            if key in t:
                try:
                    values[key] = conv(t[key])
                except _Bad as b:
                    errs.add(f"{label}.{key}", b.expected)
                    ok = False
        # A tag with a bad key is still declared, so that rules using it don't report twice.
        tags[name] = TagSpec(name=name, **values) if ok else TagSpec(name=name)
    return tags


def _convert_keys(
    raw: Mapping[str, Any], kind: RuleKind, tags: Mapping[str, TagSpec], where: str, errs: _Errors
) -> dict[str, Any]:
    """Convert every known key of `raw` into RuleSpec fields; report each bad one at `where.key`."""
    ctx = _Ctx(tags=tags, kind=kind)
    fields: dict[str, Any] = {}
    for key, v in raw.items():
        if key == "kind" or key not in _KEYS:
            continue
        name, conv = _KEYS[key]
        try:
            fields[name] = conv(v, ctx)
        except _Bad as b:
            errs.add(f"{where}.{key}", b.expected)
    return fields


def _default_range(tag: str | None, tags: Mapping[str, TagSpec]) -> tuple[float, float] | None:
    spec = tags.get(tag or "")
    return spec.range if spec is not None else None


def _load_rule(
    raw: Any, index: int, plant: str, source: str, tags: Mapping[str, TagSpec], errs: _Errors
) -> RuleSpec | None:
    if not isinstance(raw, dict):
        errs.add(f"rule[{index + 1}]", "a table [[rule]]")
        return None
    rid = raw.get("id")
    where = f"rule[{rid}]" if isinstance(rid, str) and RULE_ID_RE.fullmatch(rid) else f"rule[{index + 1}]"
    before = len(errs.items)
    kind_raw = raw.get("kind")
    if kind_raw is None:
        errs.add(f"{where}.kind", f"a rule kind (required): one of {', '.join(k.value for k in RuleKind)}")
        return None
    if kind_raw not in RuleKind.__members__.values():
        errs.add(f"{where}.kind", f"one of {', '.join(k.value for k in RuleKind)}, got {kind_raw!r}")
        return None
    kind = RuleKind(kind_raw)
    allowed = allowed_keys(kind)
    for key in raw:
        if key not in allowed:
            errs.add(f"{where}.{key}", f"unknown key for a {kind.value} rule (keys: {', '.join(allowed)})")
    req, _ = KIND_KEYS[kind]
    for key in _COMMON_REQUIRED + req:
        if key not in raw:
            errs.add(f"{where}.{key}", f"a value (required in {kind.value} rules)")
    fields = _convert_keys({k: v for k, v in raw.items() if k in allowed}, kind, tags, where, errs)
    if len(errs.items) > before:
        return None
    if kind is RuleKind.QUALITY and "range" not in fields:
        fields["range"] = _default_range(fields.get("tag"), tags)
    if kind is RuleKind.TREND and "min_r2" not in fields:
        fields["min_r2"] = DEFAULT_MIN_R2
    rule = RuleSpec(kind=kind, plant=plant, source=source, **fields)
    for key, expected in _check_rule(rule, tags):
        errs.add(f"{where}.{key}", expected)
    return None if len(errs.items) > before else rule


def _read_toml(p: Path, errs: _Errors) -> dict[str, Any] | None:
    try:
        return tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        errs.add("(file)", "an existing rule file")
    except IsADirectoryError:
        errs.add("(file)", "a rule file, got a directory")
    except UnicodeDecodeError as e:
        errs.add("(syntax)", f"UTF-8 text ({e})")
    except tomllib.TOMLDecodeError as e:
        errs.add("(syntax)", f"valid TOML ({e})")  # tomllib's message carries the line and column
    return None


def _load_pack(path: str | os.PathLike[str]) -> tuple[RulePack | None, list[ConfigError]]:
    p = Path(path)
    errs = _Errors(str(p))
    raw = _read_toml(p, errs)
    if raw is None:
        return None, errs.items
    return _pack_from_doc(raw, p)


def _pack_from_doc(raw: Mapping[str, Any], p: Path) -> tuple[RulePack | None, list[ConfigError]]:
    """Validate a parsed rule file `raw` read from `p` (the name only matters for messages and `plant`)."""
    file = str(p)
    errs = _Errors(file)
    for key in raw:
        if key not in _TOP_KEYS:
            errs.add(key, f"unknown top-level key (a rule file holds {', '.join(_TOP_KEYS)})")
    plant = raw.get("plant")
    if plant is None:
        errs.add("plant", f"the plant type this file is for (required): one of {', '.join(PLANTS)}")
        plant = ""
    elif plant not in PLANTS:
        errs.add("plant", f"one of {', '.join(PLANTS)}, got {plant!r}")
        plant = ""
    elif p.stem in PLANTS and p.stem != plant:
        errs.add("plant", f"{p.stem!r} in a file named {p.name} (one file per plant, named after it), "
                 f"got {plant!r}")
    tags = _load_tags(raw.get("tag"), errs)
    rules_raw = raw.get("rule", [])
    rules: list[RuleSpec] = []
    if not isinstance(rules_raw, list):
        errs.add("rule", "an array of tables [[rule]]")
        rules_raw = []
    first_index: dict[str, int] = {}
    for i, r in enumerate(rules_raw):
        rid = r.get("id") if isinstance(r, dict) else None
        if isinstance(rid, str):
            if rid in first_index:
                first = first_index[rid] + 1
                errs.add(f"rule[{rid}].id", f"a unique rule id (also rule #{first} in this file)")
                continue
            first_index[rid] = i
        rule = _load_rule(r, i, str(plant), file, tags, errs)
        if rule is not None:
            rules.append(rule)
    if errs.items:
        return None, errs.items
    return RulePack(plant=str(plant), source=file, tags=tuple(tags.values()), rules=tuple(rules)), []


def load_pack(path: str | os.PathLike[str]) -> RulePack:
    """Load and validate one rule file; raises ConfigErrors listing every problem found in it."""
    pack, errors = _load_pack(path)
    if errors or pack is None:
        raise ConfigErrors(errors)
    return pack


def _load_dir(rules_dir: str | os.PathLike[str]) -> tuple[dict[str, RulePack], list[ConfigError]]:
    d = Path(rules_dir)
    if not d.is_dir():
        return {}, [ConfigError(str(d), "(dir)", "an existing directory of rule files (*.toml)")]
    files = sorted(d.glob("*.toml"))
    if not files:
        return {}, [ConfigError(str(d), "(dir)", "at least one rule file (*.toml), found none")]
    packs: dict[str, RulePack] = {}
    errors: list[ConfigError] = []
    for f in files:
        pack, errs = _load_pack(f)
        errors.extend(errs)
        if pack is None:
            continue
        if pack.plant in packs:
            other = packs[pack.plant].source
            errors.append(ConfigError(str(f), "plant", f"one file per plant: {pack.plant!r} is also {other}"))
            continue
        packs[pack.plant] = pack
    return packs, errors


def load_packs(rules_dir: str | os.PathLike[str]) -> dict[str, RulePack]:
    """Load every `*.toml` in a directory: plant -> RulePack. Raises ConfigErrors listing every problem."""
    packs, errors = _load_dir(rules_dir)
    if errors:
        raise ConfigErrors(errors)
    return packs


def check_path(path: str | os.PathLike[str]) -> list[ConfigError]:
    """Every problem of a rule file or a directory of rule files; [] when all good.

    Backs `earlywarn rules check [PATH]`: unlike load_pack / load_packs it never raises.
    """
    p = Path(path)
    if p.is_dir():
        return _load_dir(p)[1]
    return _load_pack(p)[1]


# ---------------------------------------------------------------------------------------------
# Site overrides


def apply_overrides(
    pack: RulePack, overrides: Mapping[str, Mapping[str, Any]], file: str, where: str
) -> tuple[tuple[RuleSpec, ...], list[ConfigError]]:
    """`pack.rules` with `{rule_id: {key: value}}` applied and re-validated; problems reported at `where`."""
    errs = _Errors(file)
    tags = {t.name: t for t in pack.tags}
    by_id = {r.id: r for r in pack.rules}
    changed: dict[str, RuleSpec] = {}
    for rule_id, ov in overrides.items():
        rw = f"{where}.overrides.{rule_id}"
        rule = by_id.get(rule_id)
        if rule is None:
            errs.add(rw, f"the id of a rule in the {pack.plant} rule pack ({pack.source})")
            continue
        if not isinstance(ov, Mapping):
            errs.add(rw, "a table of rule keys")
            continue
        before = len(errs.items)
        allowed = allowed_keys(rule.kind)
        for key in ov:
            if key in _NOT_OVERRIDABLE:
                errs.add(f"{rw}.{key}", f"a rule parameter ({key!r} is the rule's identity, not overridable)")
            elif key not in allowed:
                keys = ", ".join(k for k in allowed if k not in _NOT_OVERRIDABLE)
                errs.add(f"{rw}.{key}", f"a key of a {rule.kind.value} rule ({keys})")
        settable = {k: v for k, v in ov.items() if k in allowed and k not in _NOT_OVERRIDABLE}
        fields = _convert_keys(settable, rule.kind, tags, rw, errs)
        if len(errs.items) > before:
            continue
        if rule.kind is RuleKind.QUALITY and "tag" in fields and "range" not in fields:
            fields["range"] = _default_range(fields["tag"], tags)  # the new tag's instrument range
        new = dataclasses.replace(rule, **fields)
        for key, expected in _check_rule(new, tags):
            errs.add(f"{rw}.{key}", expected)
        if len(errs.items) == before:
            changed[rule_id] = new
    return tuple(changed.get(r.id, r) for r in pack.rules), errs.items


def rules_for_sites(
    packs: Mapping[str, RulePack], sites: Mapping[str, Site], sites_file: str = ""
) -> dict[str, tuple[RuleSpec, ...]]:
    """Per site: its plant's enabled rules with the site's overrides applied and re-validated.

    Raises ConfigError (the first problem; naming the sites file, site, rule and key) for a site whose
    plant has no rule pack, an override of an unknown rule or key, or a bad value.
    """
    file = sites_file or "<sites>"
    out: dict[str, tuple[RuleSpec, ...]] = {}
    # sites whose rules come out equal (a pack without overrides) get one tuple object: the rule engine
    # builds one template per distinct list object, not one per site (240 sites of 4 plants: 4 templates)
    shared: dict[tuple[RuleSpec, ...], tuple[RuleSpec, ...]] = {}
    for site_id, site in sites.items():
        where = f"site[{site_id}]"
        pack = packs.get(site.plant)
        if pack is None:
            have = ", ".join(sorted(packs)) or "none"
            expected = f"a plant with a rule file (loaded: {have}), got {site.plant!r}"
            raise ConfigError(file, f"{where}.plant", expected)
        rules, errors = apply_overrides(pack, site.overrides, file, where)
        if errors:
            raise errors[0]
        mine = tuple(r for r in rules if r.enabled)
        out[site_id] = shared.setdefault(mine, mine)
    return out


__all__ = [
    "ANY_TAG",
    "DEFAULT_MIN_R2",
    "KIND_KEYS",
    "allowed_keys",
    "apply_overrides",
    "check_path",
    "load_pack",
    "load_packs",
    "rules_for_sites",
]
