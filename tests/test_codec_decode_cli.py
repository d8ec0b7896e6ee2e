"""`fastforward decode`: a capture in, Blueflood bodies on stdout, a summary on stderr."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys

import pytest

from fastforward import decode
from tests import pickles as P

TS = 1_700_000_000
NO_WINDOW = ["--max-past", "-1", "--max-future", "-1"]


def capture(*frames: bytes) -> bytes:
    return P.framed(*frames)


GOOD1 = pickle.dumps([("a.b", (TS, 1.5)), ("c.d", (TS, float("nan")))], protocol=2)
HOSTILE = b"cos\nsystem\n(S'true'\ntR."
GOOD2 = P.statsd([("e.f", TS, "7")])


def run_main(capsysbinary, args: list[str]) -> tuple[int, list[bytes], str]:
    rc = decode.main(args)
    out, err = capsysbinary.readouterr()
    return rc, out.splitlines(), err.decode()


def datapoints(lines: list[bytes]) -> list[tuple]:
    return [
        (d["metricName"], d["collectionTime"], d["metricValue"], d["ttlInSeconds"])
        for line in lines
        for d in json.loads(line)
    ]


def test_capture_to_bodies_and_summary(capsysbinary, tmp_path):
    path = tmp_path / "cap.bin"
    path.write_bytes(capture(GOOD1, HOSTILE, GOOD2))
    rc, out, err = run_main(capsysbinary, [*NO_WINDOW, str(path)])
    assert rc == 0
    assert datapoints(out) == [("a.b", TS * 1000, 1.5, 86400), ("e.f", TS * 1000, 7, 86400)]
    assert "3 frames" in err and "2 datapoints accepted" in err
    assert "bad_frame=1" in err and "nan=1" in err
    # the refused frame is named by its offset in the capture and the reason
    assert f"frame at offset {4 + len(GOOD1)} (byte 0 of the frame): forbidden opcode GLOBAL" in err


def test_truncated_capture_exits_1_and_says_so(capsysbinary, tmp_path):
    path = tmp_path / "cap.bin"
    path.write_bytes(capture(GOOD1, GOOD2)[:-5])
    rc, out, err = run_main(capsysbinary, [*NO_WINDOW, str(path)])
    assert rc == 1
    assert datapoints(out) == [("a.b", TS * 1000, 1.5, 86400)]  # what came before is shown
    assert "truncated capture" in err and f"offset {4 + len(GOOD1)}" in err
    path.write_bytes(capture(GOOD1) + b"\x00\x00")
    rc, _, err = run_main(capsysbinary, [str(path)])
    assert rc == 1 and "inside the length prefix" in err


def test_options_prefix_ttl_overwrite(capsysbinary, tmp_path):
    path = tmp_path / "cap.bin"
    path.write_bytes(capture(GOOD2))
    args = ["--prefix", "pre", "--ttl", "60", "--overwrite-collection-timestamp", str(path)]
    rc, out, _ = run_main(capsysbinary, args)
    ((name, ms, value, ttl),) = datapoints(out)
    assert rc == 0 and (name, value, ttl) == ("pre.e.f", 7, 60)
    assert ms != TS * 1000  # the time of decoding


def test_limit_splits_bodies(capsysbinary, tmp_path):
    frame = pickle.dumps([(f"series.{i}", (TS, i * 0.5)) for i in range(100)], protocol=2)
    path = tmp_path / "cap.bin"
    path.write_bytes(capture(frame))
    rc, out, _ = run_main(capsysbinary, [*NO_WINDOW, "--limit", "1000", str(path)])
    assert rc == 0 and len(out) > 5
    assert all(len(line) <= 1000 for line in out)
    assert [d[0] for d in datapoints(out)] == [f"series.{i}" for i in range(100)]


def test_plaintext_lines(capsysbinary, tmp_path):
    path = tmp_path / "lines.txt"
    path.write_bytes(b"a.b 1 %d\r\n\nnot a metric line\nc.d 2.5 %d" % (TS, TS))
    rc, out, err = run_main(capsysbinary, [*NO_WINDOW, "--line", str(path)])
    assert rc == 0
    assert datapoints(out) == [("a.b", TS * 1000, 1, 86400), ("c.d", TS * 1000, 2.5, 86400)]
    assert "bad_line=1" in err and "not a metric line" in err


def test_samples_in_the_summary_are_escaped_as_the_daemon_logs_them(capsysbinary, tmp_path):
    path = tmp_path / "cap.txt"
    # a bad line with a tab, an escape character, a quote and bytes that are not UTF-8
    path.write_bytes(f"good.a 1 {TS}\nbad\tline\x1b[31m 'q' \xff\xfe x y\n".encode("latin-1"))
    rc, _out, err = run_main(capsysbinary, [*NO_WINDOW, "--protocol", "line", str(path)])
    assert rc == 0
    assert "  bad_line, e.g. 'bad\\tline\\x1b[31m \\'q\\' \\xff\\xfe x y'" in err
    assert "\x1b" not in err and "\t" not in err  # no raw control byte reaches the terminal


def test_oversize_frame_is_skipped_and_decoding_goes_on(capsysbinary, tmp_path):
    big = pickle.dumps([(f"m{i}", (TS, i)) for i in range(200)], protocol=2)
    path = tmp_path / "cap.bin"
    path.write_bytes(capture(big, GOOD2))
    rc, out, err = run_main(capsysbinary, [*NO_WINDOW, "--max-frame-bytes", "500", str(path)])
    assert rc == 0
    assert [d[0] for d in datapoints(out)] == ["e.f"]
    assert "over --max-frame-bytes 500" in err
    assert "oversize_frame=1" in err  # the daemon's name for it


def test_plaintext_capture_decoded_as_pickle_gets_the_hint(capsysbinary, tmp_path):
    path = tmp_path / "lines.txt"
    path.write_bytes(b"a.b.c 1 %d\nd.e.f 2 %d\n" % (TS, TS))
    rc, _out, err = run_main(capsysbinary, [*NO_WINDOW, str(path)])
    assert rc == 1
    assert "hint: looks like plaintext: decode it with --line" in err
    assert "--protocol line or --line-endpoint" in err


def test_pickle_capture_decoded_as_lines_gets_the_hint(capsysbinary, tmp_path):
    path = tmp_path / "cap.bin"
    path.write_bytes(capture(GOOD1, GOOD2))
    rc, out, err = run_main(capsysbinary, [*NO_WINDOW, "--line", str(path)])
    assert rc == 0 and out == []
    assert "hint: looks like pickle: decode it without --line" in err
    # A real plaintext mistake gets no such hint.
    path.write_bytes(b"not a metric line\n")
    _rc, _out, err = run_main(capsysbinary, [*NO_WINDOW, "--line", str(path)])
    assert "bad_line=1" in err and "hint:" not in err


def test_usage_errors_exit_2(capsysbinary, tmp_path):
    assert decode.main(["--ttl", "soon"]) == 2
    assert decode.main(["--nope"]) == 2
    assert decode.main([str(tmp_path / "missing.bin")]) == 2
    assert decode.main(["--limit", "-5", str(tmp_path)]) == 2
    assert decode.main(["--help"]) == 0
    assert "fastforward decode" in capsysbinary.readouterr().out.decode()


def test_empty_capture(capsysbinary, tmp_path):
    path = tmp_path / "empty.bin"
    path.write_bytes(b"")
    rc, out, err = run_main(capsysbinary, [str(path)])
    assert (rc, out) == (0, []) and "0 frames" in err


@pytest.mark.parametrize("no_ext", ["", "1"], ids=["default", "pure"])
def test_as_a_process_reading_stdin(no_ext):
    env = {**os.environ, "FASTFORWARD_NO_EXTENSIONS": no_ext}
    proc = subprocess.run(
        [sys.executable, "-m", "fastforward.decode", *NO_WINDOW, "-"],
        input=capture(GOOD1, HOSTILE, GOOD2),
        capture_output=True,
        env=env,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert datapoints(proc.stdout.splitlines()) == [
        ("a.b", TS * 1000, 1.5, 86400),
        ("e.f", TS * 1000, 7, 86400),
    ]
    assert b"forbidden opcode GLOBAL" in proc.stderr
    if no_ext:
        assert b"(python codec)" in proc.stderr


@pytest.mark.parametrize(
    "options",
    [
        ["--line", "--prefix", "pfx"],
        ["--protocol", "MetricLineReceiver", "-p", "pfx"],
        ["--protocol", "line", "--metric-prefix", "pfx"],
        ["--protocol=metriclinereceiver", "--metric_prefix", "pfx"],
    ],
)
def test_decode_takes_the_daemon_option_names(capsysbinary, tmp_path, options):
    # A daemon command line's -p/--metric-prefix/--protocol can be reused as is.
    path = tmp_path / "lines.txt"
    path.write_bytes(f"a.b 1.5 {TS}\nc.d 7 {TS}\n".encode())
    rc, out, err = run_main(
        capsysbinary, [*options, "--max_past", "-1", "--max_future", "-1", str(path)]
    )
    assert rc == 0, err
    assert datapoints(out) == [("pfx.a.b", TS * 1000, 1.5, 86400), ("pfx.c.d", TS * 1000, 7, 86400)]


def test_decode_protocol_pickle_and_snake_case_limits(capsysbinary, tmp_path):
    path = tmp_path / "cap.bin"
    path.write_bytes(capture(GOOD1))
    rc, out, err = run_main(
        capsysbinary,
        ["--protocol", "MetricPickleReceiver", "--max_body_datapoints", "1",
         "--overwrite_collection_timestamp", "--max_frame_bytes", "100000", str(path)],
    )  # fmt: skip
    assert rc == 0, err
    assert [(name, value) for name, _ts, value, _ttl in datapoints(out)] == [("a.b", 1.5)]
    assert all(ts != TS * 1000 for _n, ts, _v, _t in datapoints(out))  # overwritten by now


def test_decode_refuses_an_unknown_protocol(capsysbinary):
    assert decode.main(["--protocol", "MetricJsonReceiver"]) == 2
    err = capsysbinary.readouterr().err.decode()
    assert "'MetricJsonReceiver': use MetricPickleReceiver or MetricLineReceiver" in err
