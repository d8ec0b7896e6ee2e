"""Every datapoint accounted for, on the real process: the identity of the counters, the sender
named in every loss warning with a sample, /debug/senders and /debug/rejects, the
wrong-protocol hints, and series that exist from the first scrape (promtool-clean)."""

from __future__ import annotations

import json
import pickle
import shutil
import socket
import struct
import subprocess
import time

import pytest

from .conftest import FakeBlueflood, frame, send_tcp, wait_until
from .helpers import Metrics, http_get, scrape, start_with_admin

pytestmark = [pytest.mark.integration]

HOUR_MS = 3_600_000


def _start(run_ff, bf: FakeBlueflood, *extra: str) -> tuple:  # noqa: ANN001
    return start_with_admin(run_ff, bf, *extra, interval="0.3")


def _debug(admin: int, what: str) -> dict:
    status, text = http_get(f"http://127.0.0.1:{admin}/debug/{what}")
    assert status == 200, text
    return json.loads(text)


def _identity(m: Metrics) -> tuple[float, float]:
    """(received, delivered + rejected + dropped + buffered)."""
    accounted = (
        m["fastforward_datapoints_sent_total"]
        + m["fastforward_datapoints_rejected_total"]
        + m["fastforward_datapoints_dropped_total"]
        + m["fastforward_buffered_datapoints"]
    )
    return m["fastforward_datapoints_received_total"], accounted


def test_every_datapoint_is_accounted_for_and_traced_to_its_sender(
    fake_blueflood: FakeBlueflood,
    run_ff,  # noqa: ANN001
) -> None:
    bf = fake_blueflood
    bf.before_ms = HOUR_MS  # Blueflood answers 207 for what is older than an hour
    ff, port, line_port, admin = _start(run_ff, bf)
    now = int(time.time())
    two_hours_ago = now - 7200  # inside fastforward's 3-day window: Blueflood rejects it
    ten_days_ago = now - 10 * 86400  # outside: fastforward drops it
    good = [(f"acct.good.{i}", (now, i)) for i in range(20)]
    nan = [("acct.nan", (now, float("nan")))] * 3
    old = [(f"acct.old.{i}", (ten_days_ago, 1)) for i in range(4)]
    stale = [(f"acct.stale.{i}", (two_hours_ago, 1)) for i in range(5)]
    refused = b"\x80\x02cos\nsystem\nq\x00."  # GLOBAL: refused whole, counted 1 frame
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(frame(good + nan + old + stale))
        s.sendall(struct.pack("!L", len(refused)) + refused)
        s.sendall(frame([("acct.after", (now, 7))]))  # the connection goes on
    lines = f"acct.line.a 1 {now}\nacct.line.b 2 {now}\nnot a datapoint line\nacct.c x {now}\n"
    send_tcp(line_port, lines.encode())

    want_accepted = 20 + 5 + 1 + 2
    want_dropped = {"nan": 3, "out_of_window": 4, "bad_frame": 1, "bad_line": 1, "bad_value": 1}

    def settled() -> bool:
        m = scrape(admin)
        return (
            m["fastforward_datapoints_accepted_total"] == want_accepted
            and m["fastforward_buffered_datapoints"] == 0
            and m["fastforward_datapoints_rejected_total"] == 5
        )

    wait_until(settled, 20, "delivery of the good datapoints and the 207")
    m = scrape(admin)
    received, accounted = _identity(m)
    assert received == accounted == want_accepted + sum(want_dropped.values())
    assert m["fastforward_datapoints_sent_total"] == want_accepted - 5
    assert m.get("fastforward_datapoints_rejected_total", source="collectionTime") == 5
    for reason, n in want_dropped.items():
        assert m.get("fastforward_datapoints_dropped_total", reason=reason) == n, reason
    pickled = len(good + nan + old + stale) + 1 + 1  # the refused frame counts one
    assert m.get("fastforward_datapoints_received_total", protocol="pickle") == pickled
    assert m.get("fastforward_datapoints_received_total", protocol="line") == 4
    assert bf.stored == want_accepted - 5

    # Attribution: one row for our address, with what it sent and what was dropped.
    senders = _debug(admin, "senders")["senders"]
    assert set(senders) == {"127.0.0.1"}
    row = senders["127.0.0.1"]
    assert row["connections"] == 2
    assert row["datapoints_received"] == received
    assert row["dropped"] == want_dropped
    assert row["last_seen"] >= now - 60
    rejects = _debug(admin, "rejects")["rejects"]
    assert set(rejects) == set(want_dropped)
    assert rejects["nan"][-1]["sample"] == "acct.nan"
    assert rejects["bad_line"][-1]["sample"] == "not a datapoint line"
    assert rejects["bad_frame"][-1]["sample"].startswith("\\x80\\x02cos\\nsystem")
    assert "forbidden opcode GLOBAL" in rejects["bad_frame"][-1]["detail"]
    for samples in rejects.values():
        assert samples[-1]["sender"].startswith("127.0.0.1:")

    # The log: each loss names the sender and shows a sample; the INFO line has the totals.
    wait_until(lambda: f"datapoints: received {int(received)}," in ff.stderr, 10, "INFO line")
    assert ff.terminate() == 0
    log = ff.stderr
    for reason, sample in (
        ("nan", "acct.nan"),
        ("out_of_window", "acct.old."),
        ("bad_frame", "\\x80\\x02cos\\nsystem"),
        ("bad_line", "not a datapoint line"),
        ("bad_value", "acct.c x"),
    ):
        warning = [ln for ln in log.splitlines() if f": {reason}" in ln and "from 127.0.0.1:" in ln]
        assert warning and "WARNING" in warning[0] and sample in warning[0], (reason, log)
    assert "datapoints dropped reason=bad_frame: 1" in log


def test_losses_found_by_the_receivers_count_one_per_frame_or_line(
    fake_blueflood: FakeBlueflood,
    run_ff,  # noqa: ANN001
) -> None:
    ff, port, _line_port, admin = _start(run_ff, fake_blueflood, "--max-frame-bytes", "1000")
    now = int(time.time())
    send_tcp(port, frame([("recv.good", (now, 1))]))
    send_tcp(port, struct.pack("!L", 5000) + b"x" * 100)  # oversize: connection closed
    send_tcp(port, frame([("recv.cut", (now, 1))])[:-3])  # ends in the middle of a frame

    def counted() -> bool:
        m = scrape(admin)
        return m.get("fastforward_datapoints_dropped_total", reason="truncated_frame") == 1

    wait_until(counted, 15, "the truncated frame to be counted")  # fmt: skip
    wait_until(lambda: fake_blueflood.stored == 1, 15, "delivery")
    m = scrape(admin)
    assert m.get("fastforward_datapoints_dropped_total", reason="oversize_frame") == 1
    received, accounted = _identity(m)
    assert received == accounted == 1 + 1 + 1
    assert _debug(admin, "senders")["senders"]["127.0.0.1"]["dropped"] == {
        "oversize_frame": 1,
        "truncated_frame": 1,
    }
    assert ff.terminate() == 0


def test_wrong_protocol_on_a_port_gets_a_hint(
    fake_blueflood: FakeBlueflood,
    run_ff,  # noqa: ANN001
) -> None:
    ff, port, line_port, admin = _start(run_ff, fake_blueflood)
    now = int(time.time())
    send_tcp(port, f"plain.on.pickle 1 {now}\n".encode())
    payload = pickle.dumps([("pickle.on.line", (now, 1.5))], protocol=2)
    send_tcp(line_port, struct.pack("!L", len(payload)) + payload)
    wait_until(lambda: "looks like pickle" in ff.stderr, 15, "the pickle hint")
    wait_until(lambda: "looks like plaintext" in ff.stderr, 15, "the plaintext hint")
    log = ff.stderr
    assert "looks like plaintext: use --protocol line or --line-endpoint" in log
    assert "frame of 1" not in log  # not the misleading "frame of 1.6 GB" message
    rejects = _debug(admin, "rejects")["rejects"]
    assert rejects["oversize_frame"][-1]["sample"].startswith("plain.on.pickle 1 ")
    assert "looks like plaintext" in rejects["oversize_frame"][-1]["detail"]
    assert any("looks like pickle" in r.get("detail", "") for r in rejects["bad_line"])
    assert ff.terminate() == 0


def test_series_exist_from_the_first_scrape_and_promtool_accepts_them(
    fake_blueflood: FakeBlueflood,
    run_ff,  # noqa: ANN001
) -> None:
    _ff, port, _line_port, admin = _start(run_ff, fake_blueflood)
    m = scrape(admin)
    for name, label, values in (
        ("fastforward_datapoints_dropped_total", "reason", ("bad_frame", "nan", "oversize_frame")),
        ("fastforward_datapoints_rejected_total", "source", ("collectionTime", "unknown")),
        ("fastforward_http_responses_total", "status", ("200", "207", "400", "500")),
        ("fastforward_retries_total", "cause", ("connection", "timeout", "500", "503")),
    ):
        for value in values:
            assert (name, frozenset({(label, value)})) in m.samples, (name, value)
        assert m[name] == 0
    assert m.get("fastforward_flush_latency_seconds_bucket", le="+Inf") == 0
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed")
    send_tcp(port, frame([("prom.a", (int(time.time()), 1))]))
    wait_until(lambda: fake_blueflood.stored == 1, 15, "delivery")
    wait_until(
        lambda: scrape(admin).get("fastforward_flush_latency_seconds_count") == 1, 10, "histogram"
    )
    text = http_get(f"http://127.0.0.1:{admin}/metrics")[1]
    check = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert (check.stdout + check.stderr).strip() == ""


def test_udp_datagrams_are_attributed_to_their_sender(
    fake_blueflood: FakeBlueflood,
    run_ff,  # noqa: ANN001
) -> None:
    ff, _port, _line_port, admin = _start(
        run_ff, fake_blueflood, "--line-endpoint", "udp:port=0:interface=127.0.0.1"
    )
    udp_port = ff.port("udp", "line")
    now = int(time.time())
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(f"udp.good 1 {now}\nudp.bad\n".encode(), ("127.0.0.1", udp_port))
    wait_until(lambda: fake_blueflood.stored == 1, 15, "delivery")
    wait_until(
        lambda: scrape(admin).get("fastforward_datapoints_dropped_total", reason="bad_line") == 1,
        10,
        "the bad line counted",
    )
    received, accounted = _identity(scrape(admin))
    assert received == accounted == 2
    row = _debug(admin, "senders")["senders"]["127.0.0.1"]
    assert row["datapoints_received"] == 2 and row["dropped"] == {"bad_line": 1}
    assert row["connections"] == 0  # datagrams, no connection
    assert _debug(admin, "rejects")["rejects"]["bad_line"][-1]["sample"] == "udp.bad"
    assert ff.terminate() == 0
