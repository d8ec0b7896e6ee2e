"""`/metrics` and `/health` of the real process, counter values included, and the log lines an
operator reads: one INFO line per interval with the essential counters, a WARNING per loss
reason."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import pytest

from tests.fake_blueflood import Scripted

from .conftest import TENANT, FakeBlueflood, frame, send_tcp, wait_until
from .helpers import Outage, http_get, scrape, start_with_admin

pytestmark = [pytest.mark.integration]


def test_metrics_count_what_happened(fake_blueflood: FakeBlueflood, run_ff) -> None:  # noqa: ANN001
    bf = fake_blueflood
    # The first POST is answered 207 with two rejected datapoints (the body is stored).
    errors = [{"tenantId": TENANT, "timestamp": 1, "metricName": f"good.{i}",
               "source": "metricValue", "message": "metric value must be numeric"}
              for i in range(2)]  # fmt: skip
    bf.push(Scripted(207, json.dumps({"errors": errors}), process=True))
    ff, port, line_port, admin = start_with_admin(run_ff, bf)
    ts = int(time.time())
    good = [(f"good.{i}", (ts, i)) for i in range(10)]
    bad = [("nan.p", (ts, float("nan")))] * 2 + [("none", (ts, None))]
    send_tcp(port, frame(good + bad))
    send_tcp(line_port, (f"line.a 1 {ts}\nline.b 2 {ts}\nline.c 3 {ts}\nline.d 4 {ts}\n"
                         f"line.e 5 {ts}\nonly.two 1\nthree fields but four {ts}\n"
                         f"nan.l nan {ts}\n").encode())  # fmt: skip
    send_tcp(port, b"\x00\x00\x00\x03abc")  # one bad frame

    def delivered() -> bool:
        m = scrape(admin)
        return (
            m["fastforward_datapoints_accepted_total"] == 15
            and m["fastforward_bodies_sent_total"] >= 1
            and m["fastforward_buffered_datapoints"] == 0
        )

    wait_until(delivered, 15, "delivery")
    m = scrape(admin)
    assert m["fastforward_datapoints_accepted_total"] == 15
    assert m.get("fastforward_datapoints_dropped_total", reason="nan") == 3
    assert m.get("fastforward_datapoints_dropped_total", reason="none") == 1
    assert m.get("fastforward_datapoints_dropped_total", reason="bad_line") == 2
    assert m.get("fastforward_datapoints_dropped_total", reason="bad_frame") == 1
    assert m["fastforward_datapoints_received_total"] == 15 + 3 + 1 + 2 + 1
    assert m.get("fastforward_datapoints_received_total", protocol="pickle") == 10 + 3 + 1
    assert m.get("fastforward_datapoints_received_total", protocol="line") == 8
    assert m.get("fastforward_frames_received_total", result="bad") == 1
    assert m.get("fastforward_frames_received_total", result="ok") == 1
    assert m["fastforward_lines_received_total"] == 8
    assert m.get("fastforward_datapoints_rejected_total", source="metricValue") == 2
    assert m["fastforward_datapoints_sent_total"] == 15 - 2
    assert m.get("fastforward_http_responses_total", status="207") == 1
    assert m["fastforward_buffered_bytes"] == 0
    assert m["fastforward_retries_total"] == 0
    assert http_get(f"http://127.0.0.1:{admin}/health") == (200, "ok\n")

    # The log: an INFO line per interval with the counters, a WARNING per loss reason.
    wait_until(lambda: "datapoints: received 22, sent 13, dropped 7" in ff.stderr, 10,
             "the periodic INFO line")  # fmt: skip
    assert ff.terminate() == 0
    log = ff.stderr
    for reason, n in (("nan", 3), ("none", 1), ("bad_line", 2), ("bad_frame", 1)):
        assert f"datapoints dropped reason={reason}: {n}" in log, reason
    assert "datapoints rejected source=metricValue: 2" in log
    assert "WARNING" in log.split("datapoints dropped reason=nan")[0].splitlines()[-1]
    assert "good.0" not in log.replace("metric 'good.0'", "")  # no line per datapoint
    assert log.count("datapoints: received") <= 1 + 3 * 30  # not more than one per interval


def test_health_503_when_blueflood_is_down_without_a_spool(
    fake_blueflood: FakeBlueflood,
    run_ff,  # noqa: ANN001
) -> None:
    outage = Outage(fake_blueflood)
    outage.mode = "503"
    ff, port, _line, admin = start_with_admin(run_ff, fake_blueflood)
    send_tcp(port, frame([("down.a", (int(time.time()), 1))]))
    url = f"http://127.0.0.1:{admin}/health"
    assert http_get(url)[0] == 200  # a single failure is not an outage yet
    wait_until(lambda: http_get(url)[0] == 503, 15, "/health 503")
    status, reason = http_get(url)
    assert "Blueflood failing for" in reason and "no spool" in reason
    assert scrape(admin).get("fastforward_retries_total", cause="503") >= 1
    outage.mode = None
    wait_until(lambda: http_get(url)[0] == 200, 30, "/health 200 again")
    assert fake_blueflood.stored == 1
    assert ff.terminate() == 0


def test_health_200_while_spooling_within_limits(
    fake_blueflood: FakeBlueflood,
    run_ff,  # noqa: ANN001
    tmp_path: Path,
) -> None:
    outage = Outage(fake_blueflood)
    outage.mode = "503"
    ff, port, _line, admin = start_with_admin(
        run_ff, fake_blueflood, "--spool-dir", str(tmp_path / "spool")
    )
    send_tcp(port, frame([("spooling.a", (int(time.time()), 1))]))
    url = f"http://127.0.0.1:{admin}/health"
    wait_until(lambda: "the spool takes" in http_get(url)[1], 15, "/health to mention the spool")
    assert http_get(url)[0] == 200
    with socket.create_connection(("127.0.0.1", admin), timeout=5):
        pass  # the admin endpoint keeps accepting while Blueflood is down
    outage.mode = None
    wait_until(lambda: fake_blueflood.stored == 1, 30, "delivery after the outage")
    assert ff.terminate() == 0
