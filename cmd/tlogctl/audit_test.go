package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	fmtnote "github.com/transparency-dev/formats/note"
	"golang.org/x/mod/sumdb/note"

	"github.com/tlog-dev/tlog/pkg/checkpoint"
	"github.com/tlog-dev/tlog/pkg/tile"
	"github.com/tlog-dev/tlog/pkg/tree"
)

// fakeLog is an in-memory C2SP tlog-tiles log whose answers a test can
// falsify.
type fakeLog struct {
	t       *testing.T
	origin  string
	signer  note.Signer
	vkey    string
	entries [][]byte
	edge    *tree.Edge
	tiles   map[tile.Tile][]byte // by level and index (Width 0): the widest version
	note    []byte               // the latest checkpoint

	mu sync.Mutex
	// Faults.
	cosigners   []note.Signer     // also sign the checkpoint
	servedEntry map[uint64][]byte // entries served in place of the real ones
	servedHash  map[tile.Tile]int // hash tiles served with hash i flipped
	failBundles uint64            // entry bundles from this index on fail with 500 (0: none)
}

type logKey struct {
	origin string
	signer note.Signer
	vkey   string
}

func newLogKey(t *testing.T, origin string) logKey {
	skey, vkey, err := checkpoint.GenerateKey(origin, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := checkpoint.NewSigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	return logKey{origin: origin, signer: signer, vkey: vkey}
}

func newFakeLog(t *testing.T, k logKey) *fakeLog {
	l := &fakeLog{t: t, origin: k.origin, signer: k.signer, vkey: k.vkey, edge: tree.EmptyEdge(), tiles: map[tile.Tile][]byte{}}
	l.sign()
	return l
}

func entryData(i int, variant string) []byte { return fmt.Appendf(nil, "entry %d%s", i, variant) }

// add appends n entries (variant makes them differ from another log's).
func (l *fakeLog) add(n int, variant string) *fakeLog {
	var leaves []tree.Hash
	for range n {
		e := entryData(len(l.entries), variant)
		l.entries = append(l.entries, e)
		leaves = append(leaves, tree.LeafHash(e))
	}
	edge, tds, err := l.edge.Append(leaves)
	if err != nil {
		l.t.Fatal(err)
	}
	l.edge = edge
	for _, td := range tds {
		l.tiles[tile.Tile{Level: td.Level, Index: td.Index}] = td.Hashes
	}
	l.sign()
	return l
}

func (l *fakeLog) sign() {
	c := checkpoint.Checkpoint{Origin: l.origin, Size: l.edge.Size(), Hash: l.edge.Root()}
	signed, err := note.Sign(&note.Note{Text: string(c.Marshal())}, append([]note.Signer{l.signer}, l.cosigners...)...)
	if err != nil {
		l.t.Fatal(err)
	}
	l.note = signed
}

// clone returns a copy of the first n entries of l (a fork, once each
// grows differently).
func (l *fakeLog) clone(k logKey, n int) *fakeLog {
	c := newFakeLog(l.t, k)
	for i := range n {
		c.entries = append(c.entries, l.entries[i])
	}
	var leaves []tree.Hash
	for _, e := range c.entries {
		leaves = append(leaves, tree.LeafHash(e))
	}
	edge, tds, err := c.edge.Append(leaves)
	if err != nil {
		l.t.Fatal(err)
	}
	c.edge = edge
	for _, td := range tds {
		c.tiles[tile.Tile{Level: td.Level, Index: td.Index}] = td.Hashes
	}
	c.sign()
	return c
}

func (l *fakeLog) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	l.mu.Lock()
	defer l.mu.Unlock()
	path := strings.TrimPrefix(r.URL.Path, "/log/")
	if path == "checkpoint" {
		w.Write(l.note)
		return
	}
	t, err := tile.ParsePath(path)
	size := l.edge.Size()
	if err != nil || tile.WidthAt(t.Level, t.Index, size) < t.Width {
		http.NotFound(w, r)
		return
	}
	if t.IsEntries() {
		if l.failBundles > 0 && t.Index >= l.failBundles {
			http.Error(w, "overloaded", http.StatusInternalServerError)
			return
		}
		var b []byte
		for i := t.Index * tile.Width; i < t.Index*tile.Width+uint64(t.Width); i++ {
			e := l.entries[i]
			if s, ok := l.servedEntry[i]; ok {
				e = s
			}
			b = tile.AppendBundleEntry(b, e)
		}
		w.Write(b)
		return
	}
	stored, ok := l.tiles[tile.Tile{Level: t.Level, Index: t.Index}]
	if !ok {
		http.NotFound(w, r)
		return
	}
	h := bytes.Clone(stored[:t.Width*tile.HashSize])
	if p, ok := l.servedHash[tile.Tile{Level: t.Level, Index: t.Index}]; ok && p < t.Width {
		h[p*tile.HashSize] ^= 1
	}
	w.Write(h)
}

// logServer serves one fakeLog at a time under /log/.
type logServer struct {
	mu  sync.Mutex
	log *fakeLog
	srv *httptest.Server
}

func newLogServer(t *testing.T, l *fakeLog) *logServer {
	s := &logServer{log: l}
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		l := s.log
		s.mu.Unlock()
		l.ServeHTTP(w, r)
	}))
	t.Cleanup(s.srv.Close)
	return s
}

func (s *logServer) set(l *fakeLog) {
	s.mu.Lock()
	s.log = l
	s.mu.Unlock()
}

func (s *logServer) url() string { return s.srv.URL + "/log" }

// fakeWitness serves, for one origin, the checkpoints a C2SP tlog-witness
// monitoring endpoint serves: the log's checkpoint with the witness's
// cosignature.
type fakeWitness struct {
	name   string
	signer note.Signer
	vkey   string // its cosignature/v1 verifier key
	srv    *httptest.Server

	mu   sync.Mutex
	note []byte // nil: 404
}

func newFakeWitness(t *testing.T, name string) *fakeWitness {
	skey, vkey, err := note.GenerateKey(rand.Reader, name)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := fmtnote.NewSignerForCosignatureV1(skey)
	if err != nil {
		t.Fatal(err)
	}
	cvkey, err := fmtnote.VKeyToCosignatureV1(vkey)
	if err != nil {
		t.Fatal(err)
	}
	w := &fakeWitness{name: name, signer: signer, vkey: cvkey}
	w.srv = httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		w.mu.Lock()
		defer w.mu.Unlock()
		if w.note == nil || r.URL.Path != "/"+hex.EncodeToString(w.originHash())+"/checkpoint" {
			http.NotFound(rw, r)
			return
		}
		rw.Write(w.note)
	}))
	t.Cleanup(w.srv.Close)
	return w
}

var witnessOrigin = "example.com/audited-log"

func (w *fakeWitness) originHash() []byte {
	h := sha256.Sum256([]byte(witnessOrigin))
	return h[:]
}

// cosign makes the witness serve l's current checkpoint, cosigned.
func (w *fakeWitness) cosign(t *testing.T, l *fakeLog) {
	c := checkpoint.Checkpoint{Origin: l.origin, Size: l.edge.Size(), Hash: l.edge.Root()}
	signed, err := note.Sign(&note.Note{Text: string(c.Marshal())}, l.signer, w.signer)
	if err != nil {
		t.Fatal(err)
	}
	w.mu.Lock()
	w.note = signed
	w.mu.Unlock()
}

func (w *fakeWitness) flag() string { return w.srv.URL + "=" + w.vkey }

// auditResult is the outcome of one tlogctl audit --json run.
type auditResult struct {
	code   int
	events []auditEvent
	stderr string
}

func (r auditResult) event(name string) *auditEvent {
	for i := range r.events {
		if r.events[i].Event == name {
			return &r.events[i]
		}
	}
	return nil
}

// misbehavior returns the kind and message of the misbehavior event.
func (r auditResult) misbehavior() (string, string) {
	if e := r.event("misbehavior"); e != nil {
		return e.Kind, e.Message
	}
	return "", ""
}

// runAudit runs tlogctl audit --json in this process.
func runAudit(t *testing.T, args ...string) auditResult {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), append([]string{"audit", "--json", "--timeout", "5s"}, args...), strings.NewReader(""), &stdout, &stderr)
	var r auditResult
	r.code, r.stderr = code, stderr.String()
	for _, line := range strings.Split(strings.TrimSpace(stdout.String()), "\n") {
		var e auditEvent
		if line != "" {
			if err := json.Unmarshal([]byte(line), &e); err != nil {
				t.Fatalf("audit --json printed %q: %v", line, err)
			}
			r.events = append(r.events, e)
		}
	}
	t.Logf("tlogctl audit %s: exit %d\n%s%s", strings.Join(args, " "), code, stdout.String(), stderr.String())
	return r
}

// expect checks an audit's exit code and, for 3, its misbehavior.
func (r auditResult) expect(t *testing.T, code int, kind, says string) {
	t.Helper()
	if r.code != code {
		t.Fatalf("exit code %d, want %d", r.code, code)
	}
	if code == exitVerify {
		k, msg := r.misbehavior()
		if k != kind || !strings.Contains(msg, says) {
			t.Fatalf("misbehavior %q: %q; want %q saying %q", k, msg, kind, says)
		}
	}
}

// stateCopy returns a copy of a state directory.
func stateCopy(t *testing.T, dir string) string {
	t.Helper()
	out := t.TempDir()
	es, _ := os.ReadDir(dir)
	for _, e := range es {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(out, e.Name()), b, 0o600)
	}
	return out
}

func TestAuditHistory(t *testing.T) {
	k := newLogKey(t, witnessOrigin)
	l := newFakeLog(t, k).add(300, "")
	srv := newLogServer(t, l)
	state := t.TempDir()
	audit := func(state string, args ...string) auditResult {
		return runAudit(t, append([]string{"--log", srv.url(), "--state", state}, args...)...)
	}

	r := audit(state, "--vkey", k.vkey)
	r.expect(t, exitOK, "", "")
	if e := r.event("checkpoint"); e == nil || *e.Size != 300 {
		t.Fatalf("checkpoint event %+v", e)
	}
	// The key is remembered with the state.
	l.add(400, "")
	r = audit(state)
	r.expect(t, exitOK, "", "")
	if e := r.event("consistent"); e == nil || *e.FromSize != 300 || *e.Size != 700 {
		t.Fatalf("consistent event %+v", e)
	}
	saved, _ := os.ReadFile(filepath.Join(state, "checkpoint"))
	if !bytes.Equal(saved, l.note) {
		t.Fatalf("state holds %q, want the checkpoint of size 700", saved)
	}

	t.Run("same size, other root", func(t *testing.T) {
		srv.set(l.clone(k, 699).add(1, " forked"))
		defer srv.set(l)
		audit(stateCopy(t, state)).expect(t, exitVerify, "fork", "two different roots for tree size 700")
	})
	t.Run("history rewritten", func(t *testing.T) {
		srv.set(l.clone(k, 500).add(400, " forked"))
		defer srv.set(l)
		audit(stateCopy(t, state)).expect(t, exitVerify, "fork", "does not extend the checkpoint at size 700")
	})
	t.Run("rollback", func(t *testing.T) {
		srv.set(l.clone(k, 600))
		defer srv.set(l)
		audit(stateCopy(t, state)).expect(t, exitVerify, "rollback", "it rolled back 100 entries")
	})
	t.Run("other key", func(t *testing.T) {
		srv.set(l.clone(newLogKey(t, witnessOrigin), 700))
		defer srv.set(l)
		audit(stateCopy(t, state)).expect(t, exitVerify, "signature", "does not verify with the log's key")
	})
	t.Run("tile missing", func(t *testing.T) {
		// A state at size 100: the proof to 700 needs tile 0/0.
		old := t.TempDir()
		srv.set(l.clone(k, 100))
		audit(old, "--vkey", k.vkey).expect(t, exitOK, "", "")
		bad := l.clone(k, 700)
		delete(bad.tiles, tile.Tile{Level: 0, Index: 0})
		srv.set(bad)
		defer srv.set(l)
		audit(old).expect(t, exitVerify, "missing_data", "tile/0/000")
	})
	t.Run("unreachable", func(t *testing.T) {
		r := runAudit(t, "--log", "http://127.0.0.1:1/log", "--state", stateCopy(t, state))
		r.expect(t, exitError, "", "")
		if r.event("unreachable") == nil {
			t.Fatalf("no unreachable event")
		}
	})
	t.Run("another key than the state's", func(t *testing.T) {
		audit(stateCopy(t, state), "--vkey", newLogKey(t, witnessOrigin).vkey).expect(t, exitError, "", "")
	})
	t.Run("no key", func(t *testing.T) {
		audit(t.TempDir()).expect(t, exitError, "", "")
	})
}

func TestAuditFull(t *testing.T) {
	k := newLogKey(t, witnessOrigin)
	l := newFakeLog(t, k).add(1000, "")
	srv := newLogServer(t, l)
	audit := func(state string, args ...string) auditResult {
		return runAudit(t, append([]string{"--log", srv.url(), "--state", state, "--vkey", k.vkey, "--full"}, args...)...)
	}

	state := t.TempDir()
	r := audit(state)
	r.expect(t, exitOK, "", "")
	// Tiles 0/0..0/2, 0/3.p/232 and 1/0.p/3.
	if e := r.event("full"); e == nil || *e.Verified != 1000 || e.Tiles != 5 {
		t.Fatalf("full event %+v", e)
	}
	l.add(300, "")
	r = audit(state)
	r.expect(t, exitOK, "", "")
	if e := r.event("full"); e == nil || *e.FromSize != 1000 || *e.Verified != 300 {
		t.Fatalf("full event after growth %+v", e)
	}

	t.Run("entry changed", func(t *testing.T) {
		l.mu.Lock()
		l.servedEntry = map[uint64][]byte{700: []byte("not what was signed")}
		l.mu.Unlock()
		defer func() { l.mu.Lock(); l.servedEntry = nil; l.mu.Unlock() }()
		audit(t.TempDir()).expect(t, exitVerify, "tampered_entry", "entry 700: the entry the log serves")
		// A resumed full audit does not download entry 700 again.
		audit(stateCopy(t, state)).expect(t, exitOK, "", "")
	})
	t.Run("tile changed", func(t *testing.T) {
		l.mu.Lock()
		l.servedHash = map[tile.Tile]int{{Level: 1, Index: 0}: 2}
		l.mu.Unlock()
		defer func() { l.mu.Lock(); l.servedHash = nil; l.mu.Unlock() }()
		audit(t.TempDir()).expect(t, exitVerify, "tampered_tile", "tile/1/000.p/5 position 2")
	})
	t.Run("resume", func(t *testing.T) {
		l.mu.Lock()
		l.failBundles = 2
		l.mu.Unlock()
		state := t.TempDir()
		audit(state).expect(t, exitError, "", "")
		l.mu.Lock()
		l.failBundles = 0
		l.mu.Unlock()
		r := audit(state)
		r.expect(t, exitOK, "", "")
		if e := r.event("full"); e == nil || *e.FromSize != 512 || *e.Verified != 1300-512 {
			t.Fatalf("resumed full event %+v, want it to start at 512", e)
		}
	})
}

func TestAuditWitnesses(t *testing.T) {
	k := newLogKey(t, witnessOrigin)
	l := newFakeLog(t, k).add(500, "")
	behind, same, forked, ahead, silent := newFakeWitness(t, "w.example/behind"), newFakeWitness(t, "w.example/same"),
		newFakeWitness(t, "w.example/forked"), newFakeWitness(t, "w.example/ahead"), newFakeWitness(t, "w.example/silent")
	behind.cosign(t, l)
	forked.cosign(t, l.clone(k, 400).add(100, " forked")) // same size 500, other root
	l.add(200, "")
	same.cosign(t, l)
	ahead.cosign(t, l.clone(k, 700).add(100, "")) // size 800 of the same history
	srv := newLogServer(t, l)
	audit := func(args ...string) auditResult {
		return runAudit(t, append([]string{"--log", srv.url(), "--vkey", k.vkey}, args...)...)
	}

	r := audit("--witness", behind.flag(), "--witness", same.flag(), "--witness", silent.flag(), "--witness", ahead.flag())
	r.expect(t, exitOK, "", "")
	n := 0
	for _, e := range r.events {
		if e.Event == "witness" {
			n++
		}
	}
	if n != 2 {
		t.Errorf("%d witness events, want 2 (behind and same)", n)
	}

	// A witness that cosigned a fork at a size the log has passed.
	audit("--witness", behind.flag(), "--witness", forked.flag()).expect(t, exitVerify, "split_view", "w.example/forked")
	audit("--witness", forked.flag()).expect(t, exitVerify, "split_view", "the two trees are not consistent")
	// A witness that cosigned a fork at the log's size.
	forked.cosign(t, l.clone(k, 650).add(50, " forked"))
	audit("--witness", forked.flag()).expect(t, exitVerify, "split_view", "two different roots for one tree size")

	t.Run("quorum", func(t *testing.T) {
		audit("--witness", same.flag(), "--witness-quorum", "1").expect(t, exitVerify, "policy", "fewer than --witness-quorum 1")
		l.mu.Lock()
		l.cosigners = []note.Signer{same.signer}
		l.sign()
		l.mu.Unlock()
		r := audit("--witness", same.flag(), "--witness", behind.flag(), "--witness-quorum", "1")
		r.expect(t, exitOK, "", "")
		if e := r.event("checkpoint"); e == nil || len(e.CosignedBy) != 1 || e.CosignedBy[0] != same.name {
			t.Fatalf("checkpoint event %+v, want it cosigned by %s", e, same.name)
		}
	})
	t.Run("unreachable witness", func(t *testing.T) {
		audit("--witness", "http://127.0.0.1:1="+same.vkey).expect(t, exitError, "", "")
	})
}

// TestAuditGRPC audits a real tlogd over gRPC: its consistency proofs,
// verified, and --full recomputing the root from GetEntries.
func TestAuditGRPC(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs binaries")
	}
	bin := buildBinaries(t)
	srv := startTlogd(t, filepath.Join(bin, "tlogd"))
	state := t.TempDir()
	appendN := func(from, n int) {
		t.Helper()
		var in strings.Builder
		for i := from; i < from+n; i++ {
			fmt.Fprintf(&in, "grpc entry %d\n", i)
		}
		var stdout, stderr bytes.Buffer
		if code := run(context.Background(), []string{"append", "--addr", srv.addr, "--vkey", srv.vkey}, strings.NewReader(in.String()), &stdout, &stderr); code != 0 {
			t.Fatalf("append: exit code %d: %s", code, stderr.String())
		}
	}
	audit := func() auditResult {
		return runAudit(t, "--log", "default", "--addr", srv.addr, "--vkey", srv.vkey, "--state", state, "--full")
	}
	appendN(0, 300)
	r := audit()
	r.expect(t, exitOK, "", "")
	if e := r.event("full"); e == nil || *e.Verified != 300 {
		t.Fatalf("full event %+v", e)
	}
	appendN(300, 100)
	r = audit()
	r.expect(t, exitOK, "", "")
	if e := r.event("consistent"); e == nil || *e.FromSize != 300 || *e.Size != 400 {
		t.Fatalf("consistent event %+v", e)
	}
	if e := r.event("full"); e == nil || *e.FromSize != 300 || *e.Verified != 100 {
		t.Fatalf("full event %+v", e)
	}
}
