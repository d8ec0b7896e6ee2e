"""Per-tenant identity credentials: ``[tenant."ID"]`` tables in the rules file (secrets by
environment variable name only) and one token provider per credential set."""

from __future__ import annotations

import json
import logging
from types import SimpleNamespace

import pytest

from fastforward.auth import TokenProvider
from fastforward.blueflood import BluefloodClient
from fastforward.routing import Credentials, RulesError, parse_rules
from fastforward.stats import Stats
from fastforward.tenants import TenantForwarder, credential_posters
from tests.fake_blueflood import FakeBlueflood, FakeIdentity
from tests.routed_encoder import RoutedEncoder
from tests.test_tenants import tenants_config

RULES = """\
[[rule]]
match = "prefix:b."
tenant = "222"

[tenant."222"]
user = "bob"
key_env = "FF_TEST_KEY_BOB"

[tenant.333]
user = "bob"
key_env = "FF_TEST_KEY_BOB"
"""


def test_credentials_are_parsed_with_their_line_and_name_tenants():
    rules = parse_rules(RULES, "rules.toml")
    assert rules.credentials == (
        Credentials("222", "bob", key_env="FF_TEST_KEY_BOB", line=5),
        Credentials("333", "bob", key_env="FF_TEST_KEY_BOB", line=9),
    )
    assert rules.tenants() == ("222", "333")
    assert "own credentials: 222 (user bob, $FF_TEST_KEY_BOB), 333" in rules.summary()


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('user = "bob"\nkey = "s3cret-value"', "secrets are never written in the rules file"),
        ('user = "bob"', "exactly one of key_env and password_env"),
        ('user = "bob"\nkey_env = "A"\npassword_env = "B"', "exactly one of"),
        ('key_env = "A"', "'user' is required"),
        ('user = "bob"\nkey_env = "not a name"', "must be an environment variable name"),
        ('user = "bob"\nkey_env = "A"\nregion = "x"', "unknown key 'region'"),
    ],
)
def test_bad_credentials_are_refused_naming_the_line_and_never_the_secret(table, message):
    with pytest.raises(RulesError) as err:
        parse_rules(f'# rules\n\n[tenant."222"]\n{table}\n', "rules.toml")
    assert str(err.value).startswith("rules.toml:3: tenant '222': ")
    assert message in str(err.value)
    assert "s3cret-value" not in str(err.value)


def test_an_invalid_tenant_id_in_a_credentials_table_is_refused():
    with pytest.raises(RulesError, match="rules.toml:1: tenant 'a/b': is not a valid tenant"):
        parse_rules('[tenant."a/b"]\nuser = "u"\nkey_env = "K"\n', "rules.toml")


def config(auth_url: str = "", blueflood: str = "") -> SimpleNamespace:
    return SimpleNamespace(auth_url=auth_url, request_timeout=5.0, blueflood=blueflood, gzip=False)


def test_an_unset_variable_is_named_without_any_value():
    rules = parse_rules(RULES, "rules.toml")
    with pytest.raises(RulesError, match="rules.toml:5: .*FF_TEST_KEY_BOB is not set"):
        credential_posters(rules.credentials, config(), Stats(), {}, "rules.toml")


def test_each_tenant_posts_with_its_own_token_and_shared_credentials_share_one(caplog):
    caplog.set_level(logging.DEBUG)
    users = {"alice": {"apiKey": "alice-key-1"}, "bob": {"apiKey": "bob-key-2"}}
    with FakeIdentity(users) as identity, FakeBlueflood(identity=identity) as bf:
        stats = Stats()
        cfg = config(identity.tokens_url, bf.url)
        rules = parse_rules(RULES, "rules.toml")
        posters = credential_posters(
            rules.credentials, cfg, stats, {"FF_TEST_KEY_BOB": "bob-key-2"}, "rules.toml"
        )
        assert posters["222"].token_provider is posters["333"].token_provider
        alice = TokenProvider(identity.tokens_url, "alice", key="alice-key-1", stats=stats)
        client = BluefloodClient(bf.url, "t1", stats, timeout=5, token_provider=alice)
        encoder = RoutedEncoder()
        fwd = TenantForwarder(
            tenants_config(), encoder, stats, client, posters=posters, tenants=rules.tenants()
        )
        fwd.start()
        encoder.add(None, 10, prefix="a")
        encoder.add("222", 20, prefix="b")
        encoder.add("333", 30, prefix="c")
        assert fwd.stop(timeout=5) == 0
        for poster in [client, *posters.values()]:
            poster.close()
    stored = {
        t: sum(len(p) for (u, _), p in bf.store.items() if u == t) for t in ("t1", "222", "333")
    }
    assert stored == {"t1": 10, "222": 20, "333": 30}
    asked = [json.loads(r.raw) for r in identity.requests]
    users_asked = sorted(a["auth"]["RAX-KSKEY:apiKeyCredentials"]["username"] for a in asked)
    assert users_asked == ["alice", "bob"]  # one token for bob's two tenants
    assert "bob-key-2" not in caplog.text and "alice-key-1" not in caplog.text
