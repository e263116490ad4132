"""A real mosquitto on a free loopback port, for integration tests (no mocks of the broker)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
from pathlib import Path

import waiting


def mosquitto_binary() -> str:
    found = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if os.path.exists("/usr/sbin/mosquitto") else None)
    if found is None:
        msg = "mosquitto is not installed (.ci/run installs it: apt-get install -y mosquitto)"
        raise RuntimeError(msg)
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(host: str, port: int, timeout_s: float = 10.0) -> None:
    def listening() -> bool:
        with socket.create_connection((host, port), timeout=0.2):
            return True

    try:
        waiting.wait_until(listening, timeout_s, f"something to listen on {host}:{port}", interval_s=0.02,
                           ignore=(OSError,))
    except AssertionError as e:
        raise TimeoutError(str(e)) from None


class Mosquitto:
    """A mosquitto process with persistence on, restartable on the same port."""

    def __init__(self, workdir: Path, *, max_inflight: int = 1000, extra_conf: str = "") -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.host = "127.0.0.1"
        self.port = free_port()
        self.conf = self.workdir / "mosquitto.conf"
        # persistence: QoS 1 messages queued for a persistent session survive a broker restart
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\n"
            # as root mosquitto drops to user `mosquitto`, which could not write the persistence file in
            # the test's folder: the session (and its unacknowledged messages) would not survive a restart
            + ("user root\n" if os.geteuid() == 0 else "")
            + 
            "allow_anonymous true\n"
            f"max_inflight_messages {max_inflight}\n"
            "max_queued_messages 0\n"
            "max_queued_bytes 0\n"
            "persistence true\n"
            f"persistence_location {self.workdir}/\n"
            "autosave_interval 1\n"
            f"log_dest file {self.workdir}/mosquitto.log\n"
            + extra_conf
        )
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    def start(self) -> Mosquitto:
        self.proc = subprocess.Popen(
            [mosquitto_binary(), "-c", str(self.conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.host, self.port)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # SIGTERM: mosquitto saves its persistence file
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
