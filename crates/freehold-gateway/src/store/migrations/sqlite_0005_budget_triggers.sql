-- A budget's reservation and its settlement in one statement each, as
-- PostgreSQL does them with a data-modifying WITH (which SQLite lacks):
-- these triggers keep the key's totals in step with its holds inside the
-- statement that takes or settles a hold, so no transaction (and no round
-- trips for BEGIN and COMMIT) is needed. Releasing an expired hold
-- (a DELETE) is not affected: it updates the key itself.

-- Set by the settlement to the request's actual cost: the trigger below
-- then releases the hold, adds the cost, and deletes the row.
ALTER TABLE freehold_reservations ADD COLUMN settled_micros BIGINT;

-- Set by the reservations that count themselves through the trigger below.
-- A gateway of an older version may still be running when a newer
-- `freehold` upgrades the schema under it (the version check happens when
-- a store opens); its reservations update the key themselves and leave
-- this false, so that they are not counted twice.
ALTER TABLE freehold_reservations ADD COLUMN counted_by_trigger BOOLEAN NOT NULL DEFAULT FALSE;

-- A hold taken (an INSERT … SELECT that inserts only while the budget
-- allows it) counts in the key's reserved total.
CREATE TRIGGER freehold_reservation_taken
AFTER INSERT ON freehold_reservations
WHEN NEW.counted_by_trigger
BEGIN
    UPDATE freehold_keys SET reserved_micros = reserved_micros + NEW.micros
    WHERE id = NEW.key_id;
END;

-- A hold settled: released, its actual cost spent, its row gone.
CREATE TRIGGER freehold_reservation_settled
AFTER UPDATE OF settled_micros ON freehold_reservations
WHEN NEW.settled_micros IS NOT NULL
BEGIN
    UPDATE freehold_keys SET
        reserved_micros = CASE WHEN reserved_micros > OLD.micros
                               THEN reserved_micros - OLD.micros ELSE 0 END,
        spent_micros = spent_micros + NEW.settled_micros
    WHERE id = NEW.key_id;
    DELETE FROM freehold_reservations WHERE id = NEW.id;
END;
