package main

// This file is the harness of the black-box tests of the tlogd binary: it
// builds the binary once, starts it as a child process on free loopback
// ports, waits until it is ready, and gives the tests gRPC and HTTP clients
// and an independent verifier of what the server says (signed notes checked
// with golang.org/x/mod/sumdb/note, proofs with golang.org/x/mod/sumdb/tlog,
// roots recomputed from the entries).

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/stats"
	"google.golang.org/grpc/status"

	"github.com/tlog-dev/tlog/internal/pgtest"
	"github.com/tlog-dev/tlog/pkg/checkpoint"
	tlogv1 "github.com/tlog-dev/tlog/proto/tlog/v1"
)

const logName = "default"

var (
	buildOnce sync.Once
	buildDir  string
	buildPath string
	buildErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// binary returns the path of the tlogd binary, built from this directory
// on first use.
func binary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "tlogd-test-")
		if buildErr != nil {
			return
		}
		buildPath = filepath.Join(buildDir, "tlogd")
		// go test puts its own go command first on PATH.
		cmd := exec.Command("go", "build", "-o", buildPath, ".")
		out, err := cmd.CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return buildPath
}

// store names where a tlogd keeps its state: a data directory (the
// embedded store and the keys) and, for PostgreSQL, a database URL.
type store struct {
	dataDir     string
	databaseURL string
}

func (s store) args() []string {
	a := []string{"--data-dir", s.dataDir}
	if s.databaseURL != "" {
		a = append(a, "--database-url", s.databaseURL)
	}
	return a
}

// eachBackend runs f as the subtests "embedded" and "postgres", each with a
// fresh store.
func eachBackend(t *testing.T, f func(t *testing.T, st store)) {
	t.Run("embedded", func(t *testing.T) {
		f(t, store{dataDir: t.TempDir()})
	})
	t.Run("postgres", func(t *testing.T) {
		f(t, store{dataDir: t.TempDir(), databaseURL: pgtest.NewDatabase(t)})
	})
}

// syncBuffer is a bytes.Buffer safe for concurrent use.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// daemon is one running (or exited) tlogd process.
type daemon struct {
	t        testing.TB
	name     string
	cmd      *exec.Cmd
	grpcAddr string
	httpAddr string
	stdout   syncBuffer
	stderr   syncBuffer
	exited   chan struct{} // closed when the process has exited
	waitErr  error         // the result of cmd.Wait, once exited is closed

	conn   *grpc.ClientConn
	log    tlogv1.LogServiceClient
	admin  tlogv1.AdminServiceClient
	health healthpb.HealthClient
	http   *http.Client
}

// options configure a tlogd start.
type options struct {
	args       []string // flags besides the addresses
	env        []string // extra environment, KEY=VALUE
	dir        string   // working directory (default: the test's)
	addrsByEnv bool     // pass the addresses in TLOG_GRPC_ADDR/TLOG_HTTP_ADDR, not flags
}

var daemonSeq struct {
	sync.Mutex
	n int
}

// freeAddr returns a loopback address whose port was free a moment ago.
func freeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// cleanEnv is the environment without any TLOG_* variable, so that the
// caller's settings do not leak into tlogd.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "TLOG_") {
			env = append(env, kv)
		}
	}
	return env
}

// launch starts tlogd without waiting for it to be ready. The process is
// killed at the end of the test if it still runs; its output goes to the
// test log if the test failed.
func launch(t testing.TB, o options) *daemon {
	t.Helper()
	daemonSeq.Lock()
	daemonSeq.n++
	d := &daemon{t: t, name: fmt.Sprintf("tlogd#%d", daemonSeq.n), exited: make(chan struct{})}
	daemonSeq.Unlock()
	d.grpcAddr, d.httpAddr = freeAddr(t), freeAddr(t)
	args := o.args
	env := append(cleanEnv(), o.env...)
	if o.addrsByEnv {
		env = append(env, "TLOG_GRPC_ADDR="+d.grpcAddr, "TLOG_HTTP_ADDR="+d.httpAddr)
	} else {
		args = append(append([]string{}, args...), "--grpc-addr", d.grpcAddr, "--http-addr", d.httpAddr)
	}
	d.cmd = exec.Command(binary(t), args...)
	d.cmd.Env = env
	d.cmd.Dir = o.dir
	d.cmd.Stdout = &d.stdout
	d.cmd.Stderr = &d.stderr
	if err := d.cmd.Start(); err != nil {
		t.Fatalf("starting tlogd: %v", err)
	}
	t.Logf("%s: pid %d, tlogd %s", d.name, d.cmd.Process.Pid, strings.Join(args, " "))
	go func() {
		d.waitErr = d.cmd.Wait()
		close(d.exited)
	}()
	t.Cleanup(func() {
		if d.conn != nil {
			d.conn.Close()
		}
		if d.running() {
			d.cmd.Process.Kill()
			<-d.exited
		}
		if t.Failed() {
			t.Logf("%s stdout:\n%s", d.name, d.stdout.String())
			t.Logf("%s stderr:\n%s", d.name, d.stderr.String())
		}
	})
	return d
}

// start starts tlogd and waits until it is ready. If the process exits
// because a port was taken meanwhile, it retries on other ports.
func start(t testing.TB, o options) *daemon {
	t.Helper()
	for attempt := 0; ; attempt++ {
		d := launch(t, o)
		err := d.waitReady(30 * time.Second)
		if err == nil {
			return d
		}
		if attempt < 3 && !d.running() && strings.Contains(d.stderr.String(), "address already in use") {
			t.Logf("%s: a port was taken, retrying", d.name)
			continue
		}
		t.Fatalf("%s: %v\nstderr:\n%s", d.name, err, d.stderr.String())
	}
}

func (d *daemon) running() bool {
	select {
	case <-d.exited:
		return false
	default:
		return true
	}
}

// waitReady polls GET /readyz and the gRPC health service until both
// answer, then sets up the clients.
func (d *daemon) waitReady(timeout time.Duration) error {
	conn, err := grpc.NewClient(d.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithStatsHandler(sentHandler{}))
	if err != nil {
		return err
	}
	d.conn = conn
	d.log = tlogv1.NewLogServiceClient(conn)
	d.admin = tlogv1.NewAdminServiceClient(conn)
	d.health = healthpb.NewHealthClient(conn)
	d.http = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}, Timeout: 30 * time.Second}

	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		if !d.running() {
			return fmt.Errorf("exited before it was ready: %v", d.waitErr)
		}
		last = d.probe()
		if last == nil {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("not ready after %v: %v", timeout, last)
}

func (d *daemon) probe() error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+d.httpAddr+"/readyz", nil)
	resp, err := d.http.Do(req)
	if err != nil {
		return err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET /readyz: %s", resp.Status)
	}
	h, err := d.health.Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		return err
	}
	if h.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		return fmt.Errorf("gRPC health: %v", h.GetStatus())
	}
	return nil
}

type sentKey struct{}

// withSent returns a context that makes appendGRPC and appendHTTP call f
// once the request has been written to the connection.
func withSent(ctx context.Context, f func()) context.Context {
	var once sync.Once
	g := func() { once.Do(f) }
	ctx = context.WithValue(ctx, sentKey{}, g)
	return httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{WroteRequest: func(httptrace.WroteRequestInfo) { g() }})
}

// sentHandler calls the withSent function of a gRPC call once its request
// message is sent.
type sentHandler struct{}

func (sentHandler) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context { return ctx }
func (sentHandler) HandleRPC(ctx context.Context, s stats.RPCStats) {
	if _, ok := s.(*stats.OutPayload); ok {
		if f, ok := ctx.Value(sentKey{}).(func()); ok {
			f()
		}
	}
}
func (sentHandler) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context { return ctx }
func (sentHandler) HandleConn(context.Context, stats.ConnStats)                       {}

// kill sends SIGKILL and waits for the process to be gone.
func (d *daemon) kill() {
	d.t.Helper()
	if err := d.cmd.Process.Signal(syscall.SIGKILL); err != nil && d.running() {
		d.t.Fatalf("%s: SIGKILL: %v", d.name, err)
	}
	d.wait(10 * time.Second)
}

// wait waits for the process to exit and returns its exit code.
func (d *daemon) wait(timeout time.Duration) int {
	d.t.Helper()
	select {
	case <-d.exited:
	case <-time.After(timeout):
		d.t.Fatalf("%s did not exit within %v", d.name, timeout)
	}
	if d.conn != nil {
		d.conn.Close()
		d.conn = nil
	}
	return d.cmd.ProcessState.ExitCode()
}

var createdRE = regexp.MustCompile(`(?m)^Created log "([^"]+)"\n\s+origin:\s+(\S+)\n\s+verifier key:\s+(\S+)\n`)

// printedKey returns the origin and verifier key that tlogd printed on
// stdout when it created the default log.
func (d *daemon) printedKey() (origin, vkey string, ok bool) {
	m := createdRE.FindStringSubmatch(d.stdout.String())
	if m == nil || m[1] != logName {
		return "", "", false
	}
	return m[2], m[3], true
}

// logKey verifies the checkpoints of one log, independently of the
// server's code: the signature with golang.org/x/mod/sumdb/note, the body
// with a strict three-line parser of our own; pkg/checkpoint must agree.
type logKey struct {
	origin   string
	vkey     string
	verifier note.Verifier

	mu       sync.Mutex
	verified map[string]treeHead // notes already verified
}

func newLogKey(t testing.TB, origin, vkey string) *logKey {
	t.Helper()
	v, err := note.NewVerifier(vkey)
	if err != nil {
		t.Fatalf("verifier key %q: %v", vkey, err)
	}
	if v.Name() != origin {
		t.Fatalf("verifier key name %q is not the origin %q", v.Name(), origin)
	}
	return &logKey{origin: origin, vkey: vkey, verifier: v, verified: map[string]treeHead{}}
}

// fetchLogKey asks AdminService.GetLog for the default log's key.
func (d *daemon) fetchLogKey(t testing.TB) *logKey {
	t.Helper()
	resp, err := d.admin.GetLog(context.Background(), &tlogv1.GetLogRequest{Name: logName})
	if err != nil {
		t.Fatalf("GetLog: %v", err)
	}
	return newLogKey(t, resp.GetLog().GetOrigin(), resp.GetLog().GetVerifierKey())
}

// treeHead is a verified checkpoint's size and root.
type treeHead struct {
	size uint64
	root tlog.Hash
}

// open verifies a signed checkpoint and returns its tree head.
func (k *logKey) open(signed []byte) (treeHead, error) {
	k.mu.Lock()
	h, ok := k.verified[string(signed)]
	k.mu.Unlock()
	if ok {
		return h, nil
	}
	h, err := k.verify(signed)
	if err != nil {
		return treeHead{}, err
	}
	k.mu.Lock()
	k.verified[string(signed)] = h
	k.mu.Unlock()
	return h, nil
}

func (k *logKey) verify(signed []byte) (treeHead, error) {
	n, err := note.Open(signed, note.VerifierList(k.verifier))
	if err != nil {
		return treeHead{}, fmt.Errorf("checkpoint does not verify: %w\n%s", err, signed)
	}
	lines := strings.SplitAfter(n.Text, "\n")
	if len(lines) != 4 || lines[3] != "" || lines[0] != k.origin+"\n" {
		return treeHead{}, fmt.Errorf("checkpoint body is not origin, size, hash:\n%s", n.Text)
	}
	size, err := strconv.ParseUint(strings.TrimSuffix(lines[1], "\n"), 10, 64)
	if err != nil {
		return treeHead{}, fmt.Errorf("checkpoint size: %v", err)
	}
	root, err := tlog.ParseHash(strings.TrimSuffix(lines[2], "\n"))
	if err != nil {
		return treeHead{}, fmt.Errorf("checkpoint root: %v", err)
	}
	// The project's own parser must read the same.
	v, err := checkpoint.NewVerifier(k.vkey)
	if err != nil {
		return treeHead{}, err
	}
	c, _, err := checkpoint.Open(signed, v)
	if err != nil {
		return treeHead{}, fmt.Errorf("pkg/checkpoint.Open rejects a checkpoint sumdb/note accepts: %w", err)
	}
	if c.Size != size || c.Hash != root {
		return treeHead{}, fmt.Errorf("pkg/checkpoint reads size %d root %x, sumdb reads %d %x", c.Size, c.Hash, size, root)
	}
	return treeHead{size: size, root: root}, nil
}

// appended is an acknowledged append.
type appended struct {
	index     uint64
	duplicate bool
	cp        []byte // the checkpoint returned with it
}

// appendGRPC appends entries in one Append call.
func (d *daemon) appendGRPC(ctx context.Context, data [][]byte) ([]appended, error) {
	req := &tlogv1.AppendRequest{Log: logName}
	for _, b := range data {
		req.Entries = append(req.Entries, &tlogv1.AppendEntry{Data: b})
	}
	resp, err := d.log.Append(ctx, req)
	if err != nil {
		return nil, err
	}
	if len(resp.GetResults()) != len(data) {
		return nil, fmt.Errorf("Append: %d results for %d entries", len(resp.GetResults()), len(data))
	}
	out := make([]appended, len(data))
	for i, r := range resp.GetResults() {
		if want := tlog.RecordHash(data[i]); !bytes.Equal(r.GetLeafHash(), want[:]) {
			return nil, fmt.Errorf("Append: result %d has leaf hash %x, want %x", i, r.GetLeafHash(), want)
		}
		out[i] = appended{index: r.GetIndex(), duplicate: r.GetDuplicate(), cp: resp.GetCheckpoint()}
	}
	return out, nil
}

// httpStatusError is a non-200 answer.
type httpStatusError struct {
	code int
	body string
}

func (e *httpStatusError) Error() string { return fmt.Sprintf("HTTP %d: %s", e.code, e.body) }

// appendHTTP appends one entry with POST /logs/default/add.
func (d *daemon) appendHTTP(ctx context.Context, data []byte) (appended, error) {
	req, err := http.NewRequestWithContext(ctx, "POST", "http://"+d.httpAddr+"/logs/"+logName+"/add", bytes.NewReader(data))
	if err != nil {
		return appended{}, err
	}
	resp, err := d.http.Do(req)
	if err != nil {
		return appended{}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return appended{}, err
	}
	if resp.StatusCode != http.StatusOK {
		return appended{}, &httpStatusError{resp.StatusCode, strings.TrimSpace(string(body))}
	}
	line, rest, ok := bytes.Cut(body, []byte("\n"))
	if !ok || !bytes.HasPrefix(rest, []byte("\n")) {
		return appended{}, fmt.Errorf("add: answer is not index, empty line, checkpoint: %q", body)
	}
	idx, err := strconv.ParseUint(string(line), 10, 64)
	if err != nil {
		return appended{}, fmt.Errorf("add: index line %q: %v", line, err)
	}
	if want := tlog.RecordHash(data); resp.Header.Get("X-Tlog-Leaf-Hash") != fmt.Sprintf("%x", want[:]) {
		return appended{}, fmt.Errorf("add: X-Tlog-Leaf-Hash %q, want %x", resp.Header.Get("X-Tlog-Leaf-Hash"), want)
	}
	dup, err := strconv.ParseBool(resp.Header.Get("X-Tlog-Duplicate"))
	if err != nil {
		return appended{}, fmt.Errorf("add: X-Tlog-Duplicate: %v", err)
	}
	return appended{index: idx, duplicate: dup, cp: rest[1:]}, nil
}

// get fetches an HTTP path and returns the body of a 200 answer.
func (d *daemon) get(ctx context.Context, path string) ([]byte, http.Header, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", "http://"+d.httpAddr+path, nil)
	if err != nil {
		return nil, nil, err
	}
	resp, err := d.http.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, resp.Header, &httpStatusError{resp.StatusCode, strings.TrimSpace(string(body))}
	}
	return body, resp.Header, nil
}

// merkleTree recomputes an RFC 6962 tree from leaf data with
// golang.org/x/mod/sumdb/tlog, which shares nothing with the server.
type merkleTree struct {
	n      int64
	hashes []tlog.Hash // sumdb's stored hashes
}

func (m *merkleTree) reader() tlog.HashReader {
	return tlog.HashReaderFunc(func(idx []int64) ([]tlog.Hash, error) {
		out := make([]tlog.Hash, len(idx))
		for i, x := range idx {
			if x < 0 || x >= int64(len(m.hashes)) {
				return nil, fmt.Errorf("stored hash %d not computed", x)
			}
			out[i] = m.hashes[x]
		}
		return out, nil
	})
}

func (m *merkleTree) add(data []byte) {
	hs, err := tlog.StoredHashes(m.n, data, m.reader())
	if err != nil {
		panic(err) // only our own reader fails, on a bug of ours
	}
	m.hashes = append(m.hashes, hs...)
	m.n++
}

// root returns the RFC 6962 root of the first size leaves.
func (m *merkleTree) root(size uint64) tlog.Hash {
	if size == 0 {
		return emptyRoot() // sumdb's TreeHash(0) is the zero hash
	}
	h, err := tlog.TreeHash(int64(size), m.reader())
	if err != nil {
		panic(err)
	}
	return h
}

// emptyRoot is the RFC 6962 hash of the empty tree, SHA-256 of nothing.
func emptyRoot() tlog.Hash { return sha256.Sum256(nil) }

// tilePath returns the C2SP tlog-tiles path of a sumdb tile of height 8:
// sumdb's path without the height, and "entries" for the data tiles.
func tilePath(t tlog.Tile) string {
	p := strings.TrimPrefix(t.Path(), "tile/8/")
	if t.L == -1 {
		p = "entries/" + strings.TrimPrefix(p, "data/")
	}
	return "tile/" + p
}

// auditReport is what audit learned.
type auditReport struct {
	head    treeHead
	entries [][]byte // every entry of the tree, by index
	tree    *merkleTree
}

// auditOptions select the more expensive checks.
type auditOptions struct {
	allInclusion bool // an inclusion proof for every entry (else a sample)
}

// audit checks the whole log from the outside, as a stranger would: the
// latest checkpoint (gRPC and HTTP) verifies; GetEntries returns every
// entry with its right leaf hash; the root recomputed from the entries is
// the checkpoint's; every hash tile and entry bundle served over HTTP is
// the one recomputed; inclusion proofs verify with sumdb's CheckRecord;
// every acknowledged index holds its data; and every checkpoint in seen is
// consistent with the latest tree, by consistency proof (sumdb's
// CheckTree) and by recomputed root.
func audit(t testing.TB, d *daemon, key *logKey, acked map[uint64][]byte, seen map[uint64]tlog.Hash, o auditOptions) auditReport {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	cpResp, err := d.log.GetCheckpoint(ctx, &tlogv1.GetCheckpointRequest{Log: logName})
	if err != nil {
		t.Fatalf("GetCheckpoint: %v", err)
	}
	head, err := key.open(cpResp.GetCheckpoint())
	if err != nil {
		t.Fatalf("latest checkpoint: %v", err)
	}
	if cpResp.GetTreeSize() != head.size || !bytes.Equal(cpResp.GetRootHash(), head.root[:]) {
		t.Errorf("GetCheckpoint: tree_size %d root %x, the signed note says %d %x", cpResp.GetTreeSize(), cpResp.GetRootHash(), head.size, head.root)
	}
	httpCP, _, err := d.get(ctx, "/logs/"+logName+"/checkpoint")
	if err != nil {
		t.Fatalf("GET checkpoint: %v", err)
	}
	if h, err := key.open(httpCP); err != nil {
		t.Fatalf("GET checkpoint: %v", err)
	} else if h != head {
		t.Fatalf("GET checkpoint says size %d, gRPC says %d (no appends in between)", h.size, head.size)
	}

	// Every entry, and the root recomputed from them.
	var entries [][]byte
	if head.size > 0 {
		stream, err := d.log.GetEntries(ctx, &tlogv1.GetEntriesRequest{Log: logName, Start: 0, End: head.size})
		if err != nil {
			t.Fatalf("GetEntries: %v", err)
		}
		for {
			msg, err := stream.Recv()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("GetEntries after %d entries: %v", len(entries), err)
			}
			for _, e := range msg.GetEntries() {
				if e.GetIndex() != uint64(len(entries)) {
					t.Fatalf("GetEntries: entry %d where %d was due", e.GetIndex(), len(entries))
				}
				if lh := tlog.RecordHash(e.GetData()); !bytes.Equal(e.GetLeafHash(), lh[:]) {
					t.Fatalf("GetEntries: entry %d has leaf hash %x, its data hashes to %x", e.GetIndex(), e.GetLeafHash(), lh)
				}
				entries = append(entries, e.GetData())
			}
		}
	}
	if uint64(len(entries)) != head.size {
		t.Fatalf("GetEntries returned %d entries for a tree of size %d", len(entries), head.size)
	}
	mt := &merkleTree{}
	for _, e := range entries {
		mt.add(e)
	}
	if got := mt.root(head.size); got != head.root {
		t.Fatalf("root recomputed from the %d entries is %v, the checkpoint says %v", head.size, got, head.root)
	}

	for idx, data := range acked {
		if idx >= head.size {
			t.Errorf("acknowledged index %d is beyond the tree size %d: lost", idx, head.size)
		} else if !bytes.Equal(entries[idx], data) {
			t.Errorf("acknowledged index %d holds %q, want %q", idx, entries[idx], data)
		}
	}

	auditTiles(t, ctx, d, mt, entries, head.size)
	auditCheckpoints(t, ctx, d, key, mt, head, seen)

	// Inclusion proofs in the latest tree.
	var sample []uint64
	switch {
	case head.size == 0:
	case o.allInclusion || head.size <= 64:
		for i := range head.size {
			sample = append(sample, i)
		}
	default:
		sample = []uint64{0, head.size - 1, head.size / 2}
		for i := uint64(1); i < head.size; i = i*3 + 1 {
			sample = append(sample, i)
		}
	}
	parallel(8, len(sample), func(i int) error {
		idx := sample[i]
		p, err := d.log.GetInclusionProof(ctx, &tlogv1.GetInclusionProofRequest{
			Log: logName, Leaf: &tlogv1.GetInclusionProofRequest_Index{Index: idx}, TreeSize: head.size})
		if err != nil {
			t.Errorf("GetInclusionProof(%d, %d): %v", idx, head.size, err)
			return err
		}
		if err := checkInclusion(key, p.GetHashes(), p.GetCheckpoint(), idx, head.size, entries[idx]); err != nil {
			t.Errorf("inclusion of %d in %d: %v", idx, head.size, err)
		}
		return nil
	})
	return auditReport{head: head, entries: entries, tree: mt}
}

// checkInclusion verifies an inclusion proof of data at idx against the
// signed checkpoint of a tree of the given size.
func checkInclusion(key *logKey, hashes [][]byte, signed []byte, idx, size uint64, data []byte) error {
	h, err := key.open(signed)
	if err != nil {
		return err
	}
	if h.size != size {
		return fmt.Errorf("proof comes with a checkpoint of size %d, want %d", h.size, size)
	}
	p, err := toHashes(hashes)
	if err != nil {
		return err
	}
	return tlog.CheckRecord(p, int64(size), h.root, int64(idx), tlog.RecordHash(data))
}

// checkConsistency asks for and verifies the consistency proof from old to
// the tree of size to (whose root is newRoot).
func checkConsistency(ctx context.Context, d *daemon, key *logKey, old treeHead, to uint64, newRoot tlog.Hash) error {
	if old.size == 0 {
		return nil // the empty tree is a prefix of every tree
	}
	resp, err := d.log.GetConsistencyProof(ctx, &tlogv1.GetConsistencyProofRequest{Log: logName, FromSize: old.size, ToSize: to})
	if err != nil {
		return fmt.Errorf("GetConsistencyProof(%d, %d): %w", old.size, to, err)
	}
	h, err := key.open(resp.GetCheckpoint())
	if err != nil {
		return err
	}
	if h.size != to || h.root != newRoot {
		return fmt.Errorf("GetConsistencyProof(%d, %d) comes with checkpoint %d %v, want %d %v", old.size, to, h.size, h.root, to, newRoot)
	}
	p, err := toHashes(resp.GetHashes())
	if err != nil {
		return err
	}
	if err := tlog.CheckTree(p, int64(to), newRoot, int64(old.size), old.root); err != nil {
		return fmt.Errorf("consistency proof %d -> %d: %w", old.size, to, err)
	}
	return nil
}

func toHashes(hs [][]byte) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(hs))
	for i, h := range hs {
		if len(h) != tlog.HashSize {
			return nil, fmt.Errorf("proof hash %d has %d bytes", i, len(h))
		}
		copy(out[i][:], h)
	}
	return out, nil
}

// auditCheckpoints checks every seen checkpoint against the latest tree.
func auditCheckpoints(t testing.TB, ctx context.Context, d *daemon, key *logKey, mt *merkleTree, head treeHead, seen map[uint64]tlog.Hash) {
	t.Helper()
	var old []treeHead
	for size, root := range seen {
		if size > head.size {
			t.Errorf("a checkpoint of size %d was returned, but the log now has size %d: history was lost", size, head.size)
			continue
		}
		if got := mt.root(size); got != root {
			t.Errorf("checkpoint of size %d has root %v, the entries now in the log give %v: fork", size, root, got)
		}
		old = append(old, treeHead{size, root})
	}
	parallel(8, len(old), func(i int) error {
		if err := checkConsistency(ctx, d, key, old[i], head.size, head.root); err != nil {
			t.Error(err)
			return err
		}
		return nil
	})
}

// auditTiles fetches every hash tile and entry bundle of a tree of size n
// over HTTP and compares them with those recomputed from the entries.
func auditTiles(t testing.TB, ctx context.Context, d *daemon, mt *merkleTree, entries [][]byte, n uint64) {
	t.Helper()
	var tiles []tlog.Tile
	for _, tl := range tlog.NewTiles(8, 0, int64(n)) {
		tiles = append(tiles, tl)
		if tl.L == 0 {
			tl.L = -1
			tiles = append(tiles, tl)
		}
	}
	parallel(8, len(tiles), func(i int) error {
		tl := tiles[i]
		path := "/logs/" + logName + "/" + tilePath(tl)
		got, hdr, err := d.get(ctx, path)
		if err != nil {
			t.Errorf("GET %s: %v", path, err)
			return err
		}
		if cc := hdr.Get("Cache-Control"); (tl.W == 256) != strings.Contains(cc, "immutable") {
			t.Errorf("GET %s: Cache-Control %q (a tile is immutable exactly when full)", path, cc)
		}
		if tl.L == -1 {
			start := tl.N * 256
			var want []byte
			for _, e := range entries[start : start+int64(tl.W)] {
				want = append(want, byte(len(e)>>8), byte(len(e)))
				want = append(want, e...)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("GET %s: entry bundle of %d bytes differs from the %d bytes of entries %d..%d", path, len(got), len(want), start, start+int64(tl.W))
			}
			return nil
		}
		want, err := tlog.ReadTileData(tl, mt.reader())
		if err != nil {
			t.Errorf("recomputing %s: %v", path, err)
			return err
		}
		if !bytes.Equal(got, want) {
			t.Errorf("GET %s: %d bytes differ from the recomputed tile of %d bytes", path, len(got), len(want))
		}
		return nil
	})
}

// parallel runs f(0..n-1) on at most k goroutines and returns the first
// error.
func parallel(k, n int, f func(i int) error) error {
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
		next  int
	)
	for range min(k, n) {
		wg.Go(func() {
			for {
				mu.Lock()
				i := next
				next++
				mu.Unlock()
				if i >= n {
					return
				}
				if err := f(i); err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	return first
}

// isDeadline reports whether err is a client-side timeout, which in these
// tests means a hang.
func isDeadline(err error) bool {
	return errors.Is(err, context.DeadlineExceeded) || strings.Contains(err.Error(), "DeadlineExceeded")
}

// checkLogClean fails the test if tlogd logged a warning or an error, but
// for lines that contain one of allowed.
func (d *daemon) checkLogClean(t testing.TB, allowed ...string) {
	t.Helper()
lines:
	for _, line := range strings.Split(d.stderr.String(), "\n") {
		if !strings.Contains(line, "level=WARN") && !strings.Contains(line, "level=ERROR") {
			continue
		}
		for _, a := range allowed {
			if strings.Contains(line, a) {
				continue lines
			}
		}
		t.Errorf("%s logged: %s", d.name, line)
	}
}

// retriable reports whether an append failed in a way the API says to
// retry: UNAVAILABLE (HTTP 503), e.g. a batch that lost the compare-and-swap
// of the tree head to another writer.
func retriable(err error) bool {
	return status.Code(err) == codes.Unavailable || isHTTPStatus(err, http.StatusServiceUnavailable)
}

// withRetry calls f until it succeeds or fails with an error that is not
// retriable, at most 20 times.
func withRetry(f func() error) error {
	var err error
	for range 20 {
		if err = f(); err == nil || !retriable(err) {
			return err
		}
		time.Sleep(50 * time.Millisecond)
	}
	return err
}
