"""A small HTTP/1.1 client for webhook POSTs: one kept-alive connection per (worker thread, origin).

Why not urllib: `urlopen` opens a new TCP (and TLS) connection per POST and parses the response headers with
the `email` package; at a flood's 500 deliveries a second that was ~0.3 ms of CPU each, taken from the engine
thread through the GIL. `http.client.HTTPConnection` reuse saves the connect but still costs ~0.15 ms per
POST in header building/validation and `email` parsing. This client writes the request in one `sendall` and
reads only what it needs from the response (status, Content-Length, Transfer-Encoding, Connection), ~0.03 ms.

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

import select
import socket
import ssl
import threading
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass

#: Longest status or header line accepted, and the number of header lines.
MAX_LINE = 65_536
MAX_HEADERS = 100
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
    sock: socket.socket
    rfile: object  # io.BufferedReader over the socket
    last_used: float


def _closed_or_dirty(sock: socket.socket) -> bool:
    """An idle kept connection that is readable has been closed by the server (or holds stray bytes)."""
    try:
        p = select.poll()
        p.register(sock, select.POLLIN | select.POLLPRI | select.POLLERR | select.POLLHUP)
        return bool(p.poll(0))
    except (OSError, ValueError):
        return True


class KeepAlivePoster:
    """POSTs over one kept-alive HTTP/1.1 connection per (calling thread, origin).

    `timeout_s` applies to the connect and to every send and receive, as urllib's `timeout` did. A connection
    unused for `idle_s` is closed before the next POST instead of reused (below common server keep-alive
    timeouts of 5 s, so a server rarely closes a connection just as it is reused).
    """

    def __init__(self, timeout_s: float, *, idle_s: float = 4.0, ssl_context: ssl.SSLContext | None = None) -> None:
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
        sock = socket.create_connection((t.host, t.port), timeout=self.timeout_s)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if t.scheme == "https":
                sock = self._context().wrap_socket(sock, server_hostname=t.host)
        except BaseException:
            sock.close()
            raise
        with self._count_lock:
            self.connections += 1
        return _Conn(sock, sock.makefile("rb"), time.monotonic())

    def _drop(self, origin: tuple[str, str, int]) -> None:
        conn = self._conns().pop(origin, None)
        if conn is not None:
            _close(conn)

    def close(self) -> None:
        """Close the calling thread's kept connections."""
        conns = self._conns()
        for conn in conns.values():
            _close(conn)
        conns.clear()

    def post(self, t: Target, head: bytes, body: bytes) -> tuple[int, str]:
        """Send `head` (request line and headers, ending in a blank line) and `body`; (status, reason)."""
        conns = self._conns()
        origin = t.origin
        conn = conns.get(origin)
        if conn is not None:
            if time.monotonic() - conn.last_used > self.idle_s or _closed_or_dirty(conn.sock):
                self._drop(origin)
            else:
                try:
                    return self._exchange(conn, origin, head + body, reused=True)
                except _Stale:
                    self._drop(origin)
        conn = self._connect(t)
        conns[origin] = conn
        return self._exchange(conn, origin, head + body, reused=False)

    def _exchange(self, conn: _Conn, origin: tuple[str, str, int], data: bytes, *, reused: bool) -> tuple[int, str]:
        try:
            try:
                conn.sock.sendall(data)
                line = conn.rfile.readline(MAX_LINE + 1)  # type: ignore[attr-defined]
            except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
                if reused:
                    raise _Stale() from None
                raise
            if not line:
                if reused:
                    raise _Stale()
                raise ConnectionResetError("the server closed the connection without a response")
            status, reason, keep = self._response(conn, line)
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

    def _response(self, conn: _Conn, line: bytes) -> tuple[int, str, bool]:
        """Read one response (skipping 1xx interim ones); (status, reason, connection can be reused)."""
        rfile = conn.rfile
        while True:
            version, status, reason = _status_line(line)
            length: int | None = None
            chunked = False
            tokens: set[str] = set()
            for _ in range(MAX_HEADERS + 1):
                h = rfile.readline(MAX_LINE + 1)  # type: ignore[attr-defined]
                if len(h) > MAX_LINE:
                    raise HttpProtocolError("response header line too long")
                if h in (b"\r\n", b"\n"):
                    break
                if not h:
                    raise HttpProtocolError("connection closed inside the response headers")
                name, sep, value = h.partition(b":")
                if not sep:
                    continue
                name = name.strip().lower()
                if name == b"content-length":
                    try:
                        length = int(value.strip())
                    except ValueError:
                        raise HttpProtocolError(f"bad Content-Length {value.strip()!r}") from None
                    if length < 0:
                        raise HttpProtocolError(f"bad Content-Length {length}")
                elif name == b"transfer-encoding":
                    chunked = value.strip().lower().endswith(b"chunked")
                elif name == b"connection":
                    tokens.update(t.strip().decode("latin-1").lower() for t in value.split(b","))
            else:
                raise HttpProtocolError("too many response headers")
            if 100 <= status < 200 and status != 101:
                line = rfile.readline(MAX_LINE + 1)  # type: ignore[attr-defined]
                if not line:
                    raise HttpProtocolError("connection closed after an interim response")
                continue
            break
        keep = version == "HTTP/1.1" and "close" not in tokens
        if status in (101, 204, 304):
            return status, reason, keep and status != 101
        if chunked:
            keep = _read_chunked(rfile) and keep
        elif length is not None:
            want = min(length, BODY_LIMIT)
            got = len(rfile.read(want)) if want else 0  # type: ignore[attr-defined]
            keep = keep and got == length
        else:  # delimited by the close
            rfile.read(BODY_LIMIT)  # type: ignore[attr-defined]
            keep = False
        return status, reason, keep


def _status_line(line: bytes) -> tuple[str, int, str]:
    if len(line) > MAX_LINE:
        raise HttpProtocolError("status line too long")
    parts = line.decode("latin-1").rstrip("\r\n").split(None, 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not (len(parts[1]) == 3 and parts[1].isdigit()):
        raise HttpProtocolError(f"not an HTTP/1.x response: {line[:80]!r}")
    return parts[0], int(parts[1]), parts[2] if len(parts) > 2 else ""


def _read_chunked(rfile: object) -> bool:
    """Read a chunked body (at most BODY_LIMIT of data); True when it was read to its end."""
    total = 0
    while True:
        size_line = rfile.readline(MAX_LINE + 1)  # type: ignore[attr-defined]
        if not size_line or len(size_line) > MAX_LINE:
            raise HttpProtocolError("bad chunked response")
        try:
            size = int(size_line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise HttpProtocolError(f"bad chunk size {size_line[:40]!r}") from None
        if size == 0:
            break
        total += size
        if total > BODY_LIMIT:
            return False  # not worth reading: close the connection instead
        data = rfile.read(size + 2)  # type: ignore[attr-defined]
        if len(data) != size + 2:
            raise HttpProtocolError("connection closed inside a chunk")
    for _ in range(MAX_HEADERS + 1):  # trailers, up to the blank line
        t = rfile.readline(MAX_LINE + 1)  # type: ignore[attr-defined]
        if t in (b"\r\n", b"\n"):
            return True
        if not t:
            return False
    return False


def _close(conn: _Conn) -> None:
    try:
        conn.rfile.close()  # type: ignore[attr-defined]
    finally:
        conn.sock.close()
