"""Graphite 1.1 tags: carbon's normal form (checked against carbon itself) and the policies."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fastforward.routing.tags import TagError, flatten, normalise, split_tags, tag_policy


def test_two_orders_of_the_same_tags_are_one_name():
    assert normalise("cpu;host=a;env=prod") == normalise("cpu;env=prod;host=a")
    assert normalise("cpu;host=a;env=prod") == "cpu;env=prod;host=a"


def test_untagged_names_are_untouched():
    name = "servers.web01.cpu"
    assert normalise(name) is name
    assert split_tags(name) == (name, ())


def test_carbon_rules_for_duplicates_name_tag_and_tilde():
    assert normalise("m;k=1;k=2") == "m;k=2"  # the last value wins
    assert normalise("m;name=other;a=1") == "m;a=1"  # the metric wins over a name tag
    assert normalise("~~m;a=1") == "m;a=1"  # leading ~ left out of the metric
    assert normalise("m;a=x=y") == "m;a=x=y"  # split at the first '='


def test_order_is_carbons_string_order_not_key_order():
    # ";a.b=..." sorts before ";a=..." because '.' < '='; carbon orders the formatted parts.
    assert normalise("m;a=1;a.b=2") == "m;a.b=2;a=1"


@pytest.mark.parametrize(
    "name",
    ["m;a", "m;=v", "m;a=", "m;a=~x", "m;a!b=1", "m;a^b=1", ";a=1", "~;a=1", "m;a=1;"],
)
def test_names_carbon_refuses_raise(name):
    with pytest.raises(TagError):
        normalise(name)


def test_policies():
    metric, tags = split_tags("disk.used;mount=/var;host=db1.example")
    assert tag_policy("keep")(metric, tags) == "disk.used;host=db1.example;mount=/var"
    assert tag_policy("strip")(metric, tags) == "disk.used"
    assert tag_policy("flatten")(metric, tags) == "disk.used.host_is_db1_example.mount_is_/var"
    with pytest.raises(ValueError, match="use one of keep, strip, flatten"):
        tag_policy("drop")


def test_flatten_keeps_one_node_per_tag():
    assert flatten("m", (("a.b", "c.d"),)) == "m.a_b_is_c_d"


try:  # graphite's carbon (a test dependency up to Python 3.11): the reference implementation
    from carbon import util as carbon_util
except ImportError:
    carbon_util = None

_segment = st.text(alphabet="ab.=;~!^_-x1", min_size=0, max_size=6)


@pytest.mark.skipif(carbon_util is None, reason="graphite's carbon is not installed")
@given(st.lists(_segment, min_size=1, max_size=5).map(";".join))
def test_normalise_agrees_with_carbon(name):
    # carbon parses only names containing ';'; both must accept and refuse the same names.
    if ";" not in name:
        assert normalise(name) == name
        return
    assert carbon_util is not None
    try:
        expected = carbon_util.TaggedSeries.parse(name).path
    except Exception:
        with pytest.raises(TagError):
            normalise(name)
        return
    assert normalise(name) == expected
