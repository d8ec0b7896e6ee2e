"""SIGHUP reloads the rules while senders keep sending: the new rules apply to what is read after
the reload, nothing in flight is lost or written twice, and no listener is rebound (the same
port, the senders' connections carry on)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from tests.support import LISTENING

from .conftest import FakeBlueflood, wait_until
from .helpers import Sender, scrape, start_routed

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BEFORE = '[[rule]]\nmatch = "prefix:hup."\ntenant = "old"\n'
# After the reload one prefix moves to another tenant; the rest stays.
AFTER = (
    '[[rule]]\nmatch = "prefix:hup.moved."\ntenant = "new"\n\n'
    '[[rule]]\nmatch = "prefix:hup."\ntenant = "old"\n'
)
SENDERS = 2


def _frame_of(name: str) -> int:
    return int(name.split(".")[3])  # hup.<kind>.s<k>.<frame>.<i>


def test_sighup_reloads_the_rules_under_load_losing_and_repeating_nothing(
    fake_blueflood: FakeBlueflood,
    run_ff,  # noqa: ANN001
    tmp_path: Path,
) -> None:
    bf = fake_blueflood
    rules = tmp_path / "rules.toml"
    ff, port, admin = start_routed(run_ff, bf, tmp_path, BEFORE)  # fmt: skip
    listeners = LISTENING.findall(ff.log_text())
    ts = int(time.time())
    senders = [
        Sender(port, f"hup.stay.s{k}", ts, mix=(f"hup.moved.s{k}",)).start() for k in range(SENDERS)
    ]
    wait_until(lambda: bf.stored > 0 and all(s.frames >= 10 for s in senders), 30,
               "steady delivery")  # fmt: skip

    staged = tmp_path / "rules.toml.new"
    staged.write_text(AFTER)
    os.replace(staged, rules)  # as a deployment tool writes it: never half a file
    ff.proc.send_signal(signal.SIGHUP)
    wait_until(
        lambda: scrape(admin).get("fastforward_rules_reloads_total", result="ok") == 1,
        10,
        "the reload",
    )
    reloaded_at = [s.frames for s in senders]  # frames from here on were sent after it
    wait_until(
        lambda: all(s.frames >= n + 20 for s, n in zip(senders, reloaded_at, strict=True)),
        30,
        "20 more frames from every sender",
    )
    for s in senders:
        s.stop()  # raises if its connection failed: the reload must not touch it

    expected = set().union(*(s.expected for s in senders))
    wait_until(lambda: bf.stored >= len(expected), 40, f"{len(expected)} datapoints stored")
    where: dict[tuple[str, int], list[str]] = {}
    for (tenant, name), points in bf.store.items():
        for ct in points:
            where.setdefault((name, ct), []).append(tenant)
    assert set(where) == expected, f"{len(expected - set(where))} lost"
    assert not {p: t for p, t in where.items() if len(t) > 1}, "stored under two tenants"
    assert not bf.written_twice() and bf.duplicates == 0
    for (name, _ct), (tenant,) in where.items():
        if name.startswith("hup.stay."):
            assert tenant == "old", name
        elif _frame_of(name) >= reloaded_at[int(name.split(".")[2][1:])]:
            assert tenant == "new", name  # read after the reload: the new rules
        elif _frame_of(name) == 0:
            assert tenant == "old", name  # long before it: the old rules
    assert {t for t, _name in bf.store} == {"old", "new"}

    # Nothing was rebound: the same listeners, still on the same port.
    assert LISTENING.findall(ff.log_text()) == listeners
    assert ff.port() == port
    assert "rules reloaded" in ff.log_text()
    assert scrape(admin).get("fastforward_rules_reloads_total", result="error") == 0
    assert ff.terminate() == 0
