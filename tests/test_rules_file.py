"""The rules file contract (docs/rules.md): what is accepted, and errors that name the line."""

from __future__ import annotations

import pytest

from fastforward.routing import RulesError, load_rules, parse_rules, tenant_problem

GOOD = """\
# a blocklist first
[[rule]]
match = "prefix:junk."
drop = true

[[rule]]
match = 'regex:^db\\.(?P<engine>[^.]+)\\.(.*)$'
rewrite = "databases.\\\\g<engine>.\\\\2"
tenant = "222"
ttl = 604800

[[rule]]
match = "tag:env=prod"
tenant = "prod"
max_new_series_per_minute = 1000

[[rule]]
match = "*"
tenant = "rest"
"""


def error_of(text: str) -> str:
    with pytest.raises(RulesError) as info:
        parse_rules(text, "rules.toml")
    return str(info.value)


def test_a_good_file_gives_every_field_in_order():
    rules = parse_rules(GOOD, "rules.toml")
    assert [r.kind for r in rules.rules] == ["prefix", "regex", "tag", "all"]
    junk, db, prod, rest = rules.rules
    assert (junk.prefix, junk.drop, junk.line) == ("junk.", True, 2)
    assert db.regex is not None and db.regex.pattern == r"^db\.(?P<engine>[^.]+)\.(.*)$"
    assert (db.rewrite, db.tenant, db.ttl, db.line) == (
        r"databases.\g<engine>.\2",
        "222",
        604800,
        6,
    )
    assert (prod.tag, prod.max_new_series_per_minute) == (("env", "prod"), 1000)
    assert (rest.tenant, rest.number) == ("rest", 4)
    assert rules.warnings == ()
    assert "4 rules" in rules.summary() and "prod, rest" in rules.summary()


def test_an_empty_file_is_no_rules():
    assert len(parse_rules("# nothing yet\n")) == 0


def test_bad_toml_names_line_and_column():
    message = error_of('[[rule]]\nmatch = "prefix:a\n')
    assert message.startswith("rules.toml:2: invalid TOML")
    assert "line 2, column" in message


def test_bad_regex_names_the_line_of_its_match():
    message = error_of('[[rule]]\nmatch = "prefix:a."\n\n[[rule]]\n\nmatch = "regex:(a"\n')
    assert message.startswith("rules.toml:6: rule 2: bad regex '(a'")


def test_unknown_key_names_its_line():
    message = error_of('[[rule]]\nmatch = "*"\ntennant = "1"\n')
    assert message.startswith("rules.toml:3: rule 1: unknown key 'tennant'")


def test_unknown_top_level_table_is_refused():
    message = error_of('[rules]\nmatch = "*"\n')
    assert "unknown top-level key 'rules'" in message


@pytest.mark.parametrize("match", ['"prefix:a."', '"tag:k=v"', '"*"'])
def test_rewrite_on_a_rule_that_is_not_a_regex_is_refused(match):
    message = error_of(f'[[rule]]\nmatch = {match}\nrewrite = "x"\n')
    assert message.startswith("rules.toml:3: rule 1: 'rewrite' needs a regex rule")


@pytest.mark.parametrize(
    ("rewrite", "problem"),
    [
        (r"x.\\2", "group 2; the regex has 1"),
        (r"x.\\g<nope>", "group 'nope'"),
        (r"x.\\q", "bad rewrite"),
        ("", "'rewrite' is empty"),
    ],
)
def test_rewrite_must_fit_the_regex_groups(rewrite, problem):
    message = error_of(f'[[rule]]\nmatch = "regex:^a(.*)$"\nrewrite = "{rewrite}"\n')
    assert message.startswith("rules.toml:3: rule 1:") and problem in message


@pytest.mark.parametrize(
    ("tenant", "problem"),
    [
        ('""', "is empty"),
        ('"a/b"', "must not contain"),
        ('"a.b"', "must not contain"),
        ('"a b"', "must not contain"),
        ('"' + "x" * 256 + '"', "longer than 255 bytes"),
        ("222", "must be a string"),
    ],
)
def test_tenant_must_be_a_valid_blueflood_tenant(tenant, problem):
    message = error_of(f'[[rule]]\nmatch = "*"\n# the tenant:\ntenant = {tenant}\n')
    assert message.startswith("rules.toml:4: rule 1:") and problem in message


def test_tenant_problem_accepts_what_blueflood_accepts():
    assert tenant_problem("836986") is None
    assert tenant_problem("team-a_prod") is None
    assert tenant_problem("é" * 127) is None  # 254 bytes
    assert tenant_problem("é" * 128) == "is longer than 255 bytes"


@pytest.mark.parametrize("ttl", ["0", "-5", "1.5", '"60"', "true"])
def test_ttl_must_be_a_positive_whole_number(ttl):
    message = error_of(f'[[rule]]\nmatch = "*"\nttl = {ttl}\n')
    assert message.startswith("rules.toml:3: rule 1: 'ttl' must be a positive whole number")


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("drop = 1", "'drop' must be true or false"),
        ("max_new_series_per_minute = 0", "'max_new_series_per_minute' must be a positive"),
        ("max_new_series_per_minute = 2.5", "'max_new_series_per_minute' must be a positive"),
    ],
)
def test_wrong_types_are_refused_on_their_line(line, problem):
    message = error_of(f'[[rule]]\nmatch = "*"\n{line}\n')
    assert message.startswith("rules.toml:3: rule 1:") and problem in message


@pytest.mark.parametrize(
    ("match", "problem"),
    [
        ("42", "'match' must be a string"),
        ('"prefix:"', "needs a prefix"),
        ('"tag:env"', "tag:key=value"),
        ('"tag:=prod"', "tag:key=value"),
        ('"glob:a.*"', 'use "prefix:..."'),
    ],
)
def test_bad_match_is_refused(match, problem):
    message = error_of(f"[[rule]]\n\nmatch = {match}\n")
    assert message.startswith("rules.toml:3: rule 1:") and problem in message


def test_a_rule_without_match_names_its_header():
    message = error_of('[[rule]]\nmatch = "*"\n\n[[rule]]\ntenant = "1"\n')
    assert message.startswith("rules.toml:4: rule 2: 'match' is required")


def test_rules_after_a_catch_all_are_reported_as_unreachable():
    text = '[[rule]]\nmatch = "*"\ndrop = true\n\n[[rule]]\nmatch = "prefix:a"\n'
    rules = parse_rules(text, "rules.toml")
    assert rules.warnings == (
        'rules.toml:5: rule 2 never matches: rule 1 (match = "*") comes first',
    )


def test_inline_array_spelling_still_names_the_rule():
    message = error_of('rule = [{match = "*"}, {match = "regex:("}]\n')
    assert message.startswith("rules.toml: rule 2: bad regex")


def test_load_rules_reads_a_file_or_raises_with_its_path(tmp_path):
    good = tmp_path / "rules.toml"
    good.write_text(GOOD)
    assert len(load_rules(str(good))) == 4
    bad = tmp_path / "bad.toml"
    bad.write_text('[[rule]]\nmatch = "regex:["\n')
    with pytest.raises(RulesError, match=rf"^{bad}:2: rule 1: bad regex"):
        load_rules(str(bad))
    with pytest.raises(RulesError, match="cannot read the rules file"):
        load_rules(str(tmp_path / "missing.toml"))


def test_a_failed_reload_leaves_the_old_rules_in_use(tmp_path):
    # What SIGHUP does: the new set replaces the old only when it loaded completely.
    path = tmp_path / "rules.toml"
    path.write_text('[[rule]]\nmatch = "prefix:a."\ntenant = "1"\n')
    current = load_rules(str(path))
    path.write_text('[[rule]]\nmatch = "prefix:a."\ntenant = "2"\n\n[[rule]]\nmatch = "regex:("\n')
    try:
        current = load_rules(str(path))
    except RulesError as exc:
        assert ":6: rule 2: bad regex" in str(exc)
    assert [r.tenant for r in current.rules] == ["1"]


def test_every_bad_rule_is_listed_and_the_message_stays_one_line():
    text = (
        '[[rule]]\nmatch = "regex:("\n\n[[rule]]\nmatch = "*"\n\n[[rule]]\nttl = 0\nmatch = "*"\n'
    )
    with pytest.raises(RulesError) as info:
        parse_rules(text, "rules.toml")
    assert [e.split(" rule")[0] for e in info.value.errors] == ["rules.toml:2:", "rules.toml:8:"]
    assert "\n" not in str(info.value)
    assert str(info.value).endswith("(and 1 more: 'fastforward rules check' lists them)")
