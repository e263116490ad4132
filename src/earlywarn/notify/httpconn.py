"""Webhook POSTs over one kept-alive HTTP/1.1 connection per (worker thread, origin), with `http.client`.

Why not plain urllib: `urlopen` opens a new TCP (and TLS) connection per POST; at a flood's hundreds of
deliveries a second that was ~0.3 ms of CPU each, taken from the engine thread through the GIL. Reusing an
`http.client` connection saves the connect and the TLS handshake (~0.15 ms per POST remain). The wire
protocol (framing, chunked bodies, 1xx, TLS) stays the standard library's: a hand-written parser saved
another ~0.1 ms per POST, not worth owning an HTTP implementation in a safety system.

What it does not do (the channel falls back to urllib for these URLs): proxies from the environment
(`http_proxy`, `https_proxy`, `no_proxy`) and credentials in the URL. Redirects are not followed (a POST
redirected by urllib became a GET without the notice, and was counted as delivered).

A kept connection is reused only while it is idle-clean: before each use it is polled, and one the server
has closed (or that has unexpected bytes waiting) is discarded and replaced without sending on it. If a
reused connection still fails before a single byte of the response arrived (the server closed it while we
were sending), the request is sent once more on a fresh connection within the same attempt — what browsers
and urllib3 do; receivers de-duplicate on `X-Earlywarn-Notice-Id` anyway.
"""

from __future__ import annotations

import http.client
import select
import socket
import ssl
import threading
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass

#: At most this much of a response body is read (as before with urllib); a longer one closes the connection.
BODY_LIMIT = 65_536

_DEFAULT_PORT = {"http": 80, "https": 443}


class HttpProtocolError(OSError):
    """The server's answer is not HTTP/1.x (a recoverable delivery failure, like a network error)."""


class _Stale(Exception):
    """A reused connection turned out to be closed before any of the response arrived: send again, fresh."""


@dataclass(frozen=True, slots=True)
class Target:
    """A parsed webhook URL: where to connect and what to put in the request line and Host header."""

    scheme: str
    host: str
    port: int
    host_header: bytes
    path: bytes

    @property
    def origin(self) -> tuple[str, str, int]:
        return self.scheme, self.host, self.port


def parse_target(url: str) -> Target | None:
    """The Target of `url`, or None when this client does not handle it (the caller uses urllib).

    Raises ValueError for a URL no client can use (what urllib would refuse as well).
    """
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORT:
        return None  # urllib says "unknown url type"
    host = parts.hostname
    if not host:
        raise ValueError(f"no host in {url!r}")
    port = parts.port or _DEFAULT_PORT[scheme]  # ValueError on a bad port, as urllib
    if parts.username is not None or parts.password is not None:
        return None
    proxies = urllib.request.getproxies()
    if scheme in proxies and not urllib.request.proxy_bypass(host):
        return None
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    netloc = parts.netloc.rpartition("@")[2]
    try:
        path_b, host_b = target.encode("ascii"), netloc.encode("ascii")
    except UnicodeEncodeError:
        return None  # let urllib say what it thinks of it
    if any(c <= 0x20 or c == 0x7F for c in path_b + host_b):
        raise ValueError(f"control character or space in {url!r}")
    return Target(scheme, host, port, host_b, path_b)


@dataclass(slots=True)
class _Conn:
    http: http.client.HTTPConnection
    last_used: float


def _closed_or_dirty(sock: socket.socket | None) -> bool:
    """An idle kept connection that is readable has been closed by the server (or holds stray bytes)."""
    if sock is None:
        return True
    try:
        p = select.poll()
        p.register(sock, select.POLLIN | select.POLLPRI | select.POLLERR | select.POLLHUP)
        return bool(p.poll(0))
    except (OSError, ValueError):
        return True


class KeepAlivePoster:
    """POSTs over one kept-alive HTTP/1.1 connection per (calling thread, origin), with `http.client`.

    `timeout_s` applies to the connect and to every send and receive, as urllib's `timeout` did. A connection
    unused for `idle_s` is closed before the next POST instead of reused (below common server keep-alive
    timeouts of 5 s, so a server rarely closes a connection just as it is reused).
    """

    def __init__(
        self, timeout_s: float, *, idle_s: float = 4.0, ssl_context: ssl.SSLContext | None = None
    ) -> None:
        self.timeout_s = timeout_s
        self.idle_s = idle_s
        self._ssl_context = ssl_context
        self._local = threading.local()
        self._count_lock = threading.Lock()
        #: TCP connections opened so far (tests, diagnostics)
        self.connections = 0

    def _conns(self) -> dict[tuple[str, str, int], _Conn]:
        conns = getattr(self._local, "conns", None)
        if conns is None:
            conns = self._local.conns = {}
        return conns  # type: ignore[no-any-return]

    def _context(self) -> ssl.SSLContext:
        if self._ssl_context is None:
            ctx = ssl.create_default_context()
            ctx.set_alpn_protocols(["http/1.1"])
            self._ssl_context = ctx
        return self._ssl_context

    def _connect(self, t: Target) -> _Conn:
        c: http.client.HTTPConnection
        if t.scheme == "https":
            c = http.client.HTTPSConnection(t.host, t.port, timeout=self.timeout_s, context=self._context())
        else:
            c = http.client.HTTPConnection(t.host, t.port, timeout=self.timeout_s)
        try:
            c.connect()
            if c.sock is not None:
                c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except BaseException:
            c.close()
            raise
        with self._count_lock:
            self.connections += 1
        return _Conn(c, time.monotonic())

    def _drop(self, origin: tuple[str, str, int]) -> None:
        conn = self._conns().pop(origin, None)
        if conn is not None:
            conn.http.close()

    def close(self) -> None:
        """Close the calling thread's kept connections."""
        conns = self._conns()
        for conn in conns.values():
            conn.http.close()
        conns.clear()

    def post(self, t: Target, headers: dict[str, str], body: bytes) -> tuple[int, str]:
        """POST `body` with `headers` to `t`; (status, reason)."""
        conns = self._conns()
        origin = t.origin
        conn = conns.get(origin)
        if conn is not None:
            if time.monotonic() - conn.last_used > self.idle_s or _closed_or_dirty(conn.http.sock):
                self._drop(origin)
            else:
                try:
                    return self._exchange(conn, origin, t, headers, body, reused=True)
                except _Stale:
                    self._drop(origin)
        conn = self._connect(t)
        conns[origin] = conn
        return self._exchange(conn, origin, t, headers, body, reused=False)

    def _exchange(self, conn: _Conn, origin: tuple[str, str, int], t: Target, headers: dict[str, str],
                  body: bytes, *, reused: bool) -> tuple[int, str]:
        c = conn.http
        try:
            try:
                c.putrequest("POST", t.path.decode("ascii"), skip_host=True, skip_accept_encoding=True)
                c.putheader("Host", t.host_header.decode("ascii"))
                for k, v in headers.items():
                    c.putheader(k, v)
                c.putheader("Content-Length", str(len(body)))
                c.endheaders(body)
                r = c.getresponse()
            except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
                # RemoteDisconnected is a ConnectionResetError: closed before a byte of the response
                if reused:
                    raise _Stale() from None
                raise
            except http.client.HTTPException as e:  # garbled status line or headers: like a network error
                raise HttpProtocolError(f"not an HTTP/1.x response: {e!r}") from None
            try:
                data = r.read(BODY_LIMIT + 1)
            except http.client.HTTPException as e:  # IncompleteRead and friends
                raise HttpProtocolError(f"response body: {e!r}") from None
            # a body longer than we read is not worth draining: close the connection instead
            keep = not r.will_close and len(data) <= BODY_LIMIT and r.isclosed()
            status, reason = r.status, r.reason
        except _Stale:
            raise
        except BaseException:
            self._drop(origin)
            raise
        if keep:
            conn.last_used = time.monotonic()
        else:
            self._drop(origin)
        return status, reason
