"""Disk spool: durable bodies, oldest first, corrupt files aside, expiry, several workers."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
import zlib

import pytest

from fastforward.spool import CORRUPT_DIR, DESTINATION_FILE, SUFFIX, Spool, SpoolRefused
from fastforward.stats import Stats

NOW = 1_700_000_000.0  # the fake clock, seconds
NOW_MS = int(NOW * 1000)


def body_of(*times_ms: int, name: str = "a.b") -> bytes:
    """A body as the codec makes it: compact JSON, keys in the Blueflood order."""
    points = [
        {"collectionTime": t, "ttlInSeconds": 86400, "metricValue": i, "metricName": name}
        for i, t in enumerate(times_ms)
    ]
    return json.dumps(points, separators=(",", ":")).encode()


def open_spool(tmp_path, stats=None, max_bytes=10_000_000, **kw) -> Spool:
    return Spool(str(tmp_path / "spool"), max_bytes, stats or Stats(), clock=lambda: NOW, **kw)


def drain(spool: Spool) -> list[bytes]:
    """Replay everything, acking each entry as Blueflood would."""
    out = []
    while (entry := spool.oldest()) is not None:
        out.append(entry.body)
        spool.ack(entry)
    return out


def spool_files(tmp_path) -> list[str]:
    return sorted(n for n in os.listdir(tmp_path / "spool") if n.endswith(SUFFIX))


def test_round_trip_keeps_exact_bytes_and_datapoints(tmp_path):
    spool = open_spool(tmp_path)
    body = body_of(NOW_MS, NOW_MS - 1000)
    assert spool.put(body, 2)
    entry = spool.oldest()
    assert entry is not None
    assert (entry.body, entry.datapoints) == (body, 2)
    assert os.path.exists(entry.path)
    spool.ack(entry)
    assert not os.path.exists(entry.path)
    assert spool.oldest() is None
    assert (spool.files, spool.disk_bytes) == (0, 0)


def test_no_temp_files_remain_after_put(tmp_path):
    spool = open_spool(tmp_path)
    for i in range(5):
        assert spool.put(body_of(NOW_MS + i), 1)
    assert sorted(os.listdir(tmp_path / "spool")) == spool_files(tmp_path)
    assert len(spool_files(tmp_path)) == 5


def test_oldest_first_across_reopen(tmp_path):
    first = open_spool(tmp_path)
    bodies = [body_of(NOW_MS + i) for i in range(6)]
    for b in bodies[:3]:
        assert first.put(b, 1)
    first.close()
    second = open_spool(tmp_path)
    assert second.files == 3
    for b in bodies[3:]:
        assert second.put(b, 1)
    assert drain(second) == bodies


def test_release_keeps_the_entry_for_later(tmp_path):
    spool = open_spool(tmp_path)
    a, b = body_of(NOW_MS), body_of(NOW_MS + 1)
    spool.put(a, 1)
    spool.put(b, 1)
    entry = spool.oldest()
    assert entry is not None and entry.body == a
    # While claimed it is not handed out again; the next one is.
    second = spool.oldest()
    assert second is not None and second.body == b
    spool.release(entry)
    spool.release(second)
    assert spool.files == 2
    assert drain(spool) == [a, b]
    assert spool_files(tmp_path) == []


def test_capacity_refusal_logs_once_per_episode(tmp_path, caplog):
    stats = Stats()
    body = body_of(NOW_MS)
    spool = open_spool(tmp_path, stats, max_bytes=3 * (len(body) + 40))
    puts = [spool.put(body, 1) for _ in range(6)]
    assert puts == [True, True, True, False, False, False]
    assert spool.disk_bytes <= spool.max_bytes
    assert spool.full  # what /health reads
    full_logs = [r for r in caplog.records if "spool full" in r.getMessage()]
    assert len(full_logs) == 1 and full_logs[0].levelno == logging.ERROR
    # Space comes back after a replay; the next time it fills up, it says so again.
    entry = spool.oldest()
    assert entry is not None
    spool.ack(entry)
    assert spool.put(body, 1)
    assert not spool.full
    assert not spool.put(body, 1)
    assert len([r for r in caplog.records if "spool full" in r.getMessage()]) == 2
    assert stats.get("spool_written_bodies") == 4


def test_temp_files_left_by_a_crash_are_removed(tmp_path, caplog):
    spool = open_spool(tmp_path)
    spool.put(body_of(NOW_MS), 1)
    spool.close()
    directory = tmp_path / "spool"
    (directory / ".12345-7.tmp").write_bytes(b"FFSPOOL1 1 100 0000")  # torn mid-write
    reopened = open_spool(tmp_path)
    assert sorted(os.listdir(directory)) == spool_files(tmp_path)
    assert reopened.files == 1
    assert any("interrupted write" in r.getMessage() for r in caplog.records)


def test_temp_file_of_a_live_writer_is_left_alone(tmp_path):
    import fcntl

    spool = open_spool(tmp_path)
    temp = tmp_path / "spool" / ".999-1.tmp"
    with open(temp, "wb") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        f.write(b"in progress")
        f.flush()
        open_spool(tmp_path)
        assert temp.exists()
    spool.close()


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda data: data[: len(data) // 2], id="truncated"),
        pytest.param(lambda data: data[:-2] + b"X]", id="bad-checksum"),
        pytest.param(lambda data: b"", id="empty"),
        pytest.param(lambda data: b"garbage\n" + data, id="bad-header"),
    ],
)
def test_corrupt_file_moved_aside_while_the_rest_replays(tmp_path, caplog, damage):
    stats = Stats()
    spool = open_spool(tmp_path, stats)
    bodies = [body_of(NOW_MS + i) for i in range(3)]
    for b in bodies:
        spool.put(b, 1)
    spool.close()
    victim = tmp_path / "spool" / spool_files(tmp_path)[0]  # the oldest: it must not block
    victim.write_bytes(damage(victim.read_bytes()))

    reopened = open_spool(tmp_path, stats)
    assert drain(reopened) == bodies[1:]
    assert os.listdir(tmp_path / "spool" / CORRUPT_DIR) == [victim.name]
    assert stats.get("spool_corrupt_files") == 1
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert any("corrupt" in r.getMessage() and victim.name in r.getMessage() for r in warnings)


def test_body_that_is_not_a_json_array_is_corrupt(tmp_path):
    stats = Stats()
    spool = open_spool(tmp_path, stats)
    spool.put(b'{"not": "an array"}', 1)
    spool.put(b"[1, 2]", 2)
    good = body_of(NOW_MS)
    spool.put(good, 1)
    assert drain(spool) == [good]
    assert stats.get("spool_corrupt_files") == 2
    assert len(os.listdir(tmp_path / "spool" / CORRUPT_DIR)) == 2


def test_expired_datapoints_dropped_and_counted_once(tmp_path):
    stats = Stats()
    max_past = 3_600_000
    spool = open_spool(tmp_path, stats, max_past_ms=max_past)
    old = NOW_MS - max_past - 1
    edge = NOW_MS - max_past  # exactly at the bound: Blueflood still accepts it
    spool.put(body_of(old, edge, NOW_MS, old), 4)
    entry = spool.oldest()
    assert entry is not None
    assert entry.datapoints == 2
    assert [p["collectionTime"] for p in json.loads(entry.body)] == [edge, NOW_MS]
    assert stats.get("datapoints_dropped", reason="expired_in_spool") == 2
    # Released and read again (also by a new process): not counted twice.
    spool.release(entry)
    spool.close()
    again = open_spool(tmp_path, stats, max_past_ms=max_past).oldest()
    assert again is not None and again.datapoints == 2
    assert stats.get("datapoints_dropped", reason="expired_in_spool") == 2


def test_entry_with_only_expired_datapoints_is_removed(tmp_path):
    stats = Stats()
    spool = open_spool(tmp_path, stats, max_past_ms=1000)
    spool.put(body_of(NOW_MS - 5000, NOW_MS - 6000), 2)
    fresh = body_of(NOW_MS)
    spool.put(fresh, 1)
    assert drain(spool) == [fresh]
    assert spool_files(tmp_path) == []
    assert stats.get("datapoints_dropped", reason="expired_in_spool") == 2
    assert stats.get("spool_replayed_bodies") == 1


def test_two_spools_on_one_directory_never_share_an_entry(tmp_path):
    a = open_spool(tmp_path)
    bodies = [body_of(NOW_MS + i) for i in range(8)]
    for b in bodies:
        a.put(b, 1)
    b = open_spool(tmp_path)
    seen: list[bytes] = []
    held = []
    # Interleave claims: each one must get a different file.
    for spool in [a, b, a, b, b, a, a, b]:
        entry = spool.oldest()
        assert entry is not None
        held.append((spool, entry))
        seen.append(entry.body)
    assert sorted(seen) == sorted(bodies)
    assert a.oldest() is None and b.oldest() is None
    # Acks on one side are seen by the other.
    for spool, entry in held:
        spool.ack(entry)
    assert a.oldest() is None and b.oldest() is None
    assert spool_files(tmp_path) == []


_CHILD = """
import sys, json
from fastforward.spool import Spool
from fastforward.stats import Stats
s = Spool(sys.argv[1], 10**8, Stats(), max_past_ms=-1)
got = []
while (e := s.oldest()) is not None:
    got.append(e.body.decode())
    s.ack(e)
print(json.dumps(got))
"""


def test_worker_processes_replay_disjoint_sets(tmp_path):
    spool = open_spool(tmp_path)
    bodies = [body_of(NOW_MS + i) for i in range(60)]
    for b in bodies:
        spool.put(b, 1)
    spool.close()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _CHILD, str(tmp_path / "spool")], stdout=subprocess.PIPE
        )
        for _ in range(3)
    ]
    results = []
    for p in procs:
        out, _ = p.communicate(timeout=60)
        assert p.returncode == 0
        results.extend(json.loads(out))
    assert sorted(results) == sorted(b.decode() for b in bodies)  # each exactly once
    assert spool_files(tmp_path) == []


def test_files_of_a_dead_worker_are_replayed(tmp_path):
    # A worker that claimed a file and died: the kernel dropped its lock.
    child = "import sys\nfrom fastforward.spool import Spool\nfrom fastforward.stats import Stats\n"
    child += "s = Spool(sys.argv[1], 10**8, Stats(), max_past_ms=-1)\n"
    child += "s.put(b'[]', 0)\nassert s.oldest() is not None\nimport os\nos._exit(0)\n"
    subprocess.run([sys.executable, "-c", child, str(tmp_path / "spool")], check=True, timeout=60)
    assert drain(open_spool(tmp_path, max_past_ms=-1)) == [b"[]"]


def test_gauges_follow_the_spool(tmp_path):
    stats = Stats()
    spool = open_spool(tmp_path, stats)
    for i in range(3):
        spool.put(body_of(NOW_MS + i), 1)
    assert stats.get("spool_files") == 3
    assert stats.get("buffered_bytes", place="disk") == spool.disk_bytes > 0
    on_disk = sum(os.path.getsize(tmp_path / "spool" / n) for n in spool_files(tmp_path))
    assert spool.disk_bytes == on_disk
    entry = spool.oldest()
    assert entry is not None
    spool.ack(entry)
    assert stats.get("spool_files") == 2
    assert stats.get("buffered_bytes", place="disk") == spool.disk_bytes
    assert stats.get("spool_written_bodies") == 3
    assert stats.get("spool_replayed_bodies") == 1
    # A fresh process sees what is on disk.
    stats2 = Stats()
    open_spool(tmp_path, stats2)
    assert stats2.get("spool_files") == 2
    assert stats2.get("buffered_bytes", place="disk") == spool.disk_bytes < on_disk


def test_ack_of_a_foreign_entry_is_refused(tmp_path):
    a = open_spool(tmp_path)
    a.put(body_of(NOW_MS), 1)
    entry = a.oldest()
    assert entry is not None
    b = open_spool(tmp_path)
    with pytest.raises(ValueError):
        b.ack(entry)
    a.ack(entry)


def test_names_sort_in_put_order_even_within_one_clock_tick(tmp_path, monkeypatch):
    monkeypatch.setattr(time, "time_ns", lambda: 1)  # a stuck clock
    spool = open_spool(tmp_path)
    bodies = [body_of(NOW_MS + i) for i in range(5)]
    for b in bodies:
        spool.put(b, 1)
    assert drain(spool) == bodies


def test_disk_error_refuses_the_body_and_leaves_no_temp_file(tmp_path, monkeypatch, caplog):
    stats = Stats()
    spool = open_spool(tmp_path, stats)

    def failing_fsync(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    assert spool.put(body_of(NOW_MS), 1) is False
    assert os.listdir(tmp_path / "spool") == []
    assert (spool.files, stats.get("spool_written_bodies")) == (0, 0)
    assert any("Input/output error" in r.getMessage() for r in caplog.records)
    for _ in range(5):  # an unwritable directory fails every put: one line, not one per body
        assert spool.put(body_of(NOW_MS), 1) is False
    assert sum("spool write to" in r.getMessage() for r in caplog.records) == 1
    monkeypatch.undo()
    assert spool.put(body_of(NOW_MS), 1)
    assert "writable again after 6 failed writes" in caplog.text


def test_trimmed_entry_stays_claimed_while_rewritten(tmp_path):
    a = open_spool(tmp_path, max_past_ms=1000)
    a.put(body_of(NOW_MS - 5000, NOW_MS), 2)
    entry = a.oldest()
    assert entry is not None and entry.datapoints == 1
    b = open_spool(tmp_path, max_past_ms=1000)
    assert b.oldest() is None  # the rewritten file is still held by a
    a.release(entry)
    again = b.oldest()
    assert again is not None and again.body == entry.body
    b.ack(again)
    assert spool_files(tmp_path) == []


def test_each_body_keeps_its_tenant_whatever_the_next_process_says(tmp_path):
    first = open_spool(tmp_path, tenant="111")
    first.put(body_of(NOW_MS), 1)  # received for this spool's tenant
    first.put(body_of(NOW_MS + 1), 1, tenant="333")  # one of another tenant (routing)
    first.close()
    second = open_spool(tmp_path, tenant="222")
    replayed = []
    while (entry := second.oldest()) is not None:
        replayed.append((entry.tenant, entry.body))
        second.ack(entry)
    assert replayed == [("111", body_of(NOW_MS)), ("333", body_of(NOW_MS + 1))]


def test_first_format_files_belong_to_the_opening_tenant_with_a_warning(tmp_path, caplog):
    directory = tmp_path / "spool"
    directory.mkdir()
    body = body_of(NOW_MS)
    header = b"FFSPOOL1 1 %d %08x\n" % (len(body), zlib.crc32(body))
    (directory / f"{1:020d}-1-00000001{SUFFIX}").write_bytes(header + body)
    with caplog.at_level(logging.WARNING):
        spool = open_spool(tmp_path, tenant="222")
    assert "1 files of the first format name no tenant" in caplog.text
    assert "'222'" in caplog.text
    entry = spool.oldest()
    assert entry is not None and (entry.tenant, entry.body) == ("222", body)


def test_trimmed_body_keeps_its_tenant(tmp_path):
    spool = open_spool(tmp_path, tenant="111")
    spool.put(body_of(NOW_MS - 5000, NOW_MS), 2)
    spool.close()
    again = open_spool(tmp_path, tenant="222", max_past_ms=1000)
    entry = again.oldest()
    assert entry is not None and entry.tenant == "111" and entry.datapoints == 1
    again.release(entry)
    again.close()
    entry = open_spool(tmp_path, tenant="222").oldest()  # the rewritten file
    assert entry is not None and entry.tenant == "111"


def test_directory_with_files_for_another_blueflood_is_refused(tmp_path):
    a = open_spool(tmp_path, tenant="t", destination="http://a:19000")
    a.put(body_of(NOW_MS), 1)
    a.close()
    with pytest.raises(SpoolRefused, match=r"holds 1 files for Blueflood http://a:19000, not "):
        open_spool(tmp_path, tenant="t", destination="http://b:19000")
    # the same Blueflood is fine, and once empty the directory may move to another one
    same = open_spool(tmp_path, tenant="t", destination="http://a:19000")
    assert drain(same) == [body_of(NOW_MS)]
    same.close()
    moved = open_spool(tmp_path, tenant="t", destination="http://b:19000")
    assert (tmp_path / "spool" / DESTINATION_FILE).read_text() == "http://b:19000\n"
    moved.close()


def test_directory_in_use_for_another_blueflood_is_refused_even_when_empty(tmp_path):
    running = open_spool(tmp_path, tenant="t", destination="http://a:19000")
    with pytest.raises(SpoolRefused, match="in use by a fastforward for Blueflood http://a"):
        open_spool(tmp_path, tenant="t", destination="http://b:19000")
    beside = open_spool(tmp_path, tenant="u", destination="http://a:19000")  # workers, tenants
    beside.close()
    running.close()


def test_unwritable_directory_is_refused_when_opened(tmp_path, monkeypatch):
    def failing_fsync(fd):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(SpoolRefused, match="cannot write a file there: Input/output error"):
        open_spool(tmp_path)
    monkeypatch.undo()
    assert os.listdir(tmp_path / "spool") == []  # the probe file is gone
