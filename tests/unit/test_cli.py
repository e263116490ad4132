"""The command line's contract: exit codes and messages that name the file and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from earlywarn.cli import main

REPO = Path(__file__).resolve().parents[2]


def test_shipped_rule_packs_pass_rules_check(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rules", "check", str(REPO / "rules")]) == 0
    assert "ok" in capsys.readouterr().out


def test_rules_check_reports_every_problem_with_file_rule_and_key(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "aluminum.toml"
    f.write_text(
        'plant = "aluminum"\n[[tag]]\nname = "x"\n'
        '[[rule]]\nid = "a"\nkind = "threshold"\ntag = "x"\nop = "=<"\nlimit = 1\nseverity = "red"\nmessage = "m"\n'
        '[[rule]]\nid = "b"\nkind = "vote"\ntags = ["x", "y"]\nop = ">"\nlimit = 1\nk = 3\nseverity = "red"\n'
        'message = "m"\n'
    )
    assert main(["rules", "check", str(f)]) == 2
    err = capsys.readouterr().err
    assert "rule[a].op" in err and str(f) in err
    assert "rule[b]" in err and "y" in err  # unknown tag and k larger than the group


def test_bad_config_value_exits_2_naming_file_and_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[alarms.deadlines.red]\nack = "soon"\n')
    assert main(["replay", "--config", str(cfg), str(tmp_path / "none.csv")]) == 2
    err = capsys.readouterr().err
    assert str(cfg) in err and "alarms.deadlines.red.ack" in err
