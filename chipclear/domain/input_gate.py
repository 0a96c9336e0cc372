"""The input gate: every file a user hands chipclear passes here before anything reads its meaning.

Requests, evidence, policies and screening lists come from people and from other systems, some careless
and some hostile. Each is read as bytes with a size limit, decoded as UTF-8, parsed with limits on depth
and with nothing that could expand (YAML anchors and aliases), duplicate keys refused, and only the plain
types JSON has (YAML 1.2's core schema: no sexagesimal `16:40`, no hex or octal integers, no `yes` as a
boolean, no timestamps, no explicit tags). Whatever passes is plain data, checked again by the pydantic
models; whatever does not is refused with one sentence naming the file, the place and the rule, before a
workflow starts or a row is written.

Why here, in the domain: policies are read by `load_policy` (domain) and requests, evidence and lists by
the CLI, and both must refuse the same things the same way. Reading a file is the only I/O; the parsing
is pure.
"""

from __future__ import annotations

import errno
import json
import math
import os
import re
import stat
from pathlib import Path
from typing import Any, Protocol, TypeVar

import yaml

from chipclear.domain.limits import MAX_DEPTH, MAX_ENTRIES, MAX_TEXT, cut, cut_text


class InputRefused(ValueError):
    """Bad input: the message is one sentence naming the file or field and the rule; exit 2."""


# -- bytes ------------------------------------------------------------------------------------------
def read_limited(path: Path, *, limit: int, what: str = "file") -> bytes:
    """A regular file's bytes, at most `limit` of them: never a directory, a FIFO (which would block),
    a device (/dev/zero never ends) or a symlink loop."""
    shown = cut_text(str(path))
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise InputRefused(f"{what} {shown}: no such file") from None
    except OSError as exc:
        raise InputRefused(f"{what} {shown}: cannot be read ({_reason(exc)})") from None
    if not stat.S_ISREG(info.st_mode):
        raise InputRefused(f"{what} {shown}: cannot read {_kind(info.st_mode)}, only a regular file")
    if info.st_size > limit:
        raise InputRefused(f"{what} {shown}: {info.st_size} bytes is over the limit of {limit} bytes")
    try:
        with open(path, "rb") as handle:
            data = handle.read(limit + 1)
    except OSError as exc:
        raise InputRefused(f"{what} {shown}: cannot be read ({_reason(exc)})") from None
    if len(data) > limit:  # it grew while we looked
        raise InputRefused(f"{what} {shown}: over the limit of {limit} bytes")
    return data


def _reason(exc: OSError) -> str:
    if exc.errno == errno.ELOOP:
        return "a symbolic link loop"
    return exc.strerror or type(exc).__name__


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return name
    return "this kind of file"


def decode_utf8(data: bytes, where: str) -> str:
    """UTF-8 text (a leading byte-order mark is dropped); any other encoding is refused, not guessed."""
    try:
        return data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        raise InputRefused(
            f"{where}: not UTF-8 text (byte 0x{data[exc.start]:02X} at offset {exc.start}); save it as UTF-8"
        ) from None


def read_text(path: Path, *, limit: int, what: str = "file") -> str:
    return decode_utf8(read_limited(path, limit=limit, what=what), f"{what} {cut_text(str(path))}")


Read = TypeVar("Read", covariant=True)


class Reader(Protocol[Read]):
    def __call__(self, path: Path, *, limit: int, what: str) -> Read: ...


def read_as(
    error: type[Exception], read: Reader[Read], path: Path, *, limit: int, what: str, missing: str
) -> Read:
    """`read` (read_limited or read_text) for a caller whose failures have a type of their own (a key
    file, a checkpoint): nothing at `path` is "`path`: `missing`", and every refusal the same sentence,
    each raised as `error`."""
    if not os.path.lexists(path):
        raise error(f"{path}: {missing}")
    try:
        return read(path, limit=limit, what=what)
    except InputRefused as exc:
        raise error(str(exc)) from None


# -- JSON ---------------------------------------------------------------------------------------------
_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKETS = re.compile(r"[\[\]{}]")


def json_depth(text: str) -> int:
    """The deepest nesting of `text`, found without recursion (`json.loads` of 10,000 `[` recurses
    until Python gives up)."""
    depth = deepest = 0
    for bracket in _BRACKETS.findall(_JSON_STRING.sub("", text)):
        depth += 1 if bracket in "[{" else -1
        deepest = max(deepest, depth)
    return deepest


def _json_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for key, value in pairs:
        if key in found:
            raise InputRefused(f"key {cut(key)} appears twice in one object")
        found[key] = value
    return found


def _json_constant(name: str) -> float:
    raise InputRefused(f"{name} is not a number chipclear accepts (only finite numbers)")


def _json_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise InputRefused(f"{cut(text)} is too large to be a finite number")
    return value


def parse_json(text: str, where: str) -> Any:
    if json_depth(text) > MAX_DEPTH:
        raise InputRefused(f"{where}: nested deeper than {MAX_DEPTH} levels")
    try:
        document = json.loads(
            text, object_pairs_hook=_json_pairs, parse_constant=_json_constant, parse_float=_json_float
        )
    except InputRefused as exc:
        raise InputRefused(f"{where}: {exc}") from None
    except json.JSONDecodeError as exc:
        raise InputRefused(
            f"{where}: not valid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
        ) from None
    except (ValueError, RecursionError) as exc:  # an integer of more than 4,300 digits, …
        raise InputRefused(f"{where}: not valid JSON ({cut(str(exc), 80)})") from None
    return check_plain(document, where)


# -- YAML -------------------------------------------------------------------------------------------
class _Refused(yaml.YAMLError):
    def __init__(self, problem: str, mark: Any) -> None:
        super().__init__(problem)
        self.problem = problem
        self.problem_mark = mark


class StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader, narrowed to YAML 1.2's core schema and to what cannot expand.

    Anchors and aliases are refused as the parser meets them, before any node is built, so the 680-byte
    "billion laughs" is refused in microseconds rather than expanded into gigabytes. Depth is counted
    as nodes are composed; duplicate keys are refused as mappings are built.
    """

    yaml_implicit_resolvers: dict[Any, Any] = {}
    _depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()  # type: ignore[no-untyped-call]
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise _Refused("anchors and aliases (& and *) are not accepted", event.start_mark)
        if getattr(event, "tag", None) not in (None, "!"):
            raise _Refused(f"explicit tags ({cut(event.tag)}) are not accepted", event.start_mark)
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise _Refused(f"nested deeper than {MAX_DEPTH} levels", event.start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, str):
                raise _Refused(f"a key must be text, not {cut(key)}", key_node.start_mark)
            if key in seen:
                raise _Refused(f"key {cut(key)} appears twice in one mapping", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
        return int(self.construct_scalar(node))  # decimal only: the resolver admits nothing else


# YAML 1.2 core schema, narrowed: decimal integers without leading zeros; no `yes`/`on`, `0x1F`, `0o17`,
# `16:40` or `2026-01-15` turned into something else than the text written (a date stays text, and the
# model reads it as a date).
for _tag, _pattern, _first in (
    ("tag:yaml.org,2002:bool", r"^(?:true|True|TRUE|false|False|FALSE)$", "tTfF"),
    ("tag:yaml.org,2002:null", r"^(?:~|null|Null|NULL|)$", "~nN"),
    ("tag:yaml.org,2002:int", r"^[-+]?(?:0|[1-9][0-9]*)$", "-+0123456789"),
    (
        "tag:yaml.org,2002:float",
        r"^(?:[-+]?(?:\.[0-9]+|[0-9]+\.[0-9]*)(?:[eE][-+]?[0-9]+)?|[-+]?[0-9]+[eE][-+]?[0-9]+"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$",
        "-+.0123456789",
    ),
):
    StrictLoader.add_implicit_resolver(_tag, re.compile(_pattern), list(_first))
StrictLoader.add_implicit_resolver("tag:yaml.org,2002:null", re.compile(r"^$"), [""])
StrictLoader.add_constructor("tag:yaml.org,2002:int", StrictLoader.construct_yaml_int)


def parse_yaml(text: str, where: str) -> Any:
    loader = StrictLoader(text)
    try:
        document = loader.get_single_data()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc).split("\n")[0]
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise InputRefused(f"{where}: not valid YAML{at}: {problem}") from None
    except RecursionError:
        raise InputRefused(f"{where}: nested deeper than {MAX_DEPTH} levels") from None
    finally:
        loader.dispose()
    return check_plain(document, where)


def parse_document(text: str, where: str, *, json_only: bool = False) -> Any:
    return parse_json(text, where) if json_only else parse_yaml(text, where)


def read_document(path: Path, *, limit: int, what: str = "file") -> Any:
    """JSON or YAML by extension (anything but `.json` is read as YAML, JSON's superset)."""
    text = read_text(path, limit=limit, what=what)
    return parse_document(text, f"{what} {cut_text(str(path))}", json_only=path.suffix.lower() == ".json")


# -- plain data ---------------------------------------------------------------------------------------
def check_plain(document: Any, where: str, *, max_text: int = MAX_TEXT) -> Any:
    """Walk a parsed document (without recursion): finite numbers only, text values within `max_text`
    characters, no mapping or list of more than MAX_ENTRIES entries."""
    stack: list[tuple[str, Any]] = [("", document)]
    while stack:
        path, value = stack.pop()
        field = path or "(document)"
        if isinstance(value, float) and not math.isfinite(value):
            raise InputRefused(f"{where}: {field}: {value} is not a finite number")
        if isinstance(value, str) and len(value) > max_text:
            raise InputRefused(
                f"{where}: {field}: {len(value)} characters is over the limit of {max_text} for a text value"
            )
        if isinstance(value, dict | list) and len(value) > MAX_ENTRIES:
            raise InputRefused(f"{where}: {field}: more than {MAX_ENTRIES} entries")
        if isinstance(value, dict):
            for key, item in value.items():
                if len(key) > 100:
                    raise InputRefused(f"{where}: {field}: key {cut(key)} is over 100 characters")
                stack.append((f"{path}.{key}" if path else key, item))
        elif isinstance(value, list):
            stack.extend(
                (f"{path}.{number}" if path else str(number), item) for number, item in enumerate(value)
            )
    return document
