"""Community behaviours as platform-neutral actions (pure, seeded).

A behaviour is a small set of numbers: how many threads a day, how many
replies, how quickly and how surely someone other than the author answers,
how concentrated posting is, and how the activity changes over the span:

- ``healthy``: steady activity from many members, most threads answered within the hour.
- ``dying``: like healthy, then the last 7 days drop to a fifth of the rate.
- ``dead``: normal activity that stops 16 days before the end.
- ``one_poster``: one member writes nearly everything (top-1 share well above 0.9).
- ``on_demand``: brisk answers, median first response about 15 minutes.
- ``when_we_can``: answers after many hours, about half the threads never
  answered, and an auto-responder bot that replies at once (bots never count).

The shapes need history to show: ``dying`` needs about 5 weeks (a 4-week baseline
before the last week), ``dead`` more than 16 days.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import datetime, timedelta

BEHAVIOURS = ("healthy", "dying", "dead", "one_poster", "on_demand", "when_we_can")

DAY = timedelta(days=1)


@dataclass(frozen=True)
class Profile:
    members: int
    threads_per_day: float
    replies_per_thread: float  # mean number of follow-up posts after the first response
    answered: float  # probability that someone other than the author responds at all
    first_response_median_s: float
    zipf: float  # posting concentration over members (0 = uniform)
    top_poster_share: float = 0.0  # one_poster: probability a post is by member 0
    bot_reply: float = 0.02  # probability a thread also gets a bot reply
    reactions_per_post: float = 0.3
    joins_per_day: float = 0.5
    leaves_per_day: float = 0.1
    answer_accepted: float = 0.3  # of answered questions (GitHub discussions)


PROFILES: dict[str, Profile] = {
    "healthy": Profile(members=40, threads_per_day=4, replies_per_thread=2.5, answered=0.9,
                       first_response_median_s=40 * 60, zipf=1.0),
    "dying": Profile(members=30, threads_per_day=4, replies_per_thread=2.0, answered=0.85,
                     first_response_median_s=90 * 60, zipf=1.0),
    "dead": Profile(members=20, threads_per_day=3, replies_per_thread=1.5, answered=0.8,
                    first_response_median_s=2 * 3600, zipf=1.0, joins_per_day=0.2),
    "one_poster": Profile(members=15, threads_per_day=3, replies_per_thread=0.6, answered=0.04,
                          first_response_median_s=3 * 3600, zipf=0.0, top_poster_share=1.0,
                          bot_reply=0.0, reactions_per_post=0.1, joins_per_day=0.1),
    "on_demand": Profile(members=40, threads_per_day=5, replies_per_thread=2.0, answered=0.97,
                         first_response_median_s=15 * 60, zipf=0.8),
    "when_we_can": Profile(members=30, threads_per_day=3, replies_per_thread=1.0, answered=0.5,
                           first_response_median_s=10 * 3600, zipf=1.0, bot_reply=0.6),
}  # fmt: skip


@dataclass(frozen=True)
class Action:
    """One thing a member did, before any platform shape is chosen."""

    kind: str  # thread | reply | reaction | join | leave | accept
    at: datetime
    actor: int  # member number; BOT for the community's bot
    thread: int | None = None  # thread number in the community
    post: int | None = None  # post number inside the thread (1 = the opening post)
    parent_post: int | None = None  # replied-to / reacted-to post number
    parent_actor: int | None = None  # its author


BOT = -1


def _poisson(rng: random.Random, lam: float) -> int:
    """Knuth's method; fine for the small means used here."""
    if lam <= 0:
        return 0
    limit, k, p = math.exp(-lam), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1


def _steady(rng: random.Random, mean: float) -> int:
    """A count with the given mean and little spread (randomized rounding).

    Thread starts use it so that a week of a steady community is never mistaken
    for a drop (Poisson counts over a week vary by about +-20 %).
    """
    whole = math.floor(mean)
    return whole + (1 if rng.random() < mean - whole else 0)


def _lognormal(rng: random.Random, median_s: float, sigma: float = 1.0) -> timedelta:
    return timedelta(seconds=min(rng.lognormvariate(math.log(median_s), sigma), 30 * 86400))


def _hour_weights() -> list[float]:
    # people post in the day: a smooth curve peaking mid-afternoon UTC
    return [0.25 + math.exp(-(((h - 14) / 5.0) ** 2)) for h in range(24)]


HOURS = _hour_weights()


def rate_multiplier(behaviour: str, at: datetime, end: datetime) -> float:
    left = end - at
    if behaviour == "dying":
        return 0.2 if left <= 7 * DAY else 1.0
    if behaviour == "dead":
        return 0.0 if left <= 16 * DAY else 1.0
    return 1.0


class _Members:
    def __init__(self, rng: random.Random, profile: Profile) -> None:
        self.rng = rng
        self.profile = profile
        self.ids = list(range(profile.members))
        self.weights = [1.0 / (i + 1) ** profile.zipf for i in self.ids]

    def pick(self, exclude: int | None = None) -> int:
        if self.profile.top_poster_share and exclude != 0 and self.rng.random() < self.profile.top_poster_share:
            return 0
        while True:
            member = self.rng.choices(self.ids, self.weights)[0]
            if member != exclude and (not self.profile.top_poster_share or member != 0):
                return member


def community_actions(behaviour: str, start: datetime, end: datetime, rng: random.Random) -> list[Action]:
    """Every action of one community in [start, end), sorted by time."""
    profile = PROFILES[behaviour]
    members = _Members(rng, profile)
    actions: list[Action] = []
    thread_no = 0
    day = start
    while day < end:
        mult = rate_multiplier(behaviour, day, end)
        actions += _membership(rng, profile, day, end, mult)
        for _ in range(_steady(rng, profile.threads_per_day * mult)):
            at = day + timedelta(hours=rng.choices(range(24), HOURS)[0], seconds=rng.uniform(0, 3600))
            if at >= end:
                continue
            thread_no += 1
            actions += _thread(rng, profile, members, thread_no, at, end, behaviour)
        day += DAY
    actions.sort(key=lambda a: a.at)
    return actions


def _membership(rng: random.Random, profile: Profile, day: datetime, end: datetime, mult: float) -> list[Action]:
    found = []
    for kind, per_day in (("join", profile.joins_per_day * max(mult, 0.1)), ("leave", profile.leaves_per_day)):
        for _ in range(_poisson(rng, per_day)):
            at = day + timedelta(seconds=rng.uniform(0, 86400))
            if at < end:
                found.append(Action(kind, at, profile.members + rng.randrange(10_000)))
    return found


def _thread(
    rng: random.Random, profile: Profile, members: _Members, thread: int, at: datetime, end: datetime, behaviour: str
) -> list[Action]:
    author = members.pick()
    posts: list[tuple[int, int, datetime]] = [(1, author, at)]  # (post number, author, time)
    found = [Action("thread", at, author, thread=thread, post=1)]
    if rng.random() < profile.bot_reply:
        bot_at = at + timedelta(seconds=rng.uniform(5, 90))
        found.append(Action("reply", bot_at, BOT, thread, 2, 1, author))
        posts.append((2, BOT, bot_at))
    when = at
    if rng.random() < profile.answered:
        when = at + _lognormal(rng, profile.first_response_median_s)
        if when < end and rate_multiplier(behaviour, when, end) > 0:
            responder = members.pick(exclude=author)
            number = len(posts) + 1
            found.append(Action("reply", when, responder, thread, number, 1, author))
            posts.append((number, responder, when))
            if rng.random() < profile.answer_accepted:
                found.append(Action("accept", when + _lognormal(rng, 3600), author, thread, None, number, responder))
    for _ in range(_poisson(rng, profile.replies_per_thread)):
        when = when + _lognormal(rng, profile.first_response_median_s * 1.5)
        if when >= end or rate_multiplier(behaviour, when, end) == 0:
            break
        # follow-ups: often the author again (in one_poster communities nearly always)
        replier = author if rng.random() < 0.3 or profile.top_poster_share else members.pick()
        parent_post, parent_actor, _ = rng.choice(posts)
        number = len(posts) + 1
        found.append(Action("reply", when, replier, thread, number, parent_post, parent_actor))
        posts.append((number, replier, when))
    for post, post_author, posted_at in posts:
        if post_author == BOT:
            continue
        for _ in range(_poisson(rng, profile.reactions_per_post)):
            react_at = posted_at + _lognormal(rng, 3 * 3600)
            if react_at < end and rate_multiplier(behaviour, react_at, end) > 0:
                reactor = members.pick(exclude=post_author)
                found.append(Action("reaction", react_at, reactor, thread, None, post, post_author))
    return [a for a in found if a.at < end]
