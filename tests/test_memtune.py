"""glibc malloc tuning: applied on glibc, and the user's own MALLOC_*_ variables win."""

from __future__ import annotations

import platform

import pytest

from fastforward.memtune import tune_malloc


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_applied_on_glibc(monkeypatch):
    for name in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_"):
        monkeypatch.delenv(name, raising=False)
    assert tune_malloc() is True


def test_the_users_malloc_variables_win(monkeypatch):
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "0")
    assert tune_malloc() is False
