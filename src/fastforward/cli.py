"""The `fastforward` command: run the daemon, or `fastforward send ...` / `fastforward decode ...`.

Options are parsed and validated before gevent patches the standard library; the patch
happens before anything imports requests, urllib3 or ssl (the service modules), so it is
complete (gevent warns, and our test suite fails, when ssl was imported first).

With ``--workers N`` (N > 1) this process becomes the supervisor (`workers.supervisor`) and runs
N copies of this command as workers; a worker is recognised by its private environment
variable and runs the normal service on the sockets the supervisor bound.

Exit codes: 0 clean stop, 1 unexpected error, 2 bad options or config, 3 startup failure,
4 stopped but some datapoints were neither delivered nor spooled (the log states how many).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence

from . import __version__
from .config import ConfigError, UsageError, load
from .errors import (
    EXIT_ERROR,
    EXIT_OK,
    EXIT_STARTUP,
    EXIT_UNDELIVERED,
    EXIT_USAGE,
    StartupError,
)
from .manpage import help_text
from .workers import resolve_workers, worker_spec  # plain standard library: before the patch

__all__ = ["EXIT_ERROR", "EXIT_OK", "EXIT_STARTUP", "EXIT_UNDELIVERED", "EXIT_USAGE", "main"]


def _fail(message: str, code: int, warnings: Sequence[str] = (), hint: bool = True) -> int:
    print(f"fastforward: {message}", file=sys.stderr)
    for warning in warnings:  # e.g. the misspelt name that left a required option unset
        print(f"fastforward: warning: {warning}", file=sys.stderr)
    if code == EXIT_USAGE and hint:
        print("Try 'fastforward --help' for the options.", file=sys.stderr)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `fastforward` console script; returns the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "send":
        from .send import main as send_main  # noqa: PLC0415 - subcommand: plain sockets only

        return send_main(args[1:])
    if args and args[0] == "rules":
        from .rulescmd import main as rules_main  # noqa: PLC0415 - subcommand, loaded on use

        return rules_main(args[1:])
    if args and args[0] == "decode":
        from .decode import main as decode_main  # noqa: PLC0415 - subcommand, loaded on use

        return decode_main(args[1:])

    try:
        loaded = load(args)
    except UsageError as exc:
        return _fail(f"error: {exc}", EXIT_USAGE, getattr(exc, "warnings", ()))
    except ConfigError as exc:
        return _fail(str(exc), EXIT_USAGE, getattr(exc, "warnings", ()))
    if loaded.help:
        sys.stdout.write(help_text())
        return EXIT_OK
    if loaded.version:
        from .codec import IMPLEMENTATION  # noqa: PLC0415 - only --version needs the codec

        print(f"fastforward {__version__} (codec: {IMPLEMENTATION})")
        return EXIT_OK
    config = loaded.config
    try:
        spec = worker_spec()  # set when a supervisor started us as one of its workers
    except ValueError as exc:
        return _fail(str(exc), EXIT_USAGE)
    workers = 1 if spec is not None else resolve_workers(config.workers)

    from gevent import monkey  # noqa: PLC0415 - patching must precede the service imports

    monkey.patch_all()

    from . import logsetup  # noqa: PLC0415 - logging.handlers imports socket: after the patch

    try:
        where = logsetup.setup(config.logfile, config.log_level)
    except OSError as exc:
        return _fail(f"cannot open the log: {exc}", EXIT_STARTUP)
    log = logging.getLogger("fastforward")
    if spec is not None:
        from .workers.logs import tag_log_lines  # noqa: PLC0415 - logging.handlers: after the patch

        tag_log_lines(spec.id)
    else:  # the supervisor said it already
        for warning in loaded.warnings:
            log.warning("%s", warning)
        if loaded.config_file:
            log.info("config file: %s", os.path.abspath(loaded.config_file))

    from .service import Service  # noqa: PLC0415 - imports requests/ssl: after the patch
    from .workers.supervisor import Supervisor  # noqa: PLC0415 - the same
    from .workers.worker import run_worker  # noqa: PLC0415 - the same

    try:
        if spec is not None:
            return run_worker(config, spec)
        if workers > 1:
            return Supervisor(config, args, workers).run()
        service = Service(config)
        return service.run()
    except StartupError as exc:
        if where != "stderr":
            log.error("%s", exc)
        return _fail(str(exc), EXIT_STARTUP)
    except ConfigError as exc:  # a file an option names (--rules): its one line says it all
        if where != "stderr":
            log.error("%s", exc)
        return _fail(str(exc), EXIT_USAGE, hint=False)
    except Exception:
        log.exception("fastforward failed")
        return EXIT_ERROR


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
