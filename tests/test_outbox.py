"""The Outbox: byte accounting from put to done, the receivers' gate, parked bodies."""

from __future__ import annotations

import pytest

from fastforward.framing import INITIAL_BUFFER, ReadBuffer, ReadMemory
from fastforward.outbox import Batch, Outbox, gate_headroom
from fastforward.stats import Stats


def batch(size: int, datapoints: int = 1) -> Batch:
    return Batch(b"x" * size, datapoints)


@pytest.fixture
def stats() -> Stats:
    return Stats()


def test_bytes_and_datapoints_are_counted_from_put_until_done(stats: Stats):
    outbox = Outbox(1000, stats)
    a, b = batch(100, 3), batch(50, 2)
    outbox.put(a)
    outbox.put(b)
    assert (outbox.bytes, outbox.datapoints, len(outbox)) == (150, 5, 2)
    assert outbox.has_work.is_set() and not outbox.idle.is_set()
    assert outbox.pop() is a
    # In flight still counts: its sender may fail and keep it.
    assert (outbox.bytes, outbox.datapoints, len(outbox)) == (150, 5, 1)
    assert a in outbox.inflight
    outbox.done(a)
    assert (outbox.bytes, outbox.datapoints) == (50, 2)
    assert not outbox.idle.is_set()  # b is still queued
    assert outbox.pop() is b and not outbox.has_work.is_set()
    outbox.done(b)
    assert (outbox.bytes, outbox.datapoints) == (0, 0)
    assert outbox.idle.is_set() and not outbox.inflight


def test_put_front_is_popped_first(stats: Stats):
    outbox = Outbox(1000, stats)
    old, urgent = batch(10), batch(20)
    outbox.put(old)
    outbox.put(urgent, front=True)
    assert [outbox.pop(), outbox.pop()] == [urgent, old]


def test_a_batch_put_back_by_its_sender_is_counted_once(stats: Stats):
    # What a sender does with a body it keeps: put it back, then done() with the popped one.
    outbox = Outbox(1000, stats)
    a = batch(100, 4)
    outbox.put(a)
    outbox.pop()
    outbox.put(a, front=True)
    outbox.done(a)
    assert (outbox.bytes, outbox.datapoints, len(outbox)) == (100, 4, 1)
    assert not outbox.idle.is_set()


def test_remove_queued_releases_its_bytes(stats: Stats):
    outbox = Outbox(1000, stats)
    a, b = batch(100), batch(200)
    outbox.put(a)
    outbox.put(b)
    outbox.remove_queued(a)  # moved to the spool
    assert outbox.bytes == 200 and list(outbox.queue) == [b]
    outbox.remove_queued(b)
    assert outbox.bytes == 0 and not outbox.has_work.is_set() and outbox.idle.is_set()


def test_the_cap_counts_what_the_encoder_still_holds(stats: Stats):
    pending = [0]
    outbox = Outbox(1000, stats, lambda: pending[0])
    outbox.put(batch(600))
    assert outbox.memory_bytes == 600 and not outbox.over_cap
    pending[0] = 401
    assert outbox.memory_bytes == 1001 and outbox.over_cap
    pending[0] = 400
    assert not outbox.over_cap  # the cap itself is still allowed


def test_gate_closes_over_the_cap_and_opens_again_at_80_percent(stats: Stats):
    outbox = Outbox(1000, stats)
    a, b = batch(600), batch(500)
    outbox.put(a)
    outbox.update_gate()
    assert outbox.gate.is_set() and outbox.paused_for() == 0.0
    outbox.put(b)
    outbox.update_gate()
    assert not outbox.gate.is_set()
    assert stats.get("backpressure_active") == 1
    outbox.pop()
    outbox.done(a)  # 500 left: under the cap, but over 80 % of it
    outbox.put(batch(301))
    outbox.update_gate()  # 801 bytes: still paused (no flapping at the cap)
    assert not outbox.gate.is_set()
    outbox.pop()
    outbox.done(b)  # 301 bytes
    outbox.update_gate()
    assert outbox.gate.is_set() and outbox.paused_for() == 0.0
    assert stats.get("backpressure_active") == 0


def test_the_gate_opens_exactly_at_80_percent(stats: Stats):
    outbox = Outbox(1000, stats)
    big = batch(1001)
    outbox.put(big)
    outbox.update_gate()
    assert not outbox.gate.is_set()
    outbox.pop()
    outbox.done(big)
    outbox.put(batch(800))
    outbox.update_gate()
    assert outbox.gate.is_set()


def test_gate_stays_as_is_without_update(stats: Stats):
    # Only update_gate() moves the gate: a put alone never blocks the caller's receivers.
    outbox = Outbox(100, stats)
    outbox.put(batch(500))
    assert outbox.gate.is_set()


def test_held_batches_count_in_the_cap_but_are_not_queued(stats: Stats):
    outbox = Outbox(1000, stats)
    parked = batch(700, 1)
    outbox.hold(parked)
    assert (outbox.bytes, outbox.datapoints, len(outbox)) == (700, 1, 0)
    assert not outbox.has_work.is_set()  # nothing for a sender to pop
    outbox.put(batch(400))
    outbox.update_gate()
    assert not outbox.gate.is_set()  # the parked bytes count toward the cap
    outbox.unhold(parked)
    assert (outbox.bytes, outbox.datapoints) == (400, 1)


def test_clear_forgets_everything(stats: Stats):
    outbox = Outbox(1000, stats)
    outbox.put(batch(100))
    outbox.put(batch(100))
    outbox.pop()
    outbox.clear()
    assert (outbox.bytes, outbox.datapoints, len(outbox)) == (0, 0, 0)
    assert not outbox.inflight and outbox.idle.is_set() and not outbox.has_work.is_set()


def test_the_gate_closes_when_read_buffers_alone_reach_the_cap(stats: Stats):
    memory = ReadMemory(limit=4 * INITIAL_BUFFER)
    outbox = Outbox(4 * INITIAL_BUFFER, stats)
    outbox.count_also(lambda: memory.used)
    connections = [ReadBuffer(memory=memory) for _ in range(5)]
    for rb in connections:  # five fast senders, each buffer full of one unfinished record
        rb.end = len(rb.buf)
        rb.grow()
    outbox.update_gate()
    assert not outbox.gate.is_set() and outbox.bytes == 0  # no body anywhere
    assert outbox.memory_bytes == 5 * INITIAL_BUFFER
    for rb in connections[:2]:
        rb.release()  # two senders went away: 3/4 of the cap, under the 80% to resume
    outbox.update_gate()
    assert outbox.gate.is_set()


def test_a_read_buffer_does_not_grow_into_memory_the_bodies_hold(stats: Stats):
    # One cap for both: bodies at 3/4 of it leave room for one doubling of a read buffer
    # (16 KiB more), not for two.
    cap = 4 * INITIAL_BUFFER
    memory = ReadMemory(limit=cap)
    outbox = Outbox(cap, stats)
    outbox.count_also(lambda: memory.used)
    memory.held = lambda: outbox.memory_bytes
    outbox.put(batch(3 * INITIAL_BUFFER))
    fast = ReadBuffer(memory=memory)
    for _ in range(3):  # every read fills it (and is consumed): it asks to grow each time
        fast.start = fast.end = len(fast.buf)
        fast.grow()
    assert len(fast.buf) == 2 * INITIAL_BUFFER
    assert outbox.memory_bytes == cap
    outbox.done(outbox.pop())  # the body delivered: now it may grow again
    fast.start = fast.end = len(fast.buf)
    fast.grow()
    assert len(fast.buf) == 4 * INITIAL_BUFFER
    fast.release()


def test_idle_connections_parked_by_backpressure_cannot_hold_the_gate_shut(stats: Stats):
    # Their initial buffers are theirs, not data's: a crowd of them costs nothing against the
    # cap, so once bodies drain the gate opens again.
    memory = ReadMemory(limit=4 * INITIAL_BUFFER)
    outbox = Outbox(4 * INITIAL_BUFFER, stats)
    outbox.count_also(lambda: memory.used)
    crowd = [ReadBuffer(memory=memory) for _ in range(100)]
    outbox.update_gate()
    assert outbox.gate.is_set() and outbox.memory_bytes == 0
    for rb in crowd:
        rb.release()


def _fill_until_paused(outbox: Outbox, pending: list[int], body: int, frame: int) -> int:
    """The receivers decode frames of `frame` JSON bytes while the gate is open; the gate is
    looked at only when a full body moves into the outbox (the flusher's kick), and nothing is
    delivered. The peak of what is held: bodies in the outbox plus the encoder's working buffer
    (one body's size, the body being filled inside it)."""
    peak = 0
    for _ in range(10_000):
        if not outbox.gate.is_set():
            return peak
        pending[0] += frame
        if pending[0] >= body:
            outbox.put(batch(body))
            pending[0] -= body
            outbox.update_gate()
        peak = max(peak, outbox.bytes + body)
    raise AssertionError("the gate never closed")


@pytest.mark.parametrize("frame", [300, 999, 1000])
def test_the_peak_stays_under_the_cap_with_the_body_being_filled_and_the_encoders_buffer(
    stats: Stats, frame: int
):
    cap, body = 20_000, 1000
    pending = [0]
    outbox = Outbox(cap, stats, lambda: pending[0], gate_headroom(cap, body))
    assert _fill_until_paused(outbox, pending, body, frame) <= cap
    # Without the headroom, the same fill passes the cap by up to two bodies.
    pending = [0]
    outbox = Outbox(cap, stats, lambda: pending[0])
    assert _fill_until_paused(outbox, pending, body, frame) > cap


def test_the_headroom_moves_where_the_gate_closes_not_where_it_opens(stats: Stats):
    # Reopening stays at 80 % of the cap: connections parked at the gate keep their grown read
    # buffers, which must not be able to hold it shut.
    outbox = Outbox(10_000, stats, headroom=gate_headroom(10_000, 1000))
    assert outbox.close_over == 8_500
    first = batch(8_500)
    outbox.put(first)
    outbox.update_gate()
    assert outbox.gate.is_set() and not outbox.over_cap  # at the line, not over it
    outbox.put(batch(1))
    outbox.update_gate()
    assert not outbox.gate.is_set() and outbox.over_cap
    outbox.pop()
    outbox.done(first)
    outbox.put(batch(8_000))  # 8,001 bytes: over 80 % of the cap, still paused
    outbox.update_gate()
    assert not outbox.gate.is_set()
    outbox.done(outbox.pop())  # the 1-byte batch: 8,000 left, 80 % of the cap
    assert outbox.memory_bytes == 8_000
    outbox.update_gate()
    assert outbox.gate.is_set()


def test_the_headroom_is_two_bodies_and_a_32nd_of_the_cap_at_most_15_percent() -> None:
    assert gate_headroom(1_048_576, 1_000_000) == 157_286
    assert gate_headroom(64 << 20, 1_000_000) == 2_000_000 + (2 << 20)
    assert gate_headroom(1 << 30, 1_000_000) == 2_000_000 + (32 << 20)


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_heap_goes_back_after_a_stall_and_its_recovery_not_after_a_bursts_pauses(
    monkeypatch,
):
    # A burst that outruns healthy senders pauses the receivers for milliseconds, dozens of
    # times a second: giving the heap back each time costs page faults on every refill. After
    # a stall (Blueflood away), the recovery's churn leaves holes that would pass the cap.
    import fastforward.outbox as outbox_module

    clock = _Clock()
    given_back: list[float] = []
    monkeypatch.setattr(outbox_module.time, "monotonic", clock)
    monkeypatch.setattr(outbox_module, "give_back_free_memory", lambda: given_back.append(1))
    gate = outbox_module.Backpressure(Stats())

    def episode(seconds: float) -> None:
        gate.update(101, 100)  # over the cap: closes
        assert not gate.gate.is_set()
        clock.now += seconds
        gate.update(0, 100)  # drained: opens
        assert gate.gate.is_set()

    episode(0.01)
    assert given_back == []  # a burst's pause
    episode(outbox_module.STALL_SECONDS)
    assert len(given_back) == 1  # the end of a stall
    clock.now += 1
    episode(0.01)
    assert len(given_back) == 2  # a pause in the recovery
    clock.now += outbox_module.RECOVERY_SECONDS
    episode(0.01)
    assert len(given_back) == 2  # the recovery is over
