package main

import (
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
)

// TestServeMetricsPprof checks that the metrics listener serves Go's
// profiles with --pprof and only then.
func TestServeMetricsPprof(t *testing.T) {
	metrics := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "tlog_up 1\n") })
	for _, withPprof := range []bool{false, true} {
		addr := freeAddr(t)
		errc := make(chan error, 1)
		srv, err := serveMetrics(addr, metrics, withPprof, errc)
		if err != nil {
			t.Fatal(err)
		}
		get := func(path string) (int, string) {
			t.Helper()
			resp, err := http.Get("http://" + addr + path)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			return resp.StatusCode, string(body)
		}
		if code, body := get("/metrics"); code != http.StatusOK || body != "tlog_up 1\n" {
			t.Errorf("pprof %v: /metrics: %d %q", withPprof, code, body)
		}
		wantCode := http.StatusNotFound
		if withPprof {
			wantCode = http.StatusOK
		}
		for _, path := range []string{"/debug/pprof/", "/debug/pprof/goroutine?debug=1", "/debug/pprof/cmdline"} {
			code, body := get(path)
			if code != wantCode {
				t.Errorf("pprof %v: %s: status %d, want %d", withPprof, path, code, wantCode)
			}
			if withPprof && path == "/debug/pprof/goroutine?debug=1" && !strings.Contains(body, "goroutine profile:") {
				t.Errorf("%s: not a goroutine profile: %.200q", path, body)
			}
		}
		srv.Close()
		select {
		case err := <-errc:
			t.Errorf("pprof %v: serving failed: %v", withPprof, err)
		default:
		}
	}
}

// TestPprofNeedsMetricsAddr checks that --pprof alone is refused before
// anything is opened.
func TestPprofNeedsMetricsAddr(t *testing.T) {
	dir := t.TempDir()
	_, stderr, code := secRun(t, nil, binary(t), "--pprof", "--data-dir", dir, "--grpc-addr", freeAddr(t), "--http-addr", freeAddr(t))
	if code == 0 || !strings.Contains(stderr, "--pprof needs --metrics-addr") {
		t.Fatalf("tlogd --pprof: exit %d, stderr %q", code, stderr)
	}
	// Nothing was created: the flag was refused before the store opened.
	if entries, err := os.ReadDir(dir); err != nil || len(entries) != 0 {
		t.Errorf("data dir after a refused start: %v %v", entries, err)
	}
}
