package server_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"
	sumdb "golang.org/x/mod/sumdb/tlog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"

	"github.com/tlog-dev/tlog/internal/pgtest"
	"github.com/tlog-dev/tlog/pkg/checkpoint"
	tlogv1 "github.com/tlog-dev/tlog/proto/tlog/v1"
	"github.com/tlog-dev/tlog/server"
	"github.com/tlog-dev/tlog/server/sequencer"
	"github.com/tlog-dev/tlog/storage"
	"github.com/tlog-dev/tlog/storage/embedded"
	"github.com/tlog-dev/tlog/storage/postgres"
)

// drivers opens a fresh, empty store on every storage driver; it is closed
// when the test ends, after the services started on it have stopped.
var drivers = []struct {
	name string
	open func(t testing.TB) storage.Store
}{
	{"embedded", func(t testing.TB) storage.Store {
		s, err := embedded.Open(filepath.Join(t.TempDir(), "tlog.db"), embedded.Config{Logger: testLogger(t)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}},
	{"postgres", func(t testing.TB) storage.Store {
		s, err := postgres.Open(context.Background(), pgtest.NewDatabase(t), postgres.Config{Logger: testLogger(t)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}},
}

// forEachDriver runs f as a parallel subtest per storage driver, in
// parallel with the other tests: each has its own store.
func forEachDriver(t *testing.T, f func(t *testing.T, open func(testing.TB) storage.Store)) {
	t.Helper()
	t.Parallel()
	for _, d := range drivers {
		t.Run(d.name, func(t *testing.T) {
			t.Parallel()
			f(t, d.open)
		})
	}
}

// testLogger routes logs to the test's output, warnings and errors only, so
// that a passing run stays quiet.
func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// env is one service on one store, reachable through its real gRPC (over
// bufconn) and HTTP (over loopback) front ends.
type env struct {
	t     *testing.T
	store storage.Store
	svc   *server.Service
	log   tlogv1.LogServiceClient
	admin tlogv1.AdminServiceClient
	http  *httptest.Server
	keys  string // the key directory

	stopOnce sync.Once
	cancel   context.CancelFunc
	runDone  chan error
}

type envOption func(*server.Config)

// withSequencer sets the sequencer settings.
func withSequencer(c sequencer.Config) envOption {
	return func(cfg *server.Config) { cfg.Sequencer = c }
}

// start creates the given logs (before Run, as tlogd does), runs the
// service and serves it over gRPC and HTTP until the test ends. By default
// batches are short (2ms) and MaxEntriesPerRead is 7, so that GetEntries
// streams several messages for small logs.
func start(t *testing.T, store storage.Store, logs []string, opts ...envOption) *env {
	t.Helper()
	e := &env{t: t, store: store, runDone: make(chan error, 1)}
	cfg := server.Config{
		Store:             store,
		KeyDir:            filepath.Join(t.TempDir(), "keys"),
		Sequencer:         sequencer.Config{MaxBatchAge: 2 * time.Millisecond},
		MaxEntriesPerRead: 7,
		Logger:            testLogger(t),
	}
	for _, o := range opts {
		o(&cfg)
	}
	e.keys = cfg.KeyDir
	ctx := context.Background()
	svc, err := server.New(ctx, cfg)
	if err != nil {
		t.Fatalf("server.New: %v", err)
	}
	e.svc = svc
	for _, name := range logs {
		if _, err := svc.CreateLog(ctx, name, ""); err != nil {
			t.Fatalf("CreateLog(%q): %v", name, err)
		}
	}
	runCtx, cancel := context.WithCancel(ctx)
	e.cancel = cancel
	go func() { e.runDone <- svc.Run(runCtx) }()
	t.Cleanup(e.stop)

	lis := bufconn.Listen(1 << 20)
	gs := grpc.NewServer()
	server.RegisterGRPC(gs, svc)
	go gs.Serve(lis)
	t.Cleanup(gs.Stop)
	conn, err := grpc.NewClient("passthrough:///bufconn",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	e.log = tlogv1.NewLogServiceClient(conn)
	e.admin = tlogv1.NewAdminServiceClient(conn)

	e.http = httptest.NewServer(server.HTTPHandler(svc))
	t.Cleanup(e.http.Close)
	return e
}

// stop cancels Run and waits for it: pooled entries are flushed first.
func (e *env) stop() {
	e.stopOnce.Do(func() {
		e.cancel()
		select {
		case err := <-e.runDone:
			if err != nil {
				e.t.Errorf("Run: %v", err)
			}
		case <-time.After(20 * time.Second):
			e.t.Errorf("Run did not return 20s after its context was cancelled")
		}
	})
}

// verifier returns the verifier of a log's key as a client gets it: from
// the verifier key that GetLog publishes.
func (e *env) verifier(name string) note.Verifier {
	e.t.Helper()
	resp, err := e.admin.GetLog(context.Background(), &tlogv1.GetLogRequest{Name: name})
	if err != nil {
		e.t.Fatalf("GetLog(%q): %v", name, err)
	}
	v, err := checkpoint.NewVerifier(resp.GetLog().GetVerifierKey())
	if err != nil {
		e.t.Fatalf("verifier key of %q: %v", name, err)
	}
	return v
}

// verifyLog verifies the whole stored log and returns its size. Every test
// that writes ends with it.
func (e *env) verifyLog(name string) uint64 {
	e.t.Helper()
	rep, err := storage.VerifyLog(context.Background(), e.store, name, e.verifier(name))
	if err != nil {
		e.t.Fatalf("log %q does not verify: %v", name, err)
	}
	return rep.Size
}

// open verifies a signed checkpoint with the log's key.
func (e *env) open(name string, signed []byte) checkpoint.Checkpoint {
	e.t.Helper()
	c, _, err := checkpoint.Open(signed, e.verifier(name))
	if err != nil {
		e.t.Fatalf("checkpoint of %q does not verify: %v\n%s", name, err, signed)
	}
	return c
}

// appendData appends entries (without idempotency keys) over gRPC.
func (e *env) appendData(name string, data ...[]byte) *tlogv1.AppendResponse {
	e.t.Helper()
	req := &tlogv1.AppendRequest{Log: name}
	for _, d := range data {
		req.Entries = append(req.Entries, &tlogv1.AppendEntry{Data: d})
	}
	resp, err := e.log.Append(context.Background(), req)
	if err != nil {
		e.t.Fatalf("Append: %v", err)
	}
	return resp
}

// state is what a client can see of a log's stored state; bad requests must
// leave it unchanged.
type state struct {
	size    uint64
	root    storage.Hash
	note    string
	entries int
	logs    int
	keys    string // the key files
}

// snapshot reads the stored state of a log behind the service's back.
func (e *env) snapshot(name string) state {
	e.t.Helper()
	ctx := context.Background()
	cp, err := e.store.LatestCheckpoint(ctx, name)
	if err != nil {
		e.t.Fatalf("LatestCheckpoint: %v", err)
	}
	es, err := e.store.ReadEntries(ctx, name, 0, cp.Size)
	if err != nil {
		e.t.Fatalf("ReadEntries: %v", err)
	}
	// Nothing may be stored beyond the head either.
	if _, err := e.store.ReadEntries(ctx, name, cp.Size, cp.Size+1); !errors.Is(err, storage.ErrNotFound) {
		e.t.Fatalf("ReadEntries beyond the head (%d): %v, want ErrNotFound", cp.Size, err)
	}
	logs, err := e.store.ListLogs(ctx)
	if err != nil {
		e.t.Fatalf("ListLogs: %v", err)
	}
	keys, err := os.ReadDir(e.keys)
	if err != nil {
		e.t.Fatal(err)
	}
	var names []string
	for _, k := range keys {
		// The record of the latest signed checkpoint (and its temporary
		// file) is rewritten as the log is sequenced: not state here.
		if n := k.Name(); !strings.HasSuffix(n, ".signed") && !strings.Contains(n, ".signed.tmp") {
			names = append(names, n)
		}
	}
	return state{size: cp.Size, root: cp.Root, note: string(cp.Note), entries: len(es), logs: len(logs), keys: strings.Join(names, " ")}
}

// code returns the gRPC code of err.
func code(err error) codes.Code { return status.Code(err) }

// get fetches a URL path from the HTTP front end.
func (e *env) get(path string) (*http.Response, []byte) {
	e.t.Helper()
	return e.do(http.MethodGet, path, nil)
}

func (e *env) do(method, path string, body []byte) (*http.Response, []byte) {
	e.t.Helper()
	req, err := http.NewRequest(method, e.http.URL+path, bytes.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	resp, err := e.http.Client().Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatalf("%s %s: reading body: %v", method, path, err)
	}
	return resp, b
}

// recordProof converts proof hashes for golang.org/x/mod/sumdb/tlog.
func recordProof(t testing.TB, hashes [][]byte) sumdb.RecordProof {
	t.Helper()
	p := make(sumdb.RecordProof, len(hashes))
	for i, h := range hashes {
		if len(h) != sumdb.HashSize {
			t.Fatalf("proof hash %d has %d bytes", i, len(h))
		}
		p[i] = sumdb.Hash(h)
	}
	return p
}

func treeProof(t testing.TB, hashes [][]byte) sumdb.TreeProof {
	return sumdb.TreeProof(recordProof(t, hashes))
}

// checkRecord checks, with sumdb/tlog, that data is at index in the tree of
// the checkpoint c.
func checkRecord(t testing.TB, hashes [][]byte, c checkpoint.Checkpoint, index uint64, data []byte) {
	t.Helper()
	if err := sumdb.CheckRecord(recordProof(t, hashes), int64(c.Size), sumdb.Hash(c.Hash), int64(index), sumdb.RecordHash(data)); err != nil {
		t.Fatalf("inclusion proof of entry %d in tree %d: %v", index, c.Size, err)
	}
}
