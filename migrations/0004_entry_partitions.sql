-- 0004_entry_partitions: entries partitioned by index range, so that an
-- append touches only a small, recent identity index.
--
-- The unique index on (log_id, identity) takes random keys: once it outgrows
-- shared_buffers, every insert reads and dirties a random page of it, and the
-- log's append rate falls with its size (to 45% of the small-log rate at 10M
-- entries with PostgreSQL's defaults; docs/BENCHMARKS.md). Now entries are
-- range-partitioned on idx, entry_partition_size entries of every log to a
-- partition (entries_p0 holds idx 0 .. size-1 of every log, entries_p1 the
-- next, ...), and each partition has its own unique identity index. A
-- partition's index is written only while logs fill it; afterwards it is
-- only read.
--
-- PostgreSQL cannot enforce uniqueness across partitions: storage/postgres
-- does. Before a batch is written it looks the batch's identities up in the
-- filled partitions of the log (those entirely below the batch), in one
-- query per partition and only for the identities the partition's Bloom
-- filter (entry_filters, built once the partition is full) may hold; the
-- partition the batch writes into refuses a duplicate by its own index.
--
-- Partitions are made by tlog_add_entry_partitions, ahead of need. The size
-- is fixed when the first partition is made (a trigger refuses changes).

CREATE TABLE entry_partitioning (
    one  boolean PRIMARY KEY DEFAULT true CHECK (one),
    size bigint  NOT NULL CHECK (size > 0)
);
INSERT INTO entry_partitioning (size) VALUES (524288); -- 2^19: a 50 MB identity index

CREATE FUNCTION tlog_entry_partitioning_fixed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT FROM pg_inherits WHERE inhparent = 'entries'::regclass) THEN
        RAISE EXCEPTION 'entry_partitioning cannot change once entry partitions exist';
    END IF;
    RETURN coalesce(NEW, OLD);
END $$;

ALTER TABLE entries RENAME TO entries_0003;
ALTER INDEX entries_pkey RENAME TO entries_0003_pkey;
ALTER INDEX entries_identity RENAME TO entries_0003_identity;
ALTER INDEX entries_leaf_hash RENAME TO entries_0003_leaf_hash;

CREATE TABLE entries (
    log_id    bigint NOT NULL,
    idx       bigint NOT NULL CHECK (idx >= 0),
    -- identity de-duplicates: the leaf hash, or a hash of an idempotency key.
    identity  bytea  NOT NULL CHECK (length(identity) = 32),
    -- leaf_hash is stored only when it differs from identity.
    leaf_hash bytea  CHECK (length(leaf_hash) = 32 AND leaf_hash <> identity),
    data      bytea  NOT NULL CHECK (length(data) <= 65535),
    PRIMARY KEY (log_id, idx)
) PARTITION BY RANGE (idx);
ALTER TABLE entries ALTER COLUMN identity SET STORAGE PLAIN;
ALTER TABLE entries ALTER COLUMN leaf_hash SET STORAGE PLAIN;
CREATE INDEX entries_leaf_hash ON entries (log_id, leaf_hash, idx) WHERE leaf_hash IS NOT NULL;
CREATE TRIGGER entry_partitioning_fixed BEFORE UPDATE OR DELETE ON entry_partitioning
    FOR EACH ROW EXECUTE FUNCTION tlog_entry_partitioning_fixed();

-- Bloom filters (internal/bloom, layout format) of the identities of one
-- log's entries in one full partition; built and stored by storage/postgres.
CREATE TABLE entry_filters (
    log_id bigint   NOT NULL REFERENCES logs (id),
    part   bigint   NOT NULL CHECK (part >= 0),
    format smallint NOT NULL,
    filter bytea    NOT NULL,
    PRIMARY KEY (log_id, part, format)
);
ALTER TABLE entry_filters ALTER COLUMN filter SET STORAGE EXTERNAL; -- random bits

-- tlog_add_entry_partitions makes every partition up to the one holding
-- index p_idx (those missing: serialized by an advisory lock, "tlogpart" in
-- ASCII), each with its unique identity index entries_pN_identity, and
-- returns the end of that partition.
CREATE FUNCTION tlog_add_entry_partitions(p_idx bigint) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    n bigint := (SELECT size FROM entry_partitioning);
    k bigint;
BEGIN
    PERFORM pg_advisory_xact_lock(8389202695942140532);
    FOR k IN 0 .. p_idx / n LOOP
        IF to_regclass(format('entries_p%s', k)) IS NULL THEN
            EXECUTE format('CREATE TABLE entries_p%s PARTITION OF entries FOR VALUES FROM (%s) TO (%s)', k, k * n, (k + 1) * n);
            EXECUTE format('CREATE UNIQUE INDEX entries_p%1$s_identity ON entries_p%1$s (log_id, identity) INCLUDE (idx)', k);
        END IF;
    END LOOP;
    RETURN (p_idx / n + 1) * n;
END $$;

-- Move the entries of a database migrated before: their identities are
-- unique per log already.
SELECT tlog_add_entry_partitions(max(idx)) FROM entries_0003 HAVING count(*) > 0;
INSERT INTO entries (log_id, idx, identity, leaf_hash, data)
SELECT log_id, idx, identity, leaf_hash, data FROM entries_0003;
DROP TABLE entries_0003;
