-- Holds the sweep released (their gateway died or lost its lease, or they
-- expired), one row each, so that a settlement that comes after all adds
-- its cost once: it sets charged_micros, which only one settlement can.
-- Without these rows a settlement that finds no hold could not tell a hold
-- the sweep released (its cost still to add) from one it settled itself
-- on an earlier try whose answer was lost (nothing left to add), and could
-- not be tried again safely. Deleted an hour after the hold's own expiry,
-- past which no settlement of it comes.
CREATE TABLE freehold_released_holds (
    reservation_id TEXT   PRIMARY KEY,
    key_id         TEXT   NOT NULL,
    expires_at_ms  BIGINT NOT NULL,
    charged_micros BIGINT
);

CREATE INDEX freehold_released_holds_expiry ON freehold_released_holds (expires_at_ms);
