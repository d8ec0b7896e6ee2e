"""A bad rules file, in the real process: refused at start (exit 2, one line naming the file's
line), and on a SIGHUP reload it leaves the rules in force untouched (an ERROR naming the line,
routing unchanged)."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from fastforward.cli import EXIT_USAGE

from .conftest import ANY_PORT, TENANT, FakeBlueflood, frame, send_tcp, wait_until
from .helpers import scrape, start_routed

pytestmark = [pytest.mark.integration]

# (what is wrong, the file, what the one line must say: the file's line number first)
BAD_FILES = [
    ("bad TOML", '[[rule]]\nmatch = "prefix:a\n', "rules.toml:2: invalid TOML"),
    (
        "bad regex",
        '[[rule]]\nmatch = "prefix:a."\n\n[[rule]]\nmatch = "regex:(a"\n',
        "rules.toml:5: rule 2: bad regex '(a'",
    ),
    ("unknown key", '[[rule]]\nmatch = "*"\ntennant = "1"\n', "rules.toml:3: rule 1: unknown key"),
    (
        "rewrite on a prefix rule",
        '[[rule]]\nmatch = "prefix:a."\nrewrite = "b"\n',
        "rules.toml:3: rule 1: 'rewrite' needs a regex rule",
    ),
    (
        "invalid tenant",
        '[[rule]]\nmatch = "prefix:a."\ntenant = "a/b"\n',
        "rules.toml:3: rule 1: tenant 'a/b' must not contain",
    ),
]


@pytest.mark.parametrize(
    ("text", "message"), [b[1:] for b in BAD_FILES], ids=[b[0] for b in BAD_FILES]
)
def test_a_bad_rules_file_is_refused_at_start_naming_its_line(
    fake_blueflood: FakeBlueflood,
    run_ff,  # noqa: ANN001
    tmp_path: Path,
    text: str,
    message: str,
) -> None:
    rules = tmp_path / "rules.toml"
    rules.write_text(text)
    ff = run_ff("-e", ANY_PORT, "-b", fake_blueflood.url, "-t", TENANT, "--rules", str(rules),
                wait=False)  # fmt: skip
    assert ff.wait(30) == EXIT_USAGE
    naming = [line for line in ff.stderr.splitlines() if "rules.toml" in line]
    assert len(naming) == 1, ff.stderr
    assert message in naming[0], ff.stderr
    assert "Traceback" not in ff.stderr
    assert "listening:" not in ff.stderr  # refused before binding anything
    assert not fake_blueflood.requests


ROUTE_A = '[[rule]]\nmatch = "prefix:a."\ntenant = "111"\n'


def test_a_bad_rules_file_on_reload_keeps_the_rules_in_force(
    fake_blueflood: FakeBlueflood,
    run_ff,  # noqa: ANN001
    tmp_path: Path,
) -> None:
    bf = fake_blueflood
    rules = tmp_path / "rules.toml"
    ff, port, admin = start_routed(run_ff, bf, tmp_path, ROUTE_A)
    ts = int(time.time())
    send_tcp(port, frame([("a.before", (ts, 1.0))]))
    bf.wait_for(lambda: bf.points("111", "a.before") == {ts * 1000: 1.0})

    for attempt, (what, text, message) in enumerate(BAD_FILES, start=1):
        rules.write_text(text)
        ff.proc.send_signal(signal.SIGHUP)
        wait_until(
            lambda n=attempt: (
                scrape(admin).get("fastforward_rules_reloads_total", result="error") == n
            ),
            10,
            f"the reload of a file with a {what} to fail",
        )
        errors = [line for line in ff.stderr.splitlines() if " ERROR: " in line and message in line]
        assert len(errors) == 1, f"{what}:\n{ff.stderr}"
        # Still the old rules: a. goes to 111, and nothing the bad file says applies.
        name = f"a.after.{attempt}"
        send_tcp(port, frame([(name, (ts, float(attempt)))]))
        bf.wait_for(lambda n=name: bf.points("111", n) != {})
    assert ff.proc.poll() is None
    m = scrape(admin)
    assert m.get("fastforward_rules_reloads_total", result="ok") == 0
    assert {tenant for tenant, _name in bf.store} == {"111"}
    assert ff.terminate() == 0
