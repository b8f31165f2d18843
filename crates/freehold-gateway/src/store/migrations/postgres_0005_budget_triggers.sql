-- Nothing to do: PostgreSQL takes and settles a hold in one statement
-- already (a data-modifying WITH). This version exists so that both
-- backends number their schemas alike; SQLite gets triggers here.
SELECT 1;
