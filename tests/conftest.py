from gevent import monkey

monkey.patch_all()  # before anything imports socket, ssl, requests or urllib3

import importlib  # noqa: E402
import os  # noqa: E402

import pytest  # noqa: E402

from fastforward import codec  # noqa: E402
from tests.support import free_port  # noqa: E402

# Fixtures every test module may ask for: fake_blueflood and fake_identity, and service.
pytest_plugins = ["tests.fake_blueflood", "tests.support_service"]

# Both codec implementations are exercised in every run; the compiled one is skipped only when
# it was not built (and FASTFORWARD_REQUIRE_EXTENSION makes that a failure elsewhere).
try:
    _compiled = importlib.import_module("fastforward._codec")
except ImportError:
    _compiled = None
_pure = importlib.import_module("fastforward._codec_py")

CODEC_IMPLS = [
    pytest.param(_pure, id="py"),
    pytest.param(
        _compiled,
        id="cython",
        marks=pytest.mark.skipif(_compiled is None, reason="compiled codec not built"),
    ),
]


@pytest.fixture(params=CODEC_IMPLS)
def codec_impl(request):
    """The codec module under test: `fastforward._codec_py` or `fastforward._codec`."""
    return request.param


@pytest.fixture
def compiled_codec():
    if _compiled is None:
        pytest.skip("compiled codec not built")
    return _compiled


@pytest.fixture
def unused_port() -> int:
    """A port where nothing listens (a refused connection), see `tests.support.free_port`."""
    return free_port()


def pytest_report_header(config):
    no_ext = os.environ.get("FASTFORWARD_NO_EXTENSIONS", "")
    return f"fastforward codec: {codec.IMPLEMENTATION} (FASTFORWARD_NO_EXTENSIONS={no_ext})"
