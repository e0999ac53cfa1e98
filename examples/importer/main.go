// Command importer is an example of the tlog Go client: it appends the
// records read from standard input to a tlog log, in batches, prints its
// progress, and ends with the log's verified checkpoint.
//
// The input is JSON lines (one JSON value per line; blank lines are
// skipped), or CSV with a header row, each row becoming a JSON object keyed
// by the header. Every record is appended compacted, as one entry.
//
// Each record's idempotency key is "<source>:<record number>", so importing
// the same input again under the same --source appends nothing twice: the
// records already in the log come back as duplicates. Records are appended
// concurrently, so their order in the log may differ from the input's; with
// --print, one line per record maps its number to its index:
//
//	RECORD <TAB> INDEX <TAB> new|duplicate
//
// Run a tlogd, then:
//
//	go run ./examples/importer --vkey "$(cat default.vkey)" --source events-2025-01 < events.jsonl
//	go run ./examples/importer --vkey "$(cat default.vkey)" --format csv --source users < users.csv
//
// The exit code is 1 if any record was not appended (each is reported), 2
// for bad usage.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/tlog-dev/tlog/pkg/client"
)

// record is one input record, numbered from 1.
type record struct {
	n    int
	data []byte
}

func main() {
	var o options
	flag.StringVar(&o.addr, "addr", "127.0.0.1:7600", "gRPC address of the tlog server")
	flag.StringVar(&o.log, "log", "default", "name of the log")
	flag.StringVar(&o.vkey, "vkey", "", "the log's verifier key (required)")
	flag.StringVar(&o.state, "state", "", "file that keeps the trusted checkpoint between runs (optional)")
	flag.StringVar(&o.format, "format", "jsonl", "input format: jsonl or csv")
	flag.StringVar(&o.source, "source", "stdin", "name of the input, part of each record's idempotency key")
	flag.IntVar(&o.workers, "workers", 2048, "concurrent appends (the client batches them into few RPCs)")
	flag.DurationVar(&o.progress, "progress", time.Second, "interval between progress lines")
	flag.BoolVar(&o.print, "print", false, "print the index of each record")
	flag.Parse()
	if o.vkey == "" || (o.format != "jsonl" && o.format != "csv") || o.workers < 1 || flag.NArg() > 0 {
		fmt.Fprintln(os.Stderr, "importer: --vkey is required, --format is jsonl or csv, --workers at least 1, no arguments")
		os.Exit(2)
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, o, os.Stdin, os.Stdout, os.Stderr, logger); err != nil {
		fmt.Fprintf(os.Stderr, "importer: %v\n", err)
		os.Exit(1)
	}
}

type options struct {
	addr, log, vkey, state, format, source string
	workers                                int
	progress                               time.Duration
	print                                  bool
}

// counts are the outcomes so far.
type counts struct {
	added, duplicates, failed atomic.Int64
}

func run(ctx context.Context, o options, stdin io.Reader, stdout, stderr io.Writer, logger *slog.Logger) error {
	conn, err := grpc.NewClient(o.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	cfg := client.Config{Conn: conn, Log: o.log, VerifierKey: o.vkey, Logger: logger}
	if o.state != "" {
		cfg.TrustedState = client.FileStore(o.state)
	}
	c, err := client.New(cfg)
	if err != nil {
		return err
	}
	defer c.Close()

	records := make(chan record, o.workers)
	readErr := make(chan error, 1)
	go func() {
		defer close(records)
		readErr <- read(ctx, o.format, stdin, records)
	}()

	var n counts
	var out sync.Mutex // serializes the lines of stdout and stderr
	var wg sync.WaitGroup
	for range o.workers {
		wg.Go(func() {
			for r := range records {
				res, err := c.Append(ctx, r.data, client.WithIdempotencyKey(fmt.Sprintf("%s:%d", o.source, r.n)))
				out.Lock()
				switch {
				case err != nil:
					n.failed.Add(1)
					fmt.Fprintf(stderr, "importer: record %d not appended: %v\n", r.n, err)
				case res.Duplicate:
					n.duplicates.Add(1)
				default:
					n.added.Add(1)
				}
				if err == nil && o.print {
					state := "new"
					if res.Duplicate {
						state = "duplicate"
					}
					fmt.Fprintf(stdout, "%d\t%d\t%s\n", r.n, res.Index, state)
				}
				out.Unlock()
			}
		})
	}

	start := time.Now()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	tick := time.NewTicker(o.progress)
	defer tick.Stop()
	report := func(what string) {
		a, d, f := n.added.Load(), n.duplicates.Load(), n.failed.Load()
		rate := float64(a+d+f) / time.Since(start).Seconds()
		out.Lock()
		fmt.Fprintf(stderr, "importer: %s: %d new, %d duplicate, %d failed (%.0f records/s)\n", what, a, d, f, rate)
		out.Unlock()
	}
wait:
	for {
		select {
		case <-tick.C:
			report("progress")
		case <-done:
			break wait
		}
	}
	report("done")
	if err := <-readErr; err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}

	// The log's checkpoint now, verified against the trusted state.
	vc, err := c.Checkpoint(ctx)
	if err != nil {
		return fmt.Errorf("verifying the log's checkpoint: %w", err)
	}
	fmt.Fprintf(stderr, "importer: the log has %d entries; its verified checkpoint:\n", vc.Size)
	if _, err := stdout.Write(vc.Note); err != nil {
		return err
	}
	if f := n.failed.Load(); f > 0 {
		return fmt.Errorf("%d records were not appended (see above); importing again with the same --source appends only those", f)
	}
	return nil
}

// read sends the records of in to records until the end of the input, an
// invalid record, or the end of ctx.
func read(ctx context.Context, format string, in io.Reader, records chan<- record) error {
	send := func(r record) error {
		select {
		case records <- r:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if format == "csv" {
		return readCSV(in, send)
	}
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		var b bytes.Buffer
		if err := json.Compact(&b, line); err != nil {
			return fmt.Errorf("line %d: not JSON: %w", n, err)
		}
		if err := send(record{n: n, data: b.Bytes()}); err != nil {
			return err
		}
	}
	return sc.Err()
}

// readCSV reads CSV with a header row; each row becomes a JSON object.
func readCSV(in io.Reader, send func(record) error) error {
	cr := csv.NewReader(in)
	header, err := cr.Read()
	if errors.Is(err, io.EOF) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("CSV header: %w", err)
	}
	for n := 1; ; n++ {
		row, err := cr.Read()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("CSV row %d: %w", n, err)
		}
		obj := make(map[string]string, len(header))
		for i, h := range header {
			obj[h] = row[i]
		}
		data, err := json.Marshal(obj) // keys sorted: one encoding per row
		if err != nil {
			return err
		}
		if err := send(record{n: n, data: data}); err != nil {
			return err
		}
	}
}
