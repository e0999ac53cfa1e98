package server_test

// The harness of the access-control tests: a service with the logs A and
// B, served over real gRPC and HTTP on loopback (optionally over TLS)
// behind server.AccessControl, with its logs captured so that every test
// ends by scanning them for secrets.

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"

	"github.com/tlog-dev/tlog/pkg/checkpoint"
	tlogv1 "github.com/tlog-dev/tlog/proto/tlog/v1"
	"github.com/tlog-dev/tlog/server"
	"github.com/tlog-dev/tlog/server/auth"
	"github.com/tlog-dev/tlog/server/sequencer"
	"github.com/tlog-dev/tlog/storage"
	"github.com/tlog-dev/tlog/storage/embedded"
)

// accBuffer is a bytes.Buffer safe for concurrent use.
type accBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *accBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *accBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// accOptions configure an accEnv.
type accOptions struct {
	// callers maps caller names to their grants; each gets a token (or,
	// with a grant list starting with "-", a certificate-only line).
	callers     map[string][]string
	publicReads bool
	limits      server.Limits
	tls         *auth.TLSConfig
}

// accEnv is one service behind access control.
type accEnv struct {
	t        *testing.T
	store    storage.Store
	svc      *server.Service
	keyDir   string
	grpcAddr string
	httpURL  string
	tokens   map[string]string // caller name -> token
	logs     *accBuffer        // everything the service and access control logged, at level Debug
	secrets  []string          // must never appear in logs or errors

	conn  *grpc.ClientConn // plaintext; nil over TLS
	log   tlogv1.LogServiceClient
	admin tlogv1.AdminServiceClient
	http  *http.Client
}

func startAccess(t *testing.T, o accOptions) *accEnv {
	t.Helper()
	dir := t.TempDir()
	e := &accEnv{t: t, keyDir: filepath.Join(dir, "keys"), tokens: map[string]string{}, logs: &accBuffer{}}
	logger := slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("service logs:\n%s", e.logs.String())
		}
	})

	var authz *auth.Authorizer
	if o.callers != nil {
		var lines []string
		for name, grants := range o.callers {
			if len(grants) > 0 && grants[0] == "-" {
				lines = append(lines, name+" - "+strings.Join(grants[1:], " "))
				continue
			}
			tok := auth.NewToken()
			e.tokens[name] = tok
			e.secrets = append(e.secrets, tok)
			var gs []auth.Grant
			for _, g := range grants {
				pg, err := auth.ParseGrant(g)
				if err != nil {
					t.Fatal(err)
				}
				gs = append(gs, pg)
			}
			lines = append(lines, auth.TokenLine(name, tok, gs))
		}
		path := filepath.Join(dir, "tokens")
		if err := os.WriteFile(path, []byte("# test tokens\n"+strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		var err error
		if authz, err = auth.New(auth.Config{TokensFile: path, PublicReads: o.publicReads, Logger: logger}); err != nil {
			t.Fatal(err)
		}
	}

	store, err := embedded.Open(filepath.Join(dir, "tlog.db"), embedded.Config{Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	e.store = store
	ctx := context.Background()
	svc, err := server.New(ctx, server.Config{
		Store:     store,
		KeyDir:    e.keyDir,
		Sequencer: sequencer.Config{MaxBatchAge: 2 * time.Millisecond},
		Limits:    o.limits,
		Logger:    logger,
	})
	if err != nil {
		t.Fatalf("server.New: %v", err)
	}
	e.svc = svc
	for _, name := range []string{"A", "B"} {
		if _, err := svc.CreateLog(ctx, name, ""); err != nil {
			t.Fatal(err)
		}
	}
	runCtx, cancel := context.WithCancel(ctx)
	runDone := make(chan error, 1)
	go func() { runDone <- svc.Run(runCtx) }()
	t.Cleanup(func() {
		cancel()
		<-runDone
		e.checkSecrets()
	})

	ac := &server.AccessControl{Authorizer: authz, Logger: logger}
	var st *auth.ServerTLS
	if o.tls != nil {
		if st, err = auth.NewServerTLS(*o.tls); err != nil {
			t.Fatal(err)
		}
	}

	opts := append(ac.ServerOptions(), o.limits.GRPCServerOptions()...)
	if st != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(st.Config())))
	}
	gs := grpc.NewServer(opts...)
	server.RegisterGRPC(gs, svc)
	healthpb.RegisterHealthServer(gs, health.NewServer())
	gl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go gs.Serve(gl)
	t.Cleanup(gs.Stop)
	e.grpcAddr = gl.Addr().String()

	hs := &http.Server{Handler: ac.Handler(server.HTTPHandler(svc)), ErrorLog: slog.NewLogLogger(logger.Handler(), slog.LevelDebug)}
	hl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if st != nil {
		hs.TLSConfig = st.Config()
		go hs.ServeTLS(hl, "", "")
		e.httpURL = "https://" + hl.Addr().String()
	} else {
		go hs.Serve(hl)
		e.httpURL = "http://" + hl.Addr().String()
		e.http = &http.Client{Timeout: 10 * time.Second}
		e.conn = e.dial(grpc.WithTransportCredentials(insecure.NewCredentials()))
		e.log = tlogv1.NewLogServiceClient(e.conn)
		e.admin = tlogv1.NewAdminServiceClient(e.conn)
	}
	t.Cleanup(func() { hs.Close() })

	// The signing keys are secrets too.
	for _, name := range []string{"A", "B"} {
		b, err := os.ReadFile(filepath.Join(e.keyDir, name+".key"))
		if err != nil {
			t.Fatal(err)
		}
		skey := strings.TrimSpace(string(b))
		// PRIVATE+KEY+<name>+<hash>+<base64 key>; base64 may hold '+'.
		f := strings.SplitN(skey, "+", 5)
		if len(f) != 5 || f[4] == "" {
			t.Fatalf("key file of %s is not a note signing key", name)
		}
		e.secrets = append(e.secrets, skey, f[4])
	}
	return e
}

// dial connects to the gRPC server; the connection closes when the test
// ends.
func (e *accEnv) dial(opts ...grpc.DialOption) *grpc.ClientConn {
	e.t.Helper()
	conn, err := grpc.NewClient(e.grpcAddr, opts...)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { conn.Close() })
	return conn
}

// checkSecrets fails the test if a token or signing key appears in what the
// service logged.
func (e *accEnv) checkSecrets() {
	logs := e.logs.String()
	for _, s := range e.secrets {
		if s == "" {
			e.t.Error("an empty secret")
		}
		if strings.Contains(logs, s) {
			e.t.Errorf("a secret (%.8s...) appears in the service's logs", s)
		}
	}
}

// checkErr fails the test if err's message holds a secret.
func (e *accEnv) checkErr(err error) {
	e.t.Helper()
	if err == nil {
		return
	}
	for _, s := range e.secrets {
		if strings.Contains(err.Error(), s) {
			e.t.Errorf("a secret (%.8s...) appears in the error %q", s, err)
		}
	}
}

// withToken returns ctx sending the caller's token (none for "").
func (e *accEnv) withToken(ctx context.Context, caller string) context.Context {
	if caller == "" {
		return ctx
	}
	tok, ok := e.tokens[caller]
	if !ok {
		e.t.Fatalf("no token for %q", caller)
	}
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+tok)
}

// httpDo sends an HTTP request with the given Authorization (none for "")
// and returns the response with its body read.
func (e *accEnv) httpDo(client *http.Client, method, path, authorization string, body []byte) (*http.Response, string) {
	e.t.Helper()
	req, err := http.NewRequest(method, e.httpURL+path, bytes.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	if authorization != "" {
		req.Header.Set("Authorization", authorization)
	}
	resp, err := client.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	for _, s := range e.secrets {
		if strings.Contains(string(b), s) {
			e.t.Errorf("%s %s: a secret (%.8s...) appears in the response", method, path, s)
		}
	}
	return resp, string(b)
}

// size returns a log's size as the service sees it.
func (e *accEnv) size(log string) uint64 {
	e.t.Helper()
	l, err := e.svc.GetLog(context.Background(), log)
	if err != nil {
		e.t.Fatal(err)
	}
	return l.Size
}

// verify verifies the whole stored log and returns its size; tests that
// write end with it.
func (e *accEnv) verify(log string) uint64 {
	e.t.Helper()
	l, err := e.svc.GetLog(context.Background(), log)
	if err != nil {
		e.t.Fatal(err)
	}
	v, err := checkpoint.NewVerifier(l.VerifierKey)
	if err != nil {
		e.t.Fatal(err)
	}
	rep, err := storage.VerifyLog(context.Background(), e.store, log, v)
	if err != nil {
		e.t.Fatalf("log %q does not verify: %v", log, err)
	}
	return rep.Size
}

// seed appends n entries to a log, past access control.
func (e *accEnv) seed(log string, n int) {
	e.t.Helper()
	for i := range n {
		if _, err := e.svc.Append(context.Background(), log, []sequencer.Entry{{Data: fmt.Appendf(nil, "seed %s %d", log, i)}}); err != nil {
			e.t.Fatal(err)
		}
	}
}

// tlsClient returns an HTTP client over TLS with cfg.
func tlsClient(cfg *tls.Config) *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg}}
}
