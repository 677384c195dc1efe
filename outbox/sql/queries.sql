-- Named queries of the outbox library and of the relay that reads its table.
--
-- A block starts with "-- name: <name>"; the comment lines after it document the query.
-- Names in braces (table, settings) are filled in with quoted identifiers by outbox.sql.render();
-- %(param)s placeholders are psycopg's.

-- name: insert_one
-- One event, with scalar parameters (psycopg dumps them much faster than arrays). The lock is
-- taken as in insert_many; pg_advisory_xact_lock(NULL) (an event without key) locks nothing.
WITH locks AS MATERIALIZED (SELECT count(pg_advisory_xact_lock(%(lock_key)s::bigint)) AS taken)
INSERT INTO {table} (event_id, topic, key, key_hash, type, payload, headers, created_at)
SELECT %(event_id)s::uuid, %(topic)s::text, %(key)s::text, %(key_hash)s::bigint, %(type)s::text,
       %(payload)s::bytea, %(headers)s::jsonb, %(created_at)s::timestamptz
FROM locks

-- name: insert_many
-- All events of one publish() call in one statement (one round trip, one trigger call).
-- First the advisory locks of the events' (topic, key)s, in the order given (publish() sorts
-- them and removes duplicates, so batches with overlapping keys cannot deadlock); they are held
-- until the transaction ends, so concurrent transactions publishing one key are serialised and
-- their ids follow commit order. The locks are taken before any id is drawn: the aggregate
-- must finish before the join yields its first row, and ids are drawn as rows are inserted.
WITH locks AS MATERIALIZED (
    SELECT count(pg_advisory_xact_lock(k)) AS taken FROM unnest(%(lock_keys)s::bigint[]) AS k
)
INSERT INTO {table} (event_id, topic, key, key_hash, type, payload, headers, created_at)
SELECT e.event_id, e.topic, e.key, e.key_hash, e.type, e.payload, e.headers, e.created_at
FROM locks CROSS JOIN unnest(
    %(event_ids)s::uuid[], %(topics)s::text[], %(keys)s::text[], %(key_hashes)s::bigint[],
    %(types)s::text[], %(payloads)s::bytea[], %(headers)s::text[]::jsonb[], %(created_ats)s::timestamptz[]
) AS e(event_id, topic, key, key_hash, type, payload, headers, created_at)

-- name: settings
-- For the relay: bucket count, NOTIFY channel, doorbell lock.
SELECT buckets, channel, doorbell_lock FROM {settings}

-- name: claim
-- For the relay: the oldest committed events of the buckets it owns, in id order. No row locks:
-- a bucket has one owner at a time (the relay's session advisory lock), and within a (topic,
-- key) a committed row never has an uncommitted row with a smaller id (publish's lock), so
-- reading committed rows in id order keeps per-key commit order.
SELECT id, event_id, topic, key, type, payload, headers::text AS headers, created_at, bucket, key_hash
FROM {table}
WHERE bucket = ANY(%(buckets)s::integer[])
ORDER BY id
LIMIT %(limit)s

-- name: delete
-- For the relay: forget events the broker acknowledged.
DELETE FROM {table} WHERE id = ANY(%(ids)s::bigint[])

-- name: arm_doorbell
-- For the relay, on its LISTEN connection (autocommit), after LISTEN and when it found no work:
-- true means it holds the doorbell and must scan once more before sleeping (anything committed
-- from now on rings); false means a writer's transaction is still open, so poll again soon.
SELECT pg_try_advisory_lock(%(doorbell_lock)s::bigint)

-- name: disarm_doorbell
-- For the relay, as soon as it wakes (notification or poll timeout).
SELECT pg_advisory_unlock(%(doorbell_lock)s::bigint)

-- name: backlog
-- For `outbox status`: events waiting and the age of the oldest.
SELECT count(*) AS events, min(created_at) AS oldest FROM {table}
