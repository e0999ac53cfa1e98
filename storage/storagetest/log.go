package storagetest

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/tlog-dev/tlog/pkg/checkpoint"
	"github.com/tlog-dev/tlog/pkg/tile"
	"github.com/tlog-dev/tlog/pkg/tree"
	"github.com/tlog-dev/tlog/storage"
)

// testLog is one log and what the suite knows it must hold: it plays the
// sequencer (building, signing and integrating batches) and remembers every
// entry, tile and checkpoint to check reads against.
type testLog struct {
	e        *env
	log      storage.Log
	signer   note.Signer
	verifier note.Verifier

	edge        *tree.Edge
	head        storage.Checkpoint
	entries     []storage.Entry      // by index
	tiles       map[tile.Tile][]byte // widest version, keyed with Width 0
	checkpoints []storage.Checkpoint // by increasing size, from size 0
}

// createLog creates a log named name with a fresh key and its signed empty
// checkpoint.
func (e *env) createLog(name string) *testLog {
	e.t.Helper()
	l := e.newLog(name)
	if err := e.s.CreateLog(e.ctx, l.log, l.head); err != nil {
		e.t.Fatalf("CreateLog(%q): %v", name, err)
	}
	return l
}

// newLog returns a log that is not created yet: its key, description and
// signed empty checkpoint.
func (e *env) newLog(name string) *testLog {
	e.t.Helper()
	origin := "example.com/tlogtest/" + name
	skey, vkey, err := checkpoint.GenerateKey(origin, rand.Reader)
	if err != nil {
		e.t.Fatal(err)
	}
	signer, err := checkpoint.NewSigner(skey)
	if err != nil {
		e.t.Fatal(err)
	}
	verifier, err := checkpoint.NewVerifier(vkey)
	if err != nil {
		e.t.Fatal(err)
	}
	l := &testLog{
		e: e,
		log: storage.Log{
			Name:        name,
			Origin:      origin,
			VerifierKey: vkey,
			// Microseconds: what PostgreSQL keeps.
			CreatedAt: time.Now().Truncate(time.Microsecond),
		},
		signer:   signer,
		verifier: verifier,
		edge:     tree.EmptyEdge(),
		tiles:    map[tile.Tile][]byte{},
	}
	l.head = l.sign(0, tree.EmptyRoot())
	l.checkpoints = []storage.Checkpoint{l.head}
	return l
}

func (l *testLog) name() string { return l.log.Name }

func (l *testLog) size() uint64 { return l.edge.Size() }

// sign returns the checkpoint signed by the log's key for (size, root).
func (l *testLog) sign(size uint64, root storage.Hash) storage.Checkpoint {
	l.e.t.Helper()
	signed, err := checkpoint.Sign(checkpoint.Checkpoint{Origin: l.log.Origin, Size: size, Hash: root}, l.signer)
	if err != nil {
		l.e.t.Fatal(err)
	}
	return storage.Checkpoint{TreeHead: storage.TreeHead{Size: size, Root: root}, Note: signed}
}

// item is an entry to append: its data and optional idempotency key.
type item struct {
	data []byte
	key  string
}

func (it item) identity() storage.Hash {
	if it.key != "" {
		return tree.Identity(tree.Hash{}, it.key)
	}
	return tree.LeafHash(it.data)
}

// entryData returns distinct data for entry i of the log, of varied length.
func (l *testLog) entryData(i uint64) []byte {
	return fmt.Appendf(nil, "%s entry %d %s", l.name(), i, strings.Repeat("-", int(i*7919%97)))
}

// newItems returns n items with fresh data, numbered from the log's size.
func (l *testLog) newItems(n int) []item {
	items := make([]item, n)
	for i := range items {
		items[i] = item{data: l.entryData(l.size() + uint64(i))}
	}
	return items
}

// pending is a batch built on the log's current state and what the log
// becomes if it is integrated.
type pending struct {
	b    *storage.Batch
	edge *tree.Edge
}

// batch builds the batch that appends items (with no de-duplication) to
// the log's current head, with its tiles and signed checkpoint.
func (l *testLog) batch(items []item) pending {
	l.e.t.Helper()
	return l.batchOn(l.edge, items)
}

// batchOn builds the batch that appends items to the tree edge.
func (l *testLog) batchOn(edge *tree.Edge, items []item) pending {
	l.e.t.Helper()
	b := &storage.Batch{Prev: storage.TreeHead{Size: edge.Size(), Root: edge.Root()}}
	leaves := make([]tree.Hash, len(items))
	for i, it := range items {
		leaves[i] = tree.LeafHash(it.data)
		b.Entries = append(b.Entries, storage.Entry{
			Index:    edge.Size() + uint64(i),
			Identity: it.identity(),
			LeafHash: leaves[i],
			Data:     it.data,
		})
	}
	next, tiles, err := edge.Append(leaves)
	if err != nil {
		l.e.t.Fatal(err)
	}
	b.Tiles = tiles
	b.Checkpoint = l.sign(next.Size(), next.Root())
	return pending{b: b, edge: next}
}

// integrate stores p and, on success, makes it the log's state.
func (l *testLog) integrate(p pending) error {
	if err := l.e.s.Integrate(l.e.ctx, l.name(), p.b); err != nil {
		return err
	}
	l.commit(p)
	return nil
}

// commit records that p was integrated.
func (l *testLog) commit(p pending) {
	l.edge = p.edge
	l.head = p.b.Checkpoint
	l.entries = append(l.entries, p.b.Entries...)
	for _, td := range p.b.Tiles {
		key := td.Tile
		key.Width = 0
		l.tiles[key] = td.Hashes
	}
	l.checkpoints = append(l.checkpoints, p.b.Checkpoint)
}

// mustIntegrate integrates p or fails the test.
func (l *testLog) mustIntegrate(p pending) {
	l.e.t.Helper()
	if err := l.integrate(p); err != nil {
		l.e.t.Fatalf("Integrate %d entries into %q at size %d: %v", len(p.b.Entries), l.name(), p.b.Prev.Size, err)
	}
}

// appendN appends n fresh entries in one batch.
func (l *testLog) appendN(n int) {
	l.e.t.Helper()
	l.mustIntegrate(l.batch(l.newItems(n)))
}

// appended is what appendItems tells each caller.
type appended struct {
	index     uint64
	duplicate bool
}

// appendItems appends items the way the sequencer does: it looks up their
// identities, leaves out those already in the log or earlier in the batch
// (answering with the original index), and integrates the rest as one batch.
func (l *testLog) appendItems(items []item) []appended {
	l.e.t.Helper()
	ids := make([]storage.Hash, len(items))
	for i, it := range items {
		ids[i] = it.identity()
	}
	found, err := l.e.s.LookupIdentities(l.e.ctx, l.name(), ids)
	if err != nil {
		l.e.t.Fatalf("LookupIdentities: %v", err)
	}
	out := make([]appended, len(items))
	var fresh []item
	for i, it := range items {
		if idx, ok := found[ids[i]]; ok {
			out[i] = appended{index: idx, duplicate: true}
			continue
		}
		idx := l.size() + uint64(len(fresh))
		found[ids[i]] = idx
		fresh = append(fresh, it)
		out[i] = appended{index: idx}
	}
	if len(fresh) > 0 {
		l.mustIntegrate(l.batch(fresh))
	}
	return out
}

// tileReader reads the log's hash tiles from the store, as tree needs them.
func (l *testLog) tileReader() tree.TileReader {
	return tree.TileReaderFunc(func(ts []tile.Tile) ([][]byte, error) {
		data, err := l.e.s.ReadTiles(l.e.ctx, l.name(), ts)
		if errors.Is(err, storage.ErrNotFound) {
			err = fmt.Errorf("%w: %w", tree.ErrMissingTile, err)
		}
		return data, err
	})
}

// verify verifies the whole stored log with storage.VerifyLog.
func (l *testLog) verify() {
	l.e.t.Helper()
	r, err := storage.VerifyLog(l.e.ctx, l.e.s, l.name(), l.verifier)
	if err != nil {
		l.e.t.Fatalf("VerifyLog(%q): %v", l.name(), err)
	}
	if r.Size != l.size() || r.Entries != l.size() || r.Checkpoints != len(l.checkpoints)-1 {
		l.e.t.Fatalf("VerifyLog(%q) = %+v, want size %d, %d entries, %d checkpoints", l.name(), r, l.size(), l.size(), len(l.checkpoints)-1)
	}
}

// check reads back the head, every entry, every tile and the root, and
// compares them with what the log must hold.
func (l *testLog) check() {
	l.e.t.Helper()
	l.checkHead()
	l.checkEntries(0, l.size())
	l.checkTiles()
	l.checkRoot()
}

func (l *testLog) checkHead() {
	l.e.t.Helper()
	got, err := l.e.s.LatestCheckpoint(l.e.ctx, l.name())
	if err != nil {
		l.e.t.Fatalf("LatestCheckpoint(%q): %v", l.name(), err)
	}
	if !sameCheckpoint(got, l.head) {
		l.e.t.Fatalf("LatestCheckpoint(%q) = %s, want %s", l.name(), showCheckpoint(got), showCheckpoint(l.head))
	}
}

// checkEntries reads entries [start, end) and compares them.
func (l *testLog) checkEntries(start, end uint64) {
	l.e.t.Helper()
	got, err := l.e.s.ReadEntries(l.e.ctx, l.name(), start, end)
	if err != nil {
		l.e.t.Fatalf("ReadEntries(%q, %d, %d): %v", l.name(), start, end, err)
	}
	if uint64(len(got)) != end-start {
		l.e.t.Fatalf("ReadEntries(%q, %d, %d) returned %d entries", l.name(), start, end, len(got))
	}
	for i, g := range got {
		w := l.entries[start+uint64(i)]
		if g.Index != w.Index || g.Identity != w.Identity || g.LeafHash != w.LeafHash || !bytes.Equal(g.Data, w.Data) {
			l.e.t.Fatalf("ReadEntries(%q, %d, %d)[%d] = %s, want %s", l.name(), start, end, i, showEntry(g), showEntry(w))
		}
	}
}

// allTiles returns every hash tile of a tree of the given size.
func allTiles(size uint64) []tile.Tile {
	var ts []tile.Tile
	for level := 0; level <= tile.MaxLevel && size>>(tile.Height*uint(level)) > 0; level++ {
		for i := uint64(0); ; i++ {
			t, ok := tile.ForSize(level, i, size)
			if !ok {
				break
			}
			ts = append(ts, t)
		}
	}
	return ts
}

// checkTiles reads every tile of the log in one call and compares each with
// what Integrate was given.
func (l *testLog) checkTiles() {
	l.e.t.Helper()
	ts := allTiles(l.size())
	if len(ts) == 0 {
		return
	}
	got, err := l.e.s.ReadTiles(l.e.ctx, l.name(), ts)
	if err != nil {
		l.e.t.Fatalf("ReadTiles(%q, %d tiles of size %d): %v", l.name(), len(ts), l.size(), err)
	}
	if len(got) != len(ts) {
		l.e.t.Fatalf("ReadTiles(%q, %d tiles) returned %d", l.name(), len(ts), len(got))
	}
	for i, t := range ts {
		key := t
		key.Width = 0
		want := l.tiles[key][:t.Width*tile.HashSize]
		if len(got[i]) < len(want) || !bytes.Equal(got[i][:len(want)], want) {
			l.e.t.Fatalf("ReadTiles(%q): %s has %d bytes that are not the %d bytes integrated", l.name(), t.Path(), len(got[i]), len(want))
		}
	}
	l.checkSlices(ts)
}

// checkSlices reads, if the store reads slices of tiles, the first hash, the
// last hash, a run of 32 in the middle and the whole of each tile, in one
// call, and compares each with what Integrate was given.
func (l *testLog) checkSlices(ts []tile.Tile) {
	l.e.t.Helper()
	sr, ok := l.e.s.(storage.SliceReader)
	if !ok {
		return
	}
	var slices []tree.TileSlice
	for _, t := range ts {
		mid := t.Width / 2
		slices = append(slices,
			tree.TileSlice{Tile: t, From: 0, To: 1},
			tree.TileSlice{Tile: t, From: t.Width - 1, To: t.Width},
			tree.TileSlice{Tile: t, From: max(mid-16, 0), To: min(mid+16, t.Width)},
			tree.TileSlice{Tile: t, From: 0, To: t.Width})
	}
	got, err := sr.ReadTileSlices(l.e.ctx, l.name(), slices)
	if err != nil {
		l.e.t.Fatalf("ReadTileSlices(%q, %d slices of size %d): %v", l.name(), len(slices), l.size(), err)
	}
	if len(got) != len(slices) {
		l.e.t.Fatalf("ReadTileSlices(%q, %d slices) returned %d", l.name(), len(slices), len(got))
	}
	for i, sl := range slices {
		key := sl.Tile
		key.Width = 0
		want := l.tiles[key][sl.From*tile.HashSize : sl.To*tile.HashSize]
		if !bytes.Equal(got[i], want) {
			l.e.t.Fatalf("ReadTileSlices(%q): hashes %d..%d of %s: %d bytes that are not the %d bytes integrated",
				l.name(), sl.From, sl.To, sl.Tile.Path(), len(got[i]), len(want))
		}
	}
}

// checkRoot recomputes the root and the right edge from the stored tiles.
func (l *testLog) checkRoot() {
	l.e.t.Helper()
	root, err := tree.RootHash(l.tileReader(), l.size())
	if err != nil {
		l.e.t.Fatalf("RootHash(%q, %d) from stored tiles: %v", l.name(), l.size(), err)
	}
	if root != l.edge.Root() {
		l.e.t.Fatalf("RootHash(%q, %d) from stored tiles = %x, want %x", l.name(), l.size(), root, l.edge.Root())
	}
	edge, err := tree.LoadEdge(l.tileReader(), l.size())
	if err != nil {
		l.e.t.Fatalf("LoadEdge(%q, %d) from stored tiles: %v", l.name(), l.size(), err)
	}
	if edge.Root() != l.edge.Root() {
		l.e.t.Fatalf("LoadEdge(%q, %d) from stored tiles: root %x, want %x", l.name(), l.size(), edge.Root(), l.edge.Root())
	}
}

// resume reloads the log's state from storage, as a restarted sequencer
// does, and checks it is the state the log had.
func (l *testLog) resume() {
	l.e.t.Helper()
	head, err := l.e.s.LatestCheckpoint(l.e.ctx, l.name())
	if err != nil {
		l.e.t.Fatalf("LatestCheckpoint(%q): %v", l.name(), err)
	}
	edge, err := tree.LoadEdge(l.tileReader(), head.Size)
	if err != nil {
		l.e.t.Fatalf("LoadEdge(%q, %d): %v", l.name(), head.Size, err)
	}
	if !sameCheckpoint(head, l.head) || edge.Root() != l.edge.Root() {
		l.e.t.Fatalf("resuming %q: head %s, edge root %x; want %s", l.name(), showCheckpoint(head), edge.Root(), showCheckpoint(l.head))
	}
	l.edge = edge
}

// snapshot is everything stored for a log, to check that a refused call
// changed nothing.
type snapshot struct {
	Log         storage.Log
	Latest      storage.Checkpoint
	Checkpoints []storage.Checkpoint
	Entries     []storage.Entry
	Next        string // the error reading the entry after the last
	Tiles       [][]byte
	Cosigs      map[uint64][]storage.Cosignature
}

func (l *testLog) snapshot() snapshot {
	l.e.t.Helper()
	t, ctx, s, name := l.e.t, l.e.ctx, l.e.s, l.name()
	var snap snapshot
	var err error
	if snap.Log, err = s.GetLog(ctx, name); err != nil {
		t.Fatalf("GetLog(%q): %v", name, err)
	}
	snap.Log.CreatedAt = snap.Log.CreatedAt.UTC()
	if snap.Latest, err = s.LatestCheckpoint(ctx, name); err != nil {
		t.Fatalf("LatestCheckpoint(%q): %v", name, err)
	}
	if snap.Checkpoints, err = s.ListCheckpoints(ctx, name, 0, 1<<20); err != nil {
		t.Fatalf("ListCheckpoints(%q): %v", name, err)
	}
	size := snap.Latest.Size
	if snap.Entries, err = s.ReadEntries(ctx, name, 0, size); err != nil {
		t.Fatalf("ReadEntries(%q, 0, %d): %v", name, size, err)
	}
	_, err = s.ReadEntries(ctx, name, size, size+1)
	snap.Next = fmt.Sprint(errors.Is(err, storage.ErrNotFound))
	if ts := allTiles(size); len(ts) > 0 {
		if snap.Tiles, err = s.ReadTiles(ctx, name, ts); err != nil {
			t.Fatalf("ReadTiles(%q, size %d): %v", name, size, err)
		}
	}
	snap.Cosigs = map[uint64][]storage.Cosignature{}
	for _, c := range append([]storage.Checkpoint{{}}, snap.Checkpoints...) {
		cs, err := s.CosignaturesAt(ctx, name, c.Size)
		if err != nil {
			t.Fatalf("CosignaturesAt(%q, %d): %v", name, c.Size, err)
		}
		if len(cs) > 0 {
			snap.Cosigs[c.Size] = sortCosigs(cs)
		}
	}
	// Drivers may return nil or empty slices alike.
	if len(snap.Checkpoints) == 0 {
		snap.Checkpoints = nil
	}
	if len(snap.Entries) == 0 {
		snap.Entries = nil
	}
	return snap
}

// checkUnchanged checks that the log is as in before, and that none of
// the identities in b (a refused batch) was stored unless it already was.
func (l *testLog) checkUnchanged(before snapshot, b *storage.Batch) {
	l.e.t.Helper()
	after := l.snapshot()
	if !reflect.DeepEqual(before, after) {
		l.e.t.Fatalf("log %q changed:\n%s", l.name(), diffSnapshots(before, after))
	}
	if b == nil {
		return
	}
	var ids []storage.Hash
	known := map[storage.Hash]bool{}
	for _, e := range before.Entries {
		known[e.Identity] = true
	}
	for _, e := range b.Entries {
		if !known[e.Identity] {
			ids = append(ids, e.Identity)
		}
	}
	found, err := l.e.s.LookupIdentities(l.e.ctx, l.name(), ids)
	if err != nil {
		l.e.t.Fatalf("LookupIdentities(%q): %v", l.name(), err)
	}
	if len(found) > 0 {
		l.e.t.Fatalf("LookupIdentities(%q) finds %d identities of the refused batch", l.name(), len(found))
	}
}

func diffSnapshots(a, b snapshot) string {
	var d []string
	va, vb := reflect.ValueOf(a), reflect.ValueOf(b)
	for i := range va.NumField() {
		if !reflect.DeepEqual(va.Field(i).Interface(), vb.Field(i).Interface()) {
			fa, fb := fmt.Sprint(va.Field(i).Interface()), fmt.Sprint(vb.Field(i).Interface())
			d = append(d, fmt.Sprintf("  %s: %s\n   now: %s", va.Type().Field(i).Name, clip(fa), clip(fb)))
		}
	}
	return strings.Join(d, "\n")
}

func clip(s string) string {
	if len(s) > 300 {
		return s[:300] + "..."
	}
	return s
}

func sortCosigs(cs []storage.Cosignature) []storage.Cosignature {
	cs = slices.Clone(cs)
	slices.SortFunc(cs, func(a, b storage.Cosignature) int { return strings.Compare(a.KeyID, b.KeyID) })
	return cs
}

func sameCheckpoint(a, b storage.Checkpoint) bool {
	return a.TreeHead == b.TreeHead && bytes.Equal(a.Note, b.Note)
}

func showCheckpoint(c storage.Checkpoint) string {
	return fmt.Sprintf("{size %d, root %x, note %q}", c.Size, c.Root[:4], c.Note)
}

func showEntry(e storage.Entry) string {
	return fmt.Sprintf("{index %d, identity %x, leaf hash %x, %d bytes %q}", e.Index, e.Identity[:4], e.LeafHash[:4], len(e.Data), clip(string(e.Data)))
}

func sameLog(a, b storage.Log) bool {
	return a.Name == b.Name && a.Origin == b.Origin && a.VerifierKey == b.VerifierKey && a.CreatedAt.Equal(b.CreatedAt)
}
