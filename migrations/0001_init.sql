-- 0001_init: the tlog schema. Every row is keyed by log; one database holds
-- many logs. Hashes are SHA-256 (32 bytes); sizes and indices are bigint >= 0.
--
-- Only hash tiles are stored: entry bundles are built from entries on demand.
-- Foreign keys are kept off the per-entry and per-tile tables (a row trigger
-- per entry would cost more than the insert); tlog_advance_head checks the log.

CREATE TABLE logs (
    id           bigserial   PRIMARY KEY,
    name         text        NOT NULL UNIQUE CHECK (name <> ''),
    origin       text        NOT NULL,
    verifier_key text        NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    -- The current tree head, moved only by tlog_advance_head (a compare-and-swap).
    tree_size    bigint      NOT NULL CHECK (tree_size >= 0),
    root_hash    bytea       NOT NULL CHECK (length(root_hash) = 32)
) WITH (fillfactor = 50); -- the head is updated by every batch: leave room for HOT updates

CREATE TABLE entries (
    log_id    bigint NOT NULL,
    idx       bigint NOT NULL CHECK (idx >= 0),
    -- identity de-duplicates: the leaf hash, or a hash of an idempotency key.
    identity  bytea  NOT NULL CHECK (length(identity) = 32),
    -- leaf_hash is stored only when it differs from identity.
    leaf_hash bytea  CHECK (length(leaf_hash) = 32 AND leaf_hash <> identity),
    data      bytea  NOT NULL CHECK (length(data) <= 65535),
    PRIMARY KEY (log_id, idx)
) WITH (fillfactor = 100); -- append-only, never updated
ALTER TABLE entries ALTER COLUMN identity SET STORAGE PLAIN;
ALTER TABLE entries ALTER COLUMN leaf_hash SET STORAGE PLAIN;

-- INCLUDE (idx) lets LookupIdentities run as an index-only scan.
CREATE UNIQUE INDEX entries_identity ON entries (log_id, identity) INCLUDE (idx);
CREATE INDEX entries_leaf_hash ON entries (log_id, leaf_hash, idx) WHERE leaf_hash IS NOT NULL;

-- Hash tiles (C2SP tlog-tiles), level 0 holding leaf hashes. A row holds the
-- widest version of its tile seen so far; a tile only grows (see the trigger).
CREATE TABLE tiles (
    log_id bigint   NOT NULL,
    level  smallint NOT NULL CHECK (level BETWEEN 0 AND 63),
    idx    bigint   NOT NULL CHECK (idx >= 0),
    hashes bytea    NOT NULL CHECK (length(hashes) BETWEEN 32 AND 8192 AND length(hashes) % 32 = 0),
    PRIMARY KEY (log_id, level, idx)
) WITH (fillfactor = 50); -- partial tiles are rewritten by every batch
-- Hashes do not compress: store large tiles out of line without trying.
ALTER TABLE tiles ALTER COLUMN hashes SET STORAGE EXTERNAL;

CREATE FUNCTION tlog_tiles_grow_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF length(NEW.hashes) < length(OLD.hashes)
       OR substring(NEW.hashes FROM 1 FOR length(OLD.hashes)) <> OLD.hashes THEN
        RAISE EXCEPTION USING
            ERRCODE = 'TL003',
            MESSAGE = format('tile %s/%s of log %s may only grow: stored %s hashes, new %s hashes or a different prefix',
                             OLD.level, OLD.idx, OLD.log_id, length(OLD.hashes) / 32, length(NEW.hashes) / 32);
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER tiles_grow_only BEFORE UPDATE ON tiles
    FOR EACH ROW EXECUTE FUNCTION tlog_tiles_grow_only();

CREATE TABLE checkpoints (
    log_id    bigint NOT NULL REFERENCES logs (id),
    size      bigint NOT NULL CHECK (size >= 0),
    root_hash bytea  NOT NULL CHECK (length(root_hash) = 32),
    note      bytea  NOT NULL, -- the signed note, authoritative
    PRIMARY KEY (log_id, size)
);

CREATE TABLE cosignatures (
    log_id    bigint NOT NULL,
    size      bigint NOT NULL,
    key_id    text   NOT NULL CHECK (key_id <> ''),
    signature bytea  NOT NULL,
    PRIMARY KEY (log_id, size, key_id),
    FOREIGN KEY (log_id, size) REFERENCES checkpoints (log_id, size)
);

-- tlog_advance_head is the compare-and-swap that fences writers. Integrate
-- calls it first in the transaction that writes a batch: it moves the tree
-- head of log p_log from (p_prev_size, p_prev_root) to (p_size, p_root), and
-- the row lock it takes serializes concurrent integrators until commit, so
-- the loser sees the moved head rather than colliding rows. Errors:
--   TL001  the stored head is not (p_prev_size, p_prev_root)
--   TL002  no log p_log
CREATE FUNCTION tlog_advance_head(
    p_log bigint,
    p_prev_size bigint, p_prev_root bytea,
    p_size bigint, p_root bytea
) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    stored_size bigint;
BEGIN
    UPDATE logs SET tree_size = p_size, root_hash = p_root
     WHERE id = p_log AND tree_size = p_prev_size AND root_hash = p_prev_root;
    IF FOUND THEN
        RETURN;
    END IF;
    SELECT tree_size INTO stored_size FROM logs WHERE id = p_log;
    IF FOUND THEN
        RAISE EXCEPTION USING
            ERRCODE = 'TL001',
            MESSAGE = format('stored tree head (size %s) is not the expected previous head (size %s)',
                             stored_size, p_prev_size);
    END IF;
    RAISE EXCEPTION USING ERRCODE = 'TL002', MESSAGE = format('no log with id %s', p_log);
END $$;
