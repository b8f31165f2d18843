-- Each ledger line names the request it records by the id the client got
-- back in its `request-id` and `x-request-id` headers, so that a client's
-- error can be found in the ledger. Lines written before this version, or
-- by an older gateway sharing the database, have none.
--
-- No index: a request is looked up rarely (by a person asking about one),
-- and writing each line stays as cheap as it was. A lookup in a large
-- ledger reads through it; `--since` narrows that through the index on
-- at_ms.
ALTER TABLE freehold_usage ADD COLUMN request_id TEXT;
