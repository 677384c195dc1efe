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
-- reading committed rows in id order keeps per-key commit order. Columns are shaped for the
-- producer (UTF-8 bytes, epoch milliseconds) so that no value is converted twice in Python.
SELECT id, topic, convert_to(key, 'UTF8') AS key, payload,
       (extract(epoch FROM created_at) * 1000)::bigint AS timestamp_ms,
       convert_to(event_id::text, 'UTF8') AS event_id, convert_to(type, 'UTF8') AS type, headers::text AS headers
FROM {table}
WHERE bucket = ANY(%(buckets)s::integer[])
ORDER BY id
LIMIT %(limit)s

-- name: claim_more
-- For the relay, while an earlier batch is still in flight: the same, minus the rows of that
-- batch (a hashed NOT IN: the batch can hold thousands of ids). Per-key order still holds: a row
-- claimed here has a larger id than every in-flight row of its key, and it is sent after them.
SELECT id, topic, convert_to(key, 'UTF8') AS key, payload,
       (extract(epoch FROM created_at) * 1000)::bigint AS timestamp_ms,
       convert_to(event_id::text, 'UTF8') AS event_id, convert_to(type, 'UTF8') AS type, headers::text AS headers
FROM {table}
WHERE bucket = ANY(%(buckets)s::integer[])
  AND id NOT IN (SELECT unnest(%(exclude)s::text::bigint[]))
ORDER BY id
LIMIT %(limit)s

-- name: delete
-- For the relay: forget events the broker acknowledged.
-- The ids come as an array literal ('{1,2,3}'): psycopg builds that text much faster than it
-- dumps a list of thousands of ints.
DELETE FROM {table} WHERE id = ANY(%(ids)s::text::bigint[])

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

-- name: backlog_by_bucket
-- For `outbox status`: events waiting and the oldest, per key bucket that has any.
SELECT bucket, count(*) AS events, min(created_at) AS oldest FROM {table} GROUP BY bucket ORDER BY bucket

-- name: lock_holders
-- For relays and `outbox status`: the relay advisory locks of this outbox (two-int form, first int
-- = the outbox's lock namespace): second int >= 0 is a key bucket, < 0 a relay membership slot.
-- pg_locks shows both ints as oids; callers convert back.
SELECT l.objid::bigint AS objid, l.pid
FROM pg_locks l
WHERE l.locktype = 'advisory' AND l.objsubid = 2 AND l.granted
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND l.classid = %(namespace_oid)s::bigint::oid

-- name: try_lock_buckets
-- For the relay: take the free buckets it asked for; returns the ones it got.
SELECT b FROM unnest(%(buckets)s::integer[]) AS b WHERE pg_try_advisory_lock(%(namespace)s::integer, b)

-- name: unlock_buckets
-- For the relay: give buckets back (after their last batch was deleted).
SELECT count(*) FILTER (WHERE pg_advisory_unlock(%(namespace)s::integer, b)) FROM unnest(%(buckets)s::integer[]) AS b

-- name: try_lock_member
-- For the relay: a membership slot; the number of held slots is the number of live relays.
SELECT pg_try_advisory_lock(%(namespace)s::integer, %(slot_key)s::integer)

-- name: relay_heartbeat
-- For the relay, about once a second: its row on the status board.
INSERT INTO {relays} (name, backend_pid, host, started_at, heartbeat_at, last_publish_at, published, buckets)
VALUES (%(name)s, pg_backend_pid(), %(host)s, %(started_at)s, now(), %(last_publish_at)s, %(published)s, %(buckets)s)
ON CONFLICT (name) DO UPDATE SET
    backend_pid = excluded.backend_pid, host = excluded.host, started_at = excluded.started_at,
    heartbeat_at = excluded.heartbeat_at, last_publish_at = excluded.last_publish_at,
    published = excluded.published, buckets = excluded.buckets

-- name: relay_leave
-- For the relay at a clean shutdown.
DELETE FROM {relays} WHERE name = %(name)s

-- name: relays
-- For `outbox status`.
SELECT r.name, r.backend_pid, r.host, r.started_at, r.heartbeat_at, r.last_publish_at, r.published, r.buckets,
       now() - r.heartbeat_at AS heartbeat_age
FROM {relays} r ORDER BY r.name
