package storagetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"

	"golang.org/x/mod/sumdb/note"
	sumdb "golang.org/x/mod/sumdb/tlog"

	"github.com/tlog-dev/tlog/pkg/audit"
	"github.com/tlog-dev/tlog/pkg/checkpoint"
	"github.com/tlog-dev/tlog/pkg/tile"
	"github.com/tlog-dev/tlog/pkg/tree"
	"github.com/tlog-dev/tlog/storage"
)

// wantErr fails the test unless err wraps target.
func (e *env) wantErr(what string, err, target error) {
	e.t.Helper()
	if !errors.Is(err, target) {
		e.t.Fatalf("%s: got error %v, want one wrapping %q", what, err, target)
	}
}

// noErr fails the test if err is not nil.
func (e *env) noErr(what string, err error) {
	e.t.Helper()
	if err != nil {
		e.t.Fatalf("%s: %v", what, err)
	}
}

// testEmptyLog: a log as CreateLog leaves it, and CreateLog itself.
func testEmptyLog(e *env) {
	ctx, s := e.ctx, e.s
	b := e.createLog("log-b")
	a := e.createLog("log-a")
	for _, l := range []*testLog{a, b} {
		got, err := s.GetLog(ctx, l.name())
		e.noErr("GetLog", err)
		if !sameLog(got, l.log) {
			e.t.Fatalf("GetLog(%q) = %+v, want %+v", l.name(), got, l.log)
		}
	}
	checkLogs := func() {
		e.t.Helper()
		logs, err := s.ListLogs(ctx)
		e.noErr("ListLogs", err)
		if len(logs) != 2 || !sameLog(logs[0], a.log) || !sameLog(logs[1], b.log) {
			e.t.Fatalf("ListLogs = %+v, want [%+v %+v] (ordered by name)", logs, a.log, b.log)
		}
	}
	checkLogs()

	l := a
	name := l.name()
	l.checkHead()
	c, err := s.CheckpointAt(ctx, name, 0)
	e.noErr("CheckpointAt(0)", err)
	if !sameCheckpoint(c, l.head) {
		e.t.Fatalf("CheckpointAt(0) = %s, want %s", showCheckpoint(c), showCheckpoint(l.head))
	}
	_, err = s.CheckpointAt(ctx, name, 1)
	e.wantErr("CheckpointAt(1)", err, storage.ErrNotFound)
	cs, err := s.ListCheckpoints(ctx, name, 0, 10)
	e.noErr("ListCheckpoints", err)
	if len(cs) != 0 {
		e.t.Fatalf("ListCheckpoints(after 0) = %d checkpoints, want none (the empty tree's is not after 0)", len(cs))
	}
	es, err := s.ReadEntries(ctx, name, 0, 0)
	e.noErr("ReadEntries(0, 0)", err)
	if len(es) != 0 {
		e.t.Fatalf("ReadEntries(0, 0) = %d entries", len(es))
	}
	_, err = s.ReadEntries(ctx, name, 0, 1)
	e.wantErr("ReadEntries(0, 1)", err, storage.ErrNotFound)
	for _, ts := range [][]tile.Tile{
		{{Level: 0, Index: 0, Width: 1}},
		{{Level: 0, Index: 0, Width: tile.Width}},
		{{Level: 1, Index: 0, Width: 1}},
	} {
		_, err := s.ReadTiles(ctx, name, ts)
		e.wantErr("ReadTiles("+ts[0].Path()+")", err, storage.ErrNotFound)
	}
	for _, ids := range [][]storage.Hash{nil, {tree.LeafHash([]byte("x")), tree.Identity(tree.Hash{}, "x")}} {
		found, err := s.LookupIdentities(ctx, name, ids)
		e.noErr("LookupIdentities", err)
		if len(found) != 0 {
			e.t.Fatalf("LookupIdentities(%d ids) on an empty log = %v", len(ids), found)
		}
	}
	_, err = s.FindLeaf(ctx, name, tree.LeafHash([]byte("x")))
	e.wantErr("FindLeaf", err, storage.ErrNotFound)
	cosigs, err := s.CosignaturesAt(ctx, name, 0)
	e.noErr("CosignaturesAt(0)", err)
	if len(cosigs) != 0 {
		e.t.Fatalf("CosignaturesAt(0) = %v, want none", cosigs)
	}

	// The name is taken, whatever the new log's key.
	before := a.snapshot()
	again := e.newLog(name)
	err = s.CreateLog(ctx, again.log, again.head)
	e.wantErr("CreateLog of an existing log", err, storage.ErrLogExists)
	a.checkUnchanged(before, nil)
	checkLogs()

	a.verify()
	b.verify()
}

// namedCall is a method call of a test that checks the error of each.
type namedCall struct {
	name string
	call func() error
}

// sliceCalls are the calls of optional read methods, if s has them.
func sliceCalls(ctx context.Context, s storage.Store, log string) []namedCall {
	sr, ok := s.(storage.SliceReader)
	if !ok {
		return nil
	}
	return []namedCall{{"ReadTileSlices", func() error {
		_, err := sr.ReadTileSlices(ctx, log, []tree.TileSlice{{Tile: tile.Tile{Level: 0, Index: 0, Width: 1}, From: 0, To: 1}})
		return err
	}}}
}

// testUnknownLog: every method on a log that does not exist.
func testUnknownLog(e *env) {
	ctx, s := e.ctx, e.s
	l := e.createLog("present")
	l.appendN(3)
	before := l.snapshot()

	const absent = "absent"
	ghost := e.newLog(absent)
	p := ghost.batch(ghost.newItems(2))
	calls := []namedCall{
		{"GetLog", func() error { _, err := s.GetLog(ctx, absent); return err }},
		{"Integrate", func() error { return s.Integrate(ctx, absent, p.b) }},
		{"LatestCheckpoint", func() error { _, err := s.LatestCheckpoint(ctx, absent); return err }},
		{"CheckpointAt", func() error { _, err := s.CheckpointAt(ctx, absent, 0); return err }},
		{"ListCheckpoints", func() error { _, err := s.ListCheckpoints(ctx, absent, 0, 10); return err }},
		{"ReadTiles", func() error {
			_, err := s.ReadTiles(ctx, absent, []tile.Tile{{Level: 0, Index: 0, Width: 1}})
			return err
		}},
		{"ReadEntries", func() error { _, err := s.ReadEntries(ctx, absent, 0, 1); return err }},
		{"ReadEntries of an empty range", func() error { _, err := s.ReadEntries(ctx, absent, 0, 0); return err }},
		{"LookupIdentities", func() error {
			_, err := s.LookupIdentities(ctx, absent, []storage.Hash{l.entries[0].Identity})
			return err
		}},
		{"FindLeaf", func() error { _, err := s.FindLeaf(ctx, absent, l.entries[0].LeafHash); return err }},
		{"AddCosignatures", func() error {
			return s.AddCosignatures(ctx, absent, 0, []storage.Cosignature{{KeyID: "w+01020304", Signature: []byte("— w AQIDBA==")}})
		}},
		{"CosignaturesAt", func() error { _, err := s.CosignaturesAt(ctx, absent, 0); return err }},
		{"SetWitnessPolicy", func() error { return s.SetWitnessPolicy(ctx, absent, "quorum none\n") }},
		{"VerifyLog", func() error { _, err := storage.VerifyLog(ctx, s, absent, ghost.verifier); return err }},
	}
	calls = append(calls, sliceCalls(ctx, s, absent)...)
	for _, c := range calls {
		e.run(c.name, func() {
			e.wantErr(c.name+" on an unknown log", c.call(), storage.ErrLogNotFound)
		})
	}
	_, err := s.GetLog(ctx, absent)
	e.wantErr("GetLog after Integrate into an unknown log", err, storage.ErrLogNotFound)
	logs, err := s.ListLogs(ctx)
	e.noErr("ListLogs", err)
	if len(logs) != 1 || logs[0].Name != l.name() {
		e.t.Fatalf("ListLogs = %+v, want only %q", logs, l.name())
	}
	l.checkUnchanged(before, nil)
	l.verify()
}

// maxEntry returns an entry of the largest size, distinct for each log.
func (l *testLog) maxEntry() item {
	d := bytes.Repeat([]byte{0xa5}, tile.MaxEntrySize)
	copy(d, l.name())
	return item{data: d}
}

// testBatches: batches around a tile's width, and a large one, each in a
// fresh log and then in sequence in one log.
func testBatches(e *env) {
	sizes := []int{1, 255, 256, 257, 10000}
	for _, n := range sizes {
		e.run(fmt.Sprintf("alone/%d", n), func() {
			l := e.createLog(fmt.Sprintf("batch-%d", n))
			items := l.newItems(n)
			if n > 256 {
				items[n/2] = l.maxEntry()
			}
			l.mustIntegrate(l.batch(items))
			l.check()
			l.checkReads()
			l.verify()
		})
	}
	e.run("in sequence", func() {
		l := e.createLog("sequence")
		for _, n := range sizes {
			items := l.newItems(n)
			if n == 257 {
				items[128] = l.maxEntry()
			}
			l.mustIntegrate(l.batch(items))
			l.check()
			l.checkReads()
		}
		l.verify()
	})
}

// checkReads reads ranges of entries and tiles around the end of the log.
func (l *testLog) checkReads() {
	l.e.t.Helper()
	ctx, s, name, n := l.e.ctx, l.e.s, l.name(), l.size()
	l.checkEntries(n-1, n)
	l.checkEntries(n/3, n/2+1)
	l.checkEntries(n, n)
	_, err := s.ReadEntries(ctx, name, n, n+1)
	l.e.wantErr(fmt.Sprintf("ReadEntries(%d, %d) at size %d", n, n+1, n), err, storage.ErrNotFound)
	_, err = s.ReadEntries(ctx, name, n-1, n+1)
	l.e.wantErr(fmt.Sprintf("ReadEntries(%d, %d) at size %d", n-1, n+1, n), err, storage.ErrNotFound)

	// A narrower view of a tile is its prefix; a wider one does not exist.
	last := tile.Tile{Level: 0, Index: (n - 1) / tile.Width, Width: int((n-1)%tile.Width) + 1}
	narrow := last
	narrow.Width = 1
	got, err := s.ReadTiles(ctx, name, []tile.Tile{narrow, {Level: 0, Index: 0, Width: 1}})
	l.e.noErr("ReadTiles(narrower)", err)
	for i, w := range [][]byte{l.tiles[tile.Tile{Level: 0, Index: last.Index}], l.tiles[tile.Tile{Level: 0, Index: 0}]} {
		if len(got[i]) < tile.HashSize || !bytes.Equal(got[i][:tile.HashSize], w[:tile.HashSize]) {
			l.e.t.Fatalf("ReadTiles(%q) of a narrower tile returned %d bytes, not a prefix of the stored tile", name, len(got[i]))
		}
	}
	var wider tile.Tile
	if last.IsFull() {
		wider = tile.Tile{Level: 0, Index: last.Index + 1, Width: 1}
	} else {
		wider = last
		wider.Width++
	}
	_, err = s.ReadTiles(ctx, name, []tile.Tile{wider})
	l.e.wantErr(fmt.Sprintf("ReadTiles(%s) at size %d", wider.Path(), n), err, storage.ErrNotFound)
	_, err = s.ReadTiles(ctx, name, []tile.Tile{narrow, wider})
	l.e.wantErr(fmt.Sprintf("ReadTiles(%s, %s) at size %d", narrow.Path(), wider.Path(), n), err, storage.ErrNotFound)

	sr, ok := s.(storage.SliceReader)
	if !ok {
		return
	}
	// Slices: of the tile beyond the log, or reaching past what is stored,
	// are missing; malformed ones are invalid.
	last.Width = tile.Width
	stored := int((n-1)%tile.Width) + 1
	missing := []tree.TileSlice{{Tile: tile.Tile{Level: 0, Index: last.Index + 1, Width: 1}, From: 0, To: 1}}
	if stored < tile.Width {
		missing = append(missing, tree.TileSlice{Tile: last, From: 0, To: stored + 1}, tree.TileSlice{Tile: last, From: stored, To: tile.Width})
	}
	for _, sl := range missing {
		_, err = sr.ReadTileSlices(ctx, name, []tree.TileSlice{{Tile: narrow, From: 0, To: 1}, sl})
		l.e.wantErr(fmt.Sprintf("ReadTileSlices(%d..%d of %s) at size %d", sl.From, sl.To, sl.Tile.Path(), n), err, storage.ErrNotFound)
	}
	first := tile.Tile{Level: 0, Index: 0, Width: 1}
	for _, sl := range []tree.TileSlice{
		{Tile: first, From: 0, To: 0},
		{Tile: first, From: 1, To: 1},
		{Tile: first, From: -1, To: 1},
		{Tile: first, From: 0, To: 2},
		{Tile: tile.Tile{Level: 0, Index: 0, Width: 0}, From: 0, To: 1},
		{Tile: tile.Tile{Level: -1, Index: 0, Width: 1}, From: 0, To: 1},
		{Tile: tile.Tile{Level: 0, Index: 0, Width: tile.Width + 1}, From: 0, To: 1},
	} {
		_, err = sr.ReadTileSlices(ctx, name, []tree.TileSlice{sl})
		l.e.wantErr(fmt.Sprintf("ReadTileSlices(%d..%d of level %d width %d)", sl.From, sl.To, sl.Tile.Level, sl.Tile.Width), err, storage.ErrInvalid)
	}
	got, err = sr.ReadTileSlices(ctx, name, nil)
	l.e.noErr("ReadTileSlices(none)", err)
	if len(got) != 0 {
		l.e.t.Fatalf("ReadTileSlices(none) returned %d slices", len(got))
	}
}

// sumdbModel is golang.org/x/mod/sumdb/tlog's stored hashes of the same
// tree: an independent implementation to check roots and proofs against.
type sumdbModel []sumdb.Hash

func (m sumdbModel) ReadHashes(idx []int64) ([]sumdb.Hash, error) {
	out := make([]sumdb.Hash, len(idx))
	for i, x := range idx {
		out[i] = m[x]
	}
	return out, nil
}

func toSumdb(p [][]byte) sumdb.TreeProof {
	out := make(sumdb.TreeProof, len(p))
	for i := range p {
		out[i] = sumdb.Hash(p[i])
	}
	return out
}

// testProofs: at every tree size up to 600, the root, inclusion proofs and
// consistency proofs built from the stored tiles verify with
// golang.org/x/mod/sumdb/tlog, and match the checkpoint signed at that size.
// The log grows one entry per batch up to 600, so that every size has a
// checkpoint, then in batches of varied sizes, so that the proofs are built
// from tiles that have grown since.
func testProofs(e *env) {
	const maxSize = 600
	l := e.createLog("proofs")
	rnd := rand.New(rand.NewPCG(1, 2))
	var model sumdbModel
	roots := []sumdb.Hash{sumdb.Hash(tree.EmptyRoot())}
	var checked []uint64 // sizes beyond maxSize to check
	for l.size() < 1500 {
		size := l.size()
		n := 1
		if size >= maxSize {
			n = 1 + rnd.IntN(300)
			checked = append(checked, size)
		}
		items := l.newItems(n)
		for i, it := range items {
			hs, err := sumdb.StoredHashes(int64(size)+int64(i), it.data, model)
			e.noErr("sumdb.StoredHashes", err)
			model = append(model, hs...)
			root, err := sumdb.TreeHash(int64(size)+int64(i)+1, model)
			e.noErr("sumdb.TreeHash", err)
			roots = append(roots, root)
		}
		l.mustIntegrate(l.batch(items))
	}
	l.check()

	signed := map[uint64]storage.Checkpoint{}
	for _, c := range l.checkpoints {
		signed[c.Size] = c
	}
	r := l.tileReader()
	sizes := checked[1:] // maxSize is checked below
	for n := uint64(1); n <= maxSize; n++ {
		sizes = append(sizes, n)
	}
	for _, n := range sizes {
		root := roots[n]
		got, err := tree.RootHash(r, n)
		e.noErr(fmt.Sprintf("RootHash(%d) from stored tiles", n), err)
		if sumdb.Hash(got) != root {
			e.t.Fatalf("RootHash(%d) from stored tiles = %x, sumdb/tlog says %x", n, got, root)
		}
		c, err := e.s.CheckpointAt(e.ctx, l.name(), n)
		if want, ok := signed[n]; ok {
			e.noErr(fmt.Sprintf("CheckpointAt(%d)", n), err)
			if !sameCheckpoint(c, want) {
				e.t.Fatalf("CheckpointAt(%d) = %s, want %s", n, showCheckpoint(c), showCheckpoint(want))
			}
			cp, _, err := checkpoint.Open(c.Note, l.verifier)
			e.noErr(fmt.Sprintf("opening the checkpoint at size %d", n), err)
			if cp.Size != n || sumdb.Hash(cp.Hash) != root {
				e.t.Fatalf("checkpoint at size %d says size %d root %x, sumdb/tlog root is %x", n, cp.Size, cp.Hash, root)
			}
		} else {
			e.wantErr(fmt.Sprintf("CheckpointAt(%d), never signed", n), err, storage.ErrNotFound)
		}
		for _, i := range []uint64{0, n - 1, rnd.Uint64N(n)} {
			p, err := tree.InclusionProof(r, i, n)
			e.noErr(fmt.Sprintf("InclusionProof(%d, %d) from stored tiles", i, n), err)
			if err := sumdb.CheckRecord(sumdb.RecordProof(toSumdb(p)), int64(n), root, int64(i), sumdb.RecordHash(l.entries[i].Data)); err != nil {
				e.t.Fatalf("inclusion proof of %d in %d from stored tiles: sumdb/tlog: %v", i, n, err)
			}
		}
		for _, m := range []uint64{1, n / 2, n - 1, rnd.Uint64N(n) + 1} {
			if m == 0 {
				continue
			}
			p, err := tree.ConsistencyProof(r, m, n)
			e.noErr(fmt.Sprintf("ConsistencyProof(%d, %d) from stored tiles", m, n), err)
			if err := sumdb.CheckTree(toSumdb(p), int64(n), root, int64(m), roots[m]); err != nil {
				e.t.Fatalf("consistency proof %d..%d from stored tiles: sumdb/tlog: %v", m, n, err)
			}
		}
	}
	l.verify()
}

// testDedup: identities, LookupIdentities and FindLeaf, with and without
// idempotency keys, and Integrate refusing an identity already stored.
func testDedup(e *env) {
	ctx, s := e.ctx, e.s
	l := e.createLog("dedup")
	name := l.name()
	same := []byte("the same data")
	other := []byte("other data")
	items := append(l.newItems(10),
		item{data: same, key: "key-1"},  // 10
		item{data: same, key: "key-2"},  // 11
		item{data: same},                // 12
		item{data: other, key: "key-3"}, // 13
	)
	for i, r := range l.appendItems(items) {
		if r.index != uint64(i) || r.duplicate {
			e.t.Fatalf("appending item %d: %+v", i, r)
		}
	}

	ids := []storage.Hash{
		tree.LeafHash([]byte("absent")),
		tree.Identity(tree.Hash{}, "absent"),
		tree.LeafHash(other), // a leaf hash, but not an identity: 13 has a key
	}
	want := map[storage.Hash]uint64{}
	for i, it := range items {
		ids = append(ids, it.identity())
		want[it.identity()] = uint64(i)
	}
	found, err := s.LookupIdentities(ctx, name, ids)
	e.noErr("LookupIdentities", err)
	if !mapsEqual(found, want) {
		e.t.Fatalf("LookupIdentities = %v, want %v", found, want)
	}

	for _, c := range []struct {
		what string
		h    storage.Hash
		want uint64
	}{
		{"leaf hash", tree.LeafHash(items[3].data), 3},
		{"leaf hash of 3 entries", tree.LeafHash(same), 10},
		{"leaf hash of a keyed entry", tree.LeafHash(other), 13},
		{"identity of a keyed entry", tree.Identity(tree.Hash{}, "key-3"), 13},
	} {
		got, err := s.FindLeaf(ctx, name, c.h)
		e.noErr("FindLeaf("+c.what+")", err)
		if got != c.want {
			e.t.Fatalf("FindLeaf(%s) = %d, want %d", c.what, got, c.want)
		}
	}
	_, err = s.FindLeaf(ctx, name, tree.LeafHash([]byte("absent")))
	e.wantErr("FindLeaf(unknown)", err, storage.ErrNotFound)

	// The sequencer's way: duplicates get their original index, and only
	// new entries are integrated.
	fresh := item{data: []byte("fresh")}
	got := l.appendItems([]item{
		{data: items[3].data},
		{data: []byte("new data, old key"), key: "key-1"},
		{data: same},
		fresh,
		fresh,
	})
	if want := []appended{{3, true}, {10, true}, {12, true}, {14, false}, {14, true}}; !slices.Equal(got, want) {
		e.t.Fatalf("appending duplicates: %+v, want %+v", got, want)
	}
	if l.size() != 15 {
		e.t.Fatalf("appending duplicates: log size %d, want 15", l.size())
	}

	// Integrate refuses an identity already in the log, atomically.
	before := l.snapshot()
	p := l.batch([]item{{data: []byte("new")}, {data: items[5].data}})
	e.wantErr("Integrate with an identity already in the log", s.Integrate(ctx, name, p.b), storage.ErrDuplicate)
	l.checkUnchanged(before, p.b)

	// Many identities at once.
	l.appendN(300)
	ids = ids[:0]
	want = map[storage.Hash]uint64{}
	for i, en := range l.entries {
		ids = append(ids, en.Identity)
		want[en.Identity] = uint64(i)
	}
	for i := range 700 {
		ids = append(ids, tree.Identity(tree.Hash{}, fmt.Sprint("absent ", i)))
	}
	found, err = s.LookupIdentities(ctx, name, ids)
	e.noErr("LookupIdentities", err)
	if !mapsEqual(found, want) {
		e.t.Fatalf("LookupIdentities of %d identities: %d found, want %d", len(ids), len(found), len(want))
	}
	l.check()
	l.verify()
}

func mapsEqual(a, b map[storage.Hash]uint64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// testConflict: Integrate on a head that is not the stored one is refused
// with ErrConflict and changes nothing.
func testConflict(e *env) {
	l := e.createLog("conflict")
	l.appendN(10)
	old := l.edge
	l.appendN(5)
	stale := func(prefix string, n int) []item {
		items := make([]item, n)
		for i := range items {
			items[i] = item{data: fmt.Appendf(nil, "%s %d", prefix, i)}
		}
		return items
	}
	ahead, _, err := l.edge.Append([]tree.Hash{tree.LeafHash([]byte("not stored"))})
	e.noErr("Append", err)
	cases := []struct {
		name  string
		batch func() pending
	}{
		{"previous head", func() pending { return l.batchOn(old, stale("previous", 3)) }},
		// A stale sequencer retrying entries that the new leader already
		// integrated must learn that it is stale (ErrConflict), not that
		// its batch is malformed.
		{"previous head, entries already integrated", func() pending {
			items := make([]item, 5)
			for i := range items {
				items[i] = item{data: l.entries[10+i].Data}
			}
			return l.batchOn(old, items)
		}},
		{"empty tree", func() pending { return l.batchOn(tree.EmptyEdge(), stale("empty", 2)) }},
		{"current size, other root", func() pending {
			p := l.batch(stale("root", 2))
			p.b.Prev.Root[0] ^= 1
			return p
		}},
		{"head ahead", func() pending { return l.batchOn(ahead, stale("ahead", 2)) }},
	}
	for _, c := range cases {
		e.run(c.name, func() {
			before := l.snapshot()
			p := c.batch()
			e.wantErr("Integrate on a stale head", e.s.Integrate(e.ctx, l.name(), p.b), storage.ErrConflict)
			l.checkUnchanged(before, p.b)
		})
	}
	l.appendN(4)
	l.check()
	l.verify()
}

// testConcurrentIntegrate: of several batches integrated concurrently on
// the same head, exactly one succeeds; the others get ErrConflict.
func testConcurrentIntegrate(e *env) {
	const rounds, writers = 10, 4
	l := e.createLog("concurrent")
	l.appendN(3)
	for r := range rounds {
		ps := make([]pending, writers)
		for w := range ps {
			items := make([]item, 1+3*w)
			for i := range items {
				items[i] = item{data: fmt.Appendf(nil, "round %d writer %d entry %d", r, w, i)}
			}
			ps[w] = l.batch(items)
		}
		errs := make([]error, writers)
		start := make(chan struct{})
		var wg sync.WaitGroup
		for w := range ps {
			wg.Go(func() {
				<-start
				errs[w] = e.s.Integrate(e.ctx, l.name(), ps[w].b)
			})
		}
		close(start)
		wg.Wait()
		winner := -1
		for w, err := range errs {
			switch {
			case err == nil && winner < 0:
				winner = w
			case err == nil:
				e.t.Fatalf("round %d: writers %d and %d both integrated on size %d", r, winner, w, l.size())
			case !errors.Is(err, storage.ErrConflict):
				e.t.Fatalf("round %d: writer %d: %v, want success or an error wrapping %q", r, w, err, storage.ErrConflict)
			}
		}
		if winner < 0 {
			e.t.Fatalf("round %d: no writer succeeded: %v", r, errs)
		}
		l.commit(ps[winner])
		l.check()
	}
	l.verify()
}

// testInvalidBatch: malformed batches are refused with ErrInvalid and
// change nothing.
func testInvalidBatch(e *env) {
	l := e.createLog("invalid")
	l.appendN(300)
	l.appendItems([]item{{data: []byte("keyed"), key: "key-1"}})
	cases := []struct {
		name  string
		batch func() pending
		want  error // ErrInvalid if nil
	}{
		{"entries start after the head", func() pending {
			p := l.batch(l.newItems(5))
			for i := range p.b.Entries {
				p.b.Entries[i].Index++
			}
			return p
		}, nil},
		{"gap in indices", func() pending {
			p := l.batch(l.newItems(5))
			for i := 2; i < len(p.b.Entries); i++ {
				p.b.Entries[i].Index++
			}
			return p
		}, nil},
		{"repeated index", func() pending {
			p := l.batch(l.newItems(5))
			p.b.Entries[2].Index = p.b.Entries[1].Index
			return p
		}, nil},
		{"entry too large", func() pending {
			items := l.newItems(5)
			items[2].data = bytes.Repeat([]byte{'x'}, tile.MaxEntrySize+1)
			return l.batch(items)
		}, nil},
		{"checkpoint size too small", func() pending {
			p := l.batch(l.newItems(5))
			p.b.Checkpoint = l.sign(p.b.Checkpoint.Size-1, p.edge.Root())
			return p
		}, nil},
		{"checkpoint size too large", func() pending {
			p := l.batch(l.newItems(5))
			p.b.Checkpoint = l.sign(p.b.Checkpoint.Size+1, p.edge.Root())
			return p
		}, nil},
		{"identity already in the log", func() pending {
			items := l.newItems(5)
			items[3] = item{data: l.entries[7].Data}
			return l.batch(items)
		}, storage.ErrDuplicate},
		{"idempotency key already in the log", func() pending {
			items := l.newItems(5)
			items[3] = item{data: []byte("other data"), key: "key-1"}
			return l.batch(items)
		}, storage.ErrDuplicate},
		{"identity twice in the batch", func() pending {
			items := l.newItems(5)
			items[4] = items[1]
			return l.batch(items)
		}, nil},
		{"tile of the wrong length", func() pending {
			p := l.batch(l.newItems(5))
			td := &p.b.Tiles[0]
			td.Hashes = td.Hashes[:len(td.Hashes)-tile.HashSize]
			return p
		}, nil},
	}
	for _, c := range cases {
		e.run(c.name, func() {
			before := l.snapshot()
			p := c.batch()
			want := c.want
			if want == nil {
				want = storage.ErrInvalid
			}
			e.wantErr("Integrate", e.s.Integrate(e.ctx, l.name(), p.b), want)
			l.checkUnchanged(before, p.b)
		})
	}
	l.appendN(5)
	l.check()
	l.verify()
}

// testTilesOnlyGrow: a batch that would rewrite or shrink a stored tile is
// refused with ErrInvalid and changes nothing.
func testTilesOnlyGrow(e *env) {
	l := e.createLog("tiles")
	l.appendN(300) // tile/0/000, tile/0/001.p/44, tile/1/000.p/1
	stored := func(level int, index uint64, width int) []byte {
		return bytes.Clone(l.tiles[tile.Tile{Level: level, Index: index}][:width*tile.HashSize])
	}
	flip := func(b []byte, hash int) []byte {
		b[hash*tile.HashSize+5] ^= 1
		return b
	}
	add := func(p pending, t tile.Tile, hashes []byte) pending {
		p.b.Tiles = append(p.b.Tiles, tree.TileData{Tile: t, Hashes: hashes})
		return p
	}
	cases := []struct {
		name  string
		batch func() pending
	}{
		{"partial tile with another prefix", func() pending {
			p := l.batch(l.newItems(5))
			for i := range p.b.Tiles {
				if p.b.Tiles[i].Level == 0 {
					p.b.Tiles[i].Hashes = flip(bytes.Clone(p.b.Tiles[i].Hashes), 3)
				}
			}
			return p
		}},
		{"partial tile shrunk", func() pending {
			p := l.batch(l.newItems(5))
			p.b.Tiles = nil
			return add(p, tile.Tile{Level: 0, Index: 1, Width: 40}, stored(0, 1, 40))
		}},
		{"full tile rewritten", func() pending {
			return add(l.batch(l.newItems(5)), tile.Tile{Level: 0, Index: 0, Width: tile.Width}, flip(stored(0, 0, tile.Width), 7))
		}},
		{"full tile shrunk", func() pending {
			return add(l.batch(l.newItems(5)), tile.Tile{Level: 0, Index: 0, Width: 100}, stored(0, 0, 100))
		}},
		{"level-1 tile rewritten", func() pending {
			return add(l.batch(l.newItems(5)), tile.Tile{Level: 1, Index: 0, Width: 1}, flip(stored(1, 0, 1), 0))
		}},
	}
	for _, c := range cases {
		e.run(c.name, func() {
			before := l.snapshot()
			p := c.batch()
			e.wantErr("Integrate", e.s.Integrate(e.ctx, l.name(), p.b), storage.ErrInvalid)
			l.checkUnchanged(before, p.b)
		})
	}
	l.appendN(300)
	l.check()
	l.verify()
}

// testCheckpoints: ListCheckpoints pages, and CheckpointAt.
func testCheckpoints(e *env) {
	ctx, s := e.ctx, e.s
	l := e.createLog("checkpoints")
	name := l.name()
	for n := 1; n <= 12; n++ {
		l.appendN(n) // checkpoints at 1, 3, 6, ..., 78
	}
	l.check()
	want := l.checkpoints[1:]
	for _, limit := range []int{1, 3, 5, 12, 100} {
		var got []storage.Checkpoint
		after := uint64(0)
		for {
			page, err := s.ListCheckpoints(ctx, name, after, limit)
			e.noErr("ListCheckpoints", err)
			if len(page) > limit {
				e.t.Fatalf("ListCheckpoints(after %d, limit %d) returned %d", after, limit, len(page))
			}
			if len(page) == 0 {
				break
			}
			got = append(got, page...)
			after = page[len(page)-1].Size
			if len(got) > len(want) {
				break
			}
		}
		if len(got) != len(want) {
			e.t.Fatalf("ListCheckpoints pages of %d: %d checkpoints, want %d", limit, len(got), len(want))
		}
		for i := range got {
			if !sameCheckpoint(got[i], want[i]) {
				e.t.Fatalf("ListCheckpoints pages of %d: checkpoint %d is %s, want %s", limit, i, showCheckpoint(got[i]), showCheckpoint(want[i]))
			}
		}
	}
	for _, c := range []struct {
		after uint64
		limit int
		want  []uint64
	}{
		{2, 2, []uint64{3, 6}},
		{3, 1, []uint64{6}},
		{77, 10, []uint64{78}},
		{78, 10, nil},
		{1 << 40, 10, nil},
	} {
		page, err := s.ListCheckpoints(ctx, name, c.after, c.limit)
		e.noErr("ListCheckpoints", err)
		var sizes []uint64
		for _, p := range page {
			sizes = append(sizes, p.Size)
		}
		if !slices.Equal(sizes, c.want) {
			e.t.Fatalf("ListCheckpoints(after %d, limit %d) = sizes %v, want %v", c.after, c.limit, sizes, c.want)
		}
	}
	for _, want := range l.checkpoints {
		got, err := s.CheckpointAt(ctx, name, want.Size)
		e.noErr(fmt.Sprintf("CheckpointAt(%d)", want.Size), err)
		if !sameCheckpoint(got, want) {
			e.t.Fatalf("CheckpointAt(%d) = %s, want %s", want.Size, showCheckpoint(got), showCheckpoint(want))
		}
	}
	for _, size := range []uint64{2, 4, 77, 79, 1 << 40} {
		_, err := s.CheckpointAt(ctx, name, size)
		e.wantErr(fmt.Sprintf("CheckpointAt(%d), never signed", size), err, storage.ErrNotFound)
	}
	l.verify()
}

// witness is a witness's note key.
type witness struct {
	signer   note.Signer
	verifier note.Verifier
}

func (e *env) newWitness(name string) witness {
	e.t.Helper()
	skey, vkey, err := note.GenerateKey(nil, name)
	e.noErr("note.GenerateKey", err)
	s, err := note.NewSigner(skey)
	e.noErr("note.NewSigner", err)
	v, err := note.NewVerifier(vkey)
	e.noErr("note.NewVerifier", err)
	return witness{s, v}
}

// cosign returns w's signature line on the checkpoint c of l.
func (l *testLog) cosign(w witness, c storage.Checkpoint) storage.Cosignature {
	l.e.t.Helper()
	_, n, err := checkpoint.Open(c.Note, l.verifier)
	l.e.noErr("checkpoint.Open", err)
	signed, err := note.Sign(&note.Note{Text: n.Text}, w.signer)
	l.e.noErr("note.Sign", err)
	lines := strings.Split(strings.TrimSuffix(string(signed), "\n"), "\n")
	return storage.Cosignature{
		KeyID:     fmt.Sprintf("%s+%08x", w.signer.Name(), w.signer.KeyHash()),
		Signature: []byte(lines[len(lines)-1]),
	}
}

func (e *env) checkCosigs(l *testLog, size uint64, want ...storage.Cosignature) {
	e.t.Helper()
	got, err := e.s.CosignaturesAt(e.ctx, l.name(), size)
	e.noErr(fmt.Sprintf("CosignaturesAt(%q, %d)", l.name(), size), err)
	got, want = sortCosigs(got), sortCosigs(want)
	if len(got) != len(want) {
		e.t.Fatalf("CosignaturesAt(%q, %d) = %d cosignatures, want %d", l.name(), size, len(got), len(want))
	}
	for i := range got {
		if got[i].KeyID != want[i].KeyID || !bytes.Equal(got[i].Signature, want[i].Signature) {
			e.t.Fatalf("CosignaturesAt(%q, %d)[%d] = %s %q, want %s %q", l.name(), size, i, got[i].KeyID, got[i].Signature, want[i].KeyID, want[i].Signature)
		}
	}
}

// testCosignatures: adding, replacing and reading witness cosignatures.
func testCosignatures(e *env) {
	ctx, s := e.ctx, e.s
	l := e.createLog("cosigs")
	name := l.name()
	l.appendN(5)
	l.appendN(5) // checkpoints at 0, 5, 10
	w1, w2 := e.newWitness("witness-1"), e.newWitness("witness-2")
	cp0, cp5, cp10 := l.checkpoints[0], l.checkpoints[1], l.checkpoints[2]

	e.checkCosigs(l, 5)
	c1, c2 := l.cosign(w1, cp5), l.cosign(w2, cp5)
	e.noErr("AddCosignatures", s.AddCosignatures(ctx, name, 5, []storage.Cosignature{c1, c2}))
	e.checkCosigs(l, 5, c1, c2)
	e.checkCosigs(l, 10)

	// Same key ID: replaced. (The bytes are w1's signature of another
	// checkpoint; storage does not check them.)
	c1b := l.cosign(w1, cp10)
	e.noErr("AddCosignatures", s.AddCosignatures(ctx, name, 5, []storage.Cosignature{c1b}))
	e.checkCosigs(l, 5, c1b, c2)
	e.noErr("AddCosignatures", s.AddCosignatures(ctx, name, 5, []storage.Cosignature{c1}))
	e.checkCosigs(l, 5, c1, c2)

	// Per checkpoint, including the empty tree's.
	c0, c10 := l.cosign(w1, cp0), l.cosign(w2, cp10)
	e.noErr("AddCosignatures", s.AddCosignatures(ctx, name, 0, []storage.Cosignature{c0}))
	e.noErr("AddCosignatures", s.AddCosignatures(ctx, name, 10, []storage.Cosignature{c10}))
	e.checkCosigs(l, 0, c0)
	e.checkCosigs(l, 5, c1, c2)
	e.checkCosigs(l, 10, c10)

	// Never signed at that size.
	before := l.snapshot()
	for _, size := range []uint64{7, 11} {
		err := s.AddCosignatures(ctx, name, size, []storage.Cosignature{l.cosign(w2, cp10)})
		e.wantErr(fmt.Sprintf("AddCosignatures(%d), never signed", size), err, storage.ErrNotFound)
		e.checkCosigs(l, size)
	}
	l.checkUnchanged(before, nil)

	// The stored lines make the cosigned note a witness verifies.
	cosigned := append(bytes.Clone(cp5.Note), c1.Signature...)
	cosigned = append(cosigned, '\n')
	cosigned = append(cosigned, c2.Signature...)
	cosigned = append(cosigned, '\n')
	_, n, err := checkpoint.Open(cosigned, l.verifier, w1.verifier, w2.verifier)
	e.noErr("opening the cosigned checkpoint", err)
	if len(n.Sigs) != 3 {
		e.t.Fatalf("cosigned checkpoint has %d verified signatures, want 3", len(n.Sigs))
	}
	l.verify()
}

// testWitnessPolicy: a log's own witness policy is stored with the log,
// set, replaced and cleared, per log, and survives a reopen; storage keeps
// the text as given, without parsing it.
func testWitnessPolicy(e *env) {
	ctx, s := e.ctx, e.s
	a := e.createLog("policy-a")
	b := e.newLog("policy-b")
	const policyB = "# tlog-policy\nwitness W w.example/1+01234567+BA==\thttps://w.example/\nquorum W\n"
	b.log.WitnessPolicy = policyB
	e.noErr("CreateLog with a witness policy", s.CreateLog(ctx, b.log, b.head))
	want := func(name, policy string) {
		e.t.Helper()
		l, err := s.GetLog(ctx, name)
		e.noErr("GetLog", err)
		if l.WitnessPolicy != policy {
			e.t.Fatalf("GetLog(%q).WitnessPolicy = %q, want %q", name, l.WitnessPolicy, policy)
		}
		logs, err := s.ListLogs(ctx)
		e.noErr("ListLogs", err)
		for _, l := range logs {
			if l.Name == name && l.WitnessPolicy != policy {
				e.t.Fatalf("ListLogs: %q has WitnessPolicy %q, want %q", name, l.WitnessPolicy, policy)
			}
		}
	}
	want(a.name(), "")
	want(b.name(), policyB)

	a.appendN(3)
	const policyA = "quorum none\n"
	e.noErr("SetWitnessPolicy", s.SetWitnessPolicy(ctx, a.name(), policyA))
	want(a.name(), policyA)
	want(b.name(), policyB)
	a.appendN(2) // integrating keeps the policy
	want(a.name(), policyA)
	e.noErr("SetWitnessPolicy(replace)", s.SetWitnessPolicy(ctx, b.name(), policyA+policyB))
	want(b.name(), policyA+policyB)
	e.noErr("SetWitnessPolicy(clear)", s.SetWitnessPolicy(ctx, b.name(), ""))
	want(b.name(), "")
	e.noErr("SetWitnessPolicy", s.SetWitnessPolicy(ctx, b.name(), policyB))

	e.reopen()
	s = e.s
	want(a.name(), policyA)
	want(b.name(), policyB)
	a.check()
	a.verify()
}

// testMultipleLogs: logs in one store are independent.
func testMultipleLogs(e *env) {
	ctx, s := e.ctx, e.s
	a, b := e.createLog("multi-a"), e.createLog("multi-b")
	a.appendN(300)
	b.check()
	_, err := s.ReadEntries(ctx, b.name(), 0, 1)
	e.wantErr("ReadEntries in the other log", err, storage.ErrNotFound)
	_, err = s.ReadTiles(ctx, b.name(), []tile.Tile{{Level: 0, Index: 0, Width: tile.Width}})
	e.wantErr("ReadTiles in the other log", err, storage.ErrNotFound)
	_, err = s.CheckpointAt(ctx, b.name(), 300)
	e.wantErr("CheckpointAt in the other log", err, storage.ErrNotFound)
	_, err = s.FindLeaf(ctx, b.name(), a.entries[5].LeafHash)
	e.wantErr("FindLeaf in the other log", err, storage.ErrNotFound)
	found, err := s.LookupIdentities(ctx, b.name(), []storage.Hash{a.entries[0].Identity, a.entries[299].Identity})
	e.noErr("LookupIdentities", err)
	if len(found) != 0 {
		e.t.Fatalf("LookupIdentities finds %v in the other log", found)
	}

	// The same identities in both logs.
	shared := []item{{data: []byte("shared")}, {data: []byte("shared, keyed"), key: "shared-key"}}
	if got, want := a.appendItems(shared), []appended{{300, false}, {301, false}}; !slices.Equal(got, want) {
		e.t.Fatalf("appending to %q: %+v, want %+v", a.name(), got, want)
	}
	if got, want := b.appendItems(shared), []appended{{0, false}, {1, false}}; !slices.Equal(got, want) {
		e.t.Fatalf("appending to %q: %+v, want %+v", b.name(), got, want)
	}
	b.appendN(10)

	// A batch for one log does not fit the other's head.
	snapA, snapB := a.snapshot(), b.snapshot()
	p := a.batch(a.newItems(2))
	e.wantErr("Integrate of a batch for another log", s.Integrate(ctx, b.name(), p.b), storage.ErrConflict)
	a.checkUnchanged(snapA, nil)
	b.checkUnchanged(snapB, p.b)

	// Cosignatures are per log.
	w := e.newWitness("witness")
	c := a.cosign(w, a.checkpoints[0])
	e.noErr("AddCosignatures", s.AddCosignatures(ctx, a.name(), 0, []storage.Cosignature{c}))
	e.checkCosigs(a, 0, c)
	e.checkCosigs(b, 0)
	err = s.AddCosignatures(ctx, b.name(), 300, []storage.Cosignature{c})
	e.wantErr("AddCosignatures on a size signed only in the other log", err, storage.ErrNotFound)

	a.check()
	b.check()
	a.verify()
	b.verify()
}

// testReopen: everything is still there after Close and open, and the logs
// can grow on.
func testReopen(e *env) {
	a, b := e.createLog("reopen-a"), e.createLog("reopen-b")
	a.appendN(300)
	a.appendN(1)
	a.appendItems([]item{{data: []byte("keyed"), key: "key-1"}})
	b.appendN(10)
	w := e.newWitness("witness")
	e.noErr("AddCosignatures", e.s.AddCosignatures(e.ctx, a.name(), 301, []storage.Cosignature{a.cosign(w, a.checkpoints[2])}))
	e.noErr("AddCosignatures", e.s.AddCosignatures(e.ctx, b.name(), 10, []storage.Cosignature{b.cosign(w, b.checkpoints[1])}))
	logs := []*testLog{a, b}
	snaps := make([]snapshot, len(logs))
	for i, l := range logs {
		snaps[i] = l.snapshot()
	}

	e.reopen()
	all, err := e.s.ListLogs(e.ctx)
	e.noErr("ListLogs", err)
	if len(all) != 2 || !sameLog(all[0], a.log) || !sameLog(all[1], b.log) {
		e.t.Fatalf("ListLogs after reopening = %+v", all)
	}
	for i, l := range logs {
		l.checkUnchanged(snaps[i], nil)
		l.resume()
		l.check()
		l.verify()
	}
	found, err := e.s.LookupIdentities(e.ctx, a.name(), []storage.Hash{tree.Identity(tree.Hash{}, "key-1")})
	e.noErr("LookupIdentities", err)
	if idx, ok := found[tree.Identity(tree.Hash{}, "key-1")]; !ok || idx != 301 {
		e.t.Fatalf("LookupIdentities(key-1) after reopening = %v, want index 301", found)
	}

	a.appendN(255)
	b.appendN(1000)
	if got := a.appendItems([]item{{data: a.entries[3].Data}}); got[0] != (appended{3, true}) {
		e.t.Fatalf("appending a duplicate after reopening: %+v", got)
	}
	for _, l := range logs {
		l.check()
		l.verify()
	}

	e.reopen()
	for _, l := range logs {
		l.resume()
		l.check()
		l.verify()
	}
}

// testCancelledContext: every method returns the context's error, and a
// cancelled Integrate stores nothing.
func testCancelledContext(e *env) {
	s := e.s
	l := e.createLog("cancel")
	l.appendN(10)
	name := l.name()
	before := l.snapshot()
	ctx, cancel := context.WithCancel(e.ctx)
	cancel()
	p := l.batch(l.newItems(3))
	ghost := e.newLog("cancel-new")
	cosig := storage.Cosignature{KeyID: "w+01020304", Signature: []byte("— w AQIDBA==")}
	calls := []namedCall{
		{"CreateLog", func() error { return s.CreateLog(ctx, ghost.log, ghost.head) }},
		{"GetLog", func() error { _, err := s.GetLog(ctx, name); return err }},
		{"ListLogs", func() error { _, err := s.ListLogs(ctx); return err }},
		{"Integrate", func() error { return s.Integrate(ctx, name, p.b) }},
		{"LatestCheckpoint", func() error { _, err := s.LatestCheckpoint(ctx, name); return err }},
		{"CheckpointAt", func() error { _, err := s.CheckpointAt(ctx, name, 10); return err }},
		{"ListCheckpoints", func() error { _, err := s.ListCheckpoints(ctx, name, 0, 10); return err }},
		{"ReadTiles", func() error {
			_, err := s.ReadTiles(ctx, name, []tile.Tile{{Level: 0, Index: 0, Width: 10}})
			return err
		}},
		{"ReadEntries", func() error { _, err := s.ReadEntries(ctx, name, 0, 10); return err }},
		{"LookupIdentities", func() error {
			_, err := s.LookupIdentities(ctx, name, []storage.Hash{l.entries[0].Identity})
			return err
		}},
		{"FindLeaf", func() error { _, err := s.FindLeaf(ctx, name, l.entries[0].LeafHash); return err }},
		{"AddCosignatures", func() error { return s.AddCosignatures(ctx, name, 10, []storage.Cosignature{cosig}) }},
		{"CosignaturesAt", func() error { _, err := s.CosignaturesAt(ctx, name, 10); return err }},
		{"SetWitnessPolicy", func() error { return s.SetWitnessPolicy(ctx, name, "quorum none\n") }},
		{"VerifyLog", func() error {
			_, err := storage.VerifyLog(ctx, s, name, l.verifier)
			if errors.Is(err, audit.ErrTampered) {
				return fmt.Errorf("reported as tampered: %w", err)
			}
			return err
		}},
	}
	calls = append(calls, sliceCalls(ctx, s, name)...)
	for _, c := range calls {
		e.run(c.name, func() {
			e.wantErr(c.name+" with a cancelled context", c.call(), context.Canceled)
		})
	}
	l.checkUnchanged(before, p.b)
	_, err := s.GetLog(e.ctx, ghost.name())
	e.wantErr("GetLog of a log created with a cancelled context", err, storage.ErrLogNotFound)
	if got, err := s.GetLog(e.ctx, name); err != nil || got.WitnessPolicy != "" {
		e.t.Fatalf("GetLog after SetWitnessPolicy with a cancelled context: policy %q, %v; want none", got.WitnessPolicy, err)
	}

	// The same batch with a live context.
	l.mustIntegrate(p)
	l.check()
	l.verify()
}
