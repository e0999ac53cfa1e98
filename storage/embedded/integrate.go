package embedded

import (
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"slices"

	bolt "go.etcd.io/bbolt"

	"github.com/tlog-dev/tlog/pkg/tile"
	"github.com/tlog-dev/tlog/storage"
)

// appendFillPercent is the page fill of buckets whose keys only grow
// (entries, tiles within a level, checkpoints): a page split by an append
// is left full instead of half empty, halving their size and the pages a
// commit writes.
const appendFillPercent = 1.0

// Integrate stores a batch in one fsync'd transaction, advancing the tree
// head from b.Prev only if it is still the stored head. It validates the
// batch first: entries must run contiguously from b.Prev.Size with at most
// tile.MaxEntrySize bytes each and identities new to the log, the checkpoint
// must be at b.Prev.Size+len(b.Entries) (with b.Prev.Root for an empty
// batch), and each tile must be a hash tile of the new tree with Width*32
// bytes that extends what is stored. An empty batch replaces the checkpoint
// at its size and keeps its cosignatures.
func (s *Store) Integrate(ctx context.Context, name string, b *storage.Batch) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	p, err := prepare(b)
	if err != nil {
		return fmt.Errorf("log %q: %w", name, err)
	}
	// Everything that does not need the stored state was validated and
	// encoded above, outside bbolt's single writer lock.
	return s.db.Update(func(tx *bolt.Tx) error { return p.apply(tx, name, &s.merges) })
}

// prepared is a validated batch with its keys and values encoded.
type prepared struct {
	b         *storage.Batch
	next      uint64       // the new tree size
	indexKeys []byte       // 8 bytes per entry: its index
	values    [][]byte     // per entry: its value in the entries bucket
	ids       []indexEntry // identities, sorted
	leaves    []indexEntry // leaf hashes of keyed entries, sorted, lowest index of each
}

func (p *prepared) indexKey(i int) []byte { return p.indexKeys[8*i : 8*i+8 : 8*i+8] }

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", storage.ErrInvalid, fmt.Sprintf(format, args...))
}

func prepare(b *storage.Batch) (*prepared, error) {
	if b == nil {
		return nil, invalid("nil batch")
	}
	n := uint64(len(b.Entries))
	if b.Prev.Size > math.MaxUint64-n {
		return nil, invalid("tree size overflows")
	}
	p := &prepared{b: b, next: b.Prev.Size + n}
	if b.Checkpoint.Size != p.next {
		return nil, invalid("checkpoint is for tree size %d, but %d entries after size %d make %d",
			b.Checkpoint.Size, n, b.Prev.Size, p.next)
	}
	if n == 0 && b.Checkpoint.Root != b.Prev.Root {
		return nil, invalid("empty batch changes the root hash of tree size %d", p.next)
	}

	p.indexKeys = make([]byte, 0, 8*len(b.Entries))
	p.values = make([][]byte, len(b.Entries))
	size := 0
	for i := range b.Entries {
		e := &b.Entries[i]
		if e.Index != b.Prev.Size+uint64(i) {
			return nil, invalid("entry %d of the batch has index %d, want %d", i, e.Index, b.Prev.Size+uint64(i))
		}
		if len(e.Data) > tile.MaxEntrySize {
			return nil, invalid("entry %d has %d bytes, more than %d", e.Index, len(e.Data), tile.MaxEntrySize)
		}
		p.indexKeys = binary.BigEndian.AppendUint64(p.indexKeys, e.Index)
		size += entryHeader + 32 + len(e.Data)
	}
	buf := make([]byte, 0, size)
	for i := range b.Entries {
		start := len(buf)
		buf = appendEntryValue(buf, &b.Entries[i])
		p.values[i] = buf[start:len(buf):len(buf)]
	}

	// The identity index takes each batch as a sorted run, and sorting
	// finds duplicates within the batch.
	byID := sortedBy(b.Entries, func(e *storage.Entry) *storage.Hash { return &e.Identity }, nil)
	p.ids = make([]indexEntry, len(byID))
	for j, i := range byID {
		e := &b.Entries[i]
		if j > 0 && e.Identity == b.Entries[byID[j-1]].Identity {
			return nil, invalid("entries %d and %d have the same identity %x", b.Entries[byID[j-1]].Index, e.Index, e.Identity)
		}
		p.ids[j] = indexEntry{key: e.Identity[:], value: p.indexKey(i)}
	}
	// Keyed entries (identity other than the leaf hash) are found by leaf
	// hash through a second index.
	keyed := sortedBy(b.Entries, func(e *storage.Entry) *storage.Hash { return &e.LeafHash },
		func(e *storage.Entry) bool { return e.LeafHash != e.Identity })
	for j, i := range keyed {
		if j > 0 && b.Entries[i].LeafHash == b.Entries[keyed[j-1]].LeafHash {
			continue // same data under another key: keep the lower index
		}
		p.leaves = append(p.leaves, indexEntry{key: b.Entries[i].LeafHash[:], value: p.indexKey(i)})
	}

	for _, t := range b.Tiles {
		if t.Level < 0 || t.Level > tile.MaxLevel {
			return nil, invalid("tile %s: level must be 0..%d", t.Path(), tile.MaxLevel)
		}
		if w := tile.WidthAt(t.Level, t.Index, p.next); t.Width != w {
			return nil, invalid("tile %s: a tree of size %d has width %d there", t.Path(), p.next, w)
		}
		if len(t.Hashes) != t.Width*tile.HashSize {
			return nil, invalid("tile %s has %d bytes, want %d", t.Path(), len(t.Hashes), t.Width*tile.HashSize)
		}
	}
	return p, nil
}

// sortedBy returns the positions of the entries that pass keep (all if keep
// is nil), ordered by the hash key returns, then by position.
func sortedBy(es []storage.Entry, key func(*storage.Entry) *storage.Hash, keep func(*storage.Entry) bool) []int {
	type item struct {
		prefix uint64 // the key's first 8 bytes: most comparisons end there
		i      int
	}
	items := make([]item, 0, len(es))
	for i := range es {
		if keep == nil || keep(&es[i]) {
			items = append(items, item{binary.BigEndian.Uint64(key(&es[i])[:8]), i})
		}
	}
	slices.SortFunc(items, func(x, y item) int {
		if c := cmp.Compare(x.prefix, y.prefix); c != 0 {
			return c
		}
		if c := bytes.Compare(key(&es[x.i])[8:], key(&es[y.i])[8:]); c != 0 {
			return c
		}
		return cmp.Compare(x.i, y.i)
	})
	out := make([]int, len(items))
	for j, it := range items {
		out[j] = it.i
	}
	return out
}

// apply writes the prepared batch in tx, after the compare-and-swap on the
// tree head. Any error rolls the whole transaction back.
func (p *prepared) apply(tx *bolt.Tx, name string, merges *mergeFilters) error {
	b := p.b
	lb, err := openLog(tx, name)
	if err != nil {
		return err
	}
	lb.identities.memo, lb.identities.memoKey = merges, mergeKey{log: name}
	lb.leaves.memo, lb.leaves.memoKey = merges, mergeKey{log: name, leaves: true}
	rec, err := lb.record()
	if err != nil {
		return err
	}
	if head := rec.head(); head != b.Prev {
		return fmt.Errorf("log %q: %w: stored tree head is size %d root %x, the batch extends size %d root %x",
			name, storage.ErrConflict, head.Size, head.Root, b.Prev.Size, b.Prev.Root)
	}

	for _, id := range p.ids {
		idx, found, err := lb.identities.get(id.key)
		if err != nil {
			return err
		}
		if found {
			return fmt.Errorf("log %q: %w: identity %x of entry %d is already in the log at index %d",
				name, storage.ErrDuplicate, id.key, decodeIndex(id.value), idx)
		}
	}
	if err := lb.identities.insert(p.ids); err != nil {
		return err
	}
	if err := lb.leaves.insert(p.leaves); err != nil {
		return err
	}

	lb.entries.FillPercent = appendFillPercent
	for i := range b.Entries {
		if err := lb.entries.Put(p.indexKey(i), p.values[i]); err != nil {
			return err
		}
	}

	lb.tiles.FillPercent = appendFillPercent
	for _, t := range b.Tiles {
		k := tileKey(t.Level, t.Index)
		if old := lb.tiles.Get(k); old != nil {
			if len(t.Hashes) < len(old) || !bytes.Equal(t.Hashes[:len(old)], old) {
				return fmt.Errorf("log %q: %w: tile %s would shrink or rewrite the %d stored hashes",
					name, storage.ErrInvalid, t.Path(), len(old)/tile.HashSize)
			}
			if len(t.Hashes) == len(old) {
				continue
			}
		}
		if err := lb.tiles.Put(k, t.Hashes); err != nil {
			return err
		}
	}

	lb.checkpoints.FillPercent = appendFillPercent
	if err := lb.checkpoints.Put(u64(p.next), checkpointValue(&b.Checkpoint)); err != nil {
		return err
	}
	rec.Size, rec.Root = p.next, b.Checkpoint.Root[:]
	return lb.putRecord(rec)
}

func decodeIndex(v []byte) uint64 {
	if len(v) != 8 {
		return math.MaxUint64
	}
	return binary.BigEndian.Uint64(v)
}
