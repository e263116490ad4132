"""Channels: MQTT, webhook, e-mail (SMTP), the log, and an in-memory one for tests and benchmarks.

A channel delivers one notice to one recipient and raises DeliveryError on failure, saying whether a retry
could help (`recoverable`). Channels never retry or sleep themselves: the Dispatcher schedules retries on its
clock, so a slow or failing endpoint holds only its own delivery.
"""

from __future__ import annotations

import logging
import os
import smtplib
import ssl
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from email.message import EmailMessage
from email.utils import formataddr, make_msgid
from typing import Any, Protocol

from earlywarn.clock import Clock
from earlywarn.config import SmtpConfig

from .httpconn import KeepAlivePoster, Target, parse_target
from .notice import Notice, Recipient, email_body, email_subject, notice_bytes

log = logging.getLogger("earlywarn.notify")

#: paho's MQTT_ERR_NO_CONN: a QoS 1 publish while disconnected is queued in the client and sent on reconnect.
_MQTT_ERR_SUCCESS = 0
_MQTT_ERR_NO_CONN = 4


class DeliveryError(Exception):
    """A delivery failed. `recoverable`: a later attempt may succeed (timeouts, 5xx, connection refused)."""

    def __init__(self, message: str, *, recoverable: bool) -> None:
        super().__init__(message)
        self.recoverable = recoverable


class Channel(Protocol):
    """Delivers one notice to one recipient; raises DeliveryError on failure."""

    name: str

    def send(self, notice: Notice, recipient: Recipient) -> None: ...


def notices_topic(site: str) -> str:
    """The MQTT topic of a site's notices (product.md §7)."""
    return f"ew/{site}/notices"


class MqttChannel:
    """Publishes the notice JSON at QoS 1 through a given `publish(topic, payload, qos)` (paho's Client.publish)."""

    name = "mqtt"

    def __init__(self, publish: Callable[[str, bytes, int], Any], qos: int = 1) -> None:
        self._publish = publish
        self.qos = qos

    def send(self, notice: Notice, recipient: Recipient) -> None:
        try:
            info = self._publish(recipient.address, notice_bytes(notice, recipient), self.qos)
        except (OSError, RuntimeError) as e:
            raise DeliveryError(f"mqtt publish failed: {e}", recoverable=True) from e
        except ValueError as e:  # bad topic or payload too large: retrying will not help
            raise DeliveryError(f"mqtt publish refused: {e}", recoverable=False) from e
        rc = getattr(info, "rc", _MQTT_ERR_SUCCESS)
        # NO_CONN at QoS 1 means "queued for the reconnect" in paho 2: retrying would publish it twice.
        if rc not in (_MQTT_ERR_SUCCESS, _MQTT_ERR_NO_CONN):
            raise DeliveryError(f"mqtt publish rc={int(rc)}", recoverable=True)


class WebhookChannel:
    """HTTP POST of the notice JSON. 2xx = delivered; 408, 425, 429, 5xx and network errors are recoverable.

    Each worker thread keeps one HTTP/1.1 connection per origin open between POSTs (httpconn.py, over
    `http.client`): a new connection per POST cost ~0.3 ms of CPU, which a flood's hundreds of deliveries a
    second take from the engine thread through the GIL. A kept connection the server has closed is replaced
    within the same attempt. URLs behind a proxy from the environment or with credentials in them go through
    urllib as before (`keep_alive=False`: always). Redirects (3xx) are not followed: a failure, not retried.
    """

    name = "webhook"

    def __init__(
        self,
        timeout_ms: int,
        headers: Mapping[str, str] | None = None,
        *,
        keep_alive: bool = True,
        idle_ms: int = 4_000,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.timeout_s = timeout_ms / 1000
        merged = {"Content-Type": "application/json; charset=utf-8", "User-Agent": "earlywarn-notify/1"}
        merged.update({k.title(): v for k, v in (headers or {}).items()})
        self._headers = merged
        for k, v in merged.items():
            if any(c in k + v for c in "\r\n\0") or not k or any(c in k for c in " :\t"):
                raise ValueError(f"bad webhook header {k!r}")
        self._poster = KeepAlivePoster(self.timeout_s, idle_s=idle_ms / 1000, ssl_context=ssl_context) \
            if keep_alive else None
        self._targets: dict[str, Target | None] = {}

    @property
    def connections(self) -> int:
        """TCP connections opened by the keep-alive path so far (tests, diagnostics)."""
        return self._poster.connections if self._poster is not None else 0

    def send(self, notice: Notice, recipient: Recipient) -> None:
        body = notice_bytes(notice, recipient)
        url = recipient.address
        if self._poster is None:
            return self._send_urllib(notice, url, body)
        try:
            target = self._targets[url]
        except KeyError:
            try:
                target = parse_target(url)
            except ValueError as e:  # malformed URL
                raise DeliveryError(f"webhook URL refused: {e}", recoverable=False) from None
            self._targets[url] = target
        if target is None:
            return self._send_urllib(notice, url, body)
        headers = dict(self._headers)
        headers["X-Earlywarn-Notice-Id"] = notice.notice_id  # receivers de-duplicate retries on it
        try:
            status, reason = self._poster.post(target, headers, body)
        except OSError as e:  # refused, reset, timed out, TLS, a garbled answer
            raise DeliveryError(f"webhook unreachable: {e}", recoverable=True) from None
        if 200 <= status < 300:
            return None
        if 300 <= status < 400:
            raise DeliveryError(f"webhook HTTP {status} {reason} (redirects are not followed)", recoverable=False)
        recoverable = status in (408, 425, 429) or status >= 500
        raise DeliveryError(f"webhook HTTP {status} {reason}", recoverable=recoverable)

    def _send_urllib(self, notice: Notice, url: str, body: bytes) -> None:
        """One connection per POST through urllib (proxies from the environment, credentials in the URL)."""
        headers = dict(self._headers)
        headers["X-Earlywarn-Notice-Id"] = notice.notice_id  # receivers de-duplicate retries on it
        try:
            req = urllib.request.Request(url, data=body, headers=headers, method="POST")
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                resp.read(65_536)
        except urllib.error.HTTPError as e:
            recoverable = e.code in (408, 425, 429) or e.code >= 500
            raise DeliveryError(f"webhook HTTP {e.code} {e.reason}", recoverable=recoverable) from None
        except (urllib.error.URLError, OSError, TimeoutError) as e:
            reason = getattr(e, "reason", e)
            raise DeliveryError(f"webhook unreachable: {reason}", recoverable=True) from None
        except ValueError as e:  # malformed URL
            raise DeliveryError(f"webhook URL refused: {e}", recoverable=False) from None

    def close(self) -> None:
        """Close this thread's kept connections (workers' connections close with their threads)."""
        if self._poster is not None:
            self._poster.close()


class EmailChannel:
    """Plain-text e-mail over SMTP; STARTTLS and AUTH when configured, credentials read from env at connect.

    Each worker thread keeps its SMTP connection open between e-mails (a flood sends thousands; a TLS
    handshake and AUTH per e-mail would cap a worker at a few per second) and drops it after `idle_ms`
    without use. A kept connection the server has closed meanwhile is replaced at once, within the same
    attempt.
    """

    name = "email"

    def __init__(
        self,
        config: SmtpConfig,
        *,
        clock: Clock,
        env: Mapping[str, str] | None = None,
        ssl_context: ssl.SSLContext | None = None,
        idle_ms: int = 30_000,
    ) -> None:
        self.config = config
        self._clock = clock
        self._env = env if env is not None else os.environ
        self._ssl_context = ssl_context
        self.idle_ms = idle_ms
        self._local = threading.local()  # per worker: (smtplib.SMTP, last used ms)
        #: connections opened so far (for tests and diagnostics)
        self.connections = 0

    def message(self, notice: Notice, recipient: Recipient) -> EmailMessage:
        """The e-mail for one recipient (exposed so tests can look at it without a server)."""
        msg = EmailMessage()
        msg["Subject"] = email_subject(notice)
        msg["From"] = self.config.sender
        msg["To"] = formataddr((recipient.name, recipient.address)) if recipient.name else recipient.address
        msg["Message-ID"] = make_msgid(idstring=notice.notice_id, domain="earlywarn")
        msg["X-Earlywarn-Notice-Id"] = notice.notice_id
        msg.set_content(email_body(notice, recipient, self._clock.now_ms()), charset="utf-8")
        return msg

    def _connect(self) -> smtplib.SMTP:
        cfg = self.config
        user = self._env.get(cfg.username_env, "") if cfg.username_env else ""
        password = self._env.get(cfg.password_env, "") if cfg.password_env else ""
        smtp = smtplib.SMTP(cfg.host, cfg.port, timeout=cfg.timeout_ms / 1000)
        try:
            if cfg.starttls:
                smtp.starttls(context=self._ssl_context or ssl.create_default_context())
            if user:
                smtp.login(user, password)
        except BaseException:
            _quietly_close(smtp)
            raise
        self.connections += 1
        return smtp

    def _kept(self) -> smtplib.SMTP | None:
        kept = getattr(self._local, "smtp", None)
        if kept is None:
            return None
        smtp, last_ms = kept
        if self._clock.now_ms() - last_ms > self.idle_ms:
            self._drop()
            return None
        return smtp  # type: ignore[no-any-return]

    def _drop(self) -> None:
        kept = getattr(self._local, "smtp", None)
        self._local.smtp = None
        if kept is not None:
            _quietly_close(kept[0])

    def send(self, notice: Notice, recipient: Recipient) -> None:
        cfg = self.config
        if not cfg.host:
            raise DeliveryError("smtp host not configured", recoverable=False)
        msg = self.message(notice, recipient)
        try:
            smtp = self._kept()
            sent = False
            if smtp is not None:
                try:
                    smtp.send_message(msg, from_addr=cfg.sender, to_addrs=[recipient.address])
                    sent = True
                except (smtplib.SMTPServerDisconnected, ConnectionError, ssl.SSLError):
                    self._drop()  # the server closed the kept connection meanwhile: one fresh connection
            if not sent:
                smtp = self._connect()
                self._local.smtp = (smtp, self._clock.now_ms())
                smtp.send_message(msg, from_addr=cfg.sender, to_addrs=[recipient.address])
            self._local.smtp = (smtp, self._clock.now_ms())
        except smtplib.SMTPRecipientsRefused as e:
            raise DeliveryError(f"smtp refused recipient: {e.recipients}", recoverable=False) from None
        except smtplib.SMTPAuthenticationError as e:
            self._drop()
            raise DeliveryError(f"smtp auth failed: {e.smtp_code}", recoverable=False) from None
        except smtplib.SMTPResponseException as e:
            self._drop()
            # 4xx is the server saying "try later"; 5xx is permanent.
            raise DeliveryError(f"smtp {e.smtp_code} {e.smtp_error!r}", recoverable=e.smtp_code < 500) from None
        except (smtplib.SMTPException, OSError) as e:  # OSError covers timeouts and refusals
            self._drop()
            raise DeliveryError(f"smtp unavailable: {e}", recoverable=True) from None

    def close(self) -> None:
        """Close this thread's kept connection (workers' connections close with their threads)."""
        self._drop()


def _quietly_close(smtp: smtplib.SMTP) -> None:
    try:
        smtp.quit()
    except (smtplib.SMTPException, OSError):
        smtp.close()


class LogChannel:
    """One log line per notice (the `log` channel): who, what, why; never the links (they are credentials)."""

    name = "log"

    def __init__(self, logger: logging.Logger | None = None, level: int = logging.WARNING) -> None:
        self._log = logger or log
        self._level = level

    def send(self, notice: Notice, recipient: Recipient) -> None:
        ids = ",".join(na.alarm.alarm_id for na in notice.alarms[:10])
        more = f" (+{len(notice.alarms) - 10})" if len(notice.alarms) > 10 else ""
        self._log.log(
            self._level,
            "notice %s site=%s reason=%s tier=%s severity=%s alarms=%d [%s%s]",
            notice.notice_id, notice.site, notice.reason.value, notice.tier.label, notice.severity,
            len(notice.alarms), ids, more,
        )


class MemoryChannel:
    """Keeps what it is given; renders the JSON when `render` so benchmarks pay the real serialization cost."""

    def __init__(self, name: str, *, render: bool = True) -> None:
        self.name = name
        self.render = render
        self._lock = threading.Lock()
        self.sent: list[tuple[Notice, Recipient]] = []
        self.payloads: list[bytes] = []

    def send(self, notice: Notice, recipient: Recipient) -> None:
        payload = notice_bytes(notice, recipient) if self.render else b""
        with self._lock:
            self.sent.append((notice, recipient))
            if self.render:
                self.payloads.append(payload)
