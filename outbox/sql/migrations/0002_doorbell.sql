-- 0002: the doorbell. NOTIFY only when a relay is waiting for work.
--
-- A relay that found nothing to do LISTENs on {channel} and holds the session advisory lock
-- {doorbell_lock} (exclusively) while it sleeps. Every INSERT statement into the outbox tries to
-- take that lock shared, for the rest of its transaction:
--   * it gets it: no relay is asleep; no NOTIFY, and no relay can fall asleep until this
--     transaction ends (its try-lock fails), so a relay cannot miss this event;
--   * it does not: a relay is asleep; NOTIFY, delivered when (and only if) the transaction commits.
-- A busy relay therefore costs the writers one uncontended shared lock per insert statement, and
-- only transactions committing while a relay sleeps pay for a NOTIFY (which serialises commits
-- cluster-wide). The relay releases the lock as soon as it wakes.

CREATE OR REPLACE FUNCTION {doorbell}() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    IF NOT pg_try_advisory_xact_lock_shared({doorbell_lock}) THEN
        PERFORM pg_notify({channel}, '');
    END IF;
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS {doorbell_trigger} ON {table};

CREATE TRIGGER {doorbell_trigger}
    AFTER INSERT ON {table}
    FOR EACH STATEMENT EXECUTE FUNCTION {doorbell}();
