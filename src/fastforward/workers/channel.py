"""The control channel between a worker and its supervisor: what travels, and how it is framed.

One UNIX socketpair per worker, newline-delimited JSON. Worker -> supervisor: a `Report`
every second (and once more after the drain): whether it serves, its health, its stats
samples, its /debug tables. Supervisor -> worker: the line `STOP` (drain and exit). Stopping
through the channel instead of re-sending SIGTERM means a worker that also received the
signal directly (a process-group kill, systemd, Ctrl-C) sees one stop request, not two.

Plain standard library; no I/O here except `LineReader`, which reads any binary file.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, Any

from ..stats import Sample

__all__ = ["STOP", "LineReader", "Report", "ReportError", "decode_report", "encode_report"]

STOP = b"stop\n"


class ReportError(ValueError):
    """A line from a worker that is not a report."""


@dataclass
class Report:
    """One report of a worker."""

    started: bool  # every listener serves
    health: tuple[bool, str]
    samples: list[Sample] = field(default_factory=list)
    debug: dict[str, Any] = field(default_factory=dict)  # {"senders": ..., "rejects": ...}


def encode_report(report: Report) -> bytes:
    """One line of JSON, newline included."""
    message = {
        "started": report.started,
        "health": list(report.health),
        "samples": [[n, [list(p) for p in ls], v] for n, ls, v in report.samples],
        "debug": report.debug,
    }
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


def decode_report(line: bytes) -> Report:
    """The `Report` in one line; `ReportError` naming what is wrong otherwise."""
    try:
        message = json.loads(line)
        ok, reason = message["health"]
        samples = [
            (str(name), tuple((str(k), str(v)) for k, v in labels), float(value))
            for name, labels, value in message["samples"]
        ]
        started = bool(message["started"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ReportError(str(exc)) from None
    debug = message.get("debug")
    return Report(
        started=started,
        health=(bool(ok), str(reason)),
        samples=samples,
        debug=debug if isinstance(debug, dict) else {},
    )


def is_stop(line: bytes) -> bool:
    """Whether a line from the supervisor asks to stop."""
    return line.strip() == STOP.strip()


class LineReader:
    """The lines of a channel until end of file or a socket error (the peer is gone)."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._stream = stream

    def __iter__(self) -> Iterator[bytes]:
        try:
            yield from self._stream
        except OSError:
            return
        finally:
            self._stream.close()
