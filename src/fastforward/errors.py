"""The exception types of fastforward, shared by both codec implementations and the daemon."""

from __future__ import annotations

# Exit statuses of the `fastforward` process (re-exported by `cli`; the supervisor and the
# service return them too, so they live down here).
EXIT_OK = 0  # stopped cleanly: everything delivered or spooled
EXIT_ERROR = 1  # an unexpected error, or a second signal (exit without draining)
EXIT_USAGE = 2  # bad options or configuration
EXIT_STARTUP = 3  # a resource unusable at start: port, spool directory, log file, certificate
EXIT_UNDELIVERED = 4  # stopped, but some datapoints were neither delivered nor spooled


class FastforwardError(Exception):
    """Base class of every error fastforward raises on purpose."""


class FrameError(FastforwardError, ValueError):
    """A pickle frame was refused; no datapoint of that frame was emitted.

    ``offset`` is the byte offset inside the frame where decoding stopped, ``reason`` a short
    lower-case phrase (for example ``"forbidden opcode GLOBAL"`` or ``"truncated frame"``).
    """

    def __init__(self, reason: str, offset: int = -1) -> None:
        self.reason = reason
        self.offset = offset
        super().__init__(f"bad pickle frame at offset {offset}: {reason}")

    def __reduce__(self):  # keep the two-argument constructor picklable (multiprocessing)
        return (type(self), (self.reason, self.offset))


class FrameTooLarge(FrameError):
    """The frame is longer than the configured limit."""


class StartupError(FastforwardError):
    """Something needed at start-up is unusable (port in use, bad certificate, pidfile...)."""


class ConfigError(FastforwardError, ValueError):
    """An option, config file or endpoint string is unusable; the message names it."""
