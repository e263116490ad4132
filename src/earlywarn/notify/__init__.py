"""Notices to supervisors: channels, grouping, reminders, escalation, acknowledge links.

Wiring (the pipeline, on its own thread)::

    log = RestoredNotificationLog(); log.load(rows)        # rows from `notices`, see nflog.py
    signer = LinkSigner.from_env(cfg.http.link_secret_env, cfg.http.link_ttl_ms)
    channels = {"mqtt": MqttChannel(client.publish), "webhook": WebhookChannel(cfg.notify.webhook.timeout_ms),
                "email": EmailChannel(cfg.notify.smtp, clock=clock), "log": LogChannel()}  # only those enabled
    d = Dispatcher(sites, cfg.notify, cfg.alarms, channels=channels, log=log, clock=clock,
                   link_signer=signer, public_url=cfg.http.public_url, metrics=metrics,
                   executor=ThreadedExecutor())
    d.submit(recovery_items(manager.open_alarms()))      # once at start: what a crash may have lost
    every tick:  ch = manager.apply_signals(...) / manager.tick(now) / an action
                 d.submit(ch.notices); d.refresh(ch.alarms); d.flush(now); store(d.drain_records())
    at stop:     d.close()                               # sends groups still in their window

Pacing: alarms of one site with the same reason, tier and audience within `notify.group_wait` form one
notice (the window opens at the first one; Alertmanager's group_wait); `[notify.group_wait_by_severity]`
gives a severity its own window (red "1s"), and a group closes at the shortest window among its alarms.
Nothing is notified twice for the same (alarm, reason, tier) — per event for reminders and reactivations —
checked against the injected NotificationLog. Shelved, suppressed and closed alarms notify no one; reminders
of an alarm acknowledged meanwhile are dropped. Routing: see `routing.py`. Retries: exponential backoff on the
engine clock (`notify.webhook` settings, for every channel), then `dead_letter`; unrecoverable errors end in
`failed`.
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
