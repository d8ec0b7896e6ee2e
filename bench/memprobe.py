#!/usr/bin/env python3
"""fastforward with a memory report on SIGUSR2: where the RSS goes, beside what the cap counts.

    PROBE_OUT=report.jsonl python bench/memprobe.py FASTFORWARD OPTIONS...

Runs the daemon in this process; every SIGUSR2 appends one JSON line to ``$PROBE_OUT``: RSS by
mapping (the brk heap, anonymous mmaps of 1 MiB or more: pymalloc's arenas, smaller ones, and
files), glibc's ``mallinfo2`` (bytes in use in the heap, free ones), what the memory cap
counts (the outbox's ``memory_bytes`` and its parts) and the read buffers by size. With
``PYTHONTRACEMALLOC=1`` also the allocations grown since the previous report, by line (slow:
for attribution only, not for figures). ``bench/manysenders.py --probe FILE`` uses it. A
benchmark tool: glibc and CPython only, found by walking the heap of Python objects.
"""

from __future__ import annotations

import collections
import ctypes
import gc
import json
import os
import signal
import sys
import tracemalloc

import gevent

from fastforward import cli
from fastforward.framing import ReadBuffer
from fastforward.outbox import Outbox
from fastforward.tenants import TenantForwarder

MIB = 1024 * 1024
_MALLINFO = ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks")
_MALLINFO += ("uordblks", "fordblks", "keepcost")


class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in _MALLINFO]


def mallinfo_mb() -> dict[str, float]:
    """The heap (``arena``), in use (``uordblks``), free (``fordblks``), mmapped (``hblkhd``)."""
    try:
        fn = ctypes.CDLL(None).mallinfo2
    except AttributeError:
        return {}
    fn.restype = MallInfo2
    info = fn()
    keys = ("arena", "uordblks", "fordblks", "hblkhd")
    return {k: round(getattr(info, k) / MIB, 3) for k in keys}


def rss_by_mapping_mb() -> dict[str, float]:
    kinds: collections.Counter[str] = collections.Counter()
    kind = ""
    with open("/proc/self/smaps") as f:
        for line in f:
            parts = line.split()
            if "-" in parts[0] and not parts[0].endswith(":"):
                lo, hi = (int(x, 16) for x in parts[0].split("-"))
                name = parts[5] if len(parts) > 5 else ""
                if name.startswith("/"):
                    kind = "files"
                elif name:
                    kind = name  # [heap], [stack], ...
                else:
                    kind = "[anon >= 1 MiB]" if hi - lo >= MIB else "[anon < 1 MiB]"
            elif parts[0] == "Rss:":
                kinds[kind] += int(parts[1]) * 1024
    return {k: round(v / MIB, 3) for k, v in sorted(kinds.items())}


def status_mb() -> dict[str, float]:
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key = line.split(":")[0]
            if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
                out[key] = round(int(line.split()[1]) / 1024, 3)
    return out


def counted_mb() -> dict[str, object]:
    out: dict[str, object] = {}
    sizes: collections.Counter[int] = collections.Counter()
    objects = gc.get_objects()
    routed = [obj for obj in objects if isinstance(obj, TenantForwarder)]
    for obj in objects:
        if routed and isinstance(obj, TenantForwarder):  # every lane's outbox, one cap
            lanes = [lane.outbox for lane in obj.lanes.values()]
            out["memory_bytes"] = round(obj.memory_bytes / MIB, 3)
            out["outbox"] = round(sum(o.bytes for o in lanes) / MIB, 3)
            out["encoder_held"] = round(obj.encoder.held_bytes / MIB, 3)
            out["read_buffers_counted"] = round(sum(h() for h in obj._holders) / MIB, 3)
            out["bodies_in_flight"] = sum(len(o.inflight) for o in lanes)
            out["bodies_queued"] = sum(len(o.queue) for o in lanes)
            out["lanes"] = len(lanes)
        elif not routed and isinstance(obj, Outbox):
            out["memory_bytes"] = round(obj.memory_bytes / MIB, 3)
            out["outbox"] = round(obj.bytes / MIB, 3)
            out["encoder_held"] = round(obj.pending() / MIB, 3)  # held_bytes (allocations)
            out["read_buffers_counted"] = round(sum(h() for h in obj.holders) / MIB, 3)
            out["bodies_in_flight"], out["bodies_queued"] = len(obj.inflight), len(obj.queue)
        elif isinstance(obj, ReadBuffer):
            sizes[len(obj.buf)] += 1
    out["read_buffers_by_size"] = dict(sorted(sizes.items()))
    return out


_previous: list[tracemalloc.Snapshot] = []


def report() -> None:
    record: dict[str, object] = {"status": status_mb(), "rss_mb": rss_by_mapping_mb()}
    record["mallinfo_mb"] = mallinfo_mb()
    record["counted_mb"] = counted_mb()
    if tracemalloc.is_tracing():
        snap = tracemalloc.take_snapshot()
        if _previous:
            diff = snap.compare_to(_previous[-1], "lineno")
            record["tracemalloc_grown_kib"] = [
                (str(d.traceback), round(d.size_diff / 1024, 1), d.count_diff) for d in diff[:15]
            ]
        _previous[:] = [snap]
    with open(os.environ["PROBE_OUT"], "a") as f:
        f.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    gevent.signal_handler(signal.SIGUSR2, report)
    sys.exit(cli.main(sys.argv[1:]))
