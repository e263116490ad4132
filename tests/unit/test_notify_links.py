"""Acknowledge links: a genuine token verifies; any changed character, another secret or expiry is refused."""

from __future__ import annotations

import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from earlywarn.errors import ConfigError
from earlywarn.notify.links import AckLink, LinkExpired, LinkSigner, LinkTampered, ack_url

SECRET = b"test-secret-0123456789abcdef!!"
TTL_MS = 24 * 3_600_000
T0_MS = 1_764_316_800_000  # 2025-11-28T08:00:00Z
B64URL = string.ascii_letters + string.digits + "-_"


@pytest.fixture
def signer() -> LinkSigner:
    return LinkSigner(SECRET, TTL_MS)


def test_roundtrip(signer: LinkSigner) -> None:
    token = signer.make("SZ-AL-0001:cw_pressure_ll:1", "email:ops@plant.cn", "n-abc", T0_MS)
    assert signer.verify(token, T0_MS) == AckLink("SZ-AL-0001:cw_pressure_ll:1", "email:ops@plant.cn", "n-abc")


def test_every_single_character_change_is_refused(signer: LinkSigner) -> None:
    token = signer.make("A-17", "email:张三@example.cn", "n-1", T0_MS)
    for i, ch in enumerate(token):
        for repl in {B64URL[(B64URL.find(ch) + 1) % len(B64URL)], "A" if ch != "A" else "B", "."} - {ch}:
            bad = token[:i] + repl + token[i + 1 :]
            with pytest.raises(LinkTampered):
                signer.verify(bad, T0_MS)


def test_last_character_spare_bits_are_covered(signer: LinkSigner) -> None:
    """base64's last character has unused bits; a decoder that ignores them must not let a change through."""
    token = signer.make("A-1", "r", "n", T0_MS)
    last = token[-1]
    sibling = B64URL[B64URL.index(last) ^ 1]  # differs only in the lowest (spare) bit
    with pytest.raises(LinkTampered):
        signer.verify(token[:-1] + sibling, T0_MS)


def test_expiry_boundary(signer: LinkSigner) -> None:
    token = signer.make("A-1", "r", "n", T0_MS)
    assert signer.verify(token, T0_MS + TTL_MS).alarm_id == "A-1"
    with pytest.raises(LinkExpired):
        signer.verify(token, T0_MS + TTL_MS + 1)


def test_other_secret_is_refused(signer: LinkSigner) -> None:
    token = LinkSigner(b"another-secret-0123456789abcdef", TTL_MS).make("A-1", "r", "n", T0_MS)
    with pytest.raises(LinkTampered):
        signer.verify(token, T0_MS)


@pytest.mark.parametrize("token", ["", ".", "abc", "a.b.c", "é.é", "eyJ9.xx", "..", "abc."])
def test_malformed_is_refused(signer: LinkSigner, token: str) -> None:
    with pytest.raises(LinkTampered):
        signer.verify(token, T0_MS)


def test_genuine_mac_over_bad_payload_is_refused(signer: LinkSigner) -> None:
    """A correctly signed payload that is not a v1 token (e.g. from a future format) is refused too."""
    import base64

    payload = base64.urlsafe_b64encode(b'[2,"a","r","n",1]').rstrip(b"=").decode()
    token = f"{payload}.{signer._mac(payload)}"
    with pytest.raises(LinkTampered):
        signer.verify(token, 0)


def test_short_secret_and_bad_ttl_refused() -> None:
    with pytest.raises(ValueError, match="at least 16 bytes"):
        LinkSigner(b"short", TTL_MS)
    with pytest.raises(ValueError, match="ttl"):
        LinkSigner(SECRET, 0)


def test_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EW_TEST_LINK_SECRET", SECRET.decode())
    s = LinkSigner.from_env("EW_TEST_LINK_SECRET", TTL_MS)
    assert s.verify(s.make("a", "r", "n", 0), 0).alarm_id == "a"
    monkeypatch.delenv("EW_TEST_LINK_SECRET")
    with pytest.raises(ConfigError, match="EW_TEST_LINK_SECRET"):
        LinkSigner.from_env("EW_TEST_LINK_SECRET", TTL_MS)


def test_url_form() -> None:
    assert ack_url("https://ew.example.cn/", "tok.mac") == "https://ew.example.cn/ack/tok.mac"
    assert ack_url("https://ew.example.cn", "tok.mac") == "https://ew.example.cn/ack/tok.mac"


@given(st.text(), st.text(), st.text(), st.integers(0, 2**45))
def test_roundtrip_any_text(alarm_id: str, recipient: str, notice_id: str, now_ms: int) -> None:
    s = LinkSigner(SECRET, 1000)
    token = s.make(alarm_id, recipient, notice_id, now_ms)
    assert "/" not in token and "?" not in token  # fits in a URL path segment as is
    assert s.verify(token, now_ms + 1000) == (alarm_id, recipient, notice_id)
