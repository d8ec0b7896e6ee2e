"""One POST of one body to Blueflood, and what the answer means (docs/blueflood-api.md section 7).

``BluefloodClient.post`` never raises for anything the network or the server does: every
status, connection error and timeout becomes an ``Outcome`` whose ``kind`` tells the forwarder
what to do with the body (done, drop, split, bisect, replay, wait, retry).

For plain ``http://`` without a proxy the POST goes through ``plainhttp.PlainHttpPool``, a
minimal keep-alive HTTP/1.1 client: urllib3's Python work per POST (pool checkout, Retry and
Timeout objects, http.client's header parsing, the response object) took about three times the
user CPU of the whole POST written and read by hand (bench/README.md, "Where the CPU goes").
``https://`` and proxies go straight to one urllib3 connection pool (keep-alive, timeouts, TLS
verification, proxy from the environment), not through ``requests.Session.post``, whose
per-call work (hooks, cookies, merging settings, PreparedRequest, the adapter) cost about as
much CPU as urllib3 itself. requests is still used once, at start, to read the proxy and CA
settings from the environment as it always did. Both clients give the same outcomes.
Under the daemon the socket module is gevent-patched, so a POST only blocks its greenlet.
"""

from __future__ import annotations

import datetime
import email.utils
import enum
import errno
import json
import logging
import os
import socket
import ssl
import sys
import time
from dataclasses import dataclass, field
from typing import IO, Any, Protocol

import requests
import urllib3
from requests.utils import DEFAULT_CA_BUNDLE_PATH, select_proxy
from urllib3.exceptions import HTTPError as Urllib3Error
from urllib3.exceptions import NewConnectionError
from urllib3.exceptions import TimeoutError as Urllib3Timeout

from . import __version__
from .compression import gzip_body
from .plainhttp import AnswerError, PlainHttpPool
from .stats import Stats

log = logging.getLogger(__name__)


class Kind(enum.Enum):
    OK = "ok"  # 200, 202: done
    PARTIAL = "partial"  # 207: done, ``errors`` lists the rejected metrics
    REJECTED = "rejected"  # 400 with per-metric errors: drop, count
    BAD_REQUEST = "bad_request"  # 400 Cannot parse content / Invalid data: a bug, bisect
    UNAUTHORIZED = "unauthorized"  # 401: token invalidated, replay the same bytes
    TOO_LARGE = "too_large"  # 413 without Retry-After: split in half
    RATE_LIMITED = "rate_limited"  # 413/429 with Retry-After: wait ``retry_after``
    RETRY = "retry"  # 5xx, 403, 404/405/501, 415, connection errors, timeouts


@dataclass(frozen=True)
class Outcome:
    kind: Kind
    status: int | None = None  # None when no HTTP answer arrived
    reason: str = ""  # short cause for logs and the ``retries`` counter label
    errors: list[dict] = field(default_factory=list)
    retry_after: float | None = None
    elapsed: float = 0.0
    detail: str = ""  # the failure in plain words for the log: "connection refused", "HTTP 503"

    @property
    def failure(self) -> str:
        """What went wrong, in words an operator reads without the source at hand."""
        if self.detail:
            return self.detail
        return f"HTTP {self.status}" if self.status is not None else self.reason or "unknown"


class TokenSource(Protocol):
    """What the client needs of ``auth.TokenProvider``."""

    def token(self) -> str: ...

    def invalidate(self, token: str) -> None: ...


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date), or None."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:  # an HTTP date is GMT by definition
        when = when.replace(tzinfo=datetime.timezone.utc)
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def parse_errors(content: bytes) -> list[dict]:
    """The ``errors`` list of a Blueflood error body; [] if the body is not one."""
    try:
        errors = json.loads(content)["errors"]
    except (ValueError, KeyError, TypeError):
        return []
    return [e for e in errors if isinstance(e, dict)] if isinstance(errors, list) else []


def _causes(exc: BaseException) -> list[BaseException]:
    """The exception and what it wraps (urllib3 nests the OS error a few levels deep)."""
    out: list[BaseException] = []
    todo = [exc]
    while todo and len(out) < 16:
        e = todo.pop()
        if e is None or any(e is seen for seen in out):
            continue
        out.append(e)
        reason = getattr(e, "reason", None)
        todo += [a for a in e.args if isinstance(a, BaseException)]
        todo += [x for x in (reason, e.__cause__, e.__context__) if isinstance(x, BaseException)]
    return out


_ERRNO_WORDS = {
    errno.ECONNREFUSED: "connection refused",
    errno.ECONNRESET: "connection reset",
    errno.EHOSTUNREACH: "host unreachable",
    errno.ENETUNREACH: "network unreachable",
    errno.ETIMEDOUT: "timed out",
}


def describe_error(exc: BaseException) -> str:
    """A failed request in plain words: "name not resolved", "connection refused", ..."""
    causes = _causes(exc)
    for e in causes:
        if isinstance(e, socket.gaierror):
            return "name not resolved"
    for e in causes:
        if isinstance(e, ssl.SSLError):
            return f"TLS error: {getattr(e, 'reason', None) or e}"
        if isinstance(e, OSError) and e.errno in _ERRNO_WORDS:
            return _ERRNO_WORDS[e.errno]
    if isinstance(exc, requests.Timeout) or _is_timeout(exc):
        return "timed out"
    for e in causes:
        if type(e).__name__ in ("RemoteDisconnected", "ProtocolError"):
            return "connection closed without an answer"
    return f"connection failed: {type(causes[-1]).__name__}"


def _is_timeout(exc: BaseException) -> bool:
    """urllib3's timeouts (a refused connection is a subclass of them there, but not one)."""
    return isinstance(exc, (Urllib3Timeout, TimeoutError)) and not isinstance(
        exc, NewConnectionError
    )


_CONFIG_STATUSES = {404: "wrong URL path", 405: "method not allowed", 501: "verb not implemented"}


def classify(status: int, content: bytes, retry_after_header: str | None) -> Outcome:
    """The Outcome of one HTTP answer (without timing)."""
    reason = str(status)
    if status == 207:
        return Outcome(Kind.PARTIAL, status, reason, parse_errors(content))
    if 200 <= status < 300:
        return Outcome(Kind.OK, status, reason)
    if status == 400:
        errors = parse_errors(content)
        if any(e.get("source") is not None for e in errors):
            return Outcome(Kind.REJECTED, status, reason, errors)
        if any(e.get("message") == "No valid metrics" for e in errors):
            return Outcome(Kind.REJECTED, status, reason, errors)
        return Outcome(Kind.BAD_REQUEST, status, reason, errors)
    if status == 401:
        return Outcome(Kind.UNAUTHORIZED, status, reason)
    if status in (413, 429):
        if retry_after_header is not None or status == 429:
            wait = parse_retry_after(retry_after_header)
            return Outcome(Kind.RATE_LIMITED, status, reason, retry_after=wait)
        return Outcome(Kind.TOO_LARGE, status, reason)
    return Outcome(Kind.RETRY, status, reason, parse_errors(content))


class BluefloodClient:
    """POSTs bodies to ``{base_url}/v2.0/{tenant}/ingest`` over one keep-alive session."""

    def __init__(
        self,
        base_url: str,
        tenant: str,
        stats: Stats,
        *,
        timeout: float = 30.0,
        gzip: bool = False,
        token_provider: TokenSource | None = None,
        pool_size: int = 4,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.tenant = tenant
        self.url = self.url_for(tenant)
        self.stats = stats
        self.timeout = timeout
        self.gzip = gzip
        self.token_provider = token_provider
        # Proxy and CA settings from the environment (HTTPS_PROXY, NO_PROXY,
        # REQUESTS_CA_BUNDLE...), read once the way requests reads them, not on every POST.
        with requests.Session() as env_session:
            env = env_session.merge_environment_settings(self.url, {}, None, None, None)
        verify = env["verify"]
        tls: dict[str, Any] = {"cert_reqs": "CERT_REQUIRED"}
        ca = DEFAULT_CA_BUNDLE_PATH if verify is True else verify
        if verify is False:
            tls = {"cert_reqs": "CERT_NONE"}
        elif isinstance(ca, str) and os.path.isdir(ca):
            tls["ca_cert_dir"] = ca
        else:
            tls["ca_certs"] = ca
        # One pool for the one host, as large as the number of senders, so every sender keeps
        # its own connection alive instead of reconnecting; block=False as requests did.
        self._pool_size = max(1, pool_size)
        pool_options: dict[str, Any] = {"num_pools": 2, "maxsize": self._pool_size, **tls}
        proxy = select_proxy(self.url, env["proxies"])
        self._manager: urllib3.PoolManager
        if proxy:
            proxy_url = urllib3.util.parse_url(proxy)
            headers = (
                urllib3.util.make_headers(proxy_basic_auth=proxy_url.auth)
                if proxy_url.auth
                else None
            )
            self._manager = urllib3.ProxyManager(proxy, proxy_headers=headers, **pool_options)
            self._direct = None
        else:
            self._manager = urllib3.PoolManager(**pool_options)
            self._direct = self._manager.connection_from_url(self.url)
        # Plain http:// without a proxy: our own keep-alive client, a quarter of urllib3's CPU
        # per POST (plainhttp.py); urllib3 above stays for https:// and proxies.
        parsed = urllib3.util.parse_url(self.url)
        self._plain: PlainHttpPool | None = None
        if not proxy and parsed.scheme == "http" and parsed.host:
            self._plain = PlainHttpPool(
                parsed.host, parsed.port or 80, timeout=timeout, size=self._pool_size
            )
        self._base_path = (urllib3.util.parse_url(self.base_url).path or "").rstrip("/")
        self._own_path = parsed.path or "/"  # the path, for _direct and the plain client
        self._timeout = urllib3.Timeout(connect=timeout, read=timeout)
        # Never a tenantId header: Blueflood would take it over the URL tenant.
        self._headers = {
            "Content-Type": "application/json",
            "Accept": "application/json",
            "Accept-Encoding": "gzip, deflate",
            "User-Agent": f"fastforward/{__version__}",
        }
        if gzip:
            self._headers["Content-Encoding"] = "gzip"
        # The plain client asks for answers as they are: they are small, and compressing them
        # would cost Blueflood more than it saves (a gzip answer is still decoded if it comes).
        plain = {**self._headers, "Accept-Encoding": "identity"}
        self._plain_headers = "".join(f"{k}: {v}\r\n" for k, v in plain.items()).encode()
        self._warned: set[int] = set()

    def url_for(self, tenant: str) -> str:
        """The ingest URL of ``tenant`` (a spooled body keeps the tenant it was received for)."""
        return f"{self.base_url}/v2.0/{tenant}/ingest"

    def close(self) -> None:
        self._manager.clear()
        if self._plain is not None:
            self._plain.close()

    def keep_connections(self, n: int) -> None:
        """Keep up to ``n`` connections alive from now on: the POSTs that may be in flight at
        once (several tenants' lanes share this client). A pool smaller than that opens a
        connection for a POST beyond its size and closes it after (a TCP handshake each)."""
        grow = n - self._pool_size
        if grow <= 0:
            return
        if self._plain is not None:
            self._plain.keep(n)
        self._pool_size = n
        pools = self._manager.pools
        made = [pools[key] for key in pools.keys()]
        if not made:  # the size is part of a pool's key: change it only before the first
            self._manager.connection_pool_kw["maxsize"] = n
        for pool in made:
            idle = getattr(pool, "pool", None)  # its queue of idle connections (None: closed)
            if idle is not None:
                idle.maxsize += grow  # gevent's queue under the daemon: no thread races it
                for _ in range(grow):
                    idle.put(None, block=False)  # an empty place: a connection made on demand

    def use_ingest_multi(self) -> None:
        """Send the default tenant's bodies to ``/v2.0/{tenant}/ingest/multi`` from now on.

        Their items carry their own ``tenantId`` (`tenants.with_tenant_ids`); a body POSTed
        for another tenant (a spooled one) still goes to that tenant's plain ingest URL.
        """
        self.url = f"{self.url_for(self.tenant)}/multi"
        self._own_path = urllib3.util.parse_url(self.url).path or "/"

    def post(self, body: bytes, tenant: str | None = None) -> Outcome:
        """POST one body to ``tenant`` (default: the client's own)."""
        own = tenant is None or tenant == self.tenant
        url = self.url if own else self.url_for(tenant)  # type: ignore[arg-type]
        headers = self._headers
        token = None
        if self.token_provider is not None:
            try:
                token = self.token_provider.token()
            except Exception as exc:  # any identity failure means "not now", retry later
                log.debug("no token for Blueflood: %s", exc)
                return Outcome(Kind.RETRY, None, "auth", detail=f"no identity token ({exc})")
            headers = {**headers, "X-Auth-Token": token}
        data = gzip_body(body) if self.gzip else body
        path = self._own_path if own else f"{self._base_path}/v2.0/{tenant}/ingest"
        if self._plain is not None:
            return self._post_plain(self._plain, path, data, token)
        started = time.monotonic()
        try:
            if self._direct is not None:  # the path only: same host for every tenant
                response = self._direct.urlopen(
                    "POST",
                    path,
                    body=data,
                    headers=headers,
                    retries=False,
                    redirect=False,
                    timeout=self._timeout,
                    preload_content=True,  # read it all so the connection goes back to the pool
                )
            else:
                response = self._manager.urlopen(
                    "POST",
                    url,
                    body=data,
                    headers=headers,
                    retries=False,
                    redirect=False,
                    timeout=self._timeout,
                    preload_content=True,
                )
            content = response.data
        except (Urllib3Error, OSError) as exc:
            return self._failed(url, exc, started)
        return self._answered(
            response.status, content, response.headers.get("Retry-After"), token, started
        )

    def _post_plain(
        self, pool: PlainHttpPool, path: str, data: bytes, token: str | None
    ) -> Outcome:
        """The POST on the plain-http client (see plainhttp.py)."""
        started = time.monotonic()
        headers = self._plain_headers
        if token is not None:
            headers += f"X-Auth-Token: {token}\r\n".encode("latin-1")
        try:
            answer = pool.post(path, headers, data)
        except AnswerError as exc:  # not an HTTP answer: its message says what was wrong
            return self._failed(path, exc, started, detail=str(exc))
        except OSError as exc:
            return self._failed(path, exc, started)
        return self._answered(
            answer.status, answer.body, answer.header("Retry-After"), token, started
        )

    def _failed(
        self, url: str, exc: BaseException, started: float, detail: str | None = None
    ) -> Outcome:
        """A POST that got no answer: a connection error (``detail``: in other words than
        `describe_error`'s) or a timeout."""
        if detail is not None or not _is_timeout(exc):
            log.debug("POST %s failed: %s", url, exc)
            return Outcome(
                Kind.RETRY,
                None,
                "connection",
                elapsed=time.monotonic() - started,
                detail=describe_error(exc) if detail is None else detail,
            )
        return Outcome(
            Kind.RETRY,
            None,
            "timeout",
            elapsed=time.monotonic() - started,
            detail=f"{describe_error(exc)} (--request-timeout {self.timeout:g}s)",
        )

    def _answered(
        self,
        status: int,
        content: bytes,
        retry_after: str | None,
        token: str | None,
        started: float,
    ) -> Outcome:
        """The Outcome of an HTTP answer, counted and logged."""
        elapsed = time.monotonic() - started
        self.stats.incr("http_responses", status=str(status))
        outcome = classify(status, content, retry_after)
        outcome = Outcome(
            outcome.kind, status, outcome.reason, outcome.errors, outcome.retry_after, elapsed
        )
        if outcome.kind in (Kind.OK, Kind.PARTIAL):
            self.stats.observe("flush_latency_seconds", elapsed)
            if status == 202:
                log.debug("Blueflood answered 202 (persisting still running): %s", content[:200])
        elif outcome.kind is Kind.UNAUTHORIZED and token is not None:
            self.token_provider.invalidate(token)  # type: ignore[union-attr]
        elif outcome.kind is Kind.RETRY:
            self._explain(status, content)
        return outcome

    def _explain(self, status: int, content: bytes) -> None:
        """Log statuses that mean a setup problem as errors (once per status, then debug)."""
        if status in _CONFIG_STATUSES:
            what = f"{_CONFIG_STATUSES[status]}: check --blueflood ({self.url})"
        elif status == 415:
            what = "unsupported media type; this is a fastforward bug"
        elif status == 403:
            what = "forbidden: check the credentials and the tenant"
        else:
            log.warning("Blueflood answered %d: %s", status, content[:300])
            return
        level = logging.DEBUG if status in self._warned else logging.ERROR
        self._warned.add(status)
        log.log(level, "Blueflood answered %d (%s); will retry", status, what)


class StdoutClient:
    """Dry run (``-b -``): each body on its own line on stdout; always succeeds."""

    url = "stdout"  # where bodies go, for the forwarder's log (a dry run never fails)

    def __init__(
        self, stats: Stats, stream: IO[bytes] | None = None, tenant: str | None = None
    ) -> None:
        """``tenant``: with routing, each line starts with the body's tenant and a tab
        (``tenant`` for bodies of the default tenant); None: the body alone, as always."""
        self.stats = stats
        self.stream = stream if stream is not None else sys.stdout.buffer
        self.tenant = tenant

    def url_for(self, tenant: str) -> str:
        return self.url

    def post(self, body: bytes, tenant: str | None = None) -> Outcome:
        if self.tenant is not None:
            body = (tenant or self.tenant).encode() + b"\t" + body
        self.stream.write(body + b"\n")
        self.stream.flush()
        return Outcome(Kind.OK, 200, "200")

    def close(self) -> None:
        pass
