"""What /health answers, as a table of the forwarder's state (`health.judge` is pure)."""

from __future__ import annotations

import pytest

from fastforward.health import UNHEALTHY_AFTER_MIN, HealthFacts, judge

LONG = 100.0  # past the grace of three 1 s intervals (and of UNHEALTHY_AFTER_MIN)
SHORT = UNHEALTHY_AFTER_MIN - 1  # one failed POST, or a short pause: no flapping

ROWS = [
    ("all fine", HealthFacts(interval=1), (True, "ok")),
    ("stopping", HealthFacts(stopping=True), (False, "stopping")),
    ("flusher dead", HealthFacts(flusher_running=False), (False, "flusher not running")),
    ("a sender died", HealthFacts(senders_running=False), (False, "a sender died")),
    (
        "paused long",
        HealthFacts(interval=1, paused_seconds=LONG),
        (False, "receivers paused by backpressure for 100s"),
    ),
    (
        "paused long with a spool",
        HealthFacts(interval=1, paused_seconds=LONG, spool=True),
        (False, "receivers paused by backpressure for 100s; spool full or failing"),
    ),
    ("paused briefly", HealthFacts(interval=1, paused_seconds=SHORT), (True, "ok")),
    (
        "paused within three intervals",
        HealthFacts(interval=60, paused_seconds=LONG),
        (True, "ok"),
    ),
    (
        "failing long without a spool",
        HealthFacts(interval=1, failing_seconds=LONG, data_waiting=True),
        (False, "Blueflood failing for 100s, no spool"),
    ),
    (
        "failing long, spool full",
        HealthFacts(
            interval=1, failing_seconds=LONG, data_waiting=True, spool=True, spool_full=True
        ),
        (False, "Blueflood failing for 100s; spool full"),
    ),
    (
        "failing long, the spool takes it",
        HealthFacts(interval=1, failing_seconds=LONG, data_waiting=True, spool=True),
        (True, "ok; Blueflood failing for 100s, the spool takes overflow"),
    ),
    (
        "failing long but nothing waits",
        HealthFacts(interval=1, failing_seconds=LONG),
        (True, "ok"),
    ),
    (
        "failing briefly",
        HealthFacts(interval=1, failing_seconds=SHORT, data_waiting=True),
        (True, "ok"),
    ),
]


@pytest.mark.parametrize(("facts", "expected"), [r[1:] for r in ROWS], ids=[r[0] for r in ROWS])
def test_judge(facts: HealthFacts, expected: tuple[bool, str]):
    assert judge(facts) == expected
