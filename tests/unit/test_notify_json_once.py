"""notice_bytes serializes a notice once and splices each recipient's part in: byte for byte what encoding
notice_json per recipient gives, with and without acknowledge links."""

from __future__ import annotations

import json
import random

import msgspec
import pytest

from earlywarn.clock import ManualClock
from earlywarn.config import AlarmsConfig, NotifyConfig, WebhookConfig
from earlywarn.model import Alarm, AlarmEvent, AlarmState, Contact, EventKind, Severity, Site, Tier
from earlywarn.notify import Dispatcher, InMemoryNotificationLog, LinkSigner, MemoryChannel, Recipient
from earlywarn.notify.notice import notice_bytes, notice_json

T0_MS = 1_764_316_800_000


@pytest.mark.parametrize("public_url", ["", "https://ew.example.cn"])
def test_spliced_json_is_byte_identical(public_url: str) -> None:
    rng = random.Random(7)
    sites = {f"S{i}": Site(id=f"S{i}", name=f"厂 {i}", plant="p", district="d", contacts=(
        Contact(Tier.PLANT, "officer", email=f"o@S{i}.cn", webhook=f"http://hooks/S{i}"),
        Contact(Tier.COUNTY, "county", email="c@county.cn"))) for i in range(5)}
    items = []
    for n in range(60):
        site = f"S{rng.randrange(5)}"
        value = rng.choice([float("nan"), float("inf"), rng.uniform(-5, 5), 0.0])
        a = Alarm(alarm_id=f"{site}:r{n}", site=site, plant="p", district="d", tag=f"t{n}", rule_id=f"r{n % 3}",
                  severity=rng.choice(list(Severity)), state=AlarmState.ACTIVE_UNACK, raised_at_ms=T0_MS + n,
                  message='压力 "低低" \\ / low-low\n', value=value)
        items.append((a, AlarmEvent(a.alarm_id, a.raised_at_ms, EventKind.RAISED)))
    channels = {n: MemoryChannel(n) for n in ("mqtt", "webhook", "email", "log")}
    d = Dispatcher(sites, NotifyConfig(group_wait_ms=1_000, webhook=WebhookConfig(urls=("http://bureau",))),
                   AlarmsConfig(red_immediate_tiers=("plant", "county")), channels=channels,
                   log=InMemoryNotificationLog(), clock=ManualClock(T0_MS),
                   link_signer=LinkSigner(b"x" * 32, 3_600_000), public_url=public_url)
    d.submit(items)
    notices = d.flush(T0_MS + 5_000)
    assert notices and any(len(n.alarms) > 1 for n in notices)
    checked = 0
    for notice in notices:
        for r in (*notice.recipients, Recipient("webhook", "http://not-a-recipient/")):
            got = notice_bytes(notice, r)
            assert got == msgspec.json.encode(notice_json(notice, r))
            assert json.loads(got)["recipient"] == r.key
            checked += 1
    assert checked > len(notices)
    if public_url:
        assert any("ack_url" in json.loads(notice_bytes(n, r)) for n in notices for r in n.recipients)
