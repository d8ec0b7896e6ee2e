"""The delivery decision as a table: every kind of Blueflood answer, and the state around it.

`delivery.decide` is pure (no gevent, no I/O), so each row is one call: an answer, the body
before it, the destination around it, and the decision a sender then carries out.
"""

from __future__ import annotations

import pytest

from fastforward.blueflood import Kind, Outcome
from fastforward.delivery import (
    BISECT_500_AFTER,
    MAX_AUTH_REPLAYS,
    RETRY_AFTER_CAP,
    Attempt,
    Decision,
    Situation,
    Step,
    Wait,
    backoff_seconds,
    decide,
    is_failure,
)

S = Step
OK = Outcome(Kind.OK, 200, "200")
ACCEPTED = Outcome(Kind.OK, 202, "202")
PARTIAL = Outcome(Kind.PARTIAL, 207, "207", [{"source": "collectionTime"}])
REJECTED = Outcome(Kind.REJECTED, 400, "400", [{"source": "metricValue"}])
UNPARSABLE = Outcome(Kind.BAD_REQUEST, 400, "400", [{"message": "Cannot parse content"}])
TOO_LARGE = Outcome(Kind.TOO_LARGE, 413, "413")
UNAUTHORIZED = Outcome(Kind.UNAUTHORIZED, 401, "401")
RATE_LIMITED = Outcome(Kind.RATE_LIMITED, 429, "429", retry_after=2.0)
RATE_LIMITED_LONG = Outcome(Kind.RATE_LIMITED, 413, "413", retry_after=86400.0)
RATE_LIMITED_NO_DATE = Outcome(Kind.RATE_LIMITED, 429, "429")
UNAVAILABLE = Outcome(Kind.RETRY, 503, "503")
SERVER_ERROR = Outcome(Kind.RETRY, 500, "500")
REFUSED = Outcome(Kind.RETRY, None, "connection", detail="connection refused")
NO_REASON = Outcome(Kind.RETRY, None, "")

FRESH = Attempt(datapoints=100, attempts=1)  # first failure of a live body
PLAIN = Situation()
PAUSED_WITH_SPOOL = Situation(spool=True, receivers_paused=True)
POISON_SUSPECT = Attempt(datapoints=8, attempts=BISECT_500_AFTER, accepted_since_failing=True)
OUTAGE = Attempt(datapoints=8, attempts=BISECT_500_AFTER)  # nothing accepted since it failed
REPLAYED_OUTAGE = Attempt(datapoints=8, attempts=BISECT_500_AFTER, replayed=True)

ROWS: list[tuple[str, Outcome, Attempt, Situation, Decision]] = [
    # -- Blueflood took the body ------------------------------------------------------------------
    ("200 is delivered", OK, Attempt(100), PLAIN, Decision((S.DELIVERED,), answered=True)),
    ("202 is delivered", ACCEPTED, Attempt(100), PLAIN, Decision((S.DELIVERED,), answered=True)),
    (
        "207 is delivered and its errors are listed",
        PARTIAL,
        Attempt(100),
        PLAIN,
        Decision((S.DELIVERED,), answered=True, errors_listed=True),
    ),
    (
        "400 with per-metric errors is counted rejected, never retried",
        REJECTED,
        Attempt(100),
        PAUSED_WITH_SPOOL,
        Decision((S.REJECTED,), answered=True),
    ),
    # -- the body itself is the problem ---------------------------------------------------------
    (
        "400 cannot parse content bisects, dropping a lone datapoint",
        UNPARSABLE,
        Attempt(100),
        PLAIN,
        Decision((S.SPLIT, S.DROP), answered=True, reject_source="bad_request"),
    ),
    (
        "413 without Retry-After splits, dropping a lone datapoint",
        TOO_LARGE,
        Attempt(100),
        PLAIN,
        Decision((S.SPLIT, S.DROP), reject_source="too_large"),
    ),
    # -- authentication -------------------------------------------------------------------------
    (
        "401 replays the same bytes at once",
        UNAUTHORIZED,
        Attempt(100),
        PLAIN,
        Decision((S.REPLAY,), retry_cause="401", auth_replays=1),
    ),
    (
        "the last 401 replay allowed",
        UNAUTHORIZED,
        Attempt(100, auth_replays=MAX_AUTH_REPLAYS - 1),
        PLAIN,
        Decision((S.REPLAY,), retry_cause="401", auth_replays=MAX_AUTH_REPLAYS),
    ),
    (
        "401 after the replays backs off and starts counting replays again",
        UNAUTHORIZED,
        Attempt(100, attempts=1, auth_replays=MAX_AUTH_REPLAYS),
        PAUSED_WITH_SPOOL,
        Decision((S.WAIT,), retry_cause="401", wait=Wait.BACKOFF, auth_replays=0),
    ),
    # -- Blueflood failing ----------------------------------------------------------------------
    (
        "503 backs off and retries",
        UNAVAILABLE,
        FRESH,
        PLAIN,
        Decision((S.WAIT,), retry_cause="503", wait=Wait.BACKOFF),
    ),
    (
        "a refused connection backs off and retries",
        REFUSED,
        FRESH,
        Situation(spool=True),
        Decision((S.WAIT,), retry_cause="connection", wait=Wait.BACKOFF),
    ),
    (
        "a failure without a reason is counted as unknown",
        NO_REASON,
        FRESH,
        PLAIN,
        Decision((S.WAIT,), retry_cause="unknown", wait=Wait.BACKOFF),
    ),
    (
        "429 with Retry-After waits as asked",
        RATE_LIMITED,
        FRESH,
        PLAIN,
        Decision((S.WAIT,), retry_cause="429", wait=Wait.RETRY_AFTER, seconds=2.0),
    ),
    (
        "Retry-After is obeyed up to a cap",
        RATE_LIMITED_LONG,
        FRESH,
        PLAIN,
        Decision((S.WAIT,), retry_cause="413", wait=Wait.RETRY_AFTER, seconds=RETRY_AFTER_CAP),
    ),
    (
        "429 with an unreadable Retry-After backs off",
        RATE_LIMITED_NO_DATE,
        FRESH,
        PLAIN,
        Decision((S.WAIT,), retry_cause="429", wait=Wait.BACKOFF),
    ),
    # -- memory pressure ------------------------------------------------------------------------
    (
        "failing while the receivers are paused: to the spool, else retry",
        UNAVAILABLE,
        FRESH,
        PAUSED_WITH_SPOOL,
        Decision((S.SPOOL, S.WAIT), retry_cause="503", wait=Wait.BACKOFF),
    ),
    (
        "rate limited while paused: to the spool, else wait as asked",
        RATE_LIMITED,
        FRESH,
        PAUSED_WITH_SPOOL,
        Decision((S.SPOOL, S.WAIT), retry_cause="429", wait=Wait.RETRY_AFTER, seconds=2.0),
    ),
    (
        "paused without a spool: only retry",
        UNAVAILABLE,
        FRESH,
        Situation(receivers_paused=True),
        Decision((S.WAIT,), retry_cause="503", wait=Wait.BACKOFF),
    ),
    (
        "a replayed body is on disk already: not spooled again when paused",
        UNAVAILABLE,
        Attempt(100, attempts=1, replayed=True),
        PAUSED_WITH_SPOOL,
        Decision((S.WAIT,), retry_cause="503", wait=Wait.BACKOFF),
    ),
    # -- repeated 500s: outage or poison data ---------------------------------------------------
    (
        "500s below the bisection threshold just retry",
        SERVER_ERROR,
        Attempt(8, attempts=BISECT_500_AFTER - 1, accepted_since_failing=True),
        PLAIN,
        Decision((S.WAIT,), retry_cause="500", wait=Wait.BACKOFF),
    ),
    (
        "repeated 500s while others are accepted: bisect, parking a lone datapoint",
        SERVER_ERROR,
        POISON_SUSPECT,
        PLAIN,
        Decision((S.BISECT, S.PARK), retry_cause="500"),
    ),
    (
        "suspected poison while paused: to the spool first",
        SERVER_ERROR,
        POISON_SUSPECT,
        PAUSED_WITH_SPOOL,
        Decision((S.SPOOL, S.BISECT, S.PARK), retry_cause="500"),
    ),
    (
        "repeated 503s are an outage whatever else is accepted",
        UNAVAILABLE,
        Attempt(8, attempts=BISECT_500_AFTER, accepted_since_failing=True),
        Situation(others_queued=True),
        Decision((S.WAIT,), retry_cause="503", wait=Wait.BACKOFF),
    ),
    (
        "repeated 500s with other bodies queued: requeue, the next body probes",
        SERVER_ERROR,
        OUTAGE,
        Situation(others_queued=True),
        Decision((S.REQUEUE,), retry_cause="500", wait=Wait.BACKOFF),
    ),
    (
        "repeated 500s, nothing else to try: an outage, keep the body whole",
        SERVER_ERROR,
        OUTAGE,
        PLAIN,
        Decision((S.WAIT,), retry_cause="500", wait=Wait.BACKOFF),
    ),
    (
        "a replayed body with more files spooled goes back as the newest file",
        SERVER_ERROR,
        REPLAYED_OUTAGE,
        Situation(spool=True, spool_files=3),
        Decision((S.RESPOOL, S.WAIT), retry_cause="500", wait=Wait.BACKOFF),
    ),
    (
        "the only spooled file is retried in place",
        SERVER_ERROR,
        REPLAYED_OUTAGE,
        Situation(spool=True, spool_files=1),
        Decision((S.WAIT,), retry_cause="500", wait=Wait.BACKOFF),
    ),
]


@pytest.mark.parametrize(
    ("outcome", "attempt", "situation", "expected"),
    [row[1:] for row in ROWS],
    ids=[row[0] for row in ROWS],
)
def test_decide(outcome: Outcome, attempt: Attempt, situation: Situation, expected: Decision):
    assert decide(outcome, attempt, situation) == expected


def test_every_kind_of_answer_has_a_row():
    assert {row[1].kind for row in ROWS} == set(Kind)


def test_every_step_is_decided_somewhere():
    assert {step for row in ROWS for step in row[4].steps} == set(Step)


@pytest.mark.parametrize(
    ("outcome", "auth_replays", "failure"),
    [
        (OK, 0, False),
        (PARTIAL, 0, False),
        (REJECTED, 0, False),
        (UNPARSABLE, 0, False),
        (TOO_LARGE, 0, False),
        (UNAUTHORIZED, 0, False),
        (UNAUTHORIZED, MAX_AUTH_REPLAYS - 1, False),
        (UNAUTHORIZED, MAX_AUTH_REPLAYS, True),
        (RATE_LIMITED, 0, True),
        (UNAVAILABLE, 0, True),
        (REFUSED, 0, True),
    ],
)
def test_which_answers_are_failed_attempts(outcome: Outcome, auth_replays: int, failure: bool):
    """A failed attempt counts on the body (toward bisection) and starts the "failing" log."""
    assert is_failure(outcome, auth_replays) is failure


def test_a_failure_decision_never_says_blueflood_answered():
    for _, outcome, attempt, situation, _ in ROWS:
        if is_failure(outcome, attempt.auth_replays):
            assert not decide(outcome, attempt, situation).answered


@pytest.mark.parametrize(
    ("attempts", "seconds"),
    [(0, 0.5), (1, 0.5), (2, 1.0), (3, 2.0), (6, 16.0), (7, 30.0), (60, 30.0)],
)
def test_backoff_doubles_up_to_its_cap(attempts: int, seconds: float):
    assert backoff_seconds(attempts, base=0.5, cap=30.0) == seconds
