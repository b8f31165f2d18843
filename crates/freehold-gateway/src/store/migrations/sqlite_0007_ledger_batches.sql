-- The ledger batches written, one row each, so that a batch written again
-- after a failure that lost the database's answer (a connection dropped
-- while its COMMIT was under way) is written once. The writer inserts the
-- batch's row first, in the batch's own transaction: a second try finds it
-- and writes nothing. Deleted an hour after the batch was written, long
-- past the writer's last try.
CREATE TABLE freehold_ledger_batches (
    batch_id      TEXT   PRIMARY KEY,
    written_at_ms BIGINT NOT NULL
);

CREATE INDEX freehold_ledger_batches_written ON freehold_ledger_batches (written_at_ms);
