// Command tlog-bench is a load generator for tlogd.
//
// Modes:
//
//	grpc         Append over gRPC, --batch entries per request, --concurrency callers
//	grpc-single  Append over gRPC, one entry per request (many app servers each logging an event)
//	http-add     POST /logs/{log}/add, one entry per request
//	proofs       GetInclusionProof over gRPC for random entries
//	tiles        GET random tlog-tiles tiles and entry bundles over HTTP
//
// Entries are --size random bytes, fresh for every request, so none is a
// duplicate. By default every caller sends its next request when the previous
// one is answered (closed loop). With --rate, requests are sent on a fixed
// schedule (entries/s for writes, operations/s for reads) and latency is
// measured from each request's scheduled time, so a slow server shows as
// latency rather than as a silently lower load (coordinated omission).
//
// The report gives throughput (for writes both acknowledged entries/s and the
// tree's growth per second), latency percentiles, errors by kind, tree sizes,
// and client CPU (and server CPU with --server-pid, all and in the kernel):
// a table, or one JSON object with --json. A progress line goes to stderr
// once a second.
//
// --baseline-copy DATABASE_URL then measures, for the same duration, how fast
// that PostgreSQL ingests rows shaped like tlog's entries by plain COPY in
// transactions of --batch rows with durable commits, and reports tlog's
// throughput as a fraction of it: the figure to compare across machines.
//
// Example:
//
//	tlog-bench --mode grpc-single --concurrency 1024 --duration 10s
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
	"time"
)

type config struct {
	mode               string
	grpcAddr, httpAddr string
	log                string
	duration, warmup   time.Duration
	size               int
	concurrency        int
	batch              int
	rate               float64
	json               bool
	timeout            time.Duration
	serverPID          int
	prefill            uint64
	baselineURL        string
	baselineDuration   time.Duration
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "tlog-bench:", err)
		os.Exit(1)
	}
}

func parseFlags(args []string) (config, error) {
	var c config
	fs := flag.NewFlagSet("tlog-bench", flag.ContinueOnError)
	fs.StringVar(&c.mode, "mode", "grpc", "workload: grpc, grpc-single, http-add, proofs or tiles")
	fs.StringVar(&c.grpcAddr, "grpc-addr", "127.0.0.1:7600", "tlogd gRPC address")
	fs.StringVar(&c.httpAddr, "http-addr", "127.0.0.1:7601", "tlogd HTTP address")
	fs.StringVar(&c.log, "log", "default", "name of the log")
	fs.DurationVar(&c.duration, "duration", 10*time.Second, "length of the measured window")
	fs.DurationVar(&c.warmup, "warmup", 2*time.Second, "load before the measured window, not measured")
	fs.IntVar(&c.size, "size", 256, "bytes per entry")
	fs.IntVar(&c.concurrency, "concurrency", 64, "concurrent callers (one gRPC connection per 32)")
	fs.IntVar(&c.batch, "batch", 1000, "entries per Append request in grpc mode; rows per transaction of --baseline-copy")
	fs.Float64Var(&c.rate, "rate", 0, "open-loop target: entries/s for writes, operations/s for reads (0: closed loop)")
	fs.BoolVar(&c.json, "json", false, "print the report as one JSON object")
	fs.DurationVar(&c.timeout, "timeout", 30*time.Second, "per-request timeout")
	fs.IntVar(&c.serverPID, "server-pid", 0, "tlogd's process id, to report its CPU use (Linux)")
	fs.Uint64Var(&c.prefill, "prefill", 0, "before starting, append over gRPC until the log has this many entries")
	fs.StringVar(&c.baselineURL, "baseline-copy", "", "PostgreSQL URL: also measure plain COPY of the same rows there, and report the ratio")
	fs.DurationVar(&c.baselineDuration, "baseline-duration", 0, "measured window of --baseline-copy (default --duration)")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: tlog-bench [flags]\n\n"+
			"Load generator for tlogd. Modes: grpc (batched Append), grpc-single (one entry per Append),\n"+
			"http-add (POST /logs/{log}/add), proofs (random inclusion proofs), tiles (random tile reads).\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	switch c.mode {
	case "grpc", "grpc-single", "http-add", "proofs", "tiles":
	default:
		return c, fmt.Errorf("--mode %q: want grpc, grpc-single, http-add, proofs or tiles", c.mode)
	}
	switch {
	case c.duration <= 0:
		return c, errors.New("--duration must be positive")
	case c.warmup < 0:
		return c, errors.New("--warmup must not be negative")
	case c.size < 1 || c.size > 65535:
		return c, errors.New("--size must be 1..65535")
	case c.concurrency < 1:
		return c, errors.New("--concurrency must be at least 1")
	case c.batch < 1:
		return c, errors.New("--batch must be at least 1")
	case c.rate < 0:
		return c, errors.New("--rate must not be negative")
	}
	if c.baselineDuration <= 0 {
		c.baselineDuration = c.duration
	}
	return c, nil
}

// perRequest is the number of units one request carries.
func (c config) perRequest() int {
	if c.mode == "grpc" {
		return c.batch
	}
	return 1
}

func (c config) writes() bool {
	return c.mode == "grpc" || c.mode == "grpc-single" || c.mode == "http-add"
}

// tuneGC makes the garbage collector run a quarter as often as by default,
// unless GOGC is set: a load generator should leave the machine to the
// server it measures. Its live heap is small (the requests in flight), so
// this costs a few MiB and saves a tenth of its CPU (grpc-single with 1,024
// callers: 0.97 -> 0.87 cores).
func tuneGC() {
	if _, ok := os.LookupEnv("GOGC"); !ok {
		debug.SetGCPercent(400)
	}
}

func run() error {
	tuneGC()
	cfg, err := parseFlags(os.Args[1:])
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	pw := &progressWriter{w: os.Stderr}
	if fi, err := os.Stderr.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
		pw.terminal = true
	}
	defer pw.done()

	if cfg.prefill > 0 {
		if err := prefill(ctx, cfg, cfg.prefill, pw.line); err != nil {
			return err
		}
		pw.done()
	}
	res, err := bench(ctx, cfg, pw.line)
	pw.done()
	if err != nil {
		if ctx.Err() != nil {
			return errors.New("interrupted")
		}
		return err
	}
	if cfg.baselineURL != "" && cfg.writes() {
		b, err := runBaseline(ctx, cfg.baselineURL, baselineConnections(cfg.concurrency), cfg.batch, cfg.size,
			min(cfg.warmup, time.Second), cfg.baselineDuration, pw.line)
		pw.done()
		if err != nil {
			return err
		}
		if b.RowsPerSec > 0 {
			b.Ratio = math.Round(*res.EntriesPerSec/b.RowsPerSec*1000) / 1000
		}
		res.Baseline = b
	}
	if cfg.json {
		return writeJSON(os.Stdout, res)
	}
	return writeTable(os.Stdout, res)
}

// bench runs the workload of cfg against the server and returns its report.
func bench(ctx context.Context, cfg config, progress func(string)) (*result, error) {
	c, err := newClient(cfg)
	if err != nil {
		return nil, err
	}
	defer c.close()
	size, err := c.treeSize(ctx)
	if err != nil {
		return nil, fmt.Errorf("reading log %q: %w", cfg.log, err)
	}

	r := &runner{
		Name:        cfg.mode,
		Concurrency: cfg.concurrency,
		Warmup:      cfg.warmup,
		Duration:    cfg.duration,
		Timeout:     cfg.timeout,
		Backoff:     50 * time.Millisecond,
		Progress:    progress,
	}
	if cfg.rate > 0 {
		r.Rate = cfg.rate / float64(cfg.perRequest())
	}
	switch cfg.mode {
	case "grpc", "grpc-single":
		r.Op, r.Unit = c.appendOp(cfg.perRequest()), "entries"
	case "http-add":
		r.Op, r.Unit = c.httpAddOp(), "entries"
	case "proofs", "tiles":
		if size == 0 {
			return nil, fmt.Errorf("log %q is empty: fill it first (--prefill N, or a run of --mode grpc)", cfg.log)
		}
		if cfg.mode == "proofs" {
			r.Op, r.Unit = c.proofOp(size), "proofs"
		} else {
			r.Op, r.Unit = c.tileOp(size), "reads"
		}
	}

	// Snapshots at the window's edges. A failed tree size read leaves the
	// size at 0 and fails the run: the integrated rate would be wrong.
	var (
		sizeStart, sizeEnd uint64
		sizeErr            error
		cpuStart, cpuEnd   time.Duration
		srvStart, srvEnd   procTimes
		srvErr             error
		wallStart, wallEnd time.Time
		snapshot           = func(size *uint64, cpu *time.Duration, srv *procTimes, wall *time.Time) {
			*wall, *cpu = time.Now(), cpuTime()
			if cfg.serverPID > 0 {
				var err error
				if *srv, err = processCPUTime(cfg.serverPID); err != nil && srvErr == nil {
					srvErr = err
				}
			}
			var err error
			if *size, err = c.treeSize(ctx); err != nil && sizeErr == nil {
				sizeErr = err
			}
		}
	)
	r.AtStart = func() { snapshot(&sizeStart, &cpuStart, &srvStart, &wallStart) }
	r.AtEnd = func() { snapshot(&sizeEnd, &cpuEnd, &srvEnd, &wallEnd) }
	if err := r.run(ctx); err != nil {
		return nil, err
	}
	if sizeErr != nil {
		return nil, fmt.Errorf("reading the tree size: %w", sizeErr)
	}

	secs := cfg.duration.Seconds()
	kinds, total := r.errs.snapshot()
	res := &result{
		Mode:           cfg.mode,
		Log:            cfg.log,
		Server:         cfg.grpcAddr,
		DurationSec:    secs,
		WarmupSec:      cfg.warmup.Seconds(),
		Concurrency:    cfg.concurrency,
		Batch:          cfg.perRequest(),
		Rate:           cfg.rate,
		Requests:       r.ops.Load(),
		RequestsPerSec: round1(float64(r.ops.Load()) / secs),
		LatencyMs:      latencyOf(&r.hist),
		Errors:         total,
		ErrorsByKind:   kinds,
		Missed:         r.missed,
		TreeSizeStart:  sizeStart,
		TreeSizeEnd:    sizeEnd,
	}
	if c.useHTTP {
		res.Server = cfg.httpAddr
	}
	units := round1(float64(r.units.Load()) / secs)
	switch cfg.mode {
	case "proofs":
		res.ProofsPerSec = ptr(units)
	case "tiles":
		res.ReadsPerSec = ptr(units)
	default:
		res.Size = cfg.size
		res.EntriesPerSec = ptr(units)
		res.IntegratedPerSec = ptr(round1(float64(sizeEnd-min(sizeStart, sizeEnd)) / secs))
	}
	if wall := wallEnd.Sub(wallStart).Seconds(); wall > 0 {
		res.ClientCPU = round2((cpuEnd - cpuStart).Seconds() / wall)
		if cfg.serverPID > 0 && srvErr == nil {
			res.ServerCPU = ptr(round2((srvEnd.total() - srvStart.total()).Seconds() / wall))
			res.ServerKernelCPU = ptr(round2((srvEnd.system - srvStart.system).Seconds() / wall))
		}
	}
	if srvErr != nil {
		fmt.Fprintf(os.Stderr, "tlog-bench: --server-pid %d: %v\n", cfg.serverPID, srvErr)
	}
	return res, nil
}

func round1(f float64) float64 { return math.Round(f*10) / 10 }

func round2(f float64) float64 { return math.Round(f*100) / 100 }
