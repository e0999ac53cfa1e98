// Command tlogd runs the tlog service: a tamper-evident audit log with a
// gRPC API, a C2SP tlog-tiles HTTP API, and signed checkpoints.
//
// With no flags it keeps everything under ./tlog-data (an embedded
// single-file store and the signing keys), creates a log named "default" on
// first start, serves gRPC on 127.0.0.1:7600 and HTTP on 127.0.0.1:7601.
// --database-url switches storage to PostgreSQL; several tlogd processes may
// share one database: per log, one of them (elected by a PostgreSQL advisory
// lock) sequences it, the others forward appends to it (--forward, at the
// address it advertises with --advertise-addr) and serve reads themselves.
// A log whose stored state does not verify at start is stopped alone (its
// appends fail, /readyz answers 503 naming it); tlogd keeps serving the
// others. Every flag can also be set
// with an environment variable: --batch-max-age is TLOG_BATCH_MAX_AGE.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"

	"github.com/tlog-dev/tlog/server"
	"github.com/tlog-dev/tlog/server/sequencer"
	"github.com/tlog-dev/tlog/storage"
	"github.com/tlog-dev/tlog/storage/embedded"
	"github.com/tlog-dev/tlog/storage/postgres"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "fsck" {
		os.Exit(fsckMain(context.Background(), os.Args[2:], os.Stdout, os.Stderr))
	}
	if len(os.Args) > 1 && os.Args[1] == "token" {
		os.Exit(tokenMain(os.Args[2:], os.Stdout, os.Stderr))
	}
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "tlogd:", err)
		os.Exit(1)
	}
}

func run() error {
	tuneGC()
	fs := flag.NewFlagSet("tlogd", flag.ExitOnError)
	var (
		dataDir     = fs.String("data-dir", "tlog-data", "directory for the embedded store and, by default, the signing keys")
		keyDir      = fs.String("key-dir", "", "directory of the logs' signing keys (default <data-dir>/keys)")
		databaseURL = fs.String("database-url", "", "PostgreSQL URL; empty uses the embedded store in --data-dir")
		tileFileMiB = fs.Int64("tile-file-mib", 1024, "with --database-url: MiB of full hash tiles kept, once read, in an unlinked file in --data-dir\nand read from there instead of PostgreSQL (0: none)")
		grpcAddr    = fs.String("grpc-addr", "127.0.0.1:7600", "gRPC listen address")
		httpAddr    = fs.String("http-addr", "127.0.0.1:7601", "HTTP listen address")
		batchSize   = fs.Int("batch-max-size", 4096, "most entries integrated in one batch")
		batchAge    = fs.Duration("batch-max-age", 10*time.Millisecond, "longest an entry waits before its batch is integrated")
		maxPending  = fs.Int("max-pending", 0, "most entries waiting per log before appends are pushed back (default 16 * batch-max-size)")
		origin      = fs.String("origin", "", "origin of the default log, when it is first created (default "+server.DefaultOrigin("default")+")")
		logLevel    = fs.String("log-level", "info", "log level: debug, info, warn, error")
		logFormat   = fs.String("log-format", "text", "log format: text or json")
		metricsAddr = fs.String("metrics-addr", "", "listen address of the Prometheus /metrics endpoint (empty: none); keep it off the public network")
		pprofOn     = fs.Bool("pprof", false, "with --metrics-addr: also serve Go's CPU, heap and goroutine profiles there, at /debug/pprof/")
		advertise   = fs.String("advertise-addr", "", "gRPC address at which the other tlogd processes sharing the PostgreSQL database reach this one,\nto forward appends to it when it leads a log (default --grpc-addr, unless its host is a wildcard)")
		forward     = fs.Bool("forward", true, "forward appends for a log that another process leads to it (else answer UNAVAILABLE naming the leader)")
	)
	secFlags := defineSecurityFlags(fs)
	witFlags := defineWitnessFlags(fs)
	fs.Parse(os.Args[1:])
	if err := flagsFromEnv(fs); err != nil {
		return err
	}
	logger, err := newLogger(*logLevel, *logFormat)
	if err != nil {
		return err
	}
	if *keyDir == "" {
		*keyDir = filepath.Join(*dataDir, "keys")
	}

	ctx := context.Background()
	sec, err := secFlags.setup(ctx, logger)
	if err != nil {
		return err
	}
	witnessPolicy, err := witFlags.policy()
	if err != nil {
		return err
	}
	if *pprofOn && *metricsAddr == "" {
		return errors.New("--pprof needs --metrics-addr: profiles are served on its listener")
	}
	if *tileFileMiB < 0 {
		return fmt.Errorf("--tile-file-mib %d: want 0 or more", *tileFileMiB)
	}
	store, err := openStore(ctx, *databaseURL, *dataDir, *tileFileMiB<<20, logger)
	if err != nil {
		return err
	}
	defer store.Close()

	advertiseAddr, err := advertised(*advertise, *grpcAddr)
	if err != nil {
		return err
	}
	if advertiseAddr == "" && *databaseURL != "" {
		logger.Warn("no --advertise-addr and --grpc-addr listens on a wildcard: other tlogd processes cannot forward appends to this one when it leads a log", "grpc_addr", *grpcAddr)
	}
	svc, err := server.New(ctx, server.Config{
		Store:              store,
		AdvertiseAddr:      advertiseAddr,
		NoForwarding:       !*forward,
		ForwardDialOptions: sec.forwardDialOptions(),
		KeyDir:             *keyDir,
		Sequencer:          sequencer.Config{MaxBatchSize: *batchSize, MaxBatchAge: *batchAge, MaxPending: *maxPending},
		Limits:             secFlags.limits,
		WitnessPolicy:      witnessPolicy,
		Logger:             logger,
	})
	if err != nil {
		return err
	}
	if len(svc.ListLogs(ctx)) == 0 {
		l, err := svc.CreateLog(ctx, "default", *origin)
		if err != nil {
			return fmt.Errorf("creating the default log: %w", err)
		}
		fmt.Printf("Created log %q\n  origin:       %s\n  verifier key: %s\n  signing key:  %s (keep it safe; back it up)\n", l.Name, l.Origin, l.VerifierKey, filepath.Join(*keyDir, l.Name+".key"))
	}
	for _, l := range svc.ListLogs(ctx) {
		logger.Info("log", "name", l.Name, "origin", l.Origin, "verifier_key", l.VerifierKey, "size", l.Size)
	}

	grpcLis, err := net.Listen("tcp", *grpcAddr)
	if err != nil {
		return err
	}
	httpLis, err := net.Listen("tcp", *httpAddr)
	if err != nil {
		return err
	}
	sec.warnIfOpen(grpcLis.Addr(), httpLis.Addr())
	// Calls run on a pool of goroutines whose stacks have grown already: with
	// a new goroutine per call, growing its stack (runtime.morestack) took
	// ~15% of tlogd's CPU under many one-entry appends. Calls beyond the pool
	// get their own goroutine.
	gs := grpc.NewServer(append(sec.grpcOptions(), grpc.NumStreamWorkers(grpcWorkers))...)
	server.RegisterGRPC(gs, svc)
	hs := health.NewServer()
	healthpb.RegisterHealthServer(gs, hs)
	reflection.Register(gs)
	httpSrv := sec.httpServer(server.HTTPHandler(svc))

	// Catch signals before serving, so that a SIGTERM soon after start
	// still shuts down gracefully.
	sigc := make(chan os.Signal, 1)
	signal.Notify(sigc, syscall.SIGINT, syscall.SIGTERM)

	errc := make(chan error, 3)
	if *metricsAddr != "" {
		metricsSrv, err := serveMetrics(*metricsAddr, svc.MetricsHandler(), *pprofOn, errc)
		if err != nil {
			return err
		}
		defer metricsSrv.Close()
		logger.Info("serving metrics", "addr", "http://"+*metricsAddr+"/metrics", "pprof", *pprofOn)
	}
	seqCtx, stopSequencers := context.WithCancel(ctx)
	seqDone := make(chan error, 1)
	go func() { seqDone <- svc.Run(seqCtx) }()

	go func() { errc <- gs.Serve(grpcLis) }()
	go func() { errc <- sec.serveHTTP(httpSrv, httpLis) }()
	logger.Info("tlogd serving", "grpc", grpcLis.Addr().String(), "http", sec.httpScheme()+"://"+httpLis.Addr().String(), "storage", storageName(*databaseURL, *dataDir))

	var serveErr error
	select {
	case sig := <-sigc:
		logger.Info("shutting down", "signal", sig.String())
	case serveErr = <-errc:
		logger.Error("server failed", "err", serveErr)
	}

	// Stop accepting. Flush the sequencers at once, so that what is pooled
	// commits now rather than when its batch falls due (possibly after the
	// shutdown timeout, which would fail appends that then commit); appends
	// that reach a sequencer from now on fail with UNAVAILABLE (HTTP 503),
	// safe to retry. Then let the requests in flight finish.
	hs.Shutdown()
	stopSequencers()
	shutdownCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	stopped := make(chan struct{})
	go func() { gs.GracefulStop(); close(stopped) }()
	if err := httpSrv.Shutdown(shutdownCtx); err != nil {
		logger.Warn("HTTP shutdown", "err", err)
	}
	select {
	case <-stopped:
	case <-shutdownCtx.Done():
		gs.Stop()
	}
	<-seqDone
	logger.Info("stopped")
	return serveErr
}

func openStore(ctx context.Context, url, dataDir string, tileFileBytes int64, logger *slog.Logger) (storage.Store, error) {
	if url != "" {
		if tileFileBytes > 0 {
			// The tile file is a cache: postgres.Open warns and goes on
			// without it if the directory is not there or not writable.
			os.MkdirAll(dataDir, 0o700)
		}
		s, err := postgres.Open(ctx, url, postgres.Config{Logger: logger, TileFileDir: dataDir, TileFileBytes: tileFileBytes})
		if err != nil {
			return nil, fmt.Errorf("opening PostgreSQL: %w", redactDB(err, url))
		}
		return s, nil
	}
	s, err := embedded.Open(filepath.Join(dataDir, "tlog.db"), embedded.Config{Logger: logger})
	if err != nil {
		return nil, err
	}
	return s, nil
}

// advertised returns the address to advertise: flag, else the gRPC listen
// address if its host is not a wildcard, else "".
func advertised(flag, grpcAddr string) (string, error) {
	if flag != "" {
		if _, _, err := net.SplitHostPort(flag); err != nil {
			return "", fmt.Errorf("--advertise-addr: %w", err)
		}
		return flag, nil
	}
	host, port, err := net.SplitHostPort(grpcAddr)
	if err != nil || port == "0" {
		return "", nil
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		return "", nil
	}
	return grpcAddr, nil
}

func storageName(url, dataDir string) string {
	if url != "" {
		return "postgres"
	}
	return filepath.Join(dataDir, "tlog.db")
}

// flagsFromEnv sets every flag not given on the command line from its
// TLOG_* environment variable.
func flagsFromEnv(fs *flag.FlagSet) error {
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		env := "TLOG_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v, ok := os.LookupEnv(env); ok && !set[f.Name] && err == nil {
			if e := fs.Set(f.Name, v); e != nil {
				err = fmt.Errorf("%s=%q: %w", env, v, e)
			}
		}
	})
	return err
}

func newLogger(level, format string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	opts := &slog.HandlerOptions{Level: l}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(os.Stderr, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(os.Stderr, opts)), nil
	}
	return nil, errors.New("--log-format must be text or json")
}
