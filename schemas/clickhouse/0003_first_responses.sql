-- The first response to each thread from someone other than its author (bots excluded).
--
-- ORDER BY (community_id, thread_id): the identity of the row (a corrected row carries a higher
-- version, ReplacingMergeTree(version) keeps it) and the natural drill-down "threads of one community".
-- PARTITION BY month of the thread's start: the key never changes partition.
CREATE TABLE IF NOT EXISTS first_responses
(
    community_id      String,
    thread_id         String,
    thread_author_id  String,
    thread_started_at DateTime64(3, 'UTC'),
    responder_id      String,
    responded_at      DateTime64(3, 'UTC'),
    latency_s         Float64,
    version           UInt64,
    stored_at         DateTime64(3, 'UTC') DEFAULT now64(3),
    CONSTRAINT latency_not_negative CHECK latency_s >= 0
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(thread_started_at)
ORDER BY (community_id, thread_id)
SETTINGS non_replicated_deduplication_window = 1000;
