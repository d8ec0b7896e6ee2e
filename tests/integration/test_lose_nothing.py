"""Blueflood fails for a window under steady load from several senders: nothing is lost.

The issue asks for 20-second windows (503, refused connections, 5-second latency). CI runs
those at 20 s once, with the compiled codec (FASTFORWARD_TEST_OUTAGE_SECONDS=20 in .ci/run),
and at 4 s in the pure-Python pass and by default; the other scenarios use 4 s. The buffer cap
is made small enough that it bites either way: every run checks
that backpressure happened, that the process stayed within its memory budget, and that every
datapoint was stored. Without failures nothing may arrive twice; with failures, only datapoints
of bodies that saw a failure may (at-least-once, which Blueflood absorbs by upserting).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from .conftest import ANY_PORT, TENANT, FakeBlueflood, wait_until
from .helpers import Outage, Sender, datapoint_counts, proc_status_kb, scrape

pytestmark = [pytest.mark.integration, pytest.mark.slow]

OUTAGE_SECONDS = 4.0
ISSUE_WINDOW_SECONDS = float(os.environ.get("FASTFORWARD_TEST_OUTAGE_SECONDS", OUTAGE_SECONDS))
CAP = 1_048_576  # --max-buffer-bytes (its minimum): ~9,000 datapoints, about a second of load
# The process may grow by the cap, plus per-connection read buffers (256 KiB each), plus the
# allocator's slack; a forwarder that buffered the whole outage in memory would need ~4 MB of
# JSON and, with Python objects around it, far more than this.
RSS_GROWTH_LIMIT_KB = 24 * 1024
SENDERS = 4


def _run_outage(
    bf: FakeBlueflood,
    run_ff,  # noqa: ANN001
    mode: str,
    *extra: str,
    seconds: float = OUTAGE_SECONDS,
) -> dict:
    outage = Outage(bf)
    ff = run_ff(
        "-e", ANY_PORT, "-b", bf.url, "-t", TENANT,
        "-i", "0.2", "--concurrency", "2", "--max-buffer-bytes", str(CAP),
        "--admin-endpoint", ANY_PORT, *extra,
    )  # fmt: skip
    port = ff.port()
    admin = ff.admin_port
    base_kb = proc_status_kb(ff.proc.pid, "VmRSS")
    ts = int(time.time())
    senders = [Sender(port, f"lose.{mode}.s{k}", ts).start() for k in range(SENDERS)]
    wait_until(
        lambda: bf.stored > 0 and all(s.frames >= 10 for s in senders), 30, "steady delivery"
    )
    if mode == "refused":
        outage.refuse()
    else:
        outage.mode = mode

    def bitten() -> bool:  # a POST met the failure (a refused one is only seen as a retry)
        if mode == "refused":
            return scrape(admin)["fastforward_retries_total"] > 0
        return outage.hits > 0

    # The window's length is the scenario (the issue asks for 20 s); it ends only once the
    # failure was met.
    window_ends = time.monotonic() + seconds
    wait_until(
        lambda: time.monotonic() >= window_ends and bitten(),
        seconds + 30,
        f"a {mode} window",
        poll=0.1,
    )
    if mode == "refused":
        outage.resume()
    else:
        outage.mode = None
    stored_at_recovery = bf.stored
    wait_until(lambda: bf.stored > stored_at_recovery, 30, "delivery after the window")
    for s in senders:
        s.stop()
    expected = set().union(*(s.expected for s in senders))
    try:
        wait_until(lambda: bf.stored >= len(expected), 40, f"{len(expected)} datapoints stored")
    except AssertionError as exc:  # say how far it got and what the daemon said
        tail = "\n".join(ff.log_text().splitlines()[-15:])
        raise AssertionError(f"{exc}: {bf.stored} stored; its log ends:\n{tail}") from None
    stored = {(name, ct) for (_t, name), pts in bf.store.items() for ct in pts}
    assert expected <= stored, f"{len(expected - stored)} datapoints never arrived"
    # A body stored by the fake but not answered is still being retried: wait for the count.
    wait_until(
        lambda: scrape(admin)["fastforward_datapoints_sent_total"] >= len(expected), 20, "sent"
    )
    metrics = scrape(admin)
    hwm_kb = proc_status_kb(ff.proc.pid, "VmHWM")
    assert ff.terminate() == 0
    return {
        "expected": expected,
        "outage": outage,
        "metrics": metrics,
        "growth_kb": hwm_kb - base_kb,
        "hwm_kb": hwm_kb,
        "stderr": ff.stderr,
        "blocked": sum(s.blocked for s in senders),
    }


def _assert_common(result: dict, bf: FakeBlueflood) -> None:
    m = result["metrics"]
    assert result["growth_kb"] < RSS_GROWTH_LIMIT_KB, (result["growth_kb"], result["hwm_kb"])
    # The cap bit: receivers were paused (and resumed) at least once.
    assert m["fastforward_backpressure_seconds_total"] > 0, m.text
    assert "backpressure:" in result["stderr"]
    assert "Traceback" not in result["stderr"]
    print(f"VmHWM {result['hwm_kb']} kB, growth {result['growth_kb']} kB")  # for the report


@pytest.mark.parametrize("mode", ["503", "refused", "close"])
def test_outage_window_loses_nothing_and_sends_nothing_twice(
    fake_blueflood: FakeBlueflood,
    run_ff,  # noqa: ANN001
    mode: str,
) -> None:
    result = _run_outage(fake_blueflood, run_ff, mode, seconds=ISSUE_WINDOW_SECONDS)
    _assert_common(result, fake_blueflood)
    # Nothing was stored by a failed POST, so nothing may arrive twice.
    assert fake_blueflood.duplicates == 0
    assert result["metrics"]["fastforward_retries_total"] > 0


def test_slow_blueflood_loses_nothing(fake_blueflood: FakeBlueflood, run_ff) -> None:  # noqa: ANN001
    # 5-second answers for the window (under the 30 s request timeout): slow, not failing.
    result = _run_outage(fake_blueflood, run_ff, "slow", seconds=ISSUE_WINDOW_SECONDS)
    _assert_common(result, fake_blueflood)
    assert fake_blueflood.duplicates == 0


def test_stored_but_unanswered_bodies_are_the_only_duplicates(
    fake_blueflood: FakeBlueflood,
    run_ff,  # noqa: ANN001
) -> None:
    result = _run_outage(fake_blueflood, run_ff, "close_after_store")
    _assert_common(result, fake_blueflood)
    outage = result["outage"]
    counts = datapoint_counts(outage.stored_bodies)
    twice = {k for k, n in counts.items() if n > 1}
    assert twice, "no body was stored and then retried"
    suspects = set(datapoint_counts(outage.failed))
    assert twice <= suspects, "a datapoint arrived twice without a failure"


def test_outage_with_a_spool_goes_to_disk_and_comes_back(
    fake_blueflood: FakeBlueflood,
    run_ff,  # noqa: ANN001
    tmp_path: Path,
) -> None:
    spool = tmp_path / "spool"
    result = _run_outage(fake_blueflood, run_ff, "503", "--spool-dir", str(spool))
    m = result["metrics"]
    assert m["fastforward_spool_written_bodies_total"] > 0
    assert m["fastforward_spool_replayed_bodies_total"] > 0
    assert result["growth_kb"] < RSS_GROWTH_LIMIT_KB, result["growth_kb"]
    assert fake_blueflood.duplicates == 0
    assert not list(spool.glob("*.ffspool"))
    assert "Traceback" not in result["stderr"]


def test_a_poison_datapoint_never_blocks_the_rest(fake_blueflood: FakeBlueflood, run_ff) -> None:  # noqa: ANN001
    """Blueflood answers 500 to any body holding one datapoint, and 200 to the rest: with a
    single sender, everything else still arrives; the poison one stays parked, retried."""
    bf = fake_blueflood
    outage = Outage(bf)
    outage.poison = {"lose.poison.s0.3.7"}
    ff = run_ff("-e", ANY_PORT, "-b", bf.url, "-t", TENANT,
                "-i", "0.2", "--concurrency", "1",
                "--admin-endpoint", ANY_PORT)  # fmt: skip
    port = ff.port()
    admin = ff.admin_port
    sender = Sender(port, "lose.poison.s0", int(time.time())).start()
    # Well past the poisoned frame (number 3), and the rest flowing around it.
    wait_until(lambda: sender.frames >= 60 and outage.failed, 30, "frames past the poison")
    sender.stop()
    expected = sender.expected - {("lose.poison.s0.3.7", sender.ts * 1000)}
    wait_until(lambda: bf.stored >= len(expected), 40, "everything but the poison")
    stored = {(name, ct) for (_t, name), pts in bf.store.items() for ct in pts}
    assert stored == expected
    wait_until(lambda: "retrying it every" in ff.stderr, 10, "the parking warning")
    assert scrape(admin)["fastforward_buffered_datapoints"] == 1  # kept, not dropped
    assert ff.terminate() == 4  # the parked one is lost at stop, without a spool: said so
    assert "stop: 1 datapoints could be neither delivered" in ff.stderr
    assert "fastforward stopped; 1 datapoints lost" in ff.stderr


@pytest.mark.parametrize("tenants", [0, 10], ids=["one tenant", "ten tenants by rules"])
def test_a_stalled_blueflood_keeps_what_is_held_for_data_under_the_cap(
    fake_blueflood: FakeBlueflood,
    run_ff,  # noqa: ANN001
    tmp_path: Path,
    tenants: int,
) -> None:
    """Blueflood hangs (no answer) under many fast senders: what the daemon counts as held for
    data (bodies queued, in flight and being filled, read buffers: buffered_bytes in memory)
    never passes --max-buffer-bytes, and once Blueflood answers everything arrives once. With
    rules sending each sender to a tenant of its own, one body is open per tenant: together
    they count before any of them is full."""
    bf = fake_blueflood
    outage = Outage(bf)
    cap = 4 * CAP
    routing: list[str] = []
    if tenants:
        rules = tmp_path / "rules.toml"
        rules.write_text(
            "".join(
                f'[[rule]]\nmatch = "prefix:stall.s{k}."\ntenant = "t{k}"\n\n' for k in range(10)
            )
        )
        routing = ["--rules", str(rules)]
    ff = run_ff(
        "-e", ANY_PORT, "-b", bf.url, "-t", TENANT, "-i", "0.2", "--concurrency", "2",
        "--max-buffer-bytes", str(cap), "--limit", "100000", "--admin-endpoint", ANY_PORT,
        *routing,
    )  # fmt: skip
    admin = ff.admin_port
    ts = int(time.time())
    senders = [
        Sender(ff.port(), f"stall.s{k}", ts, per_frame=100, period=0.01).start() for k in range(10)
    ]
    wait_until(lambda: bf.stored > 0, 30, "steady delivery")
    outage.mode = "stall"
    held: list[float] = []

    def paused_and_sampled() -> bool:  # held for data, sampled while the receivers are paused
        m = scrape(admin)
        held.append(m.get("fastforward_buffered_bytes", place="memory"))
        return m["fastforward_backpressure_active"] == 1 and len(held) >= 20

    wait_until(paused_and_sampled, 60, "the cap reached with Blueflood stalled", poll=0.05)
    outage.release()
    for s in senders:
        s.stop()
    expected = set().union(*(s.expected for s in senders))
    wait_until(lambda: bf.stored >= len(expected), 60, f"{len(expected)} datapoints stored")
    stored = {(name, ct) for (_t, name), pts in bf.store.items() for ct in pts}
    assert expected <= stored, f"{len(expected - stored)} datapoints never arrived"
    assert bf.duplicates == 0
    print(f"held for data: max {max(held):.0f} of {cap}, {len(expected)} datapoints")  # report
    assert max(held) <= cap, (max(held), cap)
    assert max(held) > cap // 2  # it did fill up to near the cap before pausing
    assert ff.terminate() == 0
    assert "Traceback" not in ff.stderr
