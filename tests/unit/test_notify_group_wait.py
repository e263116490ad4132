"""Grouping windows per severity: `[notify.group_wait_by_severity]`, read strictly and obeyed by the Dispatcher.

A ManualClock, in-memory channels, deliveries inline; the config is loaded from real TOML files (tmp_path).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from earlywarn.clock import ManualClock
from earlywarn.config import AlarmsConfig, Config, NotifyConfig, load_config
from earlywarn.errors import ConfigError
from earlywarn.model import Alarm, AlarmEvent, AlarmState, Contact, EventKind, Severity, Site, Tier
from earlywarn.notify import Dispatcher, InMemoryNotificationLog, MemoryChannel, Notice

T0_MS = 1_764_316_800_000  # 2025-11-28T08:00:00Z
SITES = {
    sid: Site(id=sid, name=sid, plant="aluminum", district="wujiang",
              contacts=(Contact(Tier.PLANT, "Li", email=f"li@{sid}.cn"),))
    for sid in ("SZ-AL-0001", "SZ-AL-0002")
}


def write_config(tmp_path: Path, notify: str) -> Path:
    p = tmp_path / "earlywarn.toml"
    p.write_text(f"[notify]\n{notify}\n", encoding="utf-8")
    return p


def alarm(n: int, severity: Severity, *, site: str = "SZ-AL-0001", raised_at_ms: int = T0_MS) -> Alarm:
    return Alarm(alarm_id=f"{site}:r:{n}", site=site, plant="aluminum", district="wujiang", tag="t", rule_id="r",
                 severity=severity, state=AlarmState.ACTIVE_UNACK, raised_at_ms=raised_at_ms, message="m",
                 value=1.0)


def raised(a: Alarm) -> tuple[Alarm, AlarmEvent]:
    return a, AlarmEvent(a.alarm_id, a.raised_at_ms, EventKind.RAISED)


class Rig:
    def __init__(self, cfg: NotifyConfig, **kw: object) -> None:
        self.clock = ManualClock(T0_MS)
        self.mqtt = MemoryChannel("mqtt")
        self.d = Dispatcher(SITES, cfg, AlarmsConfig(), channels={"mqtt": self.mqtt},
                            log=InMemoryNotificationLog(), clock=self.clock, **kw)  # type: ignore[arg-type]

    def raise_at(self, at_ms: int, *alarms: Alarm) -> None:
        self.clock.set(at_ms)
        self.d.submit([raised(a) for a in alarms])

    def flush_at(self, at_ms: int) -> list[Notice]:
        return self.d.flush(self.clock.set(at_ms))


# ------------------------------------------------------------------------------------------------ config


def test_default_is_group_wait_for_every_severity() -> None:
    assert Config().notify.group_wait_by_severity_ms == {}
    assert NotifyConfig().group_wait_ms == 10_000


def test_table_is_read_as_milliseconds_per_severity(tmp_path: Path) -> None:
    cfg = load_config(write_config(tmp_path, 'group_wait = "10s"\n'
                                             '[notify.group_wait_by_severity]\nred = "1s"\norange = "2.5s"\n'))
    assert cfg.notify.group_wait_ms == 10_000
    assert cfg.notify.group_wait_by_severity_ms == {Severity.RED: 1_000, Severity.ORANGE: 2_500}


def test_inline_table_and_zero_are_accepted(tmp_path: Path) -> None:
    cfg = load_config(write_config(tmp_path, 'group_wait_by_severity = { red = 0, blue = "1m" }'))
    assert cfg.notify.group_wait_by_severity_ms == {Severity.RED: 0, Severity.BLUE: 60_000}


@pytest.mark.parametrize(("body", "key", "expected"), [
    ('[notify.group_wait_by_severity]\npurple = "1s"', "notify.group_wait_by_severity.purple", "a severity"),
    ('[notify.group_wait_by_severity]\nRed = "1s"', "notify.group_wait_by_severity.Red", "a severity"),
    ('[notify.group_wait_by_severity]\nred = "soon"', "notify.group_wait_by_severity.red", "a duration"),
    ('[notify.group_wait_by_severity]\nred = -1', "notify.group_wait_by_severity.red", "non-negative"),
    ('[notify.group_wait_by_severity]\nred = true', "notify.group_wait_by_severity.red", "a duration"),
    ('group_wait_by_severity = "1s"', "notify.group_wait_by_severity", "a table of severities"),
    ('group_wait_red = "1s"', "notify.group_wait_red", "unknown key"),
])
def test_bad_values_name_the_file_and_the_key(tmp_path: Path, body: str, key: str, expected: str) -> None:
    path = write_config(tmp_path, body)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    e = info.value
    assert e.file == str(path) and e.key == key and expected in e.expected
    assert str(path) in str(e) and key in str(e)


# ------------------------------------------------------------------------------------------------ dispatcher


def test_red_goes_out_at_one_second_while_yellow_waits_ten(tmp_path: Path) -> None:
    cfg = load_config(write_config(tmp_path, 'group_wait = "10s"\n[notify.group_wait_by_severity]\nred = "1s"'))
    rig = Rig(cfg.notify)
    red = alarm(1, Severity.RED, site="SZ-AL-0001")
    yellow = alarm(2, Severity.YELLOW, site="SZ-AL-0002")  # another site: its own group
    rig.raise_at(T0_MS, red, yellow)
    assert rig.d.next_due_ms() == T0_MS + 1_000
    assert rig.flush_at(T0_MS + 999) == []
    (n_red,) = rig.flush_at(T0_MS + 1_000)
    assert [na.alarm.alarm_id for na in n_red.alarms] == [red.alarm_id]
    assert n_red.prepared_ms == T0_MS + 1_000
    assert [n.notice_id for n, _ in rig.mqtt.sent] == [n_red.notice_id]  # handed to the channel at 1 s
    assert rig.d.next_due_ms() == T0_MS + 10_000
    assert rig.flush_at(T0_MS + 9_999) == []
    (n_yellow,) = rig.flush_at(T0_MS + 10_000)
    assert [na.alarm.alarm_id for na in n_yellow.alarms] == [yellow.alarm_id]
    assert len(rig.mqtt.sent) == 2 and rig.d.next_due_ms() is None


def test_short_window_still_coalesces_alarms_of_one_group() -> None:
    rig = Rig(NotifyConfig(group_wait_ms=10_000, group_wait_by_severity_ms={Severity.RED: 1_000}))
    reds = [alarm(n, Severity.RED, raised_at_ms=T0_MS + n * 100) for n in range(5)]  # 0 .. 400 ms
    for a in reds:
        rig.raise_at(a.raised_at_ms, a)
    assert rig.flush_at(T0_MS + 999) == []
    (n,) = rig.flush_at(T0_MS + 1_000)  # the window opened at the first red
    assert sorted(na.alarm.alarm_id for na in n.alarms) == sorted(a.alarm_id for a in reds)
    assert len(rig.mqtt.sent) == 1
    # a red after the window closed starts the next group, again 1 s
    late = alarm(9, Severity.RED, raised_at_ms=T0_MS + 1_200)
    rig.raise_at(late.raised_at_ms, late)
    assert rig.flush_at(T0_MS + 2_199) == []
    (n2,) = rig.flush_at(T0_MS + 2_200)
    assert [na.alarm.alarm_id for na in n2.alarms] == [late.alarm_id]


def test_yellows_keep_the_default_window_and_coalesce() -> None:
    rig = Rig(NotifyConfig(group_wait_ms=10_000, group_wait_by_severity_ms={Severity.RED: 1_000}))
    for n in range(3):
        a = alarm(n, Severity.YELLOW, raised_at_ms=T0_MS + n * 2_000)
        rig.raise_at(a.raised_at_ms, a)
    assert rig.flush_at(T0_MS + 9_999) == []
    (n,) = rig.flush_at(T0_MS + 10_000)
    assert len(n.alarms) == 3


def test_a_red_joining_a_yellow_group_pulls_it_forward() -> None:
    """Same site, reason, tier and audience: one group, which closes at the red's window."""
    rig = Rig(NotifyConfig(group_wait_ms=10_000, group_wait_by_severity_ms={Severity.RED: 1_000}))
    yellow, red = alarm(1, Severity.YELLOW), alarm(2, Severity.RED, raised_at_ms=T0_MS + 3_000)
    rig.raise_at(T0_MS, yellow)
    rig.raise_at(T0_MS + 3_000, red)
    assert rig.flush_at(T0_MS + 3_999) == []
    (n,) = rig.flush_at(T0_MS + 4_000)
    assert [na.alarm.severity for na in n.alarms] == [Severity.RED, Severity.YELLOW]


def test_zero_window_sends_at_the_next_flush() -> None:
    rig = Rig(NotifyConfig(group_wait_ms=10_000, group_wait_by_severity_ms={Severity.RED: 0}))
    red = alarm(1, Severity.RED)
    rig.raise_at(T0_MS, red)
    (n,) = rig.flush_at(T0_MS)
    assert n.prepared_ms == T0_MS


def test_constructor_argument_overrides_the_config() -> None:
    rig = Rig(NotifyConfig(group_wait_ms=10_000, group_wait_by_severity_ms={Severity.RED: 1_000}),
              group_wait_ms_by_severity={Severity.RED: 500})
    rig.raise_at(T0_MS, alarm(1, Severity.RED))
    assert rig.d.next_due_ms() == T0_MS + 500
