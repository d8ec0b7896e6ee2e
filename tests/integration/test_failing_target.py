"""A failing Blueflood is loud: the first failure at once, then a reminder while it lasts, each
with the URL, the error in plain words and what waits in memory and in the spool; a line when
it recovers; the ``fastforward_blueflood_failing_seconds`` gauge the shipped alert watches."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from .conftest import ANY_PORT, TENANT, FakeBlueflood, frame, send_tcp, wait_until
from .helpers import Outage, http_get, scrape

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REMINDER = {"FASTFORWARD_TEST_FAILURE_REMINDER_SECONDS": "0.5"}  # the default is 60 s


def _args(url: str, *extra: str) -> list[str]:
    return ["-e", ANY_PORT, "-b", url, "-t", TENANT, "-i", "0.2",
            "--admin-endpoint", ANY_PORT, "--drain-timeout", "1",
            *extra]  # fmt: skip


def test_unreachable_blueflood_is_reported_until_it_recovers(
    fake_blueflood: FakeBlueflood,
    run_ff,  # noqa: ANN001
    tmp_path: Path,
) -> None:
    bf = fake_blueflood
    ff = run_ff(*_args(bf.url, "--spool-dir", str(tmp_path / "spool")), env=REMINDER)
    port, admin = ff.port(), ff.admin_port
    assert scrape(admin).get("fastforward_blueflood_failing_seconds") == 0
    url = bf.ingest_url(TENANT)
    outage = Outage(bf)
    outage.refuse()
    send_tcp(port, frame([(f"down.{i}", (int(time.time()), i)) for i in range(10)]))
    wait_until(lambda: f"Blueflood POST to {url} failed: connection refused" in ff.stderr, 15,
             "the first failure")  # fmt: skip
    first = next(ln for ln in ff.stderr.splitlines() if "Blueflood POST to" in ln)
    assert "retrying with backoff, 10 datapoints (" in first and "in memory" in first
    assert "0 files (0 bytes) spooled" in first

    def reminders() -> list[str]:
        return [ln for ln in ff.stderr.splitlines() if "still failing after" in ln]

    wait_until(lambda: len(reminders()) >= 2, 15, "two reminders")
    line = reminders()[-1]
    assert f"Blueflood at {url} still failing after " in line
    assert ": connection refused (last attempt " in line
    assert "10 datapoints (" in line and "files (" in line and "spooled" in line
    assert scrape(admin).get("fastforward_blueflood_failing_seconds") > 0
    status, _text = http_get(f"http://127.0.0.1:{admin}/health")
    assert status == 200  # as before: the spool has room for what piles up

    outage.resume()
    wait_until(lambda: bf.stored == 10, 30, "delivery after the outage")
    recovered = [ln for ln in ff.stderr.splitlines() if "recovered after" in ln]
    assert recovered and f"Blueflood at {url} recovered after " in recovered[0]
    assert recovered[0].endswith("s of failures (last: connection refused)")
    assert scrape(admin).get("fastforward_blueflood_failing_seconds") == 0
    count = len(reminders())
    assert ff.terminate() == 0
    assert len(reminders()) == count  # no reminder once it answers again


@pytest.mark.parametrize("failure", ["name not resolved", "HTTP 503", "timed out"])
def test_the_failure_is_told_in_plain_words(
    fake_blueflood: FakeBlueflood,
    run_ff,  # noqa: ANN001
    failure: str,
) -> None:
    bf = fake_blueflood
    url, extra = bf.url, ["--request-timeout", "0.5"]
    if failure == "name not resolved":
        url = "http://no-such-host.invalid:19000"
    elif failure == "HTTP 503":
        Outage(bf).mode = "503"
    else:
        bf.delay = 30.0  # answers too late
    ff = run_ff(*_args(url, *extra), env=REMINDER)
    port = ff.port()
    send_tcp(port, frame([("words", (int(time.time()), 1))]))
    target = f"{url}/v2.0/{TENANT}/ingest"
    wait_until(lambda: f"Blueflood POST to {target} failed: {failure}" in ff.stderr, 15,
             "the first failure")  # fmt: skip
    wait_until(lambda: f"{target} still failing after" in ff.stderr, 15, "a reminder")
    assert "no spool (--spool-dir)" in ff.stderr
    assert ff.terminate() == 4  # the datapoint could not be delivered nor spooled
