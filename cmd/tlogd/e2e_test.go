package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/tlog"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tlog-dev/tlog/internal/pgtest"
	tlogv1 "github.com/tlog-dev/tlog/proto/tlog/v1"
)

// ledger records, from many goroutines, what a server acknowledged: the
// data at each index and the tree head of each checkpoint it returned. It
// fails the test on a checkpoint that does not verify, an index outside
// its checkpoint, or two checkpoints of one size with different roots.
type ledger struct {
	t   testing.TB
	key *logKey

	mu    sync.Mutex
	acked map[uint64][]byte
	seen  map[uint64]tlog.Hash
}

func newLedger(t testing.TB, key *logKey) *ledger {
	return &ledger{t: t, key: key, acked: map[uint64][]byte{}, seen: map[uint64]tlog.Hash{}}
}

// record notes an acknowledged append of data and returns the tree head of
// its checkpoint.
func (l *ledger) record(a appended, data []byte) treeHead {
	h, err := l.key.open(a.cp)
	if err != nil {
		l.t.Errorf("append of %q at %d: %v", data, a.index, err)
		return treeHead{}
	}
	if a.index >= h.size {
		l.t.Errorf("append of %q answered index %d with a checkpoint of size %d", data, a.index, h.size)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if old, ok := l.acked[a.index]; ok && !bytes.Equal(old, data) {
		l.t.Errorf("index %d acknowledged for %q and for %q", a.index, old, data)
	}
	l.acked[a.index] = data
	if old, ok := l.seen[h.size]; ok && old != h.root {
		l.t.Errorf("two checkpoints of size %d with roots %v and %v: fork", h.size, old, h.root)
	}
	l.seen[h.size] = h.root
	return h
}

// recordCheckpoint notes a checkpoint the server returned on a read.
func (l *ledger) recordCheckpoint(signed []byte) {
	h, err := l.key.open(signed)
	if err != nil {
		l.t.Errorf("checkpoint read: %v", err)
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if old, ok := l.seen[h.size]; ok && old != h.root {
		l.t.Errorf("two checkpoints of size %d with roots %v and %v: fork", h.size, old, h.root)
	}
	l.seen[h.size] = h.root
}

func (l *ledger) snapshot() (map[uint64][]byte, map[uint64]tlog.Hash) {
	l.mu.Lock()
	defer l.mu.Unlock()
	a := make(map[uint64][]byte, len(l.acked))
	for k, v := range l.acked {
		a[k] = v
	}
	s := make(map[uint64]tlog.Hash, len(l.seen))
	for k, v := range l.seen {
		s[k] = v
	}
	return a, s
}

// TestEndToEnd appends over gRPC (batched) and HTTP, proves and verifies
// with golang.org/x/mod/sumdb/tlog, reads every tile and entry bundle over
// HTTP and recomputes the root.
func TestEndToEnd(t *testing.T) {
	eachBackend(t, func(t *testing.T, st store) {
		d := start(t, options{args: st.args()})
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()

		origin, vkey, ok := d.printedKey()
		if !ok {
			t.Fatalf("tlogd printed no origin and verifier key for the new default log; stdout:\n%s", d.stdout.String())
		}
		key := d.fetchLogKey(t)
		if key.vkey != vkey || key.origin != origin {
			t.Fatalf("GetLog says origin %q key %q; tlogd printed origin %q key %q", key.origin, key.vkey, origin, vkey)
		}
		l := newLedger(t, key)

		// Empty log: a signed checkpoint of size 0 with the empty root.
		if r := audit(t, d, key, nil, nil, auditOptions{}); r.head.size != 0 || r.head.root != emptyRoot() {
			t.Fatalf("new log: size %d root %v", r.head.size, r.head.root)
		}

		// Batched gRPC appends, from several goroutines, past one full
		// level-1 tile (65536 entries) so that hash tiles of three levels
		// and full and partial tiles of each kind exist.
		const grpcEntries, perRequest, writers = 1<<16 + 300, 1024, 4
		var next int
		var mu sync.Mutex
		var wg sync.WaitGroup
		for range writers {
			wg.Go(func() {
				for {
					mu.Lock()
					lo := next
					hi := min(lo+perRequest, grpcEntries)
					next = hi
					mu.Unlock()
					if lo >= grpcEntries {
						return
					}
					var batch [][]byte
					for i := lo; i < hi; i++ {
						batch = append(batch, fmt.Appendf(nil, "grpc entry %d of the end-to-end test", i))
					}
					res, err := d.appendGRPC(ctx, batch)
					if err != nil {
						t.Errorf("Append of entries %d..%d: %v", lo, hi, err)
						return
					}
					var h treeHead
					for i, r := range res {
						if r.duplicate {
							t.Errorf("new entry %q reported as a duplicate of %d", batch[i], r.index)
						}
						if i > 0 && r.index <= res[i-1].index {
							t.Errorf("Append: indices %d then %d are not ascending", res[i-1].index, r.index)
						}
						h = l.record(r, batch[i])
					}
					// The first entry of the request is in its checkpoint.
					p, err := d.log.GetInclusionProof(ctx, &tlogv1.GetInclusionProofRequest{
						Log: logName, Leaf: &tlogv1.GetInclusionProofRequest_Index{Index: res[0].index}, TreeSize: h.size})
					if err != nil {
						t.Errorf("GetInclusionProof(%d, %d): %v", res[0].index, h.size, err)
						return
					}
					if err := checkInclusion(key, p.GetHashes(), p.GetCheckpoint(), res[0].index, h.size, batch[0]); err != nil {
						t.Errorf("entry %d in the checkpoint of its append: %v", res[0].index, err)
					}
				}
			})
		}

		// Concurrent HTTP appends, each proven in the checkpoint it came
		// with.
		httpData := make([][]byte, 48)
		httpRes := make([]appended, len(httpData))
		for i := range httpData {
			httpData[i] = fmt.Appendf(nil, "http entry %d of the end-to-end test", i)
		}
		parallel(8, len(httpData), func(i int) error {
			a, err := d.appendHTTP(ctx, httpData[i])
			if err != nil {
				t.Errorf("POST add %q: %v", httpData[i], err)
				return err
			}
			if a.duplicate {
				t.Errorf("POST add %q: new entry reported as a duplicate", httpData[i])
			}
			httpRes[i] = a
			h := l.record(a, httpData[i])
			p, err := d.log.GetInclusionProof(ctx, &tlogv1.GetInclusionProofRequest{
				Log: logName, Leaf: &tlogv1.GetInclusionProofRequest_Index{Index: a.index}, TreeSize: h.size})
			if err != nil {
				t.Errorf("GetInclusionProof(%d, %d): %v", a.index, h.size, err)
				return err
			}
			if err := checkInclusion(key, p.GetHashes(), p.GetCheckpoint(), a.index, h.size, httpData[i]); err != nil {
				t.Errorf("HTTP entry %d in the checkpoint of its append: %v", a.index, err)
			}
			return nil
		})
		wg.Wait()
		if t.Failed() {
			t.FailNow()
		}

		// Re-appending is de-duplicated, across both front ends and within
		// one request.
		acked, _ := l.snapshot()
		res, err := d.appendGRPC(ctx, httpData[:4])
		if err != nil {
			t.Fatalf("re-Append over gRPC: %v", err)
		}
		for i, r := range res {
			if !r.duplicate || r.index != httpRes[i].index {
				t.Errorf("re-Append of %q: index %d duplicate %v, want index %d duplicate", httpData[i], r.index, r.duplicate, httpRes[i].index)
			}
		}
		for idx, data := range map[uint64][]byte{0: acked[0], 1000: acked[1000]} {
			a, err := d.appendHTTP(ctx, data)
			if err != nil {
				t.Fatalf("re-POST: %v", err)
			}
			if !a.duplicate || a.index != idx {
				t.Errorf("re-POST of %q: index %d duplicate %v, want index %d duplicate", data, a.index, a.duplicate, idx)
			}
		}
		twin := []byte("the same entry twice in one request")
		res, err = d.appendGRPC(ctx, [][]byte{twin, twin})
		if err != nil {
			t.Fatalf("Append of twins: %v", err)
		}
		if res[0].duplicate || !res[1].duplicate || res[0].index != res[1].index {
			t.Errorf("Append of twins: %+v, %+v; want one new entry and one duplicate of it", res[0], res[1])
		}
		l.record(res[0], twin)

		// Lookup by leaf hash, and an entry with its proof.
		lh := tlog.RecordHash(httpData[7])
		p, err := d.log.GetInclusionProof(ctx, &tlogv1.GetInclusionProofRequest{
			Log: logName, Leaf: &tlogv1.GetInclusionProofRequest_LeafHash{LeafHash: lh[:]}})
		if err != nil {
			t.Fatalf("GetInclusionProof by leaf hash: %v", err)
		}
		if p.GetIndex() != httpRes[7].index {
			t.Errorf("GetInclusionProof by leaf hash: index %d, want %d", p.GetIndex(), httpRes[7].index)
		}
		if err := checkInclusion(key, p.GetHashes(), p.GetCheckpoint(), p.GetIndex(), p.GetTreeSize(), httpData[7]); err != nil {
			t.Errorf("proof by leaf hash: %v", err)
		}
		ep, err := d.log.GetEntryAndProof(ctx, &tlogv1.GetEntryAndProofRequest{Log: logName, Index: 65535})
		if err != nil {
			t.Fatalf("GetEntryAndProof: %v", err)
		}
		epHead, err := key.open(ep.GetCheckpoint())
		if err != nil {
			t.Fatal(err)
		}
		if err := checkInclusion(key, ep.GetInclusionProof(), ep.GetCheckpoint(), 65535, epHead.size, ep.GetEntry().GetData()); err != nil {
			t.Errorf("GetEntryAndProof(65535): %v", err)
		}

		// Errors at the edges.
		if _, err := d.appendHTTP(ctx, nil); !isHTTPStatus(err, http.StatusBadRequest) {
			t.Errorf("POST add with an empty body: %v, want HTTP 400", err)
		}
		if _, err := d.log.Append(ctx, &tlogv1.AppendRequest{Log: "no-such-log", Entries: []*tlogv1.AppendEntry{{Data: []byte("x")}}}); status.Code(err) != codes.NotFound {
			t.Errorf("Append to an unknown log: %v, want NotFound", err)
		}

		acked, seen := l.snapshot()
		r := audit(t, d, key, acked, seen, auditOptions{})
		if want := uint64(grpcEntries + len(httpData) + 1); r.head.size != want {
			t.Errorf("final tree size %d, want %d", r.head.size, want)
		}
		// A tile that the tree does not have yet is not served.
		beyond := tlog.Tile{H: 8, L: 0, N: int64(r.head.size / 256), W: int(r.head.size%256) + 1}
		if _, _, err := d.get(ctx, "/logs/"+logName+"/"+tilePath(beyond)); !isHTTPStatus(err, http.StatusNotFound) {
			t.Errorf("GET %s beyond the tree: %v, want 404", tilePath(beyond), err)
		}
		t.Logf("%d entries, %d checkpoints verified", r.head.size, len(seen))
		d.checkLogClean(t)
	})
}

func isHTTPStatus(err error, code int) bool {
	var e *httpStatusError
	return errors.As(err, &e) && e.code == code
}

// TestDefaultConfig starts tlogd with no flags in an empty directory: it
// must create ./tlog-data (the embedded store and the key) and print the
// origin and verifier key. The listen addresses come from TLOG_GRPC_ADDR and
// TLOG_HTTP_ADDR, as the default ports may be taken; on PostgreSQL the URL
// comes from TLOG_DATABASE_URL.
func TestDefaultConfig(t *testing.T) {
	for _, backend := range []string{"embedded", "postgres"} {
		t.Run(backend, func(t *testing.T) {
			dir := t.TempDir()
			var env []string
			if backend == "postgres" {
				env = append(env, "TLOG_DATABASE_URL="+pgtest.NewDatabase(t))
			}
			d := start(t, options{dir: dir, env: env, addrsByEnv: true})
			origin, vkey, ok := d.printedKey()
			if !ok {
				t.Fatalf("no origin and verifier key on stdout:\n%s", d.stdout.String())
			}
			if origin != "tlog.localhost/logs/default" {
				t.Errorf("default origin %q", origin)
			}
			if !strings.HasPrefix(vkey, origin+"+") {
				t.Errorf("verifier key %q is not named after the origin", vkey)
			}
			if _, err := os.Stat(filepath.Join(dir, "tlog-data", "keys")); err != nil {
				t.Errorf("no key directory under ./tlog-data: %v", err)
			}
			_, err := os.Stat(filepath.Join(dir, "tlog-data", "tlog.db"))
			if backend == "embedded" && err != nil {
				t.Errorf("no embedded store at ./tlog-data/tlog.db: %v", err)
			}
			if backend == "postgres" && err == nil {
				t.Errorf("TLOG_DATABASE_URL is set, yet an embedded store was created in ./tlog-data")
			}
			key := newLogKey(t, origin, vkey)
			ctx := context.Background()
			a, err := d.appendHTTP(ctx, []byte("hello"))
			if err != nil {
				t.Fatalf("POST add: %v", err)
			}
			if h, err := key.open(a.cp); err != nil || h.size != 1 || a.index != 0 {
				t.Errorf("first append: index %d, checkpoint %+v, %v", a.index, h, err)
			}
			d.cmd.Process.Signal(os.Interrupt)
			if code := d.wait(30 * time.Second); code != 0 {
				t.Errorf("exit code %d after SIGINT", code)
			}

			// A second start finds the log and creates nothing.
			d = start(t, options{dir: dir, env: env, addrsByEnv: true})
			if _, _, ok := d.printedKey(); ok {
				t.Errorf("second start created the default log again:\n%s", d.stdout.String())
			}
			if k := d.fetchLogKey(t); k.vkey != vkey {
				t.Errorf("after restart the verifier key is %q, was %q", k.vkey, vkey)
			}
			audit(t, d, key, map[uint64][]byte{0: []byte("hello")}, nil, auditOptions{allInclusion: true})
			d.checkLogClean(t)
		})
	}
}
