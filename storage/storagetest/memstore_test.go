package storagetest_test

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"sort"
	"sync"
	"testing"

	"github.com/tlog-dev/tlog/pkg/tile"
	"github.com/tlog-dev/tlog/storage"
	"github.com/tlog-dev/tlog/storage/storagetest"
)

// TestMemStore runs the suite against memStore, a minimal reference store
// in memory, so the suite is tested without any driver.
func TestMemStore(t *testing.T) {
	storagetest.Run(t, func(t *testing.T) func() (storage.Store, error) {
		data := &memData{logs: map[string]*memLog{}}
		return func() (storage.Store, error) { return &memStore{d: data}, nil }
	})
}

// memData is what a memStore "file" holds; it outlives Close.
type memData struct {
	mu   sync.Mutex
	logs map[string]*memLog
}

type memLog struct {
	log         storage.Log
	head        storage.Checkpoint
	checkpoints map[uint64]storage.Checkpoint
	entries     []storage.Entry
	identities  map[storage.Hash]uint64
	tiles       map[tile.Tile][]byte // keyed with Width 0
	cosigs      map[uint64]map[string][]byte
}

type memStore struct {
	d *memData
}

func (s *memStore) Close() error { return nil }

// lock checks ctx, locks the data, and returns the log (nil if name is "").
func (s *memStore) lock(ctx context.Context, name string) (*memLog, func(), error) {
	if err := ctx.Err(); err != nil {
		return nil, nil, err
	}
	s.d.mu.Lock()
	if name == "" {
		return nil, s.d.mu.Unlock, nil
	}
	l, ok := s.d.logs[name]
	if !ok {
		s.d.mu.Unlock()
		return nil, nil, fmt.Errorf("log %q: %w", name, storage.ErrLogNotFound)
	}
	return l, s.d.mu.Unlock, nil
}

func (s *memStore) CreateLog(ctx context.Context, log storage.Log, initial storage.Checkpoint) error {
	_, unlock, err := s.lock(ctx, "")
	if err != nil {
		return err
	}
	defer unlock()
	if _, ok := s.d.logs[log.Name]; ok {
		return fmt.Errorf("log %q: %w", log.Name, storage.ErrLogExists)
	}
	initial.Note = bytes.Clone(initial.Note)
	s.d.logs[log.Name] = &memLog{
		log:         log,
		head:        initial,
		checkpoints: map[uint64]storage.Checkpoint{initial.Size: initial},
		identities:  map[storage.Hash]uint64{},
		tiles:       map[tile.Tile][]byte{},
		cosigs:      map[uint64]map[string][]byte{},
	}
	return nil
}

func (s *memStore) GetLog(ctx context.Context, name string) (storage.Log, error) {
	l, unlock, err := s.lock(ctx, name)
	if err != nil {
		return storage.Log{}, err
	}
	defer unlock()
	return l.log, nil
}

func (s *memStore) ListLogs(ctx context.Context) ([]storage.Log, error) {
	_, unlock, err := s.lock(ctx, "")
	if err != nil {
		return nil, err
	}
	defer unlock()
	var logs []storage.Log
	for _, l := range s.d.logs {
		logs = append(logs, l.log)
	}
	sort.Slice(logs, func(i, j int) bool { return logs[i].Name < logs[j].Name })
	return logs, nil
}

func (s *memStore) SetWitnessPolicy(ctx context.Context, name, policy string) error {
	l, unlock, err := s.lock(ctx, name)
	if err != nil {
		return err
	}
	defer unlock()
	l.log.WitnessPolicy = policy
	return nil
}

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{storage.ErrInvalid}, args...)...)
}

func (s *memStore) Integrate(ctx context.Context, name string, b *storage.Batch) error {
	l, unlock, err := s.lock(ctx, name)
	if err != nil {
		return err
	}
	defer unlock()
	if b.Prev != l.head.TreeHead {
		return fmt.Errorf("%w: head is %d, batch expects %d", storage.ErrConflict, l.head.Size, b.Prev.Size)
	}
	if b.Checkpoint.Size != b.Prev.Size+uint64(len(b.Entries)) {
		return invalid("checkpoint size %d after %d entries on %d", b.Checkpoint.Size, len(b.Entries), b.Prev.Size)
	}
	ids := map[storage.Hash]bool{}
	for i, e := range b.Entries {
		switch {
		case e.Index != b.Prev.Size+uint64(i):
			return invalid("entry %d has index %d", i, e.Index)
		case len(e.Data) > tile.MaxEntrySize:
			return invalid("entry %d is too large", e.Index)
		case ids[e.Identity]:
			return invalid("identity twice in the batch")
		}
		if _, ok := l.identities[e.Identity]; ok {
			return fmt.Errorf("%w: entry %d", storage.ErrDuplicate, e.Index)
		}
		ids[e.Identity] = true
	}
	for _, td := range b.Tiles {
		key := td.Tile
		key.Width = 0
		old := l.tiles[key]
		switch {
		case td.Level < 0 || td.Width < 1 || td.Width > tile.Width || len(td.Hashes) != td.Width*tile.HashSize:
			return invalid("tile %s has %d bytes", td.Path(), len(td.Hashes))
		case len(td.Hashes) < len(old) || !bytes.Equal(td.Hashes[:len(old)], old):
			return invalid("tile %s does not extend the stored one", td.Path())
		}
	}
	for _, e := range b.Entries {
		e.Data = bytes.Clone(e.Data)
		l.entries = append(l.entries, e)
		l.identities[e.Identity] = e.Index
	}
	for _, td := range b.Tiles {
		key := td.Tile
		key.Width = 0
		l.tiles[key] = bytes.Clone(td.Hashes)
	}
	c := b.Checkpoint
	c.Note = bytes.Clone(c.Note)
	l.head = c
	l.checkpoints[c.Size] = c
	return nil
}

func (s *memStore) LatestCheckpoint(ctx context.Context, name string) (storage.Checkpoint, error) {
	l, unlock, err := s.lock(ctx, name)
	if err != nil {
		return storage.Checkpoint{}, err
	}
	defer unlock()
	return l.head, nil
}

func (s *memStore) CheckpointAt(ctx context.Context, name string, size uint64) (storage.Checkpoint, error) {
	l, unlock, err := s.lock(ctx, name)
	if err != nil {
		return storage.Checkpoint{}, err
	}
	defer unlock()
	c, ok := l.checkpoints[size]
	if !ok {
		return storage.Checkpoint{}, fmt.Errorf("checkpoint %d: %w", size, storage.ErrNotFound)
	}
	return c, nil
}

func (s *memStore) ListCheckpoints(ctx context.Context, name string, after uint64, limit int) ([]storage.Checkpoint, error) {
	l, unlock, err := s.lock(ctx, name)
	if err != nil {
		return nil, err
	}
	defer unlock()
	var sizes []uint64
	for size := range l.checkpoints {
		if size > after {
			sizes = append(sizes, size)
		}
	}
	slices.Sort(sizes)
	var cs []storage.Checkpoint
	for _, size := range sizes[:min(limit, len(sizes))] {
		cs = append(cs, l.checkpoints[size])
	}
	return cs, nil
}

func (s *memStore) ReadTiles(ctx context.Context, name string, ts []tile.Tile) ([][]byte, error) {
	l, unlock, err := s.lock(ctx, name)
	if err != nil {
		return nil, err
	}
	defer unlock()
	out := make([][]byte, len(ts))
	for i, t := range ts {
		key := t
		key.Width = 0
		d := l.tiles[key]
		if len(d) < t.Width*tile.HashSize || t.Width < 1 {
			return nil, fmt.Errorf("tile %s: %w", t.Path(), storage.ErrNotFound)
		}
		out[i] = d
	}
	return out, nil
}

func (s *memStore) ReadEntries(ctx context.Context, name string, start, end uint64) ([]storage.Entry, error) {
	l, unlock, err := s.lock(ctx, name)
	if err != nil {
		return nil, err
	}
	defer unlock()
	if start > end || end > uint64(len(l.entries)) {
		return nil, fmt.Errorf("entries [%d, %d): %w", start, end, storage.ErrNotFound)
	}
	return slices.Clone(l.entries[start:end]), nil
}

func (s *memStore) LookupIdentities(ctx context.Context, name string, ids []storage.Hash) (map[storage.Hash]uint64, error) {
	l, unlock, err := s.lock(ctx, name)
	if err != nil {
		return nil, err
	}
	defer unlock()
	found := map[storage.Hash]uint64{}
	for _, id := range ids {
		if i, ok := l.identities[id]; ok {
			found[id] = i
		}
	}
	return found, nil
}

func (s *memStore) FindLeaf(ctx context.Context, name string, h storage.Hash) (uint64, error) {
	l, unlock, err := s.lock(ctx, name)
	if err != nil {
		return 0, err
	}
	defer unlock()
	for _, e := range l.entries {
		if e.LeafHash == h || e.Identity == h {
			return e.Index, nil
		}
	}
	return 0, fmt.Errorf("leaf %x: %w", h, storage.ErrNotFound)
}

func (s *memStore) AddCosignatures(ctx context.Context, name string, size uint64, cs []storage.Cosignature) error {
	l, unlock, err := s.lock(ctx, name)
	if err != nil {
		return err
	}
	defer unlock()
	if _, ok := l.checkpoints[size]; !ok {
		return fmt.Errorf("checkpoint %d: %w", size, storage.ErrNotFound)
	}
	if l.cosigs[size] == nil {
		l.cosigs[size] = map[string][]byte{}
	}
	for _, c := range cs {
		l.cosigs[size][c.KeyID] = bytes.Clone(c.Signature)
	}
	return nil
}

func (s *memStore) CosignaturesAt(ctx context.Context, name string, size uint64) ([]storage.Cosignature, error) {
	l, unlock, err := s.lock(ctx, name)
	if err != nil {
		return nil, err
	}
	defer unlock()
	var cs []storage.Cosignature
	for id, sig := range l.cosigs[size] {
		cs = append(cs, storage.Cosignature{KeyID: id, Signature: sig})
	}
	return cs, nil
}
