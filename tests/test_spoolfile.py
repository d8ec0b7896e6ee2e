"""The spool file format on its own: header round trip, both format versions, and every way
a file can be broken."""

from __future__ import annotations

import zlib

import pytest

from fastforward.spoolfile import (
    HEADER_MAX,
    MAGIC,
    SpoolCorrupt,
    check_body,
    check_size,
    check_tenant,
    encode_header,
    parse_header,
)

BODY = b'[{"collectionTime":1700000000000,"ttlInSeconds":86400,"metricValue":1,"metricName":"a"}]'


def test_header_round_trip_keeps_count_length_checksum_and_tenant() -> None:
    head = encode_header(BODY, 1, "tenant-7")
    assert head.startswith(MAGIC + b" ") and head.endswith(b"\n")
    h = parse_header(head + BODY)
    assert (h.datapoints, h.length, h.crc, h.size, h.tenant) == (
        1,
        len(BODY),
        zlib.crc32(BODY),
        len(head),
        "tenant-7",
    )
    assert h.file_size == len(head) + len(BODY)
    check_size(h, h.file_size)
    check_body(h, BODY)


def test_an_empty_tenant_is_a_tenant() -> None:
    assert parse_header(encode_header(b"[]", 0, "")).tenant == ""


def test_first_format_is_read_without_a_tenant() -> None:
    head = b"FFSPOOL1 1 %d %08x\n" % (len(BODY), zlib.crc32(BODY))
    h = parse_header(head + BODY)
    assert h.tenant is None
    assert (h.datapoints, h.length, h.size) == (1, len(BODY), len(head))
    check_body(h, BODY)


def test_the_longest_tenant_fits_in_what_a_reader_reads_first() -> None:
    tenant = "t" * 255
    check_tenant(tenant)
    head = encode_header(BODY, 10**9, tenant)
    assert len(head) <= HEADER_MAX
    assert parse_header((head + BODY)[:HEADER_MAX]).tenant == tenant


@pytest.mark.parametrize("tenant", ["a b", "a\nb", "t" * 256, "tab\there"])
def test_a_tenant_the_header_cannot_carry_is_refused(tenant: str) -> None:
    with pytest.raises(ValueError, match="cannot be stored in a spool header"):
        check_tenant(tenant)


@pytest.mark.parametrize(
    ("head", "reason"),
    [
        (b"FFSPOOL2 1 90 0000", "truncated header"),  # torn before its newline
        (b"x" * HEADER_MAX, "no header"),
        (b"FFSPOOL3 1 2 00000000 t\n", "bad header"),  # unknown version
        (b"FFSPOOL2 1 2 00000000\n", "bad header"),  # second format without a tenant
        (b"FFSPOOL1 1 2 00000000 t\n", "bad header"),  # first format with one
        (b"FFSPOOL2 one 2 00000000 t\n", "bad header"),
        (b"FFSPOOL2 1 2 nothex t\n", "bad header"),
        (b"FFSPOOL2 -1 2 00000000 t\n", "bad header"),
        (b"FFSPOOL2 1 2 00000000 \xff\n", "bad header"),  # tenant not UTF-8
    ],
)
def test_a_broken_header_is_corrupt(head: bytes, reason: str) -> None:
    with pytest.raises(SpoolCorrupt, match=reason):
        parse_header(head)


def test_a_file_cut_short_or_grown_is_corrupt() -> None:
    h = parse_header(encode_header(BODY, 1, "t") + BODY)
    with pytest.raises(SpoolCorrupt, match="header says"):
        check_size(h, h.file_size - 1)
    with pytest.raises(SpoolCorrupt, match="header says"):
        check_size(h, h.file_size + 1)


def test_a_changed_body_is_corrupt() -> None:
    h = parse_header(encode_header(BODY, 1, "t"))
    with pytest.raises(SpoolCorrupt, match="checksum mismatch"):
        check_body(h, BODY.replace(b'"a"', b'"b"'))  # same length, other bytes
    with pytest.raises(SpoolCorrupt, match="body is"):
        check_body(h, BODY[:-1])
