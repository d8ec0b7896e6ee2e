"""`fastforward decode`: show the Blueflood bodies a capture of carbon traffic would become.

Reads length-prefixed pickle frames (what a carbon sender writes to port 2004), or plaintext
lines with ``--line``, from a file or stdin, and writes every JSON body the forwarder would POST
on its own line to stdout. A summary (accepted, dropped by reason, refused frames with their
offsets) goes to stderr. Exit status: 0 when the input could be read (bad frames included), 1
when the capture ends in the middle of a frame, 2 on usage errors.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import struct
import sys
from typing import BinaryIO

from ._codec_rules import (
    LOOKS_LIKE_PICKLE,
    LOOKS_LIKE_PLAINTEXT,
    looks_like_pickle,
    looks_like_plaintext,
)
from .attribution import shown
from .codec import IMPLEMENTATION, Encoder
from .config import add_arguments, settings_from_args
from .errors import ConfigError, FrameError

CHUNK = 1 << 16
MAX_LISTED = 20  # refused frames listed one by one in the summary
MAX_LINE_BYTES = 65_536

_HEADER = struct.Struct("!L")
# The daemon's hints, with the decode option that fixes it first.
PLAINTEXT_HINT = (
    f"{LOOKS_LIKE_PLAINTEXT}: decode it with --line "
    "(the daemon: use --protocol line or --line-endpoint)"
)
PICKLE_HINT = f"{LOOKS_LIKE_PICKLE}: decode it without --line (the daemon: a pickle --endpoint)"


# The daemon's options that shape the bodies, declared once on `config.Config`: the same flags
# (-p, --metric-prefix, --metric_prefix, --protocol, ...), defaults, conversions and checks, so
# a daemon command line can be reused to decode what that daemon receives.
SHARED_OPTIONS = (
    "protocol",
    "metric_prefix",
    "ttl",
    "limit",
    "max_body_datapoints",
    "overwrite_collection_timestamp",
    "max_frame_bytes",
    "max_past",
    "max_future",
)
_ALIASES = {"metric_prefix": ("--prefix",)}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="fastforward decode",
        description="Decode a capture of carbon pickle frames (or plaintext lines) into the "
        "Blueflood JSON bodies fastforward would POST, one per line; summary on stderr. The "
        "options are the daemon's, with its defaults and checks.",
    )
    p.add_argument("file", nargs="?", default="-", help="capture file, or - for stdin (default)")
    p.add_argument(
        "--line",
        dest="protocol",
        action="store_const",
        const="MetricLineReceiver",
        default=argparse.SUPPRESS,
        help="the input is plaintext lines (same as --protocol line)",
    )
    add_arguments(p, SHARED_OPTIONS, aliases=_ALIASES, with_help=True, bool_values=False)
    return p


class _Run:
    """One decoding run: the encoder, the output stream and what the summary reports."""

    def __init__(self, enc: Encoder, out: BinaryIO) -> None:
        self.enc = enc
        self.out = out
        self.bodies = 0
        self.body_bytes = 0
        self.refused: list[str] = []
        # skipped here before reaching the encoder (too long to hold in memory)
        self.oversize_frames = 0
        self.oversize_lines = 0
        self.samples: dict[str, bytes] = {}
        self.hints: list[str] = []

    def flush(self, partial: bool) -> None:
        bodies = self.enc.take(partial=partial)
        for body in bodies:
            self.out.write(body)
            self.out.write(b"\n")
            self.bodies += 1
            self.body_bytes += len(body)
        for reason, sample in self.enc.take_rejects():
            self.samples.setdefault(reason, sample)
            if reason == "bad_line" and PICKLE_HINT not in self.hints and looks_like_pickle(sample):
                self.hints.append(PICKLE_HINT)


def _read_exact(src: BinaryIO, n: int) -> bytes:
    parts = []
    while n > 0:
        chunk = src.read(min(n, CHUNK * 16))
        if not chunk:
            break
        parts.append(chunk)
        n -= len(chunk)
    return b"".join(parts)


def _skip(src: BinaryIO, n: int) -> int:
    """Read and discard n bytes without holding them; returns how many were there."""
    seen = 0
    while seen < n:
        chunk = src.read(min(n - seen, CHUNK * 16))
        if not chunk:
            break
        seen += len(chunk)
    return seen


def _decode_pickle(run: _Run, src: BinaryIO, max_frame: int) -> str | None:
    """Feed every frame; returns a message when the capture is truncated."""
    offset = 0
    while True:
        header = _read_exact(src, 4)
        if not header:
            return None
        if len(header) < 4:
            return f"capture ends inside the length prefix at offset {offset}"
        (size,) = _HEADER.unpack(header)
        if size > max_frame and looks_like_plaintext(header) and PLAINTEXT_HINT not in run.hints:
            run.hints.append(PLAINTEXT_HINT)
        if size > max_frame:
            got = _skip(src, size)
            if got < size:
                return (
                    f"frame at offset {offset} declares {size} bytes, only {got} present "
                    f"(and over --max-frame-bytes {max_frame})"
                )
            run.oversize_frames += 1
            run.refused.append(
                f"frame at offset {offset}: {size} bytes, over --max-frame-bytes {max_frame}"
            )
        else:
            frame = _read_exact(src, size)
            if len(frame) < size:
                return f"frame at offset {offset} declares {size} bytes, only {len(frame)} present"
            try:
                run.enc.add_pickle(frame)
            except FrameError as exc:
                run.refused.append(
                    f"frame at offset {offset} (byte {exc.offset} of the frame): {exc.reason}"
                )
        offset += 4 + size
        run.flush(partial=False)


def _decode_lines(run: _Run, src: BinaryIO, max_line: int) -> None:
    rest = b""
    skipping = False  # inside a line already over max_line: drop up to its newline
    while True:
        chunk = src.read(CHUNK)
        if not chunk:
            break
        if skipping:
            nl = chunk.find(b"\n")
            if nl < 0:
                continue
            chunk = chunk[nl + 1 :]
            skipping = False
        buf = rest + chunk
        used = run.enc.add_lines(buf)
        rest = buf[used:]
        if len(rest) > max_line:
            run.oversize_lines += 1
            rest = b""
            skipping = True
        run.flush(partial=False)
    if rest and not skipping:
        run.enc.add_lines(rest, final=True)


def _summary(run: _Run, truncated: str | None) -> str:
    c = run.enc.counters()
    lines = [
        f"fastforward decode ({IMPLEMENTATION} codec): {c['frames'] + run.oversize_frames} "
        f"frames, {c['lines'] + run.oversize_lines} lines; {c['accepted']} datapoints "
        f"accepted in {run.bodies} bodies "
        f"({run.body_bytes} bytes)"
    ]
    drops = {r: n for r, n in c.items() if r not in ("accepted", "frames", "lines") and n}
    # Named as the daemon counts them (fastforward_datapoints_dropped_total{reason}).
    for reason, extra in (
        ("oversize_frame", run.oversize_frames),
        ("line_too_long", run.oversize_lines),
    ):
        if extra:
            drops[reason] = drops.get(reason, 0) + extra
    if drops:
        lines.append("dropped: " + ", ".join(f"{r}={n}" for r, n in sorted(drops.items())))
        for reason in sorted(drops):
            sample = run.samples.get(reason)
            if sample and reason != "bad_frame":
                lines.append(f"  {reason}, e.g. '{shown(sample)}'")  # as the daemon logs it
    for msg in run.refused[:MAX_LISTED]:
        lines.append("refused " + msg)
    if len(run.refused) > MAX_LISTED:
        lines.append(f"... and {len(run.refused) - MAX_LISTED} more refused frames")
    if truncated:
        lines.append("truncated capture: " + truncated)
    lines.extend("hint: " + hint for hint in run.hints)
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Run `fastforward decode` with the arguments after the subcommand; returns the exit code."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2)
        return int(exc.code or 0)
    try:
        settings = settings_from_args(args, SHARED_OPTIONS)
        enc = Encoder(**settings.encoder_options(), max_line_bytes=MAX_LINE_BYTES)
    except (ConfigError, ValueError) as exc:
        parser.print_usage(sys.stderr)
        print(f"fastforward decode: error: {exc}", file=sys.stderr)
        return 2
    if args.file == "-":
        src: BinaryIO = sys.stdin.buffer
        closing: contextlib.AbstractContextManager = contextlib.nullcontext()
    else:
        try:
            src = open(args.file, "rb")  # noqa: SIM115 - closed below
        except OSError as exc:
            print(f"fastforward decode: error: cannot read {args.file}: {exc}", file=sys.stderr)
            return 2
        closing = src
    out = sys.stdout.buffer
    run = _Run(enc, out)
    truncated = None
    try:
        with closing:
            if settings.line_protocol:
                _decode_lines(run, src, MAX_LINE_BYTES)
            else:
                truncated = _decode_pickle(run, src, settings.max_frame_bytes)
        run.flush(partial=True)
        out.flush()
    except BrokenPipeError:  # `| head`: stop quietly, and let the exit-time flush succeed
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as exc:
        print(f"fastforward decode: error: reading {args.file}: {exc}", file=sys.stderr)
        return 2
    sys.stderr.write(_summary(run, truncated))
    return 1 if truncated else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
