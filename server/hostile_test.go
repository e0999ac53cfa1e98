package server_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime/debug"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/tlog-dev/tlog/pkg/tree"
	tlogv1 "github.com/tlog-dev/tlog/proto/tlog/v1"
	"github.com/tlog-dev/tlog/server"
	"github.com/tlog-dev/tlog/storage"
)

// This file sends hostile requests: the odd values that generated clients
// never send (raw protobuf, lying HTTP framing), at the edges of every
// integer and size. badinput_test.go holds the plainly wrong requests. Each
// case checks the precise answer, that nothing stored changed, and (by the
// test not crashing, and panicCheck for HTTP) that nothing panicked.

// rawGRPC serves s over gRPC, with gRPC's default server options (as the
// harness does: so a received message is limited to 4 MiB; tlogd sets
// Limits.MaxRequestBytes, 16 MiB by default), and returns a client
// connection for invokeRaw.
func rawGRPC(t *testing.T, s *server.Service) *grpc.ClientConn {
	t.Helper()
	lis := bufconn.Listen(1 << 20)
	gs := grpc.NewServer()
	server.RegisterGRPC(gs, s)
	go gs.Serve(lis)
	t.Cleanup(gs.Stop)
	conn, err := grpc.NewClient("passthrough:///bufconn",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// Raw protobuf fields, to build messages that generated code refuses to
// marshal (invalid UTF-8 in a string field) or never writes.
func fbytes(num protowire.Number, b string) []byte {
	return protowire.AppendBytes(protowire.AppendTag(nil, num, protowire.BytesType), []byte(b))
}

func fvarint(num protowire.Number, v uint64) []byte {
	return protowire.AppendVarint(protowire.AppendTag(nil, num, protowire.VarintType), v)
}

func cat(bs ...[]byte) []byte { return bytes.Join(bs, nil) }

func pb(m proto.Message) []byte {
	b, err := proto.Marshal(m)
	if err != nil {
		panic(err)
	}
	return b
}

// TestHostileGRPC sends odd and extreme values over gRPC, as raw bytes.
func TestHostileGRPC(t *testing.T) {
	forEachDriver(t, func(t *testing.T, open func(testing.TB) storage.Store) {
		e := start(t, open(t), []string{"audit", "empty"})
		// Checkpoints are signed at sizes 5 and 20.
		var data [][]byte
		for _, n := range []int{5, 15} {
			var batch [][]byte
			for range n {
				batch = append(batch, fmt.Appendf(nil, "entry %d", len(data)+len(batch)))
			}
			e.appendData("audit", batch...)
			data = append(data, batch...)
		}
		const size = 20
		conn := rawGRPC(t, e.svc)

		const (
			maxU64  = math.MaxUint64
			half    = 1 << 63
			kib10   = 10 << 10
			mAppend = tlogv1.LogService_Append_FullMethodName
			mCp     = tlogv1.LogService_GetCheckpoint_FullMethodName
			mIncl   = tlogv1.LogService_GetInclusionProof_FullMethodName
			mCons   = tlogv1.LogService_GetConsistencyProof_FullMethodName
			mEnts   = tlogv1.LogService_GetEntries_FullMethodName
			mEnt    = tlogv1.LogService_GetEntryAndProof_FullMethodName
			mRcpt   = tlogv1.LogService_GetReceipt_FullMethodName
			mCreate = tlogv1.AdminService_CreateLog_FullMethodName
			mGetLog = tlogv1.AdminService_GetLog_FullMethodName
			mList   = tlogv1.AdminService_ListLogs_FullMethodName
		)
		inLog := tree.LeafHash(data[10])
		longName := strings.Repeat("n", kib10)
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
		many := func(n, size int) *tlogv1.AppendRequest {
			req := &tlogv1.AppendRequest{Log: "audit"}
			for i := range n {
				d := make([]byte, size)
				copy(d, fmt.Sprint(i))
				req.Entries = append(req.Entries, &tlogv1.AppendEntry{Data: d})
			}
			return req
		}
		entry := func(d string) []byte { return fbytes(2, string(fbytes(1, d))) }
		unknown := cat(fvarint(99, maxU64), fbytes(100, "unknown"), protowire.AppendTag(nil, 101, protowire.Fixed64Type), make([]byte, 8),
			protowire.AppendTag(nil, 102, protowire.StartGroupType), fvarint(1, 1), protowire.AppendTag(nil, 102, protowire.EndGroupType))

		// gRPC itself answers a message that does not decode as protobuf
		// (truncated, an overlong varint, field number 0) or that has
		// invalid UTF-8 in a string field with INTERNAL "grpc: failed to
		// unmarshal the received message", and one over its size limit with
		// RESOURCE_EXHAUSTED ("received message larger than max"): the
		// handlers never see them.
		const undecodable = "failed to unmarshal"
		cases := []struct {
			name   string
			method string
			in     []byte
			want   codes.Code
			msg    string // in the status message, if not empty
		}{
			// Counts and sizes.
			{"Append/100,000 tiny entries", mAppend, pb(many(100000, 1+5)), codes.ResourceExhausted, "100000"},
			{"Append/5 MiB message (over 4 MiB)", mAppend, pb(many(80, 64<<10)), codes.ResourceExhausted, "larger than max"},
			{"Append/entry of 1 MiB", mAppend, pb(many(1, 1<<20)), codes.ResourceExhausted, ""},
			{"Append/10 KB log name", mAppend, pb(&tlogv1.AppendRequest{Log: longName, Entries: []*tlogv1.AppendEntry{{Data: []byte("x")}}}), codes.NotFound, ""},
			{"Append/log name invalid UTF-8", mAppend, cat(fbytes(1, "aud\xffit"), entry("x")), codes.Internal, undecodable},
			{"Append/idempotency key invalid UTF-8", mAppend, cat(fbytes(1, "audit"), fbytes(2, string(cat(fbytes(1, "x"), fbytes(2, "\xc0\x80"))))), codes.Internal, undecodable},
			{"Append/entries as a varint (wrong wire type)", mAppend, cat(fbytes(1, "audit"), fvarint(2, 1)), codes.InvalidArgument, ""},
			{"Append/entry truncated", mAppend, cat(fbytes(1, "audit"), []byte{0x12, 10, 0x0a, 1}), codes.Internal, undecodable},
			{"Append/empty entry among unknown fields", mAppend, cat(unknown, fbytes(1, "audit"), fbytes(2, string(unknown))), codes.InvalidArgument, ""},

			// Indices and sizes near 2^63 and 2^64.
			{"GetCheckpoint/size 2^63-1", mCp, pb(&tlogv1.GetCheckpointRequest{Log: "audit", TreeSize: half - 1}), codes.OutOfRange, ""},
			{"GetCheckpoint/size 2^63", mCp, pb(&tlogv1.GetCheckpointRequest{Log: "audit", TreeSize: half}), codes.OutOfRange, ""},
			{"GetInclusionProof/index 2^63", mIncl, pb(&tlogv1.GetInclusionProofRequest{Log: "audit", Leaf: idx(half)}), codes.OutOfRange, ""},
			{"GetInclusionProof/index 2^63-1", mIncl, pb(&tlogv1.GetInclusionProofRequest{Log: "audit", Leaf: idx(half - 1)}), codes.OutOfRange, ""},
			{"GetInclusionProof/size 2^64-1", mIncl, pb(&tlogv1.GetInclusionProofRequest{Log: "audit", Leaf: idx(0), TreeSize: maxU64}), codes.OutOfRange, ""},
			{"GetInclusionProof/index and size 2^64-1", mIncl, pb(&tlogv1.GetInclusionProofRequest{Log: "audit", Leaf: idx(maxU64), TreeSize: maxU64}), codes.OutOfRange, ""},
			{"GetConsistencyProof/from 2^64-1", mCons, pb(&tlogv1.GetConsistencyProofRequest{Log: "audit", FromSize: maxU64}), codes.OutOfRange, ""},
			{"GetConsistencyProof/from and to 2^64-1", mCons, pb(&tlogv1.GetConsistencyProofRequest{Log: "audit", FromSize: maxU64, ToSize: maxU64}), codes.OutOfRange, ""},
			{"GetConsistencyProof/from 2^64-1 to 5", mCons, pb(&tlogv1.GetConsistencyProofRequest{Log: "audit", FromSize: maxU64, ToSize: 5}), codes.InvalidArgument, ""},
			{"GetConsistencyProof/to 2^64-1", mCons, pb(&tlogv1.GetConsistencyProofRequest{Log: "audit", FromSize: 1, ToSize: maxU64}), codes.OutOfRange, ""},
			{"GetConsistencyProof/from 2^63 to latest", mCons, pb(&tlogv1.GetConsistencyProofRequest{Log: "audit", FromSize: half}), codes.OutOfRange, ""},
			{"GetConsistencyProof/from = to = size", mCons, pb(&tlogv1.GetConsistencyProofRequest{Log: "audit", FromSize: size, ToSize: size}), codes.OK, ""},
			{"GetEntries/start 2^64-1, end 0", mEnts, pb(&tlogv1.GetEntriesRequest{Log: "audit", Start: maxU64}), codes.OutOfRange, ""},
			{"GetEntries/start and end 2^64-1", mEnts, pb(&tlogv1.GetEntriesRequest{Log: "audit", Start: maxU64, End: maxU64}), codes.OutOfRange, ""},
			{"GetEntries/start 2^63, end 2^63+1", mEnts, pb(&tlogv1.GetEntriesRequest{Log: "audit", Start: half, End: half + 1}), codes.OutOfRange, ""},
			{"GetEntries/end 2^64-1 (up to the size)", mEnts, pb(&tlogv1.GetEntriesRequest{Log: "audit", Start: size - 1, End: maxU64}), codes.OK, ""},
			{"GetEntryAndProof/index 2^64-1", mEnt, pb(&tlogv1.GetEntryAndProofRequest{Log: "audit", Index: maxU64}), codes.OutOfRange, ""},
			{"GetEntryAndProof/index and size 2^64-1", mEnt, pb(&tlogv1.GetEntryAndProofRequest{Log: "audit", Index: maxU64, TreeSize: maxU64}), codes.OutOfRange, ""},
			{"GetEntryAndProof/index 2^63", mEnt, pb(&tlogv1.GetEntryAndProofRequest{Log: "audit", Index: half}), codes.OutOfRange, ""},
			{"GetReceipt/index 2^64-1", mRcpt, pb(&tlogv1.GetReceiptRequest{Log: "audit", Leaf: ridx(maxU64)}), codes.OutOfRange, ""},
			{"GetReceipt/size 2^64-1", mRcpt, pb(&tlogv1.GetReceiptRequest{Log: "audit", Leaf: ridx(0), TreeSize: maxU64}), codes.OutOfRange, ""},

			// Leaf hashes of the wrong size.
			{"GetInclusionProof/leaf hash of 1 MB", mIncl, pb(&tlogv1.GetInclusionProofRequest{Log: "audit", Leaf: hash(make([]byte, 1<<20))}), codes.InvalidArgument, "32 bytes"},
			{"GetInclusionProof/zero leaf hash", mIncl, pb(&tlogv1.GetInclusionProofRequest{Log: "audit", Leaf: hash(make([]byte, 32))}), codes.NotFound, ""},
			{"GetReceipt/empty leaf hash", mRcpt, pb(&tlogv1.GetReceiptRequest{Log: "audit", Leaf: rhash([]byte{})}), codes.InvalidArgument, "32 bytes"},
			{"GetReceipt/leaf hash of 33 bytes", mRcpt, pb(&tlogv1.GetReceiptRequest{Log: "audit", Leaf: rhash(append(inLog[:], 0))}), codes.InvalidArgument, "32 bytes"},
			{"GetReceipt/leaf hash of 1 MB", mRcpt, pb(&tlogv1.GetReceiptRequest{Log: "audit", Leaf: rhash(make([]byte, 1<<20))}), codes.InvalidArgument, "32 bytes"},
			{"GetReceipt/no leaf, size 2^64-1", mRcpt, pb(&tlogv1.GetReceiptRequest{Log: "audit", TreeSize: maxU64}), codes.InvalidArgument, "leaf"},
			// A oneof given twice on the wire: the last one wins (proto3).
			{"GetInclusionProof/index, then a short leaf hash", mIncl, cat(fbytes(1, "audit"), fvarint(2, 0), fbytes(3, string(inLog[:31]))), codes.InvalidArgument, "32 bytes"},
			{"GetInclusionProof/leaf hash, then index 2^64-1", mIncl, cat(fbytes(1, "audit"), fbytes(3, string(inLog[:])), fvarint(2, maxU64)), codes.OutOfRange, ""},

			// Log names.
			{"GetCheckpoint/empty name", mCp, pb(&tlogv1.GetCheckpointRequest{}), codes.NotFound, ""},
			{"GetCheckpoint/10 KB name", mCp, pb(&tlogv1.GetCheckpointRequest{Log: longName}), codes.NotFound, ""},
			{"GetCheckpoint/name invalid UTF-8", mCp, fbytes(1, "\xff"), codes.Internal, undecodable},
			{"GetCheckpoint/name with NUL", mCp, pb(&tlogv1.GetCheckpointRequest{Log: "audit\x00"}), codes.NotFound, ""},
			{"GetEntries/name invalid UTF-8", mEnts, fbytes(1, "audit\x80"), codes.Internal, undecodable},
			{"GetLog/empty name", mGetLog, nil, codes.NotFound, ""},
			{"GetLog/10 KB name", mGetLog, pb(&tlogv1.GetLogRequest{Name: longName}), codes.NotFound, ""},
			{"GetLog/name invalid UTF-8", mGetLog, fbytes(1, "\xed\xa0\x80"), codes.Internal, undecodable},
			{"GetReceipt/name '..'", mRcpt, pb(&tlogv1.GetReceiptRequest{Log: "..", Leaf: ridx(0)}), codes.NotFound, ""},

			// CreateLog.
			{"CreateLog/name invalid UTF-8", mCreate, fbytes(1, "new\xff"), codes.Internal, undecodable},
			{"CreateLog/origin invalid UTF-8", mCreate, cat(fbytes(1, "new"), fbytes(2, "example.com/\xff")), codes.Internal, undecodable},
			{"CreateLog/10 KB name", mCreate, pb(&tlogv1.CreateLogRequest{Name: longName}), codes.InvalidArgument, ""},
			{"CreateLog/name with NUL", mCreate, pb(&tlogv1.CreateLogRequest{Name: "new\x00"}), codes.InvalidArgument, ""},
			{"CreateLog/name with newline", mCreate, pb(&tlogv1.CreateLogRequest{Name: "new\n"}), codes.InvalidArgument, ""},
			{"CreateLog/10 KB origin", mCreate, pb(&tlogv1.CreateLogRequest{Name: "new", Origin: strings.Repeat("o", kib10)}), codes.InvalidArgument, "256"},
			{"CreateLog/origin with CR", mCreate, pb(&tlogv1.CreateLogRequest{Name: "new", Origin: "example.com/a\rb"}), codes.InvalidArgument, ""},
			{"CreateLog/origin with tab", mCreate, pb(&tlogv1.CreateLogRequest{Name: "new", Origin: "example.com/a\tb"}), codes.InvalidArgument, ""},
			{"CreateLog/origin with NUL", mCreate, pb(&tlogv1.CreateLogRequest{Name: "new", Origin: "example.com/\x00"}), codes.InvalidArgument, ""},
			{"CreateLog/origin with DEL", mCreate, pb(&tlogv1.CreateLogRequest{Name: "new", Origin: "example.com/\x7f"}), codes.InvalidArgument, ""},
			{"CreateLog/origin with U+FFFD", mCreate, pb(&tlogv1.CreateLogRequest{Name: "new", Origin: "example.com/\ufffd"}), codes.InvalidArgument, ""},
			{"CreateLog/origin with a no-break space", mCreate, pb(&tlogv1.CreateLogRequest{Name: "new", Origin: "example.com/a\u00a0b"}), codes.InvalidArgument, ""},
			{"CreateLog/origin with a line separator", mCreate, pb(&tlogv1.CreateLogRequest{Name: "new", Origin: "example.com/a\u2028b"}), codes.InvalidArgument, ""},
			{"CreateLog/origin with a C1 control", mCreate, pb(&tlogv1.CreateLogRequest{Name: "new", Origin: "example.com/a\u0085b"}), codes.InvalidArgument, ""},
			{"CreateLog/origin of spaces", mCreate, pb(&tlogv1.CreateLogRequest{Name: "new", Origin: "   "}), codes.InvalidArgument, ""},
			{"CreateLog/origin '+'", mCreate, pb(&tlogv1.CreateLogRequest{Name: "new", Origin: "+"}), codes.InvalidArgument, ""},

			// ListLogs.
			{"ListLogs/page size 2^31-1", mList, pb(&tlogv1.ListLogsRequest{PageSize: math.MaxInt32}), codes.OK, ""},
			{"ListLogs/page size -1 as a 10-byte varint", mList, fvarint(1, maxU64), codes.InvalidArgument, ""},
			{"ListLogs/page size 2^32+1 (int32 keeps 1)", mList, fvarint(1, 1<<32+1), codes.OK, ""},
			{"ListLogs/10 KB page token", mList, pb(&tlogv1.ListLogsRequest{PageToken: longName}), codes.OK, ""},
			{"ListLogs/page token invalid UTF-8", mList, fbytes(2, "\xff"), codes.Internal, undecodable},

			// Wire-level oddities: unknown fields are ignored (proto3); a
			// known field with the wrong wire type is an unknown field; the
			// last of a repeated scalar wins; malformed protobuf is gRPC's.
			{"GetCheckpoint/unknown fields", mCp, cat(unknown, pb(&tlogv1.GetCheckpointRequest{Log: "audit"}), unknown), codes.OK, ""},
			{"GetLog/unknown fields", mGetLog, cat(pb(&tlogv1.GetLogRequest{Name: "audit"}), unknown), codes.OK, ""},
			{"GetEntries/unknown fields", mEnts, cat(unknown, pb(&tlogv1.GetEntriesRequest{Log: "audit", Start: 3})), codes.OK, ""},
			{"GetCheckpoint/log as a varint", mCp, fvarint(1, 7), codes.NotFound, ""},
			{"GetCheckpoint/tree size as bytes", mCp, cat(fbytes(1, "audit"), fbytes(2, "\x05")), codes.OK, ""},
			{"GetCheckpoint/log twice, last wins", mCp, cat(fbytes(1, "nope"), fbytes(1, "audit")), codes.OK, ""},
			{"GetCheckpoint/tree size twice, last wins", mCp, cat(fbytes(1, "audit"), fvarint(2, maxU64), fvarint(2, 5)), codes.OK, ""},
			{"GetCheckpoint/11-byte varint", mCp, cat(fbytes(1, "audit"), []byte{0x10}, bytes.Repeat([]byte{0xff}, 10), []byte{0x01}), codes.Internal, undecodable},
			{"GetCheckpoint/truncated", mCp, []byte{0x0a, 5, 'a'}, codes.Internal, undecodable},
			{"GetCheckpoint/field number 0", mCp, []byte{0x00, 0x01}, codes.Internal, undecodable},
			{"GetCheckpoint/end group without start", mCp, protowire.AppendTag(nil, 5, protowire.EndGroupType), codes.Internal, undecodable},
		}
		for _, c := range cases {
			t.Run("grpc/"+c.name, func(t *testing.T) {
				before, beforeEmpty := e.snapshot("audit"), e.snapshot("empty")
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				defer cancel()
				_, err := invokeRaw(ctx, conn, c.method, c.method == mEnts, c.in)
				if got := status.Code(err); got != c.want || !strings.Contains(status.Convert(err).Message(), c.msg) {
					t.Errorf("%v, want %v with %q", err, c.want, c.msg)
				}
				if after := e.snapshot("audit"); after != before {
					t.Errorf("stored state changed:\n%+v\nto\n%+v", before, after)
				}
				if after := e.snapshot("empty"); after != beforeEmpty {
					t.Errorf("stored state of another log changed:\n%+v\nto\n%+v", beforeEmpty, after)
				}
			})
		}
		if got := e.verifyLog("audit"); got != size {
			t.Fatalf("verified size %d, want %d", got, size)
		}
		e.verifyLog("empty")
	})
}

// panicCheck fails the test if h panics: net/http would recover the panic
// and only drop the connection.
func panicCheck(t *testing.T, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if v := recover(); v != nil {
				t.Errorf("handler panicked on %s %q: %v\n%s", r.Method, r.RequestURI, v, debug.Stack())
				panic(http.ErrAbortHandler)
			}
		}()
		h.ServeHTTP(w, r)
	})
}

// rawHTTP writes req, as it is, on a new connection to addr, closes the
// connection's write side if closeWrite, and reads the response. It answers
// an empty response if the server closes the connection without one.
func rawHTTP(t *testing.T, addr, req string, closeWrite bool) (*http.Response, []byte) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(time.Minute))
	// The server may answer (and close) before it reads all of a large
	// request: write concurrently, and ignore write errors.
	go func() {
		io.WriteString(conn, req)
		if closeWrite {
			conn.(*net.TCPConn).CloseWrite()
		}
	}()
	method, _, _ := strings.Cut(req, " ")
	resp, err := http.ReadResponse(bufio.NewReader(conn), &http.Request{Method: method})
	if err != nil {
		t.Fatalf("reading the response: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading the response body: %v", err)
	}
	return resp, body
}

// httpReq returns an HTTP/1.1 request with the given head lines and body.
func httpReq(method, target string, body string, head ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: tlog.test\r\nConnection: close\r\n", method, target)
	for _, h := range head {
		b.WriteString(h + "\r\n")
	}
	b.WriteString("\r\n" + body)
	return b.String()
}

// chunked encodes chunks in the chunked transfer coding, with the final
// empty chunk.
func chunked(chunks ...string) string {
	var b strings.Builder
	for _, c := range chunks {
		fmt.Fprintf(&b, "%x\r\n%s\r\n", len(c), c)
	}
	b.WriteString("0\r\n\r\n")
	return b.String()
}

// TestHostileHTTP sends odd and lying HTTP requests, byte for byte.
func TestHostileHTTP(t *testing.T) {
	forEachDriver(t, func(t *testing.T, open func(testing.TB) storage.Store) {
		e := start(t, open(t), []string{"audit", "empty"})
		var data [][]byte
		for i := range 20 {
			data = append(data, fmt.Appendf(nil, "entry %d", i))
		}
		e.appendData("audit", data...)
		srv := httptest.NewServer(panicCheck(t, server.HTTPHandler(e.svc)))
		t.Cleanup(srv.Close)
		addr := srv.Listener.Addr().String()
		cp, err := e.store.LatestCheckpoint(context.Background(), "audit")
		if err != nil {
			t.Fatal(err)
		}

		const (
			add  = "/logs/audit/add"
			cpt  = "/logs/audit/checkpoint"
			tile = "/logs/audit/tile/0/000.p/20"
			get  = "GET, HEAD"
			kb8  = 8 << 10
		)
		big := strings.Repeat("x", 40<<10)
		var kib65 []string
		for range 65 {
			kib65 = append(kib65, strings.Repeat("z", 1<<10))
		}
		cases := []struct {
			name       string
			req        string
			closeWrite bool
			want       int
			allow      string // the Allow header of a 405
			location   string // the Location header of a redirect
			body       string // in the response body, if not empty
		}{
			// Lying or odd framing of add bodies: nothing is appended.
			{name: "add/Content-Length longer than the body", req: httpReq("POST", add, "short", "Content-Length: 100"), closeWrite: true, want: 400, body: "reading body"},
			{name: "add/Content-Length 0 with a body", req: httpReq("POST", add, "a body", "Content-Length: 0"), want: 400, body: "empty"},
			{name: "add/negative Content-Length", req: httpReq("POST", add, "x", "Content-Length: -1"), want: 400},
			{name: "add/Content-Length over int64", req: httpReq("POST", add, "x", "Content-Length: 99999999999999999999"), want: 400},
			{name: "add/two different Content-Lengths", req: httpReq("POST", add, "xx", "Content-Length: 1", "Content-Length: 2"), want: 400},
			{name: "add/Content-Length 1 GiB, 80 KiB sent", req: httpReq("POST", add, big+big, "Content-Length: 1073741824"), want: 413, body: "65535"},
			{name: "add/chunked, 80 KiB", req: httpReq("POST", add, chunked(big, big), "Transfer-Encoding: chunked"), want: 413, body: "65535"},
			{name: "add/chunked, 65 KiB in 1 KiB chunks", req: httpReq("POST", add, chunked(kib65...), "Transfer-Encoding: chunked"), want: 413},
			{name: "add/chunked, bad chunk size", req: httpReq("POST", add, "zz\r\nabc\r\n0\r\n\r\n", "Transfer-Encoding: chunked"), want: 400, body: "reading body"},
			{name: "add/chunked, truncated", req: httpReq("POST", add, "10\r\nabc", "Transfer-Encoding: chunked"), closeWrite: true, want: 400, body: "reading body"},
			{name: "add/chunked, empty", req: httpReq("POST", add, chunked(), "Transfer-Encoding: chunked"), want: 400, body: "empty"},
			// Transfer-Encoding overrides Content-Length (RFC 9112 6.3;
			// net/http then closes the connection): the body is empty.
			{name: "add/empty chunked body with Content-Length 3", req: httpReq("POST", add, chunked()+"abc", "Transfer-Encoding: chunked", "Content-Length: 3"), want: 400, body: "empty"},
			{name: "add/unknown Transfer-Encoding", req: httpReq("POST", add, "abc", "Transfer-Encoding: gzip"), want: 501},
			{name: "add/no body", req: httpReq("POST", add, ""), want: 400, body: "empty"},
			{name: "add/unknown log, with a body", req: httpReq("POST", "/logs/nope/add", "x", "Content-Length: 1"), want: 404},
			{name: "add/log name invalid UTF-8", req: httpReq("POST", "/logs/%FF/add", "x", "Content-Length: 1"), want: 404},

			// Methods: 405 with Allow.
			{name: "GET add", req: httpReq("GET", add, ""), want: 405, allow: "POST"},
			{name: "HEAD add", req: httpReq("HEAD", add, ""), want: 405, allow: "POST"},
			{name: "PUT add", req: httpReq("PUT", add, "x", "Content-Length: 1"), want: 405, allow: "POST"},
			{name: "DELETE add", req: httpReq("DELETE", add, ""), want: 405, allow: "POST"},
			{name: "PATCH add", req: httpReq("PATCH", add, "x", "Content-Length: 1"), want: 405, allow: "POST"},
			{name: "OPTIONS add", req: httpReq("OPTIONS", add, ""), want: 405, allow: "POST"},
			{name: "made-up method on add", req: httpReq("FROB", add, ""), want: 405, allow: "POST"},
			{name: "POST checkpoint", req: httpReq("POST", cpt, "x", "Content-Length: 1"), want: 405, allow: get},
			{name: "PUT checkpoint", req: httpReq("PUT", cpt, "x", "Content-Length: 1"), want: 405, allow: get},
			{name: "DELETE checkpoint", req: httpReq("DELETE", cpt, ""), want: 405, allow: get},
			{name: "DELETE tile", req: httpReq("DELETE", tile, ""), want: 405, allow: get},
			{name: "PUT tile", req: httpReq("PUT", tile, "x", "Content-Length: 1"), want: 405, allow: get},
			{name: "POST /logs", req: httpReq("POST", "/logs", "x", "Content-Length: 1"), want: 405, allow: get},
			{name: "DELETE /healthz", req: httpReq("DELETE", "/healthz", ""), want: 405, allow: get},
			{name: "PUT unknown path", req: httpReq("PUT", "/nope", "x", "Content-Length: 1"), want: 404},

			// Paths: escaped slashes, dot segments, double slashes, long
			// paths, invalid UTF-8.
			{name: "%2F in the log name", req: httpReq("GET", "/logs/audit%2Fx/checkpoint", ""), want: 404, body: "not found"},
			{name: "%2F in a tile path", req: httpReq("GET", "/logs/audit/tile%2F0%2F000.p%2F20", ""), want: 404},
			{name: "%2F..%2F in the log name of an add", req: httpReq("POST", "/logs/x%2F..%2Faudit/add", "x", "Content-Length: 1"), want: 404},
			{name: "escaped letters in the log name", req: httpReq("GET", "/logs/aud%69t/checkpoint", ""), want: 200, body: string(cp.Note)},
			{name: "'..' segment", req: httpReq("GET", "/logs/x/../audit/checkpoint", ""), want: 307, location: cpt},
			{name: "'..' above the root", req: httpReq("GET", "/../../logs/audit/checkpoint", ""), want: 307, location: cpt},
			{name: "'.' segment in an add", req: httpReq("POST", "/logs/audit/./add", "x", "Content-Length: 1"), want: 307, location: add},
			{name: "leading double slash", req: httpReq("GET", "//logs/audit/checkpoint", ""), want: 307, location: cpt},
			{name: "double slash for the log name", req: httpReq("GET", "/logs//checkpoint", ""), want: 307, location: "/logs/checkpoint"},
			{name: "double slash in a tile path", req: httpReq("GET", "/logs/audit/tile//0/000.p/20", ""), want: 307, location: tile},
			{name: "tile without a slash", req: httpReq("GET", "/logs/audit/tile", ""), want: 307, location: "/logs/audit/tile/"},
			{name: "8 KB path", req: httpReq("GET", "/"+strings.Repeat("a", kb8), ""), want: 404},
			{name: "8 KB log name", req: httpReq("GET", "/logs/"+strings.Repeat("a", kb8)+"/checkpoint", ""), want: 404},
			{name: "8 KB tile path", req: httpReq("GET", "/logs/audit/tile/0/"+strings.Repeat("x999/", kb8/5)+"000", ""), want: 404},
			{name: "2 MB path", req: httpReq("GET", "/"+strings.Repeat("a", 2<<20), ""), want: 431},
			{name: "log name %FF", req: httpReq("GET", "/logs/%FF/checkpoint", ""), want: 404},
			{name: "log name %00", req: httpReq("GET", "/logs/%00/checkpoint", ""), want: 404},
			{name: "raw byte 0xFF in the path", req: httpReq("GET", "/logs/\xff/checkpoint", ""), want: 404},
			{name: "raw NUL in the path", req: httpReq("GET", "/logs/\x00/checkpoint", ""), want: 400},
			{name: "bad escape in the path", req: httpReq("GET", "/logs/%zz/checkpoint", ""), want: 400},
			{name: "bad escape in the query", req: httpReq("GET", cpt+"?a=%zz", ""), want: 200},
			{name: "absolute-form target", req: httpReq("GET", "http://other.example"+cpt, ""), want: 200},

			// Tile paths: leading zeros, overflowing numbers, signs.
			{name: "tile/0/0000", req: httpReq("GET", "/logs/audit/tile/0/0000", ""), want: 404},
			{name: "tile/00/000.p/20", req: httpReq("GET", "/logs/audit/tile/00/000.p/20", ""), want: 404},
			{name: "tile/0/000.p/020", req: httpReq("GET", "/logs/audit/tile/0/000.p/020", ""), want: 404},
			{name: "tile/0/x000/000.p/20", req: httpReq("GET", "/logs/audit/tile/0/x000/000.p/20", ""), want: 404},
			{name: "level 2^64", req: httpReq("GET", "/logs/audit/tile/18446744073709551616/000", ""), want: 404},
			{name: "level 2^63-1", req: httpReq("GET", "/logs/audit/tile/9223372036854775807/000", ""), want: 404},
			{name: "width 2^64+1", req: httpReq("GET", "/logs/audit/tile/0/000.p/18446744073709551617", ""), want: 404},
			{name: "width +1", req: httpReq("GET", "/logs/audit/tile/0/000.p/+1", ""), want: 404},
			{name: "width -1", req: httpReq("GET", "/logs/audit/tile/0/000.p/-1", ""), want: 404},
			{name: "index of 8 groups (over 2^64)", req: httpReq("GET", "/logs/audit/tile/0/x999/x999/x999/x999/x999/x999/x999/999", ""), want: 404},
			{name: "index 2^56, the last level-0 tile", req: httpReq("GET", "/logs/audit/tile/0/x072/x057/x594/x037/x927/936", ""), want: 404},
			{name: "entries index over 2^64", req: httpReq("GET", "/logs/audit/tile/entries/x999/x999/x999/x999/x999/x999/x999/999.p/1", ""), want: 404},
			{name: "trailing slash", req: httpReq("GET", tile+"/", ""), want: 404},
			{name: "query on a tile", req: httpReq("GET", tile+"?x=1", ""), want: 200},

			// Range and HEAD: Range is ignored (the whole resource, 200);
			// HEAD is GET without a body.
			{name: "Range on the checkpoint", req: httpReq("GET", cpt, "", "Range: bytes=0-3"), want: 200, body: string(cp.Note)},
			{name: "overflowing Range", req: httpReq("GET", cpt, "", "Range: bytes=99999999999999999999-"), want: 200, body: string(cp.Note)},
			{name: "Range on a tile", req: httpReq("GET", tile, "", "Range: bytes=-1"), want: 200},
			{name: "HEAD checkpoint", req: httpReq("HEAD", cpt, ""), want: 200},
			{name: "HEAD tile", req: httpReq("HEAD", tile, ""), want: 200},
			{name: "HEAD unknown log", req: httpReq("HEAD", "/logs/nope/checkpoint", ""), want: 404},
			{name: "HEAD /logs", req: httpReq("HEAD", "/logs", ""), want: 200},

			// Broken request heads: net/http answers 400 itself.
			{name: "no Host", req: "GET " + cpt + " HTTP/1.1\r\nConnection: close\r\n\r\n", want: 400},
			{name: "header name invalid UTF-8", req: httpReq("GET", cpt, "", "X-\xff: 1"), want: 400},
			{name: "2 MB header", req: httpReq("GET", cpt, "", "X-Big: "+strings.Repeat("h", 2<<20)), want: 431},
		}
		for _, c := range cases {
			t.Run("http/"+c.name, func(t *testing.T) {
				before, beforeEmpty := e.snapshot("audit"), e.snapshot("empty")
				resp, body := rawHTTP(t, addr, c.req, c.closeWrite)
				if resp.StatusCode != c.want {
					t.Errorf("%s (%q), want %d", resp.Status, body, c.want)
				}
				if got := resp.Header.Get("Allow"); got != c.allow {
					t.Errorf("Allow %q, want %q", got, c.allow)
				}
				if got := resp.Header.Get("Location"); got != c.location {
					t.Errorf("Location %q, want %q", got, c.location)
				}
				if !bytes.Contains(body, []byte(c.body)) {
					t.Errorf("body %q, want one containing %q", body, c.body)
				}
				if c.want >= 400 && !strings.HasPrefix(c.req, "HEAD ") && len(bytes.TrimSpace(body)) == 0 {
					t.Errorf("%s without a reason", resp.Status)
				}
				if after := e.snapshot("audit"); after != before {
					t.Errorf("stored state changed:\n%+v\nto\n%+v", before, after)
				}
				if after := e.snapshot("empty"); after != beforeEmpty {
					t.Errorf("stored state of another log changed:\n%+v\nto\n%+v", beforeEmpty, after)
				}
			})
		}
		if got := e.verifyLog("audit"); got != 20 {
			t.Fatalf("verified size %d, want 20", got)
		}
		e.verifyLog("empty")
	})
}
