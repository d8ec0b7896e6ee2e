"""Picks the codec implementation: the compiled `_codec` unless told or forced otherwise.

Set ``FASTFORWARD_NO_EXTENSIONS=1`` to use the pure-Python twin ``_codec_py``. Both expose the
same names, semantics and errors; this module is the only place that knows there are two.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

NO_EXTENSIONS = bool(os.environ.get("FASTFORWARD_NO_EXTENSIONS"))

if TYPE_CHECKING or NO_EXTENSIONS:
    from ._codec_py import DROP_REASONS, Encoder, safe_loads

    IMPLEMENTATION = "python"
else:
    try:
        from ._codec import DROP_REASONS, Encoder, safe_loads

        IMPLEMENTATION = "cython"
    except ImportError:  # pragma: no cover - only without a compiled wheel
        from ._codec_py import DROP_REASONS, Encoder, safe_loads  # type: ignore[assignment]

        IMPLEMENTATION = "python"

__all__ = ["DROP_REASONS", "IMPLEMENTATION", "NO_EXTENSIONS", "Encoder", "safe_loads"]
