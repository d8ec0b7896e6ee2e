"""What ``--workers`` means before anything else runs: how many processes, and whether this
process is one of a supervisor's workers (its spec, passed in a private environment variable).

Plain standard library, no gevent: `cli.main` imports this before gevent patches the standard
library, to decide what this process becomes.
"""

from __future__ import annotations

import json
import os
from collections.abc import MutableMapping
from dataclasses import asdict, dataclass, field

__all__ = ["WORKER_ENV", "WorkerSpec", "resolve_workers", "worker_spec"]

WORKER_ENV = "_FASTFORWARD_WORKER"  # private: set by the supervisor for its workers only


@dataclass(frozen=True)
class WorkerSpec:
    """What a supervisor hands one worker: inherited file descriptors and its position."""

    id: int  # 1..N, as in "[worker N]" and the /metrics ``worker`` label
    channel: int  # its end of the control channel (a UNIX socket)
    sockets: dict[str, int] = field(default_factory=dict)  # listener endpoint text -> fd
    loads: int | None = None  # the shared connection-count table (see `balancer`), if any
    count: int = 0  # the number of workers (the table's length)

    def to_env(self) -> str:
        return json.dumps(asdict(self))


def worker_spec(environ: MutableMapping[str, str] | None = None) -> WorkerSpec | None:
    """The spec the supervisor gave this process (removed from the environment, so nothing
    the worker runs inherits it), or None; `ValueError` when it is not a spec."""
    env = os.environ if environ is None else environ
    raw = env.pop(WORKER_ENV, None)
    if raw is None:
        return None
    spec = json.loads(raw)  # JSONDecodeError is a ValueError
    if not isinstance(spec, dict) or not isinstance(spec.get("sockets"), dict):
        raise ValueError(f"{WORKER_ENV}: not a worker spec")
    try:
        return WorkerSpec(
            id=int(spec["id"]),
            channel=int(spec["channel"]),
            sockets={str(text): int(fd) for text, fd in spec["sockets"].items()},
            loads=None if spec.get("loads") is None else int(spec["loads"]),
            count=int(spec.get("count", 0)),
        )
    except (KeyError, TypeError) as exc:
        raise ValueError(f"{WORKER_ENV}: not a worker spec ({exc})") from None


def resolve_workers(value: str) -> int:
    """The number of worker processes for a validated ``--workers`` value."""
    if value == "auto":
        try:
            return max(1, len(os.sched_getaffinity(0)))  # cores we may run on (cgroups, taskset)
        except (AttributeError, OSError):
            return max(1, os.cpu_count() or 1)
    return max(1, int(value))
