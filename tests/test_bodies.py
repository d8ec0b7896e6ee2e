"""Blueflood bodies read back: parsing, and which datapoints Blueflood would refuse as too old."""

from __future__ import annotations

import json

import pytest

from fastforward.bodies import BadBody, drop_expired, encode_body, oldest_accepted_ms, parse_body

NOW_S = 1_700_000_000.0
HOUR_MS = 3_600_000


def point(t: object, name: str = "a.b") -> dict[str, object]:
    return {"collectionTime": t, "ttlInSeconds": 86400, "metricValue": 1, "metricName": name}


def test_a_datapoint_exactly_at_the_window_edge_is_kept() -> None:
    oldest = oldest_accepted_ms(NOW_S, HOUR_MS)
    assert oldest == int(NOW_S * 1000) - HOUR_MS
    points = [point(oldest - 1), point(oldest), point(int(NOW_S * 1000))]
    assert drop_expired(points, oldest) == points[1:]


@pytest.mark.parametrize("t", ["1", None, True, [1], {"t": 1}])
def test_a_time_that_is_not_a_number_is_left_for_blueflood_to_judge(t: object) -> None:
    assert drop_expired([point(t)], oldest_accepted_ms(NOW_S, HOUR_MS)) == [point(t)]


def test_a_float_time_is_judged_like_an_integer() -> None:
    oldest = oldest_accepted_ms(NOW_S, HOUR_MS)
    assert drop_expired([point(oldest - 0.5), point(oldest + 0.5)], oldest) == [point(oldest + 0.5)]


def test_parse_and_encode_round_trip_as_the_codec_writes_bodies() -> None:
    body = json.dumps([point(1), point(2, "caf\u00e9")], separators=(",", ":"), ensure_ascii=False)
    assert encode_body(parse_body(body.encode())) == body.encode()


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"[{", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (b'{"collectionTime":1}', "not a JSON array of objects"),
        (b"[1,2]", "not a JSON array of objects"),
    ],
)
def test_what_is_not_a_body_is_refused(body: bytes, reason: str) -> None:
    with pytest.raises(BadBody, match=reason):
        parse_body(body)
