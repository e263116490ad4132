"""Notices to supervisors: channels, grouping, reminders, escalation, acknowledge links.

The pipeline builds one `Dispatcher`, calls `submit(items)` with the (Alarm, AlarmEvent) pairs of every
batch, `flush(now_ms)` on every tick (or at `next_due_ms()`), and stores `drain_records()` in `notices`.

Pacing: alarms of one site with the same reason, tier and audience within `notify.group_wait` form one
notice (the window opens at the first one; Alertmanager's group_wait). Nothing is notified twice for the
same (alarm, reason, tier) — per event for reminders and reactivations — checked against an injected
NotificationLog. Shelved, suppressed and closed alarms notify no one; reminders of an alarm
acknowledged meanwhile are dropped. Routing: see `routing.py`.
"""

from __future__ import annotations

from .channels import (
    Channel,
    DeliveryError,
    EmailChannel,
    LogChannel,
    MemoryChannel,
    MqttChannel,
    WebhookChannel,
    notices_topic,
)
from .delivery import Delivery, Executor, InlineExecutor, RetryPolicy, ThreadedExecutor
from .dispatcher import Dispatcher, recovery_items
from .links import ALL_ALARMS, AckLink, LinkError, LinkExpired, LinkSigner, LinkTampered, ack_url
from .nflog import InMemoryNotificationLog, NoticeKey, NotificationLog, RestoredNotificationLog
from .notice import Notice, NoticeAlarm, NoticeReason, Recipient, notice_bytes, notice_json
from .routing import Decision, audience, decide, recipients

__all__ = [
    "ALL_ALARMS",
    "AckLink",
    "Channel",
    "Decision",
    "Delivery",
    "DeliveryError",
    "Dispatcher",
    "EmailChannel",
    "Executor",
    "InMemoryNotificationLog",
    "InlineExecutor",
    "LinkError",
    "LinkExpired",
    "LinkSigner",
    "LinkTampered",
    "LogChannel",
    "MemoryChannel",
    "MqttChannel",
    "Notice",
    "NoticeAlarm",
    "NoticeKey",
    "NoticeReason",
    "NotificationLog",
    "Recipient",
    "RestoredNotificationLog",
    "RetryPolicy",
    "ThreadedExecutor",
    "WebhookChannel",
    "ack_url",
    "audience",
    "decide",
    "notice_bytes",
    "notice_json",
    "notices_topic",
    "recipients",
    "recovery_items",
]
