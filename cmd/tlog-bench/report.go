package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"
)

// result is the report of one run; its JSON form is what scripts read.
type result struct {
	Mode        string  `json:"mode"`
	Log         string  `json:"log"`
	Server      string  `json:"server"`
	DurationSec float64 `json:"duration_s"`
	WarmupSec   float64 `json:"warmup_s"`
	Size        int     `json:"size,omitempty"`
	Concurrency int     `json:"concurrency"`
	Batch       int     `json:"batch"`
	// Rate is the open-loop target (entries/s, or operations/s for reads);
	// 0 is a closed loop.
	Rate float64 `json:"rate"`

	Requests       uint64  `json:"requests"`
	RequestsPerSec float64 `json:"requests_per_sec"`
	// Write modes: acknowledged entries/s, and the tree's growth per second
	// over the measured window.
	EntriesPerSec    *float64 `json:"entries_per_sec,omitempty"`
	IntegratedPerSec *float64 `json:"integrated_entries_per_sec,omitempty"`
	ProofsPerSec     *float64 `json:"proofs_per_sec,omitempty"`
	ReadsPerSec      *float64 `json:"reads_per_sec,omitempty"`

	LatencyMs    latencyJSON       `json:"latency_ms"`
	Errors       uint64            `json:"errors"`
	ErrorsByKind map[string]uint64 `json:"errors_by_kind"`
	// Missed counts open-loop requests of the window that were never sent
	// because every worker was still waiting for the server.
	Missed uint64 `json:"missed,omitempty"`

	TreeSizeStart uint64 `json:"tree_size_start"`
	TreeSizeEnd   uint64 `json:"tree_size_end"`
	// CPU use over the measured window, in cores (1.0 = one core busy).
	ClientCPU float64  `json:"client_cpu"`
	ServerCPU *float64 `json:"server_cpu,omitempty"`
	// ServerKernelCPU is the part of ServerCPU spent in the kernel (on
	// tlogd's behalf: system calls, page faults), such as copying the
	// embedded store's pages into the page cache.
	ServerKernelCPU *float64 `json:"server_cpu_kernel,omitempty"`

	Baseline *baselineResult `json:"baseline_copy,omitempty"`
}

// throughput returns the headline figure of r and its name.
func (r *result) throughput() (float64, string) {
	switch {
	case r.EntriesPerSec != nil:
		return *r.EntriesPerSec, "entries/s"
	case r.ProofsPerSec != nil:
		return *r.ProofsPerSec, "proofs/s"
	case r.ReadsPerSec != nil:
		return *r.ReadsPerSec, "reads/s"
	}
	return r.RequestsPerSec, "requests/s"
}

type latencyJSON struct {
	P50  float64 `json:"p50"`
	P90  float64 `json:"p90"`
	P99  float64 `json:"p99"`
	P999 float64 `json:"p999"`
	Max  float64 `json:"max"`
	Mean float64 `json:"mean"`
}

func latencyOf(h *histogram) latencyJSON {
	f := func(d time.Duration) float64 { return math.Round(d.Seconds()*1e6) / 1e3 }
	return latencyJSON{
		P50:  f(h.Quantile(0.50)),
		P90:  f(h.Quantile(0.90)),
		P99:  f(h.Quantile(0.99)),
		P999: f(h.Quantile(0.999)),
		Max:  f(h.Max()),
		Mean: f(h.Mean()),
	}
}

// fmtMs formats milliseconds with about three significant digits.
func fmtMs(f float64) string { return ms(time.Duration(f * float64(time.Millisecond))) }

func ptr(f float64) *float64 { return &f }

func writeJSON(w io.Writer, r *result) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

func writeTable(w io.Writer, r *result) error {
	fmt.Fprintf(w, "tlog-bench %s: log %q on %s\n", r.Mode, r.Log, r.Server)
	rate := "closed loop"
	if r.Rate > 0 {
		rate = "open loop at " + commas(r.Rate) + "/s"
	}
	entries := ""
	if r.Size > 0 {
		entries = fmt.Sprintf("%d B entries, batch %d, ", r.Size, r.Batch)
	}
	fmt.Fprintf(w, "%gs measured after %gs warm-up; %s%d concurrent, %s\n\n",
		r.DurationSec, r.WarmupSec, entries, r.Concurrency, rate)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(k, format string, args ...any) {
		fmt.Fprintf(tw, "  %s\t"+format+"\n", append([]any{k}, args...)...)
	}
	row("requests/s", "%s", commas(r.RequestsPerSec))
	if r.EntriesPerSec != nil {
		row("entries/s acknowledged", "%s", commas(*r.EntriesPerSec))
		row("entries/s integrated", "%s", commas(*r.IntegratedPerSec))
	}
	if r.ProofsPerSec != nil {
		row("proofs/s", "%s", commas(*r.ProofsPerSec))
	}
	if r.ReadsPerSec != nil {
		row("tile reads/s", "%s", commas(*r.ReadsPerSec))
	}
	l := r.LatencyMs
	from := "from send"
	if r.Rate > 0 {
		from = "from scheduled time"
	}
	row("latency ms", "p50 %s  p90 %s  p99 %s  p99.9 %s  max %s  (%s)", fmtMs(l.P50), fmtMs(l.P90), fmtMs(l.P99), fmtMs(l.P999), fmtMs(l.Max), from)
	errs := strconv.FormatUint(r.Errors, 10)
	if r.Errors > 0 {
		var kinds []string
		for _, k := range sortedKeys(r.ErrorsByKind) {
			kinds = append(kinds, fmt.Sprintf("%s %d", k, r.ErrorsByKind[k]))
		}
		errs += " (" + strings.Join(kinds, ", ") + ")"
	}
	row("errors", "%s", errs)
	if r.Rate > 0 {
		row("never sent", "%d (server behind the target rate)", r.Missed)
	}
	row("tree size", "%s → %s", commas(float64(r.TreeSizeStart)), commas(float64(r.TreeSizeEnd)))
	row("client CPU", "%.2f cores", r.ClientCPU)
	if r.ServerCPU != nil {
		if r.ServerKernelCPU != nil {
			row("server CPU", "%.2f cores, %.2f of them in the kernel", *r.ServerCPU, *r.ServerKernelCPU)
		} else {
			row("server CPU", "%.2f cores", *r.ServerCPU)
		}
	}
	if b := r.Baseline; b != nil {
		row("PostgreSQL COPY", "%s rows/s (%d connections, %d rows per durable commit; commit p50 %s ms, p99 %s ms)",
			commas(b.RowsPerSec), b.Connections, b.Batch, fmtMs(b.CommitMs.P50), fmtMs(b.CommitMs.P99))
		if b.Errors > 0 {
			row("COPY errors", "%d", b.Errors)
		}
		row("tlog / COPY", "%.2f", b.Ratio)
	}
	return tw.Flush()
}

// cpuTime is the user+system CPU time this process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// clockTicks is USER_HZ, the unit of /proc/PID/stat times: 100 on every
// Linux architecture Go supports.
const clockTicks = 100

// procTimes is the CPU time a process spent in user space and in the
// kernel.
type procTimes struct{ user, system time.Duration }

func (t procTimes) total() time.Duration { return t.user + t.system }

// processCPUTime returns the CPU times of process pid from /proc/PID/stat.
func processCPUTime(pid int) (procTimes, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return procTimes{}, err
	}
	return parseProcStat(string(b))
}

// parseProcStat returns utime and stime from the text of /proc/PID/stat.
// The command name (field 2) may hold spaces and parentheses, so fields are
// counted from the last ')'.
func parseProcStat(s string) (procTimes, error) {
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return procTimes{}, fmt.Errorf("malformed /proc stat %q", s)
	}
	f := strings.Fields(s[i+1:]) // f[0] is field 3 (state)
	if len(f) < 13 {
		return procTimes{}, fmt.Errorf("malformed /proc stat %q", s)
	}
	utime, err1 := strconv.ParseUint(f[14-3], 10, 64)
	stime, err2 := strconv.ParseUint(f[15-3], 10, 64)
	if err1 != nil || err2 != nil {
		return procTimes{}, fmt.Errorf("malformed /proc stat %q", s)
	}
	return procTimes{
		user:   time.Duration(utime) * time.Second / clockTicks,
		system: time.Duration(stime) * time.Second / clockTicks,
	}, nil
}
