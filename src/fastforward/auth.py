"""Keystone / Rackspace Identity v2.0 tokens for ``X-Auth-Token`` (docs/blueflood-api.md section 6).

Unlike txKeystone (which the original used) this reads ``access.token.expires`` and refreshes
ahead of it, accepts 200 and 203, refreshes after a 401, lets only one token request run at a
time, and recovers from an identity outage with a capped backoff instead of wedging. The API key
and the password are never logged nor put into exception messages.
"""

from __future__ import annotations

import datetime
import logging
import random
import time
from collections.abc import Callable
from typing import NoReturn

import requests
from gevent.lock import Semaphore

from .stats import Stats

log = logging.getLogger(__name__)

REFRESH_MARGIN = 300.0  # seconds before expiry
DEFAULT_LIFETIME = 3600.0  # when "expires" is missing or unreadable
BACKOFF_START, BACKOFF_CAP = 1.0, 60.0


class AuthError(Exception):
    """No token can be had right now; the message says why and when the next attempt is."""


def parse_expires(text: object) -> float | None:
    """ISO-8601 ``expires`` (``2026-05-06T20:00:00.000Z``, offsets too) to epoch seconds."""
    if not isinstance(text, str):
        return None
    value = text.strip()
    if value.endswith(("Z", "z")):
        value = value[:-1] + "+00:00"
    try:
        when = datetime.datetime.fromisoformat(value)
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.timezone.utc)
    return when.timestamp()


class TokenProvider:
    """Gets, caches and refreshes one identity token; safe to share between greenlets."""

    def __init__(
        self,
        auth_url: str,
        user: str,
        key: str | None = None,
        password: str | None = None,
        stats: Stats | None = None,
        timeout: float = 30.0,
        *,
        clock: Callable[[], float] = time.time,
        refresh_margin: float = REFRESH_MARGIN,
    ) -> None:
        if not key and not password:
            raise ValueError("an API key or a password is needed for identity authentication")
        self.auth_url = auth_url
        self.user = user
        if key:
            self._credentials = {"RAX-KSKEY:apiKeyCredentials": {"username": user, "apiKey": key}}
        else:
            self._credentials = {
                "passwordCredentials": {"username": user, "password": password or ""}
            }
        self.stats = stats if stats is not None else Stats()
        self.timeout = timeout
        self.clock = clock
        self.refresh_margin = refresh_margin
        self.tenant_id: str | None = None
        self._token: str | None = None
        self._refresh_at = 0.0
        self._expires_at = 0.0
        self._failures = 0
        self._next_attempt = 0.0
        self._lock = Semaphore()
        self._session = requests.Session()

    def __repr__(self) -> str:  # never show the secret
        return f"TokenProvider(auth_url={self.auth_url!r}, user={self.user!r})"

    def close(self) -> None:
        self._session.close()

    def token(self) -> str:
        """A valid token, fetched if needed; raises AuthError during an identity outage."""
        if self._token is not None and self.clock() < self._refresh_at:
            return self._token
        with self._lock:  # one request in flight; the others then find the fresh token
            now = self.clock()
            if self._token is not None and now < self._refresh_at:
                return self._token
            still_valid = self._token is not None and now < self._expires_at
            if now < self._next_attempt:
                if still_valid:
                    return self._token  # type: ignore[return-value]
                wait = self._next_attempt - now
                raise AuthError(f"identity unavailable; next attempt in {wait:.1f}s")
            try:
                return self._fetch()
            except AuthError:
                if still_valid:  # refresh ahead of expiry failed: keep using the old one
                    return self._token  # type: ignore[return-value]
                raise

    def invalidate(self, token: str) -> None:
        """Blueflood answered 401 to ``token``: forget it (if it is still the current one)."""
        if token == self._token:
            log.info("identity token refused by Blueflood (401); re-authenticating")
            self._token = None
            self._refresh_at = self._expires_at = 0.0

    def _fetch(self) -> str:
        started = self.clock()
        try:
            response = self._session.post(
                self.auth_url,
                json={"auth": self._credentials},
                headers={"Accept": "application/json"},
                timeout=self.timeout,
            )
        except requests.Timeout:
            self._failed("timeout", "identity request timed out")
        except requests.RequestException as exc:
            self._failed("error", f"identity request failed: {type(exc).__name__}")
        if response.status_code not in (200, 203):
            result = "denied" if response.status_code in (400, 401, 403) else "error"
            self._failed(result, f"identity answered {response.status_code}")
        try:
            token = response.json()["access"]["token"]
            token_id = token["id"]
            if not isinstance(token_id, str) or not token_id:
                raise TypeError("token id is not a string")
        except (ValueError, KeyError, TypeError):
            self._failed("error", "identity answer has no access.token.id")
        tenant = token.get("tenant") if isinstance(token, dict) else None
        self.tenant_id = str(tenant["id"]) if isinstance(tenant, dict) and "id" in tenant else None
        expires = parse_expires(token.get("expires"))
        if expires is None or expires <= started:
            expires = started + DEFAULT_LIFETIME
        lifetime = expires - started
        self._token = token_id
        self._expires_at = expires
        # Refresh ahead of expiry; a short-lived token is refreshed half-way instead.
        self._refresh_at = expires - min(self.refresh_margin, lifetime / 2)
        self._failures = 0
        self._next_attempt = 0.0
        self.stats.incr("auth_requests", result="ok")
        log.info("identity token obtained for user %s (expires in %.0fs)", self.user, lifetime)
        return token_id

    def _failed(self, result: str, message: str) -> NoReturn:
        self.stats.incr("auth_requests", result=result)
        self._failures += 1
        delay = min(BACKOFF_CAP, BACKOFF_START * 2 ** (self._failures - 1))
        delay *= random.uniform(0.5, 1.0)
        self._next_attempt = self.clock() + delay
        log.error(
            "%s (user %s, %s); next attempt in %.1fs", message, self.user, self.auth_url, delay
        )
        raise AuthError(message)
