import os

import pytest

from fastforward import codec


@pytest.mark.skipif(
    not os.environ.get("FASTFORWARD_REQUIRE_EXTENSION"), reason="extension not required here"
)
def test_compiled_codec_is_the_one_in_use():
    assert codec.IMPLEMENTATION == "cython"


@pytest.mark.skipif(
    not os.environ.get("FASTFORWARD_NO_EXTENSIONS"), reason="extensions not disabled here"
)
def test_pure_python_codec_when_extensions_are_disabled():
    assert codec.IMPLEMENTATION == "python"
