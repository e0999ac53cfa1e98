package server_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tlog-dev/tlog/pkg/tile"
	tlogv1 "github.com/tlog-dev/tlog/proto/tlog/v1"
	"github.com/tlog-dev/tlog/server/sequencer"
	"github.com/tlog-dev/tlog/storage"
)

// TestPushback fills a sequencer's pool and checks that further appends are
// refused at once (RESOURCE_EXHAUSTED, HTTP 503 with Retry-After), that the
// refused entries are never stored, and that the pooled one is flushed on
// shutdown.
func TestPushback(t *testing.T) {
	forEachDriver(t, func(t *testing.T, open func(testing.TB) storage.Store) {
		// The sequencer reads its clock when it pools a request: that tells
		// the test when the first append is waiting in the pool.
		pooled := make(chan struct{}, 1)
		now := func() time.Time {
			select {
			case pooled <- struct{}{}:
			default:
			}
			return time.Now()
		}
		e := start(t, open(t), []string{"audit"}, withSequencer(sequencer.Config{MaxBatchAge: time.Hour, MaxPending: 1, Now: now}))
		ctx := context.Background()
		before := e.snapshot("audit")

		type result struct {
			resp *tlogv1.AppendResponse
			err  error
		}
		first := make(chan result, 1)
		go func() {
			resp, err := e.log.Append(ctx, &tlogv1.AppendRequest{Log: "audit", Entries: []*tlogv1.AppendEntry{{Data: []byte("first")}}})
			first <- result{resp, err}
		}()
		select {
		case <-pooled:
		case <-time.After(10 * time.Second):
			t.Fatal("the first append was never pooled")
		}

		_, err := e.log.Append(ctx, &tlogv1.AppendRequest{Log: "audit", Entries: []*tlogv1.AppendEntry{{Data: []byte("second")}}})
		if code(err) != codes.ResourceExhausted || !hasRetryInfo(err) {
			t.Errorf("Append beyond MaxPending: %v, want ResourceExhausted with RetryInfo", err)
		}
		resp, body := e.do(http.MethodPost, "/logs/audit/add", []byte("third"))
		if resp.StatusCode != http.StatusServiceUnavailable {
			t.Errorf("add beyond MaxPending: %s %q, want 503", resp.Status, body)
		}
		if ra, err := strconv.Atoi(resp.Header.Get("Retry-After")); err != nil || ra <= 0 {
			t.Errorf("add beyond MaxPending: Retry-After %q", resp.Header.Get("Retry-After"))
		}
		// Other logs and reads are not affected.
		if _, err := e.log.GetCheckpoint(ctx, &tlogv1.GetCheckpointRequest{Log: "audit"}); err != nil {
			t.Errorf("GetCheckpoint while the pool is full: %v", err)
		}
		if after := e.snapshot("audit"); after != before {
			t.Errorf("stored state changed before the batch was due:\n%+v\n%+v", before, after)
		}
		select {
		case r := <-first:
			t.Fatalf("the first append was answered before its batch was due: %v %v", r.resp, r.err)
		default:
		}

		// Shutting down flushes the pool.
		e.stop()
		r := <-first
		if r.err != nil {
			t.Fatalf("pooled Append, flushed at shutdown: %v", r.err)
		}
		if c := e.open("audit", r.resp.GetCheckpoint()); c.Size != 1 || r.resp.GetResults()[0].GetIndex() != 0 {
			t.Fatalf("pooled Append: index %d in checkpoint of size %d", r.resp.GetResults()[0].GetIndex(), c.Size)
		}

		// Once stopped, appends are refused as unavailable; reads go on.
		_, err = e.log.Append(ctx, &tlogv1.AppendRequest{Log: "audit", Entries: []*tlogv1.AppendEntry{{Data: []byte("late")}}})
		if code(err) != codes.Unavailable {
			t.Errorf("Append after shutdown: %v, want Unavailable", err)
		}
		resp, _ = e.do(http.MethodPost, "/logs/audit/add", []byte("late"))
		if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
			t.Errorf("add after shutdown: %s, Retry-After %q", resp.Status, resp.Header.Get("Retry-After"))
		}
		if _, err := e.log.GetEntryAndProof(ctx, &tlogv1.GetEntryAndProofRequest{Log: "audit", Index: 0}); err != nil {
			t.Errorf("GetEntryAndProof after shutdown: %v", err)
		}

		if got := e.verifyLog("audit"); got != 1 {
			t.Fatalf("verified size %d, want 1: refused entries were stored", got)
		}
	})
}

// errDown is what faultyStore answers while it is down: not a domain error,
// like a refused connection.
var errDown = errors.New("connection refused (storage is down)")

// faultyStore is a store that can go down, or fail Integrate after
// committing it (the caller cannot tell whether the batch is stored).
type faultyStore struct {
	storage.Store
	down           atomic.Bool
	failCommitting atomic.Bool
	conflict       atomic.Value // a log name: its Integrate fails with ErrConflict
	forked         atomic.Value // a log name: its stored head disagrees with its signed checkpoint
}

func (f *faultyStore) err() error {
	if f.down.Load() {
		return errDown
	}
	return nil
}

func (f *faultyStore) CreateLog(ctx context.Context, l storage.Log, c storage.Checkpoint) error {
	if err := f.err(); err != nil {
		return err
	}
	return f.Store.CreateLog(ctx, l, c)
}

func (f *faultyStore) GetLog(ctx context.Context, name string) (storage.Log, error) {
	if err := f.err(); err != nil {
		return storage.Log{}, err
	}
	return f.Store.GetLog(ctx, name)
}

func (f *faultyStore) ListLogs(ctx context.Context) ([]storage.Log, error) {
	if err := f.err(); err != nil {
		return nil, err
	}
	return f.Store.ListLogs(ctx)
}

func (f *faultyStore) Integrate(ctx context.Context, log string, b *storage.Batch) error {
	if err := f.err(); err != nil {
		return err
	}
	if f.conflict.Load() == log {
		return fmt.Errorf("another writer moved the head: %w", storage.ErrConflict)
	}
	err := f.Store.Integrate(ctx, log, b)
	if err == nil && f.failCommitting.Load() {
		return errors.New("connection reset while committing")
	}
	return err
}

func (f *faultyStore) LatestCheckpoint(ctx context.Context, log string) (storage.Checkpoint, error) {
	if err := f.err(); err != nil {
		return storage.Checkpoint{}, err
	}
	cp, err := f.Store.LatestCheckpoint(ctx, log)
	if f.forked.Load() == log {
		cp.Root[0] ^= 1
	}
	return cp, err
}

func (f *faultyStore) CheckpointAt(ctx context.Context, log string, size uint64) (storage.Checkpoint, error) {
	if err := f.err(); err != nil {
		return storage.Checkpoint{}, err
	}
	return f.Store.CheckpointAt(ctx, log, size)
}

func (f *faultyStore) ListCheckpoints(ctx context.Context, log string, after uint64, limit int) ([]storage.Checkpoint, error) {
	if err := f.err(); err != nil {
		return nil, err
	}
	return f.Store.ListCheckpoints(ctx, log, after, limit)
}

func (f *faultyStore) ReadTiles(ctx context.Context, log string, ts []tile.Tile) ([][]byte, error) {
	if err := f.err(); err != nil {
		return nil, err
	}
	return f.Store.ReadTiles(ctx, log, ts)
}

func (f *faultyStore) ReadEntries(ctx context.Context, log string, start, end uint64) ([]storage.Entry, error) {
	if err := f.err(); err != nil {
		return nil, err
	}
	return f.Store.ReadEntries(ctx, log, start, end)
}

func (f *faultyStore) LookupIdentities(ctx context.Context, log string, ids []storage.Hash) (map[storage.Hash]uint64, error) {
	if err := f.err(); err != nil {
		return nil, err
	}
	return f.Store.LookupIdentities(ctx, log, ids)
}

func (f *faultyStore) FindLeaf(ctx context.Context, log string, h storage.Hash) (uint64, error) {
	if err := f.err(); err != nil {
		return 0, err
	}
	return f.Store.FindLeaf(ctx, log, h)
}

func (f *faultyStore) AddCosignatures(ctx context.Context, log string, size uint64, cs []storage.Cosignature) error {
	if err := f.err(); err != nil {
		return err
	}
	return f.Store.AddCosignatures(ctx, log, size, cs)
}

func (f *faultyStore) CosignaturesAt(ctx context.Context, log string, size uint64) ([]storage.Cosignature, error) {
	if err := f.err(); err != nil {
		return nil, err
	}
	return f.Store.CosignaturesAt(ctx, log, size)
}

// TestStorageDown checks that storage faults reach clients as UNAVAILABLE
// (HTTP 503 with Retry-After), that /readyz follows the storage, and that
// the service recovers, including from a commit whose outcome it could not
// know.
func TestStorageDown(t *testing.T) {
	forEachDriver(t, func(t *testing.T, open func(testing.TB) storage.Store) {
		fs := &faultyStore{Store: open(t)}
		e := start(t, fs, []string{"audit"})
		ctx := context.Background()
		e.appendData("audit", []byte("a"), []byte("b"))
		e.appendData("audit", []byte("c"))
		lh := e.appendData("audit", []byte("d")).GetResults()[0].GetLeafHash()

		fs.down.Store(true)
		for name, call := range map[string]func() error{
			"Append": func() error {
				_, err := e.log.Append(ctx, &tlogv1.AppendRequest{Log: "audit", Entries: []*tlogv1.AppendEntry{{Data: []byte("while down")}}})
				return err
			},
			"GetCheckpoint at an older size": func() error {
				_, err := e.log.GetCheckpoint(ctx, &tlogv1.GetCheckpointRequest{Log: "audit", TreeSize: 2})
				return err
			},
			"GetInclusionProof": func() error {
				_, err := e.log.GetInclusionProof(ctx, &tlogv1.GetInclusionProofRequest{Log: "audit", Leaf: &tlogv1.GetInclusionProofRequest_Index{Index: 1}})
				return err
			},
			"GetInclusionProof by hash": func() error {
				_, err := e.log.GetInclusionProof(ctx, &tlogv1.GetInclusionProofRequest{Log: "audit", Leaf: &tlogv1.GetInclusionProofRequest_LeafHash{LeafHash: lh}})
				return err
			},
			"GetConsistencyProof": func() error {
				_, err := e.log.GetConsistencyProof(ctx, &tlogv1.GetConsistencyProofRequest{Log: "audit", FromSize: 2, ToSize: 3})
				return err
			},
			"GetEntries": func() error {
				return entriesErr(ctx, e.log, &tlogv1.GetEntriesRequest{Log: "audit"})
			},
			"GetEntryAndProof": func() error {
				_, err := e.log.GetEntryAndProof(ctx, &tlogv1.GetEntryAndProofRequest{Log: "audit", Index: 1})
				return err
			},
			"GetReceipt": func() error {
				_, err := e.log.GetReceipt(ctx, &tlogv1.GetReceiptRequest{Log: "audit", Leaf: &tlogv1.GetReceiptRequest_Index{Index: 1}})
				return err
			},
			"CreateLog": func() error {
				_, err := e.admin.CreateLog(ctx, &tlogv1.CreateLogRequest{Name: "new"})
				return err
			},
		} {
			if err := call(); code(err) != codes.Unavailable {
				t.Errorf("%s while storage is down: %v, want Unavailable", name, err)
			}
		}
		for _, r := range []struct{ method, path string }{
			{"POST", "/logs/audit/add"},
			{"GET", "/logs/audit/tile/0/000.p/4"},
			{"GET", "/logs/audit/tile/entries/000.p/4"},
			{"GET", "/readyz"},
		} {
			resp, body := e.do(r.method, r.path, []byte("while down"))
			if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
				t.Errorf("%s %s while storage is down: %s (Retry-After %q) %q", r.method, r.path, resp.Status, resp.Header.Get("Retry-After"), body)
			}
		}
		if resp, _ := e.get("/healthz"); resp.StatusCode != http.StatusOK {
			t.Errorf("/healthz while storage is down: %s", resp.Status)
		}

		// Back up: the service recovers without a restart.
		fs.down.Store(false)
		if resp, _ := e.get("/readyz"); resp.StatusCode != http.StatusOK {
			t.Errorf("/readyz after storage is back: %s", resp.Status)
		}
		r := e.appendData("audit", []byte("e"))
		if idx := r.GetResults()[0].GetIndex(); idx != 4 {
			t.Fatalf("Append after storage is back: index %d, want 4", idx)
		}

		// A commit that succeeds but is reported as failed: the client is
		// told UNAVAILABLE, and its retry finds the entries already there.
		fs.failCommitting.Store(true)
		req := &tlogv1.AppendRequest{Log: "audit", Entries: []*tlogv1.AppendEntry{{Data: []byte("f")}, {Data: []byte("g"), IdempotencyKey: "g"}}}
		if _, err := e.log.Append(ctx, req); code(err) != codes.Unavailable {
			t.Fatalf("Append whose commit is reported failed: %v, want Unavailable", err)
		}
		fs.failCommitting.Store(false)
		retry, err := e.log.Append(ctx, req)
		if err != nil {
			t.Fatalf("retried Append: %v", err)
		}
		for i, res := range retry.GetResults() {
			if !res.GetDuplicate() || res.GetIndex() != uint64(5+i) {
				t.Errorf("retried Append result %d: index %d duplicate %v, want %d duplicate", i, res.GetIndex(), res.GetDuplicate(), 5+i)
			}
		}
		if c := e.open("audit", retry.GetCheckpoint()); c.Size != 7 {
			t.Errorf("retried Append: checkpoint size %d, want 7", c.Size)
		}
		if got := e.verifyLog("audit"); got != 7 {
			t.Fatalf("verified size %d, want 7", got)
		}
	})
}

// TestLogStopped makes one log's tree head move behind its sequencer's back:
// the log stops sequencing (FAILED_PRECONDITION, HTTP 500) rather than
// fork, while its reads and the other logs go on.
func TestLogStopped(t *testing.T) {
	forEachDriver(t, func(t *testing.T, open func(testing.TB) storage.Store) {
		fs := &faultyStore{Store: open(t)}
		e := start(t, fs, []string{"a", "b"})
		ctx := context.Background()
		e.appendData("a", []byte("1"))
		before := e.snapshot("a")

		// A lost compare-and-swap is retriable: the sequencer re-reads the
		// head, finds it consistent, and goes on.
		fs.conflict.Store("a")
		_, err := e.log.Append(ctx, &tlogv1.AppendRequest{Log: "a", Entries: []*tlogv1.AppendEntry{{Data: []byte("2")}}})
		if code(err) != codes.Unavailable {
			t.Errorf("Append that lost the compare-and-swap: %v, want Unavailable", err)
		}
		// A head that disagrees with the signed checkpoint stops the log.
		fs.forked.Store("a")
		for i := range 2 {
			_, err := e.log.Append(ctx, &tlogv1.AppendRequest{Log: "a", Entries: []*tlogv1.AppendEntry{{Data: []byte("2")}}})
			if code(err) != codes.FailedPrecondition {
				t.Errorf("Append %d to a stopped log: %v, want FailedPrecondition", i, err)
			}
		}
		fs.forked.Store("")
		fs.conflict.Store("")
		resp, body := e.do(http.MethodPost, "/logs/a/add", []byte("3"))
		if resp.StatusCode != http.StatusInternalServerError {
			t.Errorf("add to a stopped log: %s %q, want 500", resp.Status, body)
		}
		if after := e.snapshot("a"); after != before {
			t.Errorf("stopped log changed:\n%+v\n%+v", before, after)
		}
		if _, err := e.log.GetEntryAndProof(ctx, &tlogv1.GetEntryAndProofRequest{Log: "a", Index: 0}); err != nil {
			t.Errorf("GetEntryAndProof on a stopped log: %v", err)
		}
		e.appendData("b", []byte("1"), []byte("2"))

		if got := e.verifyLog("a"); got != 1 {
			t.Errorf("verified size of a: %d, want 1", got)
		}
		if got := e.verifyLog("b"); got != 2 {
			t.Errorf("verified size of b: %d, want 2", got)
		}
	})
}

// hasRetryInfo reports whether a gRPC error tells the client when to retry.
func hasRetryInfo(err error) bool {
	st, _ := status.FromError(err)
	for _, d := range st.Details() {
		if _, ok := d.(*errdetails.RetryInfo); ok {
			return true
		}
	}
	return false
}
