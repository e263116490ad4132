"""Webhook connection reuse against real servers on loopback: one TCP connection for many POSTs, and a
connection the server closed is replaced so the notice is delivered exactly once."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self

import pytest

from earlywarn.clock import ManualClock
from earlywarn.config import AlarmsConfig, NotifyConfig, WebhookConfig
from earlywarn.model import Alarm, AlarmEvent, AlarmState, EventKind, Severity, Site, Tier
from earlywarn.notify import (
    DeliveryError,
    Dispatcher,
    InMemoryNotificationLog,
    Notice,
    NoticeAlarm,
    NoticeReason,
    Recipient,
    ThreadedExecutor,
    WebhookChannel,
)
from earlywarn.notify.httpconn import parse_target

pytestmark = pytest.mark.integration

T0_MS = 1_764_316_800_000


def _notice(n: int) -> Notice:
    a = Alarm(alarm_id=f"S:r:{n}", site="S", plant="p", district="d", tag="t", rule_id="r", severity=Severity.RED,
              state=AlarmState.ACTIVE_UNACK, raised_at_ms=T0_MS + n, message="冷却水压力低低", value=1.5)
    return Notice(f"n-{n:024x}", "S", "S", NoticeReason.RAISED, Tier.PLANT, (NoticeAlarm(a, T0_MS + n, None),),
                  T0_MS, T0_MS, ())


class _Hook:
    """http.server on loopback; HTTP/1.1 keep-alive unless `http10`; counts connections and notices."""

    def __init__(self, *, http10: bool = False, close_after_each: bool = False) -> None:
        self.connections = 0
        self.ids: list[str] = []
        self.lock = threading.Lock()
        hook = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0" if http10 else "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                with hook.lock:
                    hook.connections += 1

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with hook.lock:
                    hook.ids.append(json.loads(body)["notice_id"])
                assert self.headers["X-Earlywarn-Notice-Id"] == json.loads(body)["notice_id"]
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")
                if close_after_each:  # closes without saying so (no Connection: close)
                    self.close_connection = True

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook?x=1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def _send(ch: WebhookChannel, url: str, n: int) -> None:
    ch.send(_notice(n), Recipient("webhook", url))


def test_one_connection_for_many_posts() -> None:
    with _Hook() as hook:
        ch = WebhookChannel(timeout_ms=2_000)
        for n in range(50):
            _send(ch, hook.url, n)
        assert hook.ids == [f"n-{n:024x}" for n in range(50)]
        assert hook.connections == 1 and ch.connections == 1
        ch.close()


def test_http10_server_gets_a_connection_per_post() -> None:
    with _Hook(http10=True) as hook:
        ch = WebhookChannel(timeout_ms=2_000)
        for n in range(5):
            _send(ch, hook.url, n)
        assert len(hook.ids) == 5 and hook.connections == 5 and ch.connections == 5


def test_server_closing_the_kept_connection_reconnects_and_delivers_once() -> None:
    with _Hook(close_after_each=True) as hook:
        ch = WebhookChannel(timeout_ms=2_000)
        for n in range(5):
            _send(ch, hook.url, n)
        assert hook.ids == [f"n-{n:024x}" for n in range(5)]  # each once, in order
        assert hook.connections == 5


@contextmanager
def _raw_server(script: Callable[[int, socket.socket], None]) -> Iterator[tuple[str, list[bytes]]]:
    """A scripted HTTP server: `script(connection number, conn)` runs for each accepted connection."""
    srv = socket.create_server(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{srv.getsockname()[1]}/h"
    requests: list[bytes] = []
    stop = threading.Event()

    def accept() -> None:
        k = 0
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            threading.Thread(target=script, args=(k, conn), daemon=True).start()
            k += 1

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield url, requests
    finally:
        stop.set()
        srv.close()


def _read_request(f) -> bytes | None:  # type: ignore[no-untyped-def]
    head = b""
    while True:
        line = f.readline()
        if not line:
            return None
        head += line
        if line == b"\r\n":
            break
    length = next(int(h.split(b":")[1]) for h in head.split(b"\r\n") if h.lower().startswith(b"content-length"))
    return head + f.read(length)


def test_server_dropping_a_request_on_a_kept_connection_is_resent_once_fresh() -> None:
    """The race a poll cannot see: the server reads the request on the kept connection and closes without
    an answer. The POST goes once more on a new connection, within the same attempt."""
    answered: list[bytes] = []

    def script(k: int, conn: socket.socket) -> None:
        f = conn.makefile("rb")
        with conn:
            req = _read_request(f)
            if req is None:
                return
            answered.append(req)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
            if k == 0:
                _read_request(f)  # the second POST on the kept connection: dropped without an answer
            # other connections: one request, then closed (announced by nothing; the poll sees the FIN)

    with _raw_server(script) as (url, _):
        ch = WebhookChannel(timeout_ms=2_000)
        _send(ch, url, 1)
        _send(ch, url, 2)
        _send(ch, url, 3)
    ids = [json.loads(r.split(b"\r\n\r\n", 1)[1])["notice_id"] for r in answered]
    assert ids == [f"n-{n:024x}" for n in (1, 2, 3)]
    assert ch.connections == 3


def test_chunked_and_bodied_responses_keep_the_connection() -> None:
    replies = [
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
        b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\nT: 1\r\n\r\n",
        b"HTTP/1.1 204 No Content\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end",
    ]
    got: list[bytes] = []

    def script(k: int, conn: socket.socket) -> None:
        f = conn.makefile("rb")
        with conn:
            for reply in replies if k == 0 else replies[-1:]:
                req = _read_request(f)
                if req is None:
                    return
                got.append(req)
                conn.sendall(reply)

    with _raw_server(script) as (url, _):
        ch = WebhookChannel(timeout_ms=2_000)
        for n in range(5):
            _send(ch, url, n)
    assert len(got) == 5
    assert ch.connections == 2  # the fourth answer said close: the fifth POST opened a new one
    first = got[0].decode()
    assert first.startswith("POST /h HTTP/1.1\r\n") and "\r\nHost: 127.0.0.1:" in first
    assert "\r\nContent-Type: application/json; charset=utf-8\r\n" in first


@pytest.mark.parametrize(("status", "recoverable"), [(500, True), (503, True), (429, True), (404, False),
                                                     (302, False), (400, False)])
def test_http_errors_keep_their_meaning(status: int, recoverable: bool) -> None:
    def script(k: int, conn: socket.socket) -> None:
        f = conn.makefile("rb")
        with conn:
            while _read_request(f) is not None:
                conn.sendall(b"HTTP/1.1 %d Nope\r\nContent-Length: 4\r\nLocation: /x\r\n\r\nnope" % status)

    with _raw_server(script) as (url, _):
        ch = WebhookChannel(timeout_ms=2_000)
        for n in range(2):
            with pytest.raises(DeliveryError) as e:
                _send(ch, url, n)
            assert e.value.recoverable is recoverable and f"HTTP {status}" in str(e.value)
    assert ch.connections == 1  # an error answer does not cost the connection


def test_refused_silent_and_garbled_are_recoverable() -> None:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    ch = WebhookChannel(timeout_ms=800)
    with pytest.raises(DeliveryError) as e:
        _send(ch, f"http://127.0.0.1:{port}/h", 1)
    assert e.value.recoverable and "webhook unreachable" in str(e.value)

    def silent(k: int, conn: socket.socket) -> None:
        f = conn.makefile("rb")
        with conn:
            if k == 0:
                _read_request(f)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
            _read_request(f)
            threading.Event().wait(3)  # no answer

    with _raw_server(silent) as (url, _):
        _send(ch, url, 1)
        with pytest.raises(DeliveryError) as e:
            _send(ch, url, 2)  # on the kept connection: times out like a new one
        assert e.value.recoverable and "timed out" in str(e.value)

    def garbled(k: int, conn: socket.socket) -> None:
        f = conn.makefile("rb")
        with conn:
            _read_request(f)
            conn.sendall(b"SMTP? 220 hello\r\n\r\n")

    with _raw_server(garbled) as (url, _):
        with pytest.raises(DeliveryError) as e:
            _send(ch, url, 3)
        assert e.value.recoverable and "not an HTTP/1.x response" in str(e.value)


def test_bad_urls_and_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    ch = WebhookChannel(timeout_ms=500)
    for url in ("http:///nohost", "http://127.0.0.1:99999/x", "http://a b/"):
        with pytest.raises(DeliveryError) as e:
            _send(ch, url, 1)
        assert not e.value.recoverable, url
    t = parse_target("https://[::1]:8443/p/q?a=b")
    assert t is not None and (t.host, t.port, t.host_header, t.path) == ("::1", 8443, b"[::1]:8443", b"/p/q?a=b")
    assert parse_target("http://user:pw@example.cn/x") is None  # credentials: urllib
    monkeypatch.setenv("http_proxy", "http://proxy.example:3128")
    monkeypatch.setenv("no_proxy", "internal.example")
    assert parse_target("http://hooks.example.cn/x") is None  # behind the proxy: urllib, which honours it
    assert parse_target("http://internal.example/x") is not None


def test_dispatcher_over_kept_connections() -> None:
    """Through the ThreadedExecutor as in the engine: every notice once, at most a connection per worker."""
    with _Hook() as hook:
        clock = ManualClock(T0_MS)
        ch = WebhookChannel(timeout_ms=2_000)
        cfg = NotifyConfig(group_wait_ms=0, webhook=WebhookConfig(urls=(hook.url,)))
        sites = {f"S{n}": Site(id=f"S{n}", name="s", plant="p", district="d", contacts=()) for n in range(40)}
        d = Dispatcher(sites, cfg, AlarmsConfig(), channels={"webhook": ch}, log=InMemoryNotificationLog(),
                       clock=clock, executor=ThreadedExecutor())
        try:
            for n in range(40):
                a = Alarm(alarm_id=f"S{n}:r", site=f"S{n}", plant="p", district="d", tag="t", rule_id="r",
                          severity=Severity.RED, state=AlarmState.ACTIVE_UNACK, raised_at_ms=T0_MS + n,
                          message="m", value=1.0)
                clock.set(T0_MS + n)
                d.submit([(a, AlarmEvent(a.alarm_id, a.raised_at_ms, EventKind.RAISED))])
                d.flush(clock.now_ms())
            assert d.wait_idle(10)
            records = d.drain_records()
            assert len(records) == 40 and {r.outcome for r in records} == {"delivered"}
            assert sorted(hook.ids) == sorted({r.notice_id for r in records})
            assert hook.connections <= ThreadedExecutor.DEFAULT_WORKERS["webhook"]
        finally:
            d.close()


def test_https_posts_share_one_tls_connection_and_a_wrong_ca_is_refused(tmp_path) -> None:
    """https webhooks (the common case in deployments) over a real TLS server with a test CA."""
    import ssl
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "security"))
    from tlsbroker import make_ca, make_server_cert

    ca_path, ca_key, ca = make_ca(tmp_path / "pki", "hook-ca")
    cert, key = make_server_cert(tmp_path / "pki", ca_key, ca)
    with _Hook() as hook:
        server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server_ctx.load_cert_chain(cert, key)
        hook.server.socket = server_ctx.wrap_socket(hook.server.socket, server_side=True)
        url = hook.url.replace("http://", "https://")
        ch = WebhookChannel(timeout_ms=5_000, ssl_context=ssl.create_default_context(cafile=str(ca_path)))
        for n in range(20):
            _send(ch, url, n)
        assert hook.ids == [f"n-{n:024x}" for n in range(20)]
        assert hook.connections == 1 and ch.connections == 1

        other_ca, _, _ = make_ca(tmp_path / "other", "other-ca")
        stranger = WebhookChannel(timeout_ms=5_000, ssl_context=ssl.create_default_context(cafile=str(other_ca)))
        with pytest.raises(DeliveryError) as e:
            _send(stranger, url, 99)
        assert e.value.recoverable and "CERTIFICATE_VERIFY_FAILED" in str(e.value)
        assert "n-" + f"{99:024x}" not in hook.ids
