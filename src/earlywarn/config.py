"""Config and sites files: TOML in, frozen dataclasses out, strictly validated.

Every problem names the file, the dotted key and what was expected (ConfigError), so a bad file fails
at start, before anything connects. Unknown keys are errors: a typo must not silently fall back to a
default in a safety system. Secrets never live in these files: they name environment variables
(`*_env` keys) and the value is read from the environment at the moment it is needed.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from earlywarn.errors import ConfigError
from earlywarn.model import PLANTS, Contact, Severity, Site, Tier

# ---------------------------------------------------------------------------------------------
# Value converters. Each takes (value, where) and returns the converted value or raises ConfigError.

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, None: 1000}


def parse_duration_ms(value: Any) -> int:
    """A duration as integer milliseconds: a number of seconds, or a string like "500ms", "15s", "5m", "8h", "1d".

    >>> parse_duration_ms("500ms"), parse_duration_ms(2), parse_duration_ms("1.5s"), parse_duration_ms("8h")
    (500, 2000, 1500, 28800000)
    """
    if isinstance(value, bool):
        msg = "a duration (seconds, or a string like '500ms', '15s', '5m', '8h')"
        raise ValueError(msg)  # noqa: TRY004 - callers report every ValueError as a bad config value
    if isinstance(value, (int, float)):
        # a century is far beyond any sensible duration and keeps the arithmetic finite
        if value < 0 or value > 100 * 365 * 86_400 or not math.isfinite(value):
            msg = "a non-negative number of seconds (at most a century)"
            raise ValueError(msg)
        return round(value * 1000)
    if isinstance(value, str):
        m = _DURATION_RE.match(value)
        if m:
            ms = float(m.group(1)) * _UNIT_MS[m.group(2)]
            if ms <= 100 * 365 * 86_400_000:
                return round(ms)
    msg = "a duration (seconds, or a string like '500ms', '15s', '5m', '8h')"
    raise ValueError(msg)


class _Loc:
    """Where a value came from, for error messages."""

    def __init__(self, file: str, key: str) -> None:
        self.file = file
        self.key = key

    def sub(self, key: str) -> _Loc:
        return _Loc(self.file, f"{self.key}.{key}" if self.key else key)

    def fail(self, expected: str) -> ConfigError:
        return ConfigError(self.file, self.key or "(top level)", expected)


Conv = Callable[[Any, _Loc], Any]


def _str(v: Any, loc: _Loc) -> str:
    if not isinstance(v, str):
        raise loc.fail(f"a string, got {type(v).__name__} {v!r}")
    return v


def _bool(v: Any, loc: _Loc) -> bool:
    if not isinstance(v, bool):
        raise loc.fail(f"true or false, got {v!r}")
    return v


def _pos_int(v: Any, loc: _Loc) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
        raise loc.fail(f"a positive integer, got {v!r}")
    return v


def _duration(v: Any, loc: _Loc) -> int:
    try:
        return parse_duration_ms(v)
    except ValueError as e:
        raise loc.fail(f"{e}, got {v!r}") from None


def _str_list(v: Any, loc: _Loc) -> tuple[str, ...]:
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise loc.fail(f"a list of strings, got {v!r}")
    return tuple(v)


def _one_of(*choices: str) -> Conv:
    def conv(v: Any, loc: _Loc) -> str:
        if v not in choices:
            raise loc.fail(f"one of {', '.join(repr(c) for c in choices)}, got {v!r}")
        return str(v)

    return conv


def _listen(v: Any, loc: _Loc) -> str:
    """"host:port", or "" for off."""
    s = _str(v, loc)
    if s and not re.match(r"^[\w.\-\[\]:]*:\d{1,5}$", s):
        raise loc.fail(f"'host:port' (or '' for off), got {s!r}")
    return s


def _memory_size(v: Any, loc: _Loc) -> str:
    s = _str(v, loc)
    if not re.fullmatch(r"\d+(\.\d+)?\s*(KB|MB|GB|TB|KiB|MiB|GiB|TiB)", s):
        raise loc.fail(f"a memory size such as '512MB' or '2GB', got {s!r}")
    return s


def _env_name(v: Any, loc: _Loc) -> str:
    s = _str(v, loc)
    if s and not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", s):
        raise loc.fail(f"the name of an environment variable, got {s!r}")
    return s


def _opt(key: str, conv: Conv, default: Any) -> Any:
    """A dataclass field read from TOML key `key` with converter `conv`."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"key": key, "conv": conv})
    return field(default=default, metadata={"key": key, "conv": conv})


def _build(cls: type, raw: Any, loc: _Loc, **extra: Any) -> Any:
    """Fill dataclass `cls` from table `raw`; unknown keys and bad values raise ConfigError."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise loc.fail(f"a table, got {type(raw).__name__}")
    fields = {f.metadata["key"]: f for f in dataclasses.fields(cls) if "key" in f.metadata}
    for key in raw:
        if key not in fields:
            known = ", ".join(sorted(fields))
            raise loc.sub(key).fail(f"unknown key (known keys here: {known})")
    kwargs = dict(extra)
    for key, f in fields.items():
        if key in raw:
            kwargs[f.name] = f.metadata["conv"](raw[key], loc.sub(key))
    return cls(**kwargs)


# ---------------------------------------------------------------------------------------------
# Sections


@dataclass(frozen=True, slots=True)
class BrokerConfig:
    """[broker]: where telemetry comes from. Credentials come from the environment variables named here."""

    url: str = _opt("url", _str, "mqtt://127.0.0.1:1883")
    protocol: str = _opt("protocol", _one_of("5", "3.1.1"), "5")
    client_id: str = _opt("client_id", _str, "earlywarn")
    topics: tuple[str, ...] = _opt("topics", _str_list, ("ew/+/telemetry/#",))
    keepalive_ms: int = _opt("keepalive", _duration, 30_000)
    session_expiry_ms: int = _opt("session_expiry", _duration, 7 * 86_400_000)
    receive_maximum: int = _opt("receive_maximum", _pos_int, 65_535)
    reconnect_min_ms: int = _opt("reconnect_min", _duration, 500)
    reconnect_max_ms: int = _opt("reconnect_max", _duration, 30_000)
    username_env: str = _opt("username_env", _env_name, "EARLYWARN_BROKER_USERNAME")
    password_env: str = _opt("password_env", _env_name, "EARLYWARN_BROKER_PASSWORD")
    ca_file: str = _opt("ca_file", _str, "")
    cert_file: str = _opt("cert_file", _str, "")
    key_file: str = _opt("key_file", _str, "")
    notices: bool = _opt("notices", _bool, True)

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or "127.0.0.1"

    @property
    def port(self) -> int:
        u = urlsplit(self.url)
        return u.port or (8883 if u.scheme == "mqtts" else 1883)

    @property
    def tls(self) -> bool:
        return urlsplit(self.url).scheme == "mqtts"

    def credentials(self) -> tuple[str | None, str | None]:
        """(username, password) read from the environment now; never logged, never stored."""
        user = os.environ.get(self.username_env) if self.username_env else None
        password = os.environ.get(self.password_env) if self.password_env else None
        return (user or None, password or None)


@dataclass(frozen=True, slots=True)
class StoreConfig:
    """[store]: the DuckDB file."""

    path: str = _opt("path", _str, "earlywarn.duckdb")
    checkpoint_interval_ms: int = _opt("checkpoint_interval", _duration, 10_000)
    #: DuckDB's buffer pool keeps written table blocks up to this limit (its default is 80 % of RAM): it is
    #: what bounds the engine's memory over months of history
    memory_limit: str = _opt("memory_limit", _memory_size, "1GB")


@dataclass(frozen=True, slots=True)
class RulesConfig:
    """[rules]: rule packs directory and the sites file."""

    dir: str = _opt("dir", _str, "")
    sites: str = _opt("sites", _str, "")


@dataclass(frozen=True, slots=True)
class TokenConfig:
    """[[http.tokens]]: an API bearer token, stored only as its SHA-256 hex digest."""

    name: str = _opt("name", _str, "")
    role: str = _opt("role", _one_of("plant", "supervisor", "analyst", "admin"), "analyst")
    sha256: str = _opt("sha256", _str, "")
    sites: tuple[str, ...] = _opt("sites", _str_list, ())
    districts: tuple[str, ...] = _opt("districts", _str_list, ())


def _tokens(v: Any, loc: _Loc) -> tuple[TokenConfig, ...]:
    if not isinstance(v, list):
        raise loc.fail("an array of tables [[http.tokens]]")
    out = []
    for i, t in enumerate(v):
        tl = _Loc(loc.file, f"{loc.key}[{i}]")
        tok = _build(TokenConfig, t, tl)
        if not tok.name:
            raise tl.sub("name").fail("a non-empty token name")
        if not re.fullmatch(r"[0-9a-f]{64}", tok.sha256):
            raise tl.sub("sha256").fail("the SHA-256 hex digest of the token (64 lower-case hex digits)")
        if tok.role == "plant" and not tok.sites:
            raise tl.sub("sites").fail("a plant token must list the sites it may see")
        out.append(tok)
    return tuple(out)


@dataclass(frozen=True, slots=True)
class HttpConfig:
    """[http]: the alarm / report API. `listen = ""` turns it off."""

    listen: str = _opt("listen", _listen, "127.0.0.1:8080")
    public_url: str = _opt("public_url", _str, "")
    tokens: tuple[TokenConfig, ...] = _opt("tokens", _tokens, ())
    link_secret_env: str = _opt("link_secret_env", _env_name, "EARLYWARN_LINK_SECRET")
    link_ttl_ms: int = _opt("link_ttl", _duration, 24 * 3_600_000)


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    """[metrics]: Prometheus exposition. `listen = ""` turns it off."""

    listen: str = _opt("listen", _listen, "127.0.0.1:9108")


@dataclass(frozen=True, slots=True)
class IngestConfig:
    """[ingest]: validation limits and micro-batching."""

    max_future_ms: int = _opt("max_future", _duration, 5 * 60_000)
    max_payload_bytes: int = _opt("max_payload", _pos_int, 1 << 20)
    accept_unknown_sites: bool = _opt("accept_unknown_sites", _bool, False)
    batch_max_readings: int = _opt("batch_max_readings", _pos_int, 50_000)
    # a reading waits at most this long for its batch to close: the floor under publish -> alarm latency
    batch_max_age_ms: int = _opt("batch_max_age", _duration, 100)
    idle_flush_ms: int = _opt("idle_flush", _duration, 5)
    queue_max_messages: int = _opt("queue_max_messages", _pos_int, 200_000)
    #: "process": the MQTT client runs in its own process (paho's per-message cost and the engine then
    #: do not share one GIL); "thread": both in one process (simpler to debug, slower under load)
    mode: str = _opt("mode", _one_of("process", "thread"), "process")


@dataclass(frozen=True, slots=True)
class Deadline:
    ack_ms: int = _opt("ack", _duration, 0)
    close_ms: int = _opt("close", _duration, 0)


DEFAULT_DEADLINES: dict[Severity, Deadline] = {
    Severity.RED: Deadline(ack_ms=5 * 60_000, close_ms=30 * 60_000),
    Severity.ORANGE: Deadline(ack_ms=10 * 60_000, close_ms=60 * 60_000),
    Severity.YELLOW: Deadline(ack_ms=30 * 60_000, close_ms=4 * 3_600_000),
    Severity.BLUE: Deadline(ack_ms=60 * 60_000, close_ms=24 * 3_600_000),
}


def _deadlines(v: Any, loc: _Loc) -> dict[Severity, Deadline]:
    if not isinstance(v, dict):
        raise loc.fail("a table of severities: [alarms.deadlines.red] ack = '5m', close = '30m'")
    out = dict(DEFAULT_DEADLINES)
    for sev, raw in v.items():
        sl = loc.sub(sev)
        if sev not in Severity.__members__.values():
            raise sl.fail(f"a severity ({', '.join(s.value for s in Severity)})")
        base = DEFAULT_DEADLINES[Severity(sev)]
        d = _build(Deadline, raw, sl)
        out[Severity(sev)] = Deadline(
            ack_ms=d.ack_ms if "ack" in raw else base.ack_ms,
            close_ms=d.close_ms if "close" in raw else base.close_ms,
        )
    return out


@dataclass(frozen=True, slots=True)
class AlarmsConfig:
    """[alarms]: deadlines, shelving, chattering and flood detection."""

    deadlines: dict[Severity, Deadline] = _opt("deadlines", _deadlines, dict(DEFAULT_DEADLINES))
    max_shelve_ms: int = _opt("max_shelve", _duration, 8 * 3_600_000)
    reminder_interval_ms: int = _opt("reminder_interval", _duration, 5 * 60_000)
    chatter_count: int = _opt("chatter_count", _pos_int, 3)
    chatter_window_ms: int = _opt("chatter_window", _duration, 60_000)
    flood_count: int = _opt("flood_count", _pos_int, 10)
    flood_window_ms: int = _opt("flood_window", _duration, 10 * 60_000)
    #: severities whose first notice goes to these tiers at once (others start at the plant tier)
    red_immediate_tiers: tuple[str, ...] = _opt("red_immediate_tiers", _str_list, ("plant",))


@dataclass(frozen=True, slots=True)
class SmtpConfig:
    host: str = _opt("host", _str, "")
    port: int = _opt("port", _pos_int, 25)
    starttls: bool = _opt("starttls", _bool, False)
    sender: str = _opt("sender", _str, "earlywarn@localhost")
    username_env: str = _opt("username_env", _env_name, "EARLYWARN_SMTP_USERNAME")
    password_env: str = _opt("password_env", _env_name, "EARLYWARN_SMTP_PASSWORD")
    timeout_ms: int = _opt("timeout", _duration, 10_000)


@dataclass(frozen=True, slots=True)
class WebhookConfig:
    urls: tuple[str, ...] = _opt("urls", _str_list, ())
    timeout_ms: int = _opt("timeout", _duration, 5_000)
    max_attempts: int = _opt("max_attempts", _pos_int, 5)
    backoff_initial_ms: int = _opt("backoff_initial", _duration, 500)
    backoff_max_ms: int = _opt("backoff_max", _duration, 60_000)


def _group_waits(v: Any, loc: _Loc) -> dict[Severity, int]:
    """[notify.group_wait_by_severity]: severity -> its own grouping window (the others keep group_wait)."""
    if not isinstance(v, dict):
        raise loc.fail("a table of severities: [notify.group_wait_by_severity] red = '1s'")
    out: dict[Severity, int] = {}
    for sev, raw in v.items():
        sl = loc.sub(sev)
        if sev not in Severity.__members__.values():
            raise sl.fail(f"a severity ({', '.join(s.value for s in Severity)})")
        out[Severity(sev)] = _duration(raw, sl)
    return out


@dataclass(frozen=True, slots=True)
class NotifyConfig:
    """[notify]: channels and pacing."""

    group_wait_ms: int = _opt("group_wait", _duration, 10_000)
    #: a grouping window per severity (e.g. red "1s") instead of group_wait; a group holding alarms of several
    #: severities closes at the shortest window among them
    group_wait_by_severity_ms: dict[Severity, int] = _opt("group_wait_by_severity", _group_waits, {})
    mqtt: bool = _opt("mqtt", _bool, True)
    log: bool = _opt("log", _bool, True)
    smtp: SmtpConfig = _opt("smtp", lambda v, loc: _build(SmtpConfig, v, loc), SmtpConfig())
    webhook: WebhookConfig = _opt("webhook", lambda v, loc: _build(WebhookConfig, v, loc), WebhookConfig())


def _section(cls: type) -> Conv:
    return lambda v, loc: _build(cls, v, loc)


@dataclass(frozen=True, slots=True)
class Config:
    """The whole engine configuration. `Config()` is the embedded default (used by `earlywarn demo`)."""

    broker: BrokerConfig = _opt("broker", _section(BrokerConfig), BrokerConfig())
    store: StoreConfig = _opt("store", _section(StoreConfig), StoreConfig())
    rules: RulesConfig = _opt("rules", _section(RulesConfig), RulesConfig())
    http: HttpConfig = _opt("http", _section(HttpConfig), HttpConfig())
    metrics: MetricsConfig = _opt("metrics", _section(MetricsConfig), MetricsConfig())
    ingest: IngestConfig = _opt("ingest", _section(IngestConfig), IngestConfig())
    alarms: AlarmsConfig = _opt("alarms", _section(AlarmsConfig), AlarmsConfig())
    notify: NotifyConfig = _opt("notify", _section(NotifyConfig), NotifyConfig())
    source: str = "<defaults>"


def _check_broker_url(cfg: BrokerConfig, loc: _Loc) -> None:
    try:
        # urlsplit raises on a malformed IPv6 bracket, .port on a port that is not a number in 0..65535:
        # both must be a config error at start, not a crash (or a crash later, in the MQTT client)
        u = urlsplit(cfg.url)
        _ = u.port
    except ValueError as e:
        raise loc.fail(f"'mqtt://host:port' or 'mqtts://host:port' ({e})") from None
    # the password check comes first: the scheme check below quotes the URL
    if u.password:
        raise loc.fail(
            "no password in the URL: credentials come from the environment "
            f"(${cfg.username_env} / ${cfg.password_env})"
        )
    if u.scheme not in ("mqtt", "mqtts") or not u.hostname:
        # quoted with anything before an '@' hidden: a malformed URL can still carry a password
        shown = re.sub(r"[^/@]*@", "***@", cfg.url)
        raise loc.fail(f"'mqtt://host:port' or 'mqtts://host:port', got {shown!r}")


def shipped_rules_dir() -> str:
    """Where the rule packs shipped with earlywarn are (the repo's top-level `rules/`)."""
    repo = Path(__file__).resolve().parents[2] / "rules"
    if repo.is_dir():
        return str(repo)
    import importlib.resources

    return str(importlib.resources.files("earlywarn.packs"))


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read a config file; relative paths inside it are resolved against the file's folder."""
    p = Path(path)
    file = str(p)
    try:
        raw = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(file, "(file)", "an existing config file") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(file, "(syntax)", f"valid TOML ({e})") from None
    cfg: Config = _build(Config, raw, _Loc(file, ""), source=file)
    _check_broker_url(cfg.broker, _Loc(file, "broker.url"))
    base = p.resolve().parent

    def resolve(s: str, key: str) -> str:
        if "\x00" in s:  # the OS refuses such a path (ValueError from resolve, open, DuckDB)
            raise _Loc(file, key).fail("a path without NUL characters")
        return str((base / s).resolve()) if s and not Path(s).is_absolute() else s

    return dataclasses.replace(
        cfg,
        store=dataclasses.replace(cfg.store, path=resolve(cfg.store.path, "store.path")),
        rules=dataclasses.replace(
            cfg.rules, dir=resolve(cfg.rules.dir, "rules.dir"), sites=resolve(cfg.rules.sites, "rules.sites")
        ),
        broker=dataclasses.replace(
            cfg.broker,
            ca_file=resolve(cfg.broker.ca_file, "broker.ca_file"),
            cert_file=resolve(cfg.broker.cert_file, "broker.cert_file"),
            key_file=resolve(cfg.broker.key_file, "broker.key_file"),
        ),
    )


# ---------------------------------------------------------------------------------------------
# Sites file

SITE_ID_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


@dataclass(frozen=True, slots=True)
class _ContactRaw:
    tier: str = _opt("tier", _one_of(*(t.label for t in Tier)), "plant")
    name: str = _opt("name", _str, "")
    email: str = _opt("email", _str, "")
    webhook: str = _opt("webhook", _str, "")


@dataclass(frozen=True, slots=True)
class _SiteRaw:
    id: str = _opt("id", _str, "")
    name: str = _opt("name", _str, "")
    plant: str = _opt("plant", _one_of(*PLANTS), "")
    district: str = _opt("district", _str, "")
    township: str = _opt("township", _str, "")
    contacts: list[Any] = _opt("contacts", lambda v, loc: v, [])
    overrides: dict[str, Any] = _opt("overrides", lambda v, loc: v, {})


def load_sites(path: str | os.PathLike[str]) -> dict[str, Site]:
    """Read a sites file ([[site]] tables). Rule-override *values* are checked later by the rules loader."""
    p = Path(path)
    file = str(p)
    try:
        raw = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(file, "(file)", "an existing sites file") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(file, "(syntax)", f"valid TOML ({e})") from None
    for key in raw:
        if key != "site":
            raise ConfigError(file, key, "unknown key (a sites file holds only [[site]] tables)")
    sites_raw = raw.get("site", [])
    if not isinstance(sites_raw, list):
        raise ConfigError(file, "site", "an array of tables [[site]]")
    sites: dict[str, Site] = {}
    for i, s in enumerate(sites_raw):
        loc = _Loc(file, f"site[{i}]")
        r: _SiteRaw = _build(_SiteRaw, s, loc)
        if not SITE_ID_RE.match(r.id):
            raise loc.sub("id").fail(f"a site id matching [A-Za-z0-9_.-]{{1,64}}, got {r.id!r}")
        loc = _Loc(file, f"site[{r.id}]")
        if not r.plant:
            raise loc.sub("plant").fail(f"one of {', '.join(PLANTS)}")
        if r.id in sites:
            raise loc.sub("id").fail("a unique site id (this one appears twice)")
        if not isinstance(r.contacts, list):
            raise loc.sub("contacts").fail("an array of tables [[site.contacts]]")
        contacts = []
        for j, c in enumerate(r.contacts):
            cr: _ContactRaw = _build(_ContactRaw, c, loc.sub(f"contacts[{j}]"))
            contacts.append(
                Contact(tier=Tier[cr.tier.upper()], name=cr.name, email=cr.email or None, webhook=cr.webhook or None)
            )
        if not isinstance(r.overrides, dict) or not all(isinstance(v, dict) for v in r.overrides.values()):
            raise loc.sub("overrides").fail("tables [site.overrides.RULE_ID] of rule keys")
        sites[r.id] = Site(
            id=r.id,
            name=r.name or r.id,
            plant=r.plant,
            district=r.district,
            township=r.township,
            contacts=tuple(contacts),
            overrides={k: dict(v) for k, v in r.overrides.items()},
        )
    return sites
