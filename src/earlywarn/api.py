"""HTTP API (JSON) of a running engine: alarms, actions, maintenance windows, reports, health.

Auth: bearer tokens from the config, stored there only as SHA-256 digests. Roles:
  plant       its own sites only: read, ack, close, comment
  supervisor  sites of its districts (or all when it lists none): read and every action, maintenance
  analyst     read only, reports
  admin       everything
A token that may not see a site gets 404 for that site's alarms: it must not learn they exist.

Actions are queued to the engine thread and answered after they are committed (Runner.submit), so the
reply means "durably recorded". Reads use their own DuckDB cursor.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import html
import io
import json
import logging
import math
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from earlywarn.config import Config, parse_duration_ms
from earlywarn.errors import ActionError, EarlywarnError, NotFound
from earlywarn.model import Alarm, Disposition

log = logging.getLogger("earlywarn.api")

READ, ACK, CLOSE, COMMENT, SHELVE, MAINTAIN, REPORT = "read", "ack", "close", "comment", "shelve", "maintain", "report"
ROLE_PERMS: dict[str, frozenset[str]] = {
    "plant": frozenset({READ, ACK, CLOSE, COMMENT}),
    "supervisor": frozenset({READ, ACK, CLOSE, COMMENT, SHELVE, MAINTAIN, REPORT}),
    "analyst": frozenset({READ, REPORT}),
    "admin": frozenset({READ, ACK, CLOSE, COMMENT, SHELVE, MAINTAIN, REPORT}),
}


@dataclass(frozen=True)
class Principal:
    name: str
    role: str
    sites: frozenset[str] = frozenset()
    districts: frozenset[str] = frozenset()

    def can(self, perm: str) -> bool:
        return perm in ROLE_PERMS[self.role]

    def sees(self, site: str, district: str) -> bool:
        if self.role == "plant":
            return site in self.sites
        if self.role == "supervisor" and self.districts:
            return district in self.districts or site in self.sites
        return True


class HttpError(Exception):
    def __init__(self, status: int, body: dict[str, Any]) -> None:
        self.status = status
        self.body = body


def _err(status: int, message: str, **extra: Any) -> HttpError:
    return HttpError(status, {"error": message, **extra})


def _iso(ms: int | None) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _num(x: float | None) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else x


def alarm_json(a: Alarm) -> dict[str, Any]:
    return {
        "alarm_id": a.alarm_id,
        "site": a.site,
        "plant": a.plant,
        "district": a.district,
        "tag": a.tag,
        "rule_id": a.rule_id,
        "severity": a.severity.value,
        "state": a.state.value,
        "message": a.message,
        "raised_at": _iso(a.raised_at_ms),
        "acked_at": _iso(a.acked_at_ms),
        "acked_by": a.acked_by,
        "cleared_at": _iso(a.cleared_at_ms),
        "closed_at": _iso(a.closed_at_ms),
        "closed_by": a.closed_by,
        "disposition": a.disposition.value if a.disposition else None,
        "note": a.note,
        "occurrences": a.occurrences,
        "value": _num(a.value),
        "peak_value": _num(a.peak_value),
        "escalation_tier": a.escalation_tier.label,
        "shelved_until": _iso(a.shelved_until_ms),
        "shelved_by": a.shelved_by,
        "shelve_reason": a.shelve_reason,
        "suppressed": a.suppressed,
        "chattering": a.chattering,
        "flood": a.flood,
    }


class _FailureLimiter:
    """Refuses a client after too many failed logins in a window (brute force on tokens)."""

    def __init__(self, max_failures: int = 20, window_s: float = 60.0) -> None:
        self.max = max_failures
        self.window_s = window_s
        self._fails: dict[str, deque[float]] = defaultdict(deque)
        self._lock = threading.Lock()

    def blocked(self, client: str) -> bool:
        now = time.monotonic()
        with self._lock:
            q = self._fails[client]
            while q and now - q[0] > self.window_s:
                q.popleft()
            return len(q) >= self.max

    def fail(self, client: str) -> None:
        with self._lock:
            self._fails[client].append(time.monotonic())


def build_app(cfg: Config, runner: Any, *, link_verify: Callable[[str, int], tuple[str, str, str]] | None = None) -> Starlette:
    """The ASGI app. `runner` offers `submit(fn) -> Future`, `engine` (store, alarms, sites, clock)."""
    engine = runner.engine
    tokens = {t.sha256: t for t in cfg.http.tokens}
    limiter = _FailureLimiter()
    open_mode = not tokens
    if open_mode:
        log.warning("no API tokens configured: the HTTP API is open to anyone who can reach %s", cfg.http.listen)

    def principal(request: Request) -> Principal:
        if open_mode:
            return Principal("anonymous", "admin")
        client = request.client.host if request.client else "?"
        if limiter.blocked(client):
            raise _err(429, "too many failed logins; try again later")
        auth = request.headers.get("authorization", "")
        if not auth.lower().startswith("bearer "):
            limiter.fail(client)
            raise _err(401, "missing bearer token")
        digest = hashlib.sha256(auth[7:].strip().encode()).hexdigest()
        # compare digests in constant time against each configured one
        found = None
        for d, t in tokens.items():
            if hmac.compare_digest(d, digest):
                found = t
        if found is None:
            limiter.fail(client)
            raise _err(401, "unknown token")
        return Principal(found.name, found.role, frozenset(found.sites), frozenset(found.districts))

    def need(p: Principal, perm: str) -> None:
        if not p.can(perm):
            raise _err(403, f"role {p.role} may not {perm}")

    def visible_alarm(p: Principal, alarm_id: str) -> Alarm:
        a = engine.store.get_alarm(alarm_id)
        if a is None or not p.sees(a.site, a.district):
            raise _err(404, f"no alarm {alarm_id}")
        return a

    async def body_of(request: Request) -> dict[str, Any]:
        raw = await request.body()
        if not raw:
            return {}
        try:
            b = json.loads(raw)
        except ValueError:
            raise _err(422, "body is not JSON", field="(body)") from None
        if not isinstance(b, dict):
            raise _err(422, "body must be a JSON object", field="(body)")
        return b

    def text_field(b: dict[str, Any], name: str, *, required: bool = False, max_len: int = 4000) -> str:
        v = b.get(name, "")
        if v is None:
            v = ""
        if not isinstance(v, str):
            raise _err(422, f"{name} must be a string", field=name)
        if required and not v.strip():
            raise _err(422, f"{name} is required", field=name)
        if len(v) > max_len:
            raise _err(422, f"{name} is longer than {max_len} characters", field=name)
        return v

    async def commit(fn: Callable[[Any, int], Any]) -> Any:
        # Awaited, not .result(): a blocked event loop would serve one request per engine commit (~30 ms
        # on a synced WAL), while awaiting lets concurrent actions queue up and share the engine's next
        # commit (Runner drains every queued action into one step).
        return await asyncio.wait_for(asyncio.wrap_future(runner.submit(fn)), timeout=30)

    def handle(fn: Callable[[Request], Any]) -> Callable[[Request], Any]:
        async def endpoint(request: Request) -> Response:
            try:
                out = await fn(request)
            except HttpError as e:
                return JSONResponse(e.body, status_code=e.status)
            except ActionError as e:
                return JSONResponse({"error": str(e), "state": e.state, "why": e.why}, status_code=409)
            except NotFound as e:
                return JSONResponse({"error": str(e)}, status_code=404)
            except EarlywarnError as e:
                return JSONResponse({"error": str(e)}, status_code=400)
            if isinstance(out, Response):
                return out
            return JSONResponse(out)

        return endpoint

    # -- endpoints ---------------------------------------------------------------------------------------

    async def health(request: Request) -> Any:
        ingest = getattr(runner, "ingest", None)
        return {
            "status": "ok" if runner.error is None else "failed",
            "broker_connected": bool(getattr(ingest, "connected", False)),
            "queue_messages": runner.inbox.qsize() if hasattr(runner, "inbox") else 0,
            "open_alarms": len(engine.alarms.open_alarms()),
        }

    async def list_alarms(request: Request) -> Any:
        p = principal(request)
        need(p, READ)
        q = request.query_params
        limit = q.get("limit", "500")
        # str.isdigit() is true for "²" and other non-ASCII digits that int() refuses: ASCII only
        if not (limit.isascii() and limit.isdigit()) or not 0 < int(limit) <= 10_000:
            raise _err(422, "limit must be an integer from 1 to 10000", field="limit")
        rows = await run_in_threadpool(
            engine.store.list_alarms,
            site=q.get("site"), state=q.get("state"), severity=q.get("severity"),
            open_only=q.get("open") in ("1", "true"), limit=int(limit),
        )
        return {"alarms": [alarm_json(a) for a in rows if p.sees(a.site, a.district)]}

    async def show_alarm(request: Request) -> Any:
        p = principal(request)
        need(p, READ)
        a = await run_in_threadpool(visible_alarm, p, request.path_params["alarm_id"])
        events = await run_in_threadpool(engine.store.alarm_events, a.alarm_id)
        out = alarm_json(a)
        out["events"] = [
            {"ts": _iso(e.ts_ms), "kind": e.kind.value, "actor": e.actor, "detail": e.detail} for e in events
        ]
        return out

    async def act(request: Request) -> Any:
        p = principal(request)
        action = request.path_params["action"]
        alarm_id = request.path_params["alarm_id"]
        perm = {"ack": ACK, "close": CLOSE, "comment": COMMENT, "shelve": SHELVE, "unshelve": SHELVE}.get(action)
        if perm is None:
            raise _err(404, f"no action {action}")
        b = await body_of(request)
        await run_in_threadpool(visible_alarm, p, alarm_id)
        need(p, perm)
        actor = p.name
        if action == "ack":
            note = text_field(b, "note")
            ch = await commit(lambda m, now: m.ack(alarm_id, actor, note, now))
        elif action == "close":
            d = b.get("disposition")
            if d not in {x.value for x in Disposition}:
                raise _err(422, f"disposition must be one of {', '.join(x.value for x in Disposition)}",
                           field="disposition")
            note = text_field(b, "note", required=d == "other")
            ch = await commit(lambda m, now: m.close(alarm_id, actor, Disposition(d), note, now))
        elif action == "comment":
            note = text_field(b, "note", required=True)
            ch = await commit(lambda m, now: m.comment(alarm_id, actor, note, now))
        elif action == "shelve":
            reason = text_field(b, "reason", required=True)
            dur = b.get("duration")
            try:
                dur_ms = parse_duration_ms(dur)
            except ValueError:
                raise _err(422, "duration must be a duration such as '30m' or '2h'", field="duration") from None
            if dur_ms <= 0:
                raise _err(422, "duration must be positive", field="duration")
            ch = await commit(lambda m, now: m.shelve(alarm_id, actor, now + dur_ms, reason, now))
        else:
            ch = await commit(lambda m, now: m.unshelve(alarm_id, actor, text_field(b, "note"), now))
        alarms = getattr(ch, "alarms", ())
        final = next((a for a in reversed(list(alarms)) if a.alarm_id == alarm_id), None)
        final = final or await run_in_threadpool(engine.store.get_alarm, alarm_id)
        return alarm_json(final) if final else {"alarm_id": alarm_id}

    async def add_maintenance(request: Request) -> Any:
        p = principal(request)
        need(p, MAINTAIN)
        b = await body_of(request)
        site = text_field(b, "site", required=True, max_len=64)
        if site not in engine.sites:
            raise _err(422, f"unknown site {site}", field="site")
        s = engine.sites[site]
        if not p.sees(s.id, s.district):
            raise _err(404, f"no site {site}")
        tag = text_field(b, "tag", max_len=128) or None
        reason = text_field(b, "reason", required=True)
        try:
            dur_ms = parse_duration_ms(b.get("duration"))
        except ValueError:
            raise _err(422, "duration must be a duration such as '2h'", field="duration") from None
        actor = p.name

        def add(m: Any, now: int) -> Any:
            return m.add_window(site, tag, now, now + dur_ms, reason, actor)

        await commit(add)
        return {"site": site, "tag": tag, "ends_at": _iso(engine.now_ms() + dur_ms), "reason": reason}

    async def report(request: Request) -> Any:
        from earlywarn import reports  # imported lazily: only analysts need it

        p = principal(request)
        need(p, REPORT)
        q = request.query_params
        name = request.path_params["name"]
        by = [x for x in q.get("by", "").split(",") if x]
        fmt = q.get("format", "json")
        if fmt not in ("json", "csv"):
            raise _err(422, "format must be json or csv", field="format")
        def run() -> Any:
            return reports.run_report(engine.store.read_cursor(), name, since=q.get("since"),
                                      until=q.get("until"), as_of=q.get("as_of"), by=by)

        try:
            df = await run_in_threadpool(run)
        except (ValueError, KeyError) as e:
            raise _err(422, str(e), field="query") from None
        if (p.role in ("plant",) or (p.role == "supervisor" and p.districts)) and "site" in df.columns:
            keep = [s for s in df.get_column("site").to_list() if s in engine.sites and p.sees(s, engine.sites[s].district)]
            df = df.filter(df.get_column("site").is_in(keep))
        if fmt == "csv":
            buf = io.StringIO()
            df.write_csv(buf)
            return PlainTextResponse(buf.getvalue(), media_type="text/csv")
        return Response(reports.render(df, "json", None) or "[]", media_type="application/json")

    async def ack_link_page(request: Request) -> Any:
        token = request.path_params["token"]
        try:
            alarm_id, recipient, _notice_id = _verify(token)
        except HttpError as e:
            return HTMLResponse(f"<p>{html.escape(e.body['error'])}</p>", status_code=e.status)
        a = await run_in_threadpool(engine.store.get_alarm, alarm_id)
        what = html.escape(f"{a.site} {a.rule_id} {a.tag} ({a.severity.value}) {a.state.value}" if a else alarm_id)
        return HTMLResponse(
            f"<!doctype html><meta charset=utf-8><title>earlywarn</title><p>确认签收 / Acknowledge: {what}"
            f"<br>as {html.escape(recipient)}</p><form method=post><button>签收 Acknowledge</button></form>"
        )

    def _verify(token: str) -> tuple[str, str, str]:
        if link_verify is None:
            raise _err(404, "acknowledge links are not enabled")
        try:
            return link_verify(token, engine.now_ms())
        except Exception as e:  # noqa: BLE001 - tampered, expired or malformed: refuse, change nothing
            raise _err(403, f"invalid or expired link: {e}") from None

    async def ack_link(request: Request) -> Any:
        alarm_id, recipient, notice_id = _verify(request.path_params["token"])
        actor = f"{recipient} (notice {notice_id})"
        if alarm_id == "*":  # a grouped notice's link: every alarm the notice carried
            rows = await run_in_threadpool(
                engine.store.sql, "SELECT DISTINCT alarm_id FROM notices WHERE notice_id = ?", [notice_id])
            ids = [r[0] for r in rows]
        else:
            ids = [alarm_id]

        def ack_all(m: Any, now: int) -> Any:
            out = None
            for i in ids:
                try:
                    out = m.ack(i, actor, "acknowledged from notice link", now)
                except NotFound:  # closed meanwhile: nothing to acknowledge
                    continue
            return out

        await commit(ack_all)
        alarms = [await run_in_threadpool(engine.store.get_alarm, i) for i in ids]
        return {"acknowledged": [alarm_json(a) for a in alarms if a is not None]}

    routes = [
        Route("/health", handle(health)),
        Route("/api/alarms", handle(list_alarms)),
        Route("/api/alarms/{alarm_id}", handle(show_alarm)),
        Route("/api/alarms/{alarm_id}/{action}", handle(act), methods=["POST"]),
        Route("/api/maintenance", handle(add_maintenance), methods=["POST"]),
        Route("/api/reports/{name}", handle(report)),
        Route("/ack/{token}", handle(ack_link_page), methods=["GET"]),
        Route("/ack/{token}", handle(ack_link), methods=["POST"]),
    ]
    async def http_error(request: Request, exc: Exception) -> Response:
        # the router's own 404 / 405 answers are plain text by default; clients of a JSON API get JSON
        status = getattr(exc, "status_code", 500)
        return JSONResponse({"error": str(getattr(exc, "detail", "error"))}, status_code=status,
                            headers=getattr(exc, "headers", None))

    return Starlette(routes=routes, exception_handlers={StarletteHTTPException: http_error})


class ApiServer:
    """uvicorn in a background thread."""

    def __init__(self, app: Starlette, host: str, port: int) -> None:
        import uvicorn

        self.config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="off")
        self.server = uvicorn.Server(self.config)
        self.thread = threading.Thread(target=self.server.run, name="earlywarn-api", daemon=True)

    def start(self) -> ApiServer:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.01)
        return self

    @property
    def port(self) -> int:
        for s in self.server.servers:
            for sock in s.sockets:
                return int(sock.getsockname()[1])
        return self.config.port

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(5)


def serve_in_thread(cfg: Config, runner: Any, link_verify: Callable[[str, int], tuple[str, str, str]] | None = None) -> ApiServer:
    host, port = cfg.http.listen.rsplit(":", 1)
    if link_verify is None:
        link_verify = getattr(runner.engine, "link_verify", None)
    return ApiServer(build_app(cfg, runner, link_verify=link_verify), host.strip("[]"), int(port)).start()
