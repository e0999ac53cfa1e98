package server_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"strings"
	"testing"

	sumdb "golang.org/x/mod/sumdb/tlog"
	"google.golang.org/grpc/codes"

	tlogv1 "github.com/tlog-dev/tlog/proto/tlog/v1"
	"github.com/tlog-dev/tlog/storage"
)

// entriesErr runs GetEntries to the end of its stream and returns its
// error (nil if it ended normally).
func entriesErr(ctx context.Context, c tlogv1.LogServiceClient, req *tlogv1.GetEntriesRequest) error {
	stream, err := c.GetEntries(ctx, req)
	if err != nil {
		return err
	}
	for {
		if _, err := stream.Recv(); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
	}
}

// TestBadInput sends requests that must fail, over gRPC and HTTP, and checks
// both the documented status and that nothing stored changed.
func TestBadInput(t *testing.T) {
	forEachDriver(t, func(t *testing.T, open func(testing.TB) storage.Store) {
		e := start(t, open(t), []string{"audit", "empty"})
		const log = "audit"
		// Checkpoints are signed at sizes 5, 12 and 20; never at 7.
		var data [][]byte
		for _, n := range []int{5, 7, 8} {
			var batch [][]byte
			for range n {
				batch = append(batch, fmt.Appendf(nil, "entry %d", len(data)+len(batch)))
			}
			e.appendData(log, batch...)
			data = append(data, batch...)
		}
		const size, unsigned = 20, 7
		inLog := sumdb.RecordHash(data[10])
		notInLog := sumdb.RecordHash([]byte("not in the log"))
		big := bytes.Repeat([]byte{'x'}, 65536)
		ok := []byte("a valid entry that must not be appended")

		idx := func(i uint64) *tlogv1.GetInclusionProofRequest_Index {
			return &tlogv1.GetInclusionProofRequest_Index{Index: i}
		}
		hash := func(h []byte) *tlogv1.GetInclusionProofRequest_LeafHash {
			return &tlogv1.GetInclusionProofRequest_LeafHash{LeafHash: h}
		}
		ridx := func(i uint64) *tlogv1.GetReceiptRequest_Index { return &tlogv1.GetReceiptRequest_Index{Index: i} }
		rhash := func(h []byte) *tlogv1.GetReceiptRequest_LeafHash {
			return &tlogv1.GetReceiptRequest_LeafHash{LeafHash: h}
		}
		entries := func(ds ...[]byte) []*tlogv1.AppendEntry {
			var es []*tlogv1.AppendEntry
			for _, d := range ds {
				es = append(es, &tlogv1.AppendEntry{Data: d})
			}
			return es
		}

		type call func(ctx context.Context) error
		appendReq := func(req *tlogv1.AppendRequest) call {
			return func(ctx context.Context) error { _, err := e.log.Append(ctx, req); return err }
		}
		checkpointReq := func(req *tlogv1.GetCheckpointRequest) call {
			return func(ctx context.Context) error { _, err := e.log.GetCheckpoint(ctx, req); return err }
		}
		inclusionReq := func(req *tlogv1.GetInclusionProofRequest) call {
			return func(ctx context.Context) error { _, err := e.log.GetInclusionProof(ctx, req); return err }
		}
		consistencyReq := func(req *tlogv1.GetConsistencyProofRequest) call {
			return func(ctx context.Context) error { _, err := e.log.GetConsistencyProof(ctx, req); return err }
		}
		entriesReq := func(req *tlogv1.GetEntriesRequest) call {
			return func(ctx context.Context) error { return entriesErr(ctx, e.log, req) }
		}
		entryReq := func(req *tlogv1.GetEntryAndProofRequest) call {
			return func(ctx context.Context) error { _, err := e.log.GetEntryAndProof(ctx, req); return err }
		}
		receiptReq := func(req *tlogv1.GetReceiptRequest) call {
			return func(ctx context.Context) error { _, err := e.log.GetReceipt(ctx, req); return err }
		}
		createReq := func(name, origin string) call {
			return func(ctx context.Context) error {
				_, err := e.admin.CreateLog(ctx, &tlogv1.CreateLogRequest{Name: name, Origin: origin})
				return err
			}
		}
		getLogReq := func(name string) call {
			return func(ctx context.Context) error {
				_, err := e.admin.GetLog(ctx, &tlogv1.GetLogRequest{Name: name})
				return err
			}
		}
		listReq := func(n int32) call {
			return func(ctx context.Context) error {
				_, err := e.admin.ListLogs(ctx, &tlogv1.ListLogsRequest{PageSize: n})
				return err
			}
		}

		grpcCases := []struct {
			name string
			call call
			want codes.Code
		}{
			// Append.
			{"Append/empty entry", appendReq(&tlogv1.AppendRequest{Log: log, Entries: entries([]byte{})}), codes.InvalidArgument},
			{"Append/empty entry after a valid one", appendReq(&tlogv1.AppendRequest{Log: log, Entries: entries(ok, nil)}), codes.InvalidArgument},
			{"Append/65536 bytes", appendReq(&tlogv1.AppendRequest{Log: log, Entries: entries(big)}), codes.ResourceExhausted},
			{"Append/65536 bytes after a valid one", appendReq(&tlogv1.AppendRequest{Log: log, Entries: entries(ok, big)}), codes.ResourceExhausted},
			{"Append/no entries", appendReq(&tlogv1.AppendRequest{Log: log}), codes.InvalidArgument},
			{"Append/unknown log", appendReq(&tlogv1.AppendRequest{Log: "nope", Entries: entries(ok)}), codes.NotFound},
			{"Append/no log name", appendReq(&tlogv1.AppendRequest{Entries: entries(ok)}), codes.NotFound},

			// GetCheckpoint.
			{"GetCheckpoint/unknown log", checkpointReq(&tlogv1.GetCheckpointRequest{Log: "nope"}), codes.NotFound},
			{"GetCheckpoint/size beyond the tree", checkpointReq(&tlogv1.GetCheckpointRequest{Log: log, TreeSize: size + 1}), codes.OutOfRange},
			{"GetCheckpoint/huge size", checkpointReq(&tlogv1.GetCheckpointRequest{Log: log, TreeSize: math.MaxUint64}), codes.OutOfRange},
			{"GetCheckpoint/size never signed", checkpointReq(&tlogv1.GetCheckpointRequest{Log: log, TreeSize: unsigned}), codes.NotFound},

			// GetInclusionProof.
			{"GetInclusionProof/unknown log by index", inclusionReq(&tlogv1.GetInclusionProofRequest{Log: "nope", Leaf: idx(0)}), codes.NotFound},
			{"GetInclusionProof/unknown log by hash", inclusionReq(&tlogv1.GetInclusionProofRequest{Log: "nope", Leaf: hash(inLog[:])}), codes.NotFound},
			{"GetInclusionProof/index = size", inclusionReq(&tlogv1.GetInclusionProofRequest{Log: log, Leaf: idx(size)}), codes.OutOfRange},
			{"GetInclusionProof/huge index", inclusionReq(&tlogv1.GetInclusionProofRequest{Log: log, Leaf: idx(math.MaxUint64)}), codes.OutOfRange},
			{"GetInclusionProof/index = older size", inclusionReq(&tlogv1.GetInclusionProofRequest{Log: log, Leaf: idx(5), TreeSize: 5}), codes.OutOfRange},
			{"GetInclusionProof/leaf beyond older size", inclusionReq(&tlogv1.GetInclusionProofRequest{Log: log, Leaf: hash(inLog[:]), TreeSize: 5}), codes.OutOfRange},
			{"GetInclusionProof/size beyond the tree", inclusionReq(&tlogv1.GetInclusionProofRequest{Log: log, Leaf: idx(0), TreeSize: size + 1}), codes.OutOfRange},
			{"GetInclusionProof/size never signed", inclusionReq(&tlogv1.GetInclusionProofRequest{Log: log, Leaf: idx(0), TreeSize: unsigned}), codes.NotFound},
			{"GetInclusionProof/leaf hash of 31 bytes", inclusionReq(&tlogv1.GetInclusionProofRequest{Log: log, Leaf: hash(inLog[:31])}), codes.InvalidArgument},
			{"GetInclusionProof/leaf hash of 33 bytes", inclusionReq(&tlogv1.GetInclusionProofRequest{Log: log, Leaf: hash(append(inLog[:], 0))}), codes.InvalidArgument},
			{"GetInclusionProof/empty leaf hash", inclusionReq(&tlogv1.GetInclusionProofRequest{Log: log, Leaf: hash([]byte{})}), codes.InvalidArgument},
			{"GetInclusionProof/no leaf", inclusionReq(&tlogv1.GetInclusionProofRequest{Log: log}), codes.InvalidArgument},
			{"GetInclusionProof/leaf hash not in log", inclusionReq(&tlogv1.GetInclusionProofRequest{Log: log, Leaf: hash(notInLog[:])}), codes.NotFound},
			{"GetInclusionProof/empty log", inclusionReq(&tlogv1.GetInclusionProofRequest{Log: "empty", Leaf: idx(0)}), codes.OutOfRange},

			// GetConsistencyProof.
			{"GetConsistencyProof/unknown log", consistencyReq(&tlogv1.GetConsistencyProofRequest{Log: "nope", FromSize: 1}), codes.NotFound},
			{"GetConsistencyProof/from > to", consistencyReq(&tlogv1.GetConsistencyProofRequest{Log: log, FromSize: 12, ToSize: 5}), codes.InvalidArgument},
			{"GetConsistencyProof/from > to = latest", consistencyReq(&tlogv1.GetConsistencyProofRequest{Log: log, FromSize: size + 1, ToSize: size}), codes.InvalidArgument},
			{"GetConsistencyProof/from beyond the tree", consistencyReq(&tlogv1.GetConsistencyProofRequest{Log: log, FromSize: size + 1}), codes.OutOfRange},
			{"GetConsistencyProof/from 0", consistencyReq(&tlogv1.GetConsistencyProofRequest{Log: log, FromSize: 0, ToSize: 5}), codes.InvalidArgument},
			{"GetConsistencyProof/to beyond the tree", consistencyReq(&tlogv1.GetConsistencyProofRequest{Log: log, FromSize: 5, ToSize: size + 1}), codes.OutOfRange},
			{"GetConsistencyProof/to never signed", consistencyReq(&tlogv1.GetConsistencyProofRequest{Log: log, FromSize: 5, ToSize: unsigned}), codes.NotFound},

			// GetEntries.
			{"GetEntries/unknown log", entriesReq(&tlogv1.GetEntriesRequest{Log: "nope"}), codes.NotFound},
			{"GetEntries/start = size", entriesReq(&tlogv1.GetEntriesRequest{Log: log, Start: size}), codes.OutOfRange},
			{"GetEntries/start beyond size", entriesReq(&tlogv1.GetEntriesRequest{Log: log, Start: size + 5, End: size + 10}), codes.OutOfRange},
			{"GetEntries/start = end", entriesReq(&tlogv1.GetEntriesRequest{Log: log, Start: 5, End: 5}), codes.OutOfRange},
			{"GetEntries/start > end", entriesReq(&tlogv1.GetEntriesRequest{Log: log, Start: 10, End: 3}), codes.OutOfRange},
			{"GetEntries/empty log", entriesReq(&tlogv1.GetEntriesRequest{Log: "empty"}), codes.OutOfRange},

			// GetEntryAndProof.
			{"GetEntryAndProof/unknown log", entryReq(&tlogv1.GetEntryAndProofRequest{Log: "nope"}), codes.NotFound},
			{"GetEntryAndProof/index = size", entryReq(&tlogv1.GetEntryAndProofRequest{Log: log, Index: size}), codes.OutOfRange},
			{"GetEntryAndProof/index = older size", entryReq(&tlogv1.GetEntryAndProofRequest{Log: log, Index: 12, TreeSize: 12}), codes.OutOfRange},
			{"GetEntryAndProof/size beyond the tree", entryReq(&tlogv1.GetEntryAndProofRequest{Log: log, TreeSize: size + 1}), codes.OutOfRange},
			{"GetEntryAndProof/size never signed", entryReq(&tlogv1.GetEntryAndProofRequest{Log: log, TreeSize: unsigned}), codes.NotFound},

			// GetReceipt.
			{"GetReceipt/unknown log by index", receiptReq(&tlogv1.GetReceiptRequest{Log: "nope", Leaf: ridx(0)}), codes.NotFound},
			{"GetReceipt/unknown log by hash", receiptReq(&tlogv1.GetReceiptRequest{Log: "nope", Leaf: rhash(inLog[:])}), codes.NotFound},
			{"GetReceipt/index = size", receiptReq(&tlogv1.GetReceiptRequest{Log: log, Leaf: ridx(size)}), codes.OutOfRange},
			{"GetReceipt/size beyond the tree", receiptReq(&tlogv1.GetReceiptRequest{Log: log, Leaf: ridx(0), TreeSize: size + 1}), codes.OutOfRange},
			{"GetReceipt/size never signed", receiptReq(&tlogv1.GetReceiptRequest{Log: log, Leaf: ridx(0), TreeSize: unsigned}), codes.NotFound},
			{"GetReceipt/leaf hash of 31 bytes", receiptReq(&tlogv1.GetReceiptRequest{Log: log, Leaf: rhash(inLog[:31])}), codes.InvalidArgument},
			{"GetReceipt/no leaf", receiptReq(&tlogv1.GetReceiptRequest{Log: log}), codes.InvalidArgument},
			{"GetReceipt/leaf hash not in log", receiptReq(&tlogv1.GetReceiptRequest{Log: log, Leaf: rhash(notInLog[:])}), codes.NotFound},

			// AdminService.
			{"CreateLog/empty name", createReq("", ""), codes.InvalidArgument},
			{"CreateLog/name with a slash", createReq("a/b", ""), codes.InvalidArgument},
			{"CreateLog/name with a space", createReq("a b", ""), codes.InvalidArgument},
			{"CreateLog/name starting with '-'", createReq("-a", ""), codes.InvalidArgument},
			{"CreateLog/name '..'", createReq("..", ""), codes.InvalidArgument},
			{"CreateLog/name of 65 characters", createReq(strings.Repeat("a", 65), ""), codes.InvalidArgument},
			{"CreateLog/non-ASCII name", createReq("jörn", ""), codes.InvalidArgument},
			{"CreateLog/origin with a space", createReq("new", "example.com/a log"), codes.InvalidArgument},
			{"CreateLog/origin with '+'", createReq("new", "example.com/a+b"), codes.InvalidArgument},
			{"CreateLog/origin with a newline", createReq("new", "example.com/a\nb"), codes.InvalidArgument},
			{"CreateLog/origin of 257 bytes", createReq("new", strings.Repeat("o", 257)), codes.InvalidArgument},
			{"CreateLog/existing name", createReq(log, ""), codes.AlreadyExists},
			{"CreateLog/existing name, other origin", createReq(log, "example.com/other"), codes.AlreadyExists},
			{"GetLog/unknown log", getLogReq("nope"), codes.NotFound},
			{"ListLogs/negative page size", listReq(-1), codes.InvalidArgument},
			{"ListLogs/most negative page size", listReq(math.MinInt32), codes.InvalidArgument},
		}

		for _, c := range grpcCases {
			t.Run("grpc/"+c.name, func(t *testing.T) {
				before := e.snapshot(log)
				err := c.call(context.Background())
				if got := code(err); got != c.want {
					t.Errorf("code %v (%v), want %v", got, err, c.want)
				}
				if after := e.snapshot(log); after != before {
					t.Errorf("stored state changed:\n%+v\nto\n%+v", before, after)
				}
			})
		}

		type httpCase struct {
			name   string
			method string
			path   string
			body   []byte
			want   int
		}
		httpCases := []httpCase{
			{"add/empty body", "POST", "/logs/audit/add", nil, http.StatusBadRequest},
			{"add/65536 bytes", "POST", "/logs/audit/add", big, http.StatusRequestEntityTooLarge},
			{"add/1 MiB", "POST", "/logs/audit/add", bytes.Repeat([]byte{'y'}, 1<<20), http.StatusRequestEntityTooLarge},
			{"add/unknown log", "POST", "/logs/nope/add", ok, http.StatusNotFound},
			{"checkpoint/unknown log", "GET", "/logs/nope/checkpoint", nil, http.StatusNotFound},
			{"tile/unknown log", "GET", "/logs/nope/tile/0/000.p/1", nil, http.StatusNotFound},
			{"entries/unknown log", "GET", "/logs/nope/tile/entries/000.p/1", nil, http.StatusNotFound},
		}
		for _, p := range []string{
			"tile/0/1", "tile/00/000", "tile/0/000.p/0", "tile/0/000.p/256", "tile/0/000.p/01",
			"tile/0/000.p/", "tile/0/x000/001", "tile/0/x1/001", "tile/0/0000", "tile/64/000",
			"tile/-1/000", "tile/0/", "tile/", "tile/0", "tile/entries/1", "tile/entries/000.p/0",
			"tile/0/000/", "tile/data/000", "tile/8/0/000", "tile/0/x999/x999/x999/x999/x999/x999/999",
		} {
			httpCases = append(httpCases, httpCase{"malformed " + p, "GET", "/logs/audit/" + p, nil, http.StatusNotFound})
		}
		// The tree has 20 leaves: one partial level-0 tile of width 20.
		for _, p := range []string{
			"tile/0/000", "tile/0/000.p/21", "tile/0/001.p/1", "tile/0/x001/000", "tile/1/000.p/1",
			"tile/entries/000", "tile/entries/000.p/21", "tile/entries/001.p/1",
		} {
			httpCases = append(httpCases, httpCase{"beyond the tree " + p, "GET", "/logs/audit/" + p, nil, http.StatusNotFound})
		}
		for _, p := range []string{"tile/0/000.p/1", "tile/entries/000.p/1"} {
			httpCases = append(httpCases, httpCase{"empty log " + p, "GET", "/logs/empty/" + p, nil, http.StatusNotFound})
		}
		for _, c := range httpCases {
			t.Run("http/"+c.name, func(t *testing.T) {
				before := e.snapshot(log)
				resp, body := e.do(c.method, c.path, c.body)
				if resp.StatusCode != c.want {
					t.Errorf("%s %s: %s (%q), want %d", c.method, c.path, resp.Status, body, c.want)
				}
				if len(bytes.TrimSpace(body)) == 0 || strings.HasPrefix(string(body), "404 page not found") {
					t.Errorf("%s %s: %s without a reason: %q", c.method, c.path, resp.Status, body)
				}
				if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
					t.Errorf("%s %s: Content-Type %q", c.method, c.path, ct)
				}
				// An error must not be cached: the tile may exist later.
				if cc := resp.Header.Get("Cache-Control"); !strings.Contains(cc, "no-store") {
					t.Errorf("%s %s: %s with Cache-Control %q", c.method, c.path, resp.Status, cc)
				}
				if after := e.snapshot(log); after != before {
					t.Errorf("stored state changed:\n%+v\nto\n%+v", before, after)
				}
			})
		}

		if got := e.verifyLog(log); got != size {
			t.Fatalf("verified size %d, want %d", got, size)
		}
		e.verifyLog("empty")
	})
}
