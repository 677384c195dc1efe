-- 0004: drop the (bucket, id) index of 0001.
--
-- Every event paid for a second index entry on the writers' hot path, and the relay never used
-- it: its claim (`ORDER BY id LIMIT n` over the buckets it owns) walks the primary key in id order
-- and skips other relays' rows, which the planner chose even with the index in place. With N
-- relays sharing the table a claim reads about N times the rows it returns, a fair price for a
-- cheaper write path. (pgbench on a quiet moment: 16 writers lost 36 % of their transaction rate
-- to the outbox with the index, 22 % without; under load the figures are too noisy to compare.)

DROP INDEX IF EXISTS {schema}.{bucket_index};
