package main

import (
	"context"
	"encoding/json"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"

	"github.com/tlog-dev/tlog/pkg/client"
	"github.com/tlog-dev/tlog/server"
	"github.com/tlog-dev/tlog/server/sequencer"
	"github.com/tlog-dev/tlog/storage/embedded"
)

// TestMiddleware serves requests through the middleware, with a real tlog
// service behind the client, and reads the recorded events back.
func TestMiddleware(t *testing.T) {
	logger := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
	dir := t.TempDir()
	store, err := embedded.Open(filepath.Join(dir, "tlog.db"), embedded.Config{Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	ctx := context.Background()
	svc, err := server.New(ctx, server.Config{Store: store, KeyDir: filepath.Join(dir, "keys"), Sequencer: sequencer.Config{MaxBatchAge: 2 * time.Millisecond}, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	l, err := svc.CreateLog(ctx, "audit", "")
	if err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error)
	go func() { done <- svc.Run(runCtx) }()
	defer func() { cancel(); <-done }()
	lis := bufconn.Listen(1 << 20)
	gs := grpc.NewServer()
	server.RegisterGRPC(gs, svc)
	go gs.Serve(lis)
	defer gs.Stop()
	conn, err := grpc.NewClient("passthrough:///bufconn",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c, err := client.New(client.Config{Conn: conn, Log: "audit", VerifierKey: l.VerifierKey, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	rec := NewRecorder(c, logger, RecorderConfig{})
	mux := http.NewServeMux()
	mux.HandleFunc("/ok", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	mux.HandleFunc("/teapot", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusTeapot) })
	mux.HandleFunc("/panic", func(w http.ResponseWriter, r *http.Request) { panic("boom") })
	hs := httptest.NewUnstartedServer(rec.Middleware(mux))
	hs.Config.ErrorLog = log.New(io.Discard, "", 0) // the panic's stack trace
	hs.Start()

	want := map[string]int{"/ok": 200, "/teapot": 418, "/panic": 500, "/missing": 404}
	for path := range want {
		req, _ := http.NewRequest(http.MethodGet, hs.URL+path, nil)
		req.Header.Set("X-Authenticated-User", "alice")
		resp, err := hs.Client().Do(req)
		if err == nil {
			resp.Body.Close()
		}
	}
	hs.Close()
	rec.Close()

	got := map[string]int{}
	for e, err := range c.Entries(ctx, 0, 100) {
		if err != nil {
			t.Fatal(err)
		}
		var ev Event
		if err := json.Unmarshal(e.Data, &ev); err != nil {
			t.Fatal(err)
		}
		if ev.User != "alice" || ev.Method != http.MethodGet || ev.RemoteAddr == "" || ev.Time.IsZero() {
			t.Errorf("event %d: %s", e.Index, e.Data)
		}
		got[ev.Path] = ev.Status
	}
	if len(got) != len(want) {
		t.Errorf("recorded %v, want %v", got, want)
	}
	for path, status := range want {
		if got[path] != status {
			t.Errorf("%s: recorded status %d, want %d", path, got[path], status)
		}
	}
}
