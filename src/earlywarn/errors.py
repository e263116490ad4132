"""The error vocabulary of earlywarn. Every stage raises these, never bare Exception."""

from __future__ import annotations


class EarlywarnError(Exception):
    """Base class of every error earlywarn raises on purpose."""


class ConfigError(EarlywarnError):
    """A config, sites or rule file is wrong. Names the file, the key and what was expected."""

    def __init__(self, file: str, key: str, expected: str) -> None:
        self.file = file
        self.key = key
        self.expected = expected
        super().__init__(f"{file}: {key}: {expected}")


class ConfigErrors(EarlywarnError):
    """Several ConfigErrors found in one pass (e.g. `earlywarn rules check`), reported together."""

    def __init__(self, errors: list[ConfigError]) -> None:
        self.errors = list(errors)
        super().__init__("\n".join(str(e) for e in self.errors))


class ExprError(EarlywarnError):
    """An expression (`when`, `expr`, `trigger`, `expect`) does not parse. Carries the column."""

    def __init__(self, text: str, pos: int, expected: str) -> None:
        self.text = text
        self.pos = pos
        self.expected = expected
        super().__init__(f"at column {pos + 1} of {text!r}: {expected}")


class ActionError(EarlywarnError):
    """A user action on an alarm is not allowed in its current state (HTTP 409)."""

    def __init__(self, alarm_id: str, state: str, why: str) -> None:
        self.alarm_id = alarm_id
        self.state = state
        self.why = why
        super().__init__(f"alarm {alarm_id} is {state}: {why}")


class NotFound(EarlywarnError):
    """An alarm, site or maintenance window does not exist (HTTP 404)."""


class StoreError(EarlywarnError):
    """The store could not commit; the batch is kept and nothing is acknowledged."""
