"""--gzip bodies: every installed gzip implementation gives back the exact bytes, and Blueflood
(the fake, which decompresses as Blueflood does) stores every datapoint of them."""

from __future__ import annotations

import gzip
import json
import os
import random
import subprocess
import sys
import time
import zlib

import gevent
import pytest

from fastforward import compression
from fastforward.blueflood import BluefloodClient, Kind
from fastforward.stats import Stats
from tests.fake_blueflood import fake_blueflood  # noqa: F401 - fixture

IMPLEMENTATIONS = compression.available()


def blueflood_body(n: int, seed: int) -> bytes:
    rng = random.Random(seed)
    start_ms = (int(time.time()) - 3600) * 1000  # within Blueflood's window of accepted times
    items = [
        {
            "collectionTime": start_ms + i * 100,
            "ttlInSeconds": 86400,
            "metricValue": rng.random() * 1000,
            "metricName": f"servers.host{rng.randrange(500):03d}.cpu.{rng.choice('abcd')}",
        }
        for i in range(n)
    ]
    return json.dumps(items, separators=(",", ":")).encode()


BODIES = {
    "empty": b"",
    "one byte": b"[",
    "one datapoint": blueflood_body(1, 1),
    "5000 datapoints": blueflood_body(5000, 2),
    "incompressible": random.Random(3).randbytes(200_000),
}


@pytest.mark.parametrize("name", sorted(IMPLEMENTATIONS))
@pytest.mark.parametrize("kind", sorted(BODIES))
def test_round_trip_is_byte_exact_with_standard_gzip(name, kind):
    body = BODIES[kind]
    packed = IMPLEMENTATIONS[name](body)
    assert packed[:2] == b"\x1f\x8b"  # a gzip member, not a bare zlib stream
    assert gzip.decompress(packed) == body
    assert zlib.decompress(packed, wbits=31) == body


@pytest.mark.parametrize("name", sorted(IMPLEMENTATIONS))
def test_compressed_size_stays_near_zlib_level_1(name):
    body = BODIES["5000 datapoints"]
    reference = len(compression.gzip_zlib(body))
    assert len(IMPLEMENTATIONS[name](body)) <= reference * 1.10


def test_isal_is_chosen_where_it_is_installed():
    expected = "isal" if "isal" in IMPLEMENTATIONS else "zlib"
    assert compression.GZIP_IMPLEMENTATION == expected


def test_the_environment_can_force_the_standard_library():
    code = "from fastforward import compression as c; print(c.GZIP_IMPLEMENTATION)"
    env = {**os.environ, "FASTFORWARD_GZIP_IMPLEMENTATION": "zlib"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "zlib"


@pytest.mark.parametrize("name", sorted(IMPLEMENTATIONS))
def test_blueflood_stores_every_datapoint_of_a_gzip_body(name, fake_blueflood, monkeypatch):  # noqa: F811
    monkeypatch.setattr("fastforward.blueflood.gzip_body", IMPLEMENTATIONS[name])
    client = BluefloodClient(fake_blueflood.url, "t1", Stats(), timeout=5, gzip=True)
    body = BODIES["5000 datapoints"]
    try:
        with gevent.Timeout(15):
            assert client.post(body).kind is Kind.OK
    finally:
        client.close()
    request = fake_blueflood.requests[-1]
    assert request.headers["Content-Encoding"] == "gzip"
    assert request.body == body and len(request.raw) < len(body) // 4
    assert fake_blueflood.stored == 5000
