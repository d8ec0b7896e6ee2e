import os
import subprocess
import sys

import pytest

from fastforward.errors import StartupError
from fastforward.pidfile import PidFile


def test_written_then_removed(tmp_path):
    path = tmp_path / "ff.pid"
    pf = PidFile(str(path))
    pf.write()
    assert path.read_text() == f"{os.getpid()}\n"
    pf.remove()
    assert not path.exists()


def test_a_stale_pidfile_is_taken_over(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    path = tmp_path / "ff.pid"
    path.write_text(dead.stdout)
    PidFile(str(path)).write()
    assert path.read_text() == f"{os.getpid()}\n"


def test_a_running_process_is_never_displaced(tmp_path):
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) as other:
        try:
            path = tmp_path / "ff.pid"
            path.write_text(f"{other.pid}\n")
            with pytest.raises(StartupError, match=f"process {other.pid} is running"):
                PidFile(str(path)).write()
            assert path.read_text() == f"{other.pid}\n"
        finally:
            other.kill()


def test_remove_leaves_a_file_that_names_another_process(tmp_path):
    path = tmp_path / "ff.pid"
    pf = PidFile(str(path))
    pf.write()
    path.write_text("12345\n")  # replaced behind our back
    pf.remove()
    assert path.read_text() == "12345\n"
