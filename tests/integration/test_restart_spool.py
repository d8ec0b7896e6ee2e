"""The disk spool across restarts: SIGTERM with Blueflood down, SIGKILL, corrupt files."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import gevent
import pytest

from fastforward.spool import Spool
from fastforward.stats import Stats

from .conftest import ANY_PORT, TENANT, FakeBlueflood, frame, send_tcp, wait_until
from .helpers import Outage, http_get, obey_file_permissions, scrape

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CAP = 1_048_576  # --max-buffer-bytes, its minimum


def _args(bf: FakeBlueflood, spool: Path, *extra: str) -> list[str]:
    return ["-e", ANY_PORT, "-b", bf.url, "-t", TENANT,
            "-i", "0.2", "--spool-dir", str(spool), "--drain-timeout", "2",
            "--admin-endpoint", ANY_PORT, *extra]  # fmt: skip


def _send(port: int, prefix: str, ts: int, frames: int, per_frame: int = 500) -> set:
    sent = set()
    for f in range(frames):
        items = [(f"{prefix}.{f}.{i}", (ts, f * per_frame + i)) for i in range(per_frame)]
        send_tcp(port, frame(items))
        sent.update((n, ts * 1000) for n, _ in items)
    return sent


def _value(name: str) -> int:
    """The value `_send` gave ``<prefix>.<frame>.<i>``."""
    _prefix, f, i = name.rsplit(".", 2)
    return int(f) * 500 + int(i)


def _spooled(spool: Path) -> set:
    """(name, collectionTime) of every datapoint in the spool files (not in corrupt/)."""
    out = set()
    for path in spool.glob("*.ffspool"):
        data = path.read_bytes()
        body = data[data.index(b"\n") + 1 :]
        out.update((p["metricName"], p["collectionTime"]) for p in json.loads(body))
    return out


def _stored(bf: FakeBlueflood) -> set:
    return {(name, ct) for (_t, name), pts in bf.store.items() for ct in pts}


def test_sigterm_with_blueflood_down_spools_and_replays_at_next_start(
    fake_blueflood: FakeBlueflood,
    run_ff,  # noqa: ANN001
    tmp_path: Path,
) -> None:
    bf, spool = fake_blueflood, tmp_path / "spool"
    outage = Outage(bf)
    outage.mode = "503"
    ff = run_ff(*_args(bf, spool))
    port = ff.port()
    admin = ff.admin_port
    sent = _send(port, "term", int(time.time()), frames=20)
    wait_until(lambda: scrape(admin)["fastforward_datapoints_accepted_total"] == len(sent), 15,
             "every datapoint read")  # fmt: skip
    assert ff.terminate() == 0
    assert "written to the spool" in ff.stderr
    assert _spooled(spool) == sent
    assert bf.stored == 0

    outage.mode = None
    ff2 = run_ff(*_args(bf, spool))
    port = ff2.port()
    admin = ff2.admin_port
    wait_until(lambda: bf.stored >= len(sent), 30, "the spool replayed")
    assert _stored(bf) == sent
    assert bf.duplicates == 0
    wait_until(lambda: not list(spool.glob("*.ffspool")), 10, "the spool emptied")
    m = scrape(admin)
    assert m["fastforward_spool_files"] == 0
    assert m["fastforward_buffered_bytes"] == 0
    assert m["fastforward_spool_replayed_bodies_total"] >= 1
    assert ff2.terminate() == 0
    assert "Traceback" not in ff.stderr + ff2.stderr


def test_sigkill_loses_at_most_the_memory_buffer(
    fake_blueflood: FakeBlueflood,
    run_ff,  # noqa: ANN001
    tmp_path: Path,
) -> None:
    """Blueflood down and the memory cap reached: what overflows is on disk before the kill,
    so a SIGKILL can lose only what the memory buffer held (at most --max-buffer-bytes)."""
    bf, spool = fake_blueflood, tmp_path / "spool"
    outage = Outage(bf)
    outage.mode = "503"
    ff = run_ff(*_args(bf, spool, "--max-buffer-bytes", str(CAP)))
    port = ff.port()
    admin = ff.admin_port
    ts = int(time.time())
    sent = _send(port, "kill", ts, frames=80)  # 40,000 datapoints, ~4 MB of JSON: 4x the cap
    wait_until(lambda: scrape(admin)["fastforward_datapoints_accepted_total"] == len(sent), 20,
             "every datapoint read")  # fmt: skip
    # Right after the last read, the body being filled may still sit beside a full outbox; the
    # burst's end hands it over and what is over the cap goes to the spool. Once that settled,
    # memory holds at most the cap.
    wait_until(
        lambda: scrape(admin).get("fastforward_buffered_bytes", place="memory") <= CAP,
        10,
        "memory back under the cap",
    )
    m = scrape(admin)
    assert m["fastforward_spool_written_bodies_total"] > 0
    ff.proc.send_signal(signal.SIGKILL)
    ff.wait(10)

    on_disk = _spooled(spool)
    lost = sent - on_disk
    # The JSON those datapoints made (the unit of --max-buffer-bytes): at most the cap.
    lost_bytes = sum(
        len(json.dumps({"collectionTime": ct, "ttlInSeconds": 86400, "metricValue": _value(name),
                        "metricName": name}, separators=(",", ":"))) + 1
        for name, ct in lost
    )  # fmt: skip
    assert lost_bytes <= CAP, f"{len(lost)} datapoints ({lost_bytes} bytes) lost, over the cap"
    print(f"SIGKILL: {len(on_disk)} of {len(sent)} on disk, {len(lost)} lost ({lost_bytes} B)")

    outage.mode = None
    ff2 = run_ff(*_args(bf, spool))
    port = ff2.port()
    admin = ff2.admin_port
    wait_until(lambda: bf.stored >= len(on_disk), 30, "the spool replayed")
    assert _stored(bf) == on_disk
    assert bf.duplicates == 0
    assert ff2.terminate() == 0


def test_corrupt_spool_files_are_moved_aside_and_the_rest_replays(
    fake_blueflood: FakeBlueflood,
    run_ff,  # noqa: ANN001
    tmp_path: Path,
) -> None:
    spool = tmp_path / "spool"
    writer = Spool(str(spool), 10**9, Stats())
    ts = int(time.time()) * 1000
    good: set = set()
    paths = []
    for k in range(4):
        points = [{"collectionTime": ts, "ttlInSeconds": 86400, "metricValue": i,
                   "metricName": f"spooled.{k}.{i}"} for i in range(50)]  # fmt: skip
        writer.put(json.dumps(points, separators=(",", ":")).encode(), len(points))
        paths.append(sorted(spool.glob("*.ffspool"))[-1])
        if k in (0, 3):
            good.update((p["metricName"], ts) for p in points)
    writer.close()
    # File 1 torn (half its bytes), file 2 overwritten with garbage of the same length.
    data = paths[1].read_bytes()
    paths[1].write_bytes(data[: len(data) // 2])
    paths[2].write_bytes(os.urandom(len(paths[2].read_bytes())))

    ff = run_ff(*_args(fake_blueflood, spool))
    admin = ff.admin_port
    wait_until(lambda: fake_blueflood.stored >= len(good), 20, "the good files replayed")
    assert _stored(fake_blueflood) == good
    corrupt = sorted(p.name for p in (spool / "corrupt").iterdir())
    assert corrupt == sorted([paths[1].name, paths[2].name])
    wait_until(lambda: not list(spool.glob("*.ffspool")), 10, "the spool emptied")
    assert scrape(admin)["fastforward_spool_corrupt_files_total"] == 2
    assert ff.terminate() == 0
    assert ff.stderr.count("moved to") == 2
    assert "Traceback" not in ff.stderr


def test_full_spool_applies_backpressure_and_loses_nothing(
    fake_blueflood: FakeBlueflood,
    run_ff,  # noqa: ANN001
    tmp_path: Path,
) -> None:
    """Memory cap and spool both full while Blueflood is down: the daemon says so, stops
    reading (the data waits in the kernel's socket buffers), and delivers everything later."""
    bf, spool = fake_blueflood, tmp_path / "spool"
    outage = Outage(bf)
    outage.mode = "503"
    ff = run_ff(*_args(bf, spool, "--max-buffer-bytes", str(CAP),
                       "--spool-max-bytes", str(CAP)))  # fmt: skip
    port = ff.port()
    admin = ff.admin_port
    ts = int(time.time())
    sender = gevent.spawn(_send, port, "full", ts, 80)  # ~4 MB of JSON: memory + spool + more
    wait_until(lambda: "spool full" in ff.stderr, 20, "the spool-full error")
    wait_until(lambda: scrape(admin)["fastforward_backpressure_active"] == 1, 10, "backpressure")
    url = f"http://127.0.0.1:{admin}/health"
    wait_until(lambda: http_get(url)[0] == 503, 15, "/health 503")
    assert "spool full" in http_get(url)[1]
    sent = sender.get(timeout=60)  # one connection per frame: the kernel holds the rest
    # Paused, not dropping: part of what was sent is still unread, and nothing was dropped.
    m = scrape(admin)
    assert m["fastforward_datapoints_accepted_total"] < len(sent)
    assert m["fastforward_datapoints_dropped_total"] == 0
    outage.mode = None
    wait_until(lambda: bf.stored >= len(sent), 60, "everything delivered")
    assert _stored(bf) == sent
    assert bf.duplicates == 0
    wait_until(lambda: not list(spool.glob("*.ffspool")), 20, "the spool emptied")
    assert ff.terminate() == 0
    assert "ERROR" in next(ln for ln in ff.stderr.splitlines() if "spool full" in ln)


def test_spooled_data_goes_to_the_tenant_it_was_received_for(
    fake_blueflood: FakeBlueflood,
    run_ff,  # noqa: ANN001
    tmp_path: Path,
) -> None:
    """Received for tenant 111 while Blueflood is down, spooled at stop; the next start says
    -t 222: the spooled data still lands in 111, and only new data in 222."""
    bf, spool = fake_blueflood, tmp_path / "spool"
    outage = Outage(bf)
    outage.mode = "503"
    ff = run_ff(*[a if a != TENANT else "111" for a in _args(bf, spool)])
    port = ff.port()
    admin = ff.admin_port
    sent = _send(port, "t111", int(time.time()), frames=2)
    wait_until(lambda: scrape(admin)["fastforward_datapoints_accepted_total"] == len(sent), 15,
             "every datapoint read")  # fmt: skip
    assert ff.terminate() == 0
    assert _spooled(spool) == sent

    outage.mode = None
    ff2 = run_ff(*[a if a != TENANT else "222" for a in _args(bf, spool)])
    port = ff2.port()
    admin = ff2.admin_port
    fresh = _send(port, "t222", int(time.time()), frames=1)
    wait_until(lambda: bf.stored >= len(sent) + len(fresh), 30, "the spool replayed")
    assert ff2.terminate() == 0
    by_tenant: dict[str, set] = {}
    for (tenant, name), points in bf.store.items():
        by_tenant.setdefault(tenant, set()).update((name, ct) for ct in points)
    assert by_tenant == {"111": sent, "222": fresh}


def _no_spool_args(bf_url: str, *extra: str) -> list[str]:
    return ["-e", ANY_PORT, "-b", bf_url, "-t", TENANT,
            "-i", "0.2", "--drain-timeout", "1", *extra]  # fmt: skip


def test_stop_that_could_not_save_everything_exits_4_with_the_count(
    fake_blueflood: FakeBlueflood,
    run_ff,  # noqa: ANN001
) -> None:
    """Blueflood down, no spool, a short --drain-timeout: SIGTERM exits 4 and says how many
    datapoints were lost; the final summary counts them as dropped. (With a spool, the same
    stop exits 0: test_sigterm_with_blueflood_down_spools_and_replays_at_next_start.)"""
    outage = Outage(fake_blueflood)
    outage.mode = "503"
    ff = run_ff(*_no_spool_args(fake_blueflood.url, "--admin-endpoint",
                                ANY_PORT))  # fmt: skip
    port = ff.port()
    admin = ff.admin_port
    sent = _send(port, "lost", int(time.time()), frames=3)
    wait_until(lambda: scrape(admin)["fastforward_datapoints_accepted_total"] == len(sent), 15,
             "every datapoint read")  # fmt: skip
    assert ff.terminate() == 4
    err = ff.stderr
    assert f"fastforward stopped; {len(sent)} datapoints lost (neither delivered nor " \
        "spooled), exit status 4" in err  # fmt: skip
    summary = [ln for ln in err.splitlines() if "datapoints: received" in ln][-1]
    assert f"dropped {len(sent)}," in summary and "buffered 0;" in summary
    assert f"reason=undelivered_at_stop: {len(sent)}" in err
    assert fake_blueflood.stored == 0


def test_spool_unwritable_while_running_is_not_a_clean_stop(
    fake_blueflood: FakeBlueflood,
    run_ff,  # noqa: ANN001
    tmp_path: Path,
) -> None:
    """The spool directory becomes read-only after the start; the bodies it then cannot take
    at stop are counted as lost, and the exit status is 4, not 0."""
    outage = Outage(fake_blueflood)
    outage.mode = "503"
    spool = tmp_path / "spool"
    ff = run_ff(*_no_spool_args(fake_blueflood.url, "--spool-dir", str(spool), "--admin-endpoint",
                                ANY_PORT),
                preexec_fn=obey_file_permissions)  # fmt: skip
    port, admin = ff.port(), ff.admin_port
    spool.chmod(0o555)
    sent = _send(port, "ro", int(time.time()), frames=1)
    wait_until(lambda: scrape(admin).get("fastforward_retries_total", cause="503") > 0, 15,
               "a failed POST")  # fmt: skip
    assert ff.terminate() == 4
    assert "spool write to" in ff.stderr and "Permission denied" in ff.stderr
    assert f"fastforward stopped; {len(sent)} datapoints lost" in ff.stderr
    assert not list(spool.glob("*.ffspool"))
