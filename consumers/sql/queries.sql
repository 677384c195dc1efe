-- The consumer SDK's queries. {name} placeholders are quoted identifiers (consumers.schema),
-- %(param)s placeholders are psycopg parameters.

-- name: load_offsets
-- The stored positions of a group in the given topics.
SELECT topic, partition, next_offset FROM {offsets} WHERE group_id = %(group)s AND topic = ANY(%(topics)s)

-- name: init_offset
-- Pin where a new group starts in a partition (the first member to get it wins).
INSERT INTO {offsets} (group_id, topic, partition, next_offset)
VALUES (%(group)s, %(topic)s, %(partition)s, %(offset)s)
ON CONFLICT (group_id, topic, partition) DO NOTHING

-- name: load_failures
-- Attempts of records neither applied nor dead-lettered yet (a handful; filtered by the caller).
SELECT topic, partition, "offset", attempts, last_error FROM {failures}
WHERE group_id = %(group)s AND dead_lettered_at IS NULL

-- name: begin_batch
-- First statement of a batch: lock the partition's offset row (a concurrent owner waits here) and
-- find which event ids of the batch this group has already applied.
WITH position AS (
    SELECT next_offset FROM {offsets}
    WHERE group_id = %(group)s AND topic = %(topic)s AND partition = %(partition)s
    FOR UPDATE
)
SELECT (SELECT next_offset FROM position),
       ARRAY(SELECT event_id FROM {processed} WHERE group_id = %(group)s AND event_id = ANY(%(ids)b::uuid[]))

-- name: finish_batch
-- Last statement of a batch: record the applied ids, forget the failures of records now behind
-- the position and compare-and-set the position. No row back means the partition was lost.
WITH applied AS (
    INSERT INTO {processed} (group_id, event_id)
    SELECT %(group)s, unnest(%(ids)b::uuid[])
    ON CONFLICT (group_id, event_id) DO NOTHING
), recovered AS (
    DELETE FROM {failures}
    WHERE group_id = %(group)s AND topic = %(topic)s AND partition = %(partition)s
      AND "offset" < %(next)s AND dead_lettered_at IS NULL
)
UPDATE {offsets} SET next_offset = %(next)s, updated_at = now()
WHERE group_id = %(group)s AND topic = %(topic)s AND partition = %(partition)s AND next_offset = %(expected)s
RETURNING next_offset

-- name: record_failure
-- One more failed attempt of a record; returns the attempts so far.
INSERT INTO {failures} AS f (group_id, topic, partition, "offset", event_id, attempts, last_error)
VALUES (%(group)s, %(topic)s, %(partition)s, %(offset)s, %(event_id)s, 1, %(error)s)
ON CONFLICT (group_id, topic, partition, "offset") DO UPDATE
SET attempts = f.attempts + 1, last_error = EXCLUDED.last_error, last_failed_at = now(), dead_lettered_at = NULL
RETURNING attempts

-- name: mark_dead_lettered
UPDATE {failures} SET dead_lettered_at = now()
WHERE group_id = %(group)s AND topic = %(topic)s AND partition = %(partition)s AND "offset" = %(offset)s

-- name: prune_processed
-- Processed ids older than the dedupe window, a bounded chunk at a time (short transactions).
DELETE FROM {processed} WHERE ctid = ANY(ARRAY(
    SELECT ctid FROM {processed}
    WHERE group_id = %(group)s AND processed_at < now() - %(older_than)s
    LIMIT %(limit)s
))

-- name: prune_dead_letters
DELETE FROM {failures}
WHERE group_id = %(group)s AND dead_lettered_at < now() - %(older_than)s
