"""Disk spool: request bodies that could not be delivered yet, one durable file per body.

Store and durability
--------------------
Each body is one file named ``<time_ns>-<pid>-<seq>.ffspool`` (zero-padded, so names sort
oldest first across restarts and across worker processes sharing the directory), in the format
of `spoolfile`: a one-line header (datapoints, length, CRC, tenant) and the exact JSON bytes
that would be POSTed.

The tenant is the one the body was received for; a replay POSTs the body to that tenant,
whatever ``--tenant`` the replaying process has, so a restart with another tenant (or, with
multi-tenant routing, one directory holding many tenants) never moves data between tenants.
Files of the first format (``FFSPOOL1``, no tenant) are still read: they are attributed to the
tenant of the process that opens the spool, with a WARNING that says so. That is what they
meant when written (one directory served one configuration, and the format predates any
release that could change tenants across a restart); moving them aside instead would strand
their data on the upgrade.

What the file does not say is which Blueflood the tenant lives on. The directory says it:
``blueflood-destination`` holds the ``--blueflood`` URL of the processes using it. A process
with another URL refuses to start on a directory that still holds spool files (or is in use
by a running process, which keeps a shared ``flock`` on that file), so one cluster's data
is never replayed into another. An empty, unused directory is simply rebound to the new URL.

A body is written to ``.<pid>-<seq>.tmp`` (held under ``flock`` while it is written), fsync'd,
renamed to its final name, and then the directory is fsync'd; ``put`` returns only after that.
So a file with a final name is complete or, after a power cut on a filesystem that reorders
writes, detectably broken (length or CRC mismatch). Broken files, and files whose body is not a
JSON array of objects, are moved into ``<dir>/corrupt/`` with a WARNING and the
``spool_corrupt_files`` counter; they never block the rest. Leftover temp files (a crash
between create and rename) are removed when the spool is opened.

Workers sharing one directory claim a file with a non-blocking ``flock`` before reading it, and
keep the lock until ``ack`` (the file is deleted) or ``release`` (kept for later). The kernel
drops the lock when a process dies, so a file claimed by a crashed worker is replayable at once,
and two workers never hold the same file. Requires a local filesystem (``flock`` over NFS is not
reliable) and a ``Spool`` opened after ``fork``. Deleting an acked file is not fsync'd: after a
power cut an already delivered body may be sent again, which Blueflood absorbs (it upserts the
same metric, timestamp and value).

When a body is read for replay, datapoints older than ``now - max_past_ms`` are removed (they
would only earn a 400; the rule is Blueflood's, in `bodies`) and counted as
``datapoints_dropped{reason=expired_in_spool}``; the trimmed body is written back atomically,
so a later replay does not count them again. An entry with nothing left is deleted. The I/O
here is blocking and not run in a thread: the spool is the rare path, and an fsync is
milliseconds.

Guarantee (README-ready)
------------------------
With ``--spool-dir`` set, a body counts as spooled only once its file and the directory were
fsync'd, and a spool file is deleted only after Blueflood accepted its body (200, 202, or a 207
whose rejected datapoints are logged and counted).

- **Blueflood down for an hour (or a day):** every datapoint is kept, first in memory (up to
  ``--max-buffer-bytes``), then on disk (up to ``--spool-max-bytes``); once Blueflood answers
  again the spool is replayed oldest first, one body at a time beside live traffic. Datapoints
  that have meanwhile fallen out of Blueflood's window (``--max-past``, 3 days) are dropped and
  counted (``expired_in_spool``), since Blueflood would reject them. When the spool is full too,
  fastforward logs an ERROR, ``/health`` answers 503, and it stops reading from its TCP clients
  (backpressure), so data waits in the clients' own queues; nothing is dropped silently (UDP
  cannot be paused: datagrams are then dropped and counted as ``udp_backpressure``).
- **SIGTERM:** bodies are sent for up to ``--drain-timeout`` seconds; whatever is still
  undelivered is written to the spool and replayed at the next start.
- **SIGKILL or a crash:** everything already in the spool survives. What is lost is at most what
  was in memory and not yet on disk: ``--max-buffer-bytes`` of JSON (plus what the last read of
  each connection decoded to, as the cap is checked between reads), and what the kernel had
  received on the sockets but fastforward had not read. With Blueflood down and the cap
  reached, the overflow is on disk already (tests/integration/test_restart_spool.py).
- **Power cut:** every spool file whose write had completed survives (file and directory were
  fsync'd); a write in progress at that moment may be lost, and a torn file is detected and
  moved to ``corrupt/``. A body delivered just before the cut may be sent once more.
"""

from __future__ import annotations

import bisect
import errno
import fcntl
import itertools
import logging
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .bodies import BadBody, Datapoint, drop_expired, encode_body, oldest_accepted_ms, parse_body
from .spoolfile import (
    HEADER_MAX,
    SpoolCorrupt,
    check_body,
    check_size,
    check_tenant,
    encode_header,
    parse_header,
)
from .stats import Stats

__all__ = [
    "CORRUPT_DIR",
    "DESTINATION_FILE",
    "SUFFIX",
    "Spool",
    "SpoolCorrupt",
    "SpoolEntry",
    "SpoolRefused",
    "check_tenant",
]

log = logging.getLogger(__name__)

SUFFIX = ".ffspool"
TEMP_SUFFIX = ".tmp"
CORRUPT_DIR = "corrupt"
DESTINATION_FILE = "blueflood-destination"
PROBE_PREFIX = ".probe-"
_NAME_RE = re.compile(r"^\d{20}-\d+-\d+\.ffspool$")
# A temp file that is empty may belong to a writer between open() and flock(); only remove
# such a file once it is clearly stale.
_EMPTY_TEMP_GRACE_S = 60.0
# Without a visible change in the directory, look for files of other workers this often.
_RESCAN_S = 1.0
# A directory that stopped being writable fails every put: say so this often, not per body.
_WRITE_ERROR_EVERY_S = 60.0

# Process-wide, so two Spool objects in one process (tests) never make the same name.
_seq = itertools.count()


class SpoolRefused(OSError):
    """The directory cannot be used by this process (another Blueflood's data, unwritable)."""


@dataclass(eq=False)
class SpoolEntry:
    """One claimed spool file. Give it back with ``Spool.ack`` or ``Spool.release``."""

    body: bytes
    datapoints: int
    path: str
    tenant: str = ""  # where the body belongs
    _fd: int = field(repr=False, default=-1)
    _size: int = field(repr=False, default=0)


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    except OSError as exc:
        # A few filesystems cannot fsync a directory; the file itself was fsync'd already.
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP):
            raise
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class Spool:
    """Bodies on disk, oldest first; shared safely by several processes on one directory."""

    def __init__(
        self,
        directory: str,
        max_bytes: int,
        stats: Stats,
        *,
        max_past_ms: int = 259_200_000,
        clock: Callable[[], float] = time.time,
        tenant: str = "",
        destination: str | None = None,
    ) -> None:
        """``tenant``: of bodies put without one, and of first-format files; ``destination``:
        the Blueflood URL the directory is bound to (None: not checked, for tests)."""
        check_tenant(tenant)
        self.directory = os.path.abspath(directory)
        self.tenant = tenant
        self.max_bytes = max_bytes
        self.max_past_ms = max_past_ms
        self._stats = stats
        self._clock = clock
        self._last_ns = 0
        self._names: list[str] = []  # sorted, oldest first
        self._sizes: dict[str, int] = {}
        self._bytes = 0
        self._claimed: dict[str, SpoolEntry] = {}
        self._tenants: dict[str, str] = {}  # file name -> tenant, learnt from headers
        self._bad: set[str] = set()
        self._scan_mtime = -1
        self._scan_at = 0.0
        self._full_refusals = 0  # > 0 during a "spool full" episode
        self._destination_fd = -1
        self._write_failures = 0  # in the current run of failed writes
        self._write_failure_logged = -_WRITE_ERROR_EVERY_S
        os.makedirs(self.directory, exist_ok=True)
        self._probe()
        if destination is not None:
            self._bind(destination)
        try:
            self._open_scan()
        except BaseException:
            self.close()
            raise

    # -- public API ---------------------------------------------------------------------------

    @property
    def disk_bytes(self) -> int:
        """Bytes of spool files known to this process (its own and other workers')."""
        return self._bytes

    @property
    def files(self) -> int:
        return len(self._names)

    @property
    def full(self) -> bool:
        """True from a refused ``put`` (no room) until a ``put`` succeeds again."""
        return self._full_refusals > 0

    def put(self, body: bytes, datapoints: int, tenant: str | None = None) -> bool:
        """Store one body of ``tenant`` (default: the spool's) durably; False when the spool is
        full or the disk write failed."""
        header = encode_header(body, datapoints, self.tenant if tenant is None else tenant)
        size = len(header) + len(body)
        if self._bytes + size > self.max_bytes:
            self._rescan()  # other workers may have freed space meanwhile
        if self._bytes + size > self.max_bytes:
            if not self._full_refusals:
                log.error(
                    "spool full: %d of %d bytes in %s used, refusing bodies (backpressure on)",
                    self._bytes,
                    self.max_bytes,
                    self.directory,
                )
            self._full_refusals += 1
            return False
        try:
            name = self._write_new(header + body)
        except OSError as exc:
            self._write_failed(exc)
            return False
        self._writable_again()
        self._add(name, size)
        self._stats.incr("spool_written_bodies")
        self._publish()
        return True

    def _write_failed(self, exc: OSError) -> None:
        self._write_failures += 1
        now = time.monotonic()
        if now - self._write_failure_logged >= _WRITE_ERROR_EVERY_S:
            self._write_failure_logged = now
            log.error(
                "spool write to %s failed: %s (%d failed writes so far; bodies stay in "
                "memory, a stop that cannot write them counts them as lost)",
                self.directory,
                exc,
                self._write_failures,
            )

    def _writable_again(self) -> None:
        """A put succeeded: end the episodes of failed writes and of a full spool."""
        if self._write_failures:
            log.warning(
                "spool %s writable again after %d failed writes",
                self.directory,
                self._write_failures,
            )
            self._write_failures = 0
            self._write_failure_logged = -_WRITE_ERROR_EVERY_S
        if self._full_refusals:
            log.warning(
                "spool accepting bodies again after refusing %d while full", self._full_refusals
            )
            self._full_refusals = 0

    def oldest(self, wanted: Callable[[str], bool] | None = None) -> SpoolEntry | None:
        """Claim and return the oldest replayable entry, or None when there is none.

        ``wanted(tenant)``: only an entry of a tenant it accepts (a forwarder of several tenants
        replays each tenant's files on its own, so a failing tenant never holds up another's
        replay). A file's tenant is read from its header once and remembered.
        """
        self._rescan()
        entry = self._claim_first(wanted)
        if entry is None and self._rescan(force=True):
            entry = self._claim_first(wanted)
        self._publish()
        return entry

    def ack(self, entry: SpoolEntry) -> None:
        """Blueflood accepted the body: delete the file."""
        self._finish(entry, delete=True)
        self._stats.incr("spool_replayed_bodies")
        self._publish()

    def release(self, entry: SpoolEntry) -> None:
        """Delivery failed: keep the file for a later replay."""
        self._finish(entry, delete=False)
        self._publish()

    def close(self) -> None:
        """Release every entry still claimed (their files stay), and the directory."""
        for entry in list(self._claimed.values()):
            self._finish(entry, delete=False)
        if self._destination_fd >= 0:
            os.close(self._destination_fd)  # drops the shared lock: "in use" ends here
            self._destination_fd = -1

    # -- opening ------------------------------------------------------------------------------

    def _probe(self) -> None:
        """Create, write, fsync and remove a file, so an unwritable directory fails the start
        instead of every later ``put``."""
        path = os.path.join(self.directory, f"{PROBE_PREFIX}{os.getpid()}{TEMP_SUFFIX}")
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)  # a worker opening beside us leaves it alone
                _write_all(fd, b"probe\n")
                os.fsync(fd)
                os.unlink(path)
            finally:
                os.close(fd)
            _fsync_dir(self.directory)
        except OSError as exc:
            _unlink_quiet(path)
            raise SpoolRefused(
                exc.errno or errno.EIO, f"cannot write a file there: {exc.strerror or exc}"
            ) from None

    def _bind(self, destination: str) -> None:
        """Bind the directory to one Blueflood URL (see the module text); SpoolRefused if it
        holds or serves another one's data. The shared lock is held until ``close``."""
        path = os.path.join(self.directory, DESTINATION_FILE)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            alone = _try_lock(fd)
            if not alone:
                fcntl.flock(fd, fcntl.LOCK_SH)
            bound = _read_text(fd)
            if bound != destination:
                if not alone:
                    raise self._refusal(bound, destination, "is in use by a fastforward")
                pending = [n for n in self._listdir() if _NAME_RE.match(n)]
                if bound and pending:
                    raise self._refusal(bound, destination, f"holds {len(pending)} files")
                if bound:
                    log.warning(
                        "spool %s: empty, rebound from Blueflood %s to %s",
                        self.directory,
                        bound,
                        destination,
                    )
                _replace_text(fd, destination)
                _fsync_dir(self.directory)
            if alone:
                # Downgrading is not atomic: another process may have rebound it meanwhile.
                fcntl.flock(fd, fcntl.LOCK_SH)
                now = _read_text(fd)
                if now != destination:
                    raise self._refusal(now, destination, "is in use by a fastforward")
        except BaseException:
            os.close(fd)
            raise
        self._destination_fd = fd

    def _refusal(self, bound: str, destination: str, what: str) -> SpoolRefused:
        return SpoolRefused(
            errno.EEXIST,
            f"{what} for Blueflood {bound}, not {destination} (see its {DESTINATION_FILE}); "
            f"use another --spool-dir, or run with -b {bound} until it is empty",
        )

    # -- writing ------------------------------------------------------------------------------

    def _new_name(self) -> tuple[str, str]:
        now = max(time.time_ns(), self._last_ns + 1)  # monotonic even if the clock steps back
        self._last_ns = now
        seq = next(_seq)
        pid = os.getpid()  # not cached: a Spool used after fork must not reuse its parent's names
        return f"{now:020d}-{pid}-{seq:08d}{SUFFIX}", f".{pid}-{seq}{TEMP_SUFFIX}"

    def _write_temp(self, temp: str, data: bytes) -> int:
        """Write and fsync a temp file; return its fd, still locked."""
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            _write_all(fd, data)
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            _unlink_quiet(temp)
            raise
        return fd

    def _write_new(self, data: bytes) -> str:
        name, tname = self._new_name()
        temp = os.path.join(self.directory, tname)
        final = os.path.join(self.directory, name)
        fd = self._write_temp(temp, data)
        try:
            os.rename(temp, final)
            _fsync_dir(self.directory)
        except BaseException:
            # put() reports failure, so the caller keeps the body: leave no copy behind.
            _unlink_quiet(temp)
            _unlink_quiet(final)
            raise
        finally:
            os.close(fd)
        return name

    # -- the index ----------------------------------------------------------------------------

    def _add(self, name: str, size: int) -> None:
        if name in self._sizes:
            return
        bisect.insort(self._names, name)
        self._sizes[name] = size
        self._bytes += size

    def _forget(self, name: str) -> None:
        self._tenants.pop(name, None)
        size = self._sizes.pop(name, None)
        if size is None:
            return
        self._bytes -= size
        i = bisect.bisect_left(self._names, name)
        if i < len(self._names) and self._names[i] == name:
            del self._names[i]

    def _publish(self) -> None:
        self._stats.set("buffered_bytes", self._bytes, place="disk")
        self._stats.set("spool_files", len(self._names))

    def _listdir(self) -> list[str]:
        try:
            return os.listdir(self.directory)
        except OSError as exc:
            log.error("spool directory %s unreadable: %s", self.directory, exc)
            return []

    def _open_scan(self) -> None:
        self._first_format = 0
        for name in self._listdir():
            path = os.path.join(self.directory, name)
            if name.endswith(TEMP_SUFFIX):
                self._remove_stale_temp(path)
            elif name.endswith(SUFFIX):
                if not _NAME_RE.match(name):
                    self._move_aside(path, "unexpected file name")
                    continue
                self._check_on_open(name)
        self._rescan(force=True)
        log.info("spool %s: %d files, %d bytes", self.directory, self.files, self.disk_bytes)
        if self._first_format:
            log.warning(
                "spool %s: %d files of the first format name no tenant; they are replayed to "
                "tenant %r (this process's --tenant)",
                self.directory,
                self._first_format,
                self.tenant,
            )

    def _remove_stale_temp(self, path: str) -> None:
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            return
        try:
            if not _try_lock(fd):
                return  # a live writer holds it
            st = os.fstat(fd)
            if st.st_size == 0 and time.time() - st.st_mtime < _EMPTY_TEMP_GRACE_S:
                return
            os.unlink(path)
            log.warning("spool: removed temp file %s left by an interrupted write", path)
        except OSError as exc:
            log.error("spool: cannot remove temp file %s: %s", path, exc)
        finally:
            os.close(fd)

    def _check_on_open(self, name: str) -> None:
        """Cheap check (header and length) so torn files are moved aside before replay."""
        path = os.path.join(self.directory, name)
        fd = self._open_locked(path)
        if fd < 0:
            return
        try:
            h = parse_header(os.pread(fd, HEADER_MAX, 0))
            check_size(h, os.fstat(fd).st_size)
            if h.tenant is None:
                self._first_format += 1
        except SpoolCorrupt as exc:
            self._move_aside(path, str(exc))
        except OSError as exc:
            log.error("spool: cannot check %s: %s", path, exc)
        finally:
            os.close(fd)

    def _rescan(self, force: bool = False) -> bool:
        """Reconcile the index with the directory; True when anything changed."""
        try:
            mtime = os.stat(self.directory).st_mtime_ns
        except OSError:
            mtime = -1
        now = time.monotonic()
        if not force and mtime == self._scan_mtime and now - self._scan_at < _RESCAN_S:
            return False
        self._scan_mtime, self._scan_at = mtime, now
        present = {n for n in self._listdir() if _NAME_RE.match(n) and n not in self._bad}
        changed = False
        for name in [n for n in self._names if n not in present and n not in self._claimed]:
            self._forget(name)
            changed = True
        for name in present.difference(self._sizes):
            try:
                size = os.stat(os.path.join(self.directory, name)).st_size
            except FileNotFoundError:
                continue  # acked by another worker meanwhile
            except OSError as exc:
                log.error("spool: cannot stat %s: %s", name, exc)
                continue
            self._add(name, size)
            changed = True
        if changed:
            self._publish()
        return changed

    # -- claiming and replay ------------------------------------------------------------------

    def _open_locked(self, path: str) -> int:
        """An fd holding the flock on the file now at ``path``, or -1 (gone, or held)."""
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return -1
        except OSError as exc:
            log.error("spool: cannot open %s: %s", path, exc)
            return -1
        try:
            if _try_lock(fd):
                # The file may have been deleted or replaced between open() and flock().
                st = os.fstat(fd)
                cur = os.stat(path)
                if st.st_nlink > 0 and (cur.st_dev, cur.st_ino) == (st.st_dev, st.st_ino):
                    return fd
        except OSError:
            pass
        os.close(fd)
        return -1

    def _claim_first(self, wanted: Callable[[str], bool] | None = None) -> SpoolEntry | None:
        i = 0
        while i < len(self._names):
            name = self._names[i]
            if name in self._claimed or not self._may_be_wanted(name, wanted):
                i += 1
                continue
            path = os.path.join(self.directory, name)
            fd = self._open_locked(path)
            if fd < 0:
                if not os.path.exists(path):
                    self._forget(name)  # acked or moved by another worker
                else:
                    i += 1  # claimed by another worker
                continue
            recorded = None if wanted is None else self._file_tenant(name, fd)
            if recorded is not None and wanted is not None and not wanted(recorded):
                # (an unreadable header gives None: _read below moves the file aside)
                os.close(fd)
                i += 1
                continue
            entry = self._read(name, path, fd)
            if entry is not None:
                self._claimed[name] = entry
                return entry
            # corrupt or emptied by the expiry filter: the file is gone, look at the next one
            os.close(fd)
            self._forget(name)
        return None

    def _may_be_wanted(self, name: str, wanted: Callable[[str], bool] | None) -> bool:
        """False when ``name`` is known to hold an unwanted tenant's body (no read needed)."""
        known = self._tenants.get(name)
        return wanted is None or known is None or wanted(known)

    def _file_tenant(self, name: str, fd: int) -> str | None:
        """The tenant in a file's header, remembered; None when the header is unreadable
        (`_read` then moves the file aside)."""
        known = self._tenants.get(name)
        if known is not None:
            return known
        try:
            recorded = parse_header(os.pread(fd, HEADER_MAX, 0)).tenant
        except (SpoolCorrupt, OSError):
            return None
        self._tenants[name] = known = recorded or self.tenant
        return known

    def _read(self, name: str, path: str, fd: int) -> SpoolEntry | None:
        try:
            h = parse_header(os.pread(fd, HEADER_MAX, 0))
            size = os.fstat(fd).st_size
            check_size(h, size)  # before reading: a bogus header never reads a huge file
            body = _read_exact(fd, h.size, h.length)
            check_body(h, body)
            points = parse_body(body)
        except (SpoolCorrupt, BadBody) as exc:
            self._move_aside(path, str(exc))
            return None
        except OSError as exc:
            log.error("spool: cannot read %s: %s", path, exc)
            return None
        tenant = h.tenant or self.tenant  # none recorded (first format, or a test's spool)
        entry = SpoolEntry(body, h.datapoints, path, tenant, fd, size)
        kept = self._unexpired(points)
        if len(kept) == len(points):
            return entry
        expired = len(points) - len(kept)
        self._stats.incr("datapoints_dropped", expired, reason="expired_in_spool")
        log.warning(
            "spool: dropped %d datapoints older than Blueflood's window from %s", expired, name
        )
        if not kept:
            _unlink_quiet(path)
            return None
        return self._rewrite(entry, encode_body(kept), len(kept))

    def _unexpired(self, points: list[Datapoint]) -> list[Datapoint]:
        if self.max_past_ms < 0:  # expiry off
            return points
        return drop_expired(points, oldest_accepted_ms(self._clock(), self.max_past_ms))

    def _rewrite(self, entry: SpoolEntry, body: bytes, datapoints: int) -> SpoolEntry | None:
        """Replace a claimed file by its trimmed body, atomically and still claimed."""
        data = encode_header(body, datapoints, entry.tenant) + body
        _name, tname = self._new_name()
        temp = os.path.join(self.directory, tname)
        try:
            # The new inode is locked before it gets the name, so no other worker can claim it.
            fd = self._write_temp(temp, data)
            try:
                os.rename(temp, entry.path)
                _fsync_dir(self.directory)
            except BaseException:
                os.close(fd)
                _unlink_quiet(temp)
                raise
        except OSError as exc:
            # Send the trimmed body anyway; the file keeps the expired points until acked.
            log.error("spool: cannot rewrite %s: %s", entry.path, exc)
            return SpoolEntry(body, datapoints, entry.path, entry.tenant, entry._fd, entry._size)
        os.close(entry._fd)  # the old inode is gone; drops its lock
        name = os.path.basename(entry.path)
        self._bytes += len(data) - self._sizes.get(name, 0)
        self._sizes[name] = len(data)
        return SpoolEntry(body, datapoints, entry.path, entry.tenant, fd, len(data))

    def _finish(self, entry: SpoolEntry, delete: bool) -> None:
        name = os.path.basename(entry.path)
        if self._claimed.get(name) is not entry:
            raise ValueError(f"spool entry {entry.path} is not claimed by this spool")
        del self._claimed[name]
        try:
            if delete:
                _unlink_quiet(entry.path)  # still locked, so nobody else has it open for replay
                self._forget(name)
        finally:
            os.close(entry._fd)  # releases the flock

    def _move_aside(self, path: str, reason: str) -> None:
        corrupt = os.path.join(self.directory, CORRUPT_DIR)
        target = os.path.join(corrupt, os.path.basename(path))
        try:
            os.makedirs(corrupt, exist_ok=True)
            os.rename(path, target)
        except OSError as exc:
            log.error("spool: corrupt file %s (%s) could not be moved aside: %s", path, reason, exc)
            self._bad.add(os.path.basename(path))  # skip it from now on instead of rereading it
        else:
            log.warning("spool: corrupt file %s (%s) moved to %s", path, reason, target)
        self._stats.incr("spool_corrupt_files")
        self._forget(os.path.basename(path))


def _read_exact(fd: int, offset: int, length: int) -> bytes:
    chunks = []
    while length > 0:
        chunk = os.pread(fd, length, offset)
        if not chunk:
            break
        chunks.append(chunk)
        offset += len(chunk)
        length -= len(chunk)
    return b"".join(chunks)


def _read_text(fd: int) -> str:
    return _read_exact(fd, 0, 4096).decode("utf-8", "replace").strip()


def _replace_text(fd: int, text: str) -> None:
    os.ftruncate(fd, 0)
    os.pwrite(fd, text.encode() + b"\n", 0)
    os.fsync(fd)


def _unlink_quiet(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.error("spool: cannot delete %s: %s", path, exc)
