"""Start the real `fastforward` process against fakes on 127.0.0.1; stop what was started."""

from __future__ import annotations

import os
import pickle
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import gevent
import pytest

from tests.fake_blueflood import FakeBlueflood, FakeIdentity, fake_blueflood, fake_identity

__all__ = ["FakeBlueflood", "FakeIdentity", "fake_blueflood", "fake_identity"]

TENANT = "tenant"


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout: float = 15.0, what: str = "condition") -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        gevent.sleep(0.02)


def frame(items: object, protocol: int = 2) -> bytes:
    payload = pickle.dumps(items, protocol=protocol)
    return struct.pack("!L", len(payload)) + payload


def send_tcp(port: int, data: bytes) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(data)


class Process:
    """One running `python -m fastforward ...`, with its stdout and stderr in files."""

    def __init__(
        self,
        args: Sequence[str],
        tmp: Path,
        env: dict[str, str] | None = None,
        preexec_fn: Callable[[], None] | None = None,
    ) -> None:
        self.args = list(args)
        self.stdout_path = tmp / f"stdout-{id(self)}.txt"
        self.stderr_path = tmp / f"stderr-{id(self)}.txt"
        full_env = dict(os.environ)
        full_env.update(env or {})
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "fastforward", *self.args],
                stdout=out,
                stderr=err,
                env=full_env,
                cwd=str(tmp),
                preexec_fn=preexec_fn,
            )

    @property
    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def wait_started(self, marker: str = " starting (codec: ", log: Path | None = None) -> None:
        def started() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"fastforward exited {self.proc.returncode}:\n{self.stderr}")
            text = log.read_text() if log is not None and log.exists() else self.stderr
            return marker in text

        wait_until(started, 20, "fastforward to start")

    def terminate(self, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.wait(timeout)

    def wait(self, timeout: float = 30.0) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
            raise AssertionError(
                f"fastforward did not exit in {timeout}s:\n{self.stderr}"
            ) from None


@pytest.fixture
def run_ff(tmp_path: Path) -> Iterator:
    """Start fastforward (waiting for its banner unless wait=False); every one is stopped."""
    started: list[Process] = []

    def start(
        *args: str,
        env: dict[str, str] | None = None,
        wait: bool = True,
        log: Path | None = None,
        preexec_fn: Callable[[], None] | None = None,
    ) -> Process:
        p = Process(args, tmp_path, env, preexec_fn)
        started.append(p)
        if wait:
            p.wait_started(log=log)
        return p

    yield start
    for p in started:
        if p.proc.poll() is None:
            p.proc.kill()
            p.proc.wait(timeout=10)
