-- Each ledger line names the end user its client sent the request for
-- (Anthropic's `metadata.user_id`, OpenAI's `safety_identifier` or `user`),
-- so that one key shared by many people or by an application's users can
-- be broken down by them (`freehold usage --by user`). Lines written
-- before this version, by an older gateway sharing the database, or for a
-- request that named no end user, have none.
--
-- No index, as for request ids: reports read the ledger through, and
-- writing each line stays as cheap as it was.
ALTER TABLE freehold_usage ADD COLUMN end_user TEXT;
