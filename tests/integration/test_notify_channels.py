"""Notices over real servers on loopback: SMTP (aiosmtpd, STARTTLS + AUTH), HTTP webhooks, MQTT (mosquitto).

Deliveries run on the ThreadedExecutor as in the engine; pacing and retries run on a ManualClock, so the
tests step time by hand and wait only on conditions (with timeouts), never on wall-clock schedules.
"""

from __future__ import annotations

import dataclasses
import email
import email.policy
import json
import queue
import re
import ssl
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Self

import paho.mqtt.client as mqtt
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from brokers import Mosquitto, free_port

from earlywarn.clock import ManualClock
from earlywarn.config import AlarmsConfig, NotifyConfig, SmtpConfig, WebhookConfig
from earlywarn.model import Alarm, AlarmEvent, AlarmState, Contact, EventKind, Severity, Site, Tier
from earlywarn.notify import (
    Dispatcher,
    EmailChannel,
    InMemoryNotificationLog,
    LinkExpired,
    LinkSigner,
    LinkTampered,
    MqttChannel,
    ThreadedExecutor,
    WebhookChannel,
)

pytestmark = pytest.mark.integration

T0_MS = 1_764_316_800_000  # 2025-11-28T08:00:00Z
GROUP_WAIT_MS = 10_000
TTL_MS = 3_600_000
PUBLIC_URL = "https://ew.example.cn"
SECRET = b"integration-link-secret-0123456789"
WAIT_S = 10.0

SITE = Site(
    id="SZ-AL-0001", name="吴江铸造", plant="aluminum", district="wujiang",
    contacts=(
        Contact(Tier.PLANT, "安全员 Li", email="li@plant.cn"),
        Contact(Tier.PLANT, "Shift lead", email="shift@plant.cn"),
        Contact(Tier.COUNTY, "County Zhao", email="zhao@county.gov.cn"),
    ),
)


def _alarm(n: int, **kw: object) -> Alarm:
    kw.setdefault("value", 0.12 + n / 100)
    return Alarm(alarm_id=f"SZ-AL-0001:cw_pressure_ll:{n}", site="SZ-AL-0001", plant="aluminum",
                 district="wujiang", tag="cw_pressure_mpa", rule_id="cw_pressure_ll", severity=Severity.RED,
                 state=AlarmState.ACTIVE_UNACK, raised_at_ms=T0_MS + n,
                 message="冷却水压力低低 / Cooling-water pressure low-low", **kw)  # type: ignore[arg-type]


def _raised(a: Alarm) -> tuple[Alarm, AlarmEvent]:
    return a, AlarmEvent(a.alarm_id, a.raised_at_ms, EventKind.RAISED)


def _dispatcher(clock: ManualClock, channels: dict, *, urls: tuple[str, ...] = (), max_attempts: int = 5,
                red_immediate: tuple[str, ...] = ("plant",)) -> Dispatcher:
    cfg = NotifyConfig(group_wait_ms=GROUP_WAIT_MS,
                       webhook=WebhookConfig(urls=urls, timeout_ms=2_000, max_attempts=max_attempts,
                                             backoff_initial_ms=200, backoff_max_ms=1_000))
    return Dispatcher({SITE.id: SITE}, cfg, AlarmsConfig(red_immediate_tiers=red_immediate), channels=channels,
                      log=InMemoryNotificationLog(), clock=clock, link_signer=LinkSigner(SECRET, TTL_MS),
                      public_url=PUBLIC_URL, executor=ThreadedExecutor())


# ------------------------------------------------------------------------------------------------ SMTP


class _Inbox:
    def __init__(self) -> None:
        self.envelopes: queue.Queue = queue.Queue()

    async def handle_DATA(self, server, session, envelope):
        self.envelopes.put((session.authenticated, envelope))
        return "250 OK"


def _authenticator(server, session, envelope, mechanism, auth_data):
    ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (b"ew", b"s3cret")
    return AuthResult(success=ok, handled=False)  # handled=False: the server answers 535 itself


@pytest.fixture
def tls_files(tmp_path: Path) -> tuple[Path, Path]:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
         "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )
    return cert, key


@pytest.fixture
def smtp_server(tls_files: tuple[Path, Path]) -> Iterator[tuple[Controller, _Inbox]]:
    cert, key = tls_files
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    inbox = _Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=free_port(), tls_context=server_ctx,
                            require_starttls=True, authenticator=_authenticator, auth_require_tls=True)
    controller.start()
    try:
        yield controller, inbox
    finally:
        controller.stop()


def test_email_over_starttls_and_auth_with_a_working_ack_link(
    smtp_server: tuple[Controller, _Inbox], tls_files: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    controller, inbox = smtp_server
    monkeypatch.setenv("EW_IT_SMTP_USER", "ew")
    monkeypatch.setenv("EW_IT_SMTP_PASS", "s3cret")
    smtp = SmtpConfig(host="127.0.0.1", port=controller.port, starttls=True, sender="earlywarn@bureau.cn",
                      username_env="EW_IT_SMTP_USER", password_env="EW_IT_SMTP_PASS", timeout_ms=5_000)
    clock = ManualClock(T0_MS)
    client_ctx = ssl.create_default_context(cafile=str(tls_files[0]))
    d = _dispatcher(clock, {"email": EmailChannel(smtp, clock=clock, ssl_context=client_ctx)},
                    red_immediate=("plant", "county"))
    try:
        a = _alarm(1)
        d.submit([_raised(a)])
        (notice,) = d.flush(clock.advance(GROUP_WAIT_MS))
        assert d.wait_idle(WAIT_S)
        got = {}
        for _ in range(3):
            authenticated, env = inbox.envelopes.get(timeout=WAIT_S)
            assert authenticated  # AUTH happened, and (auth_require_tls) only after STARTTLS
            assert env.mail_from == "earlywarn@bureau.cn"
            (rcpt,) = env.rcpt_tos  # one e-mail per recipient: each carries its own ack link
            got[rcpt] = email.message_from_bytes(env.original_content, policy=email.policy.default)
        assert sorted(got) == ["li@plant.cn", "shift@plant.cn", "zhao@county.gov.cn"]  # red: plant + county
        msg = got["li@plant.cn"]
        assert str(msg["Subject"]) == (
            "[earlywarn][RED] SZ-AL-0001 cw_pressure_ll — 冷却水压力低低 / Cooling-water pressure low-low")
        assert str(msg["To"]) == "安全员 Li <li@plant.cn>"
        body = msg.get_content()
        assert "报警编号 / alarm id: SZ-AL-0001:cw_pressure_ll:1" in body
        assert "当前值 / value: 0.13" in body
        assert "签收期限 / ack by: 2025-11-28T08:05:00.001Z (UTC)  2025-11-28T16:05:00.001+08:00 (UTC+8)" in body
        assert 'earlywarn alarms ack SZ-AL-0001:cw_pressure_ll:1 --note "li@plant.cn"' in body
        (link,) = re.findall(r"一键签收 / acknowledge: (\S+)", body)
        assert link.startswith(PUBLIC_URL + "/ack/")
        records = d.drain_records()
        assert {(r.channel, r.recipient, r.outcome, r.attempt) for r in records} == {
            ("email", rcpt, "delivered", 1) for rcpt in got}

        # Following the link from the received e-mail: it names the alarm, this recipient and this notice ...
        token = link.removeprefix(PUBLIC_URL + "/ack/")
        signer = LinkSigner(SECRET, TTL_MS)
        assert signer.verify(token, clock.now_ms()) == (a.alarm_id, "email:li@plant.cn", notice.notice_id)
        # ... one character changed, or past its expiry, is refused
        i = len(token) // 2
        with pytest.raises(LinkTampered):
            signer.verify(token[:i] + ("A" if token[i] != "A" else "B") + token[i + 1:], clock.now_ms())
        with pytest.raises(LinkExpired):
            signer.verify(token, notice.prepared_ms + TTL_MS + 1)
    finally:
        d.close()


def test_email_with_wrong_credentials_fails_without_retry(
    smtp_server: tuple[Controller, _Inbox], tls_files: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    controller, inbox = smtp_server
    monkeypatch.setenv("EW_IT_SMTP_USER", "ew")
    monkeypatch.setenv("EW_IT_SMTP_PASS", "wrong")
    smtp = SmtpConfig(host="127.0.0.1", port=controller.port, starttls=True,
                      username_env="EW_IT_SMTP_USER", password_env="EW_IT_SMTP_PASS", timeout_ms=5_000)
    clock = ManualClock(T0_MS)
    ctx = ssl.create_default_context(cafile=str(tls_files[0]))
    d = _dispatcher(clock, {"email": EmailChannel(smtp, clock=clock, ssl_context=ctx)})
    try:
        d.submit([_raised(_alarm(1))])
        d.flush(clock.advance(GROUP_WAIT_MS))
        assert d.wait_idle(WAIT_S)
        outcomes = {(r.recipient, r.outcome) for r in d.drain_records()}
        assert outcomes == {("li@plant.cn", "failed"), ("shift@plant.cn", "failed")}
        assert inbox.envelopes.empty()
    finally:
        d.close()


def test_email_connection_is_kept_and_replaced_when_the_server_went_away() -> None:
    """One worker sends a notice's e-mails over one connection; after the server restarts, the dead kept
    connection is replaced within the same attempt; after idle_ms unused it is not reused."""
    port = free_port()
    inbox = _Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    clock = ManualClock(T0_MS)
    channel = EmailChannel(SmtpConfig(host="127.0.0.1", port=port, username_env="", password_env=""),
                           clock=clock, idle_ms=60_000)
    d = Dispatcher({SITE.id: SITE}, NotifyConfig(group_wait_ms=GROUP_WAIT_MS), AlarmsConfig(),
                   channels={"email": channel}, log=InMemoryNotificationLog(), clock=clock,
                   executor=ThreadedExecutor(workers={"email": 1}))

    def notify(n: int) -> None:
        d.submit([_raised(_alarm(n))])
        d.flush(clock.advance(GROUP_WAIT_MS))
        assert d.wait_idle(WAIT_S)

    try:
        notify(1)  # two plant contacts: two e-mails, one connection
        assert channel.connections == 1
        controller.stop()
        controller = Controller(inbox, hostname="127.0.0.1", port=port)
        controller.start()
        notify(2)  # the kept connection died with the old server
        assert channel.connections == 2
        clock.advance(60_001)
        notify(3)  # idle too long: a fresh connection
        assert channel.connections == 3
        records = d.drain_records()
        assert {(r.outcome, r.attempt) for r in records} == {("delivered", 1)} and len(records) == 6
        assert inbox.envelopes.qsize() == 6
    finally:
        d.close()
        controller.stop()


# ------------------------------------------------------------------------------------------------ webhooks


class _Hook:
    """An HTTP webhook receiver on port 0 that fails its first `failures` POSTs with HTTP 500."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.bodies: list[dict] = []
        self.headers: list[dict] = []
        self.statuses: list[int] = []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                status = 500 if hook.failures > 0 else 200
                hook.failures -= 1 if hook.failures > 0 else 0
                hook.statuses.append(status)
                if status == 200:
                    hook.bodies.append(json.loads(body))
                    hook.headers.append(dict(self.headers))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def _run_retries(d: Dispatcher, clock: ManualClock, steps: int, step_ms: int = 200) -> None:
    """Step the clock through the backoff schedule, letting the workers finish each round."""
    for _ in range(steps):
        assert d.wait_idle(WAIT_S)
        d.flush(clock.advance(step_ms))
    assert d.wait_idle(WAIT_S)


def test_webhook_json_field_by_field_and_retries() -> None:
    with _Hook() as good, _Hook(failures=2) as flaky, _Hook(failures=10**6) as dead:
        clock = ManualClock(T0_MS)
        d = _dispatcher(clock, {"webhook": WebhookChannel(timeout_ms=2_000)},
                        urls=(good.url, flaky.url, dead.url), max_attempts=4)
        try:
            a, b = _alarm(1), _alarm(2, value=float("nan"))
            d.submit([_raised(a), _raised(b)])
            (notice,) = d.flush(clock.advance(GROUP_WAIT_MS))
            _run_retries(d, clock, steps=20)
            # the receiver got the JSON, field by field
            (doc,) = good.bodies
            assert doc["notice_id"] == notice.notice_id and good.headers[0]["X-Earlywarn-Notice-Id"] == notice.notice_id
            assert doc["site"] == "SZ-AL-0001" and doc["site_name"] == "吴江铸造"
            assert doc["reason"] == "raised" and doc["tier"] == "plant" and doc["severity"] == "red"
            assert doc["sent_at"] == "2025-11-28T08:00:10.000Z"
            assert doc["recipient"] == f"webhook:{good.url}"
            assert doc["ack_url"].startswith(PUBLIC_URL + "/ack/")
            signer = LinkSigner(SECRET, TTL_MS)
            assert signer.verify(doc["ack_url"].rsplit("/", 1)[1], T0_MS) == ("*", doc["recipient"], notice.notice_id)
            assert [x["alarm_id"] for x in doc["alarms"]] == [a.alarm_id, b.alarm_id]
            first, second = doc["alarms"]
            assert first["rule_id"] == "cw_pressure_ll" and first["tag"] == "cw_pressure_mpa"
            assert first["severity"] == "red" and first["state"] == "active_unack"
            assert first["raised_at"] == "2025-11-28T08:00:00.001Z" and first["value"] == pytest.approx(0.13)
            assert first["message"] == "冷却水压力低低 / Cooling-water pressure low-low"
            assert first["ack_deadline"] == "2025-11-28T08:05:00.001Z"
            assert signer.verify(first["ack_url"].rsplit("/", 1)[1], T0_MS) == (
                a.alarm_id, doc["recipient"], notice.notice_id)
            assert second["value"] is None
            # fails twice then succeeds: delivered after 3 attempts; the same document arrives
            assert flaky.statuses == [500, 500, 200]
            assert {k: v for k, v in flaky.bodies[0].items() if k not in ("recipient", "ack_url", "alarms")} == {
                k: v for k, v in doc.items() if k not in ("recipient", "ack_url", "alarms")}
            records = d.drain_records()
            per = lambda url: sorted({(r.attempt, r.outcome) for r in records if r.recipient == url})
            assert per(good.url) == [(1, "delivered")]
            assert per(flaky.url) == [(1, "retrying"), (2, "retrying"), (3, "delivered")]
            # always failing: a dead letter after max_attempts, and it held up nobody
            assert per(dead.url) == [(1, "retrying"), (2, "retrying"), (3, "retrying"), (4, "dead_letter")]
            assert dead.statuses == [500] * 4
            assert all("HTTP 500" in r.error for r in records if r.outcome != "delivered")
            assert len([r for r in records if r.recipient == flaky.url]) == 2 * 3  # one row per alarm per attempt
        finally:
            d.close()


def test_unreachable_or_silent_webhook_does_not_hold_others() -> None:
    """A webhook that accepts the connection and never answers times out on its own worker."""
    import socket

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    silent_url = f"http://127.0.0.1:{silent.getsockname()[1]}/hook"
    with _Hook() as good:
        clock = ManualClock(T0_MS)
        cfg_channels = {"webhook": WebhookChannel(timeout_ms=1_500)}
        d = _dispatcher(clock, cfg_channels, urls=(silent_url, good.url), max_attempts=1)
        try:
            for n in range(3):
                a = dataclasses.replace(_alarm(n), site=f"S{n}", alarm_id=f"S{n}:x")
                d.submit([_raised(a)])
            d.flush(clock.advance(GROUP_WAIT_MS))
            assert d.wait_idle(WAIT_S)
            assert len(good.bodies) == 3
            silent_records = [r for r in d.drain_records() if r.recipient == silent_url]
            assert {r.outcome for r in silent_records} == {"dead_letter"}
            assert all("timed out" in r.error for r in silent_records)
        finally:
            d.close()
            silent.close()


# ------------------------------------------------------------------------------------------------ MQTT


def _client(broker: Mosquitto, client_id: str) -> mqtt.Client:
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    c.connect(broker.host, broker.port)
    c.loop_start()
    return c


def test_mqtt_notice_on_the_site_topic(mosquitto: Mosquitto) -> None:
    got: queue.Queue = queue.Queue()
    subscribed = threading.Event()
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="it-notice-sub", protocol=mqtt.MQTTv5)
    sub.on_message = lambda c, u, m: got.put(m)
    sub.on_subscribe = lambda *args: subscribed.set()
    sub.on_connect = lambda c, u, f, rc, p: c.subscribe("ew/+/notices", qos=1)
    sub.connect(mosquitto.host, mosquitto.port)
    sub.loop_start()
    pub = _client(mosquitto, "it-notice-pub")
    try:
        assert subscribed.wait(WAIT_S)
        clock = ManualClock(T0_MS)
        d = _dispatcher(clock, {"mqtt": MqttChannel(pub.publish)})
        try:
            alarms = [_alarm(n) for n in range(50)]  # a flood: still one message
            d.submit([_raised(a) for a in alarms])
            (notice,) = d.flush(clock.advance(GROUP_WAIT_MS))
            assert d.wait_idle(WAIT_S)
            msg = got.get(timeout=WAIT_S)
            assert msg.topic == "ew/SZ-AL-0001/notices" and msg.qos == 1
            doc = json.loads(msg.payload)
            assert doc["notice_id"] == notice.notice_id and doc["site"] == "SZ-AL-0001"
            assert doc["reason"] == "raised" and doc["tier"] == "plant"
            assert doc["sent_at"] == "2025-11-28T08:00:10.000Z"
            assert doc["recipient"] == "mqtt:ew/SZ-AL-0001/notices"
            assert doc["ack_url"].startswith(PUBLIC_URL + "/ack/")
            assert [x["alarm_id"] for x in doc["alarms"]] == [a.alarm_id for a in alarms]
            x = doc["alarms"][7]
            assert (x["rule_id"], x["tag"], x["severity"], x["state"], x["raised_at"], x["message"]) == (
                "cw_pressure_ll", "cw_pressure_mpa", "red", "active_unack", "2025-11-28T08:00:00.007Z",
                "冷却水压力低低 / Cooling-water pressure low-low")
            assert x["value"] == pytest.approx(0.19)
            with pytest.raises(queue.Empty):
                got.get(timeout=0.3)  # one message per notice, not per alarm
            assert {(r.channel, r.outcome) for r in d.drain_records()} == {("mqtt", "delivered")}
        finally:
            d.close()
    finally:
        for c in (sub, pub):
            c.loop_stop()
            c.disconnect()
