"""The control channel between a worker and its supervisor: reports survive the framing, a bad
line is refused with a reason, and the reader ends when the peer goes away."""

from __future__ import annotations

import io
import socket

import pytest

from fastforward.workers.channel import (
    STOP,
    LineReader,
    Report,
    ReportError,
    decode_report,
    encode_report,
    is_stop,
)

REPORT = Report(
    started=True,
    health=(False, "Blueflood failing for 40s"),
    samples=[
        ("datapoints_received", (("protocol", "pickle"),), 12.0),
        ("flush_latency_seconds", (("le", "+Inf"),), 3.0),
        ("uptime_seconds", (), 1.5),
    ],
    debug={"senders": {"127.0.0.1": {"connections": 2}}, "rejects": {}},
)


def test_a_report_is_one_line_and_reads_back_the_same() -> None:
    line = encode_report(REPORT)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert decode_report(line) == REPORT


def test_labels_and_values_are_normalised_whatever_json_made_of_them() -> None:
    report = decode_report(b'{"started":1,"health":[1,"ok"],"samples":[["bytes_sent",[],7]]}\n')
    assert report == Report(True, (True, "ok"), [("bytes_sent", (), 7.0)], {})
    assert isinstance(report.samples[0][2], float)


@pytest.mark.parametrize(
    "line",
    [
        b"{not json\n",
        b"[1, 2]\n",
        b'{"started": true, "samples": []}\n',  # no health
        b'{"started": true, "health": [true], "samples": []}\n',
        b'{"started": true, "health": [true, "ok"], "samples": [["x", [], "many"]]}\n',
    ],
)
def test_a_line_that_is_not_a_report_is_refused(line: bytes) -> None:
    with pytest.raises(ReportError):
        decode_report(line)


def test_debug_tables_that_are_not_a_mapping_are_dropped() -> None:
    line = b'{"started":true,"health":[true,"ok"],"samples":[],"debug":[1]}\n'
    assert decode_report(line).debug == {}


def test_stop_is_recognised_with_or_without_its_newline() -> None:
    assert is_stop(STOP) and is_stop(b"stop") and not is_stop(b"stopped\n")


def test_reports_pass_through_a_socketpair_in_order_until_the_end_of_file() -> None:
    mine, theirs = socket.socketpair()
    first = Report(False, (False, "starting"))
    theirs.sendall(encode_report(first) + encode_report(REPORT))
    theirs.close()
    lines = list(LineReader(mine.makefile("rb")))
    assert [decode_report(line) for line in lines] == [first, REPORT]
    mine.close()


def test_the_reader_ends_quietly_when_the_channel_breaks() -> None:
    class Broken(io.BytesIO):
        def __iter__(self):  # noqa: ANN204
            yield b"stop\n"
            raise ConnectionResetError("peer gone")

    stream = Broken()
    assert list(LineReader(stream)) == [b"stop\n"]
    assert stream.closed
