"""`fastforward rules check|test`, run as the real command."""

from __future__ import annotations

import subprocess
import sys

from tests.support import ROUTING_RULES

RULES = ROUTING_RULES
SCHEMAS = "[carbon]\npattern = ^carbon\\.\nretentions = 60:90d\n"


def rules_cmd(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fastforward", "rules", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def write(tmp_path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_check_a_good_file_prints_ok_and_a_summary(tmp_path):
    rules = write(tmp_path, "rules.toml", RULES)
    schemas = write(tmp_path, "storage-schemas.conf", SCHEMAS)
    proc = rules_cmd("check", rules, "--storage-schemas", schemas)
    assert proc.returncode == 0, proc.stderr
    assert f"OK: {rules}: 3 rules, 1 prefix, 1 regex, 1 tag" in proc.stdout
    assert f"OK: {schemas}: 1 schemas" in proc.stdout


def test_check_warns_about_rules_that_can_never_match(tmp_path):
    rules = write(tmp_path, "rules.toml", '[[rule]]\nmatch = "*"\n\n[[rule]]\nmatch = "prefix:a"\n')
    proc = rules_cmd("check", rules)
    assert proc.returncode == 0
    assert f"warning: {rules}:4: rule 2 never matches" in proc.stdout


def test_check_a_bad_file_names_the_line_and_exits_2(tmp_path):
    rules = write(
        tmp_path, "rules.toml", RULES + '\n[[rule]]\nmatch = "prefix:x."\nrewrite = "y"\n'
    )
    proc = rules_cmd("check", rules)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert f"{rules}:18: rule 4: 'rewrite' needs a regex rule" in proc.stderr


def test_check_lists_every_bad_rule(tmp_path):
    text = '[[rule]]\nmatch = "regex:("\n\n[[rule]]\nmatch = "tag:x"\n'
    rules = write(tmp_path, "rules.toml", text)
    proc = rules_cmd("check", rules)
    assert proc.returncode == 2
    errors = proc.stderr.splitlines()
    assert len(errors) == 2
    assert errors[0].startswith(f"fastforward rules: {rules}:2: rule 1: bad regex")
    assert errors[1].startswith(f"fastforward rules: {rules}:5: rule 2:")


def test_check_a_bad_schemas_file_exits_2(tmp_path):
    rules = write(tmp_path, "rules.toml", RULES)
    schemas = write(tmp_path, "s.conf", "[a]\npattern = ^a\nretentions = 1m:1q\n")
    proc = rules_cmd("check", rules, "--storage-schemas", schemas)
    assert proc.returncode == 2
    assert f"{schemas}:3: [a] bad unit 'q'" in proc.stderr


def test_test_shows_what_happens_to_each_name(tmp_path):
    rules = write(tmp_path, "rules.toml", RULES)
    schemas = write(tmp_path, "s.conf", SCHEMAS)
    names = ["junk.a", "db.pg.rows", "cpu;host=a;env=prod", "carbon.agents.x", "cpu;host"]
    proc = rules_cmd("test", rules, *names, "--default-tenant", "111", "--storage-schemas", schemas)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("junk.a: DROPPED (rule: the rule says drop = true); rule 1 (line 2")
    assert lines[1] == (
        "db.pg.rows: rule 2 (line 6, match = 'regex:^db\\\\.([^.]+)\\\\.(.*)$') -> "
        "name 'databases.pg.rows', tenant 222, ttl 604800 s"
    )
    assert lines[2] == (
        "cpu;host=a;env=prod: rule 3 (line 12, match = 'tag:env=prod') -> "
        "name 'cpu;env=prod;host=a', tenant prod, ttl default"
    )
    assert lines[3] == (
        "carbon.agents.x: no rule matched -> name 'carbon.agents.x', tenant 111 (default), "
        "ttl 7776000 s"
    )
    assert lines[4].startswith("cpu;host: DROPPED (bad_tags")


def test_test_with_a_tag_policy(tmp_path):
    rules = write(tmp_path, "rules.toml", RULES)
    proc = rules_cmd("test", rules, "cpu;host=a;env=prod", "--tags", "flatten")
    assert "name 'cpu.env_is_prod.host_is_a'" in proc.stdout
    assert "tenant prod" in proc.stdout


def test_test_refuses_a_bad_file_and_bad_options(tmp_path):
    bad = write(tmp_path, "bad.toml", '[[rule]]\nmatch = "regex:["\n')
    proc = rules_cmd("test", bad, "a.b")
    assert proc.returncode == 2 and f"{bad}:2: rule 1: bad regex" in proc.stderr
    good = write(tmp_path, "rules.toml", RULES)
    proc = rules_cmd("test", good, "a.b", "--tags", "explode")
    assert proc.returncode == 2 and "invalid choice" in proc.stderr
    proc = rules_cmd("test", good, "a.b", "--default-tenant", "a/b")
    assert proc.returncode == 2 and "--default-tenant 'a/b' must not contain" in proc.stderr
