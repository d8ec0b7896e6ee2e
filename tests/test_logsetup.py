"""Where the log goes (``-l``, ``LOG_DIR``, stderr), its level, and reopening it on SIGHUP."""

from __future__ import annotations

import logging
import logging.handlers
from collections.abc import Iterator
from pathlib import Path

import pytest

from fastforward import logsetup

log = logging.getLogger("fastforward.test")


@pytest.fixture(autouse=True)
def restore_root_logger() -> Iterator[None]:
    """`setup` replaces the root logger's handlers: give pytest's back afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    urllib3_level = logging.getLogger("urllib3").level
    yield
    for h in list(root.handlers):
        root.removeHandler(h)
        h.close()
    for h in handlers:
        root.addHandler(h)
    root.setLevel(level)
    logging.getLogger("urllib3").setLevel(urllib3_level)
    logging.captureWarnings(False)


def test_logfile_gets_formatted_records(tmp_path: Path) -> None:
    path = tmp_path / "ff.log"
    assert logsetup.setup(str(path), "info", environ={}) == str(path)
    log.info("hello %s", "there")
    log.debug("not at info")
    text = path.read_text()
    assert "[fastforward.test] INFO: hello there" in text
    assert "not at info" not in text


def test_a_logfile_moved_away_is_recreated(tmp_path: Path) -> None:
    # logrotate without copytruncate: the next record goes to a new file at the old path.
    path = tmp_path / "ff.log"
    logsetup.setup(str(path), environ={})
    log.info("before")
    path.rename(tmp_path / "ff.log.1")
    log.info("after")
    assert "after" in path.read_text()
    assert "after" not in (tmp_path / "ff.log.1").read_text()


def test_reopen_switches_a_rotating_log_to_the_new_file(tmp_path: Path) -> None:
    # The LOG_DIR handler does not watch its file: only reopen() (SIGHUP) makes it follow.
    logsetup.setup("", environ={"LOG_DIR": str(tmp_path)})
    path = tmp_path / logsetup.LOG_FILE_NAME
    log.info("before")
    path.rename(tmp_path / "moved.log")
    logsetup.reopen()
    log.info("after")
    assert "after" in path.read_text()
    assert "after" not in (tmp_path / "moved.log").read_text()


def test_log_dir_rotates_by_size_and_keeps_the_count(tmp_path: Path) -> None:
    log_dir = tmp_path / "logs"  # created when missing
    env = {"LOG_DIR": str(log_dir), "LOG_ROTATE_LENGTH": "200", "MAX_LOG_ROTATED_FILES": "2"}
    where = logsetup.setup("", environ=env)
    assert where == str(log_dir / logsetup.LOG_FILE_NAME)
    for i in range(30):
        log.info("line %d of a log that must rotate", i)
    names = sorted(p.name for p in log_dir.iterdir())
    assert names == [logsetup.LOG_FILE_NAME, *(f"{logsetup.LOG_FILE_NAME}.{n}" for n in (1, 2))]
    assert all(p.stat().st_size <= 200 for p in log_dir.iterdir())


def test_a_bad_number_in_the_environment_is_warned_about_and_defaulted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    env = {"LOG_DIR": str(tmp_path), "LOG_ROTATE_LENGTH": "lots"}
    logsetup.setup("", environ=env)
    handler = logging.getLogger().handlers[0]
    assert isinstance(handler, logging.handlers.RotatingFileHandler)
    assert handler.maxBytes == 100_000_000
    # Said before the log file exists: on stderr.
    err = capsys.readouterr().err
    assert "environment LOG_ROTATE_LENGTH='lots' is not an integer; using 100000000" in err


def test_an_explicit_logfile_wins_over_log_dir(tmp_path: Path) -> None:
    path = tmp_path / "explicit.log"
    assert logsetup.setup(str(path), environ={"LOG_DIR": str(tmp_path / "dir")}) == str(path)
    assert not (tmp_path / "dir").exists()


@pytest.mark.parametrize("logfile", ["", "-"])
def test_no_logfile_or_dash_is_stderr(
    logfile: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert logsetup.setup(logfile, environ={}) == "stderr"
    log.warning("to stderr")
    assert "WARNING: to stderr" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("level", "expected"),
    [("debug", logging.DEBUG), ("WARN", logging.WARNING), ("error", logging.ERROR),
     ("nonsense", logging.INFO)],
)  # fmt: skip
def test_levels_by_name_with_info_as_the_fallback(
    level: str, expected: int, tmp_path: Path
) -> None:
    logsetup.setup(str(tmp_path / "ff.log"), level, environ={})
    assert logging.getLogger().level == expected
    # urllib3 logs a line per connection at DEBUG: never below INFO.
    assert logging.getLogger("urllib3").level == max(expected, logging.INFO)
