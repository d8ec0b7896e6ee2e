"""The spool's file format: one body per file, behind a one-line text header.

::

    FFSPOOL2 <datapoints> <body length> <crc32 of the body, 8 hex digits> <tenant>\\n<body>

The body is the exact JSON that would be POSTed. The tenant is the one the body was received
for; files of the first format (``FFSPOOL1``, no tenant) are still read, and their tenant is
then None (the spool decides whose they are). A header that does not parse, a body whose
length or checksum disagrees with its header, raise `SpoolCorrupt`. Where the files live, who
may read them and in which order is the store's business (`spool.py`).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

MAGIC = b"FFSPOOL2"
MAGIC_V1 = b"FFSPOOL1"  # the first format: no tenant
HEADER_MAX = 320  # magic, three numbers and a tenant of up to 255 bytes
TENANT_MAX_BYTES = 255


class SpoolCorrupt(ValueError):
    """A spool file that cannot be replayed; the message says why."""


@dataclass(frozen=True)
class Header:
    """What a file's header says about the body behind it."""

    datapoints: int
    length: int  # of the body
    crc: int
    size: int  # bytes of the header itself
    tenant: str | None  # None: a first-format file, which names no tenant

    @property
    def file_size(self) -> int:
        """The size of a complete file with this header."""
        return self.size + self.length


def check_tenant(tenant: str) -> None:
    """Refuse a tenant the header cannot carry (spaces, newlines, too long)."""
    if len(tenant.encode()) > TENANT_MAX_BYTES or any(c.isspace() for c in tenant):
        raise ValueError(f"tenant {tenant!r} cannot be stored in a spool header")


def _crc(body: bytes) -> int:
    return zlib.crc32(body) & 0xFFFFFFFF


def encode_header(body: bytes, datapoints: int, tenant: str) -> bytes:
    """The header of a file holding `body` (`tenant` as `check_tenant` allows)."""
    return b"%s %d %d %08x %s\n" % (MAGIC, datapoints, len(body), _crc(body), tenant.encode())


def parse_header(head: bytes) -> Header:
    """The header at the start of a file (both formats); `head` holds its first bytes, up to
    HEADER_MAX of them."""
    end = head.find(b"\n")
    if end < 0:
        raise SpoolCorrupt("truncated header" if len(head) < HEADER_MAX else "no header")
    parts = head[:end].split(b" ")
    if parts[0] == MAGIC and len(parts) == 5:
        try:
            tenant: str | None = parts[4].decode()
        except UnicodeDecodeError:
            raise SpoolCorrupt("bad header") from None
    elif parts[0] == MAGIC_V1 and len(parts) == 4:
        tenant = None
    else:
        raise SpoolCorrupt("bad header")
    try:
        datapoints, length, crc = int(parts[1]), int(parts[2]), int(parts[3], 16)
    except ValueError:
        raise SpoolCorrupt("bad header") from None
    if datapoints < 0 or length < 0:
        raise SpoolCorrupt("bad header")
    return Header(datapoints, length, crc, end + 1, tenant)


def check_size(header: Header, file_size: int) -> None:
    """A file cut short or grown after its header was written (checked before reading the
    body, so a bogus header never makes the reader read a huge file)."""
    if file_size != header.file_size:
        raise SpoolCorrupt(f"file is {file_size} bytes, header says {header.file_size}")


def check_body(header: Header, body: bytes) -> None:
    """The body read back is the one the header describes."""
    if len(body) != header.length:
        raise SpoolCorrupt(f"body is {len(body)} bytes, header says {header.length}")
    if _crc(body) != header.crc:
        raise SpoolCorrupt("checksum mismatch")
