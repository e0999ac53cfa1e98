package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tlog-dev/tlog/internal/pgtest"
)

func TestHistogramBuckets(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for range 100000 {
		v := r.Uint64N(1 << histMaxBits)
		if r.IntN(2) == 0 {
			v >>= r.IntN(histMaxBits)
		}
		i := bucketOf(v)
		low, width := bucketRange(i)
		if v < low || v >= low+width {
			t.Fatalf("value %d in bucket %d = [%d, %d)", v, i, low, low+width)
		}
		if width > 1 && float64(width)/float64(low) > 1.0/histSub {
			t.Fatalf("bucket %d = [%d, +%d) is wider than 1/%d of its values", i, low, width, histSub)
		}
	}
	if i := bucketOf(math.MaxUint64); i != histBuckets-1 {
		t.Errorf("bucketOf(max) = %d, want the last bucket %d", i, histBuckets-1)
	}
	for i := 1; i < histBuckets; i++ { // contiguous
		l0, w0 := bucketRange(i - 1)
		if l1, _ := bucketRange(i); l0+w0 != l1 {
			t.Fatalf("bucket %d ends at %d, bucket %d starts at %d", i-1, l0+w0, i, l1)
		}
	}
}

func TestHistogramQuantiles(t *testing.T) {
	type want struct {
		q float64
		d time.Duration
	}
	r := rand.New(rand.NewPCG(3, 4))
	tests := []struct {
		name    string
		samples func(record func(time.Duration))
		tol     float64 // relative
		wants   []want
		max     time.Duration
	}{
		{
			name: "uniform 1..100000µs",
			samples: func(record func(time.Duration)) {
				for i := 1; i <= 100000; i++ {
					record(time.Duration(i) * time.Microsecond)
				}
			},
			tol:   0.01,
			wants: []want{{0.5, 50 * time.Millisecond}, {0.9, 90 * time.Millisecond}, {0.99, 99 * time.Millisecond}, {0.999, 99900 * time.Microsecond}},
			max:   100 * time.Millisecond,
		},
		{
			name: "constant 7ms",
			samples: func(record func(time.Duration)) {
				for range 1000 {
					record(7 * time.Millisecond)
				}
			},
			tol:   0.01,
			wants: []want{{0.5, 7 * time.Millisecond}, {0.99, 7 * time.Millisecond}, {1, 7 * time.Millisecond}},
			max:   7 * time.Millisecond,
		},
		{
			name: "small exact values",
			samples: func(record func(time.Duration)) {
				for i := 1; i <= 100; i++ {
					record(time.Duration(i))
				}
			},
			wants: []want{{0.5, 50}, {0.9, 90}, {0.99, 99}, {0.01, 1}},
			max:   100,
		},
		{
			// Quantile q of an exponential distribution of mean m is -m ln(1-q).
			name: "exponential mean 10ms",
			samples: func(record func(time.Duration)) {
				for range 400000 {
					record(time.Duration(r.ExpFloat64() * float64(10*time.Millisecond)))
				}
			},
			tol: 0.03,
			wants: []want{
				{0.5, time.Duration(-math.Log(0.5) * float64(10*time.Millisecond))},
				{0.9, time.Duration(-math.Log(0.1) * float64(10*time.Millisecond))},
				{0.99, time.Duration(-math.Log(0.01) * float64(10*time.Millisecond))},
			},
		},
		{
			// 99% fast, 1% slow: p99 is still fast, p99.9 is slow.
			name: "bimodal",
			samples: func(record func(time.Duration)) {
				for i := range 100000 {
					if i%100 == 0 {
						record(2 * time.Second)
					} else {
						record(time.Millisecond)
					}
				}
			},
			tol:   0.01,
			wants: []want{{0.5, time.Millisecond}, {0.99, time.Millisecond}, {0.991, 2 * time.Second}, {0.999, 2 * time.Second}},
			max:   2 * time.Second,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var h histogram
			tt.samples(h.Record)
			for _, w := range tt.wants {
				got := h.Quantile(w.q)
				if diff := math.Abs(float64(got-w.d)) / float64(w.d); diff > tt.tol {
					t.Errorf("Quantile(%g) = %v, want %v ± %g%%", w.q, got, w.d, tt.tol*100)
				}
			}
			if tt.max != 0 && h.Max() != tt.max {
				t.Errorf("Max = %v, want %v", h.Max(), tt.max)
			}
		})
	}

	var empty histogram
	if q, m := empty.Quantile(0.99), empty.Mean(); q != 0 || m != 0 {
		t.Errorf("empty histogram: Quantile = %v, Mean = %v, want 0", q, m)
	}
}

// slowOp is a server that answers each request after d.
func slowOp(d time.Duration) opFunc {
	return func(ctx context.Context, w int) (int, error) {
		time.Sleep(d)
		return 1, nil
	}
}

func TestClosedLoopLatencyIsServiceTime(t *testing.T) {
	r := &runner{Concurrency: 1, Duration: 300 * time.Millisecond, Op: slowOp(5 * time.Millisecond)}
	if err := r.run(t.Context()); err != nil {
		t.Fatal(err)
	}
	if p50 := r.hist.Quantile(0.5); p50 < 5*time.Millisecond || p50 > 20*time.Millisecond {
		t.Errorf("closed loop p50 = %v, want about the 5ms service time", p50)
	}
	if n := r.ops.Load(); n < 10 || n > 60 {
		t.Errorf("closed loop made %d requests in 300ms of 5ms each", n)
	}
}

// TestOpenLoopMeasuresFromSchedule offers 1000 requests/s to a server that
// handles 200/s with one worker: each request is sent later than scheduled,
// so latency (from the schedule) keeps growing over the run; requests the
// worker could not send are reported as missed.
func TestOpenLoopMeasuresFromSchedule(t *testing.T) {
	run := func(d time.Duration) *runner {
		r := &runner{Concurrency: 1, Rate: 1000, Duration: d, Op: slowOp(5 * time.Millisecond)}
		if err := r.run(t.Context()); err != nil {
			t.Fatal(err)
		}
		t.Logf("%v: %d sent, %d missed, p50 %v, max %v", d, r.sent.Load(), r.missed, r.hist.Quantile(0.5), r.hist.Max())
		return r
	}
	short, long := run(200*time.Millisecond), run(600*time.Millisecond)
	// Request k is scheduled at k ms and answered at about 5(k+1) ms.
	if m := short.hist.Max(); m < 100*time.Millisecond {
		t.Errorf("200ms run: max latency %v, want over 100ms (send delays hidden?)", m)
	}
	if m := long.hist.Max(); m < 2*short.hist.Max() {
		t.Errorf("latency does not grow with the backlog: max %v after 600ms, %v after 200ms", m, short.hist.Max())
	}
	if p50 := long.hist.Quantile(0.5); p50 < 50*time.Millisecond {
		t.Errorf("600ms run: p50 %v, want well over the 5ms service time", p50)
	}
	if long.missed < 300 {
		t.Errorf("600ms run: %d requests missed, want most of the 600 scheduled", long.missed)
	}
}

// TestOpenLoopPaces checks a fast server gets the target rate, not more,
// at low latency.
func TestOpenLoopPaces(t *testing.T) {
	r := &runner{Concurrency: 16, Rate: 2000, Warmup: 100 * time.Millisecond, Duration: 500 * time.Millisecond, Op: slowOp(0)}
	if err := r.run(t.Context()); err != nil {
		t.Fatal(err)
	}
	// The bounds are loose so that a loaded machine (CI runs packages in
	// parallel) cannot fail the test; an unpaced loop would answer tens of
	// thousands.
	if n := r.ops.Load(); n < 500 || n > 1100 {
		t.Errorf("%d requests answered in 500ms at 2000/s, want about 1000", n)
	}
	if p50 := r.hist.Quantile(0.5); p50 > 100*time.Millisecond {
		t.Errorf("p50 %v on a fast server, want about 0.1ms", p50)
	}
	if r.missed > 250 {
		t.Errorf("%d requests missed on a fast server", r.missed)
	}
}

func TestInclusionProofLen(t *testing.T) {
	tests := []struct {
		index, size uint64
		want        int
	}{
		{0, 1, 0}, {0, 2, 1}, {1, 2, 1}, {0, 3, 2}, {2, 3, 1}, {0, 5, 3}, {4, 5, 1},
		{3, 8, 3}, {5, 7, 3}, {6, 7, 2}, {0, 1 << 20, 20}, {999999, 1000000, 12}, {0, 1000000, 20},
	}
	for _, tt := range tests {
		if got := inclusionProofLen(tt.index, tt.size); got != tt.want {
			t.Errorf("inclusionProofLen(%d, %d) = %d, want %d", tt.index, tt.size, got, tt.want)
		}
	}
}

func TestParseProcStat(t *testing.T) {
	stat := "4242 (tl og) d) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 150 0 0 20 0 12 0 100 0 0"
	got, err := parseProcStat(stat)
	if want := (procTimes{user: 2500 * time.Millisecond, system: 1500 * time.Millisecond}); err != nil || got != want {
		t.Errorf("parseProcStat = %+v, %v; want %+v", got, err, want)
	}
	if _, err := parseProcStat("garbage"); err == nil {
		t.Error("parseProcStat(garbage) succeeded")
	}
	if d, err := processCPUTime(os.Getpid()); err != nil || d.user < 0 || d.system < 0 {
		t.Errorf("processCPUTime(self) = %v, %v", d, err)
	}
}

func TestCommas(t *testing.T) {
	for f, want := range map[float64]string{0: "0", 999: "999", 1000: "1,000", 1234567.4: "1,234,567", -12345: "-12,345"} {
		if got := commas(f); got != want {
			t.Errorf("commas(%v) = %q, want %q", f, got, want)
		}
	}
}

// startTlogd builds and starts tlogd on free ports with a fresh data
// directory and returns its gRPC and HTTP addresses and process id.
func startTlogd(t *testing.T, bin string) (grpcAddr, httpAddr string, pid int) {
	t.Helper()
	cmd := exec.Command(bin, "--data-dir", t.TempDir(), "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	})
	serving := regexp.MustCompile(`msg="tlogd serving" grpc=(\S+) http=http://(\S+)`)
	found := make(chan []string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			if m := serving.FindStringSubmatch(sc.Text()); m != nil {
				found <- m
			}
			t.Log("tlogd:", sc.Text())
		}
	}()
	select {
	case m := <-found:
		return m[1], m[2], cmd.Process.Pid
	case <-time.After(30 * time.Second):
		t.Fatal("tlogd did not start within 30s")
	}
	return
}

func goBuild(t *testing.T, out, pkg string) {
	t.Helper()
	cmd := exec.Command("go", "build", "-o", out, pkg)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, b)
	}
}

// TestSmoke runs every mode for 1s against a real tlogd on the embedded
// store and checks the JSON report.
func TestSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs tlogd")
	}
	dir := t.TempDir()
	tlogd, bench := filepath.Join(dir, "tlogd"), filepath.Join(dir, "tlog-bench")
	goBuild(t, tlogd, "../tlogd")
	goBuild(t, bench, ".")
	grpcAddr, httpAddr, pid := startTlogd(t, tlogd)

	tests := []struct {
		mode       string
		throughput string
		args       []string
	}{
		{"grpc", "entries_per_sec", []string{"--batch", "100", "--concurrency", "8"}},
		{"grpc-single", "entries_per_sec", []string{"--concurrency", "64"}},
		{"http-add", "entries_per_sec", []string{"--concurrency", "64"}},
		{"grpc-single", "entries_per_sec", []string{"--concurrency", "64", "--rate", "500"}},
		{"proofs", "proofs_per_sec", []string{"--concurrency", "8"}},
		{"tiles", "reads_per_sec", []string{"--concurrency", "8"}},
	}
	for _, tt := range tests {
		t.Run(tt.mode+strings.Join(tt.args, ""), func(t *testing.T) {
			args := append([]string{"--mode", tt.mode, "--grpc-addr", grpcAddr, "--http-addr", httpAddr,
				"--duration", "3s", "--warmup", "300ms", "--json", "--server-pid", strconv.Itoa(pid)}, tt.args...)
			cmd := exec.Command(bench, args...)
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			if err := cmd.Run(); err != nil {
				t.Fatalf("tlog-bench %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
			}
			t.Logf("progress:\n%s", stderr.String())
			var res map[string]any
			if err := json.Unmarshal(stdout.Bytes(), &res); err != nil {
				t.Fatalf("report is not JSON: %v\n%s", err, stdout.String())
			}
			if res["mode"] != tt.mode {
				t.Errorf("mode = %v, want %s", res["mode"], tt.mode)
			}
			if v, ok := res[tt.throughput].(float64); !ok || v <= 0 {
				t.Errorf("%s = %v, want > 0", tt.throughput, res[tt.throughput])
			}
			if v, ok := res["errors"].(float64); !ok || v != 0 {
				t.Errorf("errors = %v (%v), want 0", res["errors"], res["errors_by_kind"])
			}
			lat, _ := res["latency_ms"].(map[string]any)
			for _, k := range []string{"p50", "p90", "p99", "max"} {
				if v, ok := lat[k].(float64); !ok || v <= 0 {
					t.Errorf("latency_ms.%s = %v, want > 0", k, lat[k])
				}
			}
			if _, ok := res["server_cpu"].(float64); !ok {
				t.Errorf("server_cpu missing with --server-pid")
			}
			if tt.throughput == "entries_per_sec" {
				if v, ok := res["integrated_entries_per_sec"].(float64); !ok || v <= 0 {
					t.Errorf("integrated_entries_per_sec = %v, want > 0", res["integrated_entries_per_sec"])
				}
				if res["tree_size_end"].(float64) <= res["tree_size_start"].(float64) {
					t.Errorf("tree did not grow: %v → %v", res["tree_size_start"], res["tree_size_end"])
				}
			}
			t.Logf("%s", stdout.String())
		})
	}
}

// TestBaselineCopy runs the COPY baseline on a fresh database and checks
// it measures something and drops its table.
func TestBaselineCopy(t *testing.T) {
	url := pgtest.NewDatabase(t)
	res, err := runBaseline(t.Context(), url, 2, 100, 256, 100*time.Millisecond, time.Second, func(s string) { t.Log(s) })
	if err != nil {
		t.Fatal(err)
	}
	if res.RowsPerSec <= 0 || res.Errors != 0 || res.Connections != 2 || res.Batch != 100 {
		t.Errorf("baseline = %+v, want rows > 0, no errors, 2 connections, batch 100", res)
	}
	conn, err := pgx.Connect(t.Context(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var n int
	if err := conn.QueryRow(t.Context(), `SELECT count(*) FROM pg_tables WHERE tablename LIKE 'tlog_bench_copy_%'`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Errorf("%d baseline tables left behind", n)
	}
	for concurrency, want := range map[int]int{1: 1, 16: 1, 64: 4, 1024: 4, 40: 2} {
		if got := baselineConnections(concurrency); got != want {
			t.Errorf("baselineConnections(%d) = %d, want %d", concurrency, got, want)
		}
	}
}
