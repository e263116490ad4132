"""Ingest: the paho-mqtt client. Receives telemetry, hands it on, acknowledges only after commit.

No-loss contract: the engine subscribes at QoS 1 with a persistent session and *manual* acknowledgement.
`on_message` only enqueues; the pipeline calls `ack()` for a message once everything derived from it is
committed to DuckDB. A crash before that makes the broker redeliver; the store drops the duplicate.

Message ids are per connection: after a reconnect the broker redelivers every unacknowledged message,
possibly reusing ids. Acknowledging an id from an earlier connection could acknowledge a different,
not-yet-committed message, so each message carries the connection `session` it arrived on and acks for
older sessions are dropped (the broker redelivers those messages; the store dedups them).
"""

from __future__ import annotations

import collections
import logging
import queue
import ssl
import struct
import sys
import threading
import time
from collections.abc import Iterable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from earlywarn.clock import Clock, SystemClock
from earlywarn.config import BrokerConfig
from earlywarn.metrics import Metrics
from earlywarn.model import RawMessage

log = logging.getLogger("earlywarn.ingest")

_PUBACK_HEAD = struct.pack("!BB", mqtt.PUBACK, 2)  # PUBACK, remaining length 2 (the mid; reason 0 = success)


def _ack_many(client: mqtt.Client, mids: list[int]) -> None:
    """Acknowledge QoS 1 messages `mids` of the current connection with one write.

    `client.ack()` queues each PUBACK as its own packet: one wake-up of the network thread and one
    `send()` of 4 bytes per message, ~10 us of the MQTT process's time each. The PUBACKs of a committed
    micro-batch are instead queued as one blob (the same 4 bytes each, as paho writes them for MQTT 3.1.1
    and 5) through paho's packet queue, which keeps writes ordered with the client's own.
    """
    queue_packet = getattr(client, "_packet_queue", None)
    if queue_packet is None or len(mids) < 2:  # a paho without it, or nothing to gain
        for mid in mids:
            client.ack(mid, 1)
        return
    head = _PUBACK_HEAD
    blob = b"".join([head + mid.to_bytes(2, "big") for mid in mids])
    queue_packet(mqtt.PUBACK, blob, 0, 0)


class _Client(mqtt.Client):
    """paho's client reading the socket 64 KiB at a time.

    paho reads a packet with three or more `recv()` calls (the command byte, each byte of the remaining
    length, then the rest) and handles one packet per wake-up of its loop (a `select()` each). Served
    from a buffer, the packets already received cost no system call: ~90 -> ~65 us of CPU per 100-reading
    message for a bare subscriber in a drain. Only the network thread reads; the buffer is dropped whenever
    paho closes the socket (which it does before every reconnect), so no byte outlives its connection.
    """

    _rbuf: bytes = b""
    _rpos: int = 0

    def _sock_recv(self, bufsize: int) -> bytes:
        buf, pos = self._rbuf, self._rpos
        if pos >= len(buf):
            data = super()._sock_recv(65536)  # raises BlockingIOError when nothing is there, as paho expects
            if len(data) <= bufsize:  # b"" (connection closed) included
                return data
            self._rbuf, self._rpos = data, bufsize
            return data[:bufsize]
        end = pos + bufsize
        self._rpos = end
        return buf[pos:end]

    def _sock_close(self) -> None:
        self._rbuf, self._rpos = b"", 0
        super()._sock_close()

    def loop_read(self, max_packets: int = 1) -> mqtt.MQTTErrorCode:
        # paho handles one packet per call; go on while the buffer holds more (select() would not wake for them)
        rc = super().loop_read(max_packets)
        while rc == mqtt.MQTTErrorCode.MQTT_ERR_SUCCESS and self._rpos < len(self._rbuf) and self._sock is not None:
            rc = super().loop_read(max_packets)
        return rc


class MqttIngest:
    """A paho client feeding RawMessages into `out` and acknowledging them on request."""

    def __init__(
        self,
        cfg: BrokerConfig,
        out: queue.SimpleQueue[RawMessage],
        *,
        metrics: Metrics | None = None,
        clock: Clock | None = None,
        subscribe: bool = True,
    ) -> None:
        self.cfg = cfg
        self.out = out
        self.metrics = metrics or Metrics()
        self.clock = clock or SystemClock()
        self._subscribe = subscribe
        self._session = 0
        self._connected = threading.Event()
        self._connects = 0
        v5 = cfg.protocol == "5"
        self.client = _Client(
            CallbackAPIVersion.VERSION2,
            client_id=cfg.client_id,
            # MQTT 3.1.1 has no session expiry: a persistent session is clean_session=False
            clean_session=None if v5 else False,
            protocol=MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311,
            manual_ack=True,
        )
        self.client.reconnect_delay_set(
            min_delay=max(1, cfg.reconnect_min_ms // 1000), max_delay=max(1, cfg.reconnect_max_ms // 1000)
        )
        # paho's own outgoing queue (notices) must not grow without bound while the broker is away
        self.client.max_queued_messages_set(100_000)
        # an unbounded number of our own QoS 1 publishes (notices) in flight
        self.client.max_inflight_messages_set(1000)
        user, password = cfg.credentials()
        if user is not None:
            self.client.username_pw_set(user, password)
        if cfg.tls:
            self.client.tls_set(
                ca_certs=cfg.ca_file or None,
                certfile=cfg.cert_file or None,
                keyfile=cfg.key_file or None,
                cert_reqs=ssl.CERT_REQUIRED,
                tls_version=ssl.PROTOCOL_TLS_CLIENT,
            )
        self.client.on_connect = self._on_connect
        self.client.on_connect_fail = self._on_connect_fail
        self.client.on_disconnect = self._on_disconnect
        self._last_fail: tuple[str, float] = ("", 0.0)
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        self._sub_mid: int | None = None
        #: wall-clock ms of the last CONNACK. A persistent session's stored messages flow from then on,
        #: before the SUBACK that makes us `connected`: a drain is timed from here.
        self.connack_ms: int | None = None

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> None:
        """Connect in the background; paho reconnects with backoff by itself from then on."""
        props = None
        if self.cfg.protocol == "5":
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = max(1, self.cfg.session_expiry_ms // 1000)
            # the broker may have this many unacknowledged QoS 1 messages in flight to us: acks wait for
            # the commit of a whole micro-batch, so a small window would stall the stream
            props.ReceiveMaximum = self.cfg.receive_maximum
        kwargs: dict[str, Any] = {"keepalive": max(5, self.cfg.keepalive_ms // 1000)}
        if self.cfg.protocol == "5":
            kwargs["clean_start"] = False
            kwargs["properties"] = props
        self.client.connect_async(self.cfg.host, self.cfg.port, **kwargs)
        self.client.loop_start()

    def wait_connected(self, timeout_s: float) -> bool:
        return self._connected.wait(timeout_s)

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def stop(self) -> None:
        try:
            self.client.disconnect()
        finally:
            self.client.loop_stop()
            self._connected.clear()
            self.metrics.broker_connected.set(0)

    # -- acknowledgement ---------------------------------------------------------------------------

    def ack(self, messages: Iterable[RawMessage]) -> int:
        """Acknowledge committed messages of the current connection; returns how many were acked."""
        session = self._session
        mids = [m.mid for m in messages if m.mid and m.session == session]
        if mids:
            _ack_many(self.client, mids)
        return len(mids)

    def publish(self, topic: str, payload: bytes, qos: int = 1) -> None:
        """Publish on the engine's own connection (notices). Queued by paho while disconnected."""
        self.client.publish(topic, payload, qos=qos)

    # -- paho callbacks (network thread: never block, never raise) ------------------------------------

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if getattr(reason_code, "is_failure", False):
            log.warning("broker refused the connection: %s", reason_code)
            return
        self.connack_ms = self.clock.now_ms()
        self._session += 1
        self._connects += 1
        if self._connects > 1:
            self.metrics.reconnects.inc()
        log.info(
            "connected to %s:%s (session present: %s)",
            self.cfg.host, self.cfg.port, getattr(flags, "session_present", "?"),
        )
        if self._subscribe:
            # resubscribe every time: harmless when the session kept the subscription, vital when it did not.
            # Ready only at the SUBACK: a gateway that publishes as soon as we say "connected" would
            # otherwise race the subscription, and the broker drops what no subscription matches.
            _, self._sub_mid = client.subscribe([(t, 1) for t in self.cfg.topics])
        else:
            self._ready()

    def _on_subscribe(
        self, client: mqtt.Client, userdata: Any, mid: int, reason_codes: Any, properties: Any
    ) -> None:
        if mid != self._sub_mid:
            return
        for topic, rc in zip(self.cfg.topics, reason_codes or (), strict=False):
            if getattr(rc, "is_failure", False):
                # nothing will arrive on it and nothing retries: say so loudly (an ACL, a bad filter)
                log.error("broker refused the subscription to %r: %s", topic, rc)
        self._ready()

    def _ready(self) -> None:
        """Connected and subscribed: messages published from now on reach us."""
        self._connected.set()
        self.metrics.broker_connected.set(1)

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        # paho retries a failed TCP/TLS connect (refused, unreachable, certificate rejected) silently; it
        # calls this inside its `except OSError`, so the exception is at hand: say why, once per reason
        # and then at most once a minute, so that an operator sees a wrong CA file or a dead broker
        err = sys.exc_info()[1]
        why = f"{type(err).__name__}: {err}" if err is not None else "unknown error"
        now = time.monotonic()
        last_why, last_t = self._last_fail
        if why != last_why or now - last_t >= 60:
            self._last_fail = (why, now)
            log.warning("cannot connect to %s:%s (%s); retrying", self.cfg.host, self.cfg.port, why)

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any
    ) -> None:
        self._connected.clear()
        self.metrics.broker_connected.set(0)
        if getattr(reason_code, "value", reason_code) == 0:  # our own disconnect at stop
            log.info("disconnected from the broker")
        else:
            log.warning("disconnected from the broker (%s); reconnecting", reason_code)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        # QoS 0 messages need no ack: mid 0 marks them
        mid = msg.mid if msg.qos > 0 else 0
        self.out.put(RawMessage(msg.topic, msg.payload, mid, self.clock.now_ms(), self._session))
        self.metrics.messages.inc()


# ---------------------------------------------------------------------------------------------------
# The MQTT client in its own process.
#
# paho spends ~70 µs of Python per QoS 1 message on its network thread; in the engine's process that time
# competes with decode/rules/store for one GIL. Here the client runs in a child process that forwards
# messages in chunks over a pipe and takes acknowledgements (and notices to publish) back. The child
# exits when the pipe closes, so a kill -9 of the engine never leaves an orphan holding the session.

_CHUNK_MESSAGES = 2000


def _child_main(cfg: BrokerConfig, conn: Any) -> None:  # runs in the child process
    import os

    # a spawned child starts with unconfigured logging: without this its warnings (refused connection,
    # certificate rejected, disconnects) would reach stderr bare or not at all
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s[mqtt]: %(message)s")

    # on_message (paho's thread) appends plain tuples; the forwarder drains them in chunks. A deque and an
    # Event instead of RawMessages through a SimpleQueue: less of the GIL per message for paho's thread.
    pending: collections.deque[tuple[str, bytes, int, int, int]] = collections.deque()
    arrived = threading.Event()
    send_lock = threading.Lock()

    def send(obj: Any) -> None:
        with send_lock:
            conn.send(obj)

    class _Reporting(MqttIngest):
        def _ready(self) -> None:
            super()._ready()
            send(("conn", True, self._session, self.connack_ms))

        def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
            super()._on_disconnect(client, userdata, flags, rc, props)
            send(("conn", False, self._session))

        def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
            # QoS 0 messages need no ack: mid 0 marks them. (Counted by the engine's process, not here.)
            pending.append((msg.topic, msg.payload, msg.mid if msg.qos > 0 else 0, now_ms(), self._session))
            if not arrived.is_set():
                arrived.set()

    ing = _Reporting(cfg, queue.SimpleQueue())
    now_ms = ing.clock.now_ms
    stop = threading.Event()

    def forward() -> None:
        # ship messages in chunks: one pipe write per chunk instead of one per message
        popleft = pending.popleft
        while not stop.is_set():
            if not arrived.wait(0.05):
                continue
            arrived.clear()  # before draining: a message appended after this sets it again
            while pending:
                n = min(len(pending), _CHUNK_MESSAGES)
                chunk = [popleft() for _ in range(n)]
                try:
                    send(("msgs", chunk))
                except (OSError, ValueError):
                    os._exit(0)

    threading.Thread(target=forward, name="earlywarn-forward", daemon=True).start()
    ing.start()
    try:
        while True:
            try:
                cmd = conn.recv()
            except (EOFError, OSError):
                os._exit(0)  # the engine is gone (stopped or killed): its session stays with the broker
            kind = cmd[0]
            if kind == "ack":
                session = ing._session
                mids = [mid for s, mid in cmd[1] if s == session]
                if mids:
                    _ack_many(ing.client, mids)
            elif kind == "pub":
                ing.publish(cmd[1], cmd[2], cmd[3])
            elif kind == "stop":
                stop.set()
                ing.stop()
                send(("stopped",))
                return
    finally:
        sys.stdout.flush()


class ProcessIngest:
    """MqttIngest's interface, with the paho client in a child process."""

    def __init__(
        self,
        cfg: BrokerConfig,
        out: queue.SimpleQueue[RawMessage],
        *,
        metrics: Metrics | None = None,
        clock: Clock | None = None,
    ) -> None:
        import multiprocessing as mp

        self.cfg = cfg
        self.out = out
        self.metrics = metrics or Metrics()
        self._ctx = mp.get_context("spawn")  # no fork of a threaded process
        self._conn, child_conn = self._ctx.Pipe(duplex=True)
        self._child_conn = child_conn
        self._proc = self._ctx.Process(target=_child_main, args=(cfg, child_conn), name="earlywarn-mqtt", daemon=True)
        self._connected = threading.Event()
        self._session = 0
        self._connects = 0
        self.connack_ms: int | None = None  # wall-clock ms of the child's last CONNACK (see MqttIngest)
        self._send_lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, name="earlywarn-mqtt-reader", daemon=True)
        self._stopped = threading.Event()

    def start(self) -> None:
        self._proc.start()
        self._child_conn.close()
        self._reader.start()

    def _read(self) -> None:
        put = self.out.put
        while True:
            try:
                msg = self._conn.recv()
            except (EOFError, OSError):
                self._connected.clear()
                self.metrics.broker_connected.set(0)
                self._stopped.set()
                return
            kind = msg[0]
            if kind == "msgs":
                for topic, payload, mid, received_ms, session in msg[1]:
                    put(RawMessage(topic, payload, mid, received_ms, session))
                self.metrics.messages.inc(len(msg[1]))
            elif kind == "conn":
                _, up, session, *connack = msg
                self._session = session
                if up:
                    self.connack_ms = connack[0] if connack else None
                    self._connects += 1
                    if self._connects > 1:
                        self.metrics.reconnects.inc()
                    self._connected.set()
                    self.metrics.broker_connected.set(1)
                else:
                    self._connected.clear()
                    self.metrics.broker_connected.set(0)
            elif kind == "stopped":
                self._stopped.set()
                return

    def _send(self, obj: Any) -> None:
        with self._send_lock:
            self._conn.send(obj)

    def wait_connected(self, timeout_s: float) -> bool:
        return self._connected.wait(timeout_s)

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def ack(self, messages: Iterable[RawMessage]) -> int:
        pairs = [(m.session, m.mid) for m in messages if m.mid]
        if pairs:
            try:
                self._send(("ack", pairs))
            except (OSError, ValueError):
                return 0  # the client process is gone; the broker will redeliver
        return len(pairs)

    def publish(self, topic: str, payload: bytes, qos: int = 1) -> None:
        try:
            self._send(("pub", topic, payload, qos))
        except (OSError, ValueError):
            log.warning("notice to %s not handed to the MQTT client: the client process is gone", topic)

    def stop(self) -> None:
        try:
            self._send(("stop",))
            self._stopped.wait(10)
        except (OSError, ValueError):
            pass
        self._proc.join(10)
        if self._proc.is_alive():
            self._proc.kill()
        self._conn.close()
        self._connected.clear()
        self.metrics.broker_connected.set(0)
