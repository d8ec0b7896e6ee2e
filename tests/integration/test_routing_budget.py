"""The series budget in the real process: a sender suddenly creating 5,000 new series under a
rule with ``max_new_series_per_minute = 1000`` gets at most the budget through in that minute,
the series that existed before flow untouched, the refusals are counted (reason
``series_budget``) and ``GET /debug/series`` names the rule and the prefix creating them.

The minute boundary: the budget counts per clock minute (the daemon's wall clock, the same as
this test's). The test starts early in a minute (it waits for the first 40 seconds of one, at
most 20 s) so the whole burst normally falls in one minute; the bound it asserts holds anyway:
over the minutes between the first send and the last datapoint decided, at most
``budget x minutes`` series were admitted. Within one minute the figure is exact.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import pytest

from .conftest import FakeBlueflood, frame, send_tcp, wait_until
from .helpers import http_get, scrape, start_routed

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BUDGET = 1000
NEW = 5000
EXISTING = 200
RULES = f"""\
[[rule]]
match = "prefix:noisy."
tenant = "noisy"
max_new_series_per_minute = {BUDGET}

[[rule]]
match = "prefix:quiet."
tenant = "quiet"
"""


def _minute() -> int:
    return int(time.time() // 60)


def _stored_names(bf: FakeBlueflood, tenant: str, prefix: str) -> set[str]:
    return {name for t, name in bf.store if t == tenant and name.startswith(prefix)}


def test_a_burst_of_new_series_is_held_to_the_budget_and_existing_series_flow(
    fake_blueflood: FakeBlueflood,
    run_ff,  # noqa: ANN001
    tmp_path: Path,
) -> None:
    bf = fake_blueflood
    # the budget applies from the start (not after the default 5 minutes learning)
    ff, port, admin = start_routed(run_ff, bf, tmp_path, RULES, "--series-budget-warmup", "0")
    wait_until(lambda: time.time() % 60 < 40, 25, "the first 40 seconds of a minute", poll=0.2)
    first_minute = _minute()
    ts = int(time.time()) - 120

    existing = [f"noisy.old.m{i}" for i in range(EXISTING)]
    send_tcp(port, frame([(n, (ts, 1.0)) for n in existing]))
    bf.wait_for(lambda: len(_stored_names(bf, "noisy", "noisy.old.")) == EXISTING)

    # The burst: 5,000 names never seen, with the existing series' next points and a tenant
    # without a budget beside them in the same frames.
    burst = [f"noisy.burst.h{i % 50}.m{i}" for i in range(NEW)]
    items = [(n, (ts, 2.0)) for n in burst]
    items += [(n, (ts + 60, 3.0)) for n in existing]
    items += [(f"quiet.app.m{i}", (ts, 4.0)) for i in range(NEW)]
    random.Random(13).shuffle(items)  # interleaved
    send_tcp(port, b"".join(frame(items[i : i + 500]) for i in range(0, len(items), 500)))

    def decided() -> bool:
        admitted = len(_stored_names(bf, "noisy", "noisy.burst."))
        refused = scrape(admin).get("fastforward_datapoints_dropped_total", reason="series_budget")
        return admitted + refused >= NEW

    wait_until(decided, 30, "every new name of the burst admitted or refused", poll=0.1)
    minutes = _minute() - first_minute + 1
    admitted = len(_stored_names(bf, "noisy", "noisy.burst."))
    refused = scrape(admin).get("fastforward_datapoints_dropped_total", reason="series_budget")

    # At most the budget per minute, the existing series included when they were new.
    assert EXISTING + admitted <= BUDGET * minutes, (admitted, minutes)
    if minutes == 1:
        assert admitted == BUDGET - EXISTING
    assert refused == NEW - admitted
    m = scrape(admin)
    assert m.get("fastforward_tenant_datapoints_dropped_total", tenant="noisy") == refused
    # The existing series and the tenant without a budget lost nothing.
    bf.wait_for(lambda: all(len(bf.points("noisy", n)) == 2 for n in existing))
    bf.wait_for(lambda: len(_stored_names(bf, "quiet", "quiet.")) == NEW)
    assert bf.points("noisy", existing[7]) == {ts * 1000: 1.0, (ts + 60) * 1000: 3.0}
    assert not bf.written_twice()

    status, text = http_get(f"http://127.0.0.1:{admin}/debug/series")
    assert status == 200, text
    report = json.loads(text)
    (rule,) = report["rules"]  # only the budgeted rule
    assert rule["match"] == "prefix:noisy." and rule["rule"] == 1
    assert rule["limit_per_minute"] == BUDGET and not rule["learning"]
    assert rule["refused_total"] == refused
    assert rule["new_total"] == EXISTING + admitted
    top = rule["top_prefixes"][0]
    assert top["prefix"] == "noisy.burst" and top["new_series"] == admitted, rule
    assert ff.terminate() == 0
