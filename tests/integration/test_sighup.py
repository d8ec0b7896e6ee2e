"""SIGHUP (logrotate's postrotate, init scripts) reopens the log; it never stops the process."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from .conftest import ANY_PORT, TENANT, FakeBlueflood, frame, send_tcp, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.mark.parametrize("workers", ["1", "2"])
def test_sighup_reopens_a_rotated_log_and_keeps_forwarding(
    fake_blueflood: FakeBlueflood,
    run_ff,  # noqa: ANN001
    tmp_path: Path,
    workers: str,
) -> None:
    bf, log = fake_blueflood, tmp_path / "ff.log"
    ff = run_ff("-e", ANY_PORT, "-b", bf.url, "-t", TENANT,
                "-i", "0.2", "-l", str(log), "--workers", workers,
                log=log)  # fmt: skip
    port = ff.port()
    ts = int(time.time())
    send_tcp(port, frame([("before.rotation", (ts, 1.0))]))
    bf.wait_for(lambda: bf.stored == 1)

    os.rename(log, tmp_path / "ff.log.1")  # what logrotate does, then it sends SIGHUP
    ff.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: log.exists() and "SIGHUP: log file reopened" in log.read_text(), 10,
               "the log to be reopened")  # fmt: skip
    assert ff.proc.poll() is None  # the default action of SIGHUP would have ended it

    send_tcp(port, frame([("after.rotation", (ts, 2.0))]))
    bf.wait_for(lambda: bf.stored == 2)
    assert ff.terminate() == 0
    assert "fastforward stopped" in log.read_text()
    assert "fastforward stopped" not in (tmp_path / "ff.log.1").read_text()
