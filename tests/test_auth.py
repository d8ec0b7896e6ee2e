"""TokenProvider against the fake identity service (and the fake Blueflood in auth mode)."""

from __future__ import annotations

import json
import logging
import time

import gevent
import pytest

from fastforward.auth import AuthError, TokenProvider, parse_expires
from fastforward.blueflood import BluefloodClient, Kind
from fastforward.stats import Stats
from tests.fake_blueflood import (
    FakeBlueflood,
    FakeIdentity,
    fake_identity,  # noqa: F401 - fixture
)

SECRET = "k3y"


class Clock:
    """A settable clock shared by the identity fake and the provider."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def body() -> bytes:
    now = int(time.time() * 1000)
    return json.dumps(
        [{"collectionTime": now, "ttlInSeconds": 60, "metricValue": 1, "metricName": "a"}]
    ).encode()


def provider(identity, clock=time.time, **kw) -> TokenProvider:
    kw.setdefault("key", SECRET)
    return TokenProvider(identity.tokens_url, "alice", stats=Stats(), timeout=5, clock=clock, **kw)


def test_api_key_token_is_sent_and_accepted(fake_identity):  # noqa: F811
    tokens = provider(fake_identity)
    with FakeBlueflood(identity=fake_identity) as bf, gevent.Timeout(15):
        client = BluefloodClient(bf.url, "t1", Stats(), timeout=5, token_provider=tokens)
        assert client.post(body()).kind is Kind.OK
        assert client.post(body()).kind is Kind.OK
        sent = bf.requests[-1].headers["X-Auth-Token"]
        assert fake_identity.is_valid(sent)
        client.close()
    assert fake_identity.issued == 1  # cached between POSTs
    request = json.loads(fake_identity.requests[0].raw)
    assert request == {
        "auth": {"RAX-KSKEY:apiKeyCredentials": {"username": "alice", "apiKey": SECRET}}
    }
    assert tokens.tenant_id == fake_identity.tenant


def test_password_credentials_and_203(fake_identity):  # noqa: F811
    fake_identity.success_status = 203
    tokens = provider(fake_identity, key=None, password="pw")
    with gevent.Timeout(10):
        assert fake_identity.is_valid(tokens.token())
    assert "passwordCredentials" in json.loads(fake_identity.requests[0].raw)["auth"]


def test_401_invalidates_and_the_next_post_reauthenticates(fake_identity):  # noqa: F811
    tokens = provider(fake_identity)
    with FakeBlueflood(identity=fake_identity) as bf, gevent.Timeout(15):
        client = BluefloodClient(bf.url, "t1", Stats(), timeout=5, token_provider=tokens)
        assert client.post(body()).kind is Kind.OK
        fake_identity.revoke()
        assert client.post(body()).kind is Kind.UNAUTHORIZED
        assert client.post(body()).kind is Kind.OK
        client.close()
    assert fake_identity.issued == 2


def test_proactive_refresh_before_expiry(fake_identity):  # noqa: F811
    clock = Clock()
    fake_identity.clock = clock
    fake_identity.token_ttl = 3600
    tokens = provider(fake_identity, clock=clock)
    with gevent.Timeout(10):
        first = tokens.token()
        clock.now += 3000  # 10 minutes before expiry: still fine
        assert tokens.token() == first
        clock.now += 350  # inside the 5-minute margin: refreshed without any 401
        second = tokens.token()
    assert second != first and fake_identity.issued == 2
    assert fake_identity.is_valid(second)


def test_identity_outage_backs_off_then_recovers(fake_identity, caplog):  # noqa: F811
    clock = Clock()
    fake_identity.clock = clock
    fake_identity.failing = 503
    tokens = provider(fake_identity, clock=clock)
    with gevent.Timeout(10):
        with pytest.raises(AuthError):
            tokens.token()
        attempts = len(fake_identity.requests)
        with pytest.raises(AuthError, match="next attempt"):
            tokens.token()  # inside the backoff window: no new request
        assert len(fake_identity.requests) == attempts
        fake_identity.failing = None
        clock.now += 61  # past any backoff
        assert fake_identity.is_valid(tokens.token())
    assert tokens.stats.get("auth_requests", result="error") == 1
    assert tokens.stats.get("auth_requests", result="ok") == 1


def test_failed_refresh_keeps_the_still_valid_token(fake_identity):  # noqa: F811
    clock = Clock()
    fake_identity.clock = clock
    tokens = provider(fake_identity, clock=clock)
    with gevent.Timeout(10):
        first = tokens.token()
        clock.now += 86400 - 100  # inside the refresh margin, not yet expired
        fake_identity.failing = 500
        assert tokens.token() == first


def test_one_refresh_in_flight(fake_identity):  # noqa: F811
    fake_identity.delay = 0.3
    tokens = provider(fake_identity)
    with gevent.Timeout(10):
        greenlets = [gevent.spawn(tokens.token) for _ in range(10)]
        gevent.joinall(greenlets, raise_error=True)
    assert len({g.value for g in greenlets}) == 1
    assert len(fake_identity.requests) == 1


def test_bad_credentials_and_the_key_is_never_logged(fake_identity, caplog):  # noqa: F811
    caplog.set_level(logging.DEBUG)
    tokens = provider(fake_identity, key="wrong-secret-key")
    with gevent.Timeout(10), pytest.raises(AuthError) as err:
        tokens.token()
    assert tokens.stats.get("auth_requests", result="denied") == 1
    assert "wrong-secret-key" not in caplog.text
    assert "wrong-secret-key" not in str(err.value) and "wrong-secret-key" not in repr(tokens)


def test_identity_timeout_is_an_auth_error():
    with FakeIdentity() as ident:
        ident.fail.append("timeout")
        ident.hang_seconds = 2
        tokens = TokenProvider(ident.tokens_url, "alice", key=SECRET, stats=Stats(), timeout=0.3)
        with gevent.Timeout(10), pytest.raises(AuthError, match="timed out"):
            tokens.token()
        assert tokens.stats.get("auth_requests", result="timeout") == 1


def test_parse_expires():
    assert parse_expires("1970-01-01T00:01:00.000Z") == 60
    assert parse_expires("1970-01-01T01:00:00+01:00") == 0
    assert parse_expires("tomorrow") is None and parse_expires(None) is None
