"""Alarm lifecycle: episodes, acknowledge, dispose, close, shelve, deadlines, escalation."""
