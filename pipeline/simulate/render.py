"""Actions -> deliveries in each platform's own format, signed (pure, seeded).

The payloads follow the recorded fixtures (tests/fixtures/webhooks): the same
envelopes, field names, id shapes and time formats (GitHub ``...Z`` seconds,
Discourse ``...sssZ``, Slack ``"<epoch>.<micros>"``), and the same quirks:
Discourse also sends ``topic_created`` for each new topic and fires
``post_created`` for private messages; Slack sends both a ``channel_join`` message
and a ``member_joined_channel`` event for one join; GitHub discussion answers carry
the chosen comment. Each platform covers what its webhooks can say: GitHub has no
reaction or membership events, Discourse no reactions or leaves here.
"""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pipeline.gateway import signatures
from pipeline.simulate.behaviours import BOT, Action
from pipeline.simulate.model import Request

DISCOURSE_INSTANCE = "https://forum.pulse-sim.example"
GITHUB_ORG = "pulse-sim"
GENERIC_PLATFORM = "intranet"
ID_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


@dataclass(frozen=True)
class Credentials:
    """Secrets to sign with; a missing one leaves requests unsigned (the gateway refuses them)."""

    github: str | None = None
    discourse: Callable[[str], str | None] = field(default=lambda instance: None)
    slack: str | None = None
    ingest: tuple[str, str] | None = None  # (sender, token) for /v1/events

    @classmethod
    def from_settings(cls, settings: Any) -> Credentials:
        def reveal(secret: Any) -> str | None:
            return secret.reveal() if secret else None

        tokens = settings.ingest_tokens
        first = next(iter(tokens.items()), None)
        return cls(
            github=reveal(settings.github_webhook_secret),
            discourse=lambda instance: reveal(settings.discourse_secret_for(instance)),
            slack=reveal(settings.slack_signing_secret),
            ingest=(first[0], first[1].reveal()) if first else None,
        )


@dataclass(frozen=True)
class Community:
    index: int
    platform: str
    behaviour: str

    @property
    def name(self) -> str:
        return f"{self.behaviour.replace('_', '-')}-{self.index}"


def _json(value: object) -> bytes:
    # compact with UTF-8 unescaped: what Discourse (MultiJson) and Slack put on the wire
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _rid(rng: random.Random, prefix: str, n: int = 10) -> str:
    return prefix + "".join(rng.choice(ID_CHARS) for _ in range(n))


def _iso_s(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _iso_ms(at: datetime) -> str:
    at = at.astimezone(UTC)
    return at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z"


def _text(rng: random.Random) -> str:
    words = ["deploy", "question", "docs", "build", "release", "idea", "bug", "thanks", "help", "meetup", "plan"]
    return " ".join(rng.choice(words) for _ in range(rng.randint(3, 12))).capitalize() + "."


class Renderer:
    """Turns one community's actions into requests; keeps the ids it has handed out."""

    def __init__(self, community: Community, rng: random.Random, credentials: Credentials, signed_at: float) -> None:
        self.c = community
        self.rng = rng
        self.creds = credentials
        self.signed_at = signed_at
        self.meta = {"community": community.name, "behaviour": community.behaviour}
        self.threads: dict[int, dict[str, Any]] = {}
        self.posts: dict[tuple[int, int], dict[str, Any]] = {}
        self.used_ts: set[int] = set()
        self.reacted: set[tuple[str, int, str]] = set()

    def render(self, action: Action) -> list[Request]:
        handler: Callable[[Action], list[Request]] = getattr(self, f"_{self.c.platform}")
        return handler(action)

    def _request(self, path: str, headers: dict[str, str], body: bytes, at: datetime) -> Request:
        return Request(self.c.platform, path, headers, body, occurred_at=at, meta=self.meta)

    # ------------------------------------------------------------ GitHub

    def _gh_user(self, member: int) -> dict[str, Any]:
        if member == BOT:
            login, uid, kind = "pulse-helper[bot]", 41898282, "Bot"
        else:
            login, uid, kind = f"sim-{self.c.index}-{member}", 5_000_000 + self.c.index * 100_000 + member, "User"
        return {
            "login": login,
            "id": uid,
            "node_id": f"MDQ6VXNlcj{uid}",
            "avatar_url": f"https://avatars.githubusercontent.com/u/{uid}?v=4",
            "url": f"https://api.github.com/users/{login}",
            "html_url": f"https://github.com/{login}",
            "type": kind,
            "site_admin": False,
        }

    def _gh_association(self, member: int) -> str:
        if member == BOT:
            return "NONE"
        return "MEMBER" if member in (0, 1) else ("CONTRIBUTOR" if member < 6 else "NONE")

    def _gh_context(self) -> dict[str, Any]:
        full = f"{GITHUB_ORG}/{self.c.name}"
        org = {"login": GITHUB_ORG, "id": 90_000_001, "node_id": "MDEyOk9yZ2FuaXphdGlvbjkwMDAwMDAx"}
        repo = {
            "id": 700_000_000 + self.c.index,
            "node_id": f"R_sim{self.c.index}",
            "name": self.c.name,
            "full_name": full,
            "private": False,
            "owner": {**org, "type": "Organization", "site_admin": False},
            "html_url": f"https://github.com/{full}",
            "created_at": "2024-01-15T10:00:00Z",
            "has_discussions": True,
        }
        return {"repository": repo, "organization": org}

    def _github(self, action: Action) -> list[Request]:
        if action.kind in ("reaction", "join", "leave") or action.thread is None:
            return []
        thread = self.threads.get(action.thread)
        if action.kind == "thread":
            is_issue = self.rng.random() < 0.3
            number = len(self.threads) + 1
            thread = {
                "issue": is_issue,
                "id": (400_000_000 if is_issue else 3_000_000) + self.c.index * 100_000 + number,
                "number": number,
                "user": self._gh_user(action.actor),
                "association": self._gh_association(action.actor),
                "created_at": _iso_s(action.at),
                "title": _text(self.rng)[:60],
            }
            self.threads[action.thread] = thread
            return [
                self._gh_send(
                    "issues" if is_issue else "discussion",
                    "opened" if is_issue else "created",
                    {"issue" if is_issue else "discussion": self._gh_thread(thread)},
                    action,
                )
            ]
        if thread is None:
            return []
        if action.kind == "accept":
            answer = self.posts.get((action.thread, action.parent_post or 0))
            if thread["issue"] or answer is None:
                return []
            discussion = self._gh_thread(thread) | {
                "answer_chosen_at": _iso_s(action.at),
                "answer_chosen_by": self._gh_user(action.actor),
            }
            return [self._gh_send("discussion", "answered", {"discussion": discussion, "answer": answer}, action)]
        # a reply
        comment_id = 900_000_000 + self.c.index * 1_000_000 + len(self.posts) + 1
        parent = self.posts.get((action.thread, action.parent_post or 0))
        comment: dict[str, Any] = {
            "id": comment_id,
            "node_id": f"DC_sim{comment_id}",
            "user": self._gh_user(action.actor),
            "created_at": _iso_s(action.at),
            "updated_at": _iso_s(action.at),
            "author_association": self._gh_association(action.actor),
            "body": _text(self.rng),
        }
        if thread["issue"]:
            self.posts[(action.thread, action.post or 0)] = comment
            return [
                self._gh_send(
                    "issue_comment", "created", {"issue": self._gh_thread(thread), "comment": comment}, action
                )
            ]
        # GitHub nests one level: a reply to a reply hangs under its top-level comment
        parent_id = None
        if parent is not None and action.parent_post != 1:
            parent_id = parent.get("parent_id") or parent["id"]
        comment |= {
            "parent_id": parent_id,
            "child_comment_count": 0,
            "discussion_id": thread["id"],
        }
        self.posts[(action.thread, action.post or 0)] = comment
        return [
            self._gh_send(
                "discussion_comment", "created", {"discussion": self._gh_thread(thread), "comment": comment}, action
            )
        ]

    def _gh_thread(self, thread: dict[str, Any]) -> dict[str, Any]:
        common = {
            "id": thread["id"],
            "node_id": f"sim{thread['id']}",
            "number": thread["number"],
            "title": thread["title"],
            "user": thread["user"],
            "state": "open",
            "locked": False,
            "comments": 0,
            "created_at": thread["created_at"],
            "updated_at": thread["created_at"],
            "author_association": thread["association"],
            "body": "Simulated by pulse simulate.",
        }
        if thread["issue"]:
            return common | {"labels": [], "assignee": None, "assignees": [], "closed_at": None}
        return common | {
            "category": {"id": 32_000_000 + self.c.index, "name": "Q&A", "slug": "q-a", "is_answerable": True},
            "answer_chosen_at": None,
            "answer_chosen_by": None,
            "active_lock_reason": None,
        }

    def _gh_send(self, event: str, verb: str, payload: dict[str, Any], action: Action) -> Request:
        body = _json({"action": verb, **payload, **self._gh_context(), "sender": self._gh_user(action.actor)})
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "GitHub-Hookshot/pulse-sim",
            "X-GitHub-Event": event,
            "X-GitHub-Delivery": str(uuid.UUID(int=self.rng.getrandbits(128), version=4)),
            "X-GitHub-Hook-ID": "109948940",
            "X-GitHub-Hook-Installation-Target-Type": "organization",
            "X-GitHub-Hook-Installation-Target-ID": "90000001",
        }
        if self.creds.github:
            headers |= signatures.sign_github(self.creds.github, body)
        return self._request("/webhooks/github", headers, body, action.at)

    # --------------------------------------------------------- Discourse

    def _dc_user(self, member: int) -> dict[str, Any]:
        if member == BOT:
            return {
                "user_id": -2,
                "username": "discobot",
                "name": "discobot",
                "admin": False,
                "moderator": False,
                "staff": False,
                "trust_level": 4,
            }
        moderator = member == 1
        return {"user_id": 1000 + self.c.index * 100_000 + member, "username": f"sim{self.c.index}_{member}",
                "name": f"Member {member}", "admin": False, "moderator": moderator, "staff": moderator,
                "trust_level": 2 if member < 5 else 1}  # fmt: skip

    def _discourse(self, action: Action) -> list[Request]:
        category = 100 + self.c.index
        slug = self.c.name
        if action.kind == "join":
            uid = 1000 + self.c.index * 100_000 + action.actor
            user = {"id": uid, "username": f"sim{self.c.index}_{action.actor}", "name": None,
                    "avatar_template": "/letter_avatar_proxy/v4/letter/s/5daacb/{size}.png",
                    "email": "member@example.com", "created_at": _iso_ms(action.at), "trust_level": 0,
                    "moderator": False, "admin": False, "staged": False, "post_count": 0}  # fmt: skip
            return [self._dc_send("user", "user_created", {"user": user}, action.at)]
        if action.kind not in ("thread", "reply") or action.thread is None:
            return []  # no reaction/leave webhooks modelled for Discourse
        out: list[Request] = []
        if action.kind == "thread":
            topic_id = 5000 + self.c.index * 100_000 + action.thread
            self.threads[action.thread] = {"id": topic_id, "title": _text(self.rng)[:60], "count": 0}
        thread = self.threads.get(action.thread)
        if thread is None:
            return []
        thread["count"] += 1
        post_number = thread["count"]
        self.posts[(action.thread, action.post or 0)] = {"post_number": post_number, "actor": action.actor}
        author = self._dc_user(action.actor)
        parent = self.posts.get((action.thread, action.parent_post or 0))
        reply_to = parent["post_number"] if parent and parent["post_number"] != 1 and action.kind == "reply" else None
        post: dict[str, Any] = {
            "id": 70_000 + self.c.index * 1_000_000 + len(self.posts),
            "name": author["name"],
            "username": author["username"],
            "avatar_template": "/letter_avatar_proxy/v4/letter/s/5daacb/{size}.png",
            "created_at": _iso_ms(action.at),
            "cooked": f"<p>{_text(self.rng)}</p>",
            "post_number": post_number,
            "post_type": 1,
            "posts_count": post_number,
            "updated_at": _iso_ms(action.at),
            "reply_count": 0,
            "reply_to_post_number": reply_to,
            "quote_count": 0,
            "incoming_link_count": 0,
            "reads": 0,
            "score": 0,
            "topic_id": thread["id"],
            "topic_slug": "simulated-topic",
            "topic_title": thread["title"],
            "category_id": category,
            "display_username": author["name"],
            "primary_group_name": None,
            "flair_name": None,
            "version": 1,
            "user_title": None,
            "bookmarked": False,
            "raw": _text(self.rng),
            "moderator": author["moderator"],
            "admin": author["admin"],
            "staff": author["staff"],
            "user_id": author["user_id"],
            "hidden": False,
            "trust_level": author["trust_level"],
            "deleted_at": None,
            "user_deleted": False,
            "edit_reason": None,
            "wiki": False,
            "reviewable_id": None,
            "reviewable_score_count": 0,
            "reviewable_score_pending_count": 0,
            "post_url": f"/t/simulated-topic/{thread['id']}/{post_number}",
            "topic_posts_count": post_number,
            "topic_filtered_posts_count": post_number,
            "topic_archetype": "regular",
            "category_slug": slug,
        }
        if reply_to is not None and parent is not None:
            # Discourse names the replied-to author by username only (no id): see HEADERS.md
            parent_user = self._dc_user(parent["actor"])
            post["reply_to_user"] = {
                "username": parent_user["username"],
                "name": parent_user["name"],
                "avatar_template": "/letter_avatar_proxy/v4/letter/s/5daacb/{size}.png",
            }
        if action.kind == "thread":
            topic = {"id": thread["id"], "title": thread["title"], "fancy_title": thread["title"],
                     "posts_count": 1, "created_at": _iso_ms(action.at), "archetype": "regular",
                     "category_id": category, "user_id": author["user_id"], "slug": "simulated-topic",
                     "created_by": {"id": author["user_id"], "username": author["username"]}, "tags": []}  # fmt: skip
            out.append(self._dc_send("topic", "topic_created", {"topic": topic}, action.at))
            if self.rng.random() < 0.05:
                # a private message among members: Discourse fires post_created for it too
                private = post | {"id": post["id"] + 500_000, "topic_id": thread["id"] + 50_000,
                                  "category_id": None, "topic_archetype": "private_message"}  # fmt: skip
                out.append(self._dc_send("post", "post_created", {"post": private}, action.at))
        out.append(self._dc_send("post", "post_created", {"post": post}, action.at))
        return out

    def _dc_send(self, group: str, event: str, payload: Mapping[str, Any], at: datetime) -> Request:
        body = _json(payload)
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "Discourse/2025.12.0-latest-pulsesim; +https://www.discourse.org/",
            "X-Discourse-Instance": DISCOURSE_INSTANCE,
            "X-Discourse-Event-Id": str(self.rng.randrange(1, 10**7)),
            "X-Discourse-Event-Type": group,
            "X-Discourse-Event": event,
        }
        secret = self.creds.discourse(DISCOURSE_INSTANCE)
        if secret:
            headers |= signatures.sign_discourse(secret, body)
        return self._request("/webhooks/discourse", headers, body, at)

    # ------------------------------------------------------------- Slack

    @property
    def team(self) -> str:
        return "TPULSESIM01"

    @property
    def channel(self) -> str:
        return f"CSIM{self.c.index:06d}"

    def _sl_user(self, member: int) -> str:
        return "UPULSEBOT01" if member == BOT else f"U{self.c.index:04d}{member:06d}"

    def _sl_ts(self, at: datetime) -> str:
        # ts is unique per channel: nudge by a microsecond on a collision
        micros = int(at.timestamp() * 1_000_000)
        while micros in self.used_ts:
            micros += 1
        self.used_ts.add(micros)
        return f"{micros // 1_000_000}.{micros % 1_000_000:06d}"

    def _slack(self, action: Action) -> list[Request]:
        channel = self.channel
        if action.kind in ("join", "leave"):
            user = self._sl_user(action.actor)
            ts = self._sl_ts(action.at)
            kind = "member_joined_channel" if action.kind == "join" else "member_left_channel"
            event: dict[str, Any] = {"type": kind, "user": user, "channel": channel, "channel_type": "C",
                                     "team": self.team, "event_ts": ts}  # fmt: skip
            out = [self._sl_send(event, action.at)]
            subtype = "channel_join" if action.kind == "join" else "channel_leave"
            notice: dict[str, Any] = {"type": "message", "subtype": subtype, "ts": ts, "user": user,
                       "text": f"<@{user}> has {'joined' if action.kind == 'join' else 'left'} the channel",
                       "channel": channel, "event_ts": ts, "channel_type": "channel"}  # fmt: skip
            out.append(self._sl_send(notice, action.at))
            return out
        if action.thread is None:
            return []
        if action.kind == "reaction":
            parent = self.posts.get((action.thread, action.parent_post or 0))
            if parent is None:
                return []
            name = self.rng.choice(["+1", "tada", "eyes", "heart", "white_check_mark"])
            if (parent["ts"], action.actor, name) in self.reacted:
                return []  # Slack keeps one of each reaction per person and message
            self.reacted.add((parent["ts"], action.actor, name))
            reaction: dict[str, Any] = {"type": "reaction_added", "user": self._sl_user(action.actor),
                     "item": {"type": "message", "channel": channel, "ts": parent["ts"]},
                     "reaction": name,
                     "item_user": parent["user"], "event_ts": self._sl_ts(action.at)}  # fmt: skip
            return [self._sl_send(reaction, action.at)]
        if action.kind not in ("thread", "reply"):
            return []
        ts = self._sl_ts(action.at)
        user = self._sl_user(action.actor)
        message: dict[str, Any] = {"type": "message", "text": _text(self.rng), "user": user, "ts": ts,
                                   "team": self.team, "channel": channel, "event_ts": ts,
                                   "channel_type": "channel"}  # fmt: skip
        if action.actor == BOT:
            message |= {"bot_id": "BPULSEBOT1", "app_id": "APULSESIM1",
                        "bot_profile": {"id": "BPULSEBOT1", "deleted": False, "name": "Pulse helper",
                                        "app_id": "APULSESIM1", "team_id": self.team}}  # fmt: skip
        else:
            message["client_msg_id"] = str(uuid.UUID(int=self.rng.getrandbits(128), version=4))
        if action.kind == "reply":
            root = self.posts.get((action.thread, 1))
            if root is None:
                return []
            message |= {"thread_ts": root["ts"], "parent_user_id": root["user"]}
        self.posts[(action.thread, action.post or 0)] = {"ts": ts, "user": user}
        return [self._sl_send(message, action.at)]

    def _sl_send(self, event: dict[str, Any], at: datetime) -> Request:
        envelope = {
            "token": "simulated0000000000000000",
            "team_id": self.team,
            "context_team_id": self.team,
            "context_enterprise_id": None,
            "api_app_id": "APULSESIM1",
            "event": event,
            "type": "event_callback",
            "event_id": _rid(self.rng, "Ev"),
            "event_time": int(at.timestamp()),
            "authorizations": [
                {
                    "enterprise_id": None,
                    "team_id": self.team,
                    "user_id": "UPULSEBOT01",
                    "is_bot": True,
                    "is_enterprise_install": False,
                }
            ],
            "is_ext_shared_channel": False,
        }
        body = _json(envelope)
        headers = {"Content-Type": "application/json", "User-Agent": "Slackbot 1.0 (+https://api.slack.com/robots)"}
        if self.creds.slack:
            headers |= sign_slack_now(self.creds.slack, body, self.signed_at)
        return self._request("/webhooks/slack", headers, body, at)

    # ----------------------------------------------------------- generic

    def _generic(self, action: Action) -> list[Request]:
        """Canonical events (one per action); the generator batches them into requests."""
        kinds = {"thread": "thread_started", "reply": "reply", "reaction": "reaction", "join": "member_joined",
                 "leave": "member_left", "accept": "answer_accepted"}  # fmt: skip
        thread = f"t{action.thread}" if action.thread is not None else None
        parent = None
        if action.parent_post is not None and thread is not None:
            parent = thread if action.parent_post == 1 else f"{thread}#{action.parent_post}"
        event = {
            "event_id": f"sim-{self.c.index}-{self.rng.getrandbits(64):016x}",
            "platform": GENERIC_PLATFORM,
            "space_id": "pulse-sim",
            "community_id": f"{GENERIC_PLATFORM}:{self.c.name}",
            "kind": kinds[action.kind],
            "actor_id": "bot" if action.actor == BOT else f"user-{action.actor}",
            "actor_type": "bot" if action.actor == BOT else "human",
            "thread_id": thread,
            "parent_id": parent,
            "parent_actor_id": None if action.parent_actor is None else f"user-{action.parent_actor}",
            "occurred_at": _iso_ms(action.at),
        }
        return [self._request("/v1/events", {"Content-Type": "application/x-ndjson"}, _json(event), action.at)]


def sign_slack_now(secret: str, body: bytes, now: float) -> dict[str, str]:
    """Slack signs at send time: the request timestamp is now, whatever the event time."""
    return signatures.sign_slack(secret, body, int(now))


def resign_slack(request: Request, secret: str, now: float) -> Request:
    """A fresh X-Slack-Request-Timestamp and signature (Slack's 5-minute window)."""
    if request.platform != "slack":
        return request
    stale = ("x-slack-signature", "x-slack-request-timestamp")
    headers = {k: v for k, v in request.headers.items() if k.lower() not in stale}
    headers |= sign_slack_now(secret, request.body, now)
    return Request(request.platform, request.path, headers, request.body, request.occurred_at, request.meta)
