"""``--workers 2``: the real supervisor and its two workers between real sockets and the fake
Blueflood. Every datapoint arrives exactly once; a worker killed with SIGKILL is replaced and
service goes on; SIGTERM drains both and exits 0; /metrics sums over the workers."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import time
from pathlib import Path

import gevent
import pytest

from bench.procnet import owner as owner_of

from .conftest import TENANT, FakeBlueflood, frame, free_port, wait_until
from .helpers import Outage, datapoint_counts, http_get, scrape

pytestmark = [pytest.mark.integration, pytest.mark.slow]

READY = "all 2 workers started"


def start_two(run_ff, bf: FakeBlueflood, *extra: str):  # noqa: ANN001, ANN201
    port, admin = free_port(), free_port()
    ff = run_ff(
        "--workers", "2", "-e", f"tcp:port={port}:interface=127.0.0.1", "-b", bf.url,
        "-t", TENANT, "-i", "0.2", "--admin-endpoint", f"tcp:port={admin}:interface=127.0.0.1",
        *extra, wait=False,
    )  # fmt: skip
    ff.wait_started(marker=READY)
    return ff, port, admin


def worker_pids(ff) -> dict[int, int]:  # noqa: ANN001
    """Worker id to the pid it runs as now (the latest start in the supervisor's log)."""
    pids: dict[int, int] = {}
    for wid, pid in re.findall(r"worker (\d+) started \(pid (\d+)\)", ff.stderr):
        pids[int(wid)] = int(pid)
    return pids


def connections_on_each_worker(port: int, pids: dict[int, int]) -> dict[int, list[socket.socket]]:
    """Open connections until every worker holds at least one; worker id to its connections.

    The kernel hands a connection on the shared socket to whichever worker accepts first, so
    which one got it is read from /proc: the worker whose descriptors include the accepted
    socket."""
    held: dict[int, list[socket.socket]] = {wid: [] for wid in pids}
    try:
        return _spread(port, pids, held)
    except BaseException:
        for conns in held.values():
            for s in conns:
                s.close()
        raise


def _spread(
    port: int, pids: dict[int, int], held: dict[int, list[socket.socket]]
) -> dict[int, list[socket.socket]]:
    for _ in range(60):
        s = socket.create_connection(("127.0.0.1", port), timeout=20)
        client_port = s.getsockname()[1]
        owner: list[int | None] = [None]

        def found(client_port: int = client_port, owner: list[int | None] = owner) -> bool:
            owner[0] = owner_of(port, client_port, pids)
            return owner[0] is not None

        try:
            wait_until(found, 10, "the connection to be accepted by a worker")
        except AssertionError:
            s.close()
            raise
        assert owner[0] is not None
        held[owner[0]].append(s)
        if all(held.values()):
            return held
    raise AssertionError(f"60 connections, and still a worker without one: {held}")


def send_frames(s: socket.socket, prefix: str, frames: int, ts: int) -> set[tuple[str, int]]:
    sent: set[tuple[str, int]] = set()
    for f in range(frames):
        names = [f"{prefix}.f{f}.{i}" for i in range(50)]
        s.sendall(frame([(n, (ts, i)) for i, n in enumerate(names)]))
        sent.update((n, ts * 1000) for n in names)
    return sent


def send_connections(port: int, prefix: str, connections: int, frames: int, ts: int) -> set:
    """``connections`` concurrent TCP senders, ``frames`` frames of 50 each; what was sent."""
    sent: set[tuple[str, int]] = set()

    def one(c: int) -> None:
        with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
            for f in range(frames):
                names = [f"{prefix}.c{c}.f{f}.{i}" for i in range(50)]
                s.sendall(frame([(n, (ts, i)) for i, n in enumerate(names)]))
                sent.update((n, ts * 1000) for n in names)
                gevent.sleep(0.01)

    gevent.joinall([gevent.spawn(one, c) for c in range(connections)], raise_error=True)
    return sent


def test_two_workers_deliver_every_datapoint_exactly_once(
    fake_blueflood: FakeBlueflood,
    run_ff,  # noqa: ANN001
) -> None:
    bf = fake_blueflood
    ff, port, admin = start_two(run_ff, bf)
    ts = int(time.time())
    sent = send_connections(port, "once", connections=8, frames=20, ts=ts)
    assert len(sent) == 8 * 20 * 50
    bf.wait_for(lambda: bf.stored >= len(sent), timeout=15)
    counts = datapoint_counts([r.body for r in bf.ingests()])
    assert set(counts) == sent
    assert max(counts.values()) == 1, "a datapoint arrived twice"
    assert ff.terminate() == 0


def test_metrics_sum_over_the_workers(fake_blueflood: FakeBlueflood, run_ff) -> None:  # noqa: ANN001
    bf = fake_blueflood
    ff, port, admin = start_two(run_ff, bf)
    held = connections_on_each_worker(port, worker_pids(ff))
    ts = int(time.time())
    per_worker = {wid: 0 for wid in held}
    for wid, conns in held.items():
        for k, s in enumerate(conns):
            per_worker[wid] += len(send_frames(s, f"sum.w{wid}.c{k}", 2 + wid, ts))
            s.sendall(b"\x00\x00\x00\x03abc")  # a refused frame: one dropped, per connection
            s.close()
    n_conns = sum(len(c) for c in held.values())
    total = sum(per_worker.values()) + n_conns
    assert all(per_worker.values())
    wait_until(
        lambda: scrape(admin)["fastforward_datapoints_received_total"] == total,
        10,
        f"/metrics to show {total} datapoints received ({per_worker} by worker)",
    )
    bf.wait_for(lambda: bf.stored >= total - n_conns, timeout=15)
    sent = total - n_conns
    wait_until(lambda: scrape(admin)["fastforward_datapoints_sent_total"] == sent, 10, "sent")
    m = scrape(admin)
    assert m.get("fastforward_datapoints_dropped_total", reason="bad_frame") == n_conns
    assert m.get("fastforward_connections_accepted_total", protocol="pickle") == n_conns
    assert m["fastforward_uptime_seconds"] > 0
    assert http_get(f"http://127.0.0.1:{admin}/health") == (200, "ok\n")
    # /debug merges the workers' tables: one row for our address, samples from both.
    wait_until(
        lambda: (
            json.loads(http_get(f"http://127.0.0.1:{admin}/debug/senders")[1])["senders"]
            .get("127.0.0.1", {})
            .get("datapoints_received")
            == total
        ),
        5,
        "/debug/senders to sum the workers",
    )
    row = json.loads(http_get(f"http://127.0.0.1:{admin}/debug/senders")[1])["senders"]["127.0.0.1"]
    assert row["connections"] == n_conns and row["dropped"] == {"bad_frame": n_conns}
    rejects = json.loads(http_get(f"http://127.0.0.1:{admin}/debug/rejects")[1])["rejects"]
    assert {r["worker"] for r in rejects["bad_frame"]} == set(held)
    # Each worker's own log line agrees with its share.
    for wid, n in per_worker.items():
        n += len(held[wid])  # its refused frames
        wait_until(
            lambda wid=wid, n=n: (
                f"[worker {wid}] [fastforward] INFO: datapoints: received {n}," in ff.stderr
            ),
            5,
            f"worker {wid} to log {n} received",
        )
    assert ff.terminate() == 0


def test_killed_worker_is_restarted_and_service_goes_on(
    fake_blueflood: FakeBlueflood,
    run_ff,  # noqa: ANN001
) -> None:
    bf = fake_blueflood
    ff, port, admin = start_two(run_ff, bf)
    ts = int(time.time())
    before = send_connections(port, "before", connections=4, frames=2, ts=ts)
    bf.wait_for(lambda: bf.stored >= len(before), timeout=15)
    wait_until(lambda: scrape(admin)["fastforward_datapoints_sent_total"] == len(before), 10, "")

    old = worker_pids(ff)
    os.kill(old[1], signal.SIGKILL)
    wait_until(lambda: worker_pids(ff).get(1) != old[1], 10, "worker 1 to be restarted")
    assert f"worker 1 (pid {old[1]}) died after" in ff.stderr
    assert "killed by SIGKILL; restarting in" in ff.stderr
    # /health says so until the new worker serves, then recovers.
    wait_until(lambda: http_get(f"http://127.0.0.1:{admin}/health")[0] == 200, 15, "healthy")
    assert worker_pids(ff)[2] == old[2]
    restarts = scrape(admin)
    assert restarts.get("fastforward_worker_restarts_total", worker="1") == 1
    assert restarts.get("fastforward_worker_restarts_total", worker="2") == 0

    # New connections are all served (by either worker), nothing twice.
    after = send_connections(port, "after", connections=8, frames=2, ts=ts)
    bf.wait_for(lambda: bf.stored >= len(before) + len(after), timeout=15)
    counts = datapoint_counts([r.body for r in bf.ingests()])
    assert set(counts) == before | after
    assert max(counts.values()) == 1
    # What the dead worker had sent stays counted: the sums do not go backwards.
    wait_until(
        lambda: scrape(admin)["fastforward_datapoints_sent_total"] == len(before) + len(after),
        10,
        "sent counter to include the dead worker's share",
    )
    assert ff.terminate() == 0
    assert "Traceback" not in ff.stderr


def test_sigterm_drains_both_workers_and_exits_0(
    fake_blueflood: FakeBlueflood,
    run_ff,  # noqa: ANN001
    tmp_path: Path,
) -> None:
    bf = fake_blueflood
    pidfile = tmp_path / "ff.pid"
    # A long interval: what was received sits in the workers' memory until the drain.
    ff, port, admin = start_two(run_ff, bf, "-i", "60", "--pidfile", str(pidfile))
    assert int(pidfile.read_text()) == ff.proc.pid  # the supervisor's pid, not a worker's
    workers = worker_pids(ff)
    held = connections_on_each_worker(port, workers)
    ts = int(time.time())
    sent: set[tuple[str, int]] = set()
    for wid, conns in held.items():
        for k, s in enumerate(conns):
            sent |= send_frames(s, f"drain.w{wid}.c{k}", 3, ts)
            s.close()
    wait_until(
        lambda: scrape(admin)["fastforward_datapoints_received_total"] == len(sent), 10, "rx"
    )
    assert bf.stored == 0
    ff.proc.send_signal(signal.SIGTERM)
    assert ff.wait(30) == 0
    assert set(datapoint_counts([r.body for r in bf.ingests()])) == sent
    assert bf.duplicates == 0
    for wid, pid in workers.items():
        assert f"[worker {wid}] [fastforward] INFO: fastforward stopped" in ff.stderr
        assert not os.path.exists(f"/proc/{pid}")
    assert "died" not in ff.stderr
    assert "Traceback" not in ff.stderr
    assert not pidfile.exists()


def test_a_worker_that_lost_data_at_stop_makes_the_supervisor_exit_4(
    fake_blueflood: FakeBlueflood,
    run_ff,  # noqa: ANN001
) -> None:
    Outage(fake_blueflood).mode = "503"  # down for the whole run, and no spool
    ff, port, admin = start_two(run_ff, fake_blueflood, "--drain-timeout", "1")
    with socket.create_connection(("127.0.0.1", port)) as s:
        sent = send_frames(s, "lost", 2, int(time.time()))
    wait_until(
        lambda: scrape(admin)["fastforward_datapoints_received_total"] == len(sent), 10, "rx"
    )
    ff.proc.send_signal(signal.SIGTERM)
    assert ff.wait(30) == 4
    assert f"{len(sent)} datapoints lost (neither delivered nor spooled)" in ff.stderr
    assert "supervisor stopped; some datapoints were neither delivered nor spooled" in ff.stderr
    assert "Traceback" not in ff.stderr


def test_workers_start_failure_stops_the_start(run_ff, tmp_path: Path) -> None:  # noqa: ANN001
    # A spool directory that cannot be created fails in the workers: the supervisor gives up
    # with their exit code (3, startup failure) instead of restarting them forever.
    blocker = tmp_path / "file"
    blocker.write_text("")
    ff = run_ff(
        "--workers", "2", "-e", f"tcp:port={free_port()}:interface=127.0.0.1", "-b", "-",
        "--spool-dir", str(blocker / "spool"), wait=False,
    )  # fmt: skip
    assert ff.wait(30) == 3
    assert "failed to start" in ff.stderr
    assert "restarting" not in ff.stderr


def test_unix_and_udp_listeners_are_shared_too(
    fake_blueflood: FakeBlueflood,
    run_ff,  # noqa: ANN001
    tmp_path: Path,
) -> None:
    bf = fake_blueflood
    path = tmp_path / "ff.sock"
    udp_port = free_port(socket.SOCK_DGRAM)
    ff = run_ff(
        "--workers", "2", "-e", f"unix:{path}", "--line-endpoint",
        f"udp:port={udp_port}:interface=127.0.0.1", "-b", bf.url, "-t", TENANT, "-i", "0.2",
        wait=False,
    )  # fmt: skip
    ff.wait_started(marker=READY)
    ts = int(time.time())
    for k in range(6):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as u:
            u.connect(str(path))
            u.sendall(frame([(f"unix.{k}", (ts, k))]))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as d:
        for k in range(6):
            d.sendto(f"udp.{k} {k} {ts}\n".encode(), ("127.0.0.1", udp_port))
    bf.wait_for(lambda: bf.stored >= 12, timeout=15)
    names = {name for name, _ct in datapoint_counts([r.body for r in bf.ingests()])}
    assert names == {f"unix.{k}" for k in range(6)} | {f"udp.{k}" for k in range(6)}
    assert bf.duplicates == 0
    assert ff.terminate() == 0
    assert not path.exists()  # the socket file goes with the last one to close it


def test_a_spool_left_behind_is_replayed_once_by_the_workers(
    fake_blueflood: FakeBlueflood,
    run_ff,  # noqa: ANN001
    tmp_path: Path,
) -> None:
    from fastforward.spool import Spool
    from fastforward.stats import Stats

    bf = fake_blueflood
    spool_dir = tmp_path / "spool"
    ts_ms = int(time.time()) * 1000
    left = Spool(str(spool_dir), 10_000_000, Stats())
    expected = set()
    for b in range(20):
        points = [
            {"collectionTime": ts_ms, "ttlInSeconds": 86400, "metricValue": i,
             "metricName": f"spooled.b{b}.{i}"}
            for i in range(10)
        ]  # fmt: skip
        left.put(json.dumps(points, separators=(",", ":")).encode(), len(points))
        expected |= {(p["metricName"], ts_ms) for p in points}
    left.close()
    ff, _port, admin = start_two(run_ff, bf, "--spool-dir", str(spool_dir))
    bf.wait_for(lambda: bf.stored >= len(expected), timeout=15)
    counts = datapoint_counts([r.body for r in bf.ingests()])
    assert set(counts) == expected
    assert max(counts.values()) == 1  # flock claims: no body replayed by both workers
    wait_until(lambda: scrape(admin)["fastforward_spool_files"] == 0, 10, "an empty spool")
    assert ff.terminate() == 0


def test_workers_stop_when_the_supervisor_is_killed(
    fake_blueflood: FakeBlueflood,
    run_ff,  # noqa: ANN001
) -> None:
    ff, _port, _admin = start_two(run_ff, fake_blueflood)
    workers = worker_pids(ff)
    ff.proc.kill()
    ff.proc.wait(timeout=10)
    # The control channel reaches end of file: each worker drains and exits, none is orphaned.
    try:
        wait_until(
            lambda: not any(os.path.exists(f"/proc/{pid}") for pid in workers.values()),
            15,
            "the workers to exit",
        )
    finally:
        for pid in workers.values():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    for wid in workers:
        assert f"[worker {wid}] [fastforward.supervisor] WARNING: supervisor gone" in ff.stderr


def test_connections_are_spread_over_the_workers(
    fake_blueflood: FakeBlueflood,
    run_ff,  # noqa: ANN001
) -> None:
    # Idle workers race for every connection, and the one awake tends to win them all; a
    # busier worker leaves new connections to a less busy one for a few milliseconds.
    ff, port, _admin = start_two(run_ff, fake_blueflood)
    pids = worker_pids(ff)
    conns = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(8)]
    try:
        owners: list[int | None] = [None] * len(conns)

        def all_owned() -> bool:
            for i, s in enumerate(conns):
                if owners[i] is None:
                    owners[i] = owner_of(port, s.getsockname()[1], pids)
            return None not in owners

        wait_until(all_owned, 10, "every connection to be accepted")
        assert min(owners.count(1), owners.count(2)) >= 2, owners
    finally:
        for s in conns:
            s.close()
    assert ff.terminate() == 0


def test_log_dir_rotation_is_done_by_the_supervisor_alone(
    fake_blueflood: FakeBlueflood,
    run_ff,  # noqa: ANN001
    tmp_path: Path,
) -> None:
    log_dir = tmp_path / "logs"
    log = log_dir / "carbon_forwarder.log"
    env = {"LOG_DIR": str(log_dir), "LOG_ROTATE_LENGTH": "1000", "MAX_LOG_ROTATED_FILES": "3"}
    port = free_port()
    ff = run_ff(
        "--workers", "2", "-e", f"tcp:port={port}:interface=127.0.0.1",
        "-b", fake_blueflood.url, "-t", TENANT, "-i", "0.2", env=env, wait=False, log=log,
    )  # fmt: skip
    ff.wait_started(marker=READY, log=log)
    # The start alone writes more than 1000 bytes: the supervisor's check rotates the file.
    rotated = log_dir / "carbon_forwarder.log.1"
    wait_until(rotated.exists, 10, "a rotation")
    # Both workers write their next lines to the new file: they reopened it.
    pids = {int(w): int(p) for w, p in re.findall(r"worker (\d+) started \(pid (\d+)\)",
                                                    rotated.read_text())}  # fmt: skip
    held = connections_on_each_worker(port, pids)
    for wid, conns in held.items():
        for s in conns:
            send_frames(s, f"rot.w{wid}", 1, int(time.time()))
            s.close()
    wait_until(
        lambda: "[worker 1]" in log.read_text() and "[worker 2]" in log.read_text(),
        10,
        "both workers in the new file",
    )
    assert ff.terminate() == 0
    assert not (log_dir / "carbon_forwarder.log.3").exists()  # nobody rotated on their own
