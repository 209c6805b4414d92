"""Publication tags and the tags filter a subscriber may set (pure, no I/O).

Tags are a publication's ``map<string, string>`` (Centrifugo's Publication
``tags``). A subscriber's filter is Centrifugo's ``FilterNode`` tree
(client.proto; the rules are centrifuge's ``internal/filter``), given in the
subscribe command's ``tf``:

* ``op`` ``""`` is a leaf comparing the tag ``key`` with ``cmp``: ``eq``,
  ``neq``, ``in``, ``nin`` (against ``vals``), ``ex``, ``nex`` (the key is
  there or not), ``sw``, ``ew``, ``ct`` (starts with, ends with, contains
  ``val``), ``lt``, ``lte``, ``gt``, ``gte`` (decimal numbers: a value that
  is not a number never matches);
* ``op`` ``and``, ``or`` (one child at least), ``not`` (exactly one child)
  over ``nodes``.

:func:`compile_filter` checks a tree as centrifuge's ``filter.Validate``
does (and bounds its size, which centrifuge leaves to its message limit)
and turns it into a predicate over a publication's tags, evaluated as
``filter.Match`` does: a missing key is ``""`` for ``in``/``nin``, ``neq``
and ``nin`` match a missing key. The predicate is built once per
subscription; the hub calls it once per publication and filtered subscriber.
"""
from __future__ import annotations

import re
from decimal import Decimal
from typing import Any, Callable

Tags = dict[str, str]
Predicate = Callable[[Tags], bool]

MAX_NODES = 128    # nodes in one filter
MAX_DEPTH = 16     # nesting of and/or/not
MAX_TAGS = 64      # tags on one publication
MAX_TAG_BYTES = 4096   # their keys and values together, UTF-8

# What udecimal.Parse takes: an optional sign, digits, an optional fraction.
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)\Z")


class BadFilter(ValueError):
    """A filter centrifuge would refuse (or one past the size bounds)."""


class BadTags(ValueError):
    """Tags that are not a map of strings to strings within the bounds."""


def check_tags(tags: Any) -> Tags | None:
    """A publication's ``tags`` as given (JSON object of strings), or None when
    absent or empty; raises BadTags."""
    if tags is None:
        return None
    if type(tags) is not dict:
        raise BadTags("tags must be an object of strings")
    if not tags:
        return None
    if len(tags) > MAX_TAGS:
        raise BadTags(f"more than {MAX_TAGS} tags")
    size = 0
    for key, value in tags.items():
        if type(key) is not str or type(value) is not str:
            raise BadTags("tags must map strings to strings")
        size += len(key.encode()) + len(value.encode())
    if size > MAX_TAG_BYTES:
        raise BadTags(f"tags over {MAX_TAG_BYTES} bytes")
    return dict(tags)


def _number(text: str) -> Decimal | None:
    return Decimal(text) if _NUMBER.match(text) else None


def compile_filter(node: Any) -> Predicate:
    """The predicate of a ``FilterNode`` tree (a dict with the JSON field
    names, as both codecs decode it); raises BadFilter."""
    count = [0]
    return _compile(node, 0, count)


def _str(node: dict, name: str) -> str:
    value = node.get(name, "")
    if type(value) is not str:
        raise BadFilter(f"{name} must be a string")
    return value


def _compile(node: Any, depth: int, count: list[int]) -> Predicate:
    if type(node) is not dict:
        raise BadFilter("a filter node must be an object")
    count[0] += 1
    if count[0] > MAX_NODES:
        raise BadFilter(f"more than {MAX_NODES} filter nodes")
    if depth > MAX_DEPTH:
        raise BadFilter(f"filter nested deeper than {MAX_DEPTH}")
    op = _str(node, "op")
    nodes = node.get("nodes") or []
    if type(nodes) is not list:
        raise BadFilter("nodes must be a list")
    if op in ("and", "or"):
        if not nodes:
            raise BadFilter(f"{op} node must have at least one child")
        children = tuple(_compile(child, depth + 1, count) for child in nodes)
        if op == "and":
            return lambda tags: all(child(tags) for child in children)
        return lambda tags: any(child(tags) for child in children)
    if op == "not":
        if len(nodes) != 1:
            raise BadFilter("not node must have exactly one child")
        child = _compile(nodes[0], depth + 1, count)
        return lambda tags: not child(tags)
    if op != "":
        raise BadFilter(f"invalid op: {op[:20]}")
    return _leaf(node)


def _leaf(node: dict) -> Predicate:
    key, cmp, val = _str(node, "key"), _str(node, "cmp"), _str(node, "val")
    vals = node.get("vals") or []
    if type(vals) is not list or not all(type(v) is str for v in vals):
        raise BadFilter("vals must be a list of strings")
    if not cmp:
        raise BadFilter("leaf node must have cmp set")
    if cmp in ("eq", "neq", "sw", "ew", "ct", "gt", "gte", "lt", "lte"):
        if not val:
            raise BadFilter(f"{cmp} comparison requires val")
        if vals:
            raise BadFilter(f"{cmp} comparison must not use vals")
    elif cmp in ("in", "nin"):
        if not vals:
            raise BadFilter(f"{cmp} comparison requires non-empty vals")
        if val:
            raise BadFilter(f"{cmp} comparison must not use val")
    elif cmp in ("ex", "nex"):
        if val or vals:
            raise BadFilter(f"{cmp} comparison must not use val or vals")
    else:
        raise BadFilter(f"unknown comparison operator: {cmp[:20]}")
    if not key and cmp not in ("ex", "nex"):
        raise BadFilter("leaf node requires key")
    if cmp == "eq":
        return lambda tags: tags.get(key) == val
    if cmp == "neq":
        return lambda tags: tags.get(key) != val
    if cmp in ("in", "nin"):
        members = frozenset(vals)
        if cmp == "in":
            return lambda tags: tags.get(key, "") in members
        return lambda tags: tags.get(key, "") not in members
    if cmp == "ex":
        return lambda tags: key in tags
    if cmp == "nex":
        return lambda tags: key not in tags
    if cmp == "sw":
        return lambda tags: key in tags and tags[key].startswith(val)
    if cmp == "ew":
        return lambda tags: key in tags and tags[key].endswith(val)
    if cmp == "ct":
        return lambda tags: key in tags and val in tags[key]
    bound = _number(val)
    if bound is None:
        return lambda tags: False    # centrifuge: a val that is not a number never matches
    compare: Callable[[Decimal], bool] = {
        "gt": lambda v: v > bound, "gte": lambda v: v >= bound,
        "lt": lambda v: v < bound, "lte": lambda v: v <= bound}[cmp]

    def numeric(tags: Tags) -> bool:
        text = tags.get(key)
        if text is None:
            return False
        number = _number(text)
        return number is not None and compare(number)
    return numeric
