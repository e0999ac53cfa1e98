package embedded

import (
	"context"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/tlog-dev/tlog/storage"
)

// maxNameLen bounds log names (bbolt keys are at most 32 KiB).
const maxNameLen = 1024

// CreateLog creates a log and stores its initial checkpoint as its tree
// head. A zero CreatedAt is set to the current time.
func (s *Store) CreateLog(ctx context.Context, log storage.Log, initial storage.Checkpoint) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if log.Name == "" || len(log.Name) > maxNameLen {
		return fmt.Errorf("%w: log name must have 1..%d bytes", storage.ErrInvalid, maxNameLen)
	}
	if log.CreatedAt.IsZero() {
		log.CreatedAt = time.Now()
	}
	rec := &logRecord{
		Origin:        log.Origin,
		VerifierKey:   log.VerifierKey,
		CreatedAt:     log.CreatedAt.Round(0), // no monotonic clock reading
		Size:          initial.Size,
		Root:          initial.Root[:],
		WitnessPolicy: log.WitnessPolicy,
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		key := []byte(log.Name)
		logs, data := tx.Bucket(bucketLogs), tx.Bucket(bucketData)
		if logs.Get(key) != nil || data.Bucket(key) != nil {
			return fmt.Errorf("log %q: %w", log.Name, storage.ErrLogExists)
		}
		d, err := data.CreateBucket(key)
		if err != nil {
			return err
		}
		for _, name := range [][]byte{bucketEntries, bucketTiles, bucketCheckpoints, bucketCosigs} {
			if _, err := d.CreateBucket(name); err != nil {
				return err
			}
		}
		for _, name := range [][]byte{bucketIdentities, bucketLeaves} {
			if err := createIndex(d, name); err != nil {
				return err
			}
		}
		lb := &logBuckets{name: log.Name, logs: logs, checkpoints: d.Bucket(bucketCheckpoints)}
		if err := lb.putRecord(rec); err != nil {
			return err
		}
		return lb.checkpoints.Put(u64(initial.Size), checkpointValue(&initial))
	})
}

// GetLog returns the named log, or an error wrapping storage.ErrLogNotFound.
func (s *Store) GetLog(ctx context.Context, name string) (storage.Log, error) {
	var log storage.Log
	err := s.view(ctx, name, func(lb *logBuckets) error {
		rec, err := lb.record()
		if err != nil {
			return err
		}
		log = rec.log(name)
		return nil
	})
	return log, err
}

// ListLogs returns every log, ordered by name.
func (s *Store) ListLogs(ctx context.Context) ([]storage.Log, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	logs := []storage.Log{}
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketLogs).ForEach(func(k, _ []byte) error {
			lb, err := openLog(tx, string(k))
			if err != nil {
				return err
			}
			rec, err := lb.record()
			if err != nil {
				return err
			}
			logs = append(logs, rec.log(string(k)))
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	return logs, nil
}

// SetWitnessPolicy replaces the log's witness policy, or returns an error
// wrapping storage.ErrLogNotFound.
func (s *Store) SetWitnessPolicy(ctx context.Context, name, policy string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		lb, err := openLog(tx, name)
		if err != nil {
			return err
		}
		rec, err := lb.record()
		if err != nil {
			return err
		}
		rec.WitnessPolicy = policy
		return lb.putRecord(rec)
	})
}
