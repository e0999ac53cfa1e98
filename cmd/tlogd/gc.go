package main

import (
	"os"
	"runtime/debug"
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
