package embedded

import (
	"bytes"
	"context"
	"fmt"

	bolt "go.etcd.io/bbolt"

	"github.com/tlog-dev/tlog/storage"
)

// AddCosignatures stores cosignatures on the checkpoint at size, replacing
// any from the same KeyID. It returns an error wrapping storage.ErrNotFound
// if no checkpoint was signed at that size.
func (s *Store) AddCosignatures(ctx context.Context, name string, size uint64, cs []storage.Cosignature) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	for _, c := range cs {
		if c.KeyID == "" || len(c.KeyID) > maxNameLen {
			return fmt.Errorf("%w: cosignature key ID must have 1..%d bytes", storage.ErrInvalid, maxNameLen)
		}
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		lb, err := openLog(tx, name)
		if err != nil {
			return err
		}
		if lb.checkpoints.Get(u64(size)) == nil {
			return fmt.Errorf("log %q: checkpoint at size %d: %w", name, size, storage.ErrNotFound)
		}
		for _, c := range cs {
			if err := lb.cosigs.Put(cosigKey(size, c.KeyID), append([]byte{}, c.Signature...)); err != nil {
				return err
			}
		}
		return nil
	})
}

// CosignaturesAt returns the cosignatures stored for size, ordered by
// KeyID (none: empty).
func (s *Store) CosignaturesAt(ctx context.Context, name string, size uint64) ([]storage.Cosignature, error) {
	cs := []storage.Cosignature{}
	err := s.view(ctx, name, func(lb *logBuckets) error {
		prefix := u64(size)
		c := lb.cosigs.Cursor()
		for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
			cs = append(cs, storage.Cosignature{KeyID: string(k[8:]), Signature: bytes.Clone(v)})
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return cs, nil
}
