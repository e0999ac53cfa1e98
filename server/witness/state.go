package witness

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"time"
)

// Record is what the witness remembers about one log: the latest checkpoint
// it cosigned.
type Record struct {
	// Size is the tree size of the checkpoint.
	Size uint64
	// Root is its root hash.
	Root [HashSize]byte
	// Checkpoint is the signed note the monitoring endpoint serves: the
	// checkpoint text, the log signatures the witness verified, and the
	// witness's cosignature.
	Checkpoint []byte
	// Time is the timestamp of the witness's cosignature (whole seconds).
	Time time.Time
}

// ErrNoRecord is returned by State.Get for a log the witness never cosigned.
var ErrNoRecord = errors.New("no checkpoint cosigned for this log")

// errRetry makes a State retry an Update whose compare-and-swap lost a race.
var errRetry = errors.New("state changed concurrently")

// maxRetries bounds how often a State re-runs an Update that lost a race.
const maxRetries = 16

// State stores, durably, the latest checkpoint the witness cosigned for each
// log, keyed by origin. Implementations must be safe for concurrent use.
type State interface {
	// Get returns the record of origin, or ErrNoRecord if there is none.
	Get(ctx context.Context, origin string) (Record, error)

	// Update atomically replaces the record of origin with the one fn
	// returns. fn receives the current record, and found=false (with a
	// zero Record) if there is none. If fn returns an error, nothing is
	// written and Update returns that error.
	//
	// The read, fn, and the write form one transaction: the write happens
	// only if the record is still the one fn saw (compare-and-swap), so two
	// concurrent Updates can never roll a record back. When Update returns
	// nil, the new record is durably committed (fsync'd).
	//
	// fn may run more than once (when a concurrent Update wins the race, fn
	// runs again with the newer record), so it must not have side effects
	// that matter beyond its return values.
	Update(ctx context.Context, origin string, fn func(cur Record, found bool) (Record, error)) error

	// Close releases the store.
	Close() error
}

// OpenState opens the state store named by spec: a "postgres://" or
// "postgresql://" URL opens OpenPostgresState, anything else is a file path
// for OpenBoltState.
func OpenState(ctx context.Context, spec string, logger *slog.Logger) (State, error) {
	if strings.HasPrefix(spec, "postgres://") || strings.HasPrefix(spec, "postgresql://") {
		return OpenPostgresState(ctx, spec, logger)
	}
	return OpenBoltState(spec)
}
