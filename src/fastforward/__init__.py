"""fastforward: a fast, safe, lossless Graphite carbon to Blueflood forwarder.

Importing the package loads neither gevent nor requests: the command line patches the
standard library with gevent before anything else imports sockets.
"""

from __future__ import annotations

from .errors import ConfigError, FastforwardError, FrameError, FrameTooLarge

try:
    from ._version import version as __version__
except ImportError:  # running from a tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = ["ConfigError", "FastforwardError", "FrameError", "FrameTooLarge", "__version__"]
