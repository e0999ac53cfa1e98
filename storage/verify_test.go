package storage

import (
	"context"
	"crypto/rand"
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

const testLogName = "test"

// fakeReader is one log in memory behind the Reader interface. Only what
// VerifyLog calls is implemented.
type fakeReader struct {
	Reader // nil: the other methods panic
	t      testing.TB
	signer note.Signer
	v      note.Verifier
	edge   *tree.Edge

	entries     map[uint64][]byte
	tiles       map[tile.Tile][]byte // keyed with Width 0
	checkpoints []Checkpoint         // increasing sizes, from 0
	latest      Checkpoint
	calls       int // ReadEntries calls
}

func newFakeReader(t testing.TB, batches ...int) *fakeReader {
	t.Helper()
	skey, vkey, err := checkpoint.GenerateKey("example.com/verify-test", rand.Reader)
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
	r := &fakeReader{t: t, signer: s, v: v, edge: tree.EmptyEdge(), entries: map[uint64][]byte{}, tiles: map[tile.Tile][]byte{}}
	r.latest = r.sign(0, tree.EmptyRoot())
	r.checkpoints = []Checkpoint{r.latest}
	for _, n := range batches {
		leaves := make([]tree.Hash, n)
		for i := range leaves {
			idx := r.edge.Size() + uint64(i)
			r.entries[idx] = fmt.Appendf(nil, "entry %d", idx)
			leaves[i] = tree.LeafHash(r.entries[idx])
		}
		edge, tiles, err := r.edge.Append(leaves)
		if err != nil {
			t.Fatal(err)
		}
		for _, td := range tiles {
			r.tiles[tile.Tile{Level: td.Level, Index: td.Index}] = td.Hashes
		}
		r.edge = edge
		r.latest = r.sign(edge.Size(), edge.Root())
		r.checkpoints = append(r.checkpoints, r.latest)
	}
	return r
}

func (r *fakeReader) sign(size uint64, root Hash) Checkpoint {
	r.t.Helper()
	signed, err := checkpoint.Sign(checkpoint.Checkpoint{Origin: r.signer.Name(), Size: size, Hash: root}, r.signer)
	if err != nil {
		r.t.Fatal(err)
	}
	return Checkpoint{TreeHead: TreeHead{Size: size, Root: root}, Note: signed}
}

func (r *fakeReader) check(ctx context.Context, log string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if log != testLogName {
		return fmt.Errorf("log %q: %w", log, ErrLogNotFound)
	}
	return nil
}

func (r *fakeReader) LatestCheckpoint(ctx context.Context, log string) (Checkpoint, error) {
	if err := r.check(ctx, log); err != nil {
		return Checkpoint{}, err
	}
	return r.latest, nil
}

func (r *fakeReader) ListCheckpoints(ctx context.Context, log string, after uint64, limit int) ([]Checkpoint, error) {
	if err := r.check(ctx, log); err != nil {
		return nil, err
	}
	var out []Checkpoint
	for _, c := range r.checkpoints {
		if c.Size > after && len(out) < limit {
			out = append(out, c)
		}
	}
	return out, nil
}

func (r *fakeReader) ReadTiles(ctx context.Context, log string, ts []tile.Tile) ([][]byte, error) {
	if err := r.check(ctx, log); err != nil {
		return nil, err
	}
	out := make([][]byte, len(ts))
	for i, t := range ts {
		d := r.tiles[tile.Tile{Level: t.Level, Index: t.Index}]
		if len(d) < t.Width*tile.HashSize {
			return nil, fmt.Errorf("tile %s: %w", t.Path(), ErrNotFound)
		}
		out[i] = d
	}
	return out, nil
}

func (r *fakeReader) ReadEntries(ctx context.Context, log string, start, end uint64) ([]Entry, error) {
	if err := r.check(ctx, log); err != nil {
		return nil, err
	}
	r.calls++
	var out []Entry
	for i := start; i < end; i++ {
		d, ok := r.entries[i]
		if !ok {
			return nil, fmt.Errorf("entry %d: %w", i, ErrNotFound)
		}
		out = append(out, Entry{Index: i, Data: d})
	}
	return out, nil
}

func TestVerifyLog(t *testing.T) {
	r := newFakeReader(t, 3000, 5000, 2000)
	report, err := VerifyLog(t.Context(), r, testLogName, r.v)
	if err != nil {
		t.Fatal(err)
	}
	if want := (audit.Report{Size: 10000, Entries: 10000, Checkpoints: 3, Tiles: len(r.tiles)}); report != want {
		t.Errorf("report %+v, want %+v", report, want)
	}
	// 0-3000, 3000-7096, 7096-8000, 8000-10000 and one beyond the end.
	if r.calls != 5 {
		t.Errorf("%d ReadEntries calls, want 5", r.calls)
	}

	empty := newFakeReader(t)
	if report, err := VerifyLog(t.Context(), empty, testLogName, empty.v); err != nil || report != (audit.Report{}) {
		t.Errorf("empty log: %+v, %v", report, err)
	}
}

func TestVerifyLogTampered(t *testing.T) {
	tests := []struct {
		name   string
		tamper func(r *fakeReader)
		want   string
	}{
		{
			name:   "missing entry",
			tamper: func(r *fakeReader) { delete(r.entries, 5000) },
			want:   "entry 5000: missing (checkpoint at size 8000)",
		},
		{
			name:   "missing tile",
			tamper: func(r *fakeReader) { delete(r.tiles, tile.Tile{Level: 0, Index: 20}) },
			want:   "tile/0/020: missing tile: tile tile/0/020: not found",
		},
		{
			name:   "head behind the checkpoints",
			tamper: func(r *fakeReader) { r.latest = r.checkpoints[1] },
			want:   "latest checkpoint at size 3000 is behind the checkpoint at size 10000",
		},
		{
			name: "head beyond the checkpoints",
			tamper: func(r *fakeReader) {
				r.latest = r.sign(20000, r.latest.Root)
			},
			want: "latest checkpoint at size 20000 is beyond the last listed checkpoint (size 10000)",
		},
		{
			name:   "head stored with another root",
			tamper: func(r *fakeReader) { r.latest.Root[0] ^= 1 },
			want:   "latest checkpoint is stored as size 10000, root ",
		},
		{
			name: "head not signed",
			tamper: func(r *fakeReader) {
				r.latest = newFakeReader(r.t).sign(10000, r.latest.Root)
			},
			want: "latest checkpoint at size 10000: checkpoint signature not verified: ",
		},
		{
			name: "head with a wrong root",
			tamper: func(r *fakeReader) {
				r.latest = r.sign(10000, tree.EmptyRoot())
			},
			want: "latest checkpoint at size 10000: root ",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newFakeReader(t, 3000, 5000, 2000)
			tt.tamper(r)
			_, err := VerifyLog(t.Context(), r, testLogName, r.v)
			if !errors.Is(err, audit.ErrTampered) || !strings.HasPrefix(err.Error(), "log verification failed: "+tt.want) {
				t.Fatalf("VerifyLog: %v\nwant: log verification failed: %s...", err, tt.want)
			}
		})
	}
}

func TestVerifyLogEmptyHeadNotSigned(t *testing.T) {
	r := newFakeReader(t)
	other := newFakeReader(t)
	r.latest = other.latest
	r.checkpoints = other.checkpoints
	_, err := VerifyLog(t.Context(), r, testLogName, r.v)
	if !errors.Is(err, audit.ErrTampered) || !errors.Is(err, checkpoint.ErrSignature) {
		t.Fatalf("VerifyLog: %v, want a signature error", err)
	}
}

func TestVerifyLogReadErrors(t *testing.T) {
	r := newFakeReader(t, 300)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := VerifyLog(ctx, r, testLogName, r.v); !errors.Is(err, context.Canceled) || errors.Is(err, audit.ErrTampered) {
		t.Errorf("cancelled: %v", err)
	}
	if _, err := VerifyLog(t.Context(), r, "other", r.v); !errors.Is(err, ErrLogNotFound) || errors.Is(err, audit.ErrTampered) {
		t.Errorf("unknown log: %v", err)
	}
}

// wrongIndexReader returns entries with shifted indices.
type wrongIndexReader struct{ *fakeReader }

func (r wrongIndexReader) ReadEntries(ctx context.Context, log string, start, end uint64) ([]Entry, error) {
	es, err := r.fakeReader.ReadEntries(ctx, log, start, end)
	es = slices.Clone(es)
	for i := range es {
		es[i].Index++
	}
	return es, err
}

func TestVerifyLogDriverBug(t *testing.T) {
	r := newFakeReader(t, 300)
	_, err := VerifyLog(t.Context(), wrongIndexReader{r}, testLogName, r.v)
	if err == nil || errors.Is(err, audit.ErrTampered) || !strings.Contains(err.Error(), "returned entry 1 at position 0") {
		t.Errorf("VerifyLog: %v, want a driver error", err)
	}
}
