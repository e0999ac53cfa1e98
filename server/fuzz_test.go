package server_test

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strconv"
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

	"github.com/tlog-dev/tlog/pkg/checkpoint"
	"github.com/tlog-dev/tlog/pkg/tile"
	"github.com/tlog-dev/tlog/pkg/tree"
	tlogv1 "github.com/tlog-dev/tlog/proto/tlog/v1"
	"github.com/tlog-dev/tlog/server"
	"github.com/tlog-dev/tlog/server/sequencer"
	"github.com/tlog-dev/tlog/storage"
	"github.com/tlog-dev/tlog/storage/embedded"
)

// fuzzEnv is one service on the embedded store, with two logs: "audit",
// holding 300 entries ("entry 0" ...) with checkpoints signed at sizes 20
// and 300, and "empty". Its HTTP handler is called in-process; its gRPC
// server is reached over bufconn, through gRPC's own decoding.
type fuzzEnv struct {
	store storage.Store
	svc   *server.Service
	http  http.Handler
	conn  *grpc.ClientConn
}

const fuzzSize = 300

func newFuzzEnv(f *testing.F) *fuzzEnv {
	f.Helper()
	ctx := context.Background()
	store, err := embedded.Open(filepath.Join(f.TempDir(), "tlog.db"), embedded.Config{Logger: testLogger(f)})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { store.Close() })
	svc, err := server.New(ctx, server.Config{
		Store:             store,
		KeyDir:            filepath.Join(f.TempDir(), "keys"),
		Sequencer:         sequencer.Config{MaxBatchAge: time.Millisecond},
		MaxEntriesPerRead: 7,
		Logger:            testLogger(f),
	})
	if err != nil {
		f.Fatal(err)
	}
	for _, name := range []string{"audit", "empty"} {
		if _, err := svc.CreateLog(ctx, name, ""); err != nil {
			f.Fatal(err)
		}
	}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- svc.Run(runCtx) }()
	f.Cleanup(func() { cancel(); <-done })
	for _, r := range [][2]int{{0, 20}, {20, fuzzSize}} {
		var es []sequencer.Entry
		for i := r[0]; i < r[1]; i++ {
			es = append(es, sequencer.Entry{Data: fmt.Appendf(nil, "entry %d", i)})
		}
		if _, err := svc.Append(ctx, "audit", es); err != nil {
			f.Fatal(err)
		}
	}

	lis := bufconn.Listen(1 << 20)
	gs := grpc.NewServer()
	server.RegisterGRPC(gs, svc)
	go gs.Serve(lis)
	f.Cleanup(gs.Stop)
	conn, err := grpc.NewClient("passthrough:///bufconn",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { conn.Close() })
	return &fuzzEnv{store: store, svc: svc, http: server.HTTPHandler(svc), conn: conn}
}

// state is every log's name, witness policy and latest stored checkpoint:
// what a request that fails (or only reads) must leave as it was.
func (e *fuzzEnv) state(t *testing.T) string {
	t.Helper()
	ctx := context.Background()
	logs, err := e.store.ListLogs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, l := range logs {
		cp, err := e.store.LatestCheckpoint(ctx, l.Name)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "%s\n%q\n%s\n", l.Name, l.WitnessPolicy, cp.Note)
	}
	return b.String()
}

// httpRequest builds the request that net/http's server would hand to the
// handler for this request line and body, or returns nil if the server
// would refuse the request line itself (with 400, before any handler).
func httpRequest(method, target string, body []byte) *http.Request {
	if method == "" || strings.ContainsAny(target, " \r\n") {
		return nil
	}
	u, err := url.ParseRequestURI(target)
	if err != nil {
		return nil
	}
	req, err := http.NewRequest(method, "http://tlog.test/", bytes.NewReader(body))
	if err != nil {
		return nil // not a valid method token
	}
	req.URL, req.RequestURI = u, target
	return req
}

// httpStatuses are the statuses the HTTP API documents for requests that
// can be answered without a storage fault or a full sequencer. 307 is
// net/http's redirect (same method and body) to the clean path of a path
// with "//", "." or "..", and from "tile" to "tile/".
var httpStatuses = map[int]bool{200: true, 307: true, 400: true, 404: true, 405: true, 413: true}

// checkHTTPAdd checks the answer to an add that succeeded: the index on the
// first line, in the signed checkpoint that follows, at which the store
// holds body.
func (e *fuzzEnv) checkHTTPAdd(t *testing.T, log string, resp []byte, leafHeader string, body []byte) {
	t.Helper()
	first, rest, _ := bytes.Cut(resp, []byte("\n"))
	idx, err := strconv.ParseUint(string(first), 10, 64)
	if err != nil {
		t.Fatalf("add: first line %q: %v", first, err)
	}
	v, err := e.svc.Verifier(log)
	if err != nil {
		t.Fatal(err)
	}
	cp, _, err := checkpoint.Open(bytes.TrimPrefix(rest, []byte("\n")), v)
	if err != nil {
		t.Fatalf("add: checkpoint does not verify: %v\n%s", err, resp)
	}
	if idx >= cp.Size {
		t.Fatalf("add: index %d not in the tree of size %d", idx, cp.Size)
	}
	if lh := tree.LeafHash(body); leafHeader != hex.EncodeToString(lh[:]) {
		t.Fatalf("add: X-Tlog-Leaf-Hash %q, want %x", leafHeader, lh)
	}
	es, err := e.store.ReadEntries(context.Background(), log, idx, idx+1)
	if err != nil || len(es) != 1 || !bytes.Equal(es[0].Data, body) {
		t.Fatalf("add: entry %d is not the body: %v %v", idx, es, err)
	}
}

// FuzzHTTPHandler sends arbitrary requests to the HTTP API: none may panic
// or get an undocumented status, an error must say why, and only an add
// that succeeds may change what is stored.
func FuzzHTTPHandler(f *testing.F) {
	e := newFuzzEnv(f)
	for _, s := range []struct{ method, target, body string }{
		{"POST", "/logs/audit/add", "a new entry"},
		{"POST", "/logs/audit/add", "entry 7"},
		{"POST", "/logs/audit/add", ""},
		{"POST", "/logs/nope/add", "x"},
		{"GET", "/logs/audit/add", ""},
		{"PUT", "/logs/audit/add", "x"},
		{"GET", "/logs/audit/checkpoint", ""},
		{"HEAD", "/logs/audit/checkpoint", ""},
		{"DELETE", "/logs/audit/checkpoint", ""},
		{"GET", "/logs/empty/checkpoint", ""},
		{"GET", "/logs/%FF/checkpoint", ""},
		{"GET", "/logs/audit/tile/0/000", ""},
		{"GET", "/logs/audit/tile/0/001.p/44", ""},
		{"GET", "/logs/audit/tile/1/000.p/1", ""},
		{"GET", "/logs/audit/tile/entries/000", ""},
		{"GET", "/logs/audit/tile/entries/001.p/44", ""},
		{"GET", "/logs/audit/tile/0/x001/000", ""},
		{"GET", "/logs/audit/tile/0/000.p/0", ""},
		{"GET", "/logs/audit/tile", ""},
		{"GET", "/logs/audit%2Ftile/0/000", ""},
		{"GET", "/logs/audit/../audit/checkpoint", ""},
		{"GET", "//logs/audit/checkpoint", ""},
		{"GET", "/logs", ""},
		{"GET", "/healthz", ""},
		{"GET", "/readyz", ""},
		{"GET", "http://tlog.test/logs/audit/checkpoint", ""},
		{"GET", "*", ""},
	} {
		f.Add(s.method, s.target, []byte(s.body))
	}
	f.Fuzz(func(t *testing.T, method, target string, body []byte) {
		req := httpRequest(method, target, body)
		if req == nil {
			return
		}
		before := e.state(t)
		rec := httptest.NewRecorder()
		e.http.ServeHTTP(rec, req)
		after := e.state(t)

		code, out := rec.Code, rec.Body.Bytes()
		if !httpStatuses[code] {
			t.Fatalf("%s %q: undocumented status %d: %q", method, target, code, out)
		}
		// net/http's mux answers a bare 400 to "*" (except OPTIONS, which
		// its server answers first).
		if code >= 400 && len(bytes.TrimSpace(out)) == 0 && target != "*" {
			t.Fatalf("%s %q: %d without a reason", method, target, code)
		}
		if code == 405 && rec.Header().Get("Allow") == "" {
			t.Fatalf("%s %q: 405 without Allow", method, target)
		}
		if code == 200 && req.Method == "POST" {
			e.checkHTTPAdd(t, req.PathValue("log"), out, rec.Header().Get("X-Tlog-Leaf-Hash"), body)
			return
		}
		if after != before {
			t.Fatalf("%s %q: %d, and the stored state changed", method, target, code)
		}
	})
}

// FuzzHTTPAdd posts arbitrary bodies to /logs/audit/add: an empty body is
// 400, one over tile.MaxEntrySize is 413 (and changes nothing), any other
// is appended, verifiably, as it was sent.
func FuzzHTTPAdd(f *testing.F) {
	e := newFuzzEnv(f)
	for _, b := range [][]byte{
		nil, []byte("a new entry"), []byte("entry 3"), {0}, []byte("\xff\xfe\n\r\n"),
		bytes.Repeat([]byte{'x'}, tile.MaxEntrySize), bytes.Repeat([]byte{'y'}, tile.MaxEntrySize+1),
	} {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		before := e.state(t)
		rec := httptest.NewRecorder()
		e.http.ServeHTTP(rec, httptest.NewRequest("POST", "/logs/audit/add", bytes.NewReader(body)))
		after := e.state(t)
		want := http.StatusOK
		switch {
		case len(body) == 0:
			want = http.StatusBadRequest
		case len(body) > tile.MaxEntrySize:
			want = http.StatusRequestEntityTooLarge
		}
		if rec.Code != want {
			t.Fatalf("add of %d bytes: %d %q, want %d", len(body), rec.Code, rec.Body.Bytes(), want)
		}
		if rec.Code == http.StatusOK {
			e.checkHTTPAdd(t, "audit", rec.Body.Bytes(), rec.Header().Get("X-Tlog-Leaf-Hash"), body)
		} else if after != before {
			t.Fatalf("add of %d bytes: %d, and the stored state changed", len(body), rec.Code)
		}
	})
}

// rawCodec sends and receives gRPC messages as the bytes they are, so that
// tests can send what no generated client would. It answers to the name
// "proto", so that the server decodes with its usual codec.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) { return *v.(*[]byte), nil }
func (rawCodec) Unmarshal(data []byte, v any) error {
	*v.(*[]byte) = append([]byte(nil), data...)
	return nil
}
func (rawCodec) Name() string { return "proto" }

// invokeRaw calls a gRPC method with the raw request message in and returns
// the raw response messages (one for a unary method).
func invokeRaw(ctx context.Context, conn *grpc.ClientConn, method string, streams bool, in []byte) ([][]byte, error) {
	opt := grpc.ForceCodec(rawCodec{})
	if !streams {
		var out []byte
		if err := conn.Invoke(ctx, method, &in, &out, opt); err != nil {
			return nil, err
		}
		return [][]byte{out}, nil
	}
	s, err := conn.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true}, method, opt)
	if err != nil {
		return nil, err
	}
	// A send error (io.EOF) means the server already ended the call: its
	// status comes with RecvMsg.
	if err := s.SendMsg(&in); err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	if err := s.CloseSend(); err != nil {
		return nil, err
	}
	var outs [][]byte
	for {
		var out []byte
		if err := s.RecvMsg(&out); err != nil {
			if errors.Is(err, io.EOF) {
				return outs, nil
			}
			return outs, err
		}
		outs = append(outs, out)
	}
}

// grpcMethod is one method of the API, with the codes it documents for
// well-formed requests when storage works and the sequencer is not full.
type grpcMethod struct {
	name     string
	streams  bool
	writes   bool // a success may change stored state
	req      func() proto.Message
	resp     func() proto.Message
	extra    []codes.Code // beside OK, InvalidArgument, NotFound, OutOfRange
	examples []proto.Message
}

func (m grpcMethod) documents(c codes.Code) bool {
	switch c {
	case codes.OK, codes.InvalidArgument, codes.NotFound, codes.OutOfRange:
		return true
	}
	for _, x := range m.extra {
		if c == x {
			return true
		}
	}
	return false
}

var leaf3 = tree.LeafHash([]byte("entry 3"))

var grpcMethods = []grpcMethod{
	{
		name: tlogv1.LogService_Append_FullMethodName, writes: true,
		req:   func() proto.Message { return new(tlogv1.AppendRequest) },
		resp:  func() proto.Message { return new(tlogv1.AppendResponse) },
		extra: []codes.Code{codes.ResourceExhausted},
		examples: []proto.Message{
			&tlogv1.AppendRequest{Log: "audit", Entries: []*tlogv1.AppendEntry{{Data: []byte("fuzz")}}},
			&tlogv1.AppendRequest{Log: "audit", Entries: []*tlogv1.AppendEntry{{Data: []byte("x"), IdempotencyKey: "k"}, {Data: []byte("entry 3")}}},
			&tlogv1.AppendRequest{Log: "empty", Entries: []*tlogv1.AppendEntry{{Data: []byte{}}}},
		},
	},
	{
		name: tlogv1.LogService_GetCheckpoint_FullMethodName,
		req:  func() proto.Message { return new(tlogv1.GetCheckpointRequest) },
		resp: func() proto.Message { return new(tlogv1.GetCheckpointResponse) },
		// FailedPrecondition: a witnessed checkpoint of a log without a
		// witness policy.
		extra: []codes.Code{codes.FailedPrecondition},
		examples: []proto.Message{
			&tlogv1.GetCheckpointRequest{Log: "audit"},
			&tlogv1.GetCheckpointRequest{Log: "audit", TreeSize: 20},
			&tlogv1.GetCheckpointRequest{Log: "audit", RequireWitnessPolicy: true},
		},
	},
	{
		name: tlogv1.LogService_GetInclusionProof_FullMethodName,
		req:  func() proto.Message { return new(tlogv1.GetInclusionProofRequest) },
		resp: func() proto.Message { return new(tlogv1.GetInclusionProofResponse) },
		examples: []proto.Message{
			&tlogv1.GetInclusionProofRequest{Log: "audit", Leaf: &tlogv1.GetInclusionProofRequest_Index{Index: 5}, TreeSize: 20},
			&tlogv1.GetInclusionProofRequest{Log: "audit", Leaf: &tlogv1.GetInclusionProofRequest_LeafHash{LeafHash: leaf3[:]}},
		},
	},
	{
		name: tlogv1.LogService_GetConsistencyProof_FullMethodName,
		req:  func() proto.Message { return new(tlogv1.GetConsistencyProofRequest) },
		resp: func() proto.Message { return new(tlogv1.GetConsistencyProofResponse) },
		examples: []proto.Message{
			&tlogv1.GetConsistencyProofRequest{Log: "audit", FromSize: 20, ToSize: fuzzSize},
			&tlogv1.GetConsistencyProofRequest{Log: "audit", FromSize: 1},
		},
	},
	{
		name: tlogv1.LogService_GetEntries_FullMethodName, streams: true,
		req:  func() proto.Message { return new(tlogv1.GetEntriesRequest) },
		resp: func() proto.Message { return new(tlogv1.GetEntriesResponse) },
		examples: []proto.Message{
			&tlogv1.GetEntriesRequest{Log: "audit", Start: 250, End: 260},
			&tlogv1.GetEntriesRequest{Log: "audit", Start: 290},
		},
	},
	{
		name: tlogv1.LogService_GetEntryAndProof_FullMethodName,
		req:  func() proto.Message { return new(tlogv1.GetEntryAndProofRequest) },
		resp: func() proto.Message { return new(tlogv1.GetEntryAndProofResponse) },
		examples: []proto.Message{
			&tlogv1.GetEntryAndProofRequest{Log: "audit", Index: 7, TreeSize: 20},
		},
	},
	{
		name:  tlogv1.LogService_GetReceipt_FullMethodName,
		req:   func() proto.Message { return new(tlogv1.GetReceiptRequest) },
		resp:  func() proto.Message { return new(tlogv1.GetReceiptResponse) },
		extra: []codes.Code{codes.FailedPrecondition}, // as GetCheckpoint
		examples: []proto.Message{
			&tlogv1.GetReceiptRequest{Log: "audit", Leaf: &tlogv1.GetReceiptRequest_Index{Index: 3}, RequireWitnessPolicy: true, IncludeCosignatures: true},
			&tlogv1.GetReceiptRequest{Log: "audit", Leaf: &tlogv1.GetReceiptRequest_Index{Index: 3}},
			&tlogv1.GetReceiptRequest{Log: "audit", Leaf: &tlogv1.GetReceiptRequest_LeafHash{LeafHash: leaf3[:]}, TreeSize: 20},
		},
	},
	{
		name: tlogv1.AdminService_CreateLog_FullMethodName, writes: true,
		req:   func() proto.Message { return new(tlogv1.CreateLogRequest) },
		resp:  func() proto.Message { return new(tlogv1.CreateLogResponse) },
		extra: []codes.Code{codes.AlreadyExists},
		examples: []proto.Message{
			&tlogv1.CreateLogRequest{Name: "fuzz", Origin: "example.com/fuzz"},
			&tlogv1.CreateLogRequest{Name: "audit"},
			// Once UNAVAILABLE: the origin check let Unicode spaces and
			// controls through to key generation, which refused them.
			&tlogv1.CreateLogRequest{Name: "fuzz2", Origin: "example.com/a\u00a0b"},
		},
	},
	{
		name: tlogv1.AdminService_SetWitnessPolicy_FullMethodName, writes: true,
		req:  func() proto.Message { return new(tlogv1.SetWitnessPolicyRequest) },
		resp: func() proto.Message { return new(tlogv1.SetWitnessPolicyResponse) },
		examples: []proto.Message{
			&tlogv1.SetWitnessPolicyRequest{Log: "empty", WitnessPolicy: "quorum none\n"},
			&tlogv1.SetWitnessPolicyRequest{Log: "audit", WitnessPolicy: "witness A example.com/w+00000000+AQ== http://127.0.0.1:1\nquorum A\n"},
		},
	},
	{
		name: tlogv1.AdminService_GetLog_FullMethodName,
		req:  func() proto.Message { return new(tlogv1.GetLogRequest) },
		resp: func() proto.Message { return new(tlogv1.GetLogResponse) },
		examples: []proto.Message{
			&tlogv1.GetLogRequest{Name: "audit"},
		},
	},
	{
		name: tlogv1.AdminService_ListLogs_FullMethodName,
		req:  func() proto.Message { return new(tlogv1.ListLogsRequest) },
		resp: func() proto.Message { return new(tlogv1.ListLogsResponse) },
		examples: []proto.Message{
			&tlogv1.ListLogsRequest{PageSize: 1, PageToken: "audit"},
		},
	},
}

// FuzzGRPC sends arbitrary bytes as the request of every gRPC method,
// through gRPC's own decoding. A message that does not decode gets gRPC's
// INTERNAL ("failed to unmarshal"); any other gets a documented code. No
// call may panic, and only a successful Append or CreateLog may change what
// is stored.
func FuzzGRPC(f *testing.F) {
	e := newFuzzEnv(f)
	for i, m := range grpcMethods {
		for _, ex := range m.examples {
			b, err := proto.Marshal(ex)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(uint8(i), b)
			// The same with unknown fields, which proto3 ignores.
			b = protowire.AppendTag(b, 99, protowire.VarintType)
			b = protowire.AppendVarint(b, 1<<63)
			f.Add(uint8(i), protowire.AppendBytes(protowire.AppendTag(b, 100, protowire.BytesType), []byte("x")))
		}
		f.Add(uint8(i), []byte{})
		f.Add(uint8(i), []byte{0x0a, 0xff, 'a'})
	}
	f.Fuzz(func(t *testing.T, method uint8, in []byte) {
		m := grpcMethods[int(method)%len(grpcMethods)]
		decodeErr := proto.Unmarshal(in, m.req())
		before := e.state(t)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		outs, err := invokeRaw(ctx, e.conn, m.name, m.streams, in)
		after := e.state(t)

		c := status.Code(err)
		switch {
		case decodeErr != nil:
			if c != codes.Internal || !strings.Contains(err.Error(), "unmarshal") {
				t.Fatalf("%s: a message that does not decode (%v): %v", m.name, decodeErr, err)
			}
		case !m.documents(c):
			t.Fatalf("%s: undocumented code: %v", m.name, err)
		}
		for _, out := range outs {
			if err := proto.Unmarshal(out, m.resp()); err != nil {
				t.Fatalf("%s: response does not decode: %v", m.name, err)
			}
		}
		if after != before && !(c == codes.OK && m.writes) {
			t.Fatalf("%s: %v, and the stored state changed", m.name, err)
		}
	})
}
