"""Graphite 1.1 tagged names (``name;k=v;k2=v2``): carbon's normal form and the tag policies.

Carbon parses a tagged name and writes it back in one canonical spelling, so two senders that
order the same tags differently still make one series. This module applies the same rules,
checked against carbon's ``TaggedSeries`` (carbon 1.1):

- the name is split at every ``;``; the first part is the metric, which loses any leading
  ``~`` and must not be empty after that;
- every other part is ``key=value`` split at the first ``=``; the key must be non-empty and free
  of ``;!^=``, the value non-empty and not starting with ``~``; anything else makes the whole
  name invalid (carbon logs and drops it);
- a key given twice keeps its last value; a tag called ``name`` is ignored (the metric wins);
- the canonical form is the metric followed by the ``;key=value`` parts sorted as strings (so
  ``a.b`` sorts before ``a``, because ``.`` sorts before ``=``; exactly carbon's order).

Names without ``;`` are not tagged and are never touched.
"""

from __future__ import annotations

from collections.abc import Callable

from ..checks import TAG_POLICIES

__all__ = [
    "TAG_POLICIES",
    "TagError",
    "flatten",
    "normalise",
    "split_tags",
    "strip",
    "tag_policy",
]

_FORBIDDEN_IN_KEY = frozenset(";!^=")
# flatten: `name.k_is_v`, with every `.` inside a key or value replaced so a tag stays one node.
FLATTEN_JOIN = "_is_"
FLATTEN_DOT = "_"


class TagError(ValueError):
    """A tagged name carbon would refuse; the message says which part is wrong."""


def split_tags(name: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    """The metric and its tags, carbon's way: sorted, last duplicate wins, ``name`` ignored.

    Raises TagError for a name carbon would refuse. An untagged name comes back unchanged with
    no tags.
    """
    if ";" not in name:
        return name, ()
    metric, *segments = name.split(";")
    metric = metric.lstrip("~")
    if not metric:
        raise TagError(f"{name!r}: no metric name before the tags")
    tags: dict[str, str] = {}
    for segment in segments:
        key, eq, value = segment.partition("=")
        if not eq or not key:
            raise TagError(f"{name!r}: tag {segment!r} is not key=value")
        bad = _FORBIDDEN_IN_KEY.intersection(key)
        if bad:
            raise TagError(f"{name!r}: tag key {key!r} contains {''.join(sorted(bad))!r}")
        if not value:
            raise TagError(f"{name!r}: tag {key!r} has an empty value")
        if value[0] == "~":
            raise TagError(f"{name!r}: the value of tag {key!r} starts with '~'")
        if key != "name":
            tags[key] = value
    # Sorted as the formatted ";k=v" strings, as carbon does (not by key alone).
    ordered = sorted(tags.items(), key=lambda kv: f";{kv[0]}={kv[1]}")
    return metric, tuple(ordered)


def join_tags(metric: str, tags: tuple[tuple[str, str], ...]) -> str:
    """``metric;k=v;...`` from parts already in canonical order."""
    return metric + "".join(f";{k}={v}" for k, v in tags)


def normalise(name: str) -> str:
    """The canonical spelling of a (possibly tagged) name; raises TagError if carbon would not
    accept it. Untagged names come back as they are (the same object)."""
    if ";" not in name:
        return name
    return join_tags(*split_tags(name))


def keep(metric: str, tags: tuple[tuple[str, str], ...]) -> str:
    """--tags keep: the canonical tagged name, what carbon itself would store."""
    return join_tags(metric, tags)


def strip(metric: str, tags: tuple[tuple[str, str], ...]) -> str:
    """--tags strip: the metric alone; series that differ only by tags become one."""
    return metric


def flatten(metric: str, tags: tuple[tuple[str, str], ...]) -> str:
    """--tags flatten: ``metric.k_is_v.k2_is_v2`` in canonical tag order.

    Each tag becomes one dot-separated node ``key_is_value`` (dots inside a key or value become
    ``_`` so a tag stays one node). ``_is_`` is the spelling other tools (cadent, the
    metrics 2.0 proposal) already use; an untagged name only collides with a flattened one if
    its own nodes happen to contain ``_is_``, which a sender rarely chooses by accident, while
    ``metric.k.v`` would collide with any ordinary three-level name.
    """
    parts = [metric]
    for key, value in tags:
        parts.append(key.replace(".", FLATTEN_DOT) + FLATTEN_JOIN + value.replace(".", FLATTEN_DOT))
    return ".".join(parts)


def tag_policy(policy: str) -> Callable[[str, tuple[tuple[str, str], ...]], str]:
    """The function for a --tags value (keep, strip or flatten)."""
    try:
        return {"keep": keep, "strip": strip, "flatten": flatten}[policy]
    except KeyError:
        raise ValueError(f"--tags {policy!r}: use one of {', '.join(TAG_POLICIES)}") from None
