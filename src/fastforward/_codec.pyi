"""Compiled codec: carbon pickle frames and plaintext lines to Blueflood JSON bodies.

Same API, bytes out, counters and errors as the pure-Python twin ``fastforward._codec_py``
(docs/architecture.md, "The codec contract"). Import it through ``fastforward.codec``.
"""

from collections.abc import Callable
from typing import Protocol

DROP_REASONS: tuple[str, ...]
"""Drop counter names, in order: none, nan, inf, bad_value, bad_timestamp, out_of_window,
invalid_name, bad_item, bad_line, bad_frame, and the routing ones: rule, series_budget,
bad_tags, empty_name."""

class RouteDecision(Protocol):
    """What a router returns for a metric name (``routing.Decision`` is one)."""

    @property
    def name(self) -> str:
        """The final name, before the prefix."""
    @property
    def tenant(self) -> str | None:
        """The Blueflood tenant; None for the default one."""
    @property
    def ttl(self) -> int | None:
        """``ttlInSeconds``; None for the encoder's ``ttl``."""
    @property
    def drop(self) -> str | None:
        """None, or the drop reason: rule, series_budget, bad_tags, empty_name."""

class Encoder:
    """Accumulates datapoints into Blueflood ingest bodies (compact JSON arrays).

    Each datapoint becomes
    ``{"collectionTime":<ms>,"ttlInSeconds":<ttl>,"metricValue":<number>,"metricName":"<name>"}``
    with ``prefix + "."`` in front of the name when a prefix is set. A body never holds more
    than ``max_body_datapoints`` datapoints nor more than ``max_body_bytes`` bytes (unless one
    datapoint alone is larger). Datapoints outside ``[now - max_past_ms, now + max_future_ms]``
    are dropped (a negative bound disables that side).

    :param prefix: metric name prefix (joined with ".").
    :param ttl: ``ttlInSeconds`` written in every datapoint.
    :param overwrite_collection_time: ignore the sender's timestamps and use now.
    :param max_frame_bytes: longer pickle frames raise FrameTooLarge.
    :param max_items_per_frame: items in any list or tuple, and datapoints in a frame.
    :param max_name_bytes: UTF-8 bytes of the final name, prefix included.
    :param max_line_bytes: longer plaintext lines count ``bad_line``.
    :param router: ``routing.Router.decide`` or any callable from a name to a `RouteDecision`
        (docs/architecture.md, "Routing in the codec"); None: every datapoint goes to the
        default tenant as the original forwarder did. Called once per distinct name whose
        datapoint has a good value and timestamp, with the name as received (checked: valid
        UTF-8, not empty, no whitespace, within ``max_name_bytes`` without the prefix);
        exceptions from it propagate. The final name gets the prefix and is checked again
        (``invalid_name``).
    :param route_cache_size: names whose decision is remembered (a positive int); when full
        the older decisions are forgotten. A ``series_budget`` drop is never remembered.
    :raises ValueError: a limit that is not a positive int, or a ttl that is not an int.

    The defaults are ``_codec_rules.DEFAULT_*`` (the same for the pure-Python twin).
    """

    def __init__(
        self,
        *,
        prefix: str = ...,
        ttl: int = ...,
        overwrite_collection_time: bool = ...,
        max_body_bytes: int = ...,
        max_body_datapoints: int = ...,
        max_frame_bytes: int = ...,
        max_items_per_frame: int = ...,
        max_past_ms: int = ...,
        max_future_ms: int = ...,
        max_name_bytes: int = ...,
        max_line_bytes: int = ...,
        router: Callable[[str], RouteDecision] | None = ...,
        route_cache_size: int = ...,
    ) -> None: ...
    def add_pickle(self, frame: bytes | bytearray | memoryview, now_ms: int | None = None) -> int:
        """Decode one pickle frame (payload without its 4-byte length) and queue its datapoints.

        The opcodes are walked in C; nothing is imported or called. The whole frame is
        validated before any datapoint is emitted. Bad datapoints and items are counted and
        skipped; the rest of the frame goes on.

        :param now_ms: the clock in ms for timestamp -1, the window and overwrite (tests);
            read once from the wall clock when None.
        :returns: the number of datapoints accepted.
        :raises FrameError: malformed, truncated, forbidden opcode or over a bound (counted
            as ``bad_frame``, nothing emitted); ``.reason`` and ``.offset`` say why and where.
        :raises FrameTooLarge: the frame is longer than ``max_frame_bytes``.
        """

    def add_lines(
        self, data: bytes | bytearray | memoryview, final: bool = False, now_ms: int | None = None
    ) -> int:
        """Consume complete ``name value timestamp`` lines (``\\n`` or ``\\r\\n``).

        Blank lines are skipped; a malformed line counts ``bad_line`` and the rest goes on.

        :param final: consume a trailing partial line too (UDP datagram, end of stream).
        :returns: bytes consumed; the caller keeps the rest for the next read.
        """

    def take(self, partial: bool = True) -> list[bytes]:
        """Remove and return the waiting bodies; the open partial one too unless ``partial``
        is False."""

    def take_counted(self, partial: bool = True) -> list[tuple[bytes, int]]:
        """Like `take`, as ``(body, datapoints)`` pairs, so the sender need not count them."""

    def take_routed(self, partial: bool = True) -> list[tuple[str | None, bytes, int]]:
        """Like `take_counted`, as ``(tenant, body, datapoints)`` (tenant None: the default).

        A body holds one tenant's datapoints; each tenant's bodies come in arrival order
        (bodies of different tenants may interleave). Without a router every tenant is None.
        """

    def set_router(self, router: Callable[[str], RouteDecision] | None) -> None:
        """Route with this callable from now on (None: no routing) and forget every decision
        remembered; open and full bodies stay and drain to their tenants."""

    def counters_by_tenant(self) -> dict[str | None, dict[str, int]]:
        """Per tenant a router has named (None: the default): ``accepted``, ``rule``,
        ``series_budget``, ``bad_tags``, ``empty_name``. Empty without a router."""

    @property
    def route_cache_names(self) -> int:
        """Names whose routing decision is remembered now (at most ``route_cache_size``)."""

    @property
    def route_cache_bytes(self) -> int:
        """Memory the remembered decisions take: the compiled codec's heap allocation (kept
        when the cache is emptied, for the next names), the twin's estimate from its objects."""

    @property
    def ready_bodies(self) -> int:
        """Complete (full) bodies waiting, all tenants."""

    @property
    def pending_bytes(self) -> int:
        """Bytes of all waiting bodies, every tenant's open one included."""

    @property
    def held_bytes(self) -> int:
        """Memory the encoder holds for data: the bodies not taken yet, and each open body's
        allocation (not only its bytes written) once it holds a datapoint. 0 when every
        body was taken: an open body without a datapoint holds no memory. What the memory
        cap (``--max-buffer-bytes``) counts for the encoder."""

    @property
    def pending_datapoints(self) -> int:
        """Datapoints in all waiting bodies, every tenant's open one included."""

    def counters(self) -> dict[str, int]:
        """Totals since creation: ``accepted``, ``frames``, ``lines`` and every DROP_REASONS
        key."""

    def take_rejects(self) -> list[tuple[str, bytes]]:
        """Recent ``(reason, sample)`` pairs, oldest first, at most 64; clears them.

        The sample (at most 256 bytes) is the metric name for a pickle datapoint, the line for
        plaintext, and the error message for a bad frame; routing drops are sampled too.
        """

def safe_loads(
    frame: bytes | bytearray | memoryview,
    max_frame_bytes: int = ...,
    max_items_per_frame: int = ...,
) -> object:
    """Decode a pickle frame into lists, tuples, str, bytes, int, float, bool and None without
    executing anything (same opcode walker and bounds as ``Encoder.add_pickle``).

    :raises FrameError: as ``Encoder.add_pickle``.
    """

# Test hooks (tests/test_floatrepr.py): the float formatter and parser alone.

def _test_float_repr(x: float) -> str:
    """``repr(x)`` as the codec writes it."""

def _test_float_repr_fast(x: float) -> str | None:
    """The C formatter alone: ``repr(x)``, or None where it defers to CPython."""

def _test_text_to_double(text: bytes) -> float:
    """``float(text)`` as the codec reads decimal strings."""
