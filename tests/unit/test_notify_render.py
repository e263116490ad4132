"""The e-mail a supervisor reads, the MQTT channel's error handling, the retry schedule: no servers."""

from __future__ import annotations

import pytest

from earlywarn.clock import ManualClock
from earlywarn.config import SmtpConfig, WebhookConfig
from earlywarn.model import Alarm, AlarmState, Severity, Tier
from earlywarn.notify import DeliveryError, EmailChannel, MqttChannel, RetryPolicy, WebhookChannel
from earlywarn.notify.notice import Notice, NoticeAlarm, NoticeReason, Recipient, email_subject

T0_MS = 1_764_316_800_000  # 2025-11-28T08:00:00Z = 16:00 UTC+8
ALICE = Recipient("email", "li@plant.cn", "安全员 Li", Tier.PLANT)


def _alarm(n: int, severity: Severity = Severity.RED, value: float = 0.12) -> Alarm:
    return Alarm(alarm_id=f"SZ-AL-0001:cw_pressure_ll:{n}", site="SZ-AL-0001", plant="aluminum",
                 district="wujiang", tag="cw_pressure_mpa", rule_id="cw_pressure_ll", severity=severity,
                 state=AlarmState.ACTIVE_UNACK, raised_at_ms=T0_MS,
                 message="冷却水压力低低 / Cooling-water pressure low-low", value=value)


def _notice(alarms: list[Alarm], reason: NoticeReason = NoticeReason.RAISED, tier: Tier = Tier.PLANT) -> Notice:
    links = {ALICE.key: {a.alarm_id: f"https://ew.example.cn/ack/tok{i}" for i, a in enumerate(alarms)}}
    links[ALICE.key]["*"] = "https://ew.example.cn/ack/all"
    return Notice("n-1", "SZ-AL-0001", "吴江铸造", reason, tier,
                  tuple(NoticeAlarm(a, T0_MS, T0_MS + 300_000) for a in alarms), T0_MS, T0_MS + 10_000,
                  (ALICE,), links)


def test_subject_single_alarm_matches_the_house_example() -> None:
    assert email_subject(_notice([_alarm(1)])) == (
        "[earlywarn][RED] SZ-AL-0001 cw_pressure_ll — 冷却水压力低低 / Cooling-water pressure low-low")


def test_subject_for_groups_and_other_reasons() -> None:
    s = email_subject(_notice([_alarm(1), _alarm(2, Severity.YELLOW)], NoticeReason.ESCALATED, Tier.COUNTY))
    assert s.startswith("[earlywarn][RED][escalated:county] SZ-AL-0001 2 alarms / 条报警: cw_pressure_ll")


def test_email_body_bilingual_with_everything_needed_to_answer() -> None:
    ch = EmailChannel(SmtpConfig(host="smtp.test", sender="ew@bureau.cn"), clock=ManualClock(T0_MS + 10_000))
    msg = ch.message(_notice([_alarm(1), _alarm(2, value=float("nan"))]), ALICE)
    assert str(msg["To"]) == "安全员 Li <li@plant.cn>"
    assert msg["From"] == "ew@bureau.cn" and msg["X-Earlywarn-Notice-Id"] == "n-1"
    body = msg.get_content()
    for needle in [
        "报警 / raised: SZ-AL-0001 吴江铸造",
        "报警编号 / alarm id: SZ-AL-0001:cw_pressure_ll:1",
        "当前值 / value: 0.12", "当前值 / value: —",
        "冷却水压力低低 / Cooling-water pressure low-low",
        "报警时间 / raised: 2025-11-28T08:00:00.000Z (UTC)  2025-11-28T16:00:00.000+08:00 (UTC+8)",
        "签收期限 / ack by: 2025-11-28T08:05:00.000Z (UTC)  2025-11-28T16:05:00.000+08:00 (UTC+8)",
        "一键签收 / acknowledge: https://ew.example.cn/ack/tok0",
        "一键签收 / acknowledge: https://ew.example.cn/ack/tok1",
        'earlywarn alarms ack SZ-AL-0001:cw_pressure_ll:1 --note "li@plant.cn"',
        "全部签收 / acknowledge all 2: https://ew.example.cn/ack/all",
    ]:
        assert needle in body, needle
    assert "OVERDUE" not in body
    late = EmailChannel(SmtpConfig(host="smtp.test"), clock=ManualClock(T0_MS + 400_000))
    assert "已超时 / OVERDUE" in late.message(_notice([_alarm(1)]), ALICE).get_content()


def test_email_without_host_is_an_unrecoverable_failure() -> None:
    with pytest.raises(DeliveryError) as e:
        EmailChannel(SmtpConfig(), clock=ManualClock(0)).send(_notice([_alarm(1)]), ALICE)
    assert not e.value.recoverable


class _Info:
    def __init__(self, rc: int) -> None:
        self.rc = rc


@pytest.mark.parametrize(("rc", "fails"), [(0, False), (4, False), (15, True), (7, True)])
def test_mqtt_return_codes(rc: int, fails: bool) -> None:
    """rc 4 (no connection) at QoS 1 is queued by paho for the reconnect: retrying would send it twice."""
    published: list[tuple[str, bytes, int]] = []

    def publish(topic: str, payload: bytes, qos: int) -> _Info:
        published.append((topic, payload, qos))
        return _Info(rc)

    ch = MqttChannel(publish)
    mq = Recipient("mqtt", "ew/SZ-AL-0001/notices")
    if fails:
        with pytest.raises(DeliveryError) as e:
            ch.send(_notice([_alarm(1)]), mq)
        assert e.value.recoverable
    else:
        ch.send(_notice([_alarm(1)]), mq)
    assert published[0][0] == "ew/SZ-AL-0001/notices" and published[0][2] == 1


def test_webhook_bad_url_is_unrecoverable_and_refused_connection_is_recoverable() -> None:
    ch = WebhookChannel(timeout_ms=1000)
    with pytest.raises(DeliveryError) as bad:
        ch.send(_notice([_alarm(1)]), Recipient("webhook", "not a url"))
    assert not bad.value.recoverable
    with pytest.raises(DeliveryError) as refused:  # port 9 on loopback: nothing listens (refused at once)
        ch.send(_notice([_alarm(1)]), Recipient("webhook", "http://127.0.0.1:9/hook"))
    assert refused.value.recoverable


def test_backoff_schedule() -> None:
    p = RetryPolicy.from_config(WebhookConfig(max_attempts=6, backoff_initial_ms=500, backoff_max_ms=3000))
    assert [p.backoff_ms(n) for n in range(1, 7)] == [500, 1000, 2000, 3000, 3000, 3000]
