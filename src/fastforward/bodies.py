"""Blueflood ingest bodies read back as data: parsing a body, and Blueflood's expiry rule.

A body is a JSON array of datapoint objects (``collectionTime`` in milliseconds). Blueflood
refuses a datapoint older than its window (``--max-past``, 3 days by default) with a 400, so
bodies kept on disk for long drop such datapoints before they are sent again
(`drop_expired`). The codec applies the same window when it first encodes a datapoint.
"""

from __future__ import annotations

import json

Datapoint = dict[str, object]


class BadBody(ValueError):
    """Bytes that are not a JSON array of objects; the message says why."""


def parse_body(body: bytes) -> list[Datapoint]:
    """The datapoints of a body; `BadBody` when it is not a JSON array of objects."""
    try:
        points = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadBody(f"body is not JSON: {exc}") from None
    if not isinstance(points, list) or not all(isinstance(p, dict) for p in points):
        raise BadBody("body is not a JSON array of objects")
    return points


def encode_body(points: list[Datapoint]) -> bytes:
    """Compact JSON, as the codec writes it (non-ASCII names kept as UTF-8)."""
    return json.dumps(points, separators=(",", ":"), ensure_ascii=False).encode()


def oldest_accepted_ms(now_s: float, max_past_ms: int) -> int:
    """The oldest ``collectionTime`` Blueflood accepts at `now_s`: one exactly at the bound
    is still accepted."""
    return int(now_s * 1000) - max_past_ms


def drop_expired(points: list[Datapoint], oldest_ms: int) -> list[Datapoint]:
    """The datapoints Blueflood would still accept (those not older than `oldest_ms`).

    A ``collectionTime`` that is not a plain number is kept: Blueflood judges it.
    """
    kept = []
    for p in points:
        t = p.get("collectionTime")
        if isinstance(t, (int, float)) and not isinstance(t, bool) and t < oldest_ms:
            continue
        kept.append(p)
    return kept
