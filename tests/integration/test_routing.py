"""Routing rules (``--rules``, docs/rules.md) in the real process against the fake Blueflood:
each test sends carbon datapoints and reads back what a user would see in Blueflood (which
tenant holds which name, with which TTL) and in /metrics (what was dropped, and why)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from . import helpers
from .conftest import TENANT, FakeBlueflood, frame, send_tcp, wait_until
from .helpers import scrape

pytestmark = [pytest.mark.integration]

DEFAULT_TTL = 7200  # --ttl: what a name gets when neither a rule nor a schema sets one
DAY = 86_400


def start_routed(run_ff, bf: FakeBlueflood, tmp_path: Path, rules: str, *extra: str):  # noqa: ANN001, ANN201
    """`helpers.start_routed` with ``--ttl DEFAULT_TTL``."""
    return helpers.start_routed(run_ff, bf, tmp_path, rules, "--ttl", str(DEFAULT_TTL), *extra)


def stored_series(bf: FakeBlueflood) -> dict[tuple[str, str], set[int]]:
    """(tenant, final name) -> the TTLs its points were stored with."""
    return {key: {point[1] for point in points.values()} for key, points in bf.store.items()}


def dropped(admin: int, reason: str) -> float:
    return scrape(admin).get("fastforward_datapoints_dropped_total", reason=reason)


ROUTES = """\
# A blocklist first: nobody reads these.
[[rule]]
match = "prefix:collectd.debug."
drop = true

[[rule]]
match = "prefix:app.web."
tenant = "222"
ttl = 604800

[[rule]]
match = 'regex:^db\\.([^.]+)\\.(.*)$'
rewrite = 'databases.\\1.\\2'
tenant = "333"
ttl = 172800

[[rule]]
match = "tag:env=prod"
tenant = "prod"
ttl = 3600
"""


def test_prefix_regex_and_tag_rules_route_rename_and_set_ttls(
    fake_blueflood: FakeBlueflood,
    run_ff,  # noqa: ANN001
    tmp_path: Path,
) -> None:
    bf = fake_blueflood
    ff, port, admin = start_routed(run_ff, bf, tmp_path, ROUTES, "-p", "pre")
    ts = int(time.time())
    names = [
        "collectd.debug.a",  # blocklisted
        "collectd.debug.b",  # blocklisted
        "app.web.requests",  # prefix rule
        "db.pg.rows",  # regex rule with a rewrite
        "cpu;host=a;env=prod",  # tag rule (tags normalised before the -p prefix)
        "app.web.latency;env=prod",  # both the prefix and the tag rule match: the first wins
        "app.mobile.requests",  # no rule: the default tenant, unchanged, --ttl
        "db.pg",  # the regex wants two nodes after db.: no rule
    ]
    send_tcp(port, frame([(n, (ts, float(i))) for i, n in enumerate(names)]))
    expected = {
        ("222", "pre.app.web.requests"): {604800},
        ("333", "pre.databases.pg.rows"): {172800},
        ("prod", "pre.cpu;env=prod;host=a"): {3600},
        ("222", "pre.app.web.latency;env=prod"): {604800},
        (TENANT, "pre.app.mobile.requests"): {DEFAULT_TTL},
        (TENANT, "pre.db.pg"): {DEFAULT_TTL},
    }
    bf.wait_for(lambda: bf.stored >= len(expected))
    wait_until(lambda: dropped(admin, "rule") == 2, 10, "the two blocklisted datapoints counted")
    assert stored_series(bf) == expected
    assert bf.points("333", "pre.databases.pg.rows") == {ts * 1000: 3.0}
    # Each tenant's datapoints were POSTed to that tenant's URL.
    assert {r.path for r in bf.ingests()} == {
        f"/v2.0/{t}/ingest" for t in ("222", "333", "prod", TENANT)
    }
    assert ff.terminate() == 0


def test_a_star_rule_takes_every_name_the_rules_before_it_left(
    fake_blueflood: FakeBlueflood,
    run_ff,  # noqa: ANN001
    tmp_path: Path,
) -> None:
    bf = fake_blueflood
    rules = (
        '[[rule]]\nmatch = "prefix:infra."\ntenant = "ops"\n\n'
        '[[rule]]\nmatch = "*"\ntenant = "catchall"\nttl = 600\n'
    )
    ff, port, _admin = start_routed(run_ff, bf, tmp_path, rules)
    ts = int(time.time())
    send_tcp(port, frame([("infra.dns.queries", (ts, 1.0)), ("anything.else", (ts, 2.0)),
                          ("cpu;b=2;a=1", (ts, 3.0))]))  # fmt: skip
    bf.wait_for(lambda: bf.stored >= 3)
    assert stored_series(bf) == {
        ("ops", "infra.dns.queries"): {DEFAULT_TTL},
        ("catchall", "anything.else"): {600},
        ("catchall", "cpu;a=1;b=2"): {600},
    }
    assert not [r for r in bf.ingests() if r.path == f"/v2.0/{TENANT}/ingest"]
    assert ff.terminate() == 0


def test_an_allowlist_lets_its_prefixes_through_and_drops_the_rest_counted(
    fake_blueflood: FakeBlueflood,
    run_ff,  # noqa: ANN001
    tmp_path: Path,
) -> None:
    bf = fake_blueflood
    rules = (
        '[[rule]]\nmatch = "prefix:prod."\n\n'
        '[[rule]]\nmatch = "prefix:infra."\ntenant = "ops"\n\n'
        '[[rule]]\nmatch = "*"\ndrop = true\n'
    )
    ff, port, admin = start_routed(run_ff, bf, tmp_path, rules)
    ts = int(time.time())
    items = [("prod.web.hits", (ts, 1.0)), ("infra.dns.queries", (ts, 2.0))]
    items += [(f"junk.n{i}", (ts, float(i))) for i in range(7)]
    send_tcp(port, frame(items))
    bf.wait_for(lambda: bf.stored >= 2)
    wait_until(lambda: dropped(admin, "rule") == 7, 10, "the seven others counted as dropped")
    assert stored_series(bf) == {
        (TENANT, "prod.web.hits"): {DEFAULT_TTL},
        ("ops", "infra.dns.queries"): {DEFAULT_TTL},
    }
    m = scrape(admin)
    assert m["fastforward_datapoints_received_total"] == 9
    assert m.get("fastforward_datapoints_dropped_total") == 7  # no other reason
    assert ff.terminate() == 0


@pytest.mark.parametrize(
    ("policy", "final"),
    [
        ("keep", "cpu;env=prod;host=a"),
        ("flatten", "cpu.env_is_prod.host_is_a"),
        ("strip", "cpu"),
    ],
)
def test_the_same_tags_in_two_orders_arrive_as_one_series(
    fake_blueflood: FakeBlueflood,
    run_ff,  # noqa: ANN001
    tmp_path: Path,
    policy: str,
    final: str,
) -> None:
    bf = fake_blueflood
    rules = '[[rule]]\nmatch = "tag:env=prod"\ntenant = "prod"\n'
    ff, port, _admin = start_routed(run_ff, bf, tmp_path, rules, "--tags", policy)
    ts = int(time.time())
    send_tcp(port, frame([("cpu;host=a;env=prod", (ts, 1.0))]))
    send_tcp(port, frame([("cpu;env=prod;host=a", (ts + 60, 2.0))]))
    bf.wait_for(lambda: bf.stored >= 2)
    assert list(bf.store) == [("prod", final)]
    assert bf.points("prod", final) == {ts * 1000: 1.0, (ts + 60) * 1000: 2.0}
    assert ff.terminate() == 0


SCHEMAS = """\
# carbon's storage-schemas.conf: the first section whose pattern is found decides
[carbon]
pattern = ^carbon\\.
retentions = 60:90d

[scratch]
pattern = ^tmp\\.
retentions = 10s:6h,1m:1d

[default]
pattern = .*
retentions = 10s:6h,1m:7d,10m:5y
"""


def test_storage_schemas_give_the_ttl_where_no_rule_does(
    fake_blueflood: FakeBlueflood,
    run_ff,  # noqa: ANN001
    tmp_path: Path,
) -> None:
    bf = fake_blueflood
    schemas = tmp_path / "storage-schemas.conf"
    schemas.write_text(SCHEMAS)
    rules = (
        '[[rule]]\nmatch = "prefix:app."\nttl = 600\n\n'
        "[[rule]]\nmatch = 'regex:^old\\.(.*)$'\nrewrite = 'carbon.\\1'\n"
    )
    ff, port, _admin = start_routed(run_ff, bf, tmp_path, rules, "--storage-schemas", str(schemas))
    ts = int(time.time())
    send_tcp(port, frame([(n, (ts, 1.0)) for n in (
        "carbon.agents.a1.cpu", "tmp.scratch.x", "web.hits", "app.hits", "old.relay.q",
    )]))  # fmt: skip
    bf.wait_for(lambda: bf.stored >= 5)
    assert stored_series(bf) == {
        (TENANT, "carbon.agents.a1.cpu"): {90 * DAY},  # 60:90d
        (TENANT, "tmp.scratch.x"): {DAY},  # the longest of 6h and 1d
        (TENANT, "web.hits"): {5 * 365 * DAY},  # 5y: a year is 365 days
        (TENANT, "app.hits"): {600},  # the rule's ttl wins over the schemas
        (TENANT, "carbon.relay.q"): {90 * DAY},  # the schema sees the name after the rewrite
    }
    assert ff.terminate() == 0


def test_ingest_multi_with_rules_posts_several_tenants_in_one_request(
    fake_blueflood: FakeBlueflood,
    run_ff,  # noqa: ANN001
    tmp_path: Path,
) -> None:
    bf = fake_blueflood
    rules = (
        '[[rule]]\nmatch = "prefix:a."\ntenant = "111"\n\n'
        '[[rule]]\nmatch = "prefix:b."\ntenant = "222"\n'
    )
    ff, port, _admin = start_routed(run_ff, bf, tmp_path, rules, "--ingest-multi")
    ts = int(time.time())
    items = [(f"{p}.m{i}", (ts, float(i))) for i in range(20) for p in ("a", "b", "c")]
    send_tcp(port, frame(items))
    bf.wait_for(lambda: bf.stored >= 60)
    assert not bf.ingests()  # nothing to a single-tenant URL
    posts = bf.multi_ingests()
    assert {r.path for r in posts} == {f"/v2.0/{TENANT}/ingest/multi"}
    tenants_per_post = [{item["tenantId"] for item in json.loads(r.body or b"[]")} for r in posts]
    assert {"111", "222", TENANT} <= set().union(*tenants_per_post)
    assert any(len(ids) > 1 for ids in tenants_per_post), tenants_per_post
    assert bf.points("111", "a.m7") == {ts * 1000: 7.0}
    assert bf.points("222", "b.m7") == {ts * 1000: 7.0}
    assert bf.points(TENANT, "c.m7") == {ts * 1000: 7.0}
    assert bf.stored == 60 and not bf.written_twice()
    assert ff.terminate() == 0
