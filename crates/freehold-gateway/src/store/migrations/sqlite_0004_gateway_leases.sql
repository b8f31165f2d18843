-- Gateways that hold budget reservations, each alive until its lease ends.
-- A gateway renews its lease while it runs; once a lease has run out (the
-- gateway was killed, or lost the database for longer than the lease),
-- any gateway sharing the database releases its reservations, without
-- waiting for their own, much longer, expiry.
CREATE TABLE freehold_gateways (
    id             TEXT   PRIMARY KEY,
    alive_until_ms BIGINT NOT NULL
);

ALTER TABLE freehold_reservations ADD COLUMN gateway_id TEXT;

CREATE INDEX freehold_reservations_gateway ON freehold_reservations (gateway_id);
