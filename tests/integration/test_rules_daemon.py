"""The router in the daemon (issue 13): ``--rules`` at start, refused files, SIGHUP reloads,
the per-tenant series and ``/debug/series``, with the real process and the fake Blueflood.

The end-to-end routing scenarios (every kind of rule, isolation, budgets under load) are in
tests/integration/test_routing*.py; these prove the wiring: options to process, files to
router, router to encoder, tenants to lanes to Blueflood.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
import urllib.request
from pathlib import Path

import pytest

from .conftest import ANY_PORT, FakeBlueflood, frame, send_tcp, wait_until

pytestmark = [pytest.mark.integration]

RULES = """\
[[rule]]
match = "prefix:app."
tenant = "222"

[[rule]]
match = "regex:^db\\\\.([^.]+)\\\\.(.*)$"
rewrite = "databases.\\\\1.\\\\2"
tenant = "333"
ttl = 600

[[rule]]
match = "prefix:junk."
drop = true
"""


def _get(port: int, path: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as reply:
        return reply.read().decode()


def _ttl(bf: FakeBlueflood, tenant: str, name: str) -> set[int]:
    return {v[1] for v in bf.store.get((tenant, name), {}).values()}


def test_rules_route_two_tenants_and_a_reload_swaps_or_keeps_them(
    fake_blueflood: FakeBlueflood,
    run_ff,  # noqa: ANN001
    tmp_path: Path,
) -> None:
    bf = fake_blueflood
    rules = tmp_path / "rules.toml"
    rules.write_text(RULES)
    ff = run_ff("-e", ANY_PORT, "-b", bf.url, "-t", "111", "-i", "0.2", "--rules", str(rules),
                "--admin-endpoint", ANY_PORT)  # fmt: skip
    port, admin = ff.port(), ff.admin_port
    assert "routing: 3 rules sending to 2 tenants" in ff.log_text()
    ts = int(time.time())
    send_tcp(port, frame([("app.web.hits", (ts, 1)), ("db.main.queries", (ts, 2)),
                          ("other.load", (ts, 3)), ("junk.noise", (ts, 4))]))  # fmt: skip
    bf.wait_for(lambda: bf.stored == 3)
    assert bf.points("222", "app.web.hits") == {ts * 1000: 1}
    assert bf.points("333", "databases.main.queries") == {ts * 1000: 2}
    assert _ttl(bf, "333", "databases.main.queries") == {600}
    assert bf.points("111", "other.load") == {ts * 1000: 3}
    assert _ttl(bf, "111", "other.load") == {86400}
    metrics = _get(admin, "/metrics")
    assert 'fastforward_tenant_datapoints_accepted_total{tenant="222"} 1.0' in metrics
    assert 'fastforward_tenant_datapoints_accepted_total{tenant="111"} 1.0' in metrics
    assert 'fastforward_tenant_datapoints_dropped_total{reason="rule",tenant="111"} 1.0' in metrics
    assert 'fastforward_datapoints_dropped_total{reason="rule"} 1.0' in metrics
    assert "fastforward_rules_loaded 3.0" in metrics

    # A good file: app. now goes to a new tenant, whose lane starts on the reload.
    rules.write_text(RULES.replace('tenant = "222"', 'tenant = "444"'))
    ff.proc.send_signal(signal.SIGHUP)
    wait_until(
        lambda: "rules reloaded: 3 rules sending to 2 tenants" in ff.log_text(), 10, "the reload"
    )
    send_tcp(port, frame([("app.web.hits", (ts + 1, 5))]))
    bf.wait_for(lambda: bf.points("444", "app.web.hits") == {(ts + 1) * 1000: 5})

    # A bad file: one ERROR naming the line, the rules in use stay.
    rules.write_text(RULES + '\n[[rule]]\nmatch = "regex:("\n')
    ff.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: "rules reload failed" in ff.log_text(), 10, "the refused reload")
    refused = [line for line in ff.log_text().splitlines() if "rules reload failed" in line]
    assert len(refused) == 1 and "ERROR" in refused[0] and f"{rules}:16: rule 4" in refused[0]
    send_tcp(port, frame([("app.web.hits", (ts + 2, 6))]))
    bf.wait_for(lambda: (ts + 2) * 1000 in bf.points("444", "app.web.hits"))
    metrics = _get(admin, "/metrics")
    assert 'fastforward_rules_reloads_total{result="ok"} 1.0' in metrics
    assert 'fastforward_rules_reloads_total{result="error"} 1.0' in metrics
    assert json.loads(_get(admin, "/debug/series")) == {"rules": []}  # no budgeted rule
    assert ff.terminate() == 0
    assert bf.duplicates == 0 and bf.stored == 5


def test_workers_each_reload_on_sighup(
    fake_blueflood: FakeBlueflood,
    run_ff,  # noqa: ANN001
    tmp_path: Path,
) -> None:
    bf, log, rules = fake_blueflood, tmp_path / "ff.log", tmp_path / "rules.toml"
    budgeted = RULES.replace('tenant = "222"\n', 'tenant = "222"\nmax_new_series_per_minute = 9\n')
    rules.write_text(budgeted)
    ff = run_ff("-e", ANY_PORT, "-b", bf.url, "-t", "111", "-i", "0.2", "--rules", str(rules),
                "--workers", "2", "-l", str(log), "--admin-endpoint", ANY_PORT,
                log=log)  # fmt: skip
    rules.write_text(budgeted.replace('tenant = "222"', 'tenant = "444"'))
    ff.proc.send_signal(signal.SIGHUP)

    def reloaded_by() -> set[str]:
        return set(re.findall(r"\[worker (\d+)\][^\n]*rules reloaded: 3 rules", ff.log_text()))

    wait_until(lambda: reloaded_by() == {"1", "2"}, 15, "both workers to reload")
    port = ff.port()
    ts = int(time.time())
    for i in range(4):  # new connections: the balancer may give them to either worker
        send_tcp(port, frame([(f"app.n{i}", (ts, i))]))
    bf.wait_for(lambda: all(bf.points("444", f"app.n{i}") for i in range(4)))
    assert not any(k[0] == "222" for k in bf.store)
    admin = ff.admin_port

    def workers_listed() -> set[int]:
        entries = json.loads(_get(admin, "/debug/series"))["rules"]
        assert all(e["rule"] == 1 and e["limit_per_minute"] == 9 for e in entries)
        return {e["worker"] for e in entries}

    # Budgets are per worker: listed side by side, one entry per worker, not summed.
    wait_until(lambda: workers_listed() == {1, 2}, 15, "both workers' budgets")
    wait_until(
        lambda: 'fastforward_rules_reloads_total{result="ok"} 2.0' in _get(admin, "/metrics"),
        15,
        "one reload per worker in the merged metrics",
    )
    assert ff.terminate() == 0


def test_with_workers_a_bad_file_is_refused_once_before_any_worker(
    run_ff,  # noqa: ANN001
    tmp_path: Path,
) -> None:
    rules = tmp_path / "rules.toml"
    rules.write_text('[[rule]]\nmatch = "regex:(a"\n')
    ff = run_ff("-e", ANY_PORT, "-t", "111", "--rules", str(rules), "--workers", "2",
                wait=False)  # fmt: skip
    assert ff.wait() == 2
    assert ff.stderr.strip().splitlines() == [
        f"fastforward: {rules}:2: rule 1: bad regex '(a': missing ), unterminated subpattern "
        "at position 0"
    ]


def _bad(tmp_path: Path, kind: str) -> tuple[list[str], dict[str, str], str]:
    """Options, environment and the expected start of the one error line, per bad file."""
    rules, schemas = tmp_path / "rules.toml", tmp_path / "schemas.conf"
    good = '[[rule]]\nmatch = "prefix:a."\ntenant = "222"\n'
    texts = {
        "toml": ('[[rule]]\nmatch = "prefix:a.\n', f"{rules}:2: invalid TOML"),
        "regex": ('[[rule]]\nmatch = "regex:(a"\n', f"{rules}:2: rule 1: bad regex"),
        "key": (good + "colour = 1\n", f"{rules}:4: rule 1: unknown key 'colour'"),
        "rewrite": (good + 'rewrite = "b"\n', f"{rules}:4: rule 1: 'rewrite' needs a regex"),
        "tenant": ('[[rule]]\nmatch = "*"\ntenant = "a/b"\n', f"{rules}:3: rule 1: tenant 'a/b'"),
        "credential": (
            good + '[tenant."222"]\nuser = "svc"\nkey_env = "FF_TEST_UNSET_KEY"\n',
            f"{rules}:4: tenant '222': environment variable FF_TEST_UNSET_KEY is not set",
        ),
    }
    if kind == "unreadable":
        return (
            ["--rules", str(tmp_path / "missing.toml")],
            {},
            f"{tmp_path}/missing.toml: cannot read",
        )
    if kind == "schemas":
        schemas.write_text("[all]\npattern = .*\nretentions = 60s:forever\n")
        return ["--storage-schemas", str(schemas)], {}, f"{schemas}:3:"
    text, expected = texts[kind]
    rules.write_text(text)
    return ["--rules", str(rules)], {}, expected


@pytest.mark.parametrize(
    "kind", ["toml", "regex", "key", "rewrite", "tenant", "credential", "unreadable", "schemas"]
)
def test_a_bad_file_is_refused_at_start_with_one_line(
    run_ff,  # noqa: ANN001
    tmp_path: Path,
    kind: str,
) -> None:
    args, env, expected = _bad(tmp_path, kind)
    env.pop("FF_TEST_UNSET_KEY", None)
    os.environ.pop("FF_TEST_UNSET_KEY", None)
    ff = run_ff("-e", ANY_PORT, "-b", "http://127.0.0.1:9", "-t", "111", *args, env=env,
                wait=False)  # fmt: skip
    assert ff.wait() == 2
    lines = ff.stderr.strip().splitlines()
    assert lines == [lines[-1]] and lines[0].startswith(f"fastforward: {expected}"), ff.stderr
    assert "listening" not in ff.stderr


def test_a_dry_run_with_rules_shows_each_body_with_its_tenant(
    run_ff,  # noqa: ANN001
    tmp_path: Path,
) -> None:
    rules = tmp_path / "rules.toml"
    rules.write_text(RULES)
    ff = run_ff("-e", ANY_PORT, "--dry-run", "-t", "111", "-i", "0.1", "--rules", str(rules))
    ts = int(time.time())
    send_tcp(ff.port(), frame([("app.a", (ts, 1)), ("other.b", (ts, 2))]))

    def lines() -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for line in ff.stdout.splitlines():
            tenant, _tab, body = line.partition("\t")
            out.setdefault(tenant, []).extend(i["metricName"] for i in json.loads(body))
        return out

    wait_until(lambda: lines() == {"222": ["app.a"], "111": ["other.b"]}, 10, "both bodies")
    assert ff.terminate() == 0


def test_a_dry_run_with_rules_and_no_tenant_labels_the_default_tenant_dash(
    run_ff,  # noqa: ANN001
    tmp_path: Path,
) -> None:
    """Without -t the default tenant is "-" on stdout, in /metrics and in the log, never ""."""
    rules = tmp_path / "rules.toml"
    rules.write_text(RULES)
    ff = run_ff("-e", ANY_PORT, "--dry-run", "-i", "0.1", "--rules", str(rules),
                "--admin-endpoint", ANY_PORT)  # fmt: skip
    ts = int(time.time())
    send_tcp(ff.port(), frame([("app.a", (ts, 1)), ("other.b", (ts, 2))]))
    wait_until(lambda: len(ff.stdout.splitlines()) == 2, 10, "both bodies")
    tenants = sorted(line.partition("\t")[0] for line in ff.stdout.splitlines())
    assert tenants == ["-", "222"]
    metrics = _get(ff.admin_port, "/metrics")
    assert 'fastforward_tenant_datapoints_accepted_total{tenant="-"} 1' in metrics
    assert 'tenant=""' not in metrics
    assert ff.terminate() == 0
    assert "tenant -: stop: everything was delivered" in ff.stderr
