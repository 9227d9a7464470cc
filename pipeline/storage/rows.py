"""Which topic lands in which table, and how a message becomes a row (pure).

Column names are the field names of the models in ``pipeline.events`` and ``pipeline.results``
(the tables in ``schemas/clickhouse`` use the same names), so a new field is one migration away.
A message the models refuse raises ``RowError``: the sink sends it to the dead-letter topic.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from pipeline import topics
from pipeline.events import CanonicalEvent
from pipeline.results import FirstResponse, HealthSnapshot, WindowResult

Row = tuple[Any, ...]


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
        if value is None:
            raise RowError("empty message (tombstone)")
        try:
            item = self.model.model_validate_json(value)
        except ValidationError as exc:
            raise RowError(_describe(exc)) from None
        return _pick(self.columns)(item.__dict__)


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
