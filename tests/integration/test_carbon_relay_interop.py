"""Interoperability with a real sender: graphite's own carbon-relay forwards to fastforward.

carbon-relay (the ``carbon`` package, in the ``test`` extra with ``whisper``) takes plaintext on
its line port and relays it over the pickle protocol, in frames of up to 500 datapoints, to
fastforward; every datapoint must reach the fake Blueflood with its value and timestamp.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import ANY_PORT, TENANT, FakeBlueflood, free_port, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DATAPOINTS = 5000


def _relay_script() -> Path:
    script = Path(sys.executable).parent / "carbon-relay.py"
    if not script.exists():
        if sys.version_info >= (3, 12):  # carbon 1.1.10 does not install there (pyproject.toml)
            pytest.skip("graphite's carbon does not install on Python 3.12+")
        pytest.fail(f"{script} not found: install the test extra (carbon, whisper)")
    return script


def _write_conf(root: Path, line_port: int, ff_port: int) -> Path:
    conf_dir = root / "conf"
    conf_dir.mkdir(parents=True)
    for d in ("storage", "log", "run"):
        (root / d).mkdir()
    # carbon refuses to start without a storage-schemas.conf beside carbon.conf.
    (conf_dir / "storage-schemas.conf").write_text("[default]\npattern = .*\nretentions = 60s:1d\n")
    conf = conf_dir / "carbon.conf"
    conf.write_text(
        f"""[cache]
STORAGE_DIR = {root}/storage
LOCAL_DATA_DIR = {root}/storage/whisper
LOG_DIR = {root}/log
PID_DIR = {root}/run

[relay]
LINE_RECEIVER_INTERFACE = 127.0.0.1
LINE_RECEIVER_PORT = {line_port}
PICKLE_RECEIVER_INTERFACE = 127.0.0.1
PICKLE_RECEIVER_PORT = 0
ENABLE_UDP_LISTENER = False
RELAY_METHOD = consistent-hashing
REPLICATION_FACTOR = 1
DESTINATIONS = 127.0.0.1:{ff_port}:a
DESTINATION_PROTOCOL = pickle
MAX_DATAPOINTS_PER_MESSAGE = 500
MAX_QUEUE_SIZE = {DATAPOINTS * 4}
USE_FLOW_CONTROL = True
CARBON_METRIC_INTERVAL = 0
LOG_LISTENER_CONN_SUCCESS = False
"""
    )
    return conf


def _port_open(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def test_carbon_relay_forwards_everything_over_pickle(
    fake_blueflood: FakeBlueflood,
    run_ff,  # noqa: ANN001
    tmp_path: Path,
) -> None:
    ff = run_ff("-e", ANY_PORT, "-b", fake_blueflood.url,
                "-t", TENANT, "-i", "0.2")  # fmt: skip
    ff_port = ff.port()
    line_port = free_port()  # carbon-relay's: its configuration must name one
    root = tmp_path / "graphite"
    conf = _write_conf(root, line_port, ff_port)
    env = dict(os.environ, GRAPHITE_ROOT=str(root))
    log_path = root / "relay-stdout.txt"
    with open(log_path, "wb") as out:
        relay = subprocess.Popen(
            [sys.executable, str(_relay_script()), f"--config={conf}", "--nodaemon",
             f"--pidfile={root}/run/relay.pid", f"--logdir={root}/log", "start"],
            stdout=out, stderr=subprocess.STDOUT, env=env, cwd=str(root),
        )  # fmt: skip
    try:

        def relay_up() -> bool:
            if relay.poll() is not None:
                raise AssertionError(f"carbon-relay exited:\n{log_path.read_text()}")
            return _port_open(line_port)

        wait_until(relay_up, 30, "carbon-relay's line port")
        ts = int(time.time()) - 60
        expected = {}
        lines = []
        for i in range(DATAPOINTS):
            name = f"relay.interop.m{i % 50}.n{i}"
            value = i * 0.25 if i % 3 else i  # floats and integers
            expected[name] = (ts + i % 60, float(value))
            lines.append(f"{name} {value} {ts + i % 60}\n")
        with socket.create_connection(("127.0.0.1", line_port), timeout=10) as s:
            s.sendall("".join(lines).encode())
        wait_until(lambda: fake_blueflood.stored >= DATAPOINTS, 60, "every relayed datapoint")
        for name, (t, value) in expected.items():
            assert fake_blueflood.points(TENANT, name) == {t * 1000: value}, name
        assert fake_blueflood.stored == DATAPOINTS
        assert fake_blueflood.duplicates == 0
    finally:
        if relay.poll() is None:
            relay.send_signal(signal.SIGTERM)
            try:
                relay.wait(timeout=15)
            except subprocess.TimeoutExpired:
                relay.kill()
                relay.wait(timeout=5)
    assert ff.terminate() == 0
    assert "bad pickle frame" not in ff.stderr
