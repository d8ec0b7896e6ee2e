"""Carbon's stream framing over a read buffer, without sockets.

A stream connection reads into one `ReadBuffer`; what is between ``start`` and ``end`` is
received and not consumed yet. Two framings cut it into records:

- pickle: a 4-byte big-endian length, then that many bytes of pickle (`frame_stop`); a length
  over ``--max-frame-bytes`` ends the connection (`OversizeFrame`);
- plaintext: lines ending in ``\\n``, split by the codec's ``add_lines``; a line longer than
  `MAX_LINE_BYTES` is dropped up to its newline (`LineFraming`).

`mid_record` says whether unconsumed bytes end inside a record: a close on purpose
(``--max-connection-age``, the shutdown drain) waits for a record boundary so it cuts nothing.
The receiver keeps the sockets, greenlets and backpressure; everything here is plain data.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

from ._codec_rules import LOOKS_LIKE_PLAINTEXT, looks_like_plaintext

# A connection starts small (a thousand idle relays must not cost 256 MiB) and its buffer
# doubles while reads fill it, up to READ_BUFFER, where one recv takes ~8 frames of 500.
INITIAL_BUFFER = 16 * 1024
READ_BUFFER = 256 * 1024
MAX_LINE_BYTES = 65_536
LENGTH_BYTES = 4  # the pickle frame's length prefix
SAMPLE_BYTES = 64  # of a refused, oversize or truncated frame, for the log and /debug/rejects
PLAINTEXT_HINT = f"{LOOKS_LIKE_PLAINTEXT}: use --protocol line or --line-endpoint"

_unpack_len = struct.Struct("!I").unpack_from


class ReadMemory:
    """What the connections' read buffers hold beyond their initial size, in one counter the
    memory cap sees.

    `limit` is ``--max-buffer-bytes``: a buffer grows only while everything held for data
    (`held`: these buffers and the bodies) stays under it, and an empty buffer over the
    initial size shrinks back when the buffers alone are at it, so a thousand fast senders
    cannot hold 256 KiB each beyond the cap (they read in smaller chunks instead).
    The initial INITIAL_BUFFER of each connection is not counted: it is the connection's own
    cost, bounded by --max-connections, and a connection parked by backpressure keeps it; were
    it counted, enough parked connections would hold the gate shut for good.
    """

    __slots__ = ("used", "limit", "held")

    def __init__(self, limit: int = 0) -> None:
        self.used = 0
        self.limit = limit  # 0: no cap (growth is never refused)
        # Everything held for data, these buffers included (the forwarder's count); None: the
        # buffers alone.
        self.held: Callable[[], int] | None = None

    def may_add(self, extra: int) -> bool:
        """Do the read buffers alone stay within the cap with `extra` bytes more?"""
        return not self.limit or self.used + extra <= self.limit

    def may_grow(self, extra: int) -> bool:
        """Does everything held for data stay within the cap with `extra` bytes more?"""
        held = self.used if self.held is None else self.held()
        return not self.limit or held + extra <= self.limit


def _beyond_initial(size: int) -> int:
    """The part of a read buffer of `size` bytes that counts against the memory cap."""
    return max(0, size - INITIAL_BUFFER)


class ReadBuffer:
    """Bytes read from one connection: ``buf[start:end]`` is received and not yet consumed.

    Reads go into ``mv[end:]`` (a memoryview, so ``recv_into`` copies nothing) and records are
    handed on as slices of ``mv``. The unread tail moves to the front only when needed. With a
    `ReadMemory`, the buffer's capacity is counted there until `release`.
    """

    __slots__ = ("buf", "mv", "start", "end", "memory")

    def __init__(self, size: int = INITIAL_BUFFER, memory: ReadMemory | None = None) -> None:
        self.buf = bytearray(size)
        self.mv = memoryview(self.buf)
        self.start = 0
        self.end = 0
        self.memory = memory
        if memory is not None:
            memory.used += _beyond_initial(size)

    def sample(self) -> bytes:
        """The first unconsumed bytes (at most SAMPLE_BYTES), for a log line or a reject."""
        return bytes(self.mv[self.start : min(self.end, self.start + SAMPLE_BYTES)])

    def make_room(self, need: int) -> None:
        """Make sure `need` bytes from `start` fit; move the tail down or grow the buffer."""
        size = len(self.buf)
        pending = self.end - self.start
        if need <= size and self.start > 0 and (self.end == size or self.start + need > size):
            self.buf[:pending] = bytes(self.mv[self.start : self.end])  # occasional
        elif need > size:
            self._replace(max(need, min(size * 2, need * 2)), pending)
        else:
            return
        self.start, self.end = 0, pending

    def _replace(self, size: int, keep: int) -> None:
        """A new buffer of `size` bytes holding the `keep` unconsumed ones, at the front."""
        new = bytearray(size)
        new[:keep] = self.mv[self.start : self.start + keep]
        if self.memory is not None:
            self.memory.used += _beyond_initial(size) - _beyond_initial(len(self.buf))
        self.mv.release()
        self.buf = new
        self.mv = memoryview(new)

    def grow(self, room: bool = True) -> None:
        """A read filled the buffer: the sender is fast, so read bigger chunks (fewer recvs),
        unless there is no `room` (the memory cap is reached: the receivers' gate is closed) or
        it would take what is held for data (buffers and bodies) over the cap (a buffer full of
        one unfinished record grows anyway: it cannot make progress otherwise)."""
        size = len(self.buf)
        if size < READ_BUFFER:
            bigger = min(READ_BUFFER, 2 * size)
            stuck = self.start == 0 and self.end == size
            if stuck or (room and (self.memory is None or self.memory.may_grow(bigger - size))):
                self.make_room(bigger)

    def shrink(self) -> None:
        """Once empty, give memory back: after a frame larger than the read buffer, and down to
        the initial size while the read buffers together are at the memory cap."""
        if self.start != self.end:
            return
        size = len(self.buf)
        if size > READ_BUFFER:
            target = READ_BUFFER
        elif size > INITIAL_BUFFER and self.memory is not None and not self.memory.may_add(0):
            target = INITIAL_BUFFER
        else:
            return
        self.start = self.end = 0
        self._replace(target, 0)

    def release(self) -> None:
        """The connection is closed: its buffer no longer counts."""
        if self.memory is not None:
            self.memory.used -= _beyond_initial(len(self.buf))
            self.memory = None


# -- pickle -------------------------------------------------------------------------------------


class OversizeFrame(ValueError):
    """A length prefix over ``--max-frame-bytes``: the stream cannot be resynchronised."""

    def __init__(self, length: int, max_frame: int) -> None:
        super().__init__(f"frame of {length} bytes over --max-frame-bytes {max_frame}")
        self.length = length


def frame_stop(buf: bytearray, start: int, end: int, max_frame: int) -> int:
    """Where the pickle frame that begins at `start` ends.

    Until its length prefix is complete that is ``start + LENGTH_BYTES``; after, the end of
    its payload, ``buf[start + LENGTH_BYTES : stop]``. The frame is complete when
    ``stop <= end``; otherwise ``stop - start`` bytes from `start` are needed. Raises
    `OversizeFrame` for a length over `max_frame`.
    """
    if end - start < LENGTH_BYTES:
        return start + LENGTH_BYTES
    (length,) = _unpack_len(buf, start)
    if length > max_frame:
        raise OversizeFrame(length, max_frame)
    return start + LENGTH_BYTES + length


def oversize_detail(sample: bytes, exc: OversizeFrame) -> str:
    """Why a frame was refused: plaintext sent to the pickle port is the usual cause."""
    return PLAINTEXT_HINT if looks_like_plaintext(sample) else str(exc)


def truncated_detail(sample: bytes, leftover: int) -> str:
    """Why the bytes of a frame cut by the sender's close were dropped."""
    detail = f"the connection closed in the middle of a frame; {leftover} bytes discarded"
    if looks_like_plaintext(sample):  # only with a --max-frame-bytes of 512 MiB or more
        detail += "; " + PLAINTEXT_HINT
    return detail


# -- plaintext ----------------------------------------------------------------------------------


class LineFraming:
    """The state of one plaintext stream beside the codec's line splitting: whether it is
    inside an over-long line, whose bytes are dropped up to its newline."""

    __slots__ = ("max_line", "skipping")

    def __init__(self, max_line: int = MAX_LINE_BYTES) -> None:
        self.max_line = max_line
        self.skipping = False

    def skip_overlong(self, rb: ReadBuffer) -> bool:
        """Drop the rest of an over-long line from `rb`; True if no newline ended it yet
        (everything was dropped and there is nothing else to look at)."""
        if not self.skipping:
            return False
        nl = rb.buf.find(b"\n", rb.start, rb.end)
        if nl < 0:
            rb.start = rb.end = 0
            return True
        rb.start = nl + 1
        self.skipping = False
        return False

    def cut_overlong(self, rb: ReadBuffer) -> bytes | None:
        """After the complete lines were consumed: if what is left is already longer than a
        line may be, drop it, skip to its newline, and return its sample; else None."""
        if rb.end - rb.start <= self.max_line:
            return None
        sample = rb.sample()
        rb.start = rb.end = 0
        self.skipping = True
        return sample

    def overlong_detail(self) -> str:
        return f"line over {self.max_line} bytes"


def mid_record(rb: ReadBuffer, protocol: str) -> bool:
    """Whether the unconsumed bytes of `rb` end inside a pickle frame or a line.

    The receiver decodes every complete frame it holds, so any pickle bytes left are part of
    an incomplete one; plaintext is at a boundary when its last byte is a newline.
    """
    if rb.end <= rb.start:
        return False
    if protocol == "pickle":
        return True
    return rb.buf[rb.end - 1] != 0x0A
