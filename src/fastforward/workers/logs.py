"""One log file, several processes: workers tag their lines and never rotate; the supervisor
rotates for everyone (several rotating processes would rotate the same file over and over)
and the workers reopen the file once it has been moved aside.

Imported after the gevent patch (``logging.handlers`` imports socket).
"""

from __future__ import annotations

import logging
import logging.handlers

from ..logsetup import FORMAT

__all__ = ["rotate_if_due", "tag_log_lines"]

log = logging.getLogger("fastforward.supervisor")


def tag_log_lines(worker_id: int) -> None:
    """Put ``[worker N]`` into every line the root handlers write, and swap a rotating file
    handler for one that follows the supervisor's rotation."""
    fmt = FORMAT.replace("[%(name)s]", f"[worker {worker_id}] [%(name)s]")
    if fmt == FORMAT:
        fmt = f"[worker {worker_id}] {FORMAT}"
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, logging.handlers.RotatingFileHandler):
            watched = logging.handlers.WatchedFileHandler(handler.baseFilename, encoding="utf-8")
            watched.setLevel(handler.level)
            root.removeHandler(handler)
            handler.close()
            root.addHandler(watched)
            handler = watched
        handler.setFormatter(logging.Formatter(fmt))


def rotate_if_due() -> None:
    """Rotate the root logger's rotating files that reached their size (the supervisor)."""
    probe = logging.makeLogRecord({"msg": ""})
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.handlers.RotatingFileHandler):
            handler.acquire()
            try:
                if handler.shouldRollover(probe):
                    handler.doRollover()
            except OSError as exc:
                log.error("log rotation failed: %s", exc)
            finally:
                handler.release()
