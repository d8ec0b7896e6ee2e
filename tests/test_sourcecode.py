"""The source stays lint-clean and type-checks: ruff (lint and format) and mypy, as in CI."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src" / "fastforward"

pytestmark = pytest.mark.skipif(
    not (ROOT / "pyproject.toml").exists() or not SRC.is_dir(),
    reason="runs from a source checkout only (not against an installed wheel)",
)


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)  # fmt: skip


def test_ruff_check_is_clean():
    proc = run("ruff", "check", "src", "tests", "bench")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_ruff_format_is_clean():
    proc = run("ruff", "format", "--check", "src", "tests", "bench")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_mypy_is_clean():
    proc = run("mypy", "--ignore-missing-imports", "--no-error-summary", "src/fastforward")
    assert proc.returncode == 0, proc.stdout + proc.stderr
