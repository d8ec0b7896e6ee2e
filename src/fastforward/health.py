"""What ``/health`` says about the forwarder: a pure judgement of a few facts.

Blueflood failing for a while is unhealthy without a spool (data piles up in memory, then the
receivers stop), and healthy while the spool takes the overflow and has room. One failed POST
never flaps it: the grace is three flush intervals, at least ``UNHEALTHY_AFTER_MIN`` seconds.
"""

from __future__ import annotations

from dataclasses import dataclass

UNHEALTHY_AFTER_MIN = 5.0


@dataclass(frozen=True)
class HealthFacts:
    stopping: bool = False
    flusher_running: bool = True
    senders_running: bool = True  # every sender (and helper) greenlet is alive
    interval: float = 30.0
    paused_seconds: float = 0.0  # receivers paused by backpressure, current episode
    failing_seconds: float | None = None  # Blueflood failing; None while it answers
    data_waiting: bool = False  # bodies queued, in flight or parked
    spool: bool = False  # a spool is configured
    spool_full: bool = False


def judge(facts: HealthFacts) -> tuple[bool, str]:
    """(ok, reason) for /health."""
    if facts.stopping:
        return False, "stopping"
    if not facts.flusher_running:
        return False, "flusher not running"
    if not facts.senders_running:
        return False, "a sender died"
    grace = max(UNHEALTHY_AFTER_MIN, 3 * facts.interval)
    if facts.paused_seconds > grace:
        return False, f"receivers paused by backpressure for {facts.paused_seconds:.0f}s" + (
            "; spool full or failing" if facts.spool else ""
        )
    failing = facts.failing_seconds
    if failing is not None and facts.data_waiting and failing > grace:
        if not facts.spool or facts.spool_full:
            return False, f"Blueflood failing for {failing:.0f}s" + (
                "; spool full" if facts.spool else ", no spool"
            )
        return True, f"ok; Blueflood failing for {failing:.0f}s, the spool takes overflow"
    return True, "ok"
