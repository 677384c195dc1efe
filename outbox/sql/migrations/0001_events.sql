-- 0001: the outbox table, the key hash it buckets by, and the settings the relay reads.
--
-- Placeholders (names in braces) are filled in by outbox.schema with quoted identifiers and literals;
-- `outbox db sql` prints the result. Every statement is idempotent (IF NOT EXISTS / OR REPLACE /
-- ON CONFLICT), so applying this file twice changes nothing.

CREATE SCHEMA IF NOT EXISTS {schema};

-- The stable 64-bit hash of (topic, key): the first 8 bytes of SHA-256 over the UTF-8 bytes of
-- topic || ':' || key, as a signed bigint. publish() locks pg_advisory_xact_lock(this) before it
-- inserts an event with a key; code in other languages can do the same.
CREATE OR REPLACE FUNCTION {key_hash}(topic text, key text) RETURNS bigint
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    AS $$ SELECT ('x' || encode(substring(sha256(convert_to(topic || ':' || key, 'UTF8')) FROM 1 FOR 8), 'hex'))::bit(64)::bigint $$;

CREATE TABLE IF NOT EXISTS {table} (
    -- Assigned at insert time, NOT commit time: never use it as a cursor. For one (topic, key)
    -- the advisory lock makes id order equal commit order.
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id uuid NOT NULL,
    -- A Kafka topic name; publish() checks it (a regex CHECK here cost ~10% of the write path).
    topic text NOT NULL,
    key text,
    -- key_hash(topic, key), or key_hash(topic, event_id::text) for an event without a key:
    -- computed by the writer (publish() does it in Python; SQL writers call the function above)
    -- because a function call here would cost every INSERT statement tens of microseconds.
    key_hash bigint NOT NULL,
    -- Which relay owns the event: key_hash mod buckets (non-negative).
    bucket integer NOT NULL GENERATED ALWAYS AS ((((key_hash % {buckets}) + {buckets}) % {buckets})::integer) STORED,
    type text NOT NULL CHECK (type <> ''),
    -- The exact JSON bytes of the record value: the relay sends them without parsing.
    payload bytea NOT NULL,
    headers jsonb NOT NULL DEFAULT '{{}}'::jsonb CHECK (jsonb_typeof(headers) = 'object'),
    created_at timestamptz NOT NULL
) WITH (autovacuum_vacuum_scale_factor = 0.01, autovacuum_vacuum_threshold = 1000);

COMMENT ON TABLE {table} IS
    'Transactional outbox: rows appear when the writing transaction commits; the relay publishes them and deletes them after the broker acknowledged them.';

-- The relay claims the committed rows of the buckets it owns in id order.
CREATE INDEX IF NOT EXISTS {bucket_index} ON {table} (bucket, id);

CREATE TABLE IF NOT EXISTS {settings} (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    buckets integer NOT NULL CHECK (buckets > 0),
    channel text NOT NULL,
    doorbell_lock bigint NOT NULL
);

COMMENT ON TABLE {settings} IS
    'What the relay needs to know about the outbox table: the bucket count, the NOTIFY channel and the doorbell advisory lock.';

INSERT INTO {settings} (buckets, channel, doorbell_lock)
VALUES ({buckets}, {channel}, {doorbell_lock})
ON CONFLICT (singleton) DO NOTHING;
