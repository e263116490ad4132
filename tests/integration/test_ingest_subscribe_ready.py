"""The ingest says "connected" only once the broker has acknowledged its subscription.

Before, it said so right after sending SUBSCRIBE. A gateway (or a test) that starts publishing on that
signal raced the subscription, and under load the broker dropped the first messages: nothing matched them
yet. This drives MqttIngest against a minimal MQTT 3.1.1 broker on loopback that answers CONNECT at once
and holds the SUBACK until the test releases it.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from earlywarn.config import BrokerConfig
from earlywarn.ingest import MqttIngest


def _read_packet(conn: socket.socket) -> tuple[int, bytes]:
    first = conn.recv(1)
    if not first:
        raise EOFError
    length, shift = 0, 0
    while True:  # the remaining length: 7 bits a byte, high bit = more
        b = conn.recv(1)[0]
        length |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            break
    body = b""
    while len(body) < length:
        chunk = conn.recv(length - len(body))
        if not chunk:
            raise EOFError
        body += chunk
    return first[0] >> 4, body


class HoldingBroker:
    """Accepts one client: CONNACK at once, SUBACK (with `granted`) only when `release()` is called."""

    def __init__(self, granted: int = 1) -> None:
        self.granted = granted
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.subscribed = threading.Event()  # SUBSCRIBE received
        self._release = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def release(self) -> None:
        self._release.set()

    def _serve(self) -> None:
        conn, _ = self.sock.accept()
        with conn:
            try:
                kind, _ = _read_packet(conn)
                assert kind == 1  # CONNECT
                conn.sendall(bytes([0x20, 0x02, 0x00, 0x00]))  # CONNACK, no session, accepted
                while True:
                    kind, body = _read_packet(conn)
                    if kind == 8:  # SUBSCRIBE: packet id, then (filter, qos) pairs
                        self.subscribed.set()
                        self._release.wait(30)
                        conn.sendall(bytes([0x90, 0x03]) + body[:2] + bytes([self.granted]))
                    elif kind == 12:  # PINGREQ
                        conn.sendall(bytes([0xD0, 0x00]))
                    elif kind == 14:  # DISCONNECT
                        return
            except (EOFError, OSError):
                return


@contextmanager
def ingest_against(broker: HoldingBroker) -> Iterator[MqttIngest]:
    import queue

    cfg = BrokerConfig(url=f"mqtt://127.0.0.1:{broker.port}", protocol="3.1.1", client_id="ew-ready-test")
    ing = MqttIngest(cfg, queue.SimpleQueue())
    ing.start()
    try:
        yield ing
    finally:
        ing.stop()
        broker.release()
        broker.sock.close()


def test_not_connected_until_the_subscription_is_acknowledged() -> None:
    broker = HoldingBroker()
    with ingest_against(broker) as ing:
        assert broker.subscribed.wait(10), "the client never subscribed"
        # CONNACK is in, SUBSCRIBE is out, SUBACK is held: not yet ready for publishers
        assert not ing.wait_connected(0.3)
        assert not ing.connected
        assert ing.connack_ms is not None  # a persistent session's messages may flow already: noted
        broker.release()
        assert ing.wait_connected(10)
        assert ing.connected


def test_a_refused_subscription_is_logged_as_an_error(caplog: pytest.LogCaptureFixture) -> None:
    broker = HoldingBroker(granted=0x80)  # SUBACK failure (e.g. an ACL)
    broker.release()
    with caplog.at_level(logging.ERROR, logger="earlywarn.ingest"), ingest_against(broker) as ing:
        assert ing.wait_connected(10)  # the connection is up; the log says why nothing will arrive
        assert any("refused the subscription" in r.getMessage() for r in caplog.records)
