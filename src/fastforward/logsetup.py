"""Logging: ``-l/--logfile`` (twistd style), the original docker image's ``LOG_DIR`` variables.

- ``-l -`` or no logfile: stderr.
- ``-l FILE``: append to FILE; reopened when it is moved away (logrotate) and on SIGHUP
  (see `reopen`), so an external rotation never kills the process or loses its log.
- no ``-l`` but ``LOG_DIR`` set: ``$LOG_DIR/carbon_forwarder.log``, rotated every
  ``LOG_ROTATE_LENGTH`` bytes (default 100,000,000), ``MAX_LOG_ROTATED_FILES`` kept (default 10),
  as the original's ``forwarder_log_observer`` did.

`logging.handlers` is imported inside `setup` because it imports `socket`; the CLI calls this
after gevent has patched the standard library.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping

__all__ = ["LOG_FILE_NAME", "reopen", "setup"]

LOG_FILE_NAME = "carbon_forwarder.log"
FORMAT = "%(asctime)s [%(name)s] %(levelname)s: %(message)s"
_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}


def _env_int(environ: Mapping[str, str], name: str, default: int) -> int:
    raw = environ.get(name, "")
    try:
        return int(raw) if raw.strip() else default
    except ValueError:
        logging.getLogger("fastforward").warning(
            "environment %s=%r is not an integer; using %d", name, raw, default
        )
        return default


def setup(logfile: str = "", level: str = "info", environ: Mapping[str, str] | None = None) -> str:
    """Configure the root logger; return a description of where the log goes."""
    import logging.handlers  # noqa: PLC0415 - imports socket: only after gevent patched it

    env = os.environ if environ is None else environ
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
        old.close()
    handler: logging.Handler
    where: str
    log_dir = env.get("LOG_DIR", "")
    if logfile and logfile != "-":
        handler = logging.handlers.WatchedFileHandler(logfile, encoding="utf-8")
        where = logfile
    elif not logfile and log_dir:
        path = os.path.join(log_dir, LOG_FILE_NAME)
        os.makedirs(log_dir, exist_ok=True)
        handler = logging.handlers.RotatingFileHandler(
            path,
            maxBytes=_env_int(env, "LOG_ROTATE_LENGTH", 100_000_000),
            backupCount=_env_int(env, "MAX_LOG_ROTATED_FILES", 10),
            encoding="utf-8",
        )
        where = path
    else:
        handler = logging.StreamHandler(sys.stderr)
        where = "stderr"
    handler.setFormatter(logging.Formatter(FORMAT))
    root.addHandler(handler)
    root.setLevel(_LEVELS.get(level.lower(), logging.INFO))
    # urllib3 logs every new connection at DEBUG; keep it quiet unless asked for.
    logging.getLogger("urllib3").setLevel(max(root.level, logging.INFO))
    logging.captureWarnings(True)
    return where


def reopen() -> None:
    """Close the root logger's files so the next record opens them again (SIGHUP)."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.acquire()
            try:
                handler.close()  # FileHandler reopens its file on the next emit
            finally:
                handler.release()
