package server_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	tlogv1 "github.com/tlog-dev/tlog/proto/tlog/v1"
	"github.com/tlog-dev/tlog/server/auth"
)

// The callers of the access matrix and their grants.
var accCallers = map[string][]string{
	"append-A":   {"append:A"},
	"read-A":     {"read:A"},
	"admin-A":    {"admin:A"},
	"admin-all":  {"admin:*"},
	"append-all": {"append:*"},
}

// accMay is, written out by hand from the grants above and the rules of
// package auth (admin implies read and append; admin:* alone creates logs),
// what each caller may do on each log: "r" read, "a" append, "c" create.
var accMay = map[string]map[string]string{
	"append-A":   {"A": "a"},
	"read-A":     {"A": "r"},
	"admin-A":    {"A": "ra"},
	"admin-all":  {"A": "rac", "B": "rac"},
	"append-all": {"A": "a", "B": "a"},
}

// Pseudo-callers: no credentials, an unknown token, a malformed header.
const (
	accAnonymous = "(none)"
	accUnknown   = "(unknown token)"
	accMalformed = "(Basic auth)"
)

// accOp is one operation of the matrix, over gRPC or HTTP.
type accOp struct {
	name string
	// needs is what the operation needs: "a" append, "r" read, "c"
	// create, "l" list (a listing filtered to the readable logs).
	needs string
	http  bool
	// do runs the operation on log as the caller with the given
	// Authorization value and returns its gRPC code (HTTP: status), its
	// error message, and for listings whether the log was listed.
	do func(t *testing.T, e *accEnv, authorization, log string) accResult
}

type accResult struct {
	code   codes.Code // gRPC
	status int        // HTTP
	header http.Header
	msg    string
	listed bool
}

func grpcResult(e *accEnv, err error) accResult {
	e.checkErr(err)
	return accResult{code: status.Code(err), msg: status.Convert(err).Message()}
}

// accCtx returns a context that sends the Authorization value.
func accCtx(authorization string) context.Context {
	ctx := context.Background()
	if authorization != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", authorization)
	}
	return ctx
}

func httpResult(e *accEnv, method, path, authorization string, body []byte) (accResult, string) {
	resp, b := e.httpDo(e.http, method, path, authorization, body)
	r := accResult{status: resp.StatusCode, header: resp.Header}
	if resp.StatusCode != http.StatusOK {
		r.msg = strings.TrimSpace(b)
	}
	return r, b
}

var accOps = []accOp{
	{name: "Append", needs: "a", do: func(t *testing.T, e *accEnv, authz, log string) accResult {
		_, err := e.log.Append(accCtx(authz), &tlogv1.AppendRequest{Log: log, Entries: []*tlogv1.AppendEntry{{Data: []byte("matrix " + authz)}}})
		return grpcResult(e, err)
	}},
	{name: "GetCheckpoint", needs: "r", do: func(t *testing.T, e *accEnv, authz, log string) accResult {
		_, err := e.log.GetCheckpoint(accCtx(authz), &tlogv1.GetCheckpointRequest{Log: log})
		return grpcResult(e, err)
	}},
	{name: "GetInclusionProof", needs: "r", do: func(t *testing.T, e *accEnv, authz, log string) accResult {
		_, err := e.log.GetInclusionProof(accCtx(authz), &tlogv1.GetInclusionProofRequest{Log: log, Leaf: &tlogv1.GetInclusionProofRequest_Index{Index: 0}})
		return grpcResult(e, err)
	}},
	{name: "GetConsistencyProof", needs: "r", do: func(t *testing.T, e *accEnv, authz, log string) accResult {
		_, err := e.log.GetConsistencyProof(accCtx(authz), &tlogv1.GetConsistencyProofRequest{Log: log, FromSize: 1})
		return grpcResult(e, err)
	}},
	{name: "GetEntries", needs: "r", do: func(t *testing.T, e *accEnv, authz, log string) accResult {
		stream, err := e.log.GetEntries(accCtx(authz), &tlogv1.GetEntriesRequest{Log: log, Start: 0, End: 1})
		if err == nil {
			for {
				if _, err = stream.Recv(); err != nil {
					break
				}
			}
			if errors.Is(err, io.EOF) {
				err = nil
			}
		}
		return grpcResult(e, err)
	}},
	{name: "GetEntryAndProof", needs: "r", do: func(t *testing.T, e *accEnv, authz, log string) accResult {
		_, err := e.log.GetEntryAndProof(accCtx(authz), &tlogv1.GetEntryAndProofRequest{Log: log, Index: 0})
		return grpcResult(e, err)
	}},
	{name: "GetReceipt", needs: "r", do: func(t *testing.T, e *accEnv, authz, log string) accResult {
		_, err := e.log.GetReceipt(accCtx(authz), &tlogv1.GetReceiptRequest{Log: log, Leaf: &tlogv1.GetReceiptRequest_Index{Index: 0}})
		return grpcResult(e, err)
	}},
	{name: "GetLog", needs: "r", do: func(t *testing.T, e *accEnv, authz, log string) accResult {
		_, err := e.admin.GetLog(accCtx(authz), &tlogv1.GetLogRequest{Name: log})
		return grpcResult(e, err)
	}},
	{name: "CreateLog", needs: "c", do: func(t *testing.T, e *accEnv, authz, log string) accResult {
		// The log exists: a caller allowed to create logs learns so.
		_, err := e.admin.CreateLog(accCtx(authz), &tlogv1.CreateLogRequest{Name: log})
		return grpcResult(e, err)
	}},
	{name: "ListLogs", needs: "l", do: func(t *testing.T, e *accEnv, authz, log string) accResult {
		resp, err := e.admin.ListLogs(accCtx(authz), &tlogv1.ListLogsRequest{})
		r := grpcResult(e, err)
		for _, l := range resp.GetLogs() {
			r.listed = r.listed || l.GetName() == log
		}
		return r
	}},
	{name: "POST add", needs: "a", http: true, do: func(t *testing.T, e *accEnv, authz, log string) accResult {
		r, _ := httpResult(e, "POST", "/logs/"+log+"/add", authz, []byte("matrix http "+authz))
		return r
	}},
	{name: "GET checkpoint", needs: "r", http: true, do: func(t *testing.T, e *accEnv, authz, log string) accResult {
		r, _ := httpResult(e, "GET", "/logs/"+log+"/checkpoint", authz, nil)
		return r
	}},
	{name: "GET tile", needs: "r", http: true, do: func(t *testing.T, e *accEnv, authz, log string) accResult {
		r, _ := httpResult(e, "GET", "/logs/"+log+"/tile/0/000.p/1", authz, nil)
		return r
	}},
	{name: "GET entries", needs: "r", http: true, do: func(t *testing.T, e *accEnv, authz, log string) accResult {
		r, _ := httpResult(e, "GET", "/logs/"+log+"/tile/entries/000.p/1", authz, nil)
		return r
	}},
	{name: "GET /logs", needs: "l", http: true, do: func(t *testing.T, e *accEnv, authz, log string) accResult {
		r, b := httpResult(e, "GET", "/logs", authz, nil)
		if r.status == http.StatusOK {
			var out struct {
				Logs []struct{ Name string }
			}
			if err := json.Unmarshal([]byte(b), &out); err != nil {
				t.Fatalf("GET /logs: %v", err)
			}
			for _, l := range out.Logs {
				r.listed = r.listed || l.Name == log
			}
		}
		return r
	}},
}

// accExpect returns the gRPC code that caller must get for op on log, and
// for listings whether log must be listed.
func accExpect(caller string, op accOp, log string, public bool) (codes.Code, bool) {
	switch caller {
	case accUnknown, accMalformed:
		return codes.Unauthenticated, false
	}
	anon := caller == accAnonymous
	may := strings.Contains(accMay[caller][log], op.needs)
	switch op.needs {
	case "r":
		if public {
			return codes.OK, false
		}
	case "l":
		switch {
		case public:
			return codes.OK, true
		case anon:
			return codes.Unauthenticated, false
		}
		return codes.OK, strings.Contains(accMay[caller][log], "r")
	}
	switch {
	case anon:
		return codes.Unauthenticated, false
	case !may:
		return codes.PermissionDenied, false
	case op.needs == "c":
		return codes.AlreadyExists, false
	}
	return codes.OK, false
}

// accHTTPStatus is the HTTP status of each gRPC code in the matrix.
var accHTTPStatus = map[codes.Code]int{
	codes.OK:               http.StatusOK,
	codes.Unauthenticated:  http.StatusUnauthorized,
	codes.PermissionDenied: http.StatusForbidden,
	codes.AlreadyExists:    http.StatusConflict,
}

// TestAccessMatrix checks every cell of callers × logs × operations ×
// public/private reads, over real gRPC and HTTP, and that refused appends
// store nothing.
func TestAccessMatrix(t *testing.T) {
	t.Parallel()
	callers := []string{accAnonymous, accUnknown, accMalformed}
	for c := range accCallers {
		callers = append(callers, c)
	}
	sort.Strings(callers[3:])
	for _, public := range []bool{true, false} {
		t.Run(fmt.Sprintf("public-reads=%v", public), func(t *testing.T) {
			t.Parallel()
			e := startAccess(t, accOptions{callers: accCallers, publicReads: public})
			e.seed("A", 1)
			e.seed("B", 1)
			authz := map[string]string{
				accAnonymous: "",
				accUnknown:   "Bearer " + auth.NewToken(),
				accMalformed: "Basic dXNlcjpwYXNzd29yZA==",
			}
			for c := range accCallers {
				authz[c] = "Bearer " + e.tokens[c]
			}
			appended := map[string]uint64{}
			var grid strings.Builder
			fmt.Fprintf(&grid, "%-24s", "caller / log")
			for _, op := range accOps {
				fmt.Fprintf(&grid, " %-8.8s", op.name)
			}
			grid.WriteString("\n")
			for _, caller := range callers {
				for _, log := range []string{"A", "B"} {
					fmt.Fprintf(&grid, "%-24s", caller+" / "+log)
					for _, op := range accOps {
						wantCode, wantListed := accExpect(caller, op, log, public)
						r := op.do(t, e, authz[caller], log)
						cell := fmt.Sprintf("%s/%s/%s", caller, log, op.name)
						got := r.code.String()
						if op.http {
							got = fmt.Sprint(r.status)
							if want := accHTTPStatus[wantCode]; r.status != want {
								t.Errorf("%s: HTTP %d (%s), want %d", cell, r.status, r.msg, want)
							}
							if r.status == http.StatusUnauthorized && !strings.HasPrefix(r.header.Get("WWW-Authenticate"), "Bearer") {
								t.Errorf("%s: 401 without WWW-Authenticate: Bearer (got %q)", cell, r.header.Get("WWW-Authenticate"))
							}
						} else if r.code != wantCode {
							t.Errorf("%s: %v (%s), want %v", cell, r.code, r.msg, wantCode)
						}
						if wantCode != codes.OK && r.msg == "" {
							t.Errorf("%s: refused without a reason", cell)
						}
						if op.needs == "l" && wantCode == codes.OK {
							if r.listed != wantListed {
								t.Errorf("%s: log %s listed = %v, want %v", cell, log, r.listed, wantListed)
							}
							if r.listed {
								got += "+" + log
							} else {
								got += "-" + log
							}
						}
						if op.needs == "a" && wantCode == codes.OK {
							appended[log]++
						}
						fmt.Fprintf(&grid, " %-8.8s", shortCode(got))
					}
					grid.WriteString("\n")
				}
			}
			t.Logf("matrix (public-reads=%v):\n%s", public, grid.String())
			// Refused appends stored nothing.
			for _, log := range []string{"A", "B"} {
				if got, want := e.verify(log), 1+appended[log]; got != want {
					t.Errorf("log %s has %d entries, want %d (1 seeded + %d allowed appends)", log, got, want, appended[log])
				}
			}
		})
	}
}

func shortCode(s string) string {
	r := strings.NewReplacer("Unauthenticated", "Unauth", "PermissionDenied", "Denied", "AlreadyExists", "Exists")
	return r.Replace(s)
}
