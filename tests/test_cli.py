"""The command line as a user meets it: --help, --version, errors, `send` argument parsing."""

from __future__ import annotations

import pickle
import re
import socket
import struct
from pathlib import Path

import pytest

from fastforward import cli, manpage, send
from fastforward.config import OPTIONS
from fastforward.manpage import help_text

README = Path(__file__).resolve().parent.parent / "README.md"


def test_help_is_a_man_page(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for opt in OPTIONS:
        for flag in opt.flags:
            assert flag in out, flag
        if opt.env:
            assert opt.env_var in out, opt.env_var
    for heading in ("DESCRIPTION", "LISTENING", "BLUEFLOOD", "AUTHENTICATION", "LIMITS",
                    "RELIABILITY", "LOGGING", "COMPATIBILITY", "PRECEDENCE", "EXAMPLES",
                    "EXIT STATUS"):  # fmt: skip
        assert heading in out
    for env in ("LOG_DIR", "LOG_ROTATE_LENGTH", "MAX_LOG_ROTATED_FILES", "TWISTED_LOG_LEVEL"):
        assert env in out
    assert "default: tcp:2004" in out
    assert "config file override the command line" in out
    assert "fastforward send" in out


def _help_section(title: str) -> str:
    text = help_text()
    start = text.index(f"\n{title}\n") + len(title) + 2
    end = text.find("\n\n", start)
    return text[start : end if end >= 0 else None]


def test_help_prints_defaults_as_users_write_them() -> None:
    defaults = re.findall(r"default: (\S+)", help_text())
    assert "86400" in defaults and "1048576" in defaults
    assert not [d for d in defaults if re.fullmatch(r"\d+(_\d+)+", d)], defaults


def test_help_lists_sighup_under_signals() -> None:
    signals = _help_section("SIGNALS")
    assert "SIGTERM, SIGINT:" in signals
    assert re.search(r"SIGHUP: reopen the log file.*never\s+stops\s+fastforward", signals, re.S)


def _exit_codes_in_help() -> dict[int, str]:
    codes: dict[int, str] = {}
    for line in _help_section("EXIT STATUS").splitlines():
        if m := re.match(r"    (\d)  (.*)", line):
            code = int(m[1])
            codes[code] = m[2]
        else:
            codes[code] += " " + line.strip()
    return codes


def _exit_codes_in_readme() -> dict[int, str]:
    text = README.read_text()
    table = text[text.index("| exit status | meaning |") :].split("\n\n", 1)[0]
    return {int(m[1]): m[2] for m in re.finditer(r"^\| (\d) \| (.*) \|$", table, re.M)}


def test_exit_status_matches_the_readme_and_the_code() -> None:
    in_help = _exit_codes_in_help()
    assert in_help == _exit_codes_in_readme()
    assert sorted(in_help) == [0, 1, 2, 3, 4]
    # Every exit code the command defines is documented (EXIT_OK, EXIT_USAGE, ...).
    defined = {v for k, v in vars(cli).items() if k.startswith("EXIT_") and isinstance(v, int)}
    assert defined <= set(in_help) and {0, 1, 2, 3} <= defined


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--version"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("fastforward ")
    assert "(codec: cython)" in out or "(codec: python)" in out


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--bogus"], "unrecognized arguments: --bogus"),
        (["-t", "t", "--ttl", "0"], "--ttl 0"),
        (["-e", "nonsense:1", "-t", "t"], "'nonsense:1'"),
        ([], "--tenant is required"),
    ],
)
def test_bad_options_exit_2_with_one_clear_line(
    argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert needle in err.splitlines()[0]
    assert "Traceback" not in err


def test_send_positional_parsing() -> None:
    pts = send.parse_positional(["a.b", "1", "c.d", "2.5", "1700000000", "e", "-3"], now=100)
    assert pts == [("a.b", (100, 1)), ("c.d", (1700000000, 2.5)), ("e", (100, -3))]
    with pytest.raises(ValueError, match="VALUE is missing"):
        send.parse_positional(["a.b"], now=1)
    with pytest.raises(ValueError, match="not a number"):
        send.parse_positional(["a.b", "x"], now=1)


def test_send_frames_are_carbon_pickle() -> None:
    pts = [(f"m{i}", (1, i)) for i in range(1200)]
    data = send.pickle_frames(pts)
    frames = []
    while data:
        (n,) = struct.unpack("!L", data[:4])
        frames.append(pickle.loads(data[4 : 4 + n]))
        data = data[4 + n :]
    assert [len(f) for f in frames] == [500, 500, 200]
    assert frames[0][0] == ("m0", (1, 0))


def test_send_bad_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["send", "a.b", "notanumber"]) == 2
    assert "not a number" in capsys.readouterr().err


def test_send_connection_refused(unused_port: int, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["send", "-e", f"tcp:{unused_port}", "a.b", "1"]) == 3
    assert "cannot send" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "said"),
    [(["a.b", "1"], "sent 1 datapoint to"), (["a.b", "1", "c", "2"], "sent 2 datapoints to")],
)
def test_send_says_what_it_sent(
    argv: list[str], said: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        # The connection waits in the listen backlog; the frames fit in the socket buffers.
        assert cli.main(["send", "-e", f"tcp:port={port}:interface=127.0.0.1", *argv]) == 0
        conn, _ = server.accept()
        with conn:
            conn.settimeout(10)
            data = b""
            while chunk := conn.recv(65536):
                data += chunk
    (n,) = struct.unpack("!L", data[:4])
    assert len(pickle.loads(data[4 : 4 + n])) == len(argv) // 2
    out = capsys.readouterr().out
    assert out == f"{said} tcp:127.0.0.1:{port} (pickle protocol 2)\n"


def _readme_block(text: str) -> str:
    start = text.index(manpage.README_BEGIN + "\n") + len(manpage.README_BEGIN) + 1
    return text[start : text.index(manpage.README_END, start)].strip("\n") + "\n"


def test_readme_option_tables_are_what_the_options_generate() -> None:
    # After changing an option: python -m fastforward.manpage --update-readme README.md
    assert _readme_block(README.read_text()) == manpage.readme_tables()


def test_readme_tables_list_every_option_with_its_default_and_variable() -> None:
    tables = manpage.readme_tables()
    for opt in OPTIONS:
        flags = ", ".join(f"`{f}`" for f in opt.flags)
        env = f"`{opt.env_var}`" if opt.env else ""
        assert f"| {flags} | {opt.shown_default} | {env} | {opt.help} |" in tables


def test_manpage_module_rewrites_stale_readme_tables(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stale = README.read_text().replace("| `--ttl` | 86400 |", "| `--ttl` | 3600 |")
    path = tmp_path / "README.md"
    path.write_text(stale)
    assert manpage.main(["--update-readme", str(path)]) == 0
    assert "updated" in capsys.readouterr().out
    assert path.read_text() == README.read_text()
    assert manpage.main(["--readme-tables"]) == 0
    assert capsys.readouterr().out == manpage.readme_tables()
    assert manpage.main([]) == 0
    assert capsys.readouterr().out == help_text()
