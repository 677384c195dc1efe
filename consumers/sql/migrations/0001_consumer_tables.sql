-- 0001: the consumer SDK's bookkeeping, in the consumer's own database.
--
-- Placeholders (names in braces) are filled in by consumers.schema with quoted identifiers;
-- `outbox db sql` prints the result. Every statement is idempotent.

CREATE SCHEMA IF NOT EXISTS {schema};

-- The authoritative position of each consumer group in each partition: the offset of the next
-- record to process. It moves only by compare-and-set, in the transaction that applies the
-- effects of the records before it, so a member that lost the partition cannot move it.
CREATE TABLE IF NOT EXISTS {offsets} (
    group_id text NOT NULL,
    topic text NOT NULL,
    partition integer NOT NULL CHECK (partition >= 0),
    next_offset bigint NOT NULL CHECK (next_offset >= 0),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (group_id, topic, partition)
);

-- Event ids a group has applied: a record whose id is here is skipped (a relay re-publish at a
-- later offset, a replay). Pruned by age (processed_at), see the README's Consumers section.
CREATE TABLE IF NOT EXISTS {processed} (
    group_id text NOT NULL,
    event_id uuid NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (group_id, event_id)
);

CREATE INDEX IF NOT EXISTS {processed_age_index} ON {processed} (group_id, processed_at);

-- Records whose handler failed: the attempts survive crashes and rollbacks. The row is deleted
-- when the record is finally applied; a dead-lettered record keeps it (dead_lettered_at set)
-- until it is pruned with the processed ids.
CREATE TABLE IF NOT EXISTS {failures} (
    group_id text NOT NULL,
    topic text NOT NULL,
    partition integer NOT NULL,
    "offset" bigint NOT NULL,
    event_id uuid,
    attempts integer NOT NULL CHECK (attempts > 0),
    last_error text NOT NULL,
    first_failed_at timestamptz NOT NULL DEFAULT now(),
    last_failed_at timestamptz NOT NULL DEFAULT now(),
    dead_lettered_at timestamptz,
    PRIMARY KEY (group_id, topic, partition, "offset")
);
