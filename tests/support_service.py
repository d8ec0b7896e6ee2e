"""The in-process `Service` fixture shared by the service and routing tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from fastforward.config import load
from fastforward.service import Service


@pytest.fixture
def service() -> Iterator:
    """Build a Service from command-line words; whatever is still running is stopped."""
    built: list[Service] = []

    def build(*argv: str) -> Service:
        svc = Service(load(list(argv), environ={}).config)
        built.append(svc)
        return svc

    yield build
    for svc in built:
        if svc.started.is_set() and svc.receivers.listeners:
            svc.stop()
