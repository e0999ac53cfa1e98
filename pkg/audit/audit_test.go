package audit_test

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"golang.org/x/mod/sumdb/note"

	"github.com/tlog-dev/tlog/pkg/audit"
	"github.com/tlog-dev/tlog/pkg/checkpoint"
	"github.com/tlog-dev/tlog/pkg/tile"
	"github.com/tlog-dev/tlog/pkg/tree"
)

const origin = "example.com/audit-test"

// memSource is a log in memory, as storage holds it: entries, the widest
// version of each hash tile, and checkpoints indexed by size.
type memSource struct {
	entries     [][]byte             // nil: absent
	tiles       map[tile.Tile][]byte // keyed with Width 0
	sizes       []uint64             // the size each checkpoint is indexed by
	checkpoints [][]byte
	err         map[string]error // injected read errors by method
	// onEmptyList runs once, when ListCheckpoints first finds nothing.
	onEmptyList func()
}

func (m *memSource) ReadTiles(ts []tile.Tile) ([][]byte, error) {
	if err := m.err["ReadTiles"]; err != nil {
		return nil, err
	}
	out := make([][]byte, len(ts))
	for i, t := range ts {
		key := t
		key.Width = 0
		d, ok := m.tiles[key]
		if !ok || len(d) < t.Width*tile.HashSize {
			return nil, fmt.Errorf("%w: %s", tree.ErrMissingTile, t.Path())
		}
		out[i] = d
	}
	return out, nil
}

func (m *memSource) ReadEntries(start, end uint64) ([][]byte, error) {
	if err := m.err["ReadEntries"]; err != nil {
		return nil, err
	}
	var out [][]byte
	for i := start; i < end && i < uint64(len(m.entries)) && m.entries[i] != nil; i++ {
		out = append(out, m.entries[i])
	}
	return out, nil
}

func (m *memSource) ListCheckpoints(after uint64, limit int) ([][]byte, error) {
	if err := m.err["ListCheckpoints"]; err != nil {
		return nil, err
	}
	var out [][]byte
	for i, s := range m.sizes {
		if s > after && len(out) < limit {
			out = append(out, m.checkpoints[i])
		}
	}
	if len(out) == 0 && m.onEmptyList != nil {
		f := m.onEmptyList
		m.onEmptyList = nil
		f()
	}
	return out, nil
}

// testLog builds a memSource the way the sequencer fills storage.
type testLog struct {
	t      testing.TB
	src    *memSource
	edge   *tree.Edge
	signer note.Signer
	v      note.Verifier
}

func newTestLog(t testing.TB) *testLog {
	t.Helper()
	skey, vkey, err := checkpoint.GenerateKey(origin, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s, err := checkpoint.NewSigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	v, err := checkpoint.NewVerifier(vkey)
	if err != nil {
		t.Fatal(err)
	}
	return &testLog{t: t, src: &memSource{tiles: map[tile.Tile][]byte{}, err: map[string]error{}}, edge: tree.EmptyEdge(), signer: s, v: v}
}

func entry(i uint64) []byte { return binary.BigEndian.AppendUint64([]byte("entry "), i) }

// appendBatches appends batches of the given sizes, each with a checkpoint.
func (l *testLog) appendBatches(sizes ...int) {
	for _, n := range sizes {
		l.appendBatch(n)
	}
}

func (l *testLog) appendBatch(n int) {
	l.t.Helper()
	leaves := make([]tree.Hash, n)
	for i := range leaves {
		e := entry(l.edge.Size() + uint64(i))
		l.src.entries = append(l.src.entries, e)
		leaves[i] = tree.LeafHash(e)
	}
	edge, tiles, err := l.edge.Append(leaves)
	if err != nil {
		l.t.Fatal(err)
	}
	for _, td := range tiles {
		key := td.Tile
		key.Width = 0
		l.src.tiles[key] = td.Hashes
	}
	l.edge = edge
	l.addCheckpoint(l.sign(edge.Size(), edge.Root(), l.signer))
}

func (l *testLog) sign(size uint64, root tree.Hash, s note.Signer) []byte {
	l.t.Helper()
	signed, err := checkpoint.Sign(checkpoint.Checkpoint{Origin: origin, Size: size, Hash: root}, s)
	if err != nil {
		l.t.Fatal(err)
	}
	return signed
}

func (l *testLog) addCheckpoint(signed []byte) {
	c, _, err := checkpoint.Open(signed, l.v)
	if err != nil {
		l.t.Fatal(err)
	}
	l.src.sizes = append(l.src.sizes, c.Size)
	l.src.checkpoints = append(l.src.checkpoints, signed)
}

// checkpointIndex returns the position of the checkpoint at size.
func (l *testLog) checkpointIndex(size uint64) int {
	l.t.Helper()
	i := slices.Index(l.src.sizes, size)
	if i < 0 {
		l.t.Fatalf("no checkpoint at size %d", size)
	}
	return i
}

func (l *testLog) tile(level int, index uint64) []byte {
	l.t.Helper()
	d, ok := l.src.tiles[tile.Tile{Level: level, Index: index}]
	if !ok {
		l.t.Fatalf("no tile %d/%d", level, index)
	}
	return d
}

func otherSigner(t testing.TB) note.Signer {
	t.Helper()
	skey, _, err := checkpoint.GenerateKey(origin, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s, err := checkpoint.NewSigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestVerifyLogGood(t *testing.T) {
	tests := []struct {
		name    string
		batches []int
	}{
		{"empty", nil},
		{"one entry", []int{1}},
		{"one batch", []int{300}},
		{"one per checkpoint", []int{1, 1, 1, 1, 1, 1, 1, 1, 1, 1}},
		{"tile boundaries", []int{255, 1, 256, 1, 255, 2}},
		// Crosses a level-1 tile and reaches level 2, across chunk edges.
		{"large", []int{1, 4095, 4097, 60000, 1000, 3}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := newTestLog(t)
			l.appendBatches(tt.batches...)
			r, err := audit.VerifyLog(l.src, l.v)
			if err != nil {
				t.Fatal(err)
			}
			want := audit.Report{Size: l.edge.Size(), Entries: l.edge.Size(), Checkpoints: len(tt.batches), Tiles: len(l.src.tiles)}
			if r != want {
				t.Errorf("report %+v, want %+v", r, want)
			}
		})
	}
}

func TestVerifyLogTampered(t *testing.T) {
	tests := []struct {
		name    string
		batches []int
		tamper  func(*testLog)
		want    string // the error message after "log verification failed: "
	}{
		{
			name:    "changed entry byte",
			batches: []int{1000, 1000},
			tamper:  func(l *testLog) { l.src.entries[1234][0] ^= 1 },
			want:    "entry 1234: leaf hash differs from tile/0/004 position 210 (stored ",
		},
		{
			name:    "changed entry in a partial tile",
			batches: []int{10, 10, 300},
			tamper:  func(l *testLog) { l.src.entries[5] = []byte("forged") },
			want:    "entry 5: leaf hash differs from tile/0/000.p/10 position 5 (stored ",
		},
		{
			name:    "changed last entry",
			batches: []int{1000},
			tamper:  func(l *testLog) { l.src.entries[999] = []byte("forged") },
			want:    "entry 999: leaf hash differs from tile/0/003.p/232 position 231 (stored ",
		},
		{
			name:    "missing entry",
			batches: []int{1000, 1000},
			tamper:  func(l *testLog) { l.src.entries[1234] = nil },
			want:    "entry 1234: missing (checkpoint at size 2000)",
		},
		{
			name:    "rewritten leaf hash",
			batches: []int{1000, 1000},
			tamper:  func(l *testLog) { l.tile(0, 4)[210*tile.HashSize+7] ^= 1 },
			want:    "entry 1234: leaf hash differs from tile/0/004 position 210 (stored ",
		},
		{
			name:    "rewritten level-1 hash",
			batches: []int{70000},
			tamper:  func(l *testLog) { l.tile(1, 0)[3*tile.HashSize] ^= 1 },
			want:    "tile/1/000 position 3: stored hash ",
		},
		{
			name:    "rewritten hash in a partial level-1 tile",
			batches: []int{70000},
			tamper:  func(l *testLog) { l.tile(1, 1)[16*tile.HashSize] ^= 1 },
			want:    "tile/1/001.p/17 position 16: stored hash ",
		},
		{
			name:    "missing tile",
			batches: []int{1000},
			tamper:  func(l *testLog) { delete(l.src.tiles, tile.Tile{Level: 0, Index: 2}) },
			want:    "tile/0/002: missing tile: tile/0/002",
		},
		{
			name:    "short partial tile",
			batches: []int{1000},
			tamper: func(l *testLog) {
				key := tile.Tile{Level: 0, Index: 3}
				l.src.tiles[key] = l.src.tiles[key][:100*tile.HashSize]
			},
			want: "tile/0/003.p/232: missing tile: tile/0/003.p/232",
		},
		{
			name:    "checkpoint signed by another key",
			batches: []int{100, 200, 300},
			tamper: func(l *testLog) {
				l.src.checkpoints[l.checkpointIndex(300)] = l.sign(300, l.rootAt(300), otherSigner(l.t))
			},
			want: "checkpoint at size 300: signature: checkpoint signature not verified: no signature by log key",
		},
		{
			name:    "checkpoint with a wrong root",
			batches: []int{100, 200, 300},
			tamper: func(l *testLog) {
				l.src.checkpoints[l.checkpointIndex(300)] = l.sign(300, tree.LeafHash([]byte("x")), l.signer)
			},
			want: "checkpoint at size 300: root ",
		},
		{
			name:    "checkpoint with another origin",
			batches: []int{100},
			tamper: func(l *testLog) {
				l.src.checkpoints[0] = []byte(strings.Replace(string(l.src.checkpoints[0]), origin+"\n", "x\n", 1))
			},
			want: "checkpoint at size 100: signature: checkpoint signature not verified: ",
		},
		{
			name:    "checkpoint listed out of order",
			batches: []int{100, 200, 300},
			tamper:  func(l *testLog) { l.src.checkpoints[2] = l.src.checkpoints[0] },
			want:    "checkpoint at size 100 follows the checkpoint at size 300: sizes must increase",
		},
		{
			name:    "rolled-back latest checkpoint",
			batches: []int{100, 200, 300},
			tamper: func(l *testLog) {
				l.src.sizes = l.src.sizes[:2]
				l.src.checkpoints = l.src.checkpoints[:2]
			},
			want: "entry 300 exists beyond the latest checkpoint (size 300)",
		},
		{
			name:    "truncated entries",
			batches: []int{100, 200, 300},
			tamper:  func(l *testLog) { l.src.entries = l.src.entries[:550] },
			want:    "entry 550: missing (checkpoint at size 600)",
		},
		{
			name:    "entries without any checkpoint",
			batches: []int{3},
			tamper: func(l *testLog) {
				l.src.sizes = nil
				l.src.checkpoints = nil
			},
			want: "entry 0 exists beyond the latest checkpoint (size 0)",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := newTestLog(t)
			l.appendBatches(tt.batches...)
			tt.tamper(l)
			_, err := audit.VerifyLog(l.src, l.v)
			if !errors.Is(err, audit.ErrTampered) {
				t.Fatalf("VerifyLog: %v, want an error wrapping ErrTampered", err)
			}
			t.Log(err)
			want := "log verification failed: " + tt.want
			if !strings.HasPrefix(err.Error(), want) {
				t.Errorf("VerifyLog:\n got %v\nwant %s...", err, want)
			}
		})
	}
}

// rootAt returns the root of the first size entries.
func (l *testLog) rootAt(size uint64) tree.Hash {
	l.t.Helper()
	root, err := tree.RootHash(l.src, size)
	if err != nil {
		l.t.Fatal(err)
	}
	return root
}

func TestVerifyLogReport(t *testing.T) {
	// A third checkpoint without its entries: the report covers the first two.
	l := newTestLog(t)
	l.appendBatches(300, 10)
	// Entries 310..319 were never added.
	l.addCheckpoint(l.sign(320, tree.Hash{}, l.signer))
	r, err := audit.VerifyLog(l.src, l.v)
	if !errors.Is(err, audit.ErrTampered) || !strings.Contains(err.Error(), "entry 310: missing (checkpoint at size 320)") {
		t.Fatalf("VerifyLog: %v", err)
	}
	want := audit.Report{Size: 310, Entries: 310, Checkpoints: 2, Tiles: 1}
	if r != want {
		t.Errorf("report %+v, want %+v", r, want)
	}
}

func TestVerifyLogReadErrors(t *testing.T) {
	errRead := errors.New("disk on fire")
	for _, method := range []string{"ReadTiles", "ReadEntries", "ListCheckpoints"} {
		t.Run(method, func(t *testing.T) {
			l := newTestLog(t)
			l.appendBatches(300)
			l.src.err[method] = fmt.Errorf("reading: %w", errRead)
			_, err := audit.VerifyLog(l.src, l.v)
			if !errors.Is(err, errRead) || errors.Is(err, audit.ErrTampered) || err != l.src.err[method] {
				t.Errorf("VerifyLog: %v, want the source's error unchanged", err)
			}
		})
	}
}

// TestVerifyLogGrowing checks that a batch committed while VerifyLog runs is
// not mistaken for entries beyond the latest checkpoint.
func TestVerifyLogGrowing(t *testing.T) {
	l := newTestLog(t)
	l.appendBatches(100, 200)
	l.src.onEmptyList = func() { l.appendBatch(50) }
	r, err := audit.VerifyLog(l.src, l.v)
	if err != nil {
		t.Fatal(err)
	}
	if want := (audit.Report{Size: 350, Entries: 350, Checkpoints: 3, Tiles: len(l.src.tiles)}); r != want {
		t.Errorf("report %+v, want %+v", r, want)
	}
}

func TestVerifyLogNilVerifier(t *testing.T) {
	l := newTestLog(t)
	if _, err := audit.VerifyLog(l.src, nil); err == nil || errors.Is(err, audit.ErrTampered) {
		t.Errorf("VerifyLog with a nil verifier: %v", err)
	}
}
