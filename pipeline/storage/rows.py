"""Which topic lands in which table, and how a message becomes a row (pure).

Column names are the field names of the models in ``pipeline.events`` and ``pipeline.results``
(the tables in ``schemas/clickhouse`` use the same names), so a new field is one migration away.
A message the models refuse raises ``RowError``: the sink sends it to the dead-letter topic.

Two ways from a message to a row:

- ``Table.decode``: the model validates the JSON; the row holds the model's values.
- ``Table.insert_row``: what the sink inserts. The row holds the values ClickHouse stores, with
  times as DateTime64(3) ticks (milliseconds since the epoch, as clickhouse-connect would compute
  them from the model's datetimes). A message in the models' own wire format (what
  ``model_dump_json`` writes: every value of its JSON type, times as ``...Z``) is parsed with
  pydantic-core's JSON parser and checked field by field against the model's constraints, which
  costs about a third of building the model; anything else (a missing field, a string where an
  int belongs, a naive time, a constraint not met) goes through the model itself, so the rows
  accepted and the reasons given for refused ones are exactly the model's.
"""

from __future__ import annotations

import functools
import itertools
import math
import operator
import re
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import annotated_types
from pydantic import AfterValidator, BaseModel, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import from_json

from pipeline import topics
from pipeline.events import CanonicalEvent, _utc_ms
from pipeline.results import FirstResponse, HealthSnapshot, WindowResult

Row = tuple[Any, ...]

#: every time column of the tables is DateTime64(3, 'UTC')
TICKS_PER_SECOND = 1000


class RowError(ValueError):
    """A message that cannot become a row; ``reason`` is safe to put in a header."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Table:
    name: str
    topic: str  # unprefixed topic name (pipeline.topics)
    model: type[BaseModel]

    @functools.cached_property
    def columns(self) -> tuple[str, ...]:
        return tuple(self.model.model_fields)

    def decode(self, value: bytes | None) -> Row:
        """The model's values, in column order (RowError when the model refuses the message)."""
        return _pick(self.columns)(self._validate(value).__dict__)

    def insert_row(self, value: bytes | None) -> Row:
        """The values to insert, in column order, times as ticks (RowError when the model refuses)."""
        fast = self._fast
        if fast is not None and value is not None:
            try:
                row = fast(from_json(value, allow_inf_nan=False))
            except Exception:  # not the wire format: the model decides, and says why
                row = None
            if row is not None:
                return row
        return to_insert_values(self.decode(value))

    def _validate(self, value: bytes | None) -> BaseModel:
        if value is None:
            raise RowError("empty message (tombstone)")
        try:
            return self.model.model_validate_json(value)
        except ValidationError as exc:
            raise RowError(_describe(exc)) from None

    @functools.cached_property
    def _fast(self) -> Callable[[Any], Row | None] | None:
        return compile_fast_row(self.model)


TABLES: tuple[Table, ...] = (
    Table("events", topics.EVENTS, CanonicalEvent),
    Table("window_results", topics.WINDOWS, WindowResult),
    Table("first_responses", topics.FIRST_RESPONSES, FirstResponse),
    Table("health_snapshots", topics.HEALTH, HealthSnapshot),
)

TABLE_BY_TOPIC: dict[str, Table] = {t.topic: t for t in TABLES}


@functools.cache
def _pick(columns: tuple[str, ...]) -> operator.itemgetter[Any]:
    return operator.itemgetter(*columns)


def tables_by_topic(prefixed: Callable[[str], str]) -> dict[str, Table]:
    """Prefixed topic name -> table (``prefixed`` is ``settings.topic``)."""
    return {prefixed(t.topic): t for t in TABLES}


def _describe(exc: ValidationError) -> str:
    errors = exc.errors(include_url=False, include_input=False)
    if not errors:
        return "invalid message"
    first = errors[0]
    where = ".".join(str(p) for p in first.get("loc", ())) or "(message)"
    more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{where}: {first.get('msg', 'invalid')}{more}"[:500]


# ------------------------------------------------------------------ insert values


def datetime_ticks(value: datetime) -> int:
    """DateTime64(3) ticks of ``value``, computed as clickhouse-connect computes them on insert."""
    seconds = math.floor(value.timestamp())
    return ((seconds * 1_000_000 + value.microsecond) * TICKS_PER_SECOND) // 1_000_000


def to_insert_values(row: Row) -> Row:
    """Model values -> insert values (datetimes become ticks; everything else is kept)."""
    return tuple(datetime_ticks(v) if isinstance(v, datetime) else v for v in row)


_ISO_Z = re.compile(r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d{1,6}))?Z")


@functools.lru_cache(maxsize=1 << 16)  # window starts and emission times repeat across rows
def iso_z_ticks(text: str) -> int | None:
    """Ticks of a UTC time in the wire format (``2024-05-06T10:00:00[.fff]Z``); None otherwise."""
    m = _ISO_Z.fullmatch(text)
    if m is None:
        return None
    fraction = m.group(7) or ""
    try:
        value = datetime(
            int(m.group(1)), int(m.group(2)), int(m.group(3)), int(m.group(4)), int(m.group(5)),
            int(m.group(6)), int(fraction.ljust(6, "0")) if fraction else 0, tzinfo=UTC,
        )  # fmt: skip
    except ValueError:
        return None
    return datetime_ticks(value)


# ------------------------------------------------------------------ the fast path, compiled per model

_MISSING = object()


class _Unsupported(Exception):
    """A field whose checks the fast path cannot reproduce exactly: the model decodes that table."""


def compile_fast_row(model: type[BaseModel]) -> Callable[[Any], Row | None] | None:
    """A function parsed JSON -> insert values, or None when a value is not in the wire format.

    It accepts only values the model accepts unchanged (a subset of what the model accepts), so
    for every message it returns either None or exactly ``to_insert_values`` of the model's row.
    Generated as straight-line code from the model's fields, with two ways in:

    - in order: the message has exactly the model's keys in the model's order (as
      ``model_dump_json`` writes them) and every value has one of the JSON types its field takes,
      checked at once by the tuple of the values' types; then only the fields with constraints
      (literals, bounds, lengths, patterns, times) are looked at one by one;
    - by name: any other dict, every field looked up and checked, defaults for missing ones.

    Returns None for a model with a field it cannot check exactly (pydantic decodes that table).
    """
    env: dict[str, Any] = {"_M": _MISSING, "_ticks": iso_z_ticks, "_by_name": None}
    fields = list(model.model_fields.items())
    by_name = ["def by_name(d):", "    if type(d) is not dict:", "        return None", "    miss = 0"]
    in_order = [
        "def row(d):",
        f"    if type(d) is not dict or len(d) != {len(fields)} or tuple(d) != KEYS:",
        "        return _by_name(d)",
        "    r = list(d.values())",
        "    if tuple(map(type, r)) not in SIGNATURES:",
        "        return _by_name(d)",
    ]
    names = []
    kinds: list[tuple[type, ...]] = []
    try:
        for i, (name, field) in enumerate(fields):
            if field.alias not in (None, name) or field.validation_alias is not None:
                raise _Unsupported(name)
            v = f"v{i}"
            names.append(v)
            checks = _checks(v, field.annotation, list(field.metadata), env, f"{i}")
            by_name.append(f"    {v} = d.get({name!r}, _M)")
            by_name.append(f"    if {v} is _M:")
            if field.is_required() or field.default_factory is not None:
                by_name.append("        return None")
            else:
                env[f"D{i}"] = to_insert_values((field.default,))[0]
                by_name += [f"        {v} = D{i}", "        miss += 1"]
            by_name.append("    else:")
            by_name += ["        " + line for line in checks]
            allowed, type_only = _json_types(field.annotation, list(field.metadata))
            kinds.append(allowed)
            if not type_only:  # the type is known good here; the value's constraints are not
                in_order += [f"    {v} = r[{i}]", *("    " + line for line in checks), f"    r[{i}] = {v}"]
    except _Unsupported:
        return None
    if model.model_config.get("extra") == "forbid":
        by_name += [f"    if len(d) != {len(names)} - miss:", "        return None"]
    by_name.append(f"    return ({', '.join(names)},)")
    in_order.append("    return tuple(r)")
    # the code is built here from the model's own field list
    exec("\n".join(by_name), env)
    env["_by_name"] = env["by_name"]
    if math.prod(len(k) for k in kinds) > 4096:  # too many optional fields to list the signatures
        return env["by_name"]
    env["KEYS"] = tuple(name for name, _ in fields)
    env["SIGNATURES"] = frozenset(itertools.product(*kinds))
    exec("\n".join(in_order), env)
    fn: Callable[[Any], Row | None] = env["row"]
    return fn


def _json_types(annotation: Any, metadata: list[Any]) -> tuple[tuple[type, ...], bool]:
    """Python types of the parsed JSON values the fast path takes for a field, and whether the
    type alone is the whole check (no constraint on the value, nothing to convert)."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        base, *extra = typing.get_args(annotation)
        return _json_types(base, metadata + [m for m in extra if not isinstance(m, FieldInfo) or m.metadata])
    if origin in (typing.Union, types.UnionType):
        (inner,) = [a for a in typing.get_args(annotation) if a is not type(None)]
        allowed, type_only = _json_types(inner, metadata)
        return (*allowed, type(None)), type_only
    if origin is typing.Literal:
        return (str,), False
    if origin is list:
        return (list,), False
    if annotation is datetime:
        return (str,), False
    if annotation in (str, int, float, bool):
        return (annotation,), not metadata
    raise _Unsupported(str(annotation))


def _checks(v: str, annotation: Any, metadata: list[Any], env: dict[str, Any], key: str) -> list[str]:
    """Lines that leave ``v`` as its insert value, or ``return None``."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        base, *extra = typing.get_args(annotation)
        for item in extra:
            metadata = metadata + (list(item.metadata) if isinstance(item, FieldInfo) else [item])
        return _checks(v, base, metadata, env, key)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(annotation)
        inner = [a for a in args if a is not type(None)]
        if len(args) != 2 or len(inner) != 1 or metadata:
            raise _Unsupported(str(annotation))
        return [f"if {v} is not None:", *("    " + line for line in _checks(v, inner[0], [], env, key))]
    if origin is typing.Literal:
        values = typing.get_args(annotation)
        if metadata or not all(type(x) is str for x in values):
            raise _Unsupported(str(annotation))
        env[f"L{key}"] = frozenset(values)
        return [f"if type({v}) is not str or {v} not in L{key}:", "    return None"]
    if origin is list:
        (item,) = typing.get_args(annotation)
        if metadata or typing.get_origin(item) is not typing.Literal:
            raise _Unsupported(str(annotation))
        item_lines = _checks("x", item, [], env, key)
        return [
            f"if type({v}) is not list:",
            "    return None",
            f"for x in {v}:",
            *("    " + line for line in item_lines),
        ]
    if annotation is str:
        return _str_checks(v, metadata, env, key)
    if annotation is int:
        cond = [f"type({v}) is not int"]
        for m in metadata:
            if isinstance(m, annotated_types.Ge):
                cond.append(f"{v} < {int(m.ge)}")  # type: ignore[call-overload]
            else:
                raise _Unsupported(repr(m))
        return [f"if {' or '.join(cond)}:", "    return None"]
    if annotation is float and not metadata:
        # the model turns a JSON integer into a float; bool is no number here
        return [f"if type({v}) is int:", f"    {v} = float({v})", f"elif type({v}) is not float:", "    return None"]
    if annotation is bool and not metadata:
        return [f"if type({v}) is not bool:", "    return None"]
    if annotation is datetime:
        for m in metadata:
            # _utc_ms keeps UTC times to the millisecond: a ...Z time gives the same ticks
            if not (isinstance(m, AfterValidator) and m.func is _utc_ms):
                raise _Unsupported(repr(m))
        return [
            f"if type({v}) is not str:",
            "    return None",
            f"{v} = _ticks({v})",
            f"if {v} is None:",
            "    return None",
        ]
    raise _Unsupported(str(annotation))


def _str_checks(v: str, metadata: list[Any], env: dict[str, Any], key: str) -> list[str]:
    cond = [f"type({v}) is not str"]
    for m in metadata:
        if isinstance(m, annotated_types.MinLen):
            cond.append(f"len({v}) < {int(m.min_length)}")
        elif isinstance(m, annotated_types.MaxLen):
            cond.append(f"len({v}) > {int(m.max_length)}")
        elif getattr(m, "pattern", None) is not None and set(vars(m)) == {"pattern"}:
            pattern = str(m.pattern)
            if not (pattern.startswith("^") and pattern.endswith("$")):
                raise _Unsupported(pattern)
            # fullmatch: unlike Python's "$", it never accepts a trailing newline
            env[f"P{key}"] = re.compile(pattern[1:-1]).fullmatch
            cond.append(f"P{key}({v}) is None")
        else:
            raise _Unsupported(repr(m))
    return [f"if {' or '.join(cond)}:", "    return None"]
