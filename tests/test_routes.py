"""The router in the daemon, in-process (routes.py, service.py): the options, the single-tenant
daemon left as it was, reloads that keep or swap everything, per-tenant series, /debug/series,
credentials on reload. The real process is driven by tests/integration/test_rules_daemon.py."""

from __future__ import annotations

import json
import logging
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from fastforward.blueflood import BluefloodClient
from fastforward.config import ConfigError, load
from fastforward.forwarder import Forwarder
from fastforward.routes import load_routes
from fastforward.service import Service
from fastforward.tenants import TenantForwarder
from tests.fake_blueflood import FakeBlueflood
from tests.integration.conftest import ANY_PORT, frame
from tests.integration.helpers import Metrics
from tests.support import wait_until

pytestmark = pytest.mark.integration

RULES = """\
[[rule]]
match = "prefix:app."
tenant = "222"
max_new_series_per_minute = 100

[[rule]]
match = "prefix:junk."
drop = true
"""


def send(svc: Service, names: list[str], ts: int | None = None) -> int:
    ts = int(time.time()) if ts is None else ts
    port = next(a[1] for _k, proto, a in svc.receivers.addresses() if proto == "pickle")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(frame([(n, (ts, i)) for i, n in enumerate(names)]))
    return ts


def get(svc: Service, path: str) -> str:
    assert svc.admin is not None
    with urllib.request.urlopen(f"http://127.0.0.1:{svc.admin.port}{path}", timeout=10) as r:
        return r.read().decode()


def routed(svc_factory, bf: FakeBlueflood, rules: Path, *more: str) -> Service:  # noqa: ANN001
    svc = svc_factory("-e", ANY_PORT, "-b", bf.url, "-t", "111", "-i", "0.05",
                      "--rules", str(rules), "--admin-endpoint", ANY_PORT, *more)  # fmt: skip
    svc.start()
    return svc


# ---- options --------------------------------------------------------------------------------


def test_the_routing_options_from_the_environment_and_their_refusals(tmp_path: Path) -> None:
    env = {"FASTFORWARD_RULES": "/r.toml", "FASTFORWARD_STORAGE_SCHEMAS": "/s.conf",
           "FASTFORWARD_TAGS": "STRIP"}  # fmt: skip
    config = load(["-t", "t"], environ=env).config
    assert (config.rules, config.storage_schemas, config.tags) == ("/r.toml", "/s.conf", "strip")
    with pytest.raises(ConfigError, match=r"--tags 'sorted': use one of keep, strip, flatten"):
        load(["-t", "t", "--tags", "sorted"], environ={})
    ini = tmp_path / "ff.conf"
    ini.write_text("[blueflood_carbon_forwarder]\ntenant = t\ntags = squash\n")
    with pytest.raises(ConfigError, match=r"--tags 'squash'"):
        load(["-c", str(ini)], environ={})
    with pytest.raises(ConfigError, match=r"--tenant 'a/b': must not contain '/'"):
        load(["-t", "a/b"], environ={})  # the one tenant rule, shared with the rules file


def test_the_route_cache_size_is_an_option_refused_at_start_when_out_of_range(
    tmp_path: Path,
) -> None:
    assert load(["-t", "t"], environ={}).config.encoder_options()["route_cache_size"] == 262_144
    env = {"FASTFORWARD_ROUTE_CACHE_NAMES": "5000"}
    assert load(["-t", "t"], environ=env).config.route_cache_names == 5000
    ini = tmp_path / "ff.conf"
    ini.write_text("[blueflood_carbon_forwarder]\ntenant = t\nroute_cache_names = 0\n")
    with pytest.raises(ConfigError, match=r"^--route[-_]cache[-_]names 0: must be between 1 and "):
        load(["-c", str(ini)], environ={})
    with pytest.raises(ConfigError, match=r"route.cache.names"):
        load(["-t", "t", "--route-cache-names", "lots"], environ={})


def test_the_route_cache_shows_its_names_and_bytes_and_keeps_to_its_bound(
    service,  # noqa: ANN001
    fake_blueflood: FakeBlueflood,
    tmp_path: Path,
) -> None:
    bf, rules = fake_blueflood, tmp_path / "rules.toml"
    rules.write_text(RULES)
    svc = routed(service, bf, rules, "--route-cache-names", "10")
    m = Metrics(get(svc, "/metrics"))
    assert m["fastforward_route_cache_names"] == 0
    send(svc, [f"app.n{i}" for i in range(6)])
    bf.wait_for(lambda: bf.stored == 6)
    m = Metrics(get(svc, "/metrics"))
    assert m["fastforward_route_cache_names"] == 6 and m["fastforward_route_cache_bytes"] > 0
    send(svc, [f"other.n{i}" for i in range(9)])  # past the bound: forgotten, then refilled
    bf.wait_for(lambda: bf.stored == 15)
    m = Metrics(get(svc, "/metrics"))
    assert m["fastforward_route_cache_names"] == 5  # 10 forgotten at the 11th name, 5 since
    assert bf.duplicates == 0


def test_an_idle_tenants_lane_goes_and_comes_back_with_its_next_datapoint(
    service,  # noqa: ANN001
    fake_blueflood: FakeBlueflood,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="fastforward")
    bf, rules = fake_blueflood, tmp_path / "rules.toml"
    rules.write_text(RULES)
    svc = routed(service, bf, rules, "--tenant-idle-timeout", "0.3")
    fwd = svc.forwarder
    assert isinstance(fwd, TenantForwarder) and "222" in fwd.lanes  # named: started at once
    ts = send(svc, ["app.a", "other.b"])
    bf.wait_for(lambda: bool(bf.points("222", "app.a")) and bool(bf.points("111", "other.b")))
    wait_until(lambda: "222" not in fwd.lanes, 10, "the idle lane removed")
    assert "tenant 222: delivery lane removed after" in caplog.text
    wait_until(lambda: 'tenant_buffered_bytes{tenant="222"}' not in get(svc, "/metrics"), 10)
    assert None in fwd.lanes  # the default tenant's lane stays

    send(svc, ["app.c"], ts)
    bf.wait_for(lambda: bf.points("222", "app.c") == {ts * 1000: 0})
    m = Metrics(get(svc, "/metrics"))
    assert m.get("fastforward_tenant_datapoints_sent_total", tenant="222") == 2
    assert bf.duplicates == 0


def test_without_routing_options_the_daemon_is_the_single_tenant_one(
    service,  # noqa: ANN001
    fake_blueflood: FakeBlueflood,
) -> None:
    svc = service("-e", ANY_PORT, "-b", fake_blueflood.url, "-t", "111", "-i", "0.05",
                  "--admin-endpoint", ANY_PORT)  # fmt: skip
    assert svc.routing is None and type(svc.forwarder) is Forwarder
    svc.start()
    text = get(svc, "/metrics")
    assert "fastforward_rules_" not in text and "tenant_datapoints" not in text
    assert "fastforward_route_cache" not in text
    assert json.loads(get(svc, "/debug/series")) == {"rules": []}
    ts = send(svc, ["app.a"])
    fake_blueflood.wait_for(lambda: fake_blueflood.points("111", "app.a") == {ts * 1000: 0})


def test_ingest_multi_routes_into_one_lane_with_tenant_ids(
    service,  # noqa: ANN001
    fake_blueflood: FakeBlueflood,
    tmp_path: Path,
) -> None:
    bf, rules = fake_blueflood, tmp_path / "rules.toml"
    rules.write_text(RULES)
    svc = routed(service, bf, rules, "--ingest-multi")
    assert isinstance(svc.forwarder, TenantForwarder) and list(svc.forwarder.lanes) == [None]
    ts = send(svc, ["app.a", "other.b"])
    bf.wait_for(lambda: bf.stored == 2)
    assert bf.points("222", "app.a") == {ts * 1000: 0}
    assert bf.points("111", "other.b") == {ts * 1000: 1}
    assert all(r.path.endswith("/ingest/multi") for r in bf.ingests())


# ---- reload ---------------------------------------------------------------------------------


def test_a_bad_reload_keeps_everything_and_a_good_one_swaps_it(
    service,  # noqa: ANN001
    fake_blueflood: FakeBlueflood,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "fastforward.routing")
    bf, rules = fake_blueflood, tmp_path / "rules.toml"
    rules.write_text(RULES)
    svc = routed(service, bf, rules)
    assert isinstance(svc.forwarder, TenantForwarder) and svc.routing is not None
    ts = send(svc, ["app.a", "junk.b", "other.c"])
    bf.wait_for(lambda: bf.stored == 2)
    assert bf.points("222", "app.a") and bf.points("111", "other.c")
    before = svc.routing.routes

    for bad in ('[[rule]]\nmatch = "prefix:app."\ntenant = "x y"\n', "[[rule]\n", ""):
        rules.write_text(bad) if bad else rules.unlink()
        assert svc.routing.reload() is False
        assert svc.routing.routes is before  # the old router, rules and lanes untouched
    errors = [r for r in caplog.records if "rules reload failed" in r.getMessage()]
    assert len(errors) == 3 and all(r.levelname == "ERROR" for r in errors)
    assert "cannot read the rules file" in errors[-1].getMessage()
    send(svc, ["app.a2", "junk.b2"], ts)
    bf.wait_for(lambda: bool(bf.points("222", "app.a2")))

    rules.write_text(RULES.replace('"222"', '"444"').replace("junk.", "other."))
    assert svc.routing.reload() is True
    assert "444" in svc.forwarder.lanes  # a lane for the new tenant at once
    send(svc, ["app.a3", "junk.b3", "other.c3"], ts)
    bf.wait_for(lambda: bool(bf.points("444", "app.a3")) and bool(bf.points("111", "junk.b3")))
    assert not bf.points("111", "other.c3")  # dropped by the new rule 2
    m = Metrics(get(svc, "/metrics"))
    assert m.get("fastforward_rules_reloads_total", result="error") == 3
    assert m.get("fastforward_rules_reloads_total", result="ok") == 1
    assert m["fastforward_rules_loaded"] == 2
    assert "rules reloaded: 2 rules sending to 1 tenant\n" in caplog.text
    assert bf.duplicates == 0


def test_budgets_carry_over_a_reload_and_show_in_debug_series(
    service,  # noqa: ANN001
    fake_blueflood: FakeBlueflood,
    tmp_path: Path,
) -> None:
    bf, rules = fake_blueflood, tmp_path / "rules.toml"
    rules.write_text(RULES)
    svc = routed(service, bf, rules)
    send(svc, [f"app.s{i}" for i in range(5)])
    bf.wait_for(lambda: bf.stored == 5)
    assert svc.routing is not None and svc.routing.reload()
    (report,) = json.loads(get(svc, "/debug/series"))["rules"]
    assert report["rule"] == 1 and report["match"] == "prefix:app."
    assert report["limit_per_minute"] == 100 and report["new_total"] == 5  # kept by the reload


# ---- per-tenant series ----------------------------------------------------------------------


def test_every_tenant_series_exists_at_zero_and_counts_by_tenant(
    service,  # noqa: ANN001
    fake_blueflood: FakeBlueflood,
    tmp_path: Path,
) -> None:
    bf, rules = fake_blueflood, tmp_path / "rules.toml"
    rules.write_text(RULES)
    svc = routed(service, bf, rules)
    m = Metrics(get(svc, "/metrics"))
    for tenant in ("111", "222"):
        for name in ("accepted", "sent", "rejected"):
            assert (f"fastforward_tenant_datapoints_{name}_total",
                    frozenset({("tenant", tenant)})) in m.samples, (name, tenant)  # fmt: skip
        for reason in ("rule", "series_budget", "bad_tags", "empty_name"):
            key = frozenset({("tenant", tenant), ("reason", reason)})
            assert m.samples[("fastforward_tenant_datapoints_dropped_total", key)] == 0
    send(svc, ["app.a", "app.b", "junk.c", "other.d"])
    bf.wait_for(lambda: bf.stored == 3)

    def counted() -> bool:
        m = Metrics(get(svc, "/metrics"))
        return m.get("fastforward_tenant_datapoints_sent_total", tenant="111") == 1

    wait_until(counted, 10, "the sent counters")
    m = Metrics(get(svc, "/metrics"))
    assert m.get("fastforward_tenant_datapoints_accepted_total", tenant="222") == 2
    assert m.get("fastforward_tenant_datapoints_accepted_total", tenant="111") == 1
    assert m.get("fastforward_tenant_datapoints_sent_total", tenant="222") == 2
    assert m.get("fastforward_tenant_datapoints_dropped_total", tenant="111", reason="rule") == 1
    # The totals and the accounting identity are the same as without rules.
    assert m["fastforward_datapoints_accepted_total"] == 3
    assert m["fastforward_datapoints_received_total"] == 4
    assert m.get("fastforward_datapoints_dropped_total", reason="rule") == 1
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed")
    check = subprocess.run([promtool, "check", "metrics"], input=m.text, capture_output=True,
                           text=True, timeout=30)  # fmt: skip
    assert check.returncode == 0 and not (check.stdout + check.stderr).strip(), check.stderr


# ---- credentials ----------------------------------------------------------------------------


def test_the_start_line_counts_rule_tenants_and_credential_tenants_apart(tmp_path: Path) -> None:
    rules = tmp_path / "rules.toml"
    creds = '\n[tenant."{}"]\nuser = "svc"\nkey_env = "FF_KEY"\n'
    rules.write_text(RULES)
    config = load(["-t", "111", "--rules", str(rules)], environ={}).config
    assert load_routes(config).summary() == "2 rules sending to 1 tenant"
    rules.write_text(RULES + creds.format("222") + creds.format("333"))
    summary = load_routes(config).summary()
    assert summary == "2 rules sending to 1 tenant, credentials for 2 tenants (1 named by no rule)"


def test_a_reload_gives_new_or_changed_credentials_a_client_and_keeps_the_others(
    service,  # noqa: ANN001
    fake_blueflood: FakeBlueflood,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FF_KEY_222", "k222")
    monkeypatch.setenv("FF_KEY_333", "k333")
    bf, rules = fake_blueflood, tmp_path / "rules.toml"
    creds = '\n[tenant."222"]\nuser = "svc-222"\nkey_env = "FF_KEY_222"\n'
    rules.write_text(RULES + creds)
    svc = routed(service, bf, rules)
    fwd = svc.forwarder
    assert isinstance(fwd, TenantForwarder)
    first = fwd.lanes["222"].client
    assert isinstance(first, BluefloodClient) and first.token_provider is not None

    rules.write_text(RULES + creds + creds.replace("222", "333"))
    assert svc.routing is not None and svc.routing.reload()
    assert fwd.lanes["222"].client is first  # unchanged credentials: the same client, token
    new = fwd.lanes["333"].client
    assert isinstance(new, BluefloodClient) and new.token_provider is not None

    rules.write_text(RULES + creds.replace("svc-222", "svc-222b"))
    assert svc.routing.reload()
    changed = fwd.lanes["222"].client
    assert changed is not first and fwd.lanes["222"].senders.client is changed
    assert not isinstance(fwd.lanes["333"].client, BluefloodClient)  # back to the default

    monkeypatch.delenv("FF_KEY_333")
    rules.write_text(RULES + creds.replace("222", "333"))
    assert not svc.routing.reload()  # an unset variable: refused, nothing changes
    assert fwd.lanes["222"].client is changed


def test_a_reload_starts_lanes_only_for_tenants_the_rules_did_not_name_before(
    service,  # noqa: ANN001
    fake_blueflood: FakeBlueflood,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A tenant whose lane was removed as idle gets a new one from its next datapoint, not from
    # every reload that still names it (each would log a start, then a removal when idle).
    bf, rules = fake_blueflood, tmp_path / "rules.toml"
    rules.write_text(RULES)
    svc = routed(service, bf, rules, "--tenant-idle-timeout", "60")
    fwd = svc.forwarder
    assert isinstance(fwd, TenantForwarder) and "222" in fwd.lanes
    fwd.retire_idle(1000.0)
    fwd.retire_idle(1061.0)  # the idle clock is the caller's: no waiting a minute here
    assert "222" not in fwd.lanes

    caplog.set_level(logging.INFO, logger="fastforward")
    rules.write_text(RULES + '\n[[rule]]\nmatch = "prefix:web."\ntenant = "333"\n')
    assert svc.routing is not None and svc.routing.reload()
    assert "333" in fwd.lanes  # named for the first time: its lane starts at once
    assert "222" not in fwd.lanes
    assert "tenant 222" not in caplog.text

    ts = send(svc, ["app.a", "web.b"])
    wait_until(lambda: bf.stored >= 2, 10, "both datapoints stored")
    assert "222" in fwd.lanes  # its next datapoint brought it back
    assert set(bf.store) == {("222", "app.a"), ("333", "web.b")}
    assert all(ts * 1000 in points for points in bf.store.values())
