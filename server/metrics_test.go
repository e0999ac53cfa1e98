package server_test

import (
	"io"
	"net/http/httptest"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"

	tlogv1 "github.com/tlog-dev/tlog/proto/tlog/v1"
	"github.com/tlog-dev/tlog/storage"
)

func TestMetrics(t *testing.T) {
	forEachDriver(t, func(t *testing.T, open func(testing.TB) storage.Store) {
		e := start(t, open(t), []string{"a"})
		e.appendData("a", []byte("1"), []byte("2"))
		e.appendData("a", []byte("1")) // a duplicate
		if _, err := e.log.Append(t.Context(), &tlogv1.AppendRequest{Log: "a", Entries: []*tlogv1.AppendEntry{{}}}); code(err) != codes.InvalidArgument {
			t.Fatalf("empty entry: %v", err)
		}
		// Unknown logs are not counted: their names come from callers.
		e.log.Append(t.Context(), &tlogv1.AppendRequest{Log: "no-such-log", Entries: []*tlogv1.AppendEntry{{Data: []byte("x")}}})

		rec := httptest.NewRecorder()
		e.svc.MetricsHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
		body, _ := io.ReadAll(rec.Body)
		text := string(body)
		for _, want := range []string{
			`tlog_appended_entries_total{log="a",result="new"} 2`,
			`tlog_appended_entries_total{log="a",result="duplicate"} 1`,
			`tlog_append_requests_total{code="OK",log="a"} 2`,
			`tlog_append_requests_total{code="InvalidArgument",log="a"} 1`,
			`tlog_append_duration_seconds_count{log="a"} 3`,
			`tlog_append_duration_seconds_bucket{log="a",le="+Inf"} 3`,
			`tlog_tree_size{log="a"} 2`,
			`tlog_log_leader{log="a"} 1`,
			`tlog_log_stopped{log="a"} 0`,
			`go_goroutines `,
		} {
			if !strings.Contains(text, want) {
				t.Errorf("metrics lack %q", want)
			}
		}
		if strings.Contains(text, "no-such-log") {
			t.Error("metrics carry a label from an unknown log name")
		}
		e.verifyLog("a")
	})
}
