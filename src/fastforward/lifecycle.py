"""How a fastforward process answers signals; shared by the one-process `Service` and the
``--workers`` supervisor so both stop the same way.

- SIGTERM/SIGINT: the first one sets ``stopping`` (the owner drains, then returns its exit
  status). A second one exits at once with `EXIT_ERROR`, without draining, after ``on_force``
  (the supervisor kills its workers there). A repeat within ``debounce`` seconds of the first
  is taken as the same request delivered twice (to the process and to its process group, as
  ``timeout`` and systemd do) and ignored.
- SIGHUP: reopen the log file (logrotate and init scripts send it to mean that; by default it
  would end the process and lose what is buffered), then ``on_hup``.

Must be imported after gevent monkey-patching (gevent's signal handlers run in the hub, so a
handler may log and set events safely).
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Callable
from types import TracebackType

import gevent
from gevent.event import Event

from . import logsetup
from .errors import EXIT_ERROR

__all__ = ["Signals"]

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def _nothing() -> None:
    pass


class Signals:
    """SIGTERM/SIGINT/SIGHUP handling while a ``with`` block runs (see the module docstring).

    ``stopping_text``, ``forced_text`` and ``hup_text`` complete the log lines
    "SIGTERM: <stopping_text>", "SIGTERM again: <forced_text>" and "SIGHUP: <hup_text>";
    ``exit`` is the immediate exit (`os._exit` when not given)."""

    def __init__(
        self,
        stopping: Event,
        log: logging.Logger,
        *,
        stopping_text: str,
        forced_text: str,
        hup_text: str = "log file reopened",
        debounce: float = 0.0,
        on_force: Callable[[], None] = _nothing,
        on_hup: Callable[[], None] = _nothing,
        exit: Callable[[int], object] | None = None,
    ) -> None:
        self.stopping = stopping
        self._log = log
        self._stopping_text = stopping_text
        self._forced_text = forced_text
        self._hup_text = hup_text
        self._debounce = debounce
        self._on_force = on_force
        self._on_hup = on_hup
        self._exit = exit
        self._first_at: float | None = None
        self._handlers: list[gevent.hub.signal] = []

    def __enter__(self) -> Signals:
        self._handlers = [gevent.signal_handler(sig, self.stop_signal, sig) for sig in STOP_SIGNALS]
        self._handlers.append(gevent.signal_handler(signal.SIGHUP, self.hangup))
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for handler in self._handlers:
            handler.cancel()
        self._handlers = []

    def stop_signal(self, signum: int) -> None:
        """A SIGTERM or SIGINT arrived."""
        name = signal.Signals(signum).name
        now = time.monotonic()
        if self._first_at is None:
            self._first_at = now
            self._log.info("%s: %s", name, self._stopping_text)
            self.stopping.set()
            return
        if now - self._first_at < self._debounce:
            self._log.info("%s again within %gs: same stop request", name, self._debounce)
            return
        self._log.error("%s again: %s", name, self._forced_text)
        self._on_force()
        logging.shutdown()
        # Looked up now, not at definition: a test replaces os._exit for the whole process.
        (self._exit or os._exit)(EXIT_ERROR)

    def hangup(self) -> None:
        """A SIGHUP arrived: reopen the log, then pass it on (``on_hup``); never stop."""
        logsetup.reopen()
        self._log.info("SIGHUP: %s", self._hup_text)
        self._on_hup()
