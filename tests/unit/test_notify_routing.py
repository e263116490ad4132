"""Routing and the notify/skip decision, as tables (style.md (d) example 2)."""

from __future__ import annotations

import pytest

from earlywarn.errors import ConfigError
from earlywarn.model import Alarm, AlarmState, Contact, EventKind, Severity, Site, Tier
from earlywarn.notify.notice import NoticeReason, Recipient
from earlywarn.notify.routing import Decision, audience, contact_tiers, decide, parse_tiers, recipients

P, T, C, Y = Tier.PLANT, Tier.TOWNSHIP, Tier.COUNTY, Tier.CITY
NOW_MS = 1_000_000


def _alarm(severity: Severity = Severity.RED, tier: Tier = P, state: AlarmState = AlarmState.ACTIVE_UNACK,
           **kw: object) -> Alarm:
    return Alarm(alarm_id="A-1", site="S1", plant="aluminum", district="wj", tag="cw_pressure_mpa",
                 rule_id="cw_pressure_ll", severity=severity, state=state, raised_at_ms=0, escalation_tier=tier,
                 **kw)  # type: ignore[arg-type]


FULL = Site(
    id="S1", name="Casting plant", plant="aluminum", district="wj",
    contacts=(
        Contact(P, "plant officer", email="plant@s1.cn", webhook="http://hooks/plant"),
        Contact(P, "shift lead", email="shift@s1.cn"),
        Contact(T, "township", email="town@wj.gov.cn"),
        Contact(C, "county", email="county@gov.cn", webhook="http://hooks/county"),
        Contact(Y, "city", email="city@gov.cn"),
    ),
)
NO_TOWNSHIP = Site(id="S2", name="x", plant="dust", district="d",
                   contacts=(Contact(P, "p", email="p@s2.cn"), Contact(C, "c", email="c@gov.cn")))


@pytest.mark.parametrize(
    ("kind", "alarm_kw", "expected"),
    [
        (EventKind.RAISED, {}, Decision.NOTIFY),
        (EventKind.REACTIVATED, {}, Decision.NOTIFY),
        (EventKind.ESCALATED, {}, Decision.NOTIFY),
        (EventKind.REMINDED, {}, Decision.NOTIFY),
        (EventKind.CLEARED, {}, Decision.NOT_A_NOTICE),
        (EventKind.ACKED, {}, Decision.NOT_A_NOTICE),
        (EventKind.SHELVED, {}, Decision.NOT_A_NOTICE),
        (EventKind.RAISED, {"suppressed": True}, Decision.SUPPRESSED),
        (EventKind.REMINDED, {"suppressed": True}, Decision.SUPPRESSED),
        (EventKind.RAISED, {"shelved_until_ms": NOW_MS + 1}, Decision.SHELVED),
        (EventKind.ESCALATED, {"shelved_until_ms": NOW_MS + 1}, Decision.SHELVED),
        (EventKind.RAISED, {"shelved_until_ms": NOW_MS}, Decision.NOTIFY),  # the shelve has run out
        (EventKind.RAISED, {"state": AlarmState.CLOSED}, Decision.CLOSED),
        (EventKind.RAISED, {"state": AlarmState.ACTIVE_ACK}, Decision.NOTIFY),  # raised: inform anyway
        (EventKind.ESCALATED, {"state": AlarmState.CLEARED_ACK}, Decision.NOTIFY),  # close deadline missed
        (EventKind.REMINDED, {"state": AlarmState.ACTIVE_ACK}, Decision.ACKED),
        (EventKind.REMINDED, {"state": AlarmState.CLEARED_ACK}, Decision.ACKED),
        (EventKind.REMINDED, {"state": AlarmState.CLEARED_UNACK}, Decision.NOTIFY),  # still unanswered
    ],
)
def test_decide(kind: EventKind, alarm_kw: dict, expected: Decision) -> None:
    assert decide(_alarm(**alarm_kw), kind, NOW_MS) is expected


RED_IMMEDIATE = frozenset({P, C})


@pytest.mark.parametrize(
    ("severity", "tier", "reason", "expected"),
    [
        (Severity.YELLOW, P, NoticeReason.RAISED, {P}),
        (Severity.ORANGE, P, NoticeReason.RAISED, {P}),
        (Severity.RED, P, NoticeReason.RAISED, {P, C}),  # red reaches red_immediate_tiers at once
        (Severity.RED, P, NoticeReason.REACTIVATED, {P, C}),
        (Severity.YELLOW, T, NoticeReason.REACTIVATED, {P, T}),  # already escalated: keep the current tier in
        (Severity.ORANGE, T, NoticeReason.ESCALATED, {P, T}),  # new tier, plant stays informed
        (Severity.RED, Y, NoticeReason.ESCALATED, {P, Y}),
        (Severity.RED, C, NoticeReason.REMINDER, {C}),  # reminders: the late tier only
        (Severity.BLUE, P, NoticeReason.REMINDER, {P}),
    ],
)
def test_audience(severity: Severity, tier: Tier, reason: NoticeReason, expected: set[Tier]) -> None:
    assert audience(_alarm(severity, tier), reason, RED_IMMEDIATE) == frozenset(expected)


@pytest.mark.parametrize(
    ("site", "tiers", "expected"),
    [
        (FULL, {P}, [P]),
        (FULL, {P, T, Y}, [P, T, Y]),
        (NO_TOWNSHIP, {T}, [P]),  # nobody at the township: the nearest lower tier that has someone
        (NO_TOWNSHIP, {Y}, [C]),
        (NO_TOWNSHIP, {P, T}, [P]),
        (Site(id="S3", name="x", plant="dust", district="d"), {P, C}, []),
    ],
)
def test_contact_tiers(site: Site, tiers: set[Tier], expected: list[Tier]) -> None:
    assert contact_tiers(site, frozenset(tiers)) == expected


def test_recipients_per_channel_and_dedup() -> None:
    got = recipients(FULL, "S1", frozenset({P, C}), channels=["mqtt", "log", "email", "webhook"],
                     global_webhooks=["http://bureau/hook", "http://hooks/county"])
    assert [r.key for r in got] == [
        "mqtt:ew/S1/notices", "log:log",
        "email:plant@s1.cn", "webhook:http://hooks/plant", "email:shift@s1.cn",
        "email:county@gov.cn", "webhook:http://hooks/county",
        "webhook:http://bureau/hook",  # the county hook is also global: delivered once
    ]
    assert got[2] == Recipient("email", "plant@s1.cn", "plant officer", P)


def test_recipients_only_configured_channels_and_unknown_site() -> None:
    assert [r.key for r in recipients(FULL, "S1", frozenset({P}), channels=["email"])] == [
        "email:plant@s1.cn", "email:shift@s1.cn"]
    assert [r.key for r in recipients(None, "S9", frozenset({P}), channels=["mqtt", "email", "webhook"],
                                      global_webhooks=["http://g"])] == ["mqtt:ew/S9/notices", "webhook:http://g"]


def test_parse_tiers() -> None:
    assert parse_tiers(["plant", "County"]) == frozenset({P, C})
    with pytest.raises(ConfigError, match="red_immediate_tiers"):
        parse_tiers(["province"])
