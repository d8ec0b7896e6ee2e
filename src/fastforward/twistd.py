"""Compatibility with `twistd blueflood-forward` command lines.

The original ran as a twistd plugin, so scripts call it as
``twistd [twistd options] blueflood-forward [plugin options]``. This module knows twistd's side
of that: the ``blueflood-forward`` word, the twistd options that mean something to us (-n, -l,
--pidfile), those accepted and ignored with a warning (--logger, --syslog, --umask, --reactor,
--rundir, --uid, ...), and where a short flag keeps twistd's meaning (-u uid, -p profile,
-d rundir before the tap name; ours after it). Nothing here fails: twistd options never stop a
start.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Collection
from typing import Any

from .options import Kind, Option

__all__ = [
    "OPTIONS",
    "TAPNAME",
    "add_other_switches",
    "drop_ignored",
    "other_switch_warning",
    "split_command",
]

TAPNAME = "blueflood-forward"
# argparse destination of the switches below; `other_switch_warning` recognises it.
_DEST = "twistd:"


def _compat(
    name: str, kind: Kind, help: str, short: str | None = None, metavar: str | None = None
) -> Option:
    return Option(
        name=name,
        kind=kind,
        default=False if kind == "bool" else "",
        help=help,
        section="compatibility",
        short=short,
        metavar=metavar,
        env=False,
        field=False,
    )


# twistd switches listed in --help and the README: accepted as options of ours.
OPTIONS: tuple[Option, ...] = (
    _compat(
        "nodaemon", "bool", "Accepted for twistd compatibility; fastforward never daemonizes.", "n"
    ),
    _compat(
        "logger",
        "str",
        "twistd log observer; ignored with a warning (use -l, LOG_DIR, --log-level).",
        metavar="FQPN",
    ),
    _compat("syslog", "bool", "twistd syslog switch; ignored with a warning."),
    _compat("umask", "str", "twistd umask; ignored with a warning.", metavar="UMASK"),
    _compat(
        "reactor", "str", "twistd reactor; ignored with a warning (gevent is used).", "r", "NAME"
    ),
)
_SILENT = ("nodaemon",)  # what fastforward does anyway: no warning
_WARNED = ("logger", "syslog", "umask", "reactor")

# Other twistd switches seen in scripts: accepted anywhere, warned about, never used.
_VALUE_SWITCHES = (
    "--rundir", "-d", "--chroot", "--uid", "-u", "--gid", "-g", "--prefix", "--profile", "-p",
    "--profiler", "--python", "-y", "--file", "-f", "--source", "-s",
)  # fmt: skip
_FLAG_SWITCHES = (
    "--no_save", "-o", "--originalname", "--debug", "-b", "--spew", "--euid", "--savestats",
    "--help-reactors",
)  # fmt: skip


def _unsupported(flag: str) -> str:
    return f"twistd option {flag} is not supported by fastforward; ignored"


def split_command(
    argv: list[str], warnings: list[str], takes_value: Callable[[str], bool]
) -> list[str]:
    """The plugin options of a `twistd ... blueflood-forward ...` command line, with the twistd
    options that matter to us (-n, -l, --pidfile, --logger, ...) moved in front of them.

    Before the tap name, -u is a uid and -p a profile file (twistd's meaning), so that part is
    read here; `takes_value(flag)` says whether one of our flags consumes the next word.
    Without the tap name, ``argv`` is returned as it is.
    """
    if TAPNAME not in argv:
        return argv
    idx = argv.index(TAPNAME)
    head, tail = argv[:idx], argv[idx + 1 :]
    if head and head[0] == "twistd":
        head = head[1:]
    keep: list[str] = []
    i = 0
    while i < len(head):
        arg = head[i]
        name, eq, _inline = arg.partition("=")
        if name in _VALUE_SWITCHES:
            if not eq:
                i += 1
            warnings.append(_unsupported(name))
        elif name in _FLAG_SWITCHES:
            warnings.append(_unsupported(name))
        else:
            keep.append(arg)
            if not eq and takes_value(name) and i + 1 < len(head):
                keep.append(head[i + 1])
                i += 1
        i += 1
    return keep + tail


def add_other_switches(parser: argparse.ArgumentParser, ours: Collection[str]) -> None:
    """Accept the other twistd switches anywhere, except the short flags that are ours
    (-u, -p, -b: after the tap name, and without it, they mean --user, --metric_prefix, ...)."""
    for group, takes_value in ((_VALUE_SWITCHES, True), (_FLAG_SWITCHES, False)):
        for flag in group:
            if flag in ours:
                continue
            kw: dict[str, Any] = {"dest": _DEST + flag.lstrip("-"), "default": argparse.SUPPRESS}
            if takes_value:
                kw["metavar"] = "VALUE"
            else:
                kw.update(action="store_const", const=True)
            parser.add_argument(flag, **kw)


def other_switch_warning(dest: str) -> str | None:
    """The warning for a parsed argparse destination made by `add_other_switches`, else None."""
    if not dest.startswith(_DEST):
        return None
    flag = dest[len(_DEST) :]
    return _unsupported(f"-{flag}" if len(flag) == 1 else f"--{flag}")


def drop_ignored(values: dict[str, Any], warnings: list[str]) -> None:
    """Remove the compatibility options from merged values, warning about those that were set
    and that fastforward does not honour."""
    for name in _SILENT:
        values.pop(name, None)
    for name in _WARNED:
        value = values.pop(name, None)
        if value:
            warnings.append(f"twistd option --{name} {value!r} is not supported; ignored")
