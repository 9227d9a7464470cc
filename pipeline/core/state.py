"""Serialization of one community's engine: compact JSON of plain lists, in pages when busy.

Built from comprehensions over the engine's plain containers and written by ``orjson.dumps``
(10x the standard library's C encoder on a real community's state): an actor index table
would halve the posters' size but cost more time than the whole dump. Times are integer
milliseconds (member times hour numbers). ``format`` guards against reading a state written
by an incompatible version. The policy is not part of the state: it comes from the directory
file at load time, so a threshold change applies to existing state.

What grows with a community's volume is its threads (up to 28 days) and the event ids of
its last day. Written whole at every save, a channel at 20 events/s wrote 0.5 MiB after
15 minutes and kept growing, until saving was most of the worker's time. So the worker
saves with ``writes``: a head record keyed by the community id holds everything else and
names the community's *pages*, records of their own:

- threads by creation order, ``THREADS_PER_PAGE`` to a page: a save rewrites the pages whose
  threads changed (a new thread, a reply, a prune), and the head holds the page still filling;
- the event ids of an hour with ``IDS_PER_PAGE`` or more, in pages of that many: an hour's ids
  only grow, so a save writes its last page (and any new one); the same for the settled
  answers of a day (``ANSWERS_PER_PAGE``).

A quiet community never has pages: its head is its whole state, as ``encode`` writes it.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Iterator
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import orjson

from pipeline.core.buckets import Bucket
from pipeline.core.dedupe import Deduper
from pipeline.core.health import Verdict
from pipeline.core.latency import Thread, ThreadBook, page_of
from pipeline.core.policy import CommunityPolicy
from pipeline.core.windows import DAY_MS, HOUR_MS, StreamClock, WindowsConfig
from pipeline.results import HealthSnapshot

if TYPE_CHECKING:
    from pipeline.core.engine import CommunityEngine

FORMAT = 2  # 2: a busy community's threads and event ids may be in pages (records of their own)
READABLE = (1, 2)

# event ids per page of an hour that has this many or more: a save writes the hour's last
# page (and any new one), not the hour's 72,000 ids of a channel at 20 events/s
IDS_PER_PAGE = 2048
# settled answers per page of a day that has this many or more (they settle hourly, 3 days
# after they were answered, and are kept 7 days)
ANSWERS_PER_PAGE = 1024
# a page's key is the community's key, this byte and the page's name: never valid UTF-8, so
# never a community's key (any string is a valid community id)
PAGE_SEP = b"\xff"

# a state write: (key, record), record None to delete the key
Write = tuple[bytes, bytes | None]
ReadRecord = Callable[[bytes], bytes | None]
Held = tuple[int, int, list[Any]]  # a paged list: (gen, items saved, the list itself)


class StateError(ValueError):
    """The bytes are not a state this version can read."""


def state_key(community_id: str) -> bytes:
    """The key of a community's head record (the one that names its pages)."""
    return community_id.encode()


def page_key(community_id: str, name: str) -> bytes:
    return community_id.encode() + PAGE_SEP + name.encode()


def is_page_key(key: bytes) -> bool:
    return PAGE_SEP in key


class Pages:
    """Where a community's pages stood at its last save (what the stored head names).

    Every page record is written under a key never used before (a ``gen`` from a counter
    kept in the head), and a key the head no longer names is deleted after the head is
    written: a crash anywhere in a save leaves the previous head naming the records it was
    written with. An hour's event ids and a day's settled answers only grow: their pages are
    written from the last saved one on, and a head reads only the items it counted.
    """

    __slots__ = ("days", "hours", "inline_page", "last_gone", "next_gen", "redo", "thread_gens")

    def __init__(self) -> None:
        self.thread_gens: dict[int, int] = {}  # thread page -> gen of its current record
        self.inline_page: int | None = None  # the thread page the head held itself
        # paged hour of event ids / day of settled answers -> (gen, items saved, the list): another
        # list is an hour or day begun again
        self.hours: dict[int, Held] = {}
        self.days: dict[int, Held] = {}
        self.next_gen = 0
        self.last_gone: list[bytes] = []  # the deletions of the last save
        self.redo = False  # the last save was not written: write every page again

    def lost(self) -> None:
        """The records of the last ``writes`` were not written: the next one writes every page
        anew (under new keys) and deletes what the previous head named as well."""
        self.redo = True

    def _gen(self) -> int:
        self.next_gen += 1
        return self.next_gen - 1


def encode(engine: CommunityEngine) -> bytes:
    """The whole state in one record (no pages): for copies, tests and tools."""
    threads = engine.threads.threads
    doc = _head(engine, threads.values(), threads.keys(), engine.dedupe.to_plain(), engine.threads.settled)
    return orjson.dumps(doc)


def writes(engine: CommunityEngine) -> list[Write]:
    """The records to write so the stored state is the engine's: changed pages, the head, deletions.

    In that order: the head names only pages written before it, and a page it stops naming
    is deleted after it. Updates ``engine.pages`` as if every write is made; if they are not,
    call ``engine.pages.lost()`` before the next save.
    """
    cid = engine.community_id
    book = engine.threads
    pages = engine.pages
    out: list[Write] = []
    gone: list[bytes] = []
    inline = page_of(book.seq)
    dirty = set(book.touched)
    if pages.redo:  # the last save never reached the table: start over, deleting what it named too
        gone += pages.last_gone
        dirty |= set(pages.thread_gens) | set(book.page_tids)
        for letter, held, per_page in (("d", pages.hours, IDS_PER_PAGE), ("s", pages.days, ANSWERS_PER_PAGE)):
            for key, h in held.items():
                gone += _list_page_keys(cid, letter, key, h, per_page)
            held.clear()
        pages.redo = False
    # threads: the page still filling stays in the head; a touched page of its own is rewritten
    dirty.discard(inline)
    if pages.inline_page is not None and pages.inline_page != inline:
        dirty.add(pages.inline_page)  # just filled: from now on a record of its own
    threads = book.threads
    for page in sorted(dirty):
        tids = _alive(book, page)
        old = pages.thread_gens.pop(page, None)
        if old is not None:
            gone.append(page_key(cid, f"t{page}.{old}"))
        if not tids:
            book.page_tids.pop(page, None)
            continue
        book.page_tids[page] = tids  # without those gone
        gen = pages.thread_gens[page] = pages._gen()
        out.append((page_key(cid, f"t{page}.{gen}"), orjson.dumps({tid: _record(threads[tid]) for tid in tids})))
    book.touched.clear()
    pages.inline_page = inline
    inline_tids = _alive(book, inline)
    # event ids by hour and settled answers by day: small lists stay in the head, a long one is
    # written from its last saved page on
    dedupe = engine.dedupe
    small_hours = _grown(cid, "d", dedupe.by_hour, pages.hours, _pack_ids, IDS_PER_PAGE, pages, out, gone)
    small_days = _grown(cid, "s", book.settled, pages.days, _pack_answers, ANSWERS_PER_PAGE, pages, out, gone)
    head = _head(
        engine,
        (threads[tid] for tid in inline_tids),
        inline_tids,
        {str(hour): dedupe.pack(hour, dedupe.by_hour[hour]) for hour in small_hours},
        {day: book.settled[day] for day in small_days},
    )
    head["thread_pages"] = sorted(pages.thread_gens.items())  # [page, gen]: records "t<page>.<gen>"
    head["id_pages"] = [[hour, gen, n] for hour, (gen, n, _) in pages.hours.items()]  # "d<hour>.<gen>.<i>"
    head["settled_pages"] = [[day, gen, n] for day, (gen, n, _) in pages.days.items()]  # "s<day>.<gen>.<i>"
    head["page_gen"] = pages.next_gen
    out.append((state_key(cid), orjson.dumps(head)))
    pages.last_gone = gone
    out += [(key, None) for key in gone]
    return out


def _alive(book: ThreadBook, page: int) -> list[str]:
    """The threads in a page now (its list also has threads since forgotten, or created twice)."""
    threads = book.threads
    return [tid for tid in dict.fromkeys(book.page_tids.get(page, ())) if (t := threads.get(tid)) and t.page == page]


def _grown(
    community_id: str,
    letter: str,
    lists: dict[int, list[Any]],
    held: dict[int, Held],
    pack: Callable[[list[Any]], bytes],
    per_page: int,
    pages: Pages,
    out: list[Write],
    gone: list[bytes],
) -> list[int]:
    """Page the lists that only grow (or go whole) once they reach ``per_page`` items; the keys
    of those still shorter (for the head). Adds the pages to write to ``out``, the keys to
    delete to ``gone``, and updates ``held``."""
    for key in [k for k, h in held.items() if lists.get(k) is not h[2]]:
        # forgotten (or forgotten and begun again: a list of its own, so new keys)
        gone += _list_page_keys(community_id, letter, key, held.pop(key), per_page)
    small: list[int] = []
    for key, items in lists.items():
        h = held.get(key)
        if h is None:
            if len(items) < per_page:
                small.append(key)
                continue
            h = (pages._gen(), 0, items)
        gen, saved, _ = h
        if saved == len(items):
            continue
        for i in range(saved // per_page, (len(items) - 1) // per_page + 1):
            chunk = items[i * per_page : (i + 1) * per_page]
            out.append((page_key(community_id, f"{letter}{key}.{gen}.{i}"), pack(chunk)))
        held[key] = (gen, len(items), items)
    return small


def _list_page_keys(community_id: str, letter: str, key: int, held: Held, per_page: int) -> list[bytes]:
    """The keys of a paged list's pages as last saved."""
    gen, saved, _ = held
    return [page_key(community_id, f"{letter}{key}.{gen}.{i}") for i in range(-(-saved // per_page))]


def _read_grown(
    listed: Iterable[list[int]],
    letter: str,
    unpack: Callable[[bytes, int], list[Any]],
    per_page: int,
    page: Callable[[str], bytes],
) -> Iterator[tuple[int, int, list[Any]]]:
    """(key, gen, items) of each paged list a head names ([key, gen, items saved])."""
    for key, gen, n in listed:
        raw = b"".join(page(f"{letter}{key}.{gen}.{i}") for i in range(-(-n // per_page)))
        # a crash between a page and its head can leave the last page longer: read n items
        yield key, gen, unpack(raw, n)


def _pack_ids(ids: list[int]) -> bytes:
    return struct.pack(f">{len(ids)}Q", *ids)


def _unpack_ids(raw: bytes, n: int) -> list[int]:
    return list(struct.unpack(f">{n}Q", raw[: n * 8]))


def _pack_answers(pairs: list[tuple[int, int]]) -> bytes:
    return struct.pack(f">{2 * len(pairs)}q", *(x for pair in pairs for x in pair))


def _unpack_answers(raw: bytes, n: int) -> list[tuple[int, int]]:
    flat = struct.unpack(f">{2 * n}q", raw[: n * 16])
    return list(zip(flat[::2], flat[1::2], strict=True))


def _record(t: Thread) -> list[Any]:
    return [
        t.start_ms,
        t.author,
        t.c1_actor,
        t.c1_ms,
        t.c2_actor,
        t.c2_ms,
        t.emitted_version,
        t.emitted_ms,
        t.emitted_actor,
        t.emitted_start,
        # held replies only when there are any: most threads have none
        *([[list(h) for h in t.held]] if t.held else []),
    ]


def _head(
    engine: CommunityEngine,
    threads: Iterable[Thread],
    tids: Iterable[str],
    dedupe: dict[str, str],
    settled: dict[int, list[tuple[int, int]]],
) -> dict[str, Any]:
    # comprehensions over plain containers, then one C-level orjson.dumps by the caller: this
    # runs after every batch, so it avoids per-item Python work beyond building the lists
    hour = HOUR_MS
    verdict = engine.verdict
    return {
        "format": FORMAT,
        "id": [engine.community_id, engine.platform, engine.space_id],
        "config": _plain_config(engine.config),
        "clock": engine.clock.to_plain(),
        # member times are whole hours (see engine._note_member): stored as hour numbers
        "members": {a: [f // hour, last // hour] for a, (f, last) in engine.members.items()},
        "threads": dict(zip(tids, map(_record, threads), strict=True)),
        "seq": engine.threads.seq,
        # answered threads kept for the 7 d views only: [day, [start, latency, start, latency, ...]]
        "settled": [
            [day, [x for start, fr in pairs for x in (start, fr - start)]]
            for day, pairs in sorted(settled.items())  # by day: a restore may hold them in another order
        ],
        "hours": [b.to_plain() for b in engine.buckets["1h"].values()],
        "days": [b.to_plain() for b in engine.buckets["1d"].values()],
        "dedupe": dedupe,
        "last_post": engine.last_post_ms,
        "verdict": [verdict.state, list(verdict.flags), verdict.responsiveness] if verdict else None,
        "snapshot": engine.snapshot.model_dump(mode="json") if engine.snapshot else None,
        "health": [engine.health_version, engine.last_health_eval_ms, engine.pruned_hour, engine.emitted_at_ms],
        "emitted_figures": list(engine.emitted_figures) if engine.emitted_figures is not None else None,
        "totals": [
            engine.total_duplicates,
            engine.total_late_applied,
            engine.total_late_dropped,
            engine.total_future_dropped,
        ],
    }


@lru_cache(maxsize=64)
def _plain_config(config: WindowsConfig) -> dict[str, Any]:
    # a worker's engines share a handful of (frozen) configs; asdict of one cost a tenth of a
    # small community's encode. Only read by orjson.dumps: never mutated.
    return config.to_plain()


def decode(data: bytes, policy: CommunityPolicy, read: ReadRecord | None = None) -> CommunityEngine:
    """The engine of a head record; ``read`` gives the records of the pages it names."""
    from pipeline.core.engine import CommunityEngine

    try:
        doc = orjson.loads(data)
    except ValueError as exc:
        raise StateError(f"state is not JSON: {exc}") from None
    if not isinstance(doc, dict) or doc.get("format") not in READABLE:
        raise StateError(f"unknown state format: {doc.get('format') if isinstance(doc, dict) else doc!r}")
    community_id, platform, space_id = doc["id"]
    config = WindowsConfig.from_plain(doc["config"])
    engine = CommunityEngine(community_id, platform, space_id, policy, config)
    engine.clock = StreamClock.from_plain(config.idle_after_ms, doc["clock"])
    engine.members = {actor: [first * HOUR_MS, last * HOUR_MS] for actor, (first, last) in doc["members"].items()}
    pages = engine.pages

    def page(name: str) -> bytes:
        record = read(page_key(community_id, name)) if read is not None else None
        if record is None:
            raise StateError(f"state of {community_id!r}: its page {name!r} is missing")
        return record

    threads: dict[str, Thread] = {}
    for number, gen in doc.get("thread_pages", ()):
        for tid, plain in orjson.loads(page(f"t{number}.{gen}")).items():
            threads[tid] = _thread(plain, number)
        pages.thread_gens[number] = gen
    seq = doc.get("seq", len(doc["threads"]))  # states before pages: as if all were new
    pages.inline_page = page_of(seq)
    for tid, plain in doc["threads"].items():
        threads[tid] = _thread(plain, pages.inline_page)
    now = engine.clock.now
    # "recent" must be a superset of what the engine's pruning keeps (see engine._prune)
    recent_since = (now - 2 * config.max_lateness_ms - 2 * DAY_MS) if now is not None else 0
    settled = {  # absent from states written before it existed
        day: [(flat[i], flat[i] + flat[i + 1]) for i in range(0, len(flat), 2)] for day, flat in doc.get("settled", [])
    }
    for day, gen, pairs in _read_grown(doc.get("settled_pages", ()), "s", _unpack_answers, ANSWERS_PER_PAGE, page):
        settled[day] = pairs
        pages.days[day] = (gen, len(pairs), pairs)
    engine.threads = ThreadBook.rebuild(threads, recent_since, settled, seq)
    for size, key in (("1h", "hours"), ("1d", "days")):
        for plain in doc[key]:
            b = Bucket.from_plain(plain)
            engine.buckets[size][b.start_ms] = b
            if b.dirty:
                engine._dirty.add((size, b.start_ms))
            if not b.final:
                engine._note_pending(b.start_ms, size)
    engine.dedupe = Deduper.from_plain(config.dedupe_max_entries, doc["dedupe"])
    for hour, gen, ids in _read_grown(doc.get("id_pages", ()), "d", _unpack_ids, IDS_PER_PAGE, page):
        engine.dedupe.restore_hour(hour, ids)
        pages.hours[hour] = (gen, len(ids), ids)
    pages.next_gen = doc.get("page_gen", 0)
    engine.last_post_ms = doc["last_post"]
    if doc["verdict"] is not None:
        state, flags, responsiveness = doc["verdict"]
        engine.verdict = Verdict(state, tuple(flags), responsiveness)
    if doc["snapshot"] is not None:
        engine.snapshot = HealthSnapshot.model_validate(doc["snapshot"])
    engine.health_version, engine.last_health_eval_ms, engine.pruned_hour = doc["health"][:3]
    # states saved before the figure refresh have neither: the next change emits as before
    engine.emitted_at_ms = doc["health"][3] if len(doc["health"]) > 3 else None
    figures = doc.get("emitted_figures")
    engine.emitted_figures = tuple(figures) if figures is not None else None
    totals = [*doc["totals"], 0][:4]  # states written before future_dropped existed have 3
    (
        engine.total_duplicates,
        engine.total_late_applied,
        engine.total_late_dropped,
        engine.total_future_dropped,
    ) = totals
    return engine


def _thread(plain: list[Any], page: int) -> Thread:
    t = Thread(*plain[:10])
    t.page = page
    if len(plain) > 10:
        t.held = [(at, actor) for at, actor in plain[10]]
    elif t.start_ms is None and t.c1_actor is not None:
        # written before replies were held: an orphan's replies were its two candidates
        t.held = [(ms, a) for a, ms in ((t.c1_actor, t.c1_ms), (t.c2_actor, t.c2_ms)) if a is not None]
        t.c1_actor = t.c2_actor = None
        t.c1_ms = t.c2_ms = 0
    return t
