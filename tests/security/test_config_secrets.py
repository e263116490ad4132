"""A broker URL carrying a password is refused at start, and no config error ever quotes the password,
whatever else is wrong with the URL (scheme, port, brackets)."""

from __future__ import annotations

from pathlib import Path

import pytest

from earlywarn.config import load_config
from earlywarn.errors import ConfigError


@pytest.mark.parametrize("url", [
    "mqtt://u:s3cr3t-pw@host:1883",
    "http://u:s3cr3t-pw@host:1883",  # wrong scheme too: the scheme message quotes the URL
    "mqtts://u:s3cr3t-pw@host:99999",
    "mqtt://u:s3cr3t-pw@[host:1883",
    "mqtt://u:s3cr3t-pw@",
    "u:s3cr3t-pw@host",
])
def test_a_password_in_the_broker_url_is_refused_without_echoing_it(tmp_path: Path, url: str) -> None:
    cfg = tmp_path / "ew.toml"
    cfg.write_text(f'[broker]\nurl = "{url}"\n')
    with pytest.raises(ConfigError) as e:
        load_config(cfg)
    assert e.value.key == "broker.url"
    assert "s3cr3t-pw" not in str(e.value)
