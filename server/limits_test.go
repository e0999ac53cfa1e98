package server_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	tlogv1 "github.com/tlog-dev/tlog/proto/tlog/v1"
	"github.com/tlog-dev/tlog/server"
)

// entriesOf returns entries of random data of the given sizes (at least 8
// bytes each, to be distinct: the log de-duplicates equal entries).
func entriesOf(sizes ...int) []*tlogv1.AppendEntry {
	var es []*tlogv1.AppendEntry
	for _, n := range sizes {
		d := make([]byte, n)
		rand.Read(d)
		es = append(es, &tlogv1.AppendEntry{Data: d})
	}
	return es
}

// TestLimits checks that each limit refuses with its code and a reason,
// before anything is stored.
func TestLimits(t *testing.T) {
	t.Parallel()
	e := startAccess(t, accOptions{limits: server.Limits{MaxEntrySize: 100, MaxEntriesPerRequest: 5, MaxRequestBytes: 400}})
	ctx := context.Background()
	stored := uint64(0)
	for _, c := range []struct {
		name    string
		sizes   []int
		code    codes.Code
		message string
	}{
		{"entry at the size limit", []int{100}, codes.OK, ""},
		{"entry over the size limit", []int{101}, codes.ResourceExhausted, "entry 0 has 101 bytes, over the limit of 100"},
		{"entry over the size limit after valid ones", []int{10, 20, 101}, codes.ResourceExhausted, "entry 2 has 101 bytes, over the limit of 100"},
		{"entry over the format's bound", []int{1 << 16}, codes.ResourceExhausted, ""}, // the message size limit
		{"entries at the count limit", []int{10, 10, 10, 10, 10}, codes.OK, ""},
		{"entries over the count limit", []int{10, 10, 10, 10, 10, 10}, codes.ResourceExhausted, "6 entries in one request, over the limit of 5"},
		{"request over the size limit", []int{100, 100, 100, 100}, codes.ResourceExhausted, "larger than max"},
	} {
		_, err := e.log.Append(ctx, &tlogv1.AppendRequest{Log: "A", Entries: entriesOf(c.sizes...)})
		if status.Code(err) != c.code || !strings.Contains(status.Convert(err).Message(), c.message) {
			t.Errorf("%s: %v, want %v with %q", c.name, err, c.code, c.message)
		}
		if err == nil {
			stored += uint64(len(c.sizes))
		}
	}

	for _, c := range []struct {
		name   string
		size   int
		status int
	}{
		{"add at the size limit", 100, http.StatusOK},
		{"add over the size limit", 101, http.StatusRequestEntityTooLarge},
		{"add over the format's bound", 1 << 16, http.StatusRequestEntityTooLarge},
	} {
		resp, body := e.httpDo(e.http, "POST", "/logs/A/add", "", bytes.Repeat([]byte{'h'}, c.size))
		if resp.StatusCode != c.status {
			t.Errorf("%s: %s %s, want %d", c.name, resp.Status, body, c.status)
		}
		if resp.StatusCode != http.StatusOK {
			if !strings.Contains(body, "bytes") {
				t.Errorf("%s: reason %q does not say what was too large", c.name, body)
			}
		} else {
			stored++
		}
	}
	if got := e.verify("A"); got != stored {
		t.Errorf("log A has %d entries, want %d: a refused request stored something", got, stored)
	}
}

// TestLimitsDefaults checks the documented defaults and the cap on the
// entry size.
func TestLimitsDefaults(t *testing.T) {
	t.Parallel()
	e := startAccess(t, accOptions{})
	ctx := context.Background()
	if _, err := e.log.Append(ctx, &tlogv1.AppendRequest{Log: "A", Entries: entriesOf(65535)}); err != nil {
		t.Errorf("entry of 65535 bytes: %v", err)
	}
	if _, err := e.log.Append(ctx, &tlogv1.AppendRequest{Log: "A", Entries: entriesOf(65536)}); status.Code(err) != codes.ResourceExhausted {
		t.Errorf("entry of 65536 bytes: %v, want ResourceExhausted", err)
	}
	sizes := make([]int, server.DefaultMaxEntriesPerRequest+1)
	for i := range sizes {
		sizes[i] = 10
	}
	if _, err := e.log.Append(ctx, &tlogv1.AppendRequest{Log: "A", Entries: entriesOf(sizes...)}); status.Code(err) != codes.ResourceExhausted {
		t.Errorf("%d entries: %v, want ResourceExhausted", len(sizes), err)
	}
	if _, err := e.log.Append(ctx, &tlogv1.AppendRequest{Log: "A", Entries: entriesOf(sizes[1:]...)}); err != nil {
		t.Errorf("%d entries: %v", len(sizes)-1, err)
	}
	if got, want := e.verify("A"), uint64(1+server.DefaultMaxEntriesPerRequest); got != want {
		t.Errorf("log A has %d entries, want %d", got, want)
	}

	_, err := server.New(ctx, server.Config{Store: e.store, KeyDir: e.keyDir, Limits: server.Limits{MaxEntrySize: 65536}})
	if err == nil || !strings.Contains(err.Error(), "65535") {
		t.Errorf("server.New with MaxEntrySize 65536: %v, want an error naming the cap", err)
	}
}

// TestAppendRate checks the per-token append rate: a burst beyond it is
// refused with ResourceExhausted (with RetryInfo) or 429 with Retry-After,
// stores nothing, and does not touch other tokens' budgets.
func TestAppendRate(t *testing.T) {
	t.Parallel()
	e := startAccess(t, accOptions{
		callers:     map[string][]string{"fast": {"append:*"}, "other": {"append:*"}},
		publicReads: true,
		limits:      server.Limits{AppendRate: 0.2, AppendBurst: 3}, // a token every 5s
	})
	ctx := context.Background()
	send := func(caller string, sizes ...int) error {
		_, err := e.log.Append(e.withToken(ctx, caller), &tlogv1.AppendRequest{Log: "A", Entries: entriesOf(sizes...)})
		return err
	}
	if err := send("fast", 10, 10); err != nil {
		t.Fatalf("2 entries within the burst: %v", err)
	}
	if err := send("fast", 10); err != nil {
		t.Fatalf("third entry within the burst: %v", err)
	}
	err := send("fast", 10)
	if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "fast may append 0.2 entries/s") {
		t.Fatalf("entry beyond the burst: %v, want ResourceExhausted naming the caller and the rate", err)
	}
	var retry *errdetails.RetryInfo
	for _, d := range status.Convert(err).Details() {
		if ri, ok := d.(*errdetails.RetryInfo); ok {
			retry = ri
		}
	}
	if retry == nil || retry.GetRetryDelay().AsDuration() <= 0 || retry.GetRetryDelay().AsDuration() > 5*time.Second {
		t.Errorf("RetryInfo = %v, want a delay in (0, 5s]", retry)
	}

	resp, body := e.httpDo(e.http, "POST", "/logs/A/add", "Bearer "+e.tokens["fast"], []byte("over the rate"))
	if resp.StatusCode != http.StatusTooManyRequests {
		t.Errorf("POST add beyond the rate: %s %s, want 429", resp.Status, body)
	}
	if ra, err := strconv.Atoi(resp.Header.Get("Retry-After")); err != nil || ra < 1 || ra > 5 {
		t.Errorf("Retry-After = %q, want 1..5 seconds", resp.Header.Get("Retry-After"))
	}
	if !strings.Contains(body, "append rate exceeded") {
		t.Errorf("429 reason %q", body)
	}

	// Another token has its own bucket.
	if err := send("other", 10, 10, 10); err != nil {
		t.Errorf("other token: %v", err)
	}
	if got := e.verify("A"); got != 6 {
		t.Errorf("log A has %d entries, want 6: a refused append stored something", got)
	}
}

// TestMaxConcurrentStreams checks that calls beyond the limit on one
// connection wait for a free stream.
func TestMaxConcurrentStreams(t *testing.T) {
	t.Parallel()
	e := startAccess(t, accOptions{limits: server.Limits{MaxConcurrentStreams: 1}})
	conn := e.dial(grpc.WithTransportCredentials(insecure.NewCredentials()))
	hc := healthpb.NewHealthClient(conn)
	// Let the client learn the server's limit first.
	if _, err := hc.Check(context.Background(), &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatal(err)
	}
	wctx, stop := context.WithCancel(context.Background())
	w, err := hc.Watch(wctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Recv(); err != nil { // the stream is open
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	_, err = tlogv1.NewLogServiceClient(conn).GetCheckpoint(ctx, &tlogv1.GetCheckpointRequest{Log: "A"})
	cancel()
	if status.Code(err) != codes.DeadlineExceeded {
		t.Errorf("second call while the one stream is taken: %v, want DeadlineExceeded", err)
	}
	stop()
	ctx, cancel = context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := tlogv1.NewLogServiceClient(conn).GetCheckpoint(ctx, &tlogv1.GetCheckpointRequest{Log: "A"}); err != nil {
		t.Errorf("call once the stream is free: %v", err)
	}
}
