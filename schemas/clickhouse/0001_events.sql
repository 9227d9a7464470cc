-- Canonical events as the gateway accepted them (topic engagement.events), for analysts and replay.
--
-- ORDER BY (community_id, occurred_at, event_id): analysts read one community over a time range;
-- event_id last makes the sorting key the identity of an event, so ReplacingMergeTree folds the
-- copies that retries and replays create (the same action always carries the same event_id and
-- occurred_at). Queries that must count exactly use FINAL or uniqExact(event_id).
-- PARTITION BY month of event time: few partitions, and the TTL drops whole months cheaply.
-- TTL: raw events are kept 90 days of event time by default; `pulse db migrate --events-ttl-days N`
-- changes it (ALTER ... MODIFY TTL) without editing this file, so its checksum stays valid.
-- Window results, first responses and health are kept without TTL: they are small.
CREATE TABLE IF NOT EXISTS events
(
    event_id        String,
    platform        LowCardinality(String),
    space_id        String,
    community_id    String,
    kind            LowCardinality(String),
    actor_id        String,
    actor_type      LowCardinality(String),
    thread_id       Nullable(String),
    parent_id       Nullable(String),
    parent_actor_id Nullable(String),
    occurred_at     DateTime64(3, 'UTC'),
    received_at     DateTime64(3, 'UTC'),
    stored_at       DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(occurred_at)
ORDER BY (community_id, occurred_at, event_id)
TTL toDateTime(occurred_at) + INTERVAL 90 DAY
-- a retried sink batch carries the same insert_deduplication_token: dropped at insert time
SETTINGS non_replicated_deduplication_window = 1000;
