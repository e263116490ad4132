"""Who is told, and whether to tell at all: pure functions, tested by tables.

Routing (decided here, documented in the package docstring):
- `raised` / `reactivated`: the plant tier (plus the alarm's current tier, if it had already escalated);
  a red alarm also reaches `alarms.red_immediate_tiers` at once.
- `escalated`: the contacts of the new tier, and the plant stays informed.
- `reminder`: the current tier only (the one that is late).
- A tier with no contacts falls back to the nearest lower tier that has some, so nothing goes to nobody.
- Per notice, whatever the tier: one MQTT message on `ew/{site}/notices`, one log line, and every global
  webhook URL (`notify.webhook.urls`).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable

from earlywarn.errors import ConfigError
from earlywarn.model import Alarm, AlarmState, EventKind, Severity, Site, Tier

from .notice import REASON_OF_EVENT, NoticeReason, Recipient


class Decision(enum.StrEnum):
    """What to do with one (alarm, event) at the notify stage."""

    NOTIFY = "notify"
    NOT_A_NOTICE = "not_a_notice"  # cleared, acked, commented, ...: refreshes the snapshot only
    SHELVED = "shelved"
    SUPPRESSED = "suppressed"
    CLOSED = "closed"
    ACKED = "acked"  # a reminder of an alarm acknowledged meanwhile: nobody to chase


def decide(alarm: Alarm, kind: EventKind, now_ms: int) -> Decision:
    """Whether `alarm`, in its latest known state, still deserves a notice for an event of `kind`."""
    reason = REASON_OF_EVENT.get(kind)
    if reason is None:
        return Decision.NOT_A_NOTICE
    if alarm.suppressed:
        return Decision.SUPPRESSED
    if alarm.shelved_until_ms is not None and alarm.shelved_until_ms > now_ms:
        return Decision.SHELVED
    if alarm.state is AlarmState.CLOSED:
        return Decision.CLOSED
    # Reminders chase an acknowledgement; an escalation also follows a missed *close* deadline of an
    # acknowledged alarm, so it is sent whatever the ack state.
    if reason is NoticeReason.REMINDER and alarm.state.is_acked:
        return Decision.ACKED
    return Decision.NOTIFY


def parse_tiers(labels: Iterable[str], where: str = "alarms.red_immediate_tiers") -> frozenset[Tier]:
    """Tier labels from config ("plant", "county", ...) to Tiers; an unknown label is a ConfigError."""
    out = set()
    for label in labels:
        try:
            out.add(Tier[label.upper()])
        except KeyError:
            known = ", ".join(t.label for t in Tier)
            raise ConfigError("(config)", where, f"tier labels ({known}), got {label!r}") from None
    return frozenset(out)


def audience(alarm: Alarm, reason: NoticeReason, red_immediate: frozenset[Tier]) -> frozenset[Tier]:
    """The escalation tiers whose contacts receive this notice (see the module docstring)."""
    current = alarm.escalation_tier
    if reason is NoticeReason.REMINDER:
        return frozenset({current})
    tiers = {Tier.PLANT, current}
    if reason in (NoticeReason.RAISED, NoticeReason.REACTIVATED) and alarm.severity is Severity.RED:
        tiers |= red_immediate
    return frozenset(tiers)


def contact_tiers(site: Site, tiers: frozenset[Tier]) -> list[Tier]:
    """Each wanted tier, or the nearest lower tier with contacts when it has none; sorted, without repeats."""
    out: set[Tier] = set()
    for tier in tiers:
        t: int = tier
        while t >= Tier.PLANT and not site.contacts_at(Tier(t)):
            t -= 1
        if t >= Tier.PLANT:
            out.add(Tier(t))
    return sorted(out)


def recipients(
    site: Site | None,
    site_id: str,
    tiers: frozenset[Tier],
    *,
    channels: Iterable[str],
    global_webhooks: Iterable[str] = (),
) -> tuple[Recipient, ...]:
    """Every delivery of one notice: contacts of `tiers` by e-mail / webhook, plus MQTT, log and global webhooks.

    Only channels present in `channels` are used; an address reached twice is delivered once.
    """
    have = set(channels)
    out: dict[str, Recipient] = {}

    def add(r: Recipient) -> None:
        out.setdefault(r.key, r)

    if "mqtt" in have:
        add(Recipient("mqtt", f"ew/{site_id}/notices"))
    if "log" in have:
        add(Recipient("log", "log"))
    if site is not None:
        for tier in contact_tiers(site, tiers):
            for c in site.contacts_at(tier):
                if c.email and "email" in have:
                    add(Recipient("email", c.email, c.name, tier))
                if c.webhook and "webhook" in have:
                    add(Recipient("webhook", c.webhook, c.name, tier))
    if "webhook" in have:
        for url in global_webhooks:
            add(Recipient("webhook", url, "global"))
    return tuple(out.values())
