"""GitHub webhooks (``X-GitHub-Event``) -> canonical events.

Identity (see docs/platforms.md):

- ``space_id``: ``organization.login`` when the delivery names an organization,
  else ``repository.owner.login``.
- ``community_id``: ``github:<repository.full_name>`` (e.g. ``github:Codertocat/Hello-World``).
  Discussions and issues of one repository are one community. A renamed
  repository gets a new id; map the old name to the new one in the communities file.
- ``thread_id``: ``discussion:<discussion.id>`` or ``issue:<issue.id>`` (global ids,
  not the per-repository numbers); a comment is ``discussion_comment:<id>`` /
  ``issue_comment:<id>``.
- ``event_id``: from the object and the action (``stable_event_id("github",
  repository.id, object, object.id, action)``), not from ``X-GitHub-Delivery``:
  the same action delivered by a repository hook and an organization hook, or
  redelivered, gets the same id either way, and the simulator and a backfill can
  compute it without a delivery.
- ``actor_type``: ``bot`` when the user's ``type`` is ``Bot``; ``staff`` when
  ``author_association`` is ``OWNER``, ``MEMBER`` or ``COLLABORATOR``; else ``human``.

Kinds: discussion ``created`` -> thread_started, ``answered`` -> answer_accepted;
discussion_comment ``created`` -> reply; issues ``opened`` -> thread_started;
issue_comment ``created`` -> reply (comments on pull requests are ignored: their
threads are not followed). ``edited`` -> ignored "edit"; ``ping`` -> ignored "ping".
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.events import CanonicalEvent, Kind, stable_event_id

from ._base import (
    Adapted,
    Delivery,
    Json,
    PayloadError,
    header,
    ident,
    integer,
    iso_time,
    load_body,
    make_event,
    obj,
    opt_ident,
    opt_obj,
    opt_text,
    text,
)

STAFF_ASSOCIATIONS = frozenset({"OWNER", "MEMBER", "COLLABORATOR"})


@dataclass(frozen=True)
class _Repo:
    repo_id: str
    space_id: str
    community_id: str


def _repo(data: Json) -> _Repo:
    obj(data, "repository")
    repo_id = str(integer(data, "repository.id"))
    full_name = text(data, "repository.full_name")
    if opt_obj(data, "organization") is not None:
        space = text(data, "organization.login")
    else:
        space = text(data, "repository.owner.login")
    return _Repo(repo_id=repo_id, space_id=space, community_id=f"github:{full_name}")


def _actor_type(data: Json, user_path: str, association_path: str | None = None) -> str:
    if opt_text(data, f"{user_path}.type") == "Bot":
        return "bot"
    if association_path and opt_text(data, association_path) in STAFF_ASSOCIATIONS:
        return "staff"
    return "human"


def _event(
    delivery: Delivery, repo: _Repo, *, obj_name: str, obj_id: str, action: str, **fields: object
) -> CanonicalEvent:
    return make_event(
        event_id=stable_event_id("github", repo.repo_id, obj_name, obj_id, action),
        platform="github",
        space_id=repo.space_id,
        community_id=repo.community_id,
        received_at=delivery.received_at,
        **fields,
    )


def _discussion(delivery: Delivery, data: Json, action: str) -> Adapted:
    repo = _repo(data)
    obj(data, "discussion")
    discussion_id = ident(data, "discussion.id")
    thread = f"discussion:{discussion_id}"
    if action == "created":
        event = _event(
            delivery,
            repo,
            obj_name="discussion",
            obj_id=discussion_id,
            action="created",
            kind=Kind.THREAD_STARTED.value,
            actor_id=ident(data, "discussion.user.id"),
            actor_type=_actor_type(data, "discussion.user", "discussion.author_association"),
            thread_id=thread,
            occurred_at=iso_time(data, "discussion.created_at"),
        )
        return Adapted(events=(event,))
    if action == "answered":
        obj(data, "answer")
        answer_id = ident(data, "answer.id")
        chooser = "discussion.answer_chosen_by"
        if opt_obj(data, chooser) is None:
            chooser = "sender"
        when = (
            "discussion.answer_chosen_at"
            if data["discussion"].get("answer_chosen_at") is not None
            else "discussion.updated_at"
        )
        event = _event(
            delivery,
            repo,
            obj_name="discussion",
            obj_id=discussion_id,
            action=f"answered:{answer_id}",
            kind=Kind.ANSWER_ACCEPTED.value,
            actor_id=ident(data, f"{chooser}.id"),
            actor_type=_actor_type(data, chooser),
            thread_id=thread,
            parent_id=f"discussion_comment:{answer_id}",
            parent_actor_id=ident(data, "answer.user.id"),
            occurred_at=iso_time(data, when),
        )
        return Adapted(events=(event,))
    return _other(action, "discussion")


def _discussion_comment(delivery: Delivery, data: Json, action: str) -> Adapted:
    repo = _repo(data)
    obj(data, "discussion")
    obj(data, "comment")
    if action != "created":
        return _other(action, "discussion_comment")
    discussion_id = ident(data, "discussion.id")
    thread = f"discussion:{discussion_id}"
    comment_id = ident(data, "comment.id")
    parent = opt_ident(data, "comment.parent_id")
    if parent is not None:
        # nested reply: the payload does not say who wrote the parent comment
        parent_id, parent_actor = f"discussion_comment:{parent}", None
    else:
        parent_id, parent_actor = thread, ident(data, "discussion.user.id")
    event = _event(
        delivery,
        repo,
        obj_name="discussion_comment",
        obj_id=comment_id,
        action="created",
        kind=Kind.REPLY.value,
        actor_id=ident(data, "comment.user.id"),
        actor_type=_actor_type(data, "comment.user", "comment.author_association"),
        thread_id=thread,
        parent_id=parent_id,
        parent_actor_id=parent_actor,
        occurred_at=iso_time(data, "comment.created_at"),
    )
    return Adapted(events=(event,))


def _issues(delivery: Delivery, data: Json, action: str) -> Adapted:
    repo = _repo(data)
    obj(data, "issue")
    if action != "opened":
        return _other(action, "issues")
    issue_id = ident(data, "issue.id")
    event = _event(
        delivery,
        repo,
        obj_name="issue",
        obj_id=issue_id,
        action="opened",
        kind=Kind.THREAD_STARTED.value,
        actor_id=ident(data, "issue.user.id"),
        actor_type=_actor_type(data, "issue.user", "issue.author_association"),
        thread_id=f"issue:{issue_id}",
        occurred_at=iso_time(data, "issue.created_at"),
    )
    return Adapted(events=(event,))


def _issue_comment(delivery: Delivery, data: Json, action: str) -> Adapted:
    repo = _repo(data)
    obj(data, "issue")
    obj(data, "comment")
    if data["issue"].get("pull_request") is not None:
        return Adapted(ignored="pull request comment")
    if action != "created":
        return _other(action, "issue_comment")
    issue_id = ident(data, "issue.id")
    thread = f"issue:{issue_id}"
    event = _event(
        delivery,
        repo,
        obj_name="issue_comment",
        obj_id=ident(data, "comment.id"),
        action="created",
        kind=Kind.REPLY.value,
        actor_id=ident(data, "comment.user.id"),
        actor_type=_actor_type(data, "comment.user", "comment.author_association"),
        thread_id=thread,
        parent_id=thread,
        parent_actor_id=ident(data, "issue.user.id"),
        occurred_at=iso_time(data, "comment.created_at"),
    )
    return Adapted(events=(event,))


def _other(action: str, event_name: str) -> Adapted:
    if action == "edited":
        return Adapted(ignored="edit")
    return Adapted(ignored=f"unsupported action: {event_name}.{action}")


_HANDLERS = {
    "discussion": _discussion,
    "discussion_comment": _discussion_comment,
    "issues": _issues,
    "issue_comment": _issue_comment,
}


def adapt_github(delivery: Delivery) -> Adapted:
    event_name = header(delivery.headers, "x-github-event")
    if not event_name or not event_name.strip():
        raise PayloadError("X-GitHub-Event", "missing header")
    event_name = event_name.strip()
    delivery_id = header(delivery.headers, "x-github-delivery")
    data = load_body(delivery.body, delivery.headers)
    if event_name == "ping":
        adapted = Adapted(ignored="ping")
    elif event_name not in _HANDLERS:
        adapted = Adapted(ignored=f"unsupported event: {event_name[:64]}")
    else:
        adapted = _HANDLERS[event_name](delivery, data, text(data, "action"))
    return Adapted(
        events=adapted.events,
        ignored=adapted.ignored,
        challenge=None,
        delivery_id=delivery_id,
    )
