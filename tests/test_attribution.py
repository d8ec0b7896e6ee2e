"""Who sent what was dropped: the bounded sender table, the samples, the rate-limited warnings,
and the attribution of codec counts to the sender just decoded (both codec implementations)."""

from __future__ import annotations

import json
import logging
import time

import pytest

from fastforward import attribution
from fastforward._codec_py import Encoder as PyEncoder
from fastforward.attribution import (
    Intake,
    RejectLog,
    Senders,
    host_of,
    merge_debug,
    shown,
)
from fastforward.codec import Encoder

NOW_MS = int(time.time()) * 1000


@pytest.fixture(params=["compiled", "python"])
def encoder(request: pytest.FixtureRequest):  # noqa: ANN201
    return Encoder() if request.param == "compiled" else PyEncoder()


def test_shown_escapes_everything_unprintable_and_cuts():
    assert shown(b"a.b 1 2") == "a.b 1 2"
    assert shown(b"\x00\x80\n'\"\\") == "\\x00\\x80\\n\\'\"\\\\"
    assert shown(b"it's") == "it\\'s"
    long = shown(b"x" * 1000)
    assert long == "x" * attribution.SHOWN_BYTES + "..."
    json.dumps(shown(bytes(range(256))))  # always a plain ASCII string


def test_host_of_strips_the_port():
    assert host_of("10.0.0.5:40412") == "10.0.0.5"
    assert host_of("[::1]:2004") == "::1"
    assert host_of("unix:/run/ff.sock") == "unix:/run/ff.sock"
    assert host_of("self-metrics") == "self-metrics"


def test_senders_are_bounded_and_the_evicted_ones_are_summed():
    senders = Senders(limit=3)
    for i in range(10):
        senders.connected(f"10.0.0.{i}")
        senders.account(f"10.0.0.{i}", 5, {"nan": 1})
    senders.account("10.0.0.7", 1, {})  # seen again: most recent
    snap = senders.snapshot()
    assert list(snap["senders"]) == ["10.0.0.7", "10.0.0.9", "10.0.0.8"]
    assert snap["senders"]["10.0.0.7"]["datapoints_received"] == 6
    others = snap["others"]
    assert others["addresses"] == 7
    assert others["connections"] == 7 and others["datapoints_received"] == 35
    assert others["dropped"] == {"nan": 7}


def test_warnings_are_rate_limited_per_reason_and_sender(caplog):
    rejects = RejectLog()
    with caplog.at_level(logging.WARNING, logger="fastforward.receiver"):
        for _ in range(100):
            rejects.record("nan", "10.0.0.1:1000", b"a.nan", 2)
        rejects.record("nan", "10.0.0.2:1000", b"b.nan")  # another sender: its own warning
        rejects.record("bad_line", "10.0.0.1:1001", b"junk")  # another reason: too
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        "dropped 2 from 10.0.0.1:1000: nan, e.g. 'a.nan'",
        "dropped 1 from 10.0.0.2:1000: nan, e.g. 'b.nan'",
        "dropped 1 from 10.0.0.1:1001: bad_line, e.g. 'junk'",
    ]
    # Once the minute has passed, the next one says how many were not logged.
    for state in rejects._limited.values():
        state[0] -= attribution.WARN_EVERY
    with caplog.at_level(logging.WARNING, logger="fastforward.receiver"):
        rejects.record("nan", "10.0.0.1:1002", b"c.nan")
    assert caplog.records[-1].getMessage().endswith("; 198 more from 10.0.0.1 not logged since")
    samples = rejects.snapshot()["rejects"]
    assert len(samples["nan"]) == attribution.SAMPLES_PER_REASON
    assert samples["nan"][-1]["sender"] == "10.0.0.1:1002"
    assert samples["nan"][-1]["sample"] == "c.nan"


def test_the_rate_limiter_forgets_the_oldest_pairs():
    rejects = RejectLog()
    for i in range(attribution.MAX_LIMITED + 50):
        rejects.record("nan", f"10.{i // 65536}.{i // 256 % 256}.{i % 256}:1", b"x")
    assert len(rejects._limited) == attribution.MAX_LIMITED


def test_intake_gives_each_sender_its_own_counts(encoder):
    senders, rejects = Senders(), RejectLog()
    intake = Intake(encoder, senders, rejects)
    ts = NOW_MS // 1000
    encoder.add_lines(b"a.b 1 %d\nc.d nan %d\njunk\n" % (ts, ts), now_ms=NOW_MS)
    intake.settle("10.0.0.1:5000")
    encoder.add_lines(b"e.f 2 %d\n" % ts, now_ms=NOW_MS)
    intake.settle("10.0.0.2:6000")
    intake.settle("10.0.0.3:7000")  # nothing decoded since: no row
    rows = senders.snapshot()["senders"]
    assert rows["10.0.0.1"]["datapoints_received"] == 3
    assert rows["10.0.0.1"]["dropped"] == {"nan": 1, "bad_line": 1}
    assert rows["10.0.0.2"]["datapoints_received"] == 1 and rows["10.0.0.2"]["dropped"] == {}
    assert "10.0.0.3" not in rows
    samples = rejects.snapshot()["rejects"]
    assert samples["nan"][-1]["sample"] == f"c.d nan {ts}"  # the whole line
    assert samples["bad_line"][-1]["sample"] == "junk"


def test_pickle_on_a_line_port_is_named(encoder, caplog):
    intake = Intake(encoder, Senders(), RejectLog())
    frame = b"\x00\x00\x00\x20\x80\x02]q\x00(X\x03\x00\x00\x00a.b"
    with caplog.at_level(logging.WARNING, logger="fastforward.receiver"):
        encoder.add_lines(frame + b"\n", now_ms=NOW_MS)
        intake.settle("10.0.0.9:1")
    assert "looks like pickle" in caplog.text


def test_merge_debug_sums_rows_and_keeps_the_newest_samples():
    def state(host: str, n: int, seen: float, sample_time: float) -> dict:
        return {
            "senders": {
                "senders": {
                    host: {
                        "connections": 1,
                        "datapoints_received": n,
                        "dropped": {"nan": 1},
                        "last_seen": seen,
                    }
                },  # fmt: skip
                "limit": 2,
            },
            "rejects": {"rejects": {"nan": [{"sender": host + ":1", "time": sample_time}]}},
        }

    merged = merge_debug(
        {
            1: state("10.0.0.1", 5, 100.0, 3.0),
            2: state("10.0.0.1", 7, 200.0, 1.0),
            3: state("10.0.0.2", 1, 50.0, 2.0),
        },  # fmt: skip
        limit=1,
    )
    rows = merged["senders"]["senders"]
    assert rows == {
        "10.0.0.1": {
            "connections": 2,
            "datapoints_received": 12,
            "dropped": {"nan": 2},
            "last_seen": 200.0,
        },  # fmt: skip
    }
    assert merged["senders"]["others"]["addresses"] == 1
    assert merged["senders"]["others"]["datapoints_received"] == 1
    assert [e["worker"] for e in merged["rejects"]["rejects"]["nan"]] == [2, 3, 1]
