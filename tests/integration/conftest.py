"""Start the real `fastforward` process against fakes on 127.0.0.1; stop what was started.

Give fastforward ``port=0`` endpoints (``ANY_PORT``) and read the ports it bound back with
`Process.port` and `Process.admin_port`: no port is picked ahead and released, so parallel
runs cannot race for one. Waiting is `wait_until` (from `tests.support`), with a deadline.
"""

from __future__ import annotations

import os
import pickle
import re
import signal
import socket
import struct
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from tests.fake_blueflood import FakeBlueflood, FakeIdentity, fake_blueflood, fake_identity
from tests.support import ADMIN, LISTENING, free_port, wait_until

__all__ = [
    "FakeBlueflood", "FakeIdentity", "fake_blueflood", "fake_identity", "free_port", "wait_until"
]  # fmt: skip

TENANT = "tenant"

# Lines of fastforward's log that tell what it bound (port 0 included): LISTENING and ADMIN.
_ALL_WORKERS = re.compile(r"all \d+ workers started")

ANY_PORT = "tcp:port=0:interface=127.0.0.1"  # an endpoint on a port the kernel picks


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
        self.log_path: Path | None = None
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

    def log_text(self) -> str:
        """Its log: the ``--logfile`` given to ``run_ff(log=...)``, else its stderr."""
        if self.log_path is not None:
            return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return self.stderr

    def wait_started(self, marker: str = " starting (codec: ", log: Path | None = None) -> None:
        if log is not None:
            self.log_path = log

        def started() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"fastforward exited {self.proc.returncode}:\n{self.stderr}")
            text = self.log_text()
            if " supervisor (pid " in text:  # --workers: every worker, not just the first
                return _ALL_WORKERS.search(text) is not None
            return marker in text

        wait_until(started, 20, "fastforward to start")

    def port(self, kind: str = "tcp", protocol: str | None = None) -> int:
        """The port its first ``kind`` listener (of ``protocol`` if given) bound, read from its
        log. The ``-e`` endpoints come first, so ``port()`` is the main TCP endpoint's."""

        def bound() -> int | None:
            for k, p, _host, port in LISTENING.findall(self.log_text()):
                if k == kind and protocol in (None, p):
                    return int(port)
            return None

        return self._read_back(bound, f"a {kind} {protocol or ''} listener")

    @property
    def admin_port(self) -> int:
        """The port its ``--admin-endpoint`` bound (read from its log)."""

        def bound() -> int | None:
            match = ADMIN.search(self.log_text())
            return None if match is None else int(match.group(2))

        return self._read_back(bound, "the admin endpoint")

    def _read_back(self, bound: Callable[[], int | None], what: str) -> int:
        # The banner is several writes: the line may follow the "starting" line by a moment.
        found: list[int] = []

        def logged() -> bool:
            port = bound()
            if port is not None:
                found.append(port)
            elif self.proc.poll() is not None:
                raise AssertionError(f"fastforward exited before logging {what}:\n{self.stderr}")
            return port is not None

        wait_until(logged, 10, f"{what} in fastforward's log")
        return found[-1]

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
    """Start fastforward (waiting for its banner, or every worker's under ``--workers``, unless
    wait=False); every one is stopped by its PID."""
    started: list[Process] = []

    def start(
        *args: str,
        env: dict[str, str] | None = None,
        wait: bool = True,
        log: Path | None = None,
        preexec_fn: Callable[[], None] | None = None,
    ) -> Process:
        p = Process(args, tmp_path, env, preexec_fn)
        p.log_path = log
        started.append(p)
        if wait:
            p.wait_started(log=log)
        return p

    yield start
    for p in started:
        if p.proc.poll() is None:
            p.proc.kill()
            p.proc.wait(timeout=10)
