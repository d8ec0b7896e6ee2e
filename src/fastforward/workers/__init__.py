"""``--workers N``: one supervisor process and N worker processes sharing the listening sockets.

Modules: `spec` (``--workers`` and the worker spec; plain standard library, imported before
the gevent patch), `channel` (the reports and their framing), `worker` (the worker side),
`supervisor` (the arbiter), `balancer` and `loads` (connection spreading), `logs` (one log
file, several processes). Only `spec` is imported by this package itself: the others need the
gevent patch first.

Design, and why
---------------
- **Pre-bound shared sockets, not SO_REUSEPORT.** The supervisor binds every listener once
  (TCP, TCP6, UNIX, UDP, and the TCP socket of a TLS listener; the TLS wrapping happens in the
  worker) and hands the same sockets to every worker; the kernel gives each new connection (or
  datagram) to whichever worker accepts (reads) first. This works for UNIX sockets and UDP as
  well, a kernel-chosen port (``tcp:0``) is the same for everyone, and a worker that dies
  leaves no orphaned accept queue behind: with SO_REUSEPORT each socket has its own queue and
  the connections waiting in a dead worker's queue are reset. The supervisor keeps its copies
  open, so a restarted worker gets the very same sockets and nothing is ever re-bound.
- **Balancing.** Idle workers race for each connection on a shared socket, and the one that
  is awake tends to win a whole burst (a relay opening its four connections at once would
  land on one worker). So each worker publishes its connection count in a small shared
  memory block, and a worker holding more connections than the least loaded one leaves a new
  connection ``DEFER_SECONDS`` (5 ms) to the others before taking it itself (`balancer`).
  SO_REUSEPORT would spread connections by a hash of their addresses: no better for a handful
  of long-lived carbon connections, and not available for UNIX sockets.
- **Workers are fresh interpreters (fork + exec), not bare forks.** A worker is
  ``python -m fastforward <the same arguments>`` with the sockets passed as inherited file
  descriptors (``pass_fds``) and a private environment variable naming them. So every worker,
  the first ones and every restart alike, starts exactly like a one-process fastforward: gevent
  patches the standard library before anything imports requests/urllib3/ssl, and there is no
  gevent hub, thread, lock or connection pool inherited from a parent. The supervisor itself
  can then use gevent freely (its admin endpoint, child watchers) without making later forks
  unsafe. The price is a fresh import per worker start (a fraction of a second) and no
  copy-on-write sharing of the interpreter's memory (a few tens of MB per worker).
- **A private control channel per worker** (`channel`: a UNIX socketpair, newline-delimited JSON):
  the worker sends its stats samples and its health every second (and once more after it
  drained); the supervisor sends ``stop``. Stopping through the channel instead of re-sending
  SIGTERM means a worker that also received the signal directly (``kill`` of the process
  group, systemd's control-group stop, Ctrl-C in a terminal) sees one stop request, not two;
  a second signal would make it exit at once without draining. End of file on the channel
  (the supervisor died, even by SIGKILL) also makes the worker drain and exit: no orphans.
- **Self-metrics** on the supervisor's ``/metrics`` are the workers' samples merged
  (`stats.merge_samples`): counters and per-worker gauges are summed; gauges describing a shared
  resource (the spool directory: ``buffered_bytes{place="disk"}``, ``spool_files``) and the
  0/1 ``backpressure_active`` take the maximum; ``uptime_seconds`` is the supervisor's. The
  last counters of a worker that exited are kept, so sums never go backwards after a restart.
  ``/health`` is 200 only while every worker runs, reports, and reports itself healthy.
  ``/debug/senders`` and ``/debug/rejects`` merge the running workers' tables
  (`attribution.merge_debug`).
  With ``--self-metrics-prefix``, each worker forwards its own numbers under
  ``<prefix>.worker<N>`` (the same names from several processes would overwrite each other).
- **Restarts:** a worker that exits while the supervisor is not stopping is restarted after a
  backoff that doubles on each death within ``STABLE_SECONDS`` of its start (0.5 s up to
  30 s), so a crash loop does not spin; each death is logged with its exit status. A worker
  that fails during the initial start (bad certificate, unusable spool directory...) stops
  the whole start with its exit code instead.
- **Stopping:** SIGTERM/SIGINT: the supervisor closes its copies of the listeners (so once the
  workers have drained their accept queues, new connections are refused rather than queued
  for nobody), asks every worker to stop, waits up to ``--drain-timeout`` plus
  ``DRAIN_MARGIN`` seconds, then SIGKILLs the stragglers. Exit 0 when every worker drained
  (exited 0). A second signal kills the workers and exits 1 at once; one that follows the
  first within ``SIGNAL_DEBOUNCE`` is taken as the same request delivered twice (to the
  supervisor and to its process group, as ``timeout`` or systemd do).
- **Spool:** each worker opens its own `Spool` on the shared ``--spool-dir`` (file names carry
  the pid, replay claims files with ``flock``), so whichever worker starts replays what any
  earlier process left there.
- The pidfile holds the supervisor's pid; workers' log lines carry ``[worker N]``. Every
  process appends to the same log; with ``LOG_DIR`` rotation, only the supervisor rotates
  (checking the size every ``ROTATE_CHECK_SECONDS``) and workers reopen the moved file.

``--workers 1`` (the default) runs no supervisor at all; ``auto`` is the number of CPUs this
process may run on.
"""

from __future__ import annotations

from .spec import WORKER_ENV, WorkerSpec, resolve_workers, worker_spec

__all__ = ["WORKER_ENV", "WorkerSpec", "resolve_workers", "worker_spec"]
