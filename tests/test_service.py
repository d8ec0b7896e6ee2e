"""`Service` in-process, against the fake Blueflood: wiring, stop and drain, signals, reports."""

from __future__ import annotations

import logging
import os
import signal
import socket
import time
import urllib.request
from pathlib import Path

import gevent
import pytest

from fastforward.errors import EXIT_OK, EXIT_UNDELIVERED, StartupError
from fastforward.service import Service
from tests.fake_blueflood import FakeBlueflood
from tests.integration.conftest import ANY_PORT, frame
from tests.integration.helpers import Metrics
from tests.support import free_port, wait_until

pytestmark = pytest.mark.integration


def pickle_port(svc: Service) -> int:
    ports = [a[1] for kind, proto, a in svc.receivers.addresses() if proto == "pickle"]
    assert ports, svc.receivers.addresses()
    return int(ports[0])


def send(svc: Service, names: list[str]) -> int:
    """One pickle frame, the i-th name with value i; the timestamp sent."""
    ts = int(time.time())
    with socket.create_connection(("127.0.0.1", pickle_port(svc)), timeout=10) as s:
        s.sendall(frame([(n, (ts, i)) for i, n in enumerate(names)]))
    return ts


def accepted(svc: Service, n: int) -> None:
    wait_until(lambda: svc.stats.get("datapoints_accepted") == n, 10, f"{n} accepted")


def down_url() -> str:
    return f"http://127.0.0.1:{free_port()}"  # nothing listens there


def test_a_datapoint_goes_from_the_socket_to_blueflood_and_into_metrics(
    service,  # noqa: ANN001
    fake_blueflood: FakeBlueflood,
) -> None:
    svc = service("-e", ANY_PORT, "-b", fake_blueflood.url, "-t", "tenant", "-i", "0.1",
                  "--admin-endpoint", ANY_PORT)  # fmt: skip
    svc.start()
    assert svc.admin is not None and svc.admin.port != 0  # the kernel's choice, read back
    ts = send(svc, ["svc.a", "svc.b"])
    fake_blueflood.wait_for(lambda: fake_blueflood.stored == 2)
    assert fake_blueflood.points("tenant", "svc.b") == {ts * 1000: 1}
    url = f"http://127.0.0.1:{svc.admin.port}/metrics"

    def sent_in_metrics() -> bool:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return Metrics(resp.read().decode())["fastforward_datapoints_sent_total"] == 2

    wait_until(sent_in_metrics, 10, "datapoints_sent in /metrics")
    assert svc.stop() == 0


def test_stop_delivers_what_is_buffered(service, fake_blueflood: FakeBlueflood) -> None:  # noqa: ANN001
    # A long interval: nothing is flushed before the stop unless the stop flushes it.
    svc = service("-e", ANY_PORT, "-b", fake_blueflood.url, "-t", "tenant", "-i", "600")
    svc.start()
    send(svc, [f"held.{i}" for i in range(300)])
    accepted(svc, 300)
    assert fake_blueflood.stored == 0
    assert svc.stop() == 0
    assert fake_blueflood.stored == 300


def test_stop_counts_what_could_be_neither_delivered_nor_spooled(service) -> None:  # noqa: ANN001
    svc = service("-e", ANY_PORT, "-b", down_url(), "-t", "tenant", "-i", "600",
                  "--drain-timeout", "0.5")  # fmt: skip
    svc.start()
    send(svc, ["lost.a", "lost.b", "lost.c"])
    accepted(svc, 3)
    assert svc.stop() == 3


def test_stop_with_a_spool_keeps_what_blueflood_did_not_take(service, tmp_path: Path) -> None:  # noqa: ANN001
    spool = tmp_path / "spool"
    svc = service("-e", ANY_PORT, "-b", down_url(), "-t", "tenant", "-i", "600",
                  "--drain-timeout", "0.5", "--spool-dir", str(spool))  # fmt: skip
    svc.start()
    send(svc, ["kept.a", "kept.b"])
    accepted(svc, 2)
    assert svc.stop() == 0
    assert list(spool.glob("*.ffspool"))


def test_sigterm_drains_and_exits_clean_removing_the_pidfile(
    service,  # noqa: ANN001
    fake_blueflood: FakeBlueflood,
    tmp_path: Path,
) -> None:
    pidfile = tmp_path / "ff.pid"
    svc = service("-e", ANY_PORT, "-b", fake_blueflood.url, "-t", "tenant", "-i", "600",
                  "--pidfile", str(pidfile))  # fmt: skip
    runner = gevent.spawn(svc.run)
    wait_until(svc.started.is_set, 10, "the service to start")
    assert pidfile.read_text().strip() == str(os.getpid())
    send(svc, ["term.a"])
    accepted(svc, 1)
    os.kill(os.getpid(), signal.SIGTERM)  # caught by the service's gevent signal handler
    assert runner.get(timeout=30) == EXIT_OK
    assert fake_blueflood.stored == 1
    assert not pidfile.exists()


def test_sigterm_with_undeliverable_data_exits_4(service) -> None:  # noqa: ANN001
    svc = service("-e", ANY_PORT, "-b", down_url(), "-t", "tenant", "-i", "600",
                  "--drain-timeout", "0.5")  # fmt: skip
    runner = gevent.spawn(svc.run)
    wait_until(svc.started.is_set, 10, "the service to start")
    send(svc, ["lost"])
    accepted(svc, 1)
    os.kill(os.getpid(), signal.SIGTERM)
    assert runner.get(timeout=30) == EXIT_UNDELIVERED


def test_a_second_signal_exits_at_once_without_draining(
    service,  # noqa: ANN001
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    exits: list[int] = []
    monkeypatch.setattr(os, "_exit", exits.append)
    monkeypatch.setattr(logging, "shutdown", lambda: None)
    # Blueflood is down and the drain is long: the first SIGTERM starts a drain that lasts.
    svc = service("-e", ANY_PORT, "-b", down_url(), "-t", "tenant", "-i", "600",
                  "--drain-timeout", "30")  # fmt: skip
    runner = gevent.spawn(svc.run)
    wait_until(svc.started.is_set, 10, "the service to start")
    send(svc, ["stuck"])
    accepted(svc, 1)
    os.kill(os.getpid(), signal.SIGTERM)
    wait_until(svc.stopping.is_set, 10, "the stop to begin")
    assert exits == []
    os.kill(os.getpid(), signal.SIGINT)
    wait_until(lambda: exits == [1], 10, "the immediate exit")
    runner.kill(block=True, timeout=10)


def test_a_busy_admin_port_refuses_the_start_and_frees_the_rest(
    service,  # noqa: ANN001
    tmp_path: Path,
) -> None:
    pidfile = tmp_path / "ff.pid"
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        admin = f"tcp:port={busy.getsockname()[1]}:interface=127.0.0.1"
        svc = service("--dry-run", "-e", ANY_PORT, "--admin-endpoint", admin,
                      "--pidfile", str(pidfile))  # fmt: skip
        data_port = 0
        real_start = svc.receivers.start

        def start_and_note_the_port() -> None:
            nonlocal data_port
            real_start()
            data_port = pickle_port(svc)
            assert pidfile.exists()  # written first, so it must be removed on failure

        svc.receivers.start = start_and_note_the_port  # type: ignore[method-assign]
        with pytest.raises(StartupError, match="cannot listen on --admin-endpoint"):
            svc.run()
    with socket.socket() as again:  # the data port was closed again
        again.bind(("127.0.0.1", data_port))
    assert not pidfile.exists()


def test_report_warns_once_per_new_loss(service, caplog: pytest.LogCaptureFixture) -> None:  # noqa: ANN001
    svc = service("--dry-run", "-e", ANY_PORT)
    # A receiver's reason: the codec's are refreshed from the encoder's own counts.
    svc.stats.incr("datapoints_dropped", 3, reason="line_too_long")
    with caplog.at_level(logging.INFO, logger="fastforward"):
        svc.report()
        svc.report()  # nothing new: no second warning
        svc.stats.incr("datapoints_dropped", 2, reason="line_too_long")
        svc.report()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        "datapoints dropped reason=line_too_long: 3 (+3 since last report)",
        "datapoints dropped reason=line_too_long: 5 (+2 since last report)",
    ]
