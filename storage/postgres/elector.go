package postgres

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tlog-dev/tlog/storage"
)

var _ storage.Elector = (*Store)(nil)

// leaderLockClass is the first key of the pg_try_advisory_lock(int, int)
// that elects the leader of a log; the second is the log's id ("tlog" in
// ASCII).
const leaderLockClass int32 = 0x746c6f67

// leaderPing is how often a leader checks the connection that holds its
// lock; a check that fails, or takes longer than leaderPingTimeout, ends
// the leadership.
const (
	leaderPing        = time.Second
	leaderPingTimeout = 2 * time.Second
)

// TryLead tries to take the log's leader lock: a session advisory lock,
// held by a connection taken out of the pool for as long as the leadership
// lasts (the lock dies with it). A leader pings that connection every
// second; when a ping fails, PostgreSQL may already have given the lock to
// another process, so Lost is closed at once.
func (s *Store) TryLead(ctx context.Context, log, addr string) (storage.Leadership, error) {
	id, err := s.logID(ctx, log)
	if err != nil {
		return nil, err
	}
	if id > 1<<31-1 {
		return nil, fmt.Errorf("postgres: log id %d of %q does not fit the leader lock's key", id, log)
	}
	c, err := s.pool.Acquire(ctx)
	if err != nil {
		return nil, s.fail(ctx, err, "acquire a connection for the leader lock of %q", log)
	}
	var won bool
	if err := c.QueryRow(ctx, `SELECT pg_try_advisory_lock($1, $2)`, leaderLockClass, int32(id)).Scan(&won); err != nil {
		c.Release()
		return nil, s.fail(ctx, err, "try the leader lock of %q", log)
	}
	if !won {
		c.Release()
		return nil, nil
	}
	// The lock lives as long as this connection: never give it back to the
	// pool, where another user could unlock it or keep it after we resign.
	conn := c.Hijack()
	if _, err := conn.Exec(ctx, `INSERT INTO log_leaders (log_id, addr, since) VALUES ($1, $2, now())
		ON CONFLICT (log_id) DO UPDATE SET addr = EXCLUDED.addr, since = EXCLUDED.since`, id, addr); err != nil {
		conn.Close(context.Background())
		return nil, s.fail(ctx, err, "record the leader of %q", log)
	}
	l := &leadership{conn: conn, lost: make(chan struct{}), stop: make(chan struct{}), done: make(chan struct{})}
	go l.watch()
	return l, nil
}

// Leader reads the address recorded by the last winner of the log's lock.
func (s *Store) Leader(ctx context.Context, log string) (string, error) {
	id, err := s.logID(ctx, log)
	if err != nil {
		return "", err
	}
	var addr string
	err = s.pool.QueryRow(ctx, `SELECT addr FROM log_leaders WHERE log_id = $1`, id).Scan(&addr)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", s.fail(ctx, err, "read the leader of %q", log)
	}
	return addr, nil
}

// leadership holds a leader lock through its dedicated connection.
type leadership struct {
	conn *pgx.Conn // owned by watch

	lostOnce sync.Once
	lost     chan struct{}
	stopOnce sync.Once
	stop     chan struct{}
	done     chan struct{} // closed when watch has closed conn
}

func (l *leadership) Lost() <-chan struct{} { return l.lost }

// Resign closes the connection, which releases the lock, and waits for it.
func (l *leadership) Resign() {
	l.stopOnce.Do(func() { close(l.stop) })
	<-l.done
}

func (l *leadership) markLost() { l.lostOnce.Do(func() { close(l.lost) }) }

// watch pings the lock's connection until a ping fails or Resign.
func (l *leadership) watch() {
	defer close(l.done)
	resigned := false
	defer func() {
		l.markLost()
		ctx, cancel := context.WithTimeout(context.Background(), leaderPingTimeout)
		defer cancel()
		if resigned {
			// Release the lock before returning, so that another process
			// can take it at once: the end of the session releases it too,
			// but after Close has returned.
			l.conn.Exec(ctx, `SELECT pg_advisory_unlock_all()`)
		}
		l.conn.Close(ctx) // ends the session: PostgreSQL releases the lock
	}()
	t := time.NewTicker(leaderPing)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			resigned = true
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), leaderPingTimeout)
		err := l.conn.Ping(ctx)
		cancel()
		if err != nil {
			return
		}
	}
}
