"""carbon's storage-schemas.conf as TTLs: first matching section, longest retention."""

from __future__ import annotations

import pytest

from fastforward.routing.schemas import SchemasError, load_schemas, parse_retention, parse_schemas

CONF = """\
# comments and blank lines as carbon allows them
[carbon]
pattern = ^carbon\\.
retentions = 60:90d

; old seconds:points spelling
[legacy]
pattern = ^legacy\\.
retentions = 60:1440, 300:2016

[everything]
match-all = true
retentions = 10s:6h,1m:7d,10m:5y
"""


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("10s:6h", 6 * 3600),
        ("1m:7d", 7 * 86400),
        ("10m:5y", 5 * 365 * 86400),
        ("1h:2w", 14 * 86400),
        ("60:1440", 86400),
        ("1m:1440", 86400),  # precision with a unit, points without
        (" 5s:1d ", 86400),
    ],
)
def test_retentions(text, seconds):
    assert parse_retention(text) == seconds


@pytest.mark.parametrize("text", ["60", "1x:1d", "1m:7q", "m:7d", "0:10", "1m:"])
def test_bad_retentions(text):
    with pytest.raises(ValueError):
        parse_retention(text)


def test_first_matching_section_gives_its_longest_retention():
    schemas = parse_schemas(CONF)
    assert [s.name for s in schemas.schemas] == ["carbon", "legacy", "everything"]
    assert schemas.ttl_for("carbon.agents.a.cpu") == 90 * 86400
    assert schemas.ttl_for("legacy.x") == 300 * 2016
    assert schemas.ttl_for("servers.web.cpu") == 5 * 365 * 86400
    assert schemas.ttl_for("x.carbon.y") == 5 * 365 * 86400  # ^ anchors; search otherwise


def test_no_match_means_no_ttl_from_schemas():
    schemas = parse_schemas("[a]\npattern = ^a\\.\nretentions = 1m:1d\n")
    assert schemas.ttl_for("b.c") is None


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("[a]\npattern = ^a\nretentions = 1m:7q\n", "<s>:3: [a] bad unit 'q'"),
        ("[a]\npattern = (a\nretentions = 1m:7d\n", "<s>:2: [a] bad pattern '(a'"),
        ("[a]\npattern = a\n", "<s>:1: [a] has no retentions"),
        ("\n[a]\nretentions = 1m:7d\n", "<s>:2: [a] has neither pattern nor match-all"),
        ("pattern = a\n", "<s>:1: 'pattern' before the first [section]"),
        ("[a]\njust words\n", "<s>:2: expected [section] or key = value"),
    ],
)
def test_errors_name_the_line(text, where):
    with pytest.raises(SchemasError) as info:
        parse_schemas(text, "<s>")
    assert str(info.value).startswith(where)


def test_load_schemas_from_a_file(tmp_path):
    path = tmp_path / "storage-schemas.conf"
    path.write_text(CONF)
    assert load_schemas(str(path)).ttl_for("carbon.x") == 90 * 86400
    with pytest.raises(SchemasError, match="cannot read"):
        load_schemas(str(tmp_path / "missing.conf"))


def test_retentions_agree_with_whisper():
    whisper = pytest.importorskip("whisper", reason="graphite's whisper is not installed")
    for text in ["10s:6h", "1m:7d", "10m:5y", "60:1440", "1h:2w", "1m:1440"]:
        precision, points = whisper.parseRetentionDef(text)
        assert parse_retention(text) == precision * points
