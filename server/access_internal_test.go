package server

import (
	"net/http/httptest"
	"testing"

	tlogv1 "github.com/tlog-dev/tlog/proto/tlog/v1"
	"github.com/tlog-dev/tlog/server/auth"
)

// TestRules checks what calls that the matrix test does not make need:
// AdminService methods added later need admin on their log, unknown
// LogService methods read, health nothing; HTTP paths are split as
// http.ServeMux splits them.
func TestRules(t *testing.T) {
	for method, want := range map[string]rule{
		"/tlog.v1.AdminService/SetWitnessPolicy":                    {scope: auth.Admin},
		"/tlog.v1.LogService/GetSomethingNew":                       {scope: auth.Read},
		"/grpc.health.v1.Health/Watch":                              {public: true},
		"/grpc.reflection.v1.ServerReflection/ServerReflectionInfo": {public: true},
	} {
		if got := grpcRule(method); got != want {
			t.Errorf("grpcRule(%s) = %+v, want %+v", method, got, want)
		}
	}
	if got := requestLog(&tlogv1.ListLogsRequest{}); got != auth.AllLogs {
		t.Errorf("requestLog(ListLogsRequest) = %q", got)
	}
	for _, c := range []struct {
		method, target string
		want           rule
		log            string
	}{
		{"GET", "/healthz", rule{public: true}, ""},
		{"GET", "/logs", rule{list: true}, ""},
		{"GET", "/logs/", rule{list: true}, ""},
		{"HEAD", "/logs/A/checkpoint", rule{scope: auth.Read}, "A"},
		{"POST", "/logs/A/add", rule{scope: auth.Append}, "A"},
		{"POST", "/logs/A%2Fx/add", rule{scope: auth.Append}, "A/x"},
		{"POST", "/logs/A/x/add", rule{scope: auth.Admin}, "A"},
		{"PUT", "/logs/A/add", rule{scope: auth.Admin}, "A"},
		{"DELETE", "/logs", rule{scope: auth.Admin, all: true}, auth.AllLogs},
		{"POST", "/somewhere", rule{scope: auth.Admin, all: true}, auth.AllLogs},
	} {
		r, log := httpRule(httptest.NewRequest(c.method, c.target, nil))
		if r != c.want || log != c.log {
			t.Errorf("httpRule(%s %s) = %+v, %q; want %+v, %q", c.method, c.target, r, log, c.want, c.log)
		}
	}
}
