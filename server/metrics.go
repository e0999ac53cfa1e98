package server

import (
	"context"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/tlog-dev/tlog/server/sequencer"
)

// metrics are the service's Prometheus metrics, in a registry of its own.
// Label values are bounded: log names, witness names from the policies,
// gRPC code names and fixed error categories.
type metrics struct {
	reg      *prometheus.Registry
	appended *prometheus.CounterVec   // entries by log and result
	appends  *prometheus.CounterVec   // append calls by log and code
	latency  *prometheus.HistogramVec // seconds an append call took, by log
}

func newMetrics(s *Service) *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		appended: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tlog_appended_entries_total",
			Help: "Entries acknowledged as durable, by log and result (new or duplicate).",
		}, []string{"log", "result"}),
		appends: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tlog_append_requests_total",
			Help: "Append calls (gRPC and HTTP) by log and gRPC status code.",
		}, []string{"log", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "tlog_append_duration_seconds",
			Help: "Time from an append call's arrival until it was answered (its entries durable, or an error), by log.",
			// 1 ms to ~16 s: an append waits for its batch (--batch-max-age)
			// and one commit.
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 15),
		}, []string{"log"}),
	}
	m.reg.MustRegister(m.appended, m.appends, m.latency,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		&stateCollector{s: s})
	return m
}

var (
	descTreeSize   = prometheus.NewDesc("tlog_tree_size", "Size of the log's latest checkpoint.", []string{"log"}, nil)
	descLeader     = prometheus.NewDesc("tlog_log_leader", "1 if this process leads (sequences) the log.", []string{"log"}, nil)
	descStopped    = prometheus.NewDesc("tlog_log_stopped", "1 if this process stopped sequencing the log on a fatal error (see its logs; run tlogd fsck).", []string{"log"}, nil)
	descWRequests  = prometheus.NewDesc("tlog_witness_requests_total", "add-checkpoint requests sent to a witness.", []string{"log", "witness"}, nil)
	descWCosigned  = prometheus.NewDesc("tlog_witness_cosigned_total", "Witness answers whose cosignatures were verified and stored.", []string{"log", "witness"}, nil)
	descWConflicts = prometheus.NewDesc("tlog_witness_conflicts_total", "409 answers from a witness.", []string{"log", "witness"}, nil)
	descWErrors    = prometheus.NewDesc("tlog_witness_errors_total", "Failed witness requests by category (unknown_log, forbidden, inconsistent, timeout, ...).", []string{"log", "witness", "kind"}, nil)
	descWSize      = prometheus.NewDesc("tlog_witness_size", "Tree size the witness last cosigned, as far as the log knows.", []string{"log", "witness"}, nil)
)

// stateCollector reads the logs' and witnesses' state at each scrape.
type stateCollector struct{ s *Service }

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descTreeSize, descLeader, descStopped, descWRequests, descWCosigned, descWConflicts, descWErrors, descWSize} {
		ch <- d
	}
}

func bool01(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	for _, l := range c.s.ListLogs(context.Background()) {
		ch <- prometheus.MustNewConstMetric(descTreeSize, prometheus.GaugeValue, float64(l.Size), l.Name)
		ch <- prometheus.MustNewConstMetric(descLeader, prometheus.GaugeValue, bool01(l.Leader), l.Name)
		ch <- prometheus.MustNewConstMetric(descStopped, prometheus.GaugeValue, bool01(l.Stopped != nil), l.Name)
	}
	for _, w := range c.s.WitnessStats() {
		ch <- prometheus.MustNewConstMetric(descWRequests, prometheus.CounterValue, float64(w.Requests), w.Log, w.Witness)
		ch <- prometheus.MustNewConstMetric(descWCosigned, prometheus.CounterValue, float64(w.Cosigned), w.Log, w.Witness)
		ch <- prometheus.MustNewConstMetric(descWConflicts, prometheus.CounterValue, float64(w.Conflicts), w.Log, w.Witness)
		ch <- prometheus.MustNewConstMetric(descWSize, prometheus.GaugeValue, float64(w.Size), w.Log, w.Witness)
		for kind, n := range w.Errors {
			ch <- prometheus.MustNewConstMetric(descWErrors, prometheus.CounterValue, float64(n), w.Log, w.Witness, kind)
		}
	}
}

// MetricsHandler serves the service's metrics in the Prometheus text
// format. tlogd serves it on its own listener (--metrics-addr), apart from
// the API, so that access to it is an operator's network decision.
func (s *Service) MetricsHandler() http.Handler {
	return promhttp.HandlerFor(s.metrics.reg, promhttp.HandlerOpts{})
}

// observeAppend counts an Append call of a known log that started at start.
func (m *metrics) observeAppend(log string, start time.Time, res []sequencer.Result, err error) {
	m.latency.WithLabelValues(log).Observe(time.Since(start).Seconds())
	code, _ := Status(err)
	m.appends.WithLabelValues(log, code.String()).Inc()
	var dup int
	for _, r := range res {
		if r.Duplicate {
			dup++
		}
	}
	m.appended.WithLabelValues(log, "new").Add(float64(len(res) - dup))
	m.appended.WithLabelValues(log, "duplicate").Add(float64(dup))
}
