"""Fuzz target: the HTTP API. Any method, path, query, token and body on a real engine (real Store, real
alarm manager; actions committed synchronously) gives a 2xx/4xx JSON answer, never a 500 or a hang."""

from __future__ import annotations

import atexit
import hashlib
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
from apikit import SyncRunner
from fuzzkit import EXAMPLES, FUZZ, corpus, count, mutate, mutations, time_limit
from hypothesis import given
from hypothesis import strategies as st
from starlette.testclient import TestClient

from earlywarn.model import RawMessage

TOKENS = {"admin-t": ("admin", ""), "plant-t": ("plant", 'sites = ["S1"]'), "analyst-t": ("analyst", ""),
          "sup-t": ("supervisor", 'districts = ["d2"]')}


def _build() -> tuple[Any, Any, list[str]]:
    from earlywarn.api import build_app
    from earlywarn.cli import build_engine
    from earlywarn.config import load_config
    from earlywarn.notify import LinkSigner

    d = Path(tempfile.mkdtemp(prefix="ew-fuzz-api-"))
    atexit.register(shutil.rmtree, d, ignore_errors=True)
    (d / "sites.toml").write_text('[[site]]\nid = "S1"\nplant = "aluminum"\ndistrict = "d1"\n'
                                  '[[site]]\nid = "S2"\nplant = "aluminum"\ndistrict = "d2"\n')
    (d / "rules").mkdir()
    (d / "rules" / "aluminum.toml").write_text(
        'plant = "aluminum"\n[[tag]]\nname = "a"\n[[rule]]\nid = "a_h"\nkind = "threshold"\ntag = "a"\n'
        'op = ">"\nlimit = 1.0\nseverity = "red"\nmessage = "a high"\n')
    tokens = "".join(f'[[http.tokens]]\nname = "{n}"\nrole = "{r}"\nsha256 = "{hashlib.sha256(n.encode()).hexdigest()}"'
                     f'\n{x}\n' for n, (r, x) in TOKENS.items())
    (d / "ew.toml").write_text('[store]\npath = "ew.duckdb"\n[rules]\nsites = "sites.toml"\ndir = "rules"\n'
                               f'[metrics]\nlisten = ""\n[http]\nlisten = "127.0.0.1:1"\n{tokens}')
    cfg = load_config(d / "ew.toml")
    engine = build_engine(cfg)
    now = int(time.time() * 1000)
    for site in ("S1", "S2"):  # one alarm per site, so actions reach the alarm manager
        msg = RawMessage(f"ew/{site}/telemetry", json.dumps({"tag": "a", "ts": now, "value": 5.0}).encode(), 0, now)
        engine.process_messages([msg])
    signer = LinkSigner(b"k" * 40, 3_600_000)
    ids = [a.alarm_id for a in engine.store.list_alarms()]
    link = signer.make(ids[0] if ids else "x", "li@example", "n1", engine.now_ms())

    def verify(token: str, now_ms: int) -> tuple[str, str, str]:
        lk = signer.verify(token, now_ms)
        return lk.alarm_id, lk.recipient, lk.notice_id

    return cfg, (engine, build_app, verify), [*ids, link]


CFG, (ENGINE, BUILD_APP, VERIFY), IDS = _build()
ALARM_IDS, LINK = IDS[:-1], IDS[-1]
RUNNER = SyncRunner(ENGINE)


_CLIENT: list[Any] = [None, 0]


def _client() -> TestClient:
    # A new app every 15 requests: its failed-login limiter (20 per minute per client) would otherwise
    # answer 429 to everything. The client is kept open between requests (one event-loop portal, not one
    # per request: 6 ms -> 1 ms a request).
    c, n = _CLIENT
    if c is None or n >= 15:
        if c is not None:
            c.__exit__(None, None, None)
        c = TestClient(BUILD_APP(CFG, RUNNER, link_verify=VERIFY), raise_server_exceptions=False).__enter__()
        n = 0
    _CLIENT[:] = [c, n + 1]
    return c


def check(method: str, path: str, headers: dict[str, str], body: bytes) -> None:
    with time_limit():
        r = _client().request(method, path, headers=headers, content=body)
    assert r.status_code < 500, (r.status_code, method, path, body[:200], r.text[:500])
    ctype = r.headers.get("content-type", "")
    if path.startswith("/ack/") and method == "GET" and "text/html" in ctype:
        pass  # the acknowledge page (or its refusal) is HTML for people; an unmatched /ack/ route is JSON below
    elif "format=csv" in path and r.status_code == 200:
        assert "text/csv" in ctype
    else:  # everything else, errors and unknown routes included, answers JSON
        assert "application/json" in ctype, (method, path, r.status_code, ctype, r.text[:200])
        json.loads(r.content)


ids = st.one_of(st.sampled_from(ALARM_IDS or ["x"]), st.text(max_size=30), st.just("../../etc/passwd"))
segments = st.text(alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="/?#"), max_size=20)
from urllib.parse import quote


def _q(s: str) -> str:
    return quote(s, safe="")


paths = st.one_of(
    st.builds(lambda i: f"/api/alarms/{_q(i)}", ids),
    st.builds(lambda i, a: f"/api/alarms/{_q(i)}/{a}", ids,
              st.one_of(st.sampled_from(["ack", "close", "comment", "shelve", "unshelve"]), segments.map(_q))),
    st.builds(lambda q: f"/api/alarms?{q}", st.lists(st.tuples(
        st.sampled_from(["site", "state", "severity", "open", "limit", "x"]),
        st.one_of(st.sampled_from(["S1", "firing", "red", "true", "10", "0", "-1", "²", "1e3", "99999999999999999999"]),
                  st.text(max_size=10))), max_size=4).map(lambda kv: "&".join(f"{_q(k)}={_q(v)}" for k, v in kv))),
    st.builds(lambda n, q: f"/api/reports/{_q(n)}?{q}",
              st.one_of(st.sampled_from(["closure", "non-responding", "bad-actors", "load", "online", "risk"]), segments),
              st.lists(st.tuples(st.sampled_from(["since", "until", "as_of", "by", "format"]),
                                 st.one_of(st.sampled_from(["now", "2026-11-28T00:00:00Z", "1970-01-01T00:00:00Z",
                                                            "9999-12-31T23:59:59Z", "site", "plant,district", "csv",
                                                            "json", "yesterday", "0000-01-01T00:00:00Z"]),
                                           st.text(max_size=12))),
                       max_size=4).map(lambda kv: "&".join(f"{_q(k)}={_q(v)}" for k, v in kv))),
    st.builds(lambda t: f"/ack/{_q(t)}", st.one_of(st.just(LINK), st.builds(lambda s, o: mutate(LINK.encode(), o).decode(
        "utf-8", "replace"), st.just(0), mutations), st.text(max_size=40))),
    st.just("/api/maintenance"), st.just("/health"), segments.map(lambda s: "/" + _q(s)),
)
auth = st.one_of(st.sampled_from([f"Bearer {t}" for t in TOKENS]), st.sampled_from(["", "Bearer", "Bearer ", "Basic x",
                                                                                    "bearer admin-t"]),
                 st.text(max_size=30).map(lambda s: "Bearer " + s.encode("ascii", "ignore").decode()))
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70), st.floats(),
              st.text(max_size=30), st.sampled_from(["30m", "2h", "0s", "-1h", "1e999s", "other", "false_alarm",
                                                     "real_event", "S1", "S2", "nope", "a"])),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)),
    max_leaves=6,
)
bodies = st.one_of(
    st.dictionaries(st.sampled_from(["note", "disposition", "reason", "duration", "site", "tag", "x"]), json_values,
                    max_size=5).map(lambda d: json.dumps(d, allow_nan=True).encode()),
    json_values.map(lambda v: json.dumps(v, allow_nan=True).encode()),
    st.binary(max_size=100), st.just(b""),
)


@FUZZ.__class__(FUZZ, max_examples=max(50, EXAMPLES // 20))
@given(st.sampled_from(["GET", "POST", "PUT", "DELETE"]), paths, auth, bodies)
def test_any_request_gets_a_json_answer_never_a_500(method: str, path: str, authz: str, body: bytes) -> None:
    check(method, path, {"authorization": authz} if authz else {}, body)
    count("api")


BODY_SEEDS = [b'{"note": "checked on site", "disposition": "false_alarm"}', b'{"reason": "sensor swap", "duration": "2h"}',
              b'{"site": "S1", "tag": "a", "reason": "calibration", "duration": "30m"}']


@FUZZ
@given(st.sampled_from(["ack", "close", "comment", "shelve", "unshelve", "maintenance"]), st.sampled_from(BODY_SEEDS),
       mutations, st.sampled_from(list(TOKENS)), st.integers(0, 7))
def test_mutated_action_bodies_never_500(action: str, seed: bytes, ops: list, token: str, which: int) -> None:
    path = "/api/maintenance" if action == "maintenance" else f"/api/alarms/{ALARM_IDS[which % len(ALARM_IDS)]}/{action}"
    check("POST", path, {"authorization": f"Bearer {token}"}, mutate(seed, ops))
    count("api")


@pytest.mark.parametrize("path", corpus("api"), ids=lambda p: p.name)
def test_api_corpus_regressions(path: Path) -> None:
    # each file: "METHOD PATH TOKEN" on the first line, the body after it; ALARM stands for an alarm id
    head, _, body = path.read_bytes().partition(b"\n")
    method, target, token = head.decode().split(" ", 2)
    target = target.replace("ALARM", ALARM_IDS[0])
    check(method, target, {"authorization": f"Bearer {token}"} if token != "-" else {}, body)
