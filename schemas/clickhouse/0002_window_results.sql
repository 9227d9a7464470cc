-- One row per (community, window size, window start); the worker re-emits a window with a rising
-- version as it changes, and the highest version wins: ReplacingMergeTree(version).
--
-- ORDER BY (community_id, window, window_start) is both the identity of a window and the order of
-- the drill-down query "last N hourly / daily windows of one community" (a primary-key range read).
-- PARTITION BY (window, month of window_start): a window's key always falls in one partition, so
-- replacement is complete within it; hourly and daily rows age separately.
-- Queries read with FINAL (or argMax(..., version)) so unmerged older versions never show.
-- CHECK constraints refuse rows no worker can honestly produce; the sink sends such a row to the
-- dead-letter topic instead of blocking the batch.
CREATE TABLE IF NOT EXISTS window_results
(
    community_id              String,
    platform                  LowCardinality(String),
    space_id                  String,
    window                    LowCardinality(String),
    window_start              DateTime64(3, 'UTC'),
    window_end                DateTime64(3, 'UTC'),
    version                   UInt64,
    final                     Bool,
    threads_started           UInt32,
    replies                   UInt32,
    reactions                 UInt32,
    joins                     UInt32,
    leaves                    UInt32,
    answers_accepted          UInt32,
    other_events              UInt32,
    posts                     UInt32,
    active_members            UInt32,
    new_members               UInt32,
    returning_members         UInt32,
    replies_per_thread        Float64,
    top1_share                Float64,
    top3_share                Float64,
    gini                      Float64,
    absence_factor            UInt32,
    first_response_p50_s      Nullable(Float64),
    first_response_p90_s      Nullable(Float64),
    threads_answered          UInt32,
    threads_unanswered        UInt32,
    oldest_unanswered_age_s   Nullable(Float64),
    bot_posts                 UInt32,
    late_events               UInt32,
    emitted_at                DateTime64(3, 'UTC'),
    stored_at                 DateTime64(3, 'UTC') DEFAULT now64(3),
    CONSTRAINT window_known CHECK window IN ('1h', '1d'),
    CONSTRAINT window_ordered CHECK window_end > window_start,
    CONSTRAINT shares_are_fractions CHECK top1_share BETWEEN 0 AND 1 AND top3_share BETWEEN 0 AND 1
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY (window, toYYYYMM(window_start))
ORDER BY (community_id, window, window_start)
SETTINGS non_replicated_deduplication_window = 1000;
