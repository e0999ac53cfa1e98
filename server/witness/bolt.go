package witness

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// boltBucket holds one key per log origin.
var boltBucket = []byte("witness-state")

// BoltState is a State in a single bbolt file. Updates are serialized by
// bbolt's single writer and fsync'd at commit. Only one process may hold the
// file open.
type BoltState struct {
	db *bolt.DB
}

// OpenBoltState opens (creating it with mode 0600 if needed) the bbolt file
// at path. It fails after a few seconds if another process holds the file.
func OpenBoltState(path string) (*BoltState, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("opening witness state %s: %w", path, err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(boltBucket)
		return err
	}); err != nil {
		db.Close()
		return nil, fmt.Errorf("opening witness state %s: %w", path, err)
	}
	return &BoltState{db: db}, nil
}

// Get implements State.
func (s *BoltState) Get(ctx context.Context, origin string) (Record, error) {
	var r Record
	err := s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(boltBucket).Get([]byte(origin))
		if v == nil {
			return ErrNoRecord
		}
		var err error
		r, err = decodeRecord(v)
		return err
	})
	return r, err
}

// Update implements State. bbolt runs one write transaction at a time, so
// the read and the write in it are atomic.
func (s *BoltState) Update(ctx context.Context, origin string, fn func(Record, bool) (Record, error)) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(boltBucket)
		var cur Record
		v := b.Get([]byte(origin))
		if v != nil {
			var err error
			if cur, err = decodeRecord(v); err != nil {
				return err
			}
		}
		next, err := fn(cur, v != nil)
		if err != nil {
			return err
		}
		return b.Put([]byte(origin), encodeRecord(next))
	})
}

// Close implements State.
func (s *BoltState) Close() error { return s.db.Close() }

// Record encoding: version byte 1, size (8 bytes), root (32), time in Unix
// seconds (8), then the checkpoint note. Integers are big-endian.
const recordVersion = 1

func encodeRecord(r Record) []byte {
	b := make([]byte, 0, 1+8+HashSize+8+len(r.Checkpoint))
	b = append(b, recordVersion)
	b = binary.BigEndian.AppendUint64(b, r.Size)
	b = append(b, r.Root[:]...)
	b = binary.BigEndian.AppendUint64(b, uint64(r.Time.Unix()))
	return append(b, r.Checkpoint...)
}

func decodeRecord(b []byte) (Record, error) {
	var r Record
	if len(b) < 1+8+HashSize+8 || b[0] != recordVersion {
		return r, errors.New("witness state: corrupt record")
	}
	b = b[1:]
	r.Size = binary.BigEndian.Uint64(b)
	copy(r.Root[:], b[8:])
	r.Time = time.Unix(int64(binary.BigEndian.Uint64(b[8+HashSize:])), 0)
	r.Checkpoint = append([]byte(nil), b[8+HashSize+8:]...)
	return r, nil
}
