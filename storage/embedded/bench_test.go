package embedded

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/tlog-dev/tlog/pkg/tree"
	"github.com/tlog-dev/tlog/storage"
)

// benchLog is a store with one log, kept across the runs of a benchmark so
// that a log filled to a million entries is filled once.
type benchLog struct {
	s    *Store
	edge *tree.Edge
	rng  *rand.ChaCha8
}

const benchEntrySize = 256

func newBenchLog(b *testing.B, fill int) *benchLog {
	dir, err := os.MkdirTemp("", "tlog-bench-")
	if err != nil {
		b.Fatal(err)
	}
	s, err := Open(filepath.Join(dir, "tlog.db"), Config{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		b.Fatal(err)
	}
	l := &benchLog{s: s, edge: tree.EmptyEdge(), rng: rand.NewChaCha8([32]byte{1})}
	err = s.CreateLog(context.Background(), storage.Log{Name: "bench"}, storage.Checkpoint{TreeHead: l.head()})
	if err != nil {
		b.Fatal(err)
	}
	for fill > 0 {
		n := min(fill, 16384)
		batch, next := l.batch(b, n)
		if err := s.Integrate(context.Background(), "bench", batch); err != nil {
			b.Fatal(err)
		}
		l.edge = next
		fill -= n
	}
	return l
}

func (l *benchLog) close() {
	l.s.Close()
	os.RemoveAll(filepath.Dir(l.s.Path()))
}

func (l *benchLog) head() storage.TreeHead {
	return storage.TreeHead{Size: l.edge.Size(), Root: l.edge.Root()}
}

// batch makes a batch of n random 256-byte entries whose identities are
// their leaf hashes, as the sequencer does by default.
func (l *benchLog) batch(b *testing.B, n int) (*storage.Batch, *tree.Edge) {
	batch := &storage.Batch{Prev: l.head(), Entries: make([]storage.Entry, n)}
	data := make([]byte, n*benchEntrySize)
	l.rng.Read(data)
	leaves := make([]tree.Hash, n)
	for i := range batch.Entries {
		e := &batch.Entries[i]
		e.Index = l.edge.Size() + uint64(i)
		e.Data = data[i*benchEntrySize : (i+1)*benchEntrySize]
		e.LeafHash = tree.LeafHash(e.Data)
		e.Identity = e.LeafHash
		leaves[i] = e.LeafHash
	}
	next, tiles, err := l.edge.Append(leaves)
	if err != nil {
		b.Fatal(err)
	}
	batch.Tiles = tiles
	batch.Checkpoint.TreeHead = storage.TreeHead{Size: next.Size(), Root: next.Root()}
	batch.Checkpoint.Note = make([]byte, 300) // about a signed note with a cosignature
	return batch, next
}

// BenchmarkIntegrate measures durable (fsync'd) commits of batches of 256-byte
// entries into a log that already holds 10k or 1M entries. The batches are
// built with the timer stopped: only Integrate is measured.
func BenchmarkIntegrate(b *testing.B) {
	for _, fill := range []int{10_000, 1_000_000} {
		for _, size := range []int{1000, 4096} {
			var l *benchLog
			b.Run(fmt.Sprintf("log=%s/batch=%d", count(fill), size), func(b *testing.B) {
				// b.Run calls this function again with a larger b.N. A
				// small log is filled anew each time; the big one once (it
				// goes on growing by at most a few hundred batches).
				if l != nil && fill < 1_000_000 {
					l.close()
					l = nil
				}
				if l == nil {
					l = newBenchLog(b, fill)
				}
				runIntegrate(b, l, size)
			})
			if l != nil {
				l.close()
			}
		}
	}
}

func runIntegrate(b *testing.B, l *benchLog, size int) {
	ctx := context.Background()
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		batch, next := l.batch(b, size)
		b.StartTimer()
		if err := l.s.Integrate(ctx, "bench", batch); err != nil {
			b.Fatal(err)
		}
		l.edge = next
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N*size)/b.Elapsed().Seconds(), "entries/s")
	if fi, err := os.Stat(l.s.Path()); err == nil {
		b.ReportMetric(float64(fi.Size())/float64(l.edge.Size()), "file-B/entry")
	}
}

func count(n int) string {
	switch {
	case n >= 1_000_000 && n%1_000_000 == 0:
		return fmt.Sprintf("%dM", n/1_000_000)
	case n >= 1000 && n%1000 == 0:
		return fmt.Sprintf("%dk", n/1000)
	default:
		return fmt.Sprint(n)
	}
}

// BenchmarkLookupIdentities measures the sequencer's de-duplication read on a
// log of 1M entries: 4096 identities per call, either all new (every run's
// Bloom filter is probed) or all in the log.
func BenchmarkLookupIdentities(b *testing.B) {
	const n = 4096
	l := newBenchLog(b, 1_000_000)
	defer l.close()
	ctx := context.Background()
	absent := make([]storage.Hash, n)
	for i := range absent {
		l.rng.Read(absent[i][:])
	}
	var present []storage.Hash
	seen := map[storage.Hash]bool{}
	for len(present) < n {
		start := l.rng.Uint64() % (l.edge.Size() - 16)
		es, err := l.s.ReadEntries(ctx, "bench", start, start+16)
		if err != nil {
			b.Fatal(err)
		}
		for _, e := range es {
			if !seen[e.Identity] {
				seen[e.Identity] = true
				present = append(present, e.Identity)
			}
		}
	}
	for _, tt := range []struct {
		name  string
		ids   []storage.Hash
		found int
	}{{"absent", absent, 0}, {"present", present[:n], n}} {
		b.Run(tt.name, func(b *testing.B) {
			for b.Loop() {
				got, err := l.s.LookupIdentities(ctx, "bench", tt.ids)
				if err != nil || len(got) != tt.found {
					b.Fatalf("LookupIdentities found %d, %v; want %d", len(got), err, tt.found)
				}
			}
			b.ReportMetric(float64(b.N*n)/b.Elapsed().Seconds(), "ids/s")
		})
	}
}
