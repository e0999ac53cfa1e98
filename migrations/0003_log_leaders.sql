-- 0003_log_leaders: the advertised address of the process that last won the
-- leadership of each log (a PostgreSQL advisory lock, see storage/postgres),
-- so that the other processes can forward appends to it. A row is written
-- by the winner after it takes the lock; it may name a leader that died and
-- has not been replaced yet.

CREATE TABLE log_leaders (
    log_id bigint PRIMARY KEY REFERENCES logs (id),
    addr   text NOT NULL,
    since  timestamptz NOT NULL DEFAULT now()
);
