"""What `_codec_rules` holds for both codec implementations: the Encoder's defaults and the
check of its arguments, and the compiled codec's refusal to load when its C constants (drop
codes, limits) no longer follow the rules."""

import subprocess
import sys

import pytest

from fastforward import _codec_rules

NOW_MS = 1_700_000_000_000


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_body_bytes": 0}, "max_body_bytes must be a positive integer, not 0"),
        ({"max_body_datapoints": -5}, "max_body_datapoints must be a positive integer, not -5"),
        ({"max_frame_bytes": 1.5}, "max_frame_bytes must be a positive integer, not 1.5"),
        ({"max_items_per_frame": True}, "max_items_per_frame must be a positive integer, not True"),
        ({"max_name_bytes": "64"}, "max_name_bytes must be a positive integer, not '64'"),
        ({"max_line_bytes": None}, "max_line_bytes must be a positive integer, not None"),
        ({"ttl": 86400.0}, "ttl must be an integer, not 86400.0"),
    ],
)
def test_both_encoders_refuse_the_same_arguments(codec_impl, kwargs, message):
    with pytest.raises(ValueError) as exc:
        codec_impl.Encoder(**kwargs)
    assert str(exc.value) == message


def test_defaults_are_the_rules(codec_impl):
    # A body closes at the default datapoint count, and a name one byte over the default
    # length is dropped: the numbers both implementations take from _codec_rules.
    enc = codec_impl.Encoder(max_past_ms=-1, max_future_ms=-1)
    n = _codec_rules.DEFAULT_MAX_BODY_DATAPOINTS
    enc.add_lines(b"".join(b"m%d 1 1700000000\n" % i for i in range(n + 1)), now_ms=NOW_MS)
    assert enc.ready_bodies == 1 and enc.pending_datapoints == n + 1
    long_name = b"x" * (_codec_rules.DEFAULT_MAX_NAME_BYTES + 1)
    enc.add_lines(long_name + b" 1 1700000000\n", now_ms=NOW_MS)
    assert enc.counters()["invalid_name"] == 1
    body = enc.take()[0]
    assert b'"ttlInSeconds":%d,' % _codec_rules.DEFAULT_TTL in body


def import_compiled_with(patch: str) -> subprocess.CompletedProcess[str]:
    """Imports the compiled codec in a fresh interpreter after `patch` changed _codec_rules."""
    code = f"import fastforward._codec_rules as rules\n{patch}\nimport fastforward._codec\n"
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )


def test_compiled_codec_loads_with_the_rules_as_they_are(compiled_codec):
    proc = import_compiled_with("pass")
    assert proc.returncode == 0, proc.stderr


def test_compiled_codec_refuses_drop_reasons_in_another_order(compiled_codec):
    proc = import_compiled_with(
        "r = list(rules.DROP_REASONS); r[1], r[2] = r[2], r[1]; rules.DROP_REASONS = tuple(r)"
    )
    assert proc.returncode != 0
    assert "ImportError: fastforward._codec: its drop-reason codes" in proc.stderr
    assert "do not follow _codec_rules.DROP_REASONS" in proc.stderr


def test_compiled_codec_refuses_a_new_drop_reason(compiled_codec):
    proc = import_compiled_with("rules.DROP_REASONS = (*rules.DROP_REASONS, 'too_old')")
    assert proc.returncode != 0
    assert "do not follow _codec_rules.DROP_REASONS" in proc.stderr


def test_compiled_codec_refuses_a_limit_that_differs(compiled_codec):
    proc = import_compiled_with("rules.MAX_DEPTH = 65")
    assert proc.returncode != 0
    assert "ImportError: fastforward._codec: MAX_DEPTH is 64 in _codec.pxd but 65" in proc.stderr
