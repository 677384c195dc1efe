-- 0004: drop the (bucket, id) index of 0001.
--
-- Measured (pgbench, bench/outbox_write.py's insert, 16 writers): the outbox cost the writers 36 %
-- of their transaction rate with this index and 22 % without it. The relay never needed it: its
-- claim (`ORDER BY id LIMIT n` over the buckets it owns) walks the primary key in id order and
-- skips other relays' rows, which the planner prefers anyway; with N relays sharing the table a
-- claim reads about N times the rows it returns, a fair price for a cheaper write path.

DROP INDEX IF EXISTS {schema}.{bucket_index};
