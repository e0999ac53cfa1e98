package sequencer

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"
	sumdb "golang.org/x/mod/sumdb/tlog"

	"github.com/tlog-dev/tlog/internal/pgtest"
	"github.com/tlog-dev/tlog/pkg/checkpoint"
	"github.com/tlog-dev/tlog/pkg/tile"
	"github.com/tlog-dev/tlog/pkg/tree"
	"github.com/tlog-dev/tlog/storage"
	"github.com/tlog-dev/tlog/storage/embedded"
	"github.com/tlog-dev/tlog/storage/postgres"
)

type testLog struct {
	store    storage.Store
	name     string
	signer   note.Signer
	verifier note.Verifier
}

// drivers opens a fresh store on every driver.
var drivers = map[string]func(t testing.TB) storage.Store{
	"embedded": func(t testing.TB) storage.Store {
		s, err := embedded.Open(filepath.Join(t.TempDir(), "tlog.db"), embedded.Config{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	},
	"postgres": func(t testing.TB) storage.Store {
		s, err := postgres.Open(context.Background(), pgtest.NewDatabase(t), postgres.Config{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	},
}

func forEachDriver(t *testing.T, f func(t *testing.T, open func(t testing.TB) storage.Store)) {
	for name, open := range drivers {
		t.Run(name, func(t *testing.T) { f(t, open) })
	}
}

func newTestLog(t testing.TB, store storage.Store) *testLog {
	t.Helper()
	origin := "example.com/test-log"
	skey, vkey, err := checkpoint.GenerateKey(origin, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	signer, _ := checkpoint.NewSigner(skey)
	verifier, _ := checkpoint.NewVerifier(vkey)
	root := tree.EmptyRoot()
	signed, err := checkpoint.Sign(checkpoint.Checkpoint{Origin: origin, Size: 0, Hash: root}, signer)
	if err != nil {
		t.Fatal(err)
	}
	l := storage.Log{Name: "test", Origin: origin, VerifierKey: vkey, CreatedAt: time.Now()}
	if err := store.CreateLog(context.Background(), l, storage.Checkpoint{TreeHead: storage.TreeHead{Root: root}, Note: signed}); err != nil {
		t.Fatal(err)
	}
	return &testLog{store: store, name: l.Name, signer: signer, verifier: verifier}
}

func (l *testLog) config(t testing.TB) Config {
	return Config{
		Store: l.store, Log: l.name, Signer: l.signer, Verifier: l.verifier,
		MaxBatchSize: 100, MaxBatchAge: 5 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
}

// start runs a sequencer until the test ends, and checks that Run returns
// nil.
func start(t testing.TB, cfg Config) *Sequencer { return startFailing(t, cfg, false) }

// startFailing runs a sequencer until the test ends, and checks that Run
// returns an error if and only if fatal.
func startFailing(t testing.TB, cfg Config, fatal bool) *Sequencer {
	t.Helper()
	s, err := New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if (err != nil) != fatal {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("Run did not return")
		}
	})
	return s
}

// verify checks the whole stored log: every entry, tile and checkpoint.
func (l *testLog) verify(t *testing.T) uint64 { return l.verifyTB(t) }

func (l *testLog) verifyTB(t testing.TB) uint64 {
	t.Helper()
	rep, err := storage.VerifyLog(context.Background(), l.store, l.name, l.verifier)
	if err != nil {
		t.Fatalf("log does not verify: %v", err)
	}
	return rep.Size
}

// checkResult verifies, with golang.org/x/mod/sumdb/tlog, that the result's
// index is in the result's checkpoint with the expected data.
func (l *testLog) checkResult(t *testing.T, r Result, data []byte) {
	t.Helper()
	c, _, err := checkpoint.Open(r.Checkpoint.Note, l.verifier)
	if err != nil {
		t.Fatalf("result checkpoint: %v", err)
	}
	if r.Index >= c.Size {
		t.Fatalf("index %d not in checkpoint of size %d", r.Index, c.Size)
	}
	reader := tree.TileReaderFunc(func(ts []tile.Tile) ([][]byte, error) {
		return l.store.ReadTiles(context.Background(), l.name, ts)
	})
	p, err := tree.InclusionProof(reader, r.Index, c.Size)
	if err != nil {
		t.Fatal(err)
	}
	rp := make(sumdb.RecordProof, len(p))
	for i := range p {
		rp[i] = sumdb.Hash(p[i])
	}
	if err := sumdb.CheckRecord(rp, int64(c.Size), sumdb.Hash(c.Hash), int64(r.Index), sumdb.RecordHash(data)); err != nil {
		t.Fatalf("entry %d: %v", r.Index, err)
	}
}

func TestConcurrentAppenders(t *testing.T) {
	forEachDriver(t, func(t *testing.T, open func(t testing.TB) storage.Store) {
		l := newTestLog(t, open(t))
		s := start(t, l.config(t))
		const workers, perWorker = 32, 40
		var mu sync.Mutex
		byData := map[string]uint64{}
		var wg sync.WaitGroup
		for w := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range perWorker {
					// Every worker also appends a data item shared by all,
					// which must land once.
					data := []byte(fmt.Sprintf("worker %d entry %d", w, i))
					if i%10 == 0 {
						data = []byte(fmt.Sprintf("shared %d", i))
					}
					res, err := s.Add(context.Background(), []Entry{{Data: data}})
					if err != nil {
						t.Errorf("Add: %v", err)
						return
					}
					l.checkResult(t, res[0], data)
					mu.Lock()
					if old, ok := byData[string(data)]; ok && old != res[0].Index {
						t.Errorf("%q at %d and %d", data, old, res[0].Index)
					}
					byData[string(data)] = res[0].Index
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		want := uint64(workers*perWorker - (workers-1)*perWorker/10)
		if size := l.verify(t); size != want || uint64(len(byData)) != want {
			t.Fatalf("log size %d, distinct entries %d, want %d", size, len(byData), want)
		}
		indexes := map[uint64]bool{}
		for _, idx := range byData {
			if indexes[idx] {
				t.Fatalf("index %d given twice", idx)
			}
			indexes[idx] = true
		}
	})
}

// lookupCounter counts LookupIdentities calls.
type lookupCounter struct {
	storage.Store
	n atomic.Int64
}

func (c *lookupCounter) LookupIdentities(ctx context.Context, log string, ids []storage.Hash) (map[storage.Hash]uint64, error) {
	c.n.Add(1)
	return c.Store.LookupIdentities(ctx, log, ids)
}

// TestDuplicatesAndKeys runs right after the sequencer starts, when batches
// look identities up first, and after lookupWindow batches, when they are
// integrated without a lookup until storage refuses a duplicate.
func TestDuplicatesAndKeys(t *testing.T) {
	forEachDriver(t, func(t *testing.T, open func(t testing.TB) storage.Store) {
		for _, optimistic := range []bool{false, true} {
			t.Run(fmt.Sprintf("optimistic=%v", optimistic), func(t *testing.T) {
				testDuplicatesAndKeys(t, open, optimistic)
			})
		}
	})
}

func testDuplicatesAndKeys(t *testing.T, open func(t testing.TB) storage.Store, optimistic bool) {
	store := &lookupCounter{Store: open(t)}
	l := newTestLog(t, store)
	s := start(t, l.config(t))
	ctx := context.Background()
	var prefix uint64
	if optimistic {
		for i := range lookupWindow {
			if _, err := s.Add(ctx, []Entry{{Data: fmt.Appendf(nil, "filler %d", i)}}); err != nil {
				t.Fatal(err)
			}
		}
		prefix = lookupWindow
		if n := store.n.Load(); n != lookupWindow {
			t.Fatalf("%d lookups for the first %d batches, want one each", n, lookupWindow)
		}
		store.n.Store(0)
	}
	res, err := s.Add(ctx, []Entry{
		{Data: []byte("a")}, {Data: []byte("b")}, {Data: []byte("a")},
		{Data: []byte("k1"), IdempotencyKey: "key-1"}, {Data: []byte("k1"), IdempotencyKey: "key-2"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if res[2].Index != res[0].Index || !res[2].Duplicate || res[0].Duplicate {
		t.Errorf("in-batch duplicate: %+v vs %+v", res[2], res[0])
	}
	if res[3].Index == res[4].Index || res[3].Duplicate || res[4].Duplicate {
		t.Errorf("same data, different keys must be two entries: %+v %+v", res[3], res[4])
	}
	if n := store.n.Load(); optimistic && n != 0 {
		t.Errorf("a batch of new entries looked identities up %d times, want 0", n)
	}
	// Later: same key with other data is a duplicate of the original.
	res2, err := s.Add(ctx, []Entry{{Data: []byte("k1 retry"), IdempotencyKey: "key-1"}, {Data: []byte("b")}})
	if err != nil {
		t.Fatal(err)
	}
	if !res2[0].Duplicate || res2[0].Index != res[3].Index || res2[0].LeafHash != tree.LeafHash([]byte("k1")) {
		t.Errorf("keyed retry: %+v, want index %d with the original's leaf hash", res2[0], res[3].Index)
	}
	if !res2[1].Duplicate || res2[1].Index != res[1].Index {
		t.Errorf("duplicate across batches: %+v", res2[1])
	}
	if n := store.n.Load(); optimistic && n != 1 {
		t.Errorf("a batch refused for a stored identity looked identities up %d times, want 1", n)
	}
	l.checkResult(t, res2[1], []byte("b"))
	if size := l.verify(t); size != prefix+4 {
		t.Fatalf("size %d, want %d", size, prefix+4)
	}
}

func TestBadInput(t *testing.T) {
	l := newTestLog(t, drivers["embedded"](t))
	s := start(t, l.config(t))
	ctx := context.Background()
	for _, tc := range []struct {
		entries []Entry
		want    error
	}{
		{nil, ErrNoEntries},
		{[]Entry{{Data: []byte("ok")}, {Data: nil}}, ErrEmptyEntry},
		{[]Entry{{Data: make([]byte, tile.MaxEntrySize+1)}}, ErrEntryTooLarge},
	} {
		if _, err := s.Add(ctx, tc.entries); !errors.Is(err, tc.want) {
			t.Errorf("Add(%d entries): %v, want %v", len(tc.entries), err, tc.want)
		}
	}
	if _, err := s.Add(ctx, []Entry{{Data: make([]byte, tile.MaxEntrySize)}}); err != nil {
		t.Errorf("largest entry: %v", err)
	}
	if size := l.verify(t); size != 1 {
		t.Fatalf("size %d, want 1: bad input must change nothing", size)
	}
}

func TestPushback(t *testing.T) {
	l := newTestLog(t, drivers["embedded"](t))
	cfg := l.config(t)
	cfg.MaxPending, cfg.MaxBatchAge = 10, time.Hour // nothing is integrated until full
	cfg.MaxBatchSize = 1000
	s := start(t, cfg)
	go s.Add(context.Background(), []Entry{{Data: []byte("1")}, {Data: []byte("2")}, {Data: []byte("3")}, {Data: []byte("4")}, {Data: []byte("5")}, {Data: []byte("6")}, {Data: []byte("7")}, {Data: []byte("8")}})
	for s.pendingCount() < 8 {
		time.Sleep(time.Millisecond)
	}
	if _, err := s.Add(context.Background(), []Entry{{Data: []byte("x")}, {Data: []byte("y")}, {Data: []byte("z")}}); !errors.Is(err, ErrPushback) {
		t.Fatalf("11 pending entries with MaxPending 10: %v, want ErrPushback", err)
	}
	// The pooled entries are integrated at shutdown (see start).
}

func TestShutdownFlushes(t *testing.T) {
	forEachDriver(t, func(t *testing.T, open func(t testing.TB) storage.Store) {
		l := newTestLog(t, open(t))
		cfg := l.config(t)
		cfg.MaxBatchAge = time.Hour // only shutdown integrates
		s, err := New(context.Background(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- s.Run(ctx) }()
		results := make(chan error, 20)
		for i := range 20 {
			go func() {
				_, err := s.Add(context.Background(), []Entry{{Data: []byte(fmt.Sprint("e", i))}})
				results <- err
			}()
		}
		for s.pendingCount() < 20 {
			time.Sleep(time.Millisecond)
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		for range 20 {
			if err := <-results; err != nil {
				t.Errorf("pooled entry lost at shutdown: %v", err)
			}
		}
		if _, err := s.Add(context.Background(), []Entry{{Data: []byte("late")}}); !errors.Is(err, ErrClosed) {
			t.Errorf("Add after shutdown: %v", err)
		}
		if size := l.verify(t); size != 20 {
			t.Fatalf("size %d, want 20", size)
		}
	})
}

func (s *Sequencer) pendingCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.pooled
}

// faultStore injects Integrate failures: before the write, or after it
// (the batch is stored but the caller is told it failed).
type faultStore struct {
	storage.Store
	mu          sync.Mutex
	failBefore  int
	failAfter   int
	integrateOK int
}

var errInjected = errors.New("injected fault")

func (f *faultStore) Integrate(ctx context.Context, log string, b *storage.Batch) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failBefore > 0 {
		f.failBefore--
		return errInjected
	}
	if err := f.Store.Integrate(ctx, log, b); err != nil {
		return err
	}
	f.integrateOK++
	if f.failAfter > 0 {
		f.failAfter--
		return errInjected
	}
	return nil
}

func TestFailedCommits(t *testing.T) {
	forEachDriver(t, func(t *testing.T, open func(t testing.TB) storage.Store) {
		fs := &faultStore{Store: open(t)}
		l := newTestLog(t, fs)
		s := start(t, l.config(t))
		ctx := context.Background()
		add := func(data string) (Result, error) {
			res, err := s.Add(ctx, []Entry{{Data: []byte(data)}})
			if err != nil {
				return Result{}, err
			}
			return res[0], nil
		}
		if _, err := add("first"); err != nil {
			t.Fatal(err)
		}
		fs.mu.Lock()
		fs.failBefore = 1
		fs.mu.Unlock()
		if _, err := add("lost"); !errors.Is(err, ErrUnavailable) {
			t.Fatalf("failed-not-persisted: %v", err)
		}
		fs.mu.Lock()
		fs.failAfter = 1
		fs.mu.Unlock()
		if _, err := add("persisted"); !errors.Is(err, ErrUnavailable) {
			t.Fatalf("failed-but-persisted: %v", err)
		}
		// Retrying is safe: the persisted entry is found, the lost one added.
		r, err := add("persisted")
		if err != nil || !r.Duplicate || r.Index != 1 {
			t.Fatalf("retry of persisted entry: %+v, %v", r, err)
		}
		r, err = add("lost")
		if err != nil || r.Duplicate || r.Index != 2 {
			t.Fatalf("retry of lost entry: %+v, %v", r, err)
		}
		l.checkResult(t, r, []byte("lost"))
		if size := l.verify(t); size != 3 {
			t.Fatalf("size %d, want 3", size)
		}
	})
}

// TestRefusesTamperedStorage checks that a sequencer will not start on
// storage that disagrees with the log's signed checkpoint.
func TestRefusesTamperedStorage(t *testing.T) {
	store := drivers["embedded"](t)
	l := newTestLog(t, store)
	// A second log in the same store with another key: its checkpoint does
	// not verify with l's key.
	other := newTestLog(t, &renamed{Store: store, name: "other"})
	cfg := l.config(t)
	cfg.Log = "other"
	cfg.Signer, cfg.Verifier = l.signer, l.verifier
	if _, err := New(context.Background(), cfg); !errors.Is(err, ErrFatal) {
		t.Fatalf("sequencer started on a log signed by another key: %v", err)
	}
	_ = other
	l.verify(t)
}

// renamed creates logs under another name.
type renamed struct {
	storage.Store
	name string
}

func (r *renamed) CreateLog(ctx context.Context, l storage.Log, cp storage.Checkpoint) error {
	l.Name = r.name
	return r.Store.CreateLog(ctx, l, cp)
}

// BenchmarkSequencer measures durable appends through the sequencer: many
// concurrent callers, each adding 16 entries of 256 bytes per call, on a log
// that already holds 10k or 1M entries (appending is O(1) amortized, so the
// two should be close). Run with:
//
//	go test -run XXX -bench Sequencer -benchtime 100000x ./server/sequencer/
func BenchmarkSequencer(b *testing.B) {
	for _, driver := range []string{"embedded", "postgres"} {
		for _, prefill := range []int{10_000, 1_000_000} {
			b.Run(fmt.Sprintf("%s/size=%d", driver, prefill), func(b *testing.B) {
				l := newTestLog(b, drivers[driver](b))
				cfg := l.config(b)
				cfg.MaxBatchSize, cfg.MaxBatchAge = 4096, 20*time.Millisecond
				s := start(b, cfg)
				fill(b, s, prefill)
				b.SetParallelism(256)
				b.ResetTimer()
				b.RunParallel(func(pb *testing.PB) {
					entries := make([]Entry, 16)
					for pb.Next() {
						for i := range entries {
							entries[i].Data = make([]byte, 256)
							rand.Read(entries[i].Data)
						}
						if _, err := s.Add(context.Background(), entries); err != nil {
							b.Error(err)
							return
						}
					}
				})
				b.ReportMetric(float64(b.N*16)/b.Elapsed().Seconds(), "entries/s")
				b.StopTimer()
				l.verifyTB(b)
			})
		}
	}
}

func fill(tb testing.TB, s *Sequencer, n int) {
	const chunk = 4096
	var wg sync.WaitGroup
	errs := make(chan error, n/chunk+1)
	for done := 0; done < n; done += chunk {
		entries := make([]Entry, min(chunk, n-done))
		for i := range entries {
			entries[i].Data = fmt.Appendf(make([]byte, 0, 256), "prefill %d %0240d", done+i, 0)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := s.Add(context.Background(), entries); err != nil {
				errs <- err
			}
		}()
		if done/chunk%8 == 7 {
			wg.Wait()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		tb.Fatal(err)
	}
}

// TestHeadMovedByAnotherWriter runs two sequencers on one log, as after a
// kill -9 whose last transaction commits after the restart: each loses the
// compare-and-swap when the other moved the head, answers Unavailable,
// re-reads the head (consistent with what it signed) and goes on. The log
// never forks.
func TestHeadMovedByAnotherWriter(t *testing.T) {
	forEachDriver(t, func(t *testing.T, open func(t testing.TB) storage.Store) {
		l := newTestLog(t, open(t))
		a, b := start(t, l.config(t)), start(t, l.config(t))
		ctx := context.Background()
		if _, err := a.Add(ctx, []Entry{{Data: []byte("a1")}}); err != nil {
			t.Fatal(err)
		}
		if _, err := b.Add(ctx, []Entry{{Data: []byte("b1")}}); !errors.Is(err, ErrUnavailable) || !errors.Is(err, storage.ErrConflict) {
			t.Fatalf("stale sequencer: %v, want ErrUnavailable wrapping ErrConflict", err)
		}
		r, err := b.Add(ctx, []Entry{{Data: []byte("b1")}})
		if err != nil || r[0].Index != 1 {
			t.Fatalf("after re-reading the head: %+v, %v", r, err)
		}
		l.checkResult(t, r[0], []byte("b1"))
		if size := l.verify(t); size != 2 {
			t.Fatalf("size %d, want 2", size)
		}
	})
}

// rolledBack shows an older checkpoint as the tree head, as a database
// rolled back by someone with write access would, with the later entries
// still stored.
type rolledBack struct {
	storage.Store
	by uint64
}

func (r *rolledBack) LatestCheckpoint(ctx context.Context, log string) (storage.Checkpoint, error) {
	cp, err := r.Store.LatestCheckpoint(ctx, log)
	if err != nil {
		return cp, err
	}
	return r.Store.CheckpointAt(ctx, log, cp.Size-r.by)
}

// TestRefusesRollback checks that a sequencer will not build on a head that
// was moved back below entries the log already signed.
func TestRefusesRollback(t *testing.T) {
	forEachDriver(t, func(t *testing.T, open func(t testing.TB) storage.Store) {
		store := open(t)
		l := newTestLog(t, store)
		s, err := New(context.Background(), l.config(t))
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- s.Run(ctx) }()
		for _, batch := range [][]Entry{{{Data: []byte("a")}, {Data: []byte("b")}}, {{Data: []byte("c")}}} {
			if _, err := s.Add(context.Background(), batch); err != nil {
				t.Fatal(err)
			}
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		cfg := l.config(t)
		cfg.Store = &rolledBack{Store: store, by: 1}
		if _, err := New(context.Background(), cfg); !errors.Is(err, ErrFatal) {
			t.Fatalf("sequencer started on a rolled-back head: %v", err)
		}
		// The real head is fine.
		if _, err := New(context.Background(), l.config(t)); err != nil {
			t.Fatalf("sequencer on the real head: %v", err)
		}
		l.verify(t)
	})
}

// TestRefusesStorageBehindSigned checks Config.Signed: a sequencer starts on
// storage whose tree extends the checkpoint the log last signed, and refuses
// (ErrFatal, saying why) one that is smaller, has another root at that
// size, or does not extend it: what a restored old backup or a thorough
// rollback looks like. Here the other history is a second log of the same
// store signed by the same key.
func TestRefusesStorageBehindSigned(t *testing.T) {
	forEachDriver(t, func(t *testing.T, open func(t testing.TB) storage.Store) {
		ctx := context.Background()
		store := open(t)
		l := newTestLog(t, store)
		s := start(t, l.config(t))
		signed := map[uint64][]byte{0: s.Latest().Note}
		for _, batch := range []string{"ab", "cd", "ef"} {
			if _, err := s.Add(ctx, []Entry{{Data: []byte(batch[:1])}, {Data: []byte(batch[1:])}}); err != nil {
				t.Fatal(err)
			}
			cp := s.Latest()
			signed[cp.Size] = cp.Note
		}
		if len(signed) != 4 || signed[6] == nil {
			t.Fatalf("checkpoints at sizes %v, want 0, 2, 4, 6", slices.Sorted(maps.Keys(signed)))
		}

		// The other history: 4 other entries under the same key.
		info, err := store.GetLog(ctx, l.name)
		if err != nil {
			t.Fatal(err)
		}
		info.Name = "fork"
		if err := store.CreateLog(ctx, info, storage.Checkpoint{TreeHead: storage.TreeHead{Root: tree.EmptyRoot()}, Note: signed[0]}); err != nil {
			t.Fatal(err)
		}
		fork := &testLog{store: store, name: "fork", signer: l.signer, verifier: l.verifier}
		fs := start(t, fork.config(t))
		if _, err := fs.Add(ctx, []Entry{{Data: []byte("w")}, {Data: []byte("x")}, {Data: []byte("y")}, {Data: []byte("z")}}); err != nil {
			t.Fatal(err)
		}

		for _, c := range []struct {
			log    *testLog
			signed []byte
			says   string // "" if New must succeed
		}{
			{l, signed[0], ""},
			{l, signed[2], ""},
			{l, signed[6], ""},
			{fork, signed[0], ""},
			{fork, signed[6], "is behind the checkpoint the log signed at size 6"},
			{fork, signed[4], "has root"},
			{fork, signed[2], "does not extend the checkpoint the log signed at size 2"},
			{fork, []byte("not a checkpoint\n"), "does not verify"},
		} {
			cfg := c.log.config(t)
			cfg.Signed, cfg.SignedFrom = c.signed, "the test's file"
			_, err := New(ctx, cfg)
			switch {
			case c.says == "" && err != nil:
				t.Errorf("%s with the checkpoint %q signed: %v", c.log.name, c.signed, err)
			case c.says != "" && (!errors.Is(err, ErrFatal) || !strings.Contains(err.Error(), c.says) || !strings.Contains(err.Error(), "the test's file")):
				t.Errorf("%s with the checkpoint %q signed: %v, want ErrFatal saying %q and where it was kept", c.log.name, c.signed, err, c.says)
			}
		}
		l.verify(t)
		fork.verify(t)
	})
}
