-- Named queries of the outbox library and of the relay that reads its table.
--
-- A block starts with "-- name: <name>"; the comment lines after it document the query.
-- Names in braces (table, settings) are filled in with quoted identifiers by outbox.sql.render();
-- %(param)s placeholders are psycopg's.

-- name: lock_key
-- The advisory lock of one (topic, key) for the rest of the transaction: concurrent
-- transactions publishing the same key are serialised, so their ids follow commit order.
SELECT pg_advisory_xact_lock(%(lock_key)s::bigint)

-- name: lock_keys
-- The same for several keys, taken in the order given: publish() sorts them (by lock key,
-- duplicates removed), so two batches with overlapping keys cannot deadlock.
SELECT pg_advisory_xact_lock(k) FROM unnest(%(lock_keys)s::bigint[]) AS k

-- name: insert_one
INSERT INTO {table} (event_id, topic, key, type, payload, headers, created_at)
VALUES (%(event_id)s, %(topic)s, %(key)s, %(type)s, %(payload)s, %(headers)s::jsonb, %(created_at)s)

-- name: insert_many
-- All events of one publish() call in one statement (one round trip, one trigger call).
INSERT INTO {table} (event_id, topic, key, type, payload, headers, created_at)
SELECT * FROM unnest(
    %(event_ids)s::uuid[], %(topics)s::text[], %(keys)s::text[], %(types)s::text[],
    %(payloads)s::bytea[], %(headers)s::text[]::jsonb[], %(created_ats)s::timestamptz[]
)

-- name: settings
-- For the relay: bucket count, NOTIFY channel, doorbell lock.
SELECT buckets, channel, doorbell_lock FROM {settings}

-- name: claim
-- For the relay: the oldest committed events of the buckets it owns, in id order. No row locks:
-- a bucket has one owner at a time (the relay's session advisory lock), and within a (topic,
-- key) a committed row never has an uncommitted row with a smaller id (publish's lock), so
-- reading committed rows in id order keeps per-key commit order.
SELECT id, event_id, topic, key, type, payload, headers::text AS headers, created_at, bucket
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
