"""The schema machinery: plain data (parsed YAML or JSON) → typed frozen dataclasses.

Everything here is pure: it reads no file and touches no device. `build` checks every key and
every type against a dataclass's annotations; the dataclasses' own `validate()` methods check the
values (sections.py); world checks (files, datasets, devices, storage) are `raydiff.preflight`'s.
Every error is a `ConfigError` naming the dotted key and what is allowed.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
from dataclasses import fields
from typing import Any

import yaml

from raydiff.errors import ConfigError


def build(cls: type, raw: Any, prefix: str) -> Any:
    """A dataclass from a mapping, checking every key and type. Does not run validate()."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"must be a mapping (got {type_name(raw)})", key=prefix or None)
    hints = typing.get_type_hints(cls)
    names = [f.name for f in fields(cls)]
    kwargs = {}
    for key, value in raw.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if key not in names:
            if path in RETIRED:
                raise ConfigError(f"is no longer a setting: {RETIRED[path]}; remove it", key=path)
            raise ConfigError(unknown_key(key, names), key=path)
        kwargs[key] = coerce(value, hints[key], path)
    missing = [f.name for f in fields(cls) if f.name not in kwargs and f.default is f.default_factory is dataclasses.MISSING]
    if missing:  # a section whose fields have no default (sweep.budget_planner.prior) names them all
        raise ConfigError(f"needs {', '.join(missing)} (got {', '.join(map(str, raw)) or 'none'})", key=prefix or None)
    return cls(**kwargs)


def coerce(value: Any, hint: Any, path: str) -> Any:
    """`value` as the annotated type `hint` (int, float, bool, str, tuples, X | None, dataclasses)."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return coerce(value, inner[0], path)
    if dataclasses.is_dataclass(hint):
        return build(hint, value, path)
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"must be true or false (got {value!r})", key=path)
    if hint is int:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, int) and not isinstance(value, bool):
            if not -INT64_MAX <= value <= INT64_MAX:
                raise ConfigError(f"must fit in 64 bits (got {value:.3g})", key=path)
            return value
        raise ConfigError(f"must be an integer (got {value!r})", key=path)
    if hint is float:
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value) if abs(value) < 1e308 or isinstance(value, float) else math.inf
        elif isinstance(value, str):  # YAML 1.1 reads 1e-4 as a string
            try:
                number = float(value)
            except ValueError:
                pass
        if number is None:
            raise ConfigError(f"must be a number (got {value!r})", key=path)
        if not math.isfinite(number):
            raise ConfigError(f"must be a finite number (got {value!r})", key=path)
        return number
    if hint is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"must be a string (got {value!r})", key=path)
    if hint == KWARGS:  # keyword arguments: a mapping in YAML, (name, value) pairs inside
        return keyword_pairs(value, path)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"must be a list (got {value!r})", key=path)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(coerce(v, args[0], f"{path}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"must be a list of {len(args)} values (got {len(value)})", key=path)
        return tuple(coerce(v, a, f"{path}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    return value


KWARGS = tuple[tuple[str, typing.Any], ...]


def keyword_pairs(value: Any, path: str) -> tuple[tuple[str, Any], ...]:
    """A mapping of keyword arguments (or the [name, value] pairs it is saved as) as sorted
    (name, value) pairs; values are numbers, strings, booleans, null or lists of them (lists
    become tuples, so a config stays hashable)."""
    items = value.items() if isinstance(value, dict) else value
    try:
        pairs = [(k, v) for k, v in items]
    except (TypeError, ValueError):
        raise ConfigError(f"must be a mapping of keyword arguments (got {value!r})", key=path) from None
    out = []
    for k, v in pairs:
        if not isinstance(k, str) or not k.isidentifier():
            raise ConfigError(f"keyword names are identifiers (got {k!r})", key=path)
        scalar = lambda x: x is None or isinstance(x, (bool, int, float, str))  # noqa: E731
        if isinstance(v, (list, tuple)) and all(scalar(x) for x in v):
            v = tuple(v)
        elif not scalar(v):
            raise ConfigError(f"values are numbers, strings, booleans, null or lists of them (got {v!r})", key=f"{path}.{k}")
        out.append((k, v))
    return tuple(sorted(out))


INT64_MAX = 2**63 - 1
NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,99}")  # a folder name every filesystem and S3 take


def check_name(name: Any, key: str) -> str:
    """A sweep name: one folder under the storage, 1 to 100 of A-Z a-z 0-9 . _ -, not starting
    with a dot or a dash (no separators, no control characters, nothing a shell or S3 mangles)."""
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise ConfigError(
            f"must be a plain folder name: 1 to 100 of A-Z a-z 0-9 . _ -, not starting with . or - (got {name!r})",
            key=key,
        )
    return name


def field_hint(cls: type, name: str) -> Any:
    """The annotated type of one field of a dataclass."""
    return typing.get_type_hints(cls)[name]


# settings that were removed, with what replaced them: a file that still sets one is told so
RETIRED = {
    "eval.bootstrap": "f_mem's interval is exact (Clopper–Pearson), no resampling; the fits' resamples are `raydiff analyze --boot`",
}


def unknown_key(key: Any, allowed: list[str]) -> str:
    """The message for a key that is not allowed: the nearest spelling, then the allowed keys."""
    near = difflib.get_close_matches(str(key), allowed, n=1, cutoff=0.6)
    hint = f"; did you mean '{near[0]}'?" if near else ""
    return f"unknown key{hint} (allowed: {', '.join(allowed)})"


def type_name(value: Any) -> str:
    return type(value).__name__


def positive(key: str, value: float) -> None:
    if not value > 0:
        raise ConfigError(f"must be > 0 (got {value})", key=key)


def choice(key: str, value: Any, allowed: tuple) -> None:
    if value not in allowed:
        raise ConfigError(f"must be one of {', '.join(map(str, allowed))} (got {value!r})", key=key)


def plain(obj: Any) -> Any:
    """Tuples → lists, recursively, so configs round-trip through YAML and JSON."""
    if isinstance(obj, dict):
        return {k: plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    return obj


# ----------------------------------------------------------------------------------- YAML


def reject_repeated_keys(node: yaml.Node, path: str = "") -> None:
    """A key given twice in one mapping (YAML silently keeps the last one) is an error that names
    the key by its dotted path and both lines."""
    if isinstance(node, yaml.MappingNode):
        first_line: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = str(key_node.value)
            dotted = f"{path}.{key}" if path else key
            line = key_node.start_mark.line + 1
            if key in first_line:
                raise ConfigError(f"line {line}: key '{dotted}' is given twice (first on line {first_line[key]})")
            first_line[key] = line
            reject_repeated_keys(value_node, dotted)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            reject_repeated_keys(item, f"{path}[{i}]")


class Loader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2's booleans: only true/false (any case). YAML 1.1 also
    reads on/off/yes/no as booleans, so `stop: {on: [pixel]}` would silently become a key True."""


Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)

MAX_YAML_CHARS = 1_000_000  # a search space is a page of settings, not data
MAX_DEPTH = 16  # sections nest three levels deep; anything far deeper is not a search space


def check_plain_yaml(text: str) -> None:
    """Refuse what is not plain data before building anything from it: anchors and aliases (a
    self-reference or an expansion bomb), nesting beyond MAX_DEPTH, a text beyond MAX_YAML_CHARS."""
    if len(text) > MAX_YAML_CHARS:
        raise ConfigError(f"is {len(text):,} characters; a search space has at most {MAX_YAML_CHARS:,}")
    depth = 0
    for event in yaml.parse(text, Loader=Loader):
        line = event.start_mark.line + 1
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
            raise ConfigError(f"line {line}: YAML anchors and aliases (&, *) are not allowed: a search space is plain data, write the value out")
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                raise ConfigError(f"line {line}: nested deeper than {MAX_DEPTH} levels")
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


def parse_yaml(text: str) -> Any:
    """Plain data from YAML text; a malformed document, a repeated key, an alias or deep nesting
    is one ConfigError."""
    try:
        check_plain_yaml(text)
        node = yaml.compose(text, Loader=Loader)
        if node is not None:
            reject_repeated_keys(node)
        return yaml.load(text, Loader=Loader)  # noqa: S506 - Loader is a SafeLoader
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ConfigError(f"malformed YAML: {line}{e.problem or e.context}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"malformed YAML: {e}") from None
