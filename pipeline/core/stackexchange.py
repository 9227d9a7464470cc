"""Stack Exchange activity rows (``fixtures/activity/stackexchange-first180d``) as canonical events.

Pure conversion of CSV rows already read (e.g. with ``csv.DictReader``)::

    with open(posts_csv, newline="") as p, open(comments_csv, newline="") as c:
        events = events_from_rows(csv.DictReader(p), csv.DictReader(c))

Mapping: a question (``post_type_id`` 1) starts a thread (``thread_id`` = its id);
an answer (2) is a reply whose parent is the question; a comment is a reply whose
parent is the post it comments on (same thread). A site is a community
(``community_id`` = the ``community`` column), platform ``stackexchange``, space
``stackexchange.com``. An empty ``author_id`` is a deleted user: actor
``"deleted"``, treated as one human (so deleted users share one poster id; the
real data has few of them). ``received_at`` = ``occurred_at`` to keep replays
deterministic. Event ids are stable: the same row always gives the same id.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime

from pipeline.events import CanonicalEvent, Kind, stable_event_id

PLATFORM = "stackexchange"
SPACE = "stackexchange.com"
DELETED = "deleted"


def _time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _actor(row: Mapping[str, str]) -> str:
    return (row.get("author_id") or "").strip() or DELETED


def post_event(row: Mapping[str, str]) -> CanonicalEvent | None:
    """A posts.csv row; None for post types other than question and answer."""
    kind = {"1": Kind.THREAD_STARTED, "2": Kind.REPLY}.get(row["post_type_id"].strip())
    if kind is None:
        return None
    at = _time(row["created_at"])
    community = row["community"]
    return CanonicalEvent(
        event_id=stable_event_id(PLATFORM, community, "post", row["post_id"]),
        platform=PLATFORM,
        space_id=SPACE,
        community_id=community,
        kind=kind,
        actor_id=_actor(row),
        thread_id=row["thread_id"] or row["post_id"],
        parent_id=(row.get("parent_id") or None) if kind == Kind.REPLY else None,
        occurred_at=at,
        received_at=at,
    )


def comment_event(row: Mapping[str, str]) -> CanonicalEvent:
    """A comments.csv row: a reply to the commented post, in that post's thread."""
    at = _time(row["created_at"])
    community = row["community"]
    return CanonicalEvent(
        event_id=stable_event_id(PLATFORM, community, "comment", row["comment_id"]),
        platform=PLATFORM,
        space_id=SPACE,
        community_id=community,
        kind=Kind.REPLY,
        actor_id=_actor(row),
        thread_id=row["thread_id"] or row["post_id"],
        parent_id=row["post_id"],
        occurred_at=at,
        received_at=at,
    )


def events_from_rows(
    posts: Iterable[Mapping[str, str]],
    comments: Iterable[Mapping[str, str]],
    communities: Iterable[str] | None = None,
) -> list[CanonicalEvent]:
    """All events of the given communities (all when None), in event-time order."""
    wanted = set(communities) if communities is not None else None
    events: list[CanonicalEvent] = []
    for row in posts:
        if wanted is None or row["community"] in wanted:
            event = post_event(row)
            if event is not None:
                events.append(event)
    events.extend(comment_event(row) for row in comments if wanted is None or row["community"] in wanted)
    events.sort(key=lambda e: (e.occurred_at, e.event_id))
    return events


def iter_events(rows: Iterable[Mapping[str, str]]) -> Iterator[CanonicalEvent]:
    """Rows of either file, one by one (posts have ``post_type_id``, comments ``comment_id``)."""
    for row in rows:
        event = post_event(row) if "post_type_id" in row else comment_event(row)
        if event is not None:
            yield event
