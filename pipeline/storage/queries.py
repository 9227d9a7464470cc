"""Read API over the ClickHouse store: the community list and one community's drill-down.

Every read is duplicate-proof: window results and state changes are read with FINAL (the
highest version of each key), health with ``LIMIT 1 BY community_id`` over the latest
(stream_time, version, evaluated_at). Times come back as ISO-8601 UTC strings (``...Z``) and
the results are plain JSON-ready dicts, so the worker can serve them as they are.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pipeline.results import STATES

HEALTH_COLUMNS: tuple[str, ...] = (
    "community_id",
    "platform",
    "space_id",
    "community_type",
    "state",
    "previous_state",
    "flags",
    "responsiveness",
    "stream_time",
    "evaluated_at",
    "posts_1h",
    "posts_24h",
    "posts_7d",
    "posts_28d",
    "baseline_posts_per_week",
    "active_members_7d",
    "top1_share_28d",
    "threads_started_7d",
    "first_response_p50_7d_s",
    "answered_within_sla_7d",
    "unanswered_threads",
    "oldest_unanswered_age_s",
    "last_post_at",
    "version",
)

WINDOW_COLUMNS: tuple[str, ...] = (
    "window",
    "window_start",
    "window_end",
    "version",
    "final",
    "threads_started",
    "replies",
    "reactions",
    "joins",
    "leaves",
    "answers_accepted",
    "other_events",
    "posts",
    "active_members",
    "new_members",
    "returning_members",
    "replies_per_thread",
    "top1_share",
    "top3_share",
    "gini",
    "absence_factor",
    "first_response_p50_s",
    "first_response_p90_s",
    "threads_answered",
    "threads_unanswered",
    "oldest_unanswered_age_s",
    "bot_posts",
    "late_events",
    "emitted_at",
)

CHANGE_COLUMNS: tuple[str, ...] = ("changed_at", "from_state", "to_state", "flags")

TIME_COLUMNS = frozenset(
    {"stream_time", "evaluated_at", "last_post_at", "window_start", "window_end", "emitted_at", "changed_at"}
)

_LATEST_HEALTH = """
SELECT {columns}
FROM health_snapshots
{where}
ORDER BY community_id, stream_time DESC, version DESC, evaluated_at DESC
LIMIT 1 BY community_id
"""


# ---------------------------------------------------------------- pure helpers


def select_list(columns: tuple[str, ...]) -> str:
    """Times as epoch milliseconds: exact on every backend, whatever the session time zone."""
    return ", ".join(f"toUnixTimestamp64Milli({c}) AS {c}" if c in TIME_COLUMNS else f"`{c}`" for c in columns)


def iso_ms(epoch_ms: int | None) -> str | None:
    if epoch_ms is None:
        return None
    moment = datetime.fromtimestamp(epoch_ms / 1000, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{int(epoch_ms) % 1000:03d}Z"


def to_record(columns: tuple[str, ...], row: tuple[Any, ...] | list[Any]) -> dict[str, Any]:
    record: dict[str, Any] = {}
    for name, value in zip(columns, row, strict=True):
        if name in TIME_COLUMNS:
            record[name] = iso_ms(value)
        elif isinstance(value, tuple):
            record[name] = list(value)
        else:
            record[name] = value
    return record


def state_rank(state: str) -> int:
    return STATES.index(state) if state in STATES else len(STATES)  # type: ignore[arg-type,unused-ignore]


def sort_communities(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Worst state first, then the most unanswered threads, then by id."""
    return sorted(
        records,
        key=lambda r: (state_rank(r["state"]), -int(r.get("unanswered_threads") or 0), r["community_id"]),
    )


# ---------------------------------------------------------------- queries


def list_communities(client: Any, state: str | None = None, platform: str | None = None) -> list[dict[str, Any]]:
    """The latest health of every community (optionally of one state and/or platform)."""
    sql = _LATEST_HEALTH.format(columns=select_list(HEALTH_COLUMNS), where="")
    conditions, params = [], {}
    if state:
        conditions.append("state = {state:String}")
        params["state"] = state
    if platform:
        conditions.append("platform = {platform:String}")
        params["platform"] = platform
    if conditions:
        # filter the latest snapshot, never an older one of the same community
        sql = f"SELECT * FROM ({sql}) WHERE {' AND '.join(conditions)}"
    rows = client.query(sql, parameters=params).result_rows
    return sort_communities([to_record(HEALTH_COLUMNS, r) for r in rows])


def current_health(client: Any, community_id: str) -> dict[str, Any] | None:
    sql = _LATEST_HEALTH.format(columns=select_list(HEALTH_COLUMNS), where="WHERE community_id = {cid:String}")
    rows = client.query(sql, parameters={"cid": community_id}).result_rows
    return to_record(HEALTH_COLUMNS, rows[0]) if rows else None


def window_history(client: Any, community_id: str, window: str, limit: int) -> list[dict[str, Any]]:
    """The last ``limit`` windows of one size, oldest first, highest version of each."""
    return windows_of(client, [community_id], window, limit).get(community_id, [])


def windows_of(client: Any, community_ids: list[str], window: str, limit: int) -> dict[str, list[dict[str, Any]]]:
    """The last ``limit`` windows of one size of each community, oldest first, highest version of
    each, in one query; communities without windows are left out."""
    sql = f"""
        SELECT community_id, {select_list(WINDOW_COLUMNS)}
        FROM window_results FINAL
        WHERE community_id IN {{cids:Array(String)}} AND window = {{window:String}}
        ORDER BY community_id, window_start DESC
        LIMIT {int(limit)} BY community_id
    """
    rows = client.query(sql, parameters={"cids": list(community_ids), "window": window}).result_rows
    found: dict[str, list[dict[str, Any]]] = {}
    for row in reversed(rows):
        found.setdefault(row[0], []).append(to_record(WINDOW_COLUMNS, row[1:]))
    return found


def state_changes(client: Any, community_id: str, limit: int) -> list[dict[str, Any]]:
    sql = f"""
        SELECT {select_list(CHANGE_COLUMNS)}
        FROM state_changes FINAL
        WHERE community_id = {{cid:String}}
        ORDER BY changed_at DESC
        LIMIT {int(limit)}
    """
    rows = client.query(sql, parameters={"cid": community_id}).result_rows
    return [to_record(CHANGE_COLUMNS, r) for r in rows]


def community_detail(
    client: Any, community_id: str, *, hours: int = 48, days: int = 28, changes: int = 20
) -> dict[str, Any] | None:
    """Current health plus recent hourly and daily windows and state changes; None if unknown."""
    health = current_health(client, community_id)
    hourly = window_history(client, community_id, "1h", hours)
    daily = window_history(client, community_id, "1d", days)
    if health is None and not hourly and not daily:
        return None
    return {
        "community_id": community_id,
        "health": health,
        "hourly": hourly,
        "daily": daily,
        "state_changes": state_changes(client, community_id, changes),
    }
