"""One Blueflood destination's run of failures, and the log lines that tell the operator.

The first failed POST of a run is logged at once (URL, the error in plain words, what waits in
memory and on disk), a reminder follows every ``reminder`` seconds while the run lasts, and one
line says when the destination recovered. The state is per destination, so a forwarder of
several tenants keeps one `TargetState` for each.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, MutableMapping
from typing import TYPE_CHECKING, Any

import gevent

from .blueflood import Outcome

# Share the forwarder's logger: operators (and alerts on log text) know these lines by it.
log = logging.getLogger("fastforward.forwarder")

FAILURE_REMINDER_SECONDS = 60.0
# While Blueflood fails, the log says so again this often (the first failure is logged at once).
# The variable is for tests, which cannot wait a minute; it is not an option.
FAILURE_REMINDER_ENV = "FASTFORWARD_TEST_FAILURE_REMINDER_SECONDS"


if TYPE_CHECKING:
    _Adapter = logging.LoggerAdapter[logging.Logger]
else:
    _Adapter = logging.LoggerAdapter  # subscriptable at run time only from Python 3.11


class LaneLog(_Adapter):
    """The forwarder's logger as one delivery lane uses it: with several tenants each lane's
    lines start with its tenant (``tenant 222: stop: everything was delivered``), so the
    operator knows whose they are; with one destination they read as they always did."""

    def __init__(self, who: str = "") -> None:
        super().__init__(log, {})
        self.prefix = f"{who}: " if who else ""

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, Any]:
        return f"{self.prefix}{msg}", kwargs


def reminder_seconds(text: str) -> float:
    """The reminder period from ``FAILURE_REMINDER_ENV``: at most a minute, which is the default."""
    try:
        seconds = float(text)
    except ValueError:
        return FAILURE_REMINDER_SECONDS
    return seconds if 0 < seconds <= FAILURE_REMINDER_SECONDS else FAILURE_REMINDER_SECONDS


class TargetState:
    """Whether a destination is failing, since when, and why; logs the run's start and end."""

    def __init__(self, url: str, holding: Callable[[], str]) -> None:
        """``url``: the destination, for the log; ``holding``: what waits for it, in words."""
        self.url = url
        self.holding = holding
        self.failures = 0  # consecutive failed POSTs, any body
        self.failing_since: float | None = None
        self.last_success = time.monotonic()
        self.last_failure = ""  # the last failure in words, for the reminders
        self.last_failure_at = 0.0
        self.reminder = reminder_seconds(os.environ.get(FAILURE_REMINDER_ENV, ""))
        self.log = LaneLog()  # the lane's own, once it has one (Forwarder.name_lane)

    @property
    def failing(self) -> bool:
        return self.failing_since is not None

    def failing_seconds(self) -> float:
        """Seconds since the first of the current run of failed POSTs; 0 while they succeed."""
        since = self.failing_since
        return 0.0 if since is None else time.monotonic() - since

    def succeeded(self) -> None:
        """Blueflood answered about the data: the run of failures, if any, is over."""
        if self.failing_since is not None:
            self.log.warning(
                "Blueflood at %s recovered after %.1fs of failures (last: %s)",
                self.url,
                time.monotonic() - self.failing_since,
                self.last_failure,
            )
        self.failures = 0
        self.failing_since = None
        self.last_success = time.monotonic()

    def failed(self, outcome: Outcome, url: str) -> None:
        """A POST to ``url`` failed; the first of a run is logged at once."""
        now = time.monotonic()
        self.failures += 1
        self.last_failure, self.last_failure_at = outcome.failure, now
        if self.failing_since is None:
            self.failing_since = now
            self.log.error(
                "Blueflood POST to %s failed: %s; retrying with backoff, %s",
                url,
                outcome.failure,
                self.holding(),
            )

    def remind(self) -> None:
        """One reminder line while the run of failures lasts."""
        if self.failing_since is None:
            return
        self.log.error(
            "Blueflood at %s still failing after %.0fs: %s (last attempt %.0fs ago); %s",
            self.url,
            self.failing_seconds(),
            self.last_failure,
            time.monotonic() - self.last_failure_at,
            self.holding(),
        )

    def reminder_loop(self) -> None:
        """A greenlet: `remind()` every ``reminder`` seconds."""
        while True:
            gevent.sleep(self.reminder)
            self.remind()
