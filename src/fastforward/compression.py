"""Gzip for request bodies (``--gzip``), with the fastest deflate that is installed.

Blueflood reads any standard gzip stream, so the compressor only has to be fast. Intel's
ISA-L (PyPI ``isal``, a dependency where it ships wheels: Linux and macOS on arm64) compresses
Blueflood JSON about 4.5 times as fast as the standard library's zlib at level 1 and, on this
data, slightly smaller; elsewhere the standard library is used. The choice is made once, at
import, and named by ``GZIP_IMPLEMENTATION`` (logged at start when ``--gzip`` is on).
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Callable

# wbits 31: a gzip container (header and CRC-32 trailer) around a raw deflate stream.
_GZIP_WBITS = 31
# Level 1 everywhere: bodies are small, many and sent at once; ratio gains past 1 are a few
# percent for several times the CPU.
LEVEL = 1


def gzip_zlib(body: bytes) -> bytes:
    """Gzip with the standard library's zlib (level 1)."""
    compressor = zlib.compressobj(LEVEL, zlib.DEFLATED, _GZIP_WBITS)
    return compressor.compress(body) + compressor.flush()


def _load_isal() -> Callable[[bytes], bytes] | None:
    try:
        from isal import isal_zlib  # noqa: PLC0415 - optional, chosen at import
    except ImportError:
        return None

    def gzip_isal(body: bytes) -> bytes:
        """Gzip with ISA-L (its level 1: about zlib level 1's size, several times the speed)."""
        return isal_zlib.compress(body, LEVEL, wbits=_GZIP_WBITS)

    return gzip_isal


def available() -> dict[str, Callable[[bytes], bytes]]:
    """Every gzip implementation importable here, by name (the tests check each one)."""
    found: dict[str, Callable[[bytes], bytes]] = {"zlib": gzip_zlib}
    isal = _load_isal()
    if isal is not None:
        found["isal"] = isal
    return found


def _choose() -> tuple[str, Callable[[bytes], bytes]]:
    # FASTFORWARD_GZIP_IMPLEMENTATION=zlib forces the standard library (to compare, or to rule
    # the accelerated library out when chasing a problem).
    found = available()
    wanted = os.environ.get("FASTFORWARD_GZIP_IMPLEMENTATION", "")
    if wanted in found:
        return wanted, found[wanted]
    if "isal" in found:
        return "isal", found["isal"]
    return "zlib", found["zlib"]


GZIP_IMPLEMENTATION, gzip_body = _choose()
