"""A faithful fake Blueflood ingest server and a fake Rackspace/Keystone identity service.

Both run in the test process on gevent.pywsgi, bound to 127.0.0.1 on a kernel-chosen port.
The behaviour follows docs/blueflood-api.md section 8: media checks before routing,
gzip/deflate bodies, 413-and-close over ``max_content_length``, routing 404/405/501, Jackson-1.x
like parsing, per-metric validation against an injectable clock, 200/207/400/500 outcomes and an
upsert store. Test hooks: the request log, a queue of scripted responses, settable limits, and
counters of stored points and of datapoints received (so duplicates can be counted).

Usage::

    with FakeBlueflood() as bf:
        requests.post(bf.ingest_url("t1"), data=b"[...]")
        assert bf.stored == 1

or the ``fake_blueflood`` / ``fake_identity`` fixtures (import them into a test module or list
this module in ``pytest_plugins``).
"""

from __future__ import annotations

import datetime
import errno
import json
import re
import socket
import time
import uuid
import zlib
from collections import Counter, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import gevent
import pytest
from gevent.pywsgi import WSGIHandler, WSGIServer

from tests.support import wait_until

BEFORE_MS = 259_200_000
AFTER_MS = 600_000
MAX_CONTENT_LENGTH = 1_048_576
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
ALLOWED_KEYS = frozenset({"metricName", "metricValue", "collectionTime", "ttlInSeconds", "unit"})

_INGEST = re.compile(r"^/v2\.0/([^/]+)/ingest$")
_INGEST_MULTI = re.compile(r"^/v2\.0/([^/]+)/ingest/multi$")
_VIEWS = re.compile(r"^/v2\.0/([^/]+)/views/([^/]+)$")
_KNOWN_VERBS = {"GET", "POST", "HEAD", "OPTIONS"}


def wall_ms() -> int:
    return int(time.time() * 1000)


class _ParseError(Exception):
    """Jackson would raise JsonParseException / JsonMappingException: 400 Cannot parse content."""


class _ServerError(Exception):
    """Any other exception while parsing: 500 Failed parsing content."""


class _InvalidData(Exception):
    """InvalidDataException from Metric.setTtl: 400 with the message."""


@dataclass
class Scripted:
    """One canned answer, taken from the queue by the next ingest POST.

    ``process=True`` stores the body first (as a 500 after a partial write or a 202 would),
    ``close=True`` closes the connection without any response, ``delay`` sleeps after the body
    was read (a slow Blueflood).
    """

    status: int = 500
    body: bytes | str = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    close: bool = False
    process: bool = False


@dataclass
class Request:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    raw: bytes
    body: bytes | None
    peer: tuple[str, int]
    status: int | None = None
    response: bytes = b""
    time: float = field(default_factory=time.monotonic)  # when it arrived


def _error_body(message: str, tenant: str = "") -> bytes:
    return _errors_json([_err(tenant, None, "", None, message)])


def _err(tenant: str, ts: int | None, name: str, source: str | None, message: str) -> dict:
    # Jackson writes ErrorData in field-declaration order, nulls included.
    return {
        "tenantId": tenant,
        "timestamp": ts,
        "metricName": name,
        "source": source,
        "message": message,
    }


def _errors_json(errors: list[dict]) -> bytes:
    return json.dumps({"errors": errors}, separators=(",", ":")).encode()


def _reject_constant(name: str) -> Any:
    raise _ParseError(f"non-standard token {name}")


def _long_field(value: Any, lo: int, hi: int) -> int:
    """Jackson's coercion of a JSON value into a Java long/int field.

    The verified cases of docs/blueflood-api.md section 8, item 4.
    """
    if value is None:
        return 0
    if isinstance(value, bool) or isinstance(value, (dict, list)):
        raise _ParseError("cannot map to a number")
    if isinstance(value, int):
        if not lo <= value <= hi:
            raise _ParseError("numeric value out of range")
        return value
    if isinstance(value, float):
        return int(value)
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return 0
        if re.fullmatch(r"[+-]?[0-9]+", text) is None:
            raise _ParseError("not a valid integer string")
        number = int(text)
        if not lo <= number <= hi:
            raise _ParseError("numeric value out of range")
        return number
    raise _ParseError("unexpected type")


def _name_field(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, (bool, int, float)):
        return json.dumps(value)
    raise _ParseError("cannot map metricName")


def _parse(text: bytes) -> list[dict]:
    """The request body as Jackson 1.x reads it into a list of JSONMetric."""
    try:
        decoded = text.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _ParseError("invalid UTF-8") from exc
    decoder = json.JSONDecoder(parse_constant=_reject_constant)
    stripped = decoded.lstrip(" \t\r\n")
    if not stripped:
        raise _ParseError("empty body")  # EOFException
    try:
        # Jackson reads the first value and ignores whatever follows it.
        top, _end = decoder.raw_decode(stripped)
    except ValueError as exc:
        raise _ParseError(str(exc)) from exc
    if not isinstance(top, list):
        raise _ParseError("top level is not an array")
    metrics = []
    for item in top:
        if item is None:
            raise _ServerError("validate(null)")
        if not isinstance(item, dict) or not set(item) <= ALLOWED_KEYS:
            raise _ParseError("not an object or an unrecognized field")
        unit = item.get("unit")
        if isinstance(unit, (dict, list)):
            raise _ParseError("cannot map unit")
        metrics.append(
            {
                "metricName": _name_field(item.get("metricName")),
                "metricValue": item.get("metricValue"),
                "collectionTime": _long_field(item.get("collectionTime"), INT64_MIN, INT64_MAX),
                "ttlInSeconds": _long_field(item.get("ttlInSeconds"), INT32_MIN, INT32_MAX),
                "unit": None if unit is None else str(unit),
            }
        )
    return metrics


class _Handler(WSGIHandler):
    """Exposes the handler to the app so it can drop the connection without answering."""

    def get_environ(self):  # noqa: ANN201 - gevent's signature
        env = super().get_environ()
        env["fake.handler"] = self
        return env


def _drop_connection(environ: dict) -> None:
    handler = environ["fake.handler"]
    handler.close_connection = True
    try:
        handler.socket.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    # pywsgi treats ECONNRESET as "client went away": no log line, connection closed.
    raise ConnectionResetError(errno.ECONNRESET, "fake: closed without a response")


class _FakeServer:
    """Common start/stop/url and context-manager plumbing of the two fakes."""

    def __init__(self) -> None:
        self._server: WSGIServer | None = None

    def start(self) -> _FakeServer:
        self._server = WSGIServer(
            ("127.0.0.1", 0), self._app, handler_class=_Handler, log=None, error_log="default"
        )
        self._server.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(timeout=1)
            self._server = None

    @property
    def port(self) -> int:
        assert self._server is not None, "not started"
        return self._server.server_port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self):  # noqa: ANN204
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _app(self, environ: dict, start_response: Callable) -> list[bytes]:
        raise NotImplementedError


class FakeBlueflood(_FakeServer):
    """The ingest server of Blueflood (and the FULL-resolution read view, same port).

    Attributes tests may set: ``clock`` (callable returning ms), ``before_ms``, ``after_ms``,
    ``max_content_length``, ``delay`` (seconds to sleep after reading every ingest body),
    ``valid_tokens`` / ``identity`` (auth mode: X-Auth-Token must be valid, else 401).
    """

    def __init__(
        self,
        *,
        clock: Callable[[], int] = wall_ms,
        max_content_length: int = MAX_CONTENT_LENGTH,
        require_auth: bool = False,
        identity: FakeIdentity | None = None,
    ) -> None:
        super().__init__()
        self.clock = clock
        self.before_ms = BEFORE_MS
        self.after_ms = AFTER_MS
        self.max_content_length = max_content_length
        self.delay = 0.0
        self.require_auth = require_auth or identity is not None
        self.identity = identity
        self.valid_tokens: set[str] = set()
        self.requests: list[Request] = []
        self.script: deque[Scripted] = deque()
        self.store: dict[tuple[str, str], dict[int, tuple[Any, int, str | None]]] = {}
        self.received = 0  # datapoints written, duplicates included
        # How often each (tenant, metricName, collectionTime) was written: more than once is a
        # duplicate, and names which one.
        self.writes: Counter[tuple[str, str, int]] = Counter()
        # Per-tenant faults: a POST for a tenant listed here (the URL's, or any item's tenantId
        # on /ingest/multi) is answered with this status, as a hosted Blueflood does for a
        # tenant whose token or quota is bad.
        self.failing_tenants: dict[str, int] = {}
        self.in_flight = 0
        self.max_in_flight = 0

    # ---- test hooks -------------------------------------------------------------------------

    def ingest_url(self, tenant: str) -> str:
        return f"{self.url}/v2.0/{tenant}/ingest"

    def push(self, *answers: Scripted | int) -> None:
        """Queue scripted answers for the next ingest POSTs (an int is a bare status)."""
        for answer in answers:
            self.script.append(Scripted(status=answer) if isinstance(answer, int) else answer)

    @property
    def stored(self) -> int:
        """Distinct (tenant, metric, collectionTime) points in the store."""
        return sum(len(points) for points in self.store.values())

    @property
    def duplicates(self) -> int:
        return self.received - self.stored

    def written_twice(self) -> dict[tuple[str, str, int], int]:
        """The (tenant, name, collectionTime) points written more than once, with their count."""
        return {point: n for point, n in self.writes.items() if n > 1}

    def points(self, tenant: str, name: str) -> dict[int, Any]:
        return {ct: v[0] for ct, v in self.store.get((tenant, name), {}).items()}

    def ingests(self) -> list[Request]:
        return [r for r in self.requests if r.method == "POST" and _INGEST.match(r.path)]

    def connections(self) -> set[tuple[str, int]]:
        """Client (address, port) pairs seen: one per TCP connection."""
        return {r.peer for r in self.requests}

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        """Wait (polling the fake's state) until ``predicate()`` is true, or fail."""
        wait_until(predicate, timeout, "the fake Blueflood's state", poll=0.01)

    # ---- the server -------------------------------------------------------------------------

    def _app(self, environ: dict, start_response: Callable) -> list[bytes]:
        method = environ["REQUEST_METHOD"]
        path = environ.get("PATH_INFO", "")
        headers = {
            k[5:].replace("_", "-").title(): v for k, v in environ.items() if k.startswith("HTTP_")
        }
        if "CONTENT_TYPE" in environ:
            headers["Content-Type"] = environ["CONTENT_TYPE"]
        if environ.get("CONTENT_LENGTH"):
            headers["Content-Length"] = environ["CONTENT_LENGTH"]
        raw = environ["wsgi.input"].read() if method not in ("GET", "HEAD") else b""
        req = Request(
            method=method,
            path=path,
            query=environ.get("QUERY_STRING", ""),
            headers=headers,
            raw=raw,
            body=None,
            peer=(environ.get("REMOTE_ADDR", ""), int(environ.get("REMOTE_PORT") or 0)),
        )
        self.requests.append(req)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            status, body, extra = self._respond(environ, req)
        finally:
            self.in_flight -= 1
        req.status, req.response = status, body
        out_headers = [("Content-Length", str(len(body)))] + list(extra.items())
        start_response(f"{status} {_REASONS.get(status, 'Status')}", out_headers)
        return [body]

    def _respond(self, environ: dict, req: Request) -> tuple[int, bytes, dict[str, str]]:
        method = req.method
        content_type = environ.get("CONTENT_TYPE", "")
        accept = environ.get("HTTP_ACCEPT", "")
        # Media checks run before routing, on every request (QueryStringDecoderAndRouter).
        if method == "POST" and content_type and "application/json" not in content_type.lower():
            return 415, _error_body(f"Unsupported media type for Content-Type: {content_type}"), {}
        if accept and "*/*" not in accept and "application/json" not in accept.lower():
            return 415, _error_body(f"Unsupported media type for Accept: {accept}"), {}

        body = self._decompress(environ.get("HTTP_CONTENT_ENCODING", ""), req.raw)
        if body is None:
            return 400, b"", {"Connection": "close"}  # decoder failure: no body, closed
        req.body = body
        if len(body) > self.max_content_length:
            return 413, b"", {"Connection": "close"}

        if method not in _KNOWN_VERBS:
            return 501, b"", {}
        if req.path == "/v2.0" or req.path == "/v1.0":
            return (200, b"", {}) if method == "GET" else (405, b"", {"Allow": "GET"})
        multi = _INGEST_MULTI.match(req.path)
        ingest = _INGEST.match(req.path) or multi
        if ingest:
            if method != "POST":
                return 405, b"", {"Allow": "POST"}
            if self.require_auth and not self._authorized(environ.get("HTTP_X_AUTH_TOKEN", "")):
                return 401, b'{"unauthorized":{"code":401,"message":"No valid token"}}', {}
            if self.script:
                answer = self.script.popleft()
                if answer.delay:
                    gevent.sleep(answer.delay)
                if answer.close:
                    _drop_connection(environ)
                if answer.process:
                    self._ingest(ingest.group(1), body)
                payload = answer.body.encode() if isinstance(answer.body, str) else answer.body
                return answer.status, payload, dict(answer.headers)
            if self.delay:
                gevent.sleep(self.delay)
            if multi:
                return self._ingest_multi(ingest.group(1), body)
            failing = self.failing_tenants.get(ingest.group(1))
            if failing:
                return failing, _error_body("tenant failing (test fault)", ingest.group(1)), {}
            return self._ingest(ingest.group(1), body)
        views = _VIEWS.match(req.path)
        if views:
            if method != "GET":
                return 405, b"", {"Allow": "GET"}
            return self._view(views.group(1), views.group(2), req.query)
        return 404, b"", {}

    def _authorized(self, token: str) -> bool:
        if token in self.valid_tokens:
            return True
        return self.identity is not None and self.identity.is_valid(token)

    def _decompress(self, encoding: str, raw: bytes) -> bytes | None:
        encoding = encoding.strip().lower()
        if encoding in ("", "identity"):
            return raw
        if encoding not in ("gzip", "x-gzip", "deflate"):
            return raw  # Netty passes unknown encodings through untouched
        # Bounded, so a compression bomb costs at most max_content_length + 1 bytes.
        limit = self.max_content_length + 1
        for wbits in (31,) if "gzip" in encoding else (15, -15):
            try:
                inflater = zlib.decompressobj(wbits)
                return inflater.decompress(raw, limit)
            except zlib.error:
                continue
        return None

    def _ingest(self, tenant: str, body: bytes) -> tuple[int, bytes, dict[str, str]]:
        try:
            metrics = _parse(body)
        except _ParseError:
            return 400, _error_body("Cannot parse content", tenant), {}
        except _ServerError:
            return 500, _error_body("Failed parsing content", tenant), {}
        now = self.clock()
        errors: list[dict] = []
        passed = []
        oob = (
            f"Out of bounds. Cannot be more than {self.before_ms} milliseconds into the past."
            f" Cannot be more than {self.after_ms} milliseconds into the future"
        )
        for m in metrics:
            name, ct, ttl = m["metricName"], m["collectionTime"], m["ttlInSeconds"]
            own = []
            if not name:
                own.append(("metricName", "may not be empty"))
            if ct < now - self.before_ms or ct > now + self.after_ms:
                own.append(("collectionTime", oob))
            if ttl < 1:
                own.append(("ttlInSeconds", "must be between 1 and 2147483647"))
            for source, message in own:
                errors.append(_err(tenant, ct, name or "", source, message))
            if not own:
                passed.append(m)
        valid = []
        for m in passed:
            value = m["metricValue"]
            if value is None:
                continue  # silently dropped, as JSONMetricsContainer does
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                errors.append(
                    _err(
                        tenant,
                        m["collectionTime"],
                        m["metricName"],
                        "metricValue",
                        "metric value must be numeric",
                    )
                )
                continue
            if m["ttlInSeconds"] == INT32_MAX:
                message = (
                    "Invalid data TTL supplied for metric is invalid. Required: 0 < ttl < "
                    f"2147483647, provided: {INT32_MAX}"
                )
                return 400, _error_body(message, tenant), {}
            if isinstance(value, int) and not INT64_MIN <= value <= INT64_MAX:
                try:
                    float(value)
                except OverflowError:
                    return 500, _error_body("Failed parsing content", tenant), {}
            valid.append(m)
        if not valid:
            if errors:
                return 400, _errors_json(errors), {}
            return 400, _error_body("No valid metrics", tenant), {}
        for m in valid:
            series = self.store.setdefault((tenant, m["metricName"]), {})
            series[m["collectionTime"]] = (m["metricValue"], m["ttlInSeconds"], m["unit"])
            self.received += 1
            self.writes[(tenant, m["metricName"], m["collectionTime"])] += 1
        if errors:
            return 207, _errors_json(errors), {}
        return 200, b"", {}

    def _ingest_multi(self, tenant: str, body: bytes) -> tuple[int, bytes, dict[str, str]]:
        """``/ingest/multi``: every item names its own ``tenantId`` (stored under it)."""
        try:
            items = json.loads(body)
        except ValueError:
            return 400, _error_body("Cannot parse content", tenant), {}
        groups: dict[str, list[dict]] = {}
        for item in items if isinstance(items, list) else [None]:
            owner = item.pop("tenantId", None) if isinstance(item, dict) else None
            if not isinstance(owner, str) or not owner:
                return 400, _error_body("Cannot parse content", tenant), {}
            groups.setdefault(owner, []).append(item)
        for owner in groups:
            failing = self.failing_tenants.get(owner)
            if failing:
                return failing, _error_body("tenant failing (test fault)", owner), {}
        statuses, errors = [], []
        for owner, group in groups.items():
            status, answer, _ = self._ingest(owner, json.dumps(group).encode())
            statuses.append(status)
            if answer:
                errors.extend(json.loads(answer).get("errors", []))
        if all(s == 200 for s in statuses):
            return 200, b"", {}
        if any(s in (200, 207) for s in statuses):
            return 207, _errors_json(errors), {}
        return 400, _errors_json(errors), {}

    def multi_ingests(self) -> list[Request]:
        return [r for r in self.requests if r.method == "POST" and _INGEST_MULTI.match(r.path)]

    def _view(self, tenant: str, name: str, query: str) -> tuple[int, bytes, dict[str, str]]:
        params = parse_qs(query)
        try:
            start, end = int(params["from"][0]), int(params["to"][0])
        except (KeyError, ValueError):
            return 400, _error_body("from and to must be longs", tenant), {}
        if end <= start:
            return 400, _error_body("paramter 'to' must be greater than 'from'", tenant), {}
        if "points" not in params and "resolution" not in params:
            return 400, _error_body("Either 'points' or 'resolution' is required.", tenant), {}
        series = self.store.get((tenant, name), {})
        values = [
            {"timestamp": ct, "average": series[ct][0], "numPoints": 1}
            for ct in sorted(series)
            if start <= ct <= end
        ]
        meta = {"count": len(values), "limit": None, "marker": None, "next_href": None}
        return 200, json.dumps({"unit": "unknown", "values": values, "metadata": meta}).encode(), {}


class FakeIdentity(_FakeServer):
    """Rackspace Identity / Keystone v2.0 ``POST /v2.0/tokens``.

    ``users`` maps a user name to ``{"apiKey": ..., "password": ...}``. Hooks: ``token_ttl``
    (seconds), ``clock`` (seconds), ``fail`` (a queue: an int status, or ``"timeout"`` to hang
    ``hang_seconds``), ``failing`` (a status or ``"timeout"`` for every request until reset),
    ``delay`` (seconds before each answer),
    ``revoke(token)``, ``expire_all()``.
    """

    def __init__(
        self,
        users: dict[str, dict[str, str]] | None = None,
        *,
        token_ttl: float = 86400.0,
        tenant: str = "123456",
        clock: Callable[[], float] = time.time,
        success_status: int = 200,
    ) -> None:
        super().__init__()
        self.users = users if users is not None else {"alice": {"apiKey": "k3y", "password": "pw"}}
        self.token_ttl = token_ttl
        self.tenant = tenant
        self.clock = clock
        self.success_status = success_status
        self.tokens: dict[str, float] = {}  # id -> expiry (clock seconds)
        self.requests: list[Request] = []
        self.fail: deque[int | str] = deque()
        self.failing: int | str | None = None
        self.hang_seconds = 30.0
        self.delay = 0.0  # seconds before every answer (a slow identity service)
        self.issued = 0

    @property
    def tokens_url(self) -> str:
        return f"{self.url}/v2.0/tokens"

    def is_valid(self, token: str) -> bool:
        expires = self.tokens.get(token)
        return expires is not None and self.clock() < expires

    def revoke(self, token: str | None = None) -> None:
        """Revoke one token, or every token."""
        if token is None:
            self.tokens.clear()
        else:
            self.tokens.pop(token, None)

    def expire_all(self) -> None:
        now = self.clock()
        for token in self.tokens:
            self.tokens[token] = now

    def _app(self, environ: dict, start_response: Callable) -> list[bytes]:
        status, body = self._respond(environ)
        start_response(
            f"{status} {_REASONS.get(status, 'Status')}",
            [("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
        )
        return [body]

    def _respond(self, environ: dict) -> tuple[int, bytes]:
        method, path = environ["REQUEST_METHOD"], environ.get("PATH_INFO", "")
        raw = environ["wsgi.input"].read() if method == "POST" else b""
        headers = {
            k[5:].replace("_", "-").title(): v for k, v in environ.items() if k.startswith("HTTP_")
        }
        self.requests.append(
            Request(method, path, environ.get("QUERY_STRING", ""), headers, raw, raw, ("", 0))
        )
        if path != "/v2.0/tokens":
            return 404, b""
        if method != "POST":
            return 405, b""
        if self.delay:
            gevent.sleep(self.delay)
        failure = self.fail.popleft() if self.fail else self.failing
        if failure == "timeout":
            gevent.sleep(self.hang_seconds)
            failure = 503
        if failure is not None:
            return int(failure), b'{"serviceUnavailable":{"code":503,"message":"fake outage"}}'
        try:
            auth = json.loads(raw)["auth"]
            if "RAX-KSKEY:apiKeyCredentials" in auth:
                cred = auth["RAX-KSKEY:apiKeyCredentials"]
                user, secret, kind = cred["username"], cred["apiKey"], "apiKey"
            else:
                cred = auth["passwordCredentials"]
                user, secret, kind = cred["username"], cred["password"], "password"
        except (ValueError, KeyError, TypeError):
            return 400, b'{"badRequest":{"code":400,"message":"Invalid json request body"}}'
        if user not in self.users or self.users[user].get(kind) != secret:
            return 401, (
                b'{"unauthorized":{"code":401,"message":"Username or api key is invalid."}}'
            )
        token = uuid.uuid4().hex
        expires_at = self.clock() + self.token_ttl
        self.tokens[token] = expires_at
        self.issued += 1
        expires = datetime.datetime.fromtimestamp(expires_at, datetime.timezone.utc)
        access = {
            "token": {
                "id": token,
                "expires": expires.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
                "tenant": {"id": self.tenant, "name": self.tenant},
            },
            "user": {"id": "1", "name": user},
            "serviceCatalog": [],
        }
        return self.success_status, json.dumps({"access": access}).encode()


_REASONS = {
    200: "OK",
    202: "Accepted",
    203: "Non-Authoritative Information",
    207: "Multi-Status",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    413: "Request Entity Too Large",
    415: "Unsupported Media Type",
    429: "Too Many Requests",
    500: "Internal Server Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


@pytest.fixture
def fake_blueflood() -> Iterator[FakeBlueflood]:
    """A started FakeBlueflood (no auth); stopped after the test."""
    with FakeBlueflood() as server:
        yield server


@pytest.fixture
def fake_identity() -> Iterator[FakeIdentity]:
    """A started FakeIdentity with user ``alice``, API key ``k3y``, password ``pw``."""
    with FakeIdentity() as server:
        yield server
