"""What a notice is and how it reads: the Notice value, its recipients, its JSON and its e-mail.

A Notice is recipient-independent (one per group of alarms); what differs per recipient is only the
acknowledge links, which the Dispatcher signs in advance and stores in `Notice.ack_urls`, so channels can
render a notice for any recipient without holding the link secret.
"""

from __future__ import annotations

import enum
import functools
import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import msgspec

from earlywarn.model import Alarm, EventKind, Tier

from .links import ALL_ALARMS

_CST = timezone(timedelta(hours=8), "UTC+8")

#: How a supervisor acknowledges from a terminal. The CLI belongs to the lead; keep in step with it.
ACK_CLI_TEMPLATE = 'earlywarn alarms ack {alarm_id} --note "{recipient}"'


class NoticeReason(enum.StrEnum):
    """Why a notice is sent (the `reason` of the notice JSON and of the `notices` table)."""

    RAISED = "raised"
    REACTIVATED = "reactivated"
    ESCALATED = "escalated"
    REMINDER = "reminder"


#: Alarm event kind -> notice reason; other kinds send nothing.
REASON_OF_EVENT: dict[EventKind, NoticeReason] = {
    EventKind.RAISED: NoticeReason.RAISED,
    EventKind.REACTIVATED: NoticeReason.REACTIVATED,
    EventKind.ESCALATED: NoticeReason.ESCALATED,
    EventKind.REMINDED: NoticeReason.REMINDER,
}

_REASON_ZH = {
    NoticeReason.RAISED: "报警",
    NoticeReason.REACTIVATED: "再次报警",
    NoticeReason.ESCALATED: "升级",
    NoticeReason.REMINDER: "催办提醒",
}
_TIER_ZH = {Tier.PLANT: "企业", Tier.TOWNSHIP: "乡镇/园区", Tier.COUNTY: "县(区)", Tier.CITY: "市"}
_SEVERITY_ZH = {"red": "红色", "orange": "橙色", "yellow": "黄色", "blue": "蓝色"}


@dataclass(frozen=True, slots=True)
class Recipient:
    """Where one delivery goes. `address` is a topic (mqtt), a URL (webhook), an e-mail address or "log"."""

    channel: str
    address: str
    name: str = ""
    tier: Tier | None = None  # the contact's tier; None for MQTT, the log and global webhooks

    @property
    def key(self) -> str:
        """Stable identity, used as the recipient bound into acknowledge links."""
        return f"{self.channel}:{self.address}"


@dataclass(frozen=True, slots=True)
class NoticeAlarm:
    """One alarm inside a notice: its snapshot at flush time and the event that made it notice-worthy."""

    alarm: Alarm
    event_ts_ms: int
    ack_deadline_ms: int | None  # None: the severity has no ack deadline


@dataclass(frozen=True, slots=True)
class Notice:
    """One coalesced notice: alarms of one site, one reason, one tier, one audience, one grouping window."""

    notice_id: str
    site: str
    site_name: str
    reason: NoticeReason
    tier: Tier
    alarms: tuple[NoticeAlarm, ...]
    window_start_ms: int
    prepared_ms: int  # when the window closed and the notice was built (`sent_at` in the JSON)
    recipients: tuple[Recipient, ...]
    #: recipient.key -> alarm_id (or "*" for the whole notice) -> acknowledge URL; empty without public_url
    ack_urls: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    #: the recipient-independent part of the JSON, built once by the first channel that renders it
    _doc_cache: dict[str, Any] = field(default_factory=dict, init=False, compare=False, repr=False)

    @property
    def severity(self) -> str:
        """The most severe severity among the alarms."""
        return min((na.alarm.severity for na in self.alarms), key=lambda s: s.rank).value

    def ack_url(self, recipient: Recipient, alarm_id: str = ALL_ALARMS) -> str | None:
        return self.ack_urls.get(recipient.key, {}).get(alarm_id)


def make_notice_id(site: str, reason: str, tier: Tier, alarm_ids: list[str], window_start_ms: int) -> str:
    """Deterministic: the same group always gets the same id, so a receiver can de-duplicate retries."""
    text = "|".join([site, reason, tier.label, ",".join(sorted(alarm_ids)), str(window_start_ms)])
    return "n-" + hashlib.sha256(text.encode("utf-8")).hexdigest()[:24]


@functools.lru_cache(maxsize=1 << 16)  # the same few timestamps are rendered once per recipient
def rfc3339_ms(ts_ms: int | None, tz: timezone = UTC) -> str | None:
    """`2026-11-28T08:00:00.250Z` (UTC) or with an offset for other zones; None stays None."""
    if ts_ms is None:
        return None
    dt = datetime.fromtimestamp(ts_ms / 1000, tz=tz)
    text = dt.isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z") if tz is UTC else text


def _value(v: float) -> float | None:
    return None if v is None or not math.isfinite(v) else float(v)


def _base_json(notice: Notice) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The parts of the JSON that do not depend on the recipient (cached on the notice)."""
    cached = notice._doc_cache.get("base")
    if cached is not None:
        return cached  # type: ignore[no-any-return]
    head: dict[str, Any] = {
        "notice_id": notice.notice_id,
        "site": notice.site,
        "site_name": notice.site_name,
        "reason": notice.reason.value,
        "tier": notice.tier.label,
        "severity": notice.severity,
        "sent_at": rfc3339_ms(notice.prepared_ms),
    }
    alarms = []
    for na in notice.alarms:
        a = na.alarm
        alarms.append({
            "alarm_id": a.alarm_id,
            "rule_id": a.rule_id,
            "tag": a.tag,
            "severity": a.severity.value,
            "state": a.state.value,
            "raised_at": rfc3339_ms(a.raised_at_ms),
            "value": _value(a.value),
            "message": a.message,
            "event_at": rfc3339_ms(na.event_ts_ms),
            "ack_deadline": rfc3339_ms(na.ack_deadline_ms),
            "occurrences": a.occurrences,
            "escalation_tier": a.escalation_tier.label,
        })
    # Two workers may build it at once; both build the same value and the assignment is atomic.
    notice._doc_cache["base"] = (head, alarms)
    return head, alarms


def notice_json(notice: Notice, recipient: Recipient) -> dict[str, Any]:
    """The notice as a JSON-ready dict, identical on MQTT and webhooks except for the recipient's links."""
    head, base_alarms = _base_json(notice)
    doc = dict(head)
    doc["recipient"] = recipient.key
    links = notice.ack_urls.get(recipient.key, {})
    top = links.get(ALL_ALARMS)
    if top is not None:
        doc["ack_url"] = top
    alarms = []
    for item in base_alarms:
        url = links.get(item["alarm_id"])
        alarms.append({**item, "ack_url": url} if url is not None else item)
    doc["alarms"] = alarms
    return doc


_encode = msgspec.json.Encoder().encode


def _base_bytes(notice: Notice) -> tuple[bytes, list[bytes]]:
    """The recipient-independent JSON, encoded once per notice: the head object without its closing brace,
    and each alarm object without its closing brace (cached on the notice)."""
    cached = notice._doc_cache.get("bytes")
    if cached is not None:
        return cached  # type: ignore[no-any-return]
    head, alarms = _base_json(notice)
    out = (_encode(head)[:-1], [_encode(a)[:-1] for a in alarms])
    notice._doc_cache["bytes"] = out
    return out


def notice_bytes(notice: Notice, recipient: Recipient) -> bytes:
    """UTF-8 JSON of notice_json (Chinese kept readable, not \\u-escaped), byte for byte.

    The notice is serialized once; a recipient's copy only splices in its `recipient` and its links, so
    MQTT, every webhook and the log channel do not each re-encode the same alarms.
    """
    head, alarms = _base_bytes(notice)
    links = notice.ack_urls.get(recipient.key)
    parts = [head, b',"recipient":', _encode(recipient.key)]
    if links:
        top = links.get(ALL_ALARMS)
        if top is not None:
            parts += (b',"ack_url":', _encode(top))
        parts.append(b',"alarms":[')
        for i, (item, na) in enumerate(zip(alarms, notice.alarms, strict=True)):
            if i:
                parts.append(b",")
            parts.append(item)
            url = links.get(na.alarm.alarm_id)
            if url is not None:
                parts += (b',"ack_url":', _encode(url))
            parts.append(b"}")
        parts.append(b"]}")
    else:
        parts += (b',"alarms":[', b"},".join(alarms), b"}]}" if alarms else b"]}")
    return b"".join(parts)


def email_subject(notice: Notice) -> str:
    """`[earlywarn][RED] SZ-AL-0001 cw_pressure_ll — 冷却水压力低低 / Cooling-water pressure low-low`."""
    first = notice.alarms[0].alarm
    prefix = f"[earlywarn][{notice.severity.upper()}]"
    if notice.reason is not NoticeReason.RAISED:
        prefix += f"[{notice.reason.value}:{notice.tier.label}]"
    if len(notice.alarms) == 1:
        return f"{prefix} {notice.site} {first.rule_id} — {first.message or first.tag}"
    return f"{prefix} {notice.site} {len(notice.alarms)} alarms / 条报警: {first.rule_id} — {first.message} …"


def email_body(notice: Notice, recipient: Recipient, now_ms: int) -> str:
    """A plain-text body in Chinese and English: each alarm, value, message, times, deadline, how to ack."""
    lines = [
        f"{_REASON_ZH[notice.reason]} / {notice.reason.value}: {notice.site} {notice.site_name}",
        f"级别 / tier: {_TIER_ZH[notice.tier]} / {notice.tier.label}    报警数 / alarms: {len(notice.alarms)}",
        f"通知编号 / notice: {notice.notice_id}",
        f"接收人 / recipient: {recipient.name or recipient.address}",
        "",
    ]
    for i, na in enumerate(notice.alarms, 1):
        a = na.alarm
        value = _value(a.value)
        deadline = na.ack_deadline_ms
        overdue = "  已超时 / OVERDUE" if deadline is not None and now_ms > deadline else ""
        lines += [
            (
                f"{i}. [{_SEVERITY_ZH.get(a.severity.value, a.severity.value)} / {a.severity.value.upper()}] "
                f"{a.rule_id} — {a.message}"
            ),
            f"   报警编号 / alarm id: {a.alarm_id}",
            f"   位号 / tag: {a.tag}    当前值 / value: {'—' if value is None else f'{value:g}'}",
            f"   状态 / state: {a.state.value}    次数 / occurrences: {a.occurrences}",
            f"   报警时间 / raised: {rfc3339_ms(a.raised_at_ms)} (UTC)  {rfc3339_ms(a.raised_at_ms, _CST)} (UTC+8)",
            f"   签收期限 / ack by: {rfc3339_ms(deadline)} (UTC)  {rfc3339_ms(deadline, _CST)} (UTC+8){overdue}"
            if deadline is not None else "   签收期限 / ack by: —",
        ]
        url = notice.ack_url(recipient, a.alarm_id)
        if url is not None:
            lines.append(f"   一键签收 / acknowledge: {url}")
        lines.append("   命令行签收 / CLI: " + ACK_CLI_TEMPLATE.format(alarm_id=a.alarm_id, recipient=recipient.address))
        lines.append("")
    top = notice.ack_url(recipient)
    if top is not None and len(notice.alarms) > 1:
        lines += [f"全部签收 / acknowledge all {len(notice.alarms)}: {top}", ""]
    lines += [
        "请及时签收并处置。未按期签收将逐级上报(企业 → 乡镇/园区 → 县 → 市)。",
        "Please acknowledge and dispose in time. Unacknowledged alarms escalate (plant → township → county → city).",
        "— earlywarn",
    ]
    return "\n".join(lines) + "\n"
