"""The MQTT client's buffered socket reads and batched PUBACKs (no broker: a fake socket / client)."""

from __future__ import annotations

import struct
from typing import Any

from paho.mqtt.enums import CallbackAPIVersion

from earlywarn.ingest import _ack_many, _Client


class _FakeSock:
    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = list(chunks)
        self.asked: list[int] = []
        self.closed = False

    def recv(self, n: int) -> bytes:
        self.asked.append(n)
        if not self.chunks:
            raise BlockingIOError
        head = self.chunks.pop(0)
        if len(head) > n:
            head, rest = head[:n], head[n:]
            self.chunks.insert(0, rest)
        return head

    def close(self) -> None:
        self.closed = True


def _client(sock: _FakeSock) -> _Client:
    c = _Client(CallbackAPIVersion.VERSION2, client_id="t")
    c._sock = sock  # type: ignore[assignment]
    return c


def test_reads_are_served_from_one_large_recv() -> None:
    sock = _FakeSock([b"0123456789"])
    c = _client(sock)
    assert [c._sock_recv(1), c._sock_recv(1), c._sock_recv(5), c._sock_recv(100)] == [b"0", b"1", b"23456", b"789"]
    assert sock.asked == [65536]  # one system call for all four reads
    try:
        c._sock_recv(1)
    except BlockingIOError:
        pass
    else:  # pragma: no cover
        raise AssertionError("an empty socket must raise BlockingIOError, as paho expects")


def test_a_short_recv_is_returned_as_is_and_closed_connection_is_empty_bytes() -> None:
    sock = _FakeSock([b"ab", b""])
    c = _client(sock)
    assert c._sock_recv(5) == b"ab"
    assert c._sock_recv(5) == b""


def test_closing_the_socket_drops_buffered_bytes() -> None:
    sock = _FakeSock([b"0123456789"])
    c = _client(sock)
    assert c._sock_recv(2) == b"01"
    c._sock_close()
    assert sock.closed and c._sock is None
    c._sock = _FakeSock([b"new"])  # type: ignore[assignment]
    assert c._sock_recv(10) == b"new"  # nothing of the old connection


class _QueueingClient:
    def __init__(self) -> None:
        self.queued: list[tuple[Any, ...]] = []
        self.acked: list[int] = []

    def _packet_queue(self, *args: Any) -> None:
        self.queued.append(args)

    def ack(self, mid: int, qos: int) -> None:
        self.acked.append(mid)


def test_pubacks_of_a_batch_are_one_write_of_standard_packets() -> None:
    c = _QueueingClient()
    _ack_many(c, [1, 2, 65535])  # type: ignore[arg-type]
    assert c.acked == []
    [(command, blob, _mid, _qos)] = c.queued
    assert command == 0x40
    assert blob == b"".join(struct.pack("!BBH", 0x40, 2, m) for m in (1, 2, 65535))


def test_a_single_ack_goes_through_paho() -> None:
    c = _QueueingClient()
    _ack_many(c, [7])  # type: ignore[arg-type]
    assert c.acked == [7] and c.queued == []
