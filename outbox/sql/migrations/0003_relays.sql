-- 0003: the relays' status board, for `outbox status` and for people.
--
-- Who owns which key bucket is NOT stored here: ownership is a session advisory lock, visible in
-- pg_locks, and dies with the relay's connection. Each running relay upserts its row about once a
-- second (never per event), so this table says what pg_locks cannot: a relay's name, when it last
-- published and how much. A row whose heartbeat is old belongs to a relay that died; the next relay
-- with the same name overwrites it, and `outbox status` shows it as stale.

CREATE TABLE IF NOT EXISTS {relays} (
    name text PRIMARY KEY,
    backend_pid integer NOT NULL,
    host text NOT NULL,
    started_at timestamptz NOT NULL,
    heartbeat_at timestamptz NOT NULL,
    last_publish_at timestamptz,
    published bigint NOT NULL DEFAULT 0,
    buckets integer[] NOT NULL DEFAULT '{{}}'
);

COMMENT ON TABLE {relays} IS
    'Relays of this outbox table and their last heartbeat; bucket ownership itself is an advisory lock (pg_locks).';
