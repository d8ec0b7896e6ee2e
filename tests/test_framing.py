"""Stream framing without sockets: the read buffer, pickle length prefixes, over-long lines,
and where a close on purpose may cut."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fastforward.framing import (
    INITIAL_BUFFER,
    LENGTH_BYTES,
    PLAINTEXT_HINT,
    READ_BUFFER,
    SAMPLE_BYTES,
    LineFraming,
    OversizeFrame,
    ReadBuffer,
    ReadMemory,
    frame_stop,
    mid_record,
    oversize_detail,
    truncated_detail,
)

MAX_FRAME = 1_048_576


def prefixed(payload: bytes) -> bytes:
    return struct.pack("!I", len(payload)) + payload


def receive(rb: ReadBuffer, data: bytes) -> None:
    """What one recv_into does: copy into the free space at ``end``."""
    rb.mv[rb.end : rb.end + len(data)] = data
    rb.end += len(data)


def read_frames(stream: bytes, chunk_sizes: list[int]) -> tuple[list[bytes], int]:
    """Feed `stream` in chunks the way the receiver does; the payloads and the bytes left."""
    rb = ReadBuffer(16)
    payloads: list[bytes] = []
    need = LENGTH_BYTES
    pos = 0
    sizes = iter(chunk_sizes)
    while pos < len(stream):
        if rb.end == len(rb.buf) or rb.start + need > len(rb.buf):
            rb.make_room(need)
        room = len(rb.buf) - rb.end
        n = min(room, next(sizes, room), len(stream) - pos)
        receive(rb, stream[pos : pos + n])
        pos += n
        while True:
            stop = frame_stop(rb.buf, rb.start, rb.end, MAX_FRAME)
            if stop > rb.end:
                need = stop - rb.start
                break
            payloads.append(bytes(rb.mv[rb.start + LENGTH_BYTES : stop]))
            rb.start = stop
        if rb.start == rb.end:
            rb.start = rb.end = 0
            rb.shrink()
    return payloads, rb.end - rb.start


@given(
    st.lists(st.binary(max_size=300), max_size=20),
    st.lists(st.integers(min_value=1, max_value=64), max_size=200),
)
def test_frames_come_out_whole_and_in_order_however_the_reads_cut_them(
    payloads: list[bytes], chunk_sizes: list[int]
) -> None:
    got, leftover = read_frames(b"".join(prefixed(p) for p in payloads), chunk_sizes)
    assert got == payloads
    assert leftover == 0


def test_a_cut_frame_leaves_its_bytes_unconsumed() -> None:
    stream = prefixed(b"whole") + prefixed(b"cut short")[:-3]
    got, leftover = read_frames(stream, [5] * 10)
    assert got == [b"whole"]
    assert leftover == len(prefixed(b"cut short")) - 3


def test_frame_stop_asks_for_the_length_prefix_then_the_payload() -> None:
    buf = bytearray(prefixed(b"x" * 10))
    assert frame_stop(buf, 0, 2, MAX_FRAME) == LENGTH_BYTES  # prefix incomplete
    assert frame_stop(buf, 0, 4, MAX_FRAME) == 14  # 10 more bytes needed
    assert frame_stop(buf, 0, 14, MAX_FRAME) == 14  # complete


def test_a_length_over_the_limit_is_refused() -> None:
    buf = bytearray(struct.pack("!I", MAX_FRAME + 1))
    with pytest.raises(OversizeFrame) as info:
        frame_stop(buf, 0, 4, MAX_FRAME)
    assert info.value.length == MAX_FRAME + 1
    assert oversize_detail(bytes(buf), info.value) == (
        f"frame of {MAX_FRAME + 1} bytes over --max-frame-bytes {MAX_FRAME}"
    )
    assert frame_stop(bytearray(prefixed(b"x" * 5)), 0, 9, 5) == 9  # at the limit: fine


def test_plaintext_sent_to_the_pickle_port_is_named() -> None:
    line = b"servers.web1.cpu 12.5 1700000000\n"
    buf = bytearray(line)
    with pytest.raises(OversizeFrame) as info:  # "serv" read as a length: about 1.9 GB
        frame_stop(buf, 0, len(buf), MAX_FRAME)
    assert oversize_detail(line, info.value) == PLAINTEXT_HINT
    assert truncated_detail(line, 33).endswith("; " + PLAINTEXT_HINT)
    assert PLAINTEXT_HINT not in truncated_detail(b"\x00\x00\x01\x00\x80\x02", 6)


def test_make_room_keeps_the_unconsumed_bytes() -> None:
    rb = ReadBuffer(16)
    receive(rb, b"0123456789abcdef")
    rb.start = 10
    rb.make_room(6)  # buffer full: the tail moves to the front
    assert (rb.start, rb.end, bytes(rb.mv[: rb.end])) == (0, 6, b"abcdef")
    rb.make_room(40)  # more than fits: the buffer grows
    assert len(rb.buf) >= 40
    assert bytes(rb.mv[rb.start : rb.end]) == b"abcdef"


def test_buffer_grows_with_a_fast_sender_and_shrinks_after_a_huge_frame() -> None:
    rb = ReadBuffer()
    assert len(rb.buf) == INITIAL_BUFFER
    for _ in range(10):
        rb.grow()
    assert len(rb.buf) == READ_BUFFER  # never beyond, however fast
    rb.make_room(3 * READ_BUFFER)  # one frame larger than the read buffer
    rb.shrink()
    assert len(rb.buf) == READ_BUFFER  # empty: the memory goes back
    receive(rb, b"x")
    rb.make_room(3 * READ_BUFFER)
    rb.shrink()
    assert len(rb.buf) == 3 * READ_BUFFER  # not while it holds bytes


def test_sample_is_bounded() -> None:
    rb = ReadBuffer()
    receive(rb, b"y" * 1000)
    assert rb.sample() == b"y" * SAMPLE_BYTES
    rb.start = 998
    assert rb.sample() == b"yy"


def test_an_overlong_line_is_dropped_up_to_its_newline_and_the_next_line_kept() -> None:
    lines = LineFraming(max_line=10)
    rb = ReadBuffer(64)
    receive(rb, b"a" * 12)  # no newline yet, already over the limit
    assert lines.cut_overlong(rb) == b"a" * 12
    assert (rb.start, rb.end, lines.skipping) == (0, 0, True)
    receive(rb, b"aaaa")  # still the same line
    assert lines.skip_overlong(rb) is True  # all dropped, nothing to decode
    assert rb.start == rb.end == 0
    receive(rb, b"aa\ngood 1 2\n")
    assert lines.skip_overlong(rb) is False
    assert bytes(rb.mv[rb.start : rb.end]) == b"good 1 2\n"
    assert not lines.skipping


def test_a_short_partial_line_is_kept_for_the_next_read() -> None:
    lines = LineFraming(max_line=10)
    rb = ReadBuffer(64)
    receive(rb, b"a" * 10)  # exactly the limit: may still end in time
    assert lines.cut_overlong(rb) is None
    assert lines.skip_overlong(rb) is False
    assert rb.end - rb.start == 10
    assert lines.overlong_detail() == "line over 10 bytes"


@pytest.mark.parametrize(
    ("protocol", "pending", "inside"),
    [
        ("line", b"", False),
        ("line", b"a.b 1 2\n", False),
        ("line", b"a.b 1 2\na.c 1", True),
        ("pickle", b"", False),
        ("pickle", b"\x00\x00", True),  # whatever is left of a pickle stream is a partial frame
    ],
)
def test_mid_record_tells_where_a_close_may_cut(
    protocol: str, pending: bytes, inside: bool
) -> None:
    rb = ReadBuffer(64)
    receive(rb, b"consumed\n" + pending)
    rb.start = len(b"consumed\n")
    assert mid_record(rb, protocol) is inside


def test_read_buffers_count_their_growth_and_stop_growing_at_the_cap() -> None:
    memory = ReadMemory(limit=INITIAL_BUFFER)
    fast = ReadBuffer(memory=memory)
    other = ReadBuffer(memory=memory)
    assert memory.used == 0  # a connection's initial buffer is its own cost, not data's
    fast.start = fast.end = 0
    fast.grow()  # 32 KiB: 16 KiB beyond the initial size, just at the cap
    assert len(fast.buf) == 2 * INITIAL_BUFFER and memory.used == INITIAL_BUFFER
    fast.grow()  # 64 KiB would pass the cap: refused, reads stay 32 KiB
    assert len(fast.buf) == 2 * INITIAL_BUFFER and memory.used == INITIAL_BUFFER
    # A buffer full of one unfinished record still grows: it could not progress otherwise.
    other.end = len(other.buf)
    other.grow()
    assert len(other.buf) == 2 * INITIAL_BUFFER and memory.used == 2 * INITIAL_BUFFER
    # Over the cap, an emptied buffer goes back to the initial size; a closed one stops counting.
    fast.shrink()
    assert len(fast.buf) == INITIAL_BUFFER and memory.used == INITIAL_BUFFER
    other.release()
    assert memory.used == 0


def test_without_a_cap_a_fast_connection_grows_to_the_full_read_buffer() -> None:
    memory = ReadMemory()
    rb = ReadBuffer(memory=memory)
    while len(rb.buf) < READ_BUFFER:
        rb.grow()
    assert memory.used == READ_BUFFER - INITIAL_BUFFER
    rb.release()
    assert memory.used == 0


def test_no_read_buffer_grows_while_the_memory_cap_is_reached() -> None:
    # `room` is the receivers' gate: closed, the bodies and buffers together are at the cap,
    # which the read buffers' own counter does not see.
    memory = ReadMemory(limit=10 * READ_BUFFER)
    fast = ReadBuffer(memory=memory)
    fast.start, fast.end = 100, len(fast.buf)  # a read filled it, a frame was consumed
    fast.grow(room=False)
    assert len(fast.buf) == INITIAL_BUFFER and memory.used == 0
    fast.grow(room=True)
    assert len(fast.buf) == 2 * INITIAL_BUFFER and memory.used == INITIAL_BUFFER
    # A buffer full of one unfinished record grows anyway: it could not progress otherwise.
    stuck = ReadBuffer(memory=memory)
    stuck.end = len(stuck.buf)
    stuck.grow(room=False)
    assert len(stuck.buf) == 2 * INITIAL_BUFFER and memory.used == 2 * INITIAL_BUFFER
