-- Per-key rate limits shared by every gateway using this database: the
-- requests and tokens counted in the current minute (window_start_ms, a
-- multiple of 60,000 on the database's clock) and in the minute before it.
-- A gateway admits a request with one conditional UPDATE of its key's row.
CREATE TABLE freehold_rate_windows (
    key_id          TEXT   PRIMARY KEY REFERENCES freehold_keys (id),
    window_start_ms BIGINT NOT NULL,
    requests        BIGINT NOT NULL DEFAULT 0,
    prev_requests   BIGINT NOT NULL DEFAULT 0,
    tokens          BIGINT NOT NULL DEFAULT 0,
    prev_tokens     BIGINT NOT NULL DEFAULT 0
);
