package client_test

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"

	"github.com/tlog-dev/tlog/pkg/checkpoint"
	"github.com/tlog-dev/tlog/pkg/client"
	tlogv1 "github.com/tlog-dev/tlog/proto/tlog/v1"
	"github.com/tlog-dev/tlog/server"
	"github.com/tlog-dev/tlog/server/keyfile"
	"github.com/tlog-dev/tlog/server/sequencer"
	"github.com/tlog-dev/tlog/storage"
	"github.com/tlog-dev/tlog/storage/embedded"
)

const (
	logName   = "audit"
	logOrigin = "tlog.test/audit"
)

// testLog is a real tlog service on the embedded store, with one log, served
// over gRPC on bufconn.
type testLog struct {
	t      *testing.T
	store  storage.Store
	vkey   string
	signer note.Signer // the log's own key, to forge checkpoints with
	lis    *bufconn.Listener
	raw    tlogv1.LogServiceClient // without interceptors
	grown  atomic.Int64            // entries appended by growLog
}

// startLog starts the service with the log "audit", whose signing key the
// test writes itself (so that it can sign forged checkpoints), and stops it
// when the test ends.
func startLog(t *testing.T) *testLog {
	t.Helper()
	dir := t.TempDir()
	store, err := embedded.Open(filepath.Join(dir, "tlog.db"), embedded.Config{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })

	keyDir := filepath.Join(dir, "keys")
	skey, vkey, err := checkpoint.GenerateKey(logOrigin, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(keyDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyfile.Path(keyDir, logName), []byte(skey+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	signer, err := checkpoint.NewSigner(skey)
	if err != nil {
		t.Fatal(err)
	}

	ctx := context.Background()
	svc, err := server.New(ctx, server.Config{
		Store:             store,
		KeyDir:            keyDir,
		Sequencer:         sequencer.Config{MaxBatchAge: 2 * time.Millisecond},
		MaxEntriesPerRead: 7, // several GetEntries messages even for small logs
		Logger:            testLogger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	l, err := svc.CreateLog(ctx, logName, logOrigin)
	if err != nil {
		t.Fatal(err)
	}
	if l.VerifierKey != vkey {
		t.Fatalf("the log's key is %s, want the test's %s", l.VerifierKey, vkey)
	}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- svc.Run(runCtx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})

	lis := bufconn.Listen(1 << 20)
	gs := grpc.NewServer()
	server.RegisterGRPC(gs, svc)
	go gs.Serve(lis)
	t.Cleanup(gs.Stop)

	tl := &testLog{t: t, store: store, vkey: vkey, signer: signer, lis: lis}
	tl.raw = tlogv1.NewLogServiceClient(tl.conn())
	return tl
}

// conn returns a new connection to the service, with extra dial options
// (such as interceptors).
func (l *testLog) conn(opts ...grpc.DialOption) *grpc.ClientConn {
	l.t.Helper()
	opts = append([]grpc.DialOption{
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return l.lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
	}, opts...)
	conn, err := grpc.NewClient("passthrough:///bufconn", opts...)
	if err != nil {
		l.t.Fatal(err)
	}
	l.t.Cleanup(func() { conn.Close() })
	return conn
}

// client returns a client of the log with cfg (Conn, Log, VerifierKey and
// Logger filled in if unset), whose connection goes through the unary
// interceptors, closed when the test ends.
func (l *testLog) client(cfg client.Config, interceptors ...grpc.UnaryClientInterceptor) *client.Client {
	l.t.Helper()
	if cfg.Conn == nil {
		cfg.Conn = l.conn(grpc.WithChainUnaryInterceptor(interceptors...))
	}
	if cfg.Log == "" {
		cfg.Log = logName
	}
	if cfg.VerifierKey == "" {
		cfg.VerifierKey = l.vkey
	}
	if cfg.Logger == nil {
		cfg.Logger = testLogger(l.t)
	}
	c, err := client.New(cfg)
	if err != nil {
		l.t.Fatalf("client.New: %v", err)
	}
	l.t.Cleanup(func() { c.Close() })
	return c
}

// verifier returns the log's verifier.
func (l *testLog) verifier() note.Verifier {
	v, err := checkpoint.NewVerifier(l.vkey)
	if err != nil {
		l.t.Fatal(err)
	}
	return v
}

// verify verifies the whole stored log (every checkpoint against the
// entries) and returns its size. Every test that appends ends with it.
func (l *testLog) verify() uint64 {
	l.t.Helper()
	rep, err := storage.VerifyLog(context.Background(), l.store, logName, l.verifier())
	if err != nil {
		l.t.Fatalf("the log does not verify: %v", err)
	}
	return rep.Size
}

// size returns the size of the log's latest checkpoint, asked without the
// client.
func (l *testLog) size() uint64 {
	l.t.Helper()
	resp, err := l.raw.GetCheckpoint(context.Background(), &tlogv1.GetCheckpointRequest{Log: logName})
	if err != nil {
		l.t.Fatal(err)
	}
	return resp.GetTreeSize()
}

// latestNote returns the log's latest signed checkpoint, asked without the
// client.
func (l *testLog) latestNote() []byte {
	l.t.Helper()
	resp, err := l.raw.GetCheckpoint(context.Background(), &tlogv1.GetCheckpointRequest{Log: logName})
	if err != nil {
		l.t.Fatal(err)
	}
	return resp.GetCheckpoint()
}

// appendRaw appends entries without the client.
func (l *testLog) appendRaw(data ...string) {
	l.t.Helper()
	req := &tlogv1.AppendRequest{Log: logName}
	for _, d := range data {
		req.Entries = append(req.Entries, &tlogv1.AppendEntry{Data: []byte(d)})
	}
	if _, err := l.raw.Append(context.Background(), req); err != nil {
		l.t.Fatal(err)
	}
}

// sign signs a (possibly forged) checkpoint with the log's key.
func (l *testLog) sign(c checkpoint.Checkpoint) []byte {
	l.t.Helper()
	signed, err := checkpoint.Sign(c, l.signer)
	if err != nil {
		l.t.Fatal(err)
	}
	return signed
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

// testLogger routes logs to the test's output, warnings and errors only.
func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// calls counts the calls of each method, and records the entries of each
// Append request.
type calls struct {
	mu      sync.Mutex
	n       map[string]int
	batches []int
}

func (c *calls) interceptor() grpc.UnaryClientInterceptor {
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		c.mu.Lock()
		if c.n == nil {
			c.n = make(map[string]int)
		}
		c.n[method]++
		if r, ok := req.(*tlogv1.AppendRequest); ok {
			c.batches = append(c.batches, len(r.GetEntries()))
		}
		c.mu.Unlock()
		return invoker(ctx, method, req, reply, cc, opts...)
	}
}

func (c *calls) count(method string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[method]
}

func (c *calls) total() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, v := range c.n {
		n += v
	}
	return n
}

// onMethod returns an interceptor that runs f instead of the plain call for
// method; f gets the call to forward with.
func onMethod(method string, f func(ctx context.Context, req, reply any, call func() error) error) grpc.UnaryClientInterceptor {
	return func(ctx context.Context, m string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		if m != method {
			return invoker(ctx, m, req, reply, cc, opts...)
		}
		return f(ctx, req, reply, func() error { return invoker(ctx, m, req, reply, cc, opts...) })
	}
}

// once returns a function that reports true the first time only.
func once() func() bool {
	var done atomic.Bool
	return func() bool { return !done.Swap(true) }
}
