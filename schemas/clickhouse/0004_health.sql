-- Health snapshots: the worker emits one whenever a community's state, flags, responsiveness or
-- figures change. Every snapshot is history; "current health" is the latest per community.
--
-- ORDER BY (community_id, stream_time, version, evaluated_at): history of one community is a
-- primary-key range, and the latest-per-community query (LIMIT 1 BY community_id after sorting by
-- stream_time, version, evaluated_at) reads each community's rows in key order. The same Kafka
-- message replayed has the same key, so ReplacingMergeTree folds replays.
-- PARTITION BY month of stream time. Snapshots are few (emitted on change only), so scanning the
-- latest rows of every community for `pulse report` stays cheap.
CREATE TABLE IF NOT EXISTS health_snapshots
(
    community_id              String,
    platform                  LowCardinality(String),
    space_id                  String,
    community_type            LowCardinality(String),
    state                     LowCardinality(String),
    previous_state            LowCardinality(Nullable(String)),
    flags                     Array(LowCardinality(String)),
    responsiveness            LowCardinality(String),
    stream_time               DateTime64(3, 'UTC'),
    evaluated_at              DateTime64(3, 'UTC'),
    posts_1h                  UInt32,
    posts_24h                 UInt32,
    posts_7d                  UInt32,
    posts_28d                 UInt32,
    baseline_posts_per_week   Float64,
    active_members_7d         UInt32,
    top1_share_28d            Float64,
    threads_started_7d        UInt32,
    first_response_p50_7d_s   Nullable(Float64),
    answered_within_sla_7d    Nullable(Float64),
    unanswered_threads        UInt32,
    oldest_unanswered_age_s   Nullable(Float64),
    last_post_at              Nullable(DateTime64(3, 'UTC')),
    version                   UInt64,
    stored_at                 DateTime64(3, 'UTC') DEFAULT now64(3),
    CONSTRAINT state_known CHECK state IN ('dead', 'dying', 'one_poster', 'healthy')
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(stream_time)
ORDER BY (community_id, stream_time, version, evaluated_at)
SETTINGS non_replicated_deduplication_window = 1000;
