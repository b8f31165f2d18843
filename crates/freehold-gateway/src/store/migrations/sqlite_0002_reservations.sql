-- Budget reservations of requests in flight, one row each, so that a
-- gateway that dies mid-request does not hold them for good: once a row is
-- past expires_at_ms (set by the gateway that took it, beyond its longest
-- request), any gateway sharing the database releases it.
CREATE TABLE freehold_reservations (
    id            TEXT   PRIMARY KEY,
    key_id        TEXT   NOT NULL REFERENCES freehold_keys (id),
    micros        BIGINT NOT NULL,
    expires_at_ms BIGINT NOT NULL
);

CREATE INDEX freehold_reservations_expiry ON freehold_reservations (expires_at_ms);
