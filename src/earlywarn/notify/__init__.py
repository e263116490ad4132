"""Notices to supervisors: channels, grouping, reminders, escalation, acknowledge links."""
