"""Starts the real `sluice` binary the way a user would, on a free loopback port with its own
data directory, for tests that drive it with third-party Kafka clients."""

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BINARY = Path(os.environ.get("SLUICE_BIN", ROOT / "target" / "debug" / "sluice"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    def __init__(self, data_dir: Path, port: int | None = None, extra_args=()):
        self.data_dir = data_dir
        self.port = port or free_port()
        self.admin_port = free_port()
        self.extra_args = list(extra_args)
        self.proc = None
        self.log_path = data_dir.parent / f"broker-{self.port}.log"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout=20.0):
        assert BINARY.exists(), f"{BINARY} is missing: run `cargo build --bin sluice` first"
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [
                str(BINARY),
                "server",
                "--listeners",
                self.bootstrap,
                "--admin-listeners",
                f"127.0.0.1:{self.admin_port}",
                "--data-dir",
                str(self.data_dir),
                *self.extra_args,
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sluice exited with {self.proc.returncode}:\n{self.logs()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"sluice did not listen on {self.bootstrap} within {timeout}s:\n{self.logs()}")

    def stop(self, sig=signal.SIGTERM, timeout=20.0) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise
        self.log.close()
        return code

    def logs(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


@pytest.fixture
def broker(tmp_path):
    b = Broker(tmp_path / "data").start()
    yield b
    code = b.stop()
    assert code == 0, f"sluice exited with {code} on SIGTERM:\n{b.logs()}"


@pytest.fixture
def make_broker(tmp_path):
    """For tests that restart a broker or pass their own arguments."""
    started = []

    def make(**kw):
        b = Broker(tmp_path / "data", **kw)
        started.append(b)
        return b

    yield make
    for b in started:
        b.stop(signal.SIGKILL)
