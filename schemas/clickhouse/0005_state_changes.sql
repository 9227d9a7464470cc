-- State changes: the snapshots whose primary state differs from the previous one, kept apart so
-- "when did this community start dying" is a small, direct read.
--
-- Filled by a materialized view on health_snapshots, so a change is stored in the same insert as
-- its snapshot and can never be missing from one table but present in the other.
-- ORDER BY (community_id, changed_at, to_state): timeline of one community; a replayed snapshot
-- gives the same key and ReplacingMergeTree folds it (materialized views do not see the
-- insert_deduplication_token, so queries read this table with FINAL).
CREATE TABLE IF NOT EXISTS state_changes
(
    community_id  String,
    platform      LowCardinality(String),
    changed_at    DateTime64(3, 'UTC'),
    from_state    LowCardinality(String),
    to_state      LowCardinality(String),
    flags         Array(LowCardinality(String)),
    evaluated_at  DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(changed_at)
ORDER BY (community_id, changed_at, to_state);

CREATE MATERIALIZED VIEW IF NOT EXISTS state_changes_mv TO state_changes AS
SELECT
    community_id,
    platform,
    stream_time AS changed_at,
    assumeNotNull(previous_state) AS from_state,
    state AS to_state,
    flags,
    evaluated_at
FROM health_snapshots
WHERE previous_state IS NOT NULL AND previous_state != state;
