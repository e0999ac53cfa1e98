package main

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"runtime/debug"
	"time"
)

// tuneGC sets the garbage collector for a server whose heap is mostly
// short-lived request buffers around a small live set (caches, pools): a
// GOGC of 400 with a soft limit of 256 MiB halves GC work under load
// (measured: grpc-single on PostgreSQL, 17k -> 23k entries/s) while keeping
// memory bounded. GOGC and GOMEMLIMIT in the environment take precedence.
func tuneGC() {
	if _, ok := os.LookupEnv("GOGC"); !ok {
		debug.SetGCPercent(400)
	}
	if _, ok := os.LookupEnv("GOMEMLIMIT"); !ok {
		debug.SetMemoryLimit(256 << 20)
	}
}

// serveMetrics serves h at /metrics on its own listener; its failure is
// sent to errc.
func serveMetrics(addr string, h http.Handler, errc chan<- error) (*http.Server, error) {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--metrics-addr: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", h)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := srv.Serve(lis); err != http.ErrServerClosed {
			errc <- err
		}
	}()
	return srv, nil
}
