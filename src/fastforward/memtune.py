"""glibc malloc settings for a process that allocates and frees megabyte bodies all day.

Bodies (up to ``--max-body-bytes``, 1 MB by default) are above glibc's mmap threshold, and the
heap's top is trimmed back to the system as soon as it is free: so every body costs fresh pages
from the kernel, faulted in and zeroed, then unmapped again. At full load that was about half
of the daemon's system CPU (bench/README.md, "Where the CPU goes"). Serving such blocks from
the heap and keeping freed memory for the next body removes it. The memory kept is bounded by
the trim threshold, on top of what ``--max-buffer-bytes`` bounds. Elsewhere than glibc, or when
the user set glibc's own ``MALLOC_*_`` variables, nothing changes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_THRESHOLD = -3

MMAP_THRESHOLD = 16 * 1024 * 1024  # blocks under this come from the heap (glibc max: 32 MiB)
TRIM_THRESHOLD = 64 * 1024 * 1024  # free memory at the heap's top kept for reuse
TOP_PAD = 16 * 1024 * 1024  # grow the heap in steps this large (fewer brk calls)

_ENV = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")


def tune_malloc() -> bool:
    """Apply the settings on glibc; True if they were applied."""
    if any(name in os.environ for name in _ENV):
        return False  # the user's own choice wins
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
        libc.gnu_get_libc_version  # noqa: B018 - glibc only: musl's mallopt does nothing
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    ok = all(
        mallopt(param, value)
        for param, value in (
            (M_MMAP_THRESHOLD, MMAP_THRESHOLD),
            (M_TRIM_THRESHOLD, TRIM_THRESHOLD),
            (M_TOP_PAD, TOP_PAD),
        )
    )
    log.debug("glibc malloc tuned for megabyte bodies: %s", ok)
    return ok


_malloc_trim: list = []  # glibc's malloc_trim once looked up, or None where there is none


def give_back_free_memory() -> None:
    """Return the heap's free pages to the system: glibc's ``malloc_trim`` releases free chunks
    in the middle of the heap too, not only at its top (which the trim threshold keeps). After
    a backpressure episode the bodies and read buffers it churned leave such holes resident,
    and the next episode's would add to them: RSS above what the memory cap counts. Nothing
    elsewhere than glibc."""
    if not _malloc_trim:
        try:
            trim = ctypes.CDLL(None).malloc_trim
            trim.argtypes = [ctypes.c_size_t]
            _malloc_trim.append(trim)
        except (OSError, AttributeError):
            _malloc_trim.append(None)
    if _malloc_trim[0] is not None:
        _malloc_trim[0](0)
