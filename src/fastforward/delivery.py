"""The delivery decision: what to do with a body after Blueflood's answer. A pure function.

`decide()` maps one `Outcome` (docs/blueflood-api.md section 7), what is known of the body
(`Attempt`) and of the destination around it (`Situation`) to a `Decision`: the steps to try in
order until one takes the body, plus what to count. No gevent, no I/O, no clock, no logging:
the senders (`sending.py`) carry the decision out, and tests read it as a table.

A failed attempt is recorded first (`is_failure()` says whether the answer is one): the body's
attempt count grows, and under memory pressure the spool may take queued bodies, which can
reopen the receivers' gate. `decide()` then sees the state after that bookkeeping.

Steps that may fail at run time (writing to the spool, splitting a body) are followed by the
step to take instead, so the decision stays pure while the spool decides for itself.

The inputs describe one destination (one Blueflood URL and tenant): a per-tenant forwarder
keeps one `Situation` per tenant and the same function decides for each.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from .blueflood import Kind, Outcome

MAX_AUTH_REPLAYS = 3  # 401s in a row answered by replaying the same bytes at once
BISECT_500_AFTER = 5  # consecutive 500s before a body is suspected of poison data
RETRY_AFTER_CAP = 600.0  # longest Retry-After obeyed, seconds


class Step(enum.Enum):
    DELIVERED = "delivered"  # 2xx / 207: count what was sent; finished
    REJECTED = "rejected"  # 400 with per-metric errors: count them; finished, never retried
    SPLIT = "split"  # two halves to the front of the queue (may fail: one datapoint)
    DROP = "drop"  # one datapoint Blueflood refuses for good: count it rejected; finished
    REPLAY = "replay"  # 401: the client dropped its token; POST the same bytes again now
    SPOOL = "spool"  # to the disk spool, so the receivers resume (may fail: full, disk error)
    BISECT = "bisect"  # suspected poison: split, and the halves bisect at their next 500
    PARK = "park"  # a suspected poison datapoint leaves its sender, retried now and then
    REQUEUE = "requeue"  # wait, then to the back of the queue: another body probes meanwhile
    RESPOOL = "respool"  # a replayed body goes back as the newest spool file (may fail)
    WAIT = "wait"  # wait (backoff or Retry-After), then POST the same body again


class Wait(enum.Enum):
    NONE = "none"
    BACKOFF = "backoff"  # exponential in the body's failed attempts, with jitter
    RETRY_AFTER = "retry_after"  # what Blueflood asked for (`Decision.seconds`)


@dataclass(frozen=True)
class Attempt:
    """The body, as it stood before this answer."""

    datapoints: int
    attempts: int = 0  # consecutive failed attempts, this answer's included if it is one
    auth_replays: int = 0  # consecutive 401 replays before this answer
    replayed: bool = False  # it came from the spool (it belongs to a spool file)
    # Blueflood accepted another body since this one started failing: a 500 may be the data's.
    accepted_since_failing: bool = False


@dataclass(frozen=True)
class Situation:
    """The destination around the body."""

    spool: bool = False  # a disk spool is configured
    receivers_paused: bool = False  # the memory cap is reached: the gate is closed
    others_queued: bool = False  # other bodies wait in the queue
    spool_files: int = 0  # files in the spool, this body's own included


@dataclass(frozen=True)
class Decision:
    steps: tuple[Step, ...]  # try in order; the first that succeeds finishes the decision
    answered: bool = False  # Blueflood answered about the data: the destination works
    retry_cause: str = ""  # label of the `retries` counter; empty: not a retry
    wait: Wait = Wait.NONE  # for WAIT and REQUEUE
    seconds: float = 0.0  # the wait, for Wait.RETRY_AFTER
    reject_source: str = ""  # `datapoints_rejected` label for DROP
    errors_listed: bool = False  # 207: log and count Blueflood's per-metric errors
    auth_replays: int | None = None  # the body's 401 replay count from now on; None: as is


def is_failure(outcome: Outcome, auth_replays: int) -> bool:
    """Whether this answer is a failed attempt: Blueflood (or the way to it) is failing.

    ``auth_replays``: the body's 401 replays before this answer; a 401 is a failure only once
    replaying with a fresh token stopped helping.
    """
    if outcome.kind is Kind.UNAUTHORIZED:
        return auth_replays + 1 > MAX_AUTH_REPLAYS
    return outcome.kind in (Kind.RETRY, Kind.RATE_LIMITED)


def decide(outcome: Outcome, attempt: Attempt, situation: Situation) -> Decision:
    """What to do with the body after ``outcome``."""
    kind = outcome.kind
    if kind is Kind.OK:
        return Decision((Step.DELIVERED,), answered=True)
    if kind is Kind.PARTIAL:
        return Decision((Step.DELIVERED,), answered=True, errors_listed=True)
    if kind is Kind.REJECTED:
        return Decision((Step.REJECTED,), answered=True)
    if kind is Kind.BAD_REQUEST:  # "Cannot parse content": a bug; bisect to the datapoint
        return Decision((Step.SPLIT, Step.DROP), answered=True, reject_source="bad_request")
    if kind is Kind.TOO_LARGE:
        return Decision((Step.SPLIT, Step.DROP), reject_source="too_large")
    if kind is Kind.UNAUTHORIZED:
        replays = attempt.auth_replays + 1
        if replays <= MAX_AUTH_REPLAYS:
            return Decision((Step.REPLAY,), retry_cause="401", auth_replays=replays)
        return Decision((Step.WAIT,), retry_cause="401", wait=Wait.BACKOFF, auth_replays=0)
    return _failed(outcome, attempt, situation)


def _failed(outcome: Outcome, attempt: Attempt, situation: Situation) -> Decision:
    """RETRY and RATE_LIMITED: Blueflood is failing, or this body's data may be."""
    cause = outcome.reason or "unknown"
    steps: list[Step] = []
    if situation.spool and situation.receivers_paused and not attempt.replayed:
        # A failing body in flight must not keep the memory cap reached: to disk with it.
        steps.append(Step.SPOOL)
    if outcome.status == 500 and attempt.attempts >= BISECT_500_AFTER:
        if attempt.accepted_since_failing:
            return Decision((*steps, Step.BISECT, Step.PARK), retry_cause=cause)
        if situation.others_queued:
            # Try another body next: its answer tells an outage from poison data.
            return Decision((*steps, Step.REQUEUE), retry_cause=cause, wait=Wait.BACKOFF)
        if attempt.replayed and situation.spool_files > 1:
            steps.append(Step.RESPOOL)  # the same for the spool: its next file goes meanwhile
    steps.append(Step.WAIT)
    if _waits_as_asked(outcome):
        return Decision(
            tuple(steps),
            retry_cause=cause,
            wait=Wait.RETRY_AFTER,
            seconds=min(outcome.retry_after or 0.0, RETRY_AFTER_CAP),
        )
    return Decision(tuple(steps), retry_cause=cause, wait=Wait.BACKOFF)


def _waits_as_asked(outcome: Outcome) -> bool:
    """A rate limit that says how long to wait (Retry-After) is obeyed instead of backing off."""
    return outcome.kind is Kind.RATE_LIMITED and outcome.retry_after is not None


def backoff_seconds(attempts: int, base: float, cap: float) -> float:
    """The longest backoff after ``attempts`` failed attempts (the caller adds jitter)."""
    return min(cap, base * 2 ** max(0, attempts - 1))
