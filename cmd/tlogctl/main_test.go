package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	sumdb "golang.org/x/mod/sumdb/tlog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/tlog-dev/tlog/pkg/checkpoint"
	"github.com/tlog-dev/tlog/pkg/tree"
	tlogv1 "github.com/tlog-dev/tlog/proto/tlog/v1"
)

// TestEndToEnd builds tlogd and tlogctl, starts tlogd on an embedded store,
// and runs tlogctl commands against it as a user would; then it stops tlogd
// and checks receipts offline.
func TestEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs binaries")
	}
	bin := buildBinaries(t)
	srv := startTlogd(t, filepath.Join(bin, "tlogd"))
	work := t.TempDir()
	ctl := &tlogctl{bin: filepath.Join(bin, "tlogctl"), dir: work, addr: srv.addr, vkey: srv.vkey}

	entries := []string{"entry-0", "entry-1", "entry-2"}
	var leaves []tree.Hash
	for _, e := range entries {
		leaves = append(leaves, tree.LeafHash([]byte(e)))
	}

	t.Run("append", func(t *testing.T) {
		// Entry 0 from an argument, entries 1 and 2 from standard input, so
		// that the log signs checkpoints at sizes 1 and 3.
		out := ctl.ok(t, "", "append", entries[0])
		if want := fmt.Sprintf("0\t%x\tnew\n", leaves[0]); out != want {
			t.Errorf("append %s: got %q, want %q", entries[0], out, want)
		}
		out = ctl.ok(t, entries[1]+"\n"+entries[2]+"\n", "append")
		if want := fmt.Sprintf("1\t%x\tnew\n2\t%x\tnew\n", leaves[1], leaves[2]); out != want {
			t.Errorf("append from stdin: got %q, want %q", out, want)
		}
		// The same data from a file is a duplicate of entry 0.
		f := filepath.Join(work, "e0")
		os.WriteFile(f, []byte(entries[0]), 0o644)
		var res appendResult
		decode(t, ctl.ok(t, "", "append", "--json", "--file", f), &res)
		if res != (appendResult{Index: 0, LeafHash: fmt.Sprintf("%x", leaves[0]), Duplicate: true, TreeSize: 3}) {
			t.Errorf("append --file (duplicate): got %+v", res)
		}
		// Empty entries are refused before anything is sent.
		_, stderr := ctl.fails(t, exitError, "a\n\nb\n", "append")
		if !strings.Contains(stderr, "line 2 of standard input is empty") {
			t.Errorf("append with an empty line: stderr %q", stderr)
		}
	})

	root := rootOf(t, leaves)
	t.Run("checkpoint", func(t *testing.T) {
		out := ctl.ok(t, "", "checkpoint")
		if want := fmt.Sprintf("%s\n3\n%s\n\n— ", srv.origin, b64(root[:])); !strings.HasPrefix(out, want) {
			t.Errorf("checkpoint: got %q, want it to start with %q", out, want)
		}
		var cp checkpointJSON
		decode(t, ctl.ok(t, "", "checkpoint", "--json", "--size", "1"), &cp)
		if cp.Origin != srv.origin || cp.Size != 1 || cp.RootHash != b64(leaves[0][:]) {
			t.Errorf("checkpoint --size 1: got %+v", cp)
		}
		// Without a key, the server's is trusted, with a warning.
		stdout, stderr, code := ctl.run(t, "", "checkpoint", "--vkey", "")
		if code != 0 || !strings.HasPrefix(stdout, srv.origin+"\n3\n") || !strings.Contains(stderr, "trust on first use") || !strings.Contains(stderr, srv.vkey) {
			t.Errorf("checkpoint without --vkey: exit code %d, stdout %q, stderr %q", code, stdout, stderr)
		}
		// A checkpoint that does not verify with the given key.
		_, other, _ := checkpoint.GenerateKey(srv.origin, rand.Reader)
		_, stderr = ctl.fails(t, exitVerify, "", "checkpoint", "--vkey", other)
		if !strings.Contains(stderr, "VERIFICATION FAILED") {
			t.Errorf("checkpoint with another key: stderr %q", stderr)
		}
	})

	t.Run("get", func(t *testing.T) {
		if out, want := ctl.ok(t, "", "get", "0", "3"), "0\tentry-0\n1\tentry-1\n2\tentry-2\n"; out != want {
			t.Errorf("get 0 3: got %q, want %q", out, want)
		}
		var e entryJSON
		decode(t, ctl.ok(t, "", "get", "--json", "1"), &e)
		if e.Index != 1 || string(e.Data) != entries[1] || e.LeafHash != fmt.Sprintf("%x", leaves[1]) {
			t.Errorf("get --json 1: got %+v", e)
		}
		_, stderr := ctl.fails(t, exitError, "", "get", "7")
		if !strings.Contains(stderr, "OutOfRange") {
			t.Errorf("get beyond the log: stderr %q, want the gRPC code", stderr)
		}
	})

	t.Run("prove inclusion", func(t *testing.T) {
		if out := ctl.ok(t, "", "prove", "inclusion", "--data", entries[1]); !strings.Contains(out, "verified: entry 1 is in the log") {
			t.Errorf("prove inclusion --data: got %q", out)
		}
		var p inclusionJSON
		decode(t, ctl.ok(t, "", "prove", "inclusion", "--index", "2", "--json"), &p)
		if !p.Verified || p.Index != 2 || p.TreeSize != 3 || p.RootHash != b64(root[:]) {
			t.Errorf("prove inclusion --index 2: got %+v", p)
		}
		// Cross-check the proof with an independent implementation.
		if err := sumdb.CheckRecord(toSumdb(p.Proof), 3, sumdb.Hash(root), 2, sumdb.Hash(leaves[2])); err != nil {
			t.Errorf("sumdb rejects the inclusion proof tlogctl accepted: %v", err)
		}
		_, stderr := ctl.fails(t, exitError, "", "prove", "inclusion", "--data", "not in the log")
		if !strings.Contains(stderr, "NotFound") {
			t.Errorf("prove inclusion of absent data: stderr %q", stderr)
		}
		ctl.fails(t, exitError, "", "prove", "inclusion", "--index", "1", "--data", entries[1])
	})

	t.Run("prove consistency", func(t *testing.T) {
		var p consistencyJSON
		decode(t, ctl.ok(t, "", "prove", "consistency", "1", "3", "--json"), &p)
		if !p.Verified || p.FromSize != 1 || p.ToSize != 3 || p.FromCheckpoint == "" {
			t.Errorf("prove consistency 1 3: got %+v", p)
		}
		if err := sumdb.CheckTree(toSumdb(p.Proof), 3, sumdb.Hash(root), 1, sumdb.Hash(leaves[0])); err != nil {
			t.Errorf("sumdb rejects the consistency proof tlogctl accepted: %v", err)
		}
		// The log signed no checkpoint at size 2: its root is recomputed.
		if out := ctl.ok(t, "", "prove", "consistency", "2", "3"); !strings.Contains(out, "recomputed from 2 entries") {
			t.Errorf("prove consistency 2 3: got %q", out)
		}
	})

	receiptFile := filepath.Join(work, "entry-1.tlog-proof")
	t.Run("receipt", func(t *testing.T) {
		ctl.ok(t, "", "receipt", "--index", "1", "-o", receiptFile)
		ctl.ok(t, "", "receipt", "--data", entries[2])
		if _, err := os.Stat(filepath.Join(work, "default-2.tlog-proof")); err != nil {
			t.Errorf("receipt without -o: %v", err)
		}
	})

	t.Run("lying server", func(t *testing.T) {
		// A proxy in front of tlogd alters one kind of answer at a time;
		// tlogctl must notice each with exit code 3.
		liar := startLiar(t, srv.addr)
		lying := &tlogctl{bin: ctl.bin, dir: work, addr: liar.addr, vkey: srv.vkey}
		for _, tc := range []struct {
			tamper string
			args   []string
		}{
			{"checkpoint", []string{"checkpoint", "--json"}},
			{"append", []string{"append", "entry-3"}},
			{"inclusion", []string{"append", entries[0]}},
			{"inclusion", []string{"prove", "inclusion", "--data", entries[1]}},
			{"entries", []string{"get", "0", "3"}},
			{"entries", []string{"receipt", "--index", "1", "-o", filepath.Join(work, "lie.tlog-proof")}},
			{"consistency", []string{"prove", "consistency", "1", "3"}},
			{"receipt", []string{"receipt", "--data", entries[1], "-o", filepath.Join(work, "lie.tlog-proof")}},
		} {
			t.Run(tc.tamper+"/"+strings.Join(tc.args[:2], " "), func(t *testing.T) {
				liar.tamper.Store(tc.tamper)
				_, stderr := lying.fails(t, exitVerify, "", tc.args...)
				if !strings.Contains(stderr, "VERIFICATION FAILED") {
					t.Errorf("stderr %q", stderr)
				}
				t.Log(stderr)
			})
		}
		if _, err := os.Stat(filepath.Join(work, "lie.tlog-proof")); err == nil {
			t.Errorf("a receipt that did not verify was written")
		}
	})

	// From here on no server runs: verify-receipt works offline.
	srv.stop(t)

	t.Run("verify-receipt", func(t *testing.T) {
		out := ctl.ok(t, "", "verify-receipt", receiptFile, "--data", entries[1], "--vkey", srv.vkey)
		for _, want := range []string{"origin:     " + srv.origin, "index:      1", "tree size:  3"} {
			if !strings.Contains(out, want) {
				t.Errorf("verify-receipt: output %q lacks %q", out, want)
			}
		}
		var r receiptJSON
		decode(t, ctl.ok(t, "", "verify-receipt", "--json", filepath.Join(work, "default-2.tlog-proof"), "--leaf-hash", fmt.Sprintf("%x", leaves[2])), &r)
		if !r.Verified || r.Index != 2 || r.TreeSize != 3 || r.Origin != srv.origin {
			t.Errorf("verify-receipt --json: got %+v", r)
		}
		ctl.fails(t, exitError, "", "verify-receipt", receiptFile, "--data", entries[1], "--vkey", "")
	})

	t.Run("verify-receipt failures", func(t *testing.T) {
		good, err := os.ReadFile(receiptFile)
		if err != nil {
			t.Fatal(err)
		}
		tampered := filepath.Join(work, "tampered.tlog-proof")
		if err := os.WriteFile(tampered, flipProofByte(t, good), 0o644); err != nil {
			t.Fatal(err)
		}
		_, otherKey, _ := checkpoint.GenerateKey(srv.origin, rand.Reader)
		for _, tc := range []struct {
			name string
			args []string
		}{
			{"other data", []string{receiptFile, "--data", entries[2], "--vkey", srv.vkey}},
			{"tampered proof", []string{tampered, "--data", entries[1], "--vkey", srv.vkey}},
			{"wrong key", []string{receiptFile, "--data", entries[1], "--vkey", otherKey}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				_, stderr := ctl.fails(t, exitVerify, "", append([]string{"verify-receipt"}, tc.args...)...)
				if !strings.Contains(stderr, "VERIFICATION FAILED") {
					t.Errorf("stderr %q", stderr)
				}
			})
		}
	})
}

// buildBinaries builds tlogd and tlogctl into a temporary directory.
func buildBinaries(t *testing.T) string {
	t.Helper()
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command to build the binaries with")
	}
	dir := t.TempDir()
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i, pkg := range []string{"tlogd", "tlogctl"} {
		wg.Go(func() {
			out, err := exec.Command(gobin, "build", "-o", filepath.Join(dir, pkg), "github.com/tlog-dev/tlog/cmd/"+pkg).CombinedOutput()
			if err != nil {
				errs[i] = fmt.Errorf("go build %s: %v\n%s", pkg, err, out)
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	return dir
}

// server is a running tlogd.
type server struct {
	cmd     *exec.Cmd
	done    chan error // receives the exit of cmd
	stopped bool
	addr    string // gRPC
	origin  string // of the default log
	vkey    string // of the default log, derived from its key file
	logs    *bytes.Buffer
}

func startTlogd(t *testing.T, bin string) *server {
	t.Helper()
	data := t.TempDir()
	s := &server{addr: freeAddr(t), done: make(chan error, 1), logs: new(bytes.Buffer)}
	s.cmd = exec.Command(bin, "--data-dir", data, "--grpc-addr", s.addr, "--http-addr", freeAddr(t), "--batch-max-age", "5ms")
	s.cmd.Env = cleanEnv()
	out := &lockedWriter{w: s.logs}
	s.cmd.Stdout, s.cmd.Stderr = out, out
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { s.done <- s.cmd.Wait() }()
	t.Cleanup(func() { s.stop(t) })

	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", s.addr, 100*time.Millisecond)
		if err == nil {
			c.Close()
			break
		}
		select {
		case err := <-s.done:
			s.done <- err
			t.Fatalf("tlogd exited: %v\n%s", err, out.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("tlogd does not listen on %s\n%s", s.addr, out.String())
		}
	}

	// The verifier key, known out of band: from the log's signing key.
	skey, err := os.ReadFile(filepath.Join(data, "keys", "default.key"))
	if err != nil {
		t.Fatal(err)
	}
	if s.vkey, err = checkpoint.VerifierKey(strings.TrimSpace(string(skey))); err != nil {
		t.Fatal(err)
	}
	s.origin, _, _ = strings.Cut(s.vkey, "+")
	return s
}

// stop stops tlogd with SIGTERM and waits for it to exit.
func (s *server) stop(t *testing.T) {
	if s.stopped {
		return
	}
	s.stopped = true
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-s.done:
		if err != nil {
			t.Errorf("tlogd: %v", err)
		}
	case <-time.After(10 * time.Second):
		s.cmd.Process.Kill()
		<-s.done
		t.Errorf("tlogd did not stop on SIGTERM")
	}
	if t.Failed() {
		t.Logf("tlogd output:\n%s", s.logs)
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// cleanEnv is the environment without TLOG_* variables.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "TLOG_") {
			env = append(env, kv)
		}
	}
	return env
}

type lockedWriter struct {
	mu sync.Mutex
	w  *bytes.Buffer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func (l *lockedWriter) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.String()
}

// tlogctl runs the tlogctl binary against a server.
type tlogctl struct {
	bin  string
	dir  string
	addr string
	vkey string
}

// run runs tlogctl with stdin and args, with TLOG_ADDR and TLOG_VKEY set,
// and returns its output and exit code.
func (c *tlogctl) run(t *testing.T, stdin string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, c.bin, args...)
	cmd.Dir = c.dir
	cmd.Env = append(cleanEnv(), "TLOG_ADDR="+c.addr, "TLOG_VKEY="+c.vkey, "TLOG_TIMEOUT=10s")
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		code = exit.ExitCode()
	case err != nil:
		t.Fatalf("tlogctl %q: %v", args, err)
	}
	return out.String(), errb.String(), code
}

// ok runs tlogctl and fails the test unless it exits with 0.
func (c *tlogctl) ok(t *testing.T, stdin string, args ...string) string {
	t.Helper()
	out, stderr, code := c.run(t, stdin, args...)
	if code != 0 {
		t.Fatalf("tlogctl %q: exit code %d, stderr:\n%s", args, code, stderr)
	}
	return out
}

// fails runs tlogctl and fails the test unless it exits with code.
func (c *tlogctl) fails(t *testing.T, code int, stdin string, args ...string) (stdout, stderr string) {
	t.Helper()
	stdout, stderr, got := c.run(t, stdin, args...)
	if got != code {
		t.Errorf("tlogctl %q: exit code %d, want %d; stderr:\n%s", args, got, code, stderr)
	}
	return stdout, stderr
}

func decode(t *testing.T, out string, v any) {
	t.Helper()
	if err := json.Unmarshal([]byte(out), v); err != nil {
		t.Fatalf("output %q: %v", out, err)
	}
}

// rootOf computes the root hash of a tree of leaves independently of the
// server.
func rootOf(t *testing.T, leaves []tree.Hash) tree.Hash {
	t.Helper()
	edge, _, err := tree.EmptyEdge().Append(leaves)
	if err != nil {
		t.Fatal(err)
	}
	return edge.Root()
}

func toSumdb(p [][]byte) []sumdb.Hash {
	out := make([]sumdb.Hash, len(p))
	for i, h := range p {
		out[i] = sumdb.Hash(h)
	}
	return out
}

// liar is a gRPC proxy to tlogd that alters the answers of one kind,
// named by tamper.
type liar struct {
	tlogv1.UnimplementedLogServiceServer
	tlogv1.UnimplementedAdminServiceServer
	addr   string
	up     tlogv1.LogServiceClient
	admin  tlogv1.AdminServiceClient
	tamper atomic.Value // string
}

func startLiar(t *testing.T, upstream string) *liar {
	t.Helper()
	conn, err := grpc.NewClient(upstream, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	l := &liar{up: tlogv1.NewLogServiceClient(conn), admin: tlogv1.NewAdminServiceClient(conn)}
	l.tamper.Store("")
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l.addr = lis.Addr().String()
	gs := grpc.NewServer()
	tlogv1.RegisterLogServiceServer(gs, l)
	tlogv1.RegisterAdminServiceServer(gs, l)
	go gs.Serve(lis)
	t.Cleanup(gs.Stop)
	return l
}

func (l *liar) lies(about string) bool { return l.tamper.Load() == about }

// flip returns a copy of b with one bit flipped.
func flip(b []byte) []byte {
	b = bytes.Clone(b)
	b[len(b)/2] ^= 1
	return b
}

// alterRoot returns a signed checkpoint note with a different root hash and
// the original signature.
func alterRoot(signed []byte) []byte {
	lines := strings.SplitN(string(signed), "\n", 4)
	h, _ := base64.StdEncoding.DecodeString(lines[2])
	lines[2] = base64.StdEncoding.EncodeToString(flip(h))
	return []byte(strings.Join(lines, "\n"))
}

func (l *liar) GetLog(ctx context.Context, req *tlogv1.GetLogRequest) (*tlogv1.GetLogResponse, error) {
	return l.admin.GetLog(ctx, req)
}

func (l *liar) Append(ctx context.Context, req *tlogv1.AppendRequest) (*tlogv1.AppendResponse, error) {
	resp, err := l.up.Append(ctx, req)
	if err == nil && l.lies("append") {
		resp.Results[0].LeafHash = flip(resp.Results[0].LeafHash)
	}
	return resp, err
}

func (l *liar) GetCheckpoint(ctx context.Context, req *tlogv1.GetCheckpointRequest) (*tlogv1.GetCheckpointResponse, error) {
	resp, err := l.up.GetCheckpoint(ctx, req)
	if err == nil && l.lies("checkpoint") {
		resp.Checkpoint = alterRoot(resp.Checkpoint)
	}
	return resp, err
}

func (l *liar) GetInclusionProof(ctx context.Context, req *tlogv1.GetInclusionProofRequest) (*tlogv1.GetInclusionProofResponse, error) {
	resp, err := l.up.GetInclusionProof(ctx, req)
	if err == nil && l.lies("inclusion") {
		resp.Hashes[0] = flip(resp.Hashes[0])
	}
	return resp, err
}

func (l *liar) GetConsistencyProof(ctx context.Context, req *tlogv1.GetConsistencyProofRequest) (*tlogv1.GetConsistencyProofResponse, error) {
	resp, err := l.up.GetConsistencyProof(ctx, req)
	if err == nil && l.lies("consistency") {
		resp.Hashes[0] = flip(resp.Hashes[0])
	}
	return resp, err
}

func (l *liar) GetEntries(req *tlogv1.GetEntriesRequest, stream grpc.ServerStreamingServer[tlogv1.GetEntriesResponse]) error {
	up, err := l.up.GetEntries(stream.Context(), req)
	if err != nil {
		return err
	}
	for {
		msg, err := up.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if l.lies("entries") {
			e := msg.Entries[len(msg.Entries)-1]
			e.Data = append(e.Data, '!')
		}
		if err := stream.Send(msg); err != nil {
			return err
		}
	}
}

func (l *liar) GetReceipt(ctx context.Context, req *tlogv1.GetReceiptRequest) (*tlogv1.GetReceiptResponse, error) {
	resp, err := l.up.GetReceipt(ctx, req)
	if err == nil && l.lies("receipt") {
		resp.Receipt = flipProofHash(resp.Receipt)
	}
	return resp, err
}

// flipProofByte returns a copy of a receipt with one bit of its first proof
// hash flipped (re-encoded in canonical base64, so that it still parses).
func flipProofByte(t *testing.T, doc []byte) []byte {
	t.Helper()
	out := flipProofHash(doc)
	if bytes.Equal(out, doc) {
		t.Fatalf("no proof hash in receipt:\n%s", doc)
	}
	return out
}

// flipProofHash flips a bit of the first proof hash of a receipt, or
// returns it unchanged if it has none.
func flipProofHash(doc []byte) []byte {
	lines := strings.Split(string(doc), "\n")
	for i, l := range lines {
		if len(l) != 44 || strings.Contains(l, " ") {
			continue
		}
		h, err := base64.StdEncoding.DecodeString(l)
		if err != nil || len(h) != 32 {
			continue
		}
		h[0] ^= 1
		lines[i] = base64.StdEncoding.EncodeToString(h)
		return []byte(strings.Join(lines, "\n"))
	}
	return doc
}
