"""The words around the options: the `fastforward --help` manual and the README's option tables.

Both are generated from `config.OPTIONS` (flags, default, environment variable, help text,
section), so they say what the parser does. The prose around them (description, examples, exit
statuses, signals) is written here once. Regenerate the README tables after changing an option:

    python -m fastforward.manpage --update-readme README.md

(``--readme-tables`` prints them; with no argument, the module prints the --help page.)
tests/test_cli.py fails while the README tables differ from what this module generates.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from collections.abc import Sequence

from .config import INI_SECTION, OPTIONS
from .options import SECTIONS, Option

__all__ = [
    "EXIT_STATUS_LINES",
    "README_BEGIN",
    "README_END",
    "help_text",
    "readme_tables",
    "replace_readme_tables",
]

# The EXIT STATUS section of --help; the README's "Exit status" table says the same.
EXIT_STATUS_LINES = (
    "    0  stopped by SIGTERM/SIGINT with everything delivered or spooled",
    "    1  an unexpected error, or a second SIGTERM/SIGINT (exit at once, no drain)",
    "    2  bad options or configuration (the message names the option and the value)",
    "    3  a resource unusable at start (endpoint in use, certificate, spool directory, log)",
    "    4  stopped, but some datapoints could be neither delivered nor spooled (the count is",
    "       on stderr and in the log)",
)

_HEAD = (
    "NAME",
    "    fastforward - receive Graphite carbon metrics and forward them to Blueflood",
    "",
    "SYNOPSIS",
    "    fastforward [OPTIONS]",
    "    fastforward send NAME VALUE [TIMESTAMP] [NAME VALUE ...] [-e ENDPOINT] [--line]",
    "    fastforward decode [ARGS]   (see fastforward decode --help)",
    "",
    "DESCRIPTION",
)
_DESCRIPTION = (
    "A drop-in replacement for `twistd blueflood-forward` (blueflood-carbon-forwarder). It "
    "listens for carbon pickle frames (what carbon-relay sends) and plaintext lines over "
    "TCP, UDP, UNIX sockets or TLS, turns them into Blueflood JSON and POSTs them to "
    "URL/v2.0/TENANT/ingest every --interval seconds, or as soon as a body is full. Failed "
    "POSTs are retried; when the memory cap is reached, reading pauses (TCP backpressure) "
    "instead of dropping. Every option below can also be set in the environment "
    "(FASTFORWARD_<NAME>) and in the INI file given with -c."
)
# A paragraph after the options of a section.
_SECTION_NOTES = {
    "logging": "Environment of the original docker image: LOG_DIR (log to "
    "$LOG_DIR/carbon_forwarder.log when -l is not given), LOG_ROTATE_LENGTH (bytes "
    "before rotation, default 100000000), MAX_LOG_ROTATED_FILES (default 10), "
    "TWISTED_LOG_LEVEL (debug, info, warn, error, critical).",
    "compatibility": "The twistd layout works as well: `fastforward -n -l - blueflood-forward "
    "-e ...` (options before blueflood-forward are twistd's; -u, -p, -d there are ignored "
    "with a warning). Other twistd options (--rundir, --uid, --prefix, --profile, "
    "...) get a warning, never an error.",
}
_OTHER = (
    ("-h, --help", "Show this page and exit."),
    ("-V, --version", "Print the version and the codec implementation (cython or python)."),
)
_PRECEDENCE = (
    "Command line, then environment (FASTFORWARD_<NAME>), then the config file (-c), then "
    "the defaults. Note: the original twistd plugin let the config file override the "
    "command line; fastforward does not.",
    f"Config file: an INI file with a [{INI_SECTION}] section; keys are the long option "
    "names (endpoint, interval, blueflood, tenant, metric_prefix, ttl, user, key, auth_url, "
    "limit, overwrite_collection_timestamp, ...), with _ or -. Several endpoints are "
    "separated by commas.",
)
_EXAMPLES = (
    "    Try it without Blueflood (bodies go to stdout), on loopback only (tcp:2004 alone",
    "    listens on every interface), then send a datapoint:",
    "        fastforward --dry-run -i 1 -e tcp:port=2004:interface=127.0.0.1",
    "        fastforward send my.metric 42",
    "",
    "    Forward carbon-relay's pickle stream to Blueflood:",
    "        fastforward -e tcp:2004 -b http://blueflood:19000 -t 123456",
    "",
    "    Pickle on 2004, plaintext on TCP and UDP 2003, with Rackspace Identity:",
    "        FASTFORWARD_KEY=... fastforward -t 123456 -u me --line-endpoint tcp:2003 \\",
    "            --line-endpoint udp:2003 -b https://ingest.example:19000",
    "",
    "    TLS ingest:",
    "        fastforward -e ssl:2004:privateKey=key.pem:certKey=cert.pem -t 123456",
)
_SIGNALS = (
    "    SIGTERM, SIGINT: stop accepting, read what is buffered in open connections, deliver",
    "    everything within --drain-timeout, spool the rest (with --spool-dir), then exit. A",
    "    second signal exits at once (status 1).",
    "    SIGHUP: reopen the log file (-l), e.g. after logrotate moved it; never stops",
    "    fastforward. With --workers, it is passed on to every worker.",
)


def _in_section(section: str) -> list[Option]:
    return [opt for opt in OPTIONS if opt.section == section]


def _entry(opt: Option, wrap: textwrap.TextWrapper) -> list[str]:
    """One option in --help: its flags, its help, its default and variable."""
    flags = ", ".join(opt.flags)
    if opt.kind == "bool":
        flags += " [BOOL]"
    elif opt.metavar:
        flags += f" {opt.metavar}"
    tail = f"default: {opt.shown_default}"
    if opt.env:
        tail += f"    env: {opt.env_var}"
    return ["    " + flags, *wrap.wrap(opt.help), "        " + tail]


def help_text(width: int = 100) -> str:
    """The man-page style text of `fastforward --help`."""
    wrap = textwrap.TextWrapper(
        width=width, initial_indent="        ", subsequent_indent="        "
    )
    out = [*_HEAD]
    out += textwrap.wrap(_DESCRIPTION, width, initial_indent="    ", subsequent_indent="    ")
    for section, title in SECTIONS:
        out += ["", title.upper()]
        for opt in _in_section(section):
            out += _entry(opt, wrap)
        if section in _SECTION_NOTES:
            out += wrap.wrap(_SECTION_NOTES[section])
    out += ["", "OTHER"]
    for flags, text in _OTHER:
        out += ["    " + flags, *wrap.wrap(text)]
    out += ["", "PRECEDENCE"]
    for paragraph in _PRECEDENCE:
        out += wrap.wrap(paragraph)
    out += ["", "EXAMPLES", *_EXAMPLES]
    out += ["", "EXIT STATUS", *EXIT_STATUS_LINES]
    out += ["", "SIGNALS", *_SIGNALS]
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------------------------
# README


# The generated tables sit between these lines of README.md (HTML comments: not rendered).
README_BEGIN = "<!-- generated by `python -m fastforward.manpage --update-readme README.md` -->"
README_END = "<!-- end of the generated option tables -->"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def readme_tables() -> str:
    """The README's option tables: one Markdown table per section, as --help groups them."""
    out: list[str] = []
    for section, title in SECTIONS:
        if out:
            out.append("")
        out += [f"**{title}**", "", "| option | default | environment | what it does |"]
        out.append("|---|---|---|---|")
        for opt in _in_section(section):
            flags = ", ".join(f"`{f}`" for f in opt.flags)
            env = f"`{opt.env_var}`" if opt.env else ""
            cells = (flags, _cell(opt.shown_default), env, _cell(opt.help))
            out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def replace_readme_tables(readme: str) -> str:
    """``readme`` with the text between `README_BEGIN` and `README_END` regenerated."""
    try:
        start = readme.index(README_BEGIN + "\n") + len(README_BEGIN) + 1
        end = readme.index(README_END, start)
    except ValueError:
        raise ValueError(
            f"README: the lines {README_BEGIN!r}, {README_END!r} are missing"
        ) from None
    return readme[:start] + "\n" + readme_tables() + "\n" + readme[end:]


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m fastforward.manpage`: print the manual or the tables, or update a README."""
    parser = argparse.ArgumentParser(
        prog="python -m fastforward.manpage",
        description="Print `fastforward --help`, or the README's option tables.",
    )
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--readme-tables", action="store_true", help="print the README tables")
    what.add_argument("--update-readme", metavar="README", help="rewrite the tables in place")
    args = parser.parse_args(argv)
    if args.update_readme:
        with open(args.update_readme, encoding="utf-8") as fh:
            text = fh.read()
        updated = replace_readme_tables(text)
        if updated != text:
            with open(args.update_readme, "w", encoding="utf-8") as fh:
                fh.write(updated)
        print(f"{args.update_readme}: option tables {'updated' if updated != text else 'current'}")
        return 0
    sys.stdout.write(readme_tables() if args.readme_tables else help_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
