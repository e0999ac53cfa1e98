package client_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	sumdb "golang.org/x/mod/sumdb/tlog"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/tlog-dev/tlog/pkg/checkpoint"
	"github.com/tlog-dev/tlog/pkg/client"
	"github.com/tlog-dev/tlog/pkg/receipt"
	"github.com/tlog-dev/tlog/pkg/tree"
	tlogv1 "github.com/tlog-dev/tlog/proto/tlog/v1"
)

const (
	mAppend      = tlogv1.LogService_Append_FullMethodName
	mCheckpoint  = tlogv1.LogService_GetCheckpoint_FullMethodName
	mInclusion   = tlogv1.LogService_GetInclusionProof_FullMethodName
	mConsistency = tlogv1.LogService_GetConsistencyProof_FullMethodName
	mReceipt     = tlogv1.LogService_GetReceipt_FullMethodName
)

func event(i int) []byte { return fmt.Appendf(nil, `{"event":%d}`, i) }

// appendAll appends n events concurrently and returns their results.
func appendAll(t *testing.T, c *client.Client, n int) []client.Result {
	t.Helper()
	results := make([]client.Result, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { results[i], errs[i] = c.Append(t.Context(), event(i)) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("Append(%s): %v", event(i), err)
		}
	}
	return results
}

// checkResults checks that each result is a new entry holding event(i), at
// an index no other result has, under a checkpoint that verifies.
func checkResults(t *testing.T, l *testLog, results []client.Result) {
	t.Helper()
	seen := make(map[uint64]int)
	for i, r := range results {
		if r.LeafHash != tree.LeafHash(event(i)) || r.Duplicate {
			t.Errorf("result %d: leaf hash %x, duplicate %v; want %x, false", i, r.LeafHash, r.Duplicate, tree.LeafHash(event(i)))
		}
		if j, ok := seen[r.Index]; ok {
			t.Errorf("results %d and %d both have index %d", j, i, r.Index)
		}
		seen[r.Index] = i
		c, _, err := checkpoint.Open(r.Checkpoint.Note, l.verifier())
		if err != nil || c.Size != r.Checkpoint.Size || c.Hash != r.Checkpoint.Hash || r.Index >= c.Size {
			t.Errorf("result %d (index %d): checkpoint %d/%x: %v", i, r.Index, c.Size, c.Hash, err)
		}
	}
}

// checkContent reads the whole log with the client and checks that it holds
// exactly the results' events.
func checkContent(t *testing.T, c *client.Client, results []client.Result) {
	t.Helper()
	want := make(map[uint64][]byte)
	for i, r := range results {
		want[r.Index] = event(i)
	}
	n := 0
	for e, err := range c.Entries(t.Context(), 0, 1<<62) {
		if err != nil {
			t.Fatalf("Entries: %v", err)
		}
		if !bytes.Equal(e.Data, want[e.Index]) {
			t.Errorf("entry %d is %q, want %q", e.Index, e.Data, want[e.Index])
		}
		n++
	}
	if n != len(want) {
		t.Errorf("the log has %d entries, want %d", n, len(want))
	}
}

func TestAppendBatches(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name       string
		cfg        client.Config
		n          int
		maxBatch   int // the most entries an RPC may carry
		maxRPCs    int // the most Append RPCs
		minRPCs    int
		maxBatches int
	}{
		{name: "one batch", cfg: client.Config{MaxBatchDelay: 200 * time.Millisecond}, n: 500, maxBatch: 1000, minRPCs: 1, maxRPCs: 5},
		{name: "MaxBatch", cfg: client.Config{MaxBatch: 50, MaxBatchDelay: 200 * time.Millisecond}, n: 300, maxBatch: 50, minRPCs: 6, maxRPCs: 20},
		{name: "MaxBatchBytes", cfg: client.Config{MaxBatchBytes: 100, MaxBatchDelay: 200 * time.Millisecond}, n: 60, maxBatch: 10, minRPCs: 6, maxRPCs: 30},
		{name: "default delay", n: 200, maxBatch: 1000, minRPCs: 1, maxRPCs: 100},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			l := startLog(t)
			var cs calls
			c := l.client(tc.cfg, cs.interceptor())
			results := appendAll(t, c, tc.n)
			checkResults(t, l, results)
			rpcs := cs.count(mAppend)
			if rpcs < tc.minRPCs || rpcs > tc.maxRPCs {
				t.Errorf("%d Appends took %d RPCs, want %d to %d", tc.n, rpcs, tc.minRPCs, tc.maxRPCs)
			}
			cs.mu.Lock()
			for _, b := range cs.batches {
				if b > tc.maxBatch {
					t.Errorf("an RPC carried %d entries, more than %d", b, tc.maxBatch)
				}
			}
			t.Logf("%d Appends in %d RPCs: %v", tc.n, rpcs, cs.batches)
			cs.mu.Unlock()
			checkContent(t, c, results)
			if size := l.verify(); size != uint64(tc.n) {
				t.Errorf("log size %d, want %d", size, tc.n)
			}
		})
	}
}

// TestAppendRetryAfterCommit fails the first Append RPC after the server
// committed it: the retry must find every entry already there.
func TestAppendRetryAfterCommit(t *testing.T) {
	t.Parallel()
	l := startLog(t)
	first := once()
	var firstReq *tlogv1.AppendRequest
	var firstResp *tlogv1.AppendResponse
	lose := onMethod(mAppend, func(ctx context.Context, req, reply any, call func() error) error {
		err := call()
		if err == nil && first() {
			firstReq = proto.Clone(req.(*tlogv1.AppendRequest)).(*tlogv1.AppendRequest)
			firstResp = proto.Clone(reply.(*tlogv1.AppendResponse)).(*tlogv1.AppendResponse)
			return status.Error(codes.Unavailable, "connection lost after the commit")
		}
		return err
	})
	var cs calls
	c := l.client(client.Config{MaxBatchDelay: 100 * time.Millisecond, Retry: client.RetryPolicy{BaseDelay: time.Millisecond}}, cs.interceptor(), lose)
	const n = 20
	results := appendAll(t, c, n)

	if firstReq == nil {
		t.Fatal("no Append RPC succeeded")
	}
	committed := make(map[string]uint64) // data -> index of the lost attempt
	for i, e := range firstReq.GetEntries() {
		if e.GetIdempotencyKey() == "" {
			t.Errorf("entry %q was sent without an idempotency key", e.GetData())
		}
		committed[string(e.GetData())] = firstResp.GetResults()[i].GetIndex()
	}
	for i, r := range results {
		idx, ok := committed[string(event(i))]
		if !ok {
			continue // in a later batch
		}
		if r.Index != idx || !r.Duplicate || r.LeafHash != tree.LeafHash(event(i)) {
			t.Errorf("entry %d: index %d, duplicate %v; want the lost attempt's index %d, duplicate", i, r.Index, r.Duplicate, idx)
		}
	}
	if got := cs.count(mAppend); got != len(cs.batches) || got < 2 {
		t.Errorf("%d Append RPCs", got)
	}
	if size := l.verify(); size != n {
		t.Errorf("log size %d, want %d: a retry appended twice", size, n)
	}
	checkContent(t, c, results)
}

func TestAppendRetries(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name         string
		fail         codes.Code // the code of the failing attempts
		retryInfo    bool       // the failure carries a RetryInfo detail
		failures     int        // how many attempts fail (before reaching the server)
		maxAttempts  int
		wantAttempts int
		wantCode     codes.Code // OK: success
	}{
		{"Unavailable", codes.Unavailable, false, 2, 5, 3, codes.OK},
		{"ResourceExhausted with RetryInfo", codes.ResourceExhausted, true, 2, 5, 3, codes.OK},
		// Without RetryInfo, ResourceExhausted is a limit (too large):
		// retrying cannot help.
		{"ResourceExhausted without RetryInfo", codes.ResourceExhausted, false, 2, 5, 1, codes.ResourceExhausted},
		{"Aborted", codes.Aborted, false, 1, 5, 2, codes.OK},
		{"attempts exhausted", codes.Unavailable, false, 10, 3, 3, codes.Unavailable},
		{"no retries", codes.Unavailable, false, 1, 1, 1, codes.Unavailable},
		{"InvalidArgument", codes.InvalidArgument, false, 1, 5, 1, codes.InvalidArgument},
		{"FailedPrecondition", codes.FailedPrecondition, false, 1, 5, 1, codes.FailedPrecondition},
		{"NotFound", codes.NotFound, false, 1, 5, 1, codes.NotFound},
		{"Internal", codes.Internal, false, 1, 5, 1, codes.Internal},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			l := startLog(t)
			var mu sync.Mutex
			attempts := 0
			flaky := onMethod(mAppend, func(ctx context.Context, req, reply any, call func() error) error {
				mu.Lock()
				attempts++
				a := attempts
				mu.Unlock()
				if a <= tc.failures {
					st := status.New(tc.fail, "injected")
					if tc.retryInfo {
						st, _ = st.WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(time.Millisecond)})
					}
					return st.Err()
				}
				return call()
			})
			c := l.client(client.Config{Retry: client.RetryPolicy{MaxAttempts: tc.maxAttempts, BaseDelay: time.Millisecond}}, flaky)
			r, err := c.Append(t.Context(), []byte("x"))
			if got := status.Code(err); got != tc.wantCode {
				t.Fatalf("Append: %v (code %v), want code %v", err, got, tc.wantCode)
			}
			if attempts != tc.wantAttempts {
				t.Errorf("%d attempts, want %d", attempts, tc.wantAttempts)
			}
			want := uint64(0)
			if tc.wantCode == codes.OK {
				want = 1
				if r.Index != 0 || r.Duplicate {
					t.Errorf("result %+v", r)
				}
			}
			if size := l.verify(); size != want {
				t.Errorf("log size %d, want %d", size, want)
			}
		})
	}
}

// TestAppendAttemptTimeout: an attempt that runs out of its own deadline is
// retried.
func TestAppendAttemptTimeout(t *testing.T) {
	t.Parallel()
	l := startLog(t)
	first := once()
	stall := onMethod(mAppend, func(ctx context.Context, req, reply any, call func() error) error {
		if first() {
			<-ctx.Done()
			return status.FromContextError(ctx.Err()).Err()
		}
		return call()
	})
	var cs calls
	c := l.client(client.Config{Retry: client.RetryPolicy{AttemptTimeout: 50 * time.Millisecond, BaseDelay: time.Millisecond}}, cs.interceptor(), stall)
	if _, err := c.Append(t.Context(), []byte("x")); err != nil {
		t.Fatalf("Append: %v", err)
	}
	if got := cs.count(mAppend); got != 2 {
		t.Errorf("%d attempts, want 2", got)
	}
	l.verify()
}

// TestAppendBoundedMemory: with the server slowed, Appends beyond
// MaxInFlightBytes block, and give up when their context ends.
func TestAppendBoundedMemory(t *testing.T) {
	t.Parallel()
	l := startLog(t)
	entered := make(chan struct{}, 10)
	release := make(chan struct{})
	slow := onMethod(mAppend, func(ctx context.Context, req, reply any, call func() error) error {
		entered <- struct{}{}
		<-release
		return call()
	})
	c := l.client(client.Config{MaxInFlightBytes: 1000, MaxBatchDelay: -1}, slow)

	entry := func(b byte) []byte { return bytes.Repeat([]byte{b}, 600) }
	doneA := make(chan error, 1)
	go func() {
		_, err := c.Append(context.Background(), entry('a'))
		doneA <- err
	}()
	<-entered // A is in an RPC, holding 600+ of the 1000 bytes.

	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := c.Append(ctx, entry('b'))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Append beyond the bound: %v, want DeadlineExceeded", err)
	}
	if d := time.Since(start); d < 40*time.Millisecond || d > 5*time.Second {
		t.Errorf("Append beyond the bound returned after %v, want about 50ms", d)
	}

	ctx, cancel = context.WithCancel(t.Context())
	time.AfterFunc(20*time.Millisecond, cancel)
	if _, err := c.Append(ctx, entry('c')); !errors.Is(err, context.Canceled) {
		t.Fatalf("Append beyond the bound, cancelled: %v, want Canceled", err)
	}
	select {
	case <-entered:
		t.Fatal("an entry beyond the bound reached the server")
	case err := <-doneA:
		t.Fatalf("A returned before the server answered: %v", err)
	default:
	}

	close(release)
	if err := <-doneA; err != nil {
		t.Fatalf("Append A: %v", err)
	}
	// The bytes are free again.
	ctx, cancel = context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	r, err := c.Append(ctx, entry('d'))
	if err != nil {
		t.Fatalf("Append D: %v", err)
	}
	if r.Index != 1 {
		t.Errorf("D has index %d, want 1", r.Index)
	}
	if size := l.verify(); size != 2 {
		t.Errorf("log size %d, want 2 (A and D)", size)
	}
}

// TestAppendCancelledWhilePooled: an entry whose caller gave up before its
// batch was sent is not sent.
func TestAppendCancelledWhilePooled(t *testing.T) {
	t.Parallel()
	l := startLog(t)
	var cs calls
	c := l.client(client.Config{MaxBatchDelay: time.Hour}, cs.interceptor())
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
	defer cancel()
	if _, err := c.Append(ctx, []byte("x")); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Append: %v, want DeadlineExceeded", err)
	}
	c.Close() // flushes the pool
	if n := cs.count(mAppend); n != 0 {
		t.Errorf("%d Append RPCs, want none", n)
	}
	if size := l.verify(); size != 0 {
		t.Errorf("log size %d, want 0", size)
	}
}

func TestClose(t *testing.T) {
	t.Parallel()
	l := startLog(t)
	var cs calls
	c := l.client(client.Config{MaxBatchDelay: time.Hour}, cs.interceptor())
	const n = 50
	errs := make(chan error, n)
	for i := range n {
		go func() {
			_, err := c.Append(context.Background(), event(i))
			errs <- err
		}()
	}
	time.Sleep(200 * time.Millisecond) // let them reach the pool
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	for range n {
		if err := <-errs; err != nil {
			t.Errorf("Append: %v", err)
		}
	}
	if got := cs.count(mAppend); got != 1 {
		t.Errorf("%d Append RPCs, want 1", got)
	}
	if _, err := c.Append(t.Context(), []byte("late")); !errors.Is(err, client.ErrClosed) {
		t.Errorf("Append after Close: %v, want ErrClosed", err)
	}
	if err := c.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if size := l.verify(); size != n {
		t.Errorf("log size %d, want %d", size, n)
	}
}

func TestIdempotencyKey(t *testing.T) {
	t.Parallel()
	l := startLog(t)
	c := l.client(client.Config{MaxBatchDelay: -1})
	ctx := t.Context()
	a, err := c.Append(ctx, []byte("x"), client.WithIdempotencyKey("k1"))
	if err != nil || a.Duplicate {
		t.Fatalf("Append: %+v, %v", a, err)
	}
	again, err := c.Append(ctx, []byte("x"), client.WithIdempotencyKey("k1"))
	if err != nil || !again.Duplicate || again.Index != a.Index {
		t.Errorf("Append again with the key: %+v, %v; want duplicate of %d", again, err, a.Index)
	}
	other, err := c.Append(ctx, []byte("y"), client.WithIdempotencyKey("k1"))
	if err != nil || !other.Duplicate || other.Index != a.Index || other.LeafHash != tree.LeafHash([]byte("x")) {
		t.Errorf("Append other data with the key: %+v, %v; want duplicate of %d with the original leaf hash", other, err, a.Index)
	}
	// Without a key, the client's random keys keep equal events apart.
	b, err := c.Append(ctx, []byte("x"))
	if err != nil || b.Duplicate || b.Index == a.Index {
		t.Errorf("Append without a key: %+v, %v; want a new entry", b, err)
	}
	p, err := c.AppendAndProve(ctx, []byte("z"), client.WithIdempotencyKey("k1"))
	if err != nil || !p.Duplicate || p.Index != a.Index || p.LeafHash != tree.LeafHash([]byte("x")) {
		t.Errorf("AppendAndProve with the key: %+v, %v; want a proof of entry %d", p, err, a.Index)
	}
	if size := l.verify(); size != 2 {
		t.Errorf("log size %d, want 2", size)
	}
}

func TestAppendAndProve(t *testing.T) {
	t.Parallel()
	l := startLog(t)
	l.appendRaw("a", "b", "c")
	c := l.client(client.Config{})
	v := l.verifier()

	const n = 40
	proofs := make([]client.Proof, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { proofs[i], errs[i] = c.AppendAndProve(t.Context(), event(i)) })
	}
	// Reading the latest checkpoint meanwhile is no rollback, although
	// the proofs move the trusted state concurrently.
	stop := make(chan struct{})
	readErr := make(chan error, 1)
	go func() {
		for {
			select {
			case <-stop:
				readErr <- nil
				return
			default:
			}
			if _, err := c.Checkpoint(t.Context()); err != nil {
				readErr <- err
				return
			}
		}
	}()
	wg.Wait()
	close(stop)
	if err := <-readErr; err != nil {
		t.Fatalf("Checkpoint during AppendAndProve: %v", err)
	}
	var maxSize uint64
	for i, p := range proofs {
		if errs[i] != nil {
			t.Fatalf("AppendAndProve: %v", errs[i])
		}
		leaf := tree.LeafHash(event(i))
		if p.LeafHash != leaf || p.Duplicate {
			t.Errorf("proof %d: leaf hash %x, duplicate %v", i, p.LeafHash, p.Duplicate)
		}
		cp, _, err := checkpoint.Open(p.Checkpoint.Note, v)
		if err != nil || cp.Size != p.Checkpoint.Size || cp.Hash != p.Checkpoint.Hash {
			t.Fatalf("proof %d: checkpoint: %v", i, err)
		}
		// Cross-check with an independent implementation.
		rp := make(sumdb.RecordProof, len(p.InclusionProof))
		for j, h := range p.InclusionProof {
			rp[j] = sumdb.Hash(h)
		}
		if err := sumdb.CheckRecord(rp, int64(cp.Size), sumdb.Hash(cp.Hash), int64(p.Index), sumdb.Hash(leaf)); err != nil {
			t.Errorf("proof %d: sumdb: %v", i, err)
		}
		r, err := receipt.Parse(p.Receipt())
		if err != nil {
			t.Fatalf("proof %d: receipt: %v", i, err)
		}
		if _, _, err := receipt.Verify(r, leaf, v); err != nil {
			t.Errorf("proof %d: receipt: %v", i, err)
		}
		maxSize = max(maxSize, cp.Size)
	}
	trusted, ok := c.Trusted()
	if !ok || trusted.Size != maxSize {
		t.Errorf("trusted state at size %d (%v), want the largest proven size %d", trusted.Size, ok, maxSize)
	}
	if size := l.verify(); size != n+3 {
		t.Errorf("log size %d, want %d", size, n+3)
	}
}

func TestInvalidInput(t *testing.T) {
	t.Parallel()
	l := startLog(t)
	var cs calls
	c := l.client(client.Config{}, cs.interceptor())
	ctx := t.Context()
	w := l.verifier() // any verifier will do: the options are refused first
	for _, tc := range []struct {
		name string
		call func() error
	}{
		{"empty", func() error { _, err := c.Append(ctx, nil); return err }},
		{"empty, AppendAndProve", func() error { _, err := c.AppendAndProve(ctx, []byte{}); return err }},
		{"too large", func() error { _, err := c.Append(ctx, make([]byte, 1<<16)); return err }},
		{"empty key", func() error { _, err := c.Append(ctx, []byte("x"), client.WithIdempotencyKey("")); return err }},
		{"policy on Append", func() error {
			_, err := c.Append(ctx, []byte("x"), client.WithCosignatureVerifiers(1, w))
			return err
		}},
		{"k of 0", func() error {
			_, err := c.AppendAndProve(ctx, []byte("x"), client.WithCosignatureVerifiers(0, w))
			return err
		}},
		{"k beyond the witnesses", func() error {
			_, err := c.AppendAndProve(ctx, []byte("x"), client.WithCosignatureVerifiers(2, w))
			return err
		}},
		{"nil witness", func() error {
			_, err := c.AppendAndProve(ctx, []byte("x"), client.WithCosignatureVerifiers(1, nil))
			return err
		}},
		{"empty range", func() error {
			for _, err := range c.Entries(ctx, 3, 3) {
				return err
			}
			return nil
		}},
	} {
		if err := tc.call(); err == nil {
			t.Errorf("%s: no error", tc.name)
		} else {
			t.Logf("%s: %v", tc.name, err)
		}
	}
	if n := cs.total(); n != 0 {
		t.Errorf("invalid input made %d RPCs", n)
	}

	conn := l.conn()
	for _, cfg := range []client.Config{
		{Log: logName, VerifierKey: l.vkey},
		{Conn: conn, VerifierKey: l.vkey},
		{Conn: conn, Log: logName},
		{Conn: conn, Log: logName, VerifierKey: "tlog.test/audit+00000000+AAAA"},
	} {
		if _, err := client.New(cfg); err == nil {
			t.Errorf("New(%+v): no error", cfg)
		}
	}
	if size := l.verify(); size != 0 {
		t.Errorf("log size %d, want 0", size)
	}
}
