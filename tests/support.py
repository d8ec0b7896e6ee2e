"""What every kind of test shares: waiting on a condition with a deadline, a port for a program
that cannot report one it bound itself, and the sample routing rules of the rules tests.

fastforward and the fake Blueflood bind port 0 and tell the kernel's choice (fastforward logs
``listening: ...`` and ``admin endpoint on http://...``; see ``Process`` in
``tests/integration/conftest.py``). `free_port` is only for what cannot: third-party programs
whose configuration must name a port before they start (carbon-relay, carbon-c-relay, haproxy,
the bench sink), and an address where nothing listens (a refused connection). Between the
probe and their bind another process may take the port; that race is why nothing else uses it.
"""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Callable

import gevent

# fastforward's log line for each listener it bound (port 0 included): kind, protocol, host, port.
LISTENING = re.compile(r"listening: (\S+) (\S+) \('([^']*)', (\d+)")
# Its log line for the admin endpoint (/health, /metrics) it bound: host, port.
ADMIN = re.compile(r"admin endpoint on http://(\S+):(\d+)/")


def wait_until(
    predicate: Callable[[], object],
    timeout: float = 15.0,
    what: str = "condition",
    poll: float = 0.02,
) -> None:
    """Poll ``predicate`` (yielding to other greenlets) until it is true; AssertionError naming
    ``what`` after ``timeout`` seconds. A predicate may raise to fail at once."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        gevent.sleep(poll)


def free_port(kind: int = socket.SOCK_STREAM, host: str = "127.0.0.1") -> int:
    """A port on ``host`` that was free a moment ago (see the module docstring for when)."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


# A routing rules file with one rule of each kind (drop by prefix, regex rewrite to a tenant with
# a TTL, tag match), for `fastforward rules` (test_rules_cli) and the Router (test_rules_router).
ROUTING_RULES = r"""
[[rule]]
match = "prefix:junk."
drop = true

[[rule]]
match = "regex:^db\\.([^.]+)\\.(.*)$"
rewrite = "databases.\\1.\\2"
tenant = "222"
ttl = 604800

[[rule]]
match = "tag:env=prod"
tenant = "prod"
"""
