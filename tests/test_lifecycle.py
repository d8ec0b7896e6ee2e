"""Signals, as the one-process service and the --workers supervisor both answer them."""

from __future__ import annotations

import logging
import os
import signal
from typing import Any

import gevent.event
import pytest

from fastforward import lifecycle
from fastforward.errors import EXIT_ERROR
from fastforward.lifecycle import Signals


class Recorder:
    def __init__(self) -> None:
        self.exits: list[int] = []
        self.forced = 0
        self.hups = gevent.event.Event()

    def signals(self, debounce: float = 0.0) -> Signals:
        return Signals(
            gevent.event.Event(),
            logging.getLogger("test.lifecycle"),
            stopping_text="stopping now",
            forced_text="giving up",
            debounce=debounce,
            on_force=self.force,
            on_hup=self.hups.set,
            exit=self.exits.append,
        )

    def force(self) -> None:
        self.forced += 1


def test_first_signal_asks_to_stop_second_exits_at_once(caplog: Any) -> None:
    r = Recorder()
    s = r.signals()
    with caplog.at_level(logging.INFO, "test.lifecycle"):
        s.stop_signal(signal.SIGTERM)
        assert s.stopping.is_set() and r.exits == [] and r.forced == 0
        s.stop_signal(signal.SIGINT)
    assert r.forced == 1 and r.exits == [EXIT_ERROR]
    assert "SIGTERM: stopping now" in caplog.text
    assert "SIGINT again: giving up" in caplog.text


def test_a_repeat_within_the_debounce_is_the_same_request(monkeypatch: Any) -> None:
    now = [100.0]
    monkeypatch.setattr(lifecycle.time, "monotonic", lambda: now[0])
    r = Recorder()
    s = r.signals(debounce=1.0)
    s.stop_signal(signal.SIGTERM)
    now[0] += 0.5
    s.stop_signal(signal.SIGTERM)  # to us and to our process group: one request
    assert s.stopping.is_set() and r.exits == [] and r.forced == 0
    now[0] += 1.0
    s.stop_signal(signal.SIGTERM)  # an operator insisting
    assert r.forced == 1 and r.exits == [EXIT_ERROR]


def test_sighup_reopens_the_log_and_never_stops(monkeypatch: Any) -> None:
    reopened: list[bool] = []
    monkeypatch.setattr(lifecycle.logsetup, "reopen", lambda: reopened.append(True))
    r = Recorder()
    s = r.signals()
    with s:
        os.kill(os.getpid(), signal.SIGHUP)  # the real signal, through the installed handler
        assert r.hups.wait(timeout=5)
    assert reopened == [True]
    assert not s.stopping.is_set()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_installed_handlers_take_stop_signals(sig: int) -> None:
    r = Recorder()
    s = r.signals()
    with s:
        os.kill(os.getpid(), sig)
        assert s.stopping.wait(timeout=5)
    assert r.exits == []
