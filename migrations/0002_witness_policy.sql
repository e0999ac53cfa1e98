-- 0002_witness_policy: a log's own witness policy, a C2SP tlog-policy text
-- (https://c2sp.org/tlog-policy) stored as given. Empty means the log has
-- none of its own: the server's default policy (tlogd --witness-policy), if
-- any, applies.

ALTER TABLE logs ADD COLUMN witness_policy text NOT NULL DEFAULT '';
