"""Signed, expiring acknowledge links (call and response, 叫应).

A notice carries, per alarm and per recipient, a link `{public_url}/ack/{token}`. The token binds the alarm,
the recipient and the notice, and expires after `ttl_ms`; it is an HMAC-SHA256 over its own payload, so the
HTTP route that consumes it needs nothing but the secret to trust it (no lookup table of issued links).

Token form: `<payload>.<mac>`, both base64url without padding; payload is compact JSON
`[1, alarm_id, recipient, notice_id, expires_ms]`. The MAC is computed over the payload *text* and compared as
text, so every character of the token is covered: base64 has spare bits in its last character, and comparing
decoded bytes would let a one-character change there slip through.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from typing import NamedTuple

import msgspec

from earlywarn.errors import ConfigError, EarlywarnError

_VERSION = 1
#: A secret shorter than this is refused: the links are the only thing between a stranger and an ack.
MIN_SECRET_BYTES = 16
#: The alarm id a notice-wide link carries: "acknowledge every alarm listed in this notice".
ALL_ALARMS = "*"


class LinkError(EarlywarnError):
    """An acknowledge link was refused."""


class LinkTampered(LinkError):
    """The token is malformed or its signature does not match (changed, or signed with another secret)."""


class LinkExpired(LinkError):
    """The token is genuine but past its expiry."""


class AckLink(NamedTuple):
    """What a verified token says: who may acknowledge which alarm, from which notice."""

    alarm_id: str
    recipient: str
    notice_id: str


# msgspec rather than json: a flood signs one token per alarm per recipient, and this is the hot part of it.
_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class LinkSigner:
    """Makes and verifies acknowledge tokens.

    Example:
        >>> s = LinkSigner(b"0123456789abcdef0123456789abcdef", ttl_ms=60_000)
        >>> t = s.make("A1", "ops@example.cn", "n-1", now_ms=0)
        >>> s.verify(t, now_ms=59_999)
        AckLink(alarm_id='A1', recipient='ops@example.cn', notice_id='n-1')
    """

    def __init__(self, secret: bytes, ttl_ms: int) -> None:
        if len(secret) < MIN_SECRET_BYTES:
            msg = f"a link secret of at least {MIN_SECRET_BYTES} bytes (got {len(secret)})"
            raise ValueError(msg)
        if ttl_ms <= 0:
            msg = f"a positive link ttl_ms (got {ttl_ms})"
            raise ValueError(msg)
        self._secret = bytes(secret)
        self.ttl_ms = int(ttl_ms)

    @classmethod
    def from_env(cls, env_name: str, ttl_ms: int) -> LinkSigner:
        """Read the secret from the environment variable `env_name` (HttpConfig.link_secret_env) now."""
        value = os.environ.get(env_name, "") if env_name else ""
        if len(value.encode("utf-8")) < MIN_SECRET_BYTES:
            raise ConfigError(
                "(environment)", env_name or "http.link_secret_env",
                f"a link secret of at least {MIN_SECRET_BYTES} bytes in ${env_name}",
            )
        return cls(value.encode("utf-8"), ttl_ms)

    def _mac(self, payload_text: str) -> str:
        return _b64(hmac.new(self._secret, payload_text.encode("ascii"), hashlib.sha256).digest())

    def make(self, alarm_id: str, recipient: str, notice_id: str, now_ms: int) -> str:
        """A token valid until `now_ms + ttl_ms` (inclusive)."""
        body = _encode([_VERSION, alarm_id, recipient, notice_id, int(now_ms) + self.ttl_ms])
        payload_text = _b64(body)
        return f"{payload_text}.{self._mac(payload_text)}"

    def verify(self, token: str, now_ms: int) -> AckLink:
        """The (alarm_id, recipient, notice_id) of a genuine, unexpired token; raises LinkTampered / LinkExpired."""
        if not isinstance(token, str) or token.count(".") != 1:
            msg = "malformed acknowledge link"
            raise LinkTampered(msg)
        payload_text, mac_text = token.split(".")
        try:
            payload_text.encode("ascii")
            mac_text.encode("ascii")
        except UnicodeEncodeError:
            msg = "malformed acknowledge link"
            raise LinkTampered(msg) from None
        # Constant-time compare of the MAC text, before anything in the payload is trusted.
        if not hmac.compare_digest(self._mac(payload_text), mac_text):
            msg = "acknowledge link signature does not match"
            raise LinkTampered(msg)
        try:
            fields = _decode(_unb64(payload_text))
            version, alarm_id, recipient, notice_id, expires_ms = fields
        except (ValueError, TypeError, binascii.Error, UnicodeDecodeError, msgspec.DecodeError):
            msg = "malformed acknowledge link payload"
            raise LinkTampered(msg) from None
        if version != _VERSION or not all(isinstance(x, str) for x in (alarm_id, recipient, notice_id)) or (
            not isinstance(expires_ms, int)
        ):
            msg = "unsupported acknowledge link"
            raise LinkTampered(msg)
        if now_ms > expires_ms:
            msg = f"acknowledge link expired {now_ms - expires_ms} ms ago"
            raise LinkExpired(msg)
        return AckLink(alarm_id, recipient, notice_id)


def ack_url(public_url: str, token: str) -> str:
    """`{public_url}/ack/{token}` (a trailing slash on public_url is tolerated)."""
    return f"{public_url.rstrip('/')}/ack/{token}"
