package witness

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	fnote "github.com/transparency-dev/formats/note"
	"golang.org/x/mod/sumdb/note"

	"github.com/tlog-dev/tlog/internal/pgtest"
	"github.com/tlog-dev/tlog/pkg/checkpoint"
	"github.com/tlog-dev/tlog/pkg/tile"
	"github.com/tlog-dev/tlog/pkg/tree"
)

// The tests use tlog's log side (pkg/checkpoint, pkg/tree) only to play a
// real log talking to the witness; the witness itself never imports them.

// testLogger routes slog output to t.Log.
func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

// fakeLog is an RFC 6962 log built with pkg/tree, signing checkpoints with
// pkg/checkpoint.
type fakeLog struct {
	t      testing.TB
	origin string
	signer note.Signer
	vkey   string
	edge   *tree.Edge
	tiles  map[[2]uint64][]byte // (level, index) -> widest hashes seen
	// prepared is a request part a test case builds ahead.
	prepared []byte
}

func newFakeLog(t testing.TB, origin string) *fakeLog {
	t.Helper()
	skey, vkey, err := checkpoint.GenerateKey(origin, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := checkpoint.NewSigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	return &fakeLog{t: t, origin: origin, signer: signer, vkey: vkey, edge: tree.EmptyEdge(), tiles: map[[2]uint64][]byte{}}
}

// fork returns a copy of l with the same key and history so far; the two
// then grow apart.
func (l *fakeLog) fork() *fakeLog {
	f := *l
	f.tiles = maps.Clone(l.tiles)
	return &f
}

// grow appends n leaves whose contents start with tag.
func (l *fakeLog) grow(n int, tag string) {
	l.t.Helper()
	leaves := make([]tree.Hash, n)
	for i := range leaves {
		leaves[i] = tree.LeafHash(fmt.Appendf(nil, "%s %d", tag, l.edge.Size()+uint64(i)))
	}
	edge, tiles, err := l.edge.Append(leaves)
	if err != nil {
		l.t.Fatal(err)
	}
	for _, td := range tiles {
		l.tiles[[2]uint64{uint64(td.Level), td.Index}] = td.Hashes
	}
	l.edge = edge
}

func (l *fakeLog) reader() tree.TileReader {
	return tree.TileReaderFunc(func(ts []tile.Tile) ([][]byte, error) {
		out := make([][]byte, len(ts))
		for i, tl := range ts {
			h, ok := l.tiles[[2]uint64{uint64(tl.Level), tl.Index}]
			if !ok || len(h) < tl.Width*32 {
				return nil, fmt.Errorf("%w: %v", tree.ErrMissingTile, tl)
			}
			out[i] = h
		}
		return out, nil
	})
}

func (l *fakeLog) root(size uint64) tree.Hash {
	l.t.Helper()
	if size == 0 {
		return tree.EmptyRoot()
	}
	h, err := tree.RootHash(l.reader(), size)
	if err != nil {
		l.t.Fatal(err)
	}
	return h
}

func (l *fakeLog) proof(m, n uint64) [][]byte {
	l.t.Helper()
	if m == 0 || m == n {
		return nil
	}
	p, err := tree.ConsistencyProof(l.reader(), m, n)
	if err != nil {
		l.t.Fatal(err)
	}
	return p
}

// checkpoint returns the log's signed checkpoint at size.
func (l *fakeLog) checkpoint(size uint64) []byte {
	l.t.Helper()
	text := checkpoint.Checkpoint{Origin: l.origin, Size: size, Hash: l.root(size)}.Marshal()
	// note.Sign rather than checkpoint.Sign, which insists that the key
	// name is the origin (the spec only says SHOULD).
	b, err := note.Sign(&note.Note{Text: string(text)}, l.signer)
	if err != nil {
		l.t.Fatal(err)
	}
	return b
}

// request returns an add-checkpoint body from old to size, with its proof.
func (l *fakeLog) request(old, size uint64) []byte {
	return requestBody(old, l.proof(old, size), l.checkpoint(size))
}

func requestBody(old uint64, proof [][]byte, cp []byte) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "old %d\n", old)
	for _, h := range proof {
		b.WriteString(base64.StdEncoding.EncodeToString(h) + "\n")
	}
	b.WriteString("\n")
	b.Write(cp)
	return b.Bytes()
}

func (l *fakeLog) config() Log { return Log{Origin: l.origin, VerifierKeys: []string{l.vkey}} }

// newTestCosigner returns a Cosigner with a fresh key, and its plain Ed25519
// note verifier key.
func newTestCosigner(t testing.TB, name string) (*Cosigner, string) {
	t.Helper()
	skey, vkey, err := note.GenerateKey(rand.Reader, name)
	if err != nil {
		t.Fatal(err)
	}
	c, err := NewCosigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	return c, vkey
}

// backend opens a State; reopen opens the same store again (after Close).
type backend struct {
	name string
	open func(t testing.TB) (reopen func() State)
}

var (
	boltBackend = backend{"bbolt", func(t testing.TB) func() State {
		path := filepath.Join(t.TempDir(), "witness.db")
		return func() State {
			s, err := OpenBoltState(path)
			if err != nil {
				t.Fatal(err)
			}
			return s
		}
	}}
	postgresBackend = backend{"postgres", func(t testing.TB) func() State {
		url := pgtest.NewDatabase(t)
		return func() State {
			s, err := OpenPostgresState(context.Background(), url, testLogger(t))
			if err != nil {
				t.Fatal(err)
			}
			return s
		}
	}}
	backends = []backend{boltBackend, postgresBackend}
)

// forEachBackend runs f for each State backend, with a fresh store.
func forEachBackend(t *testing.T, f func(t *testing.T, reopen func() State)) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) { f(t, b.open(t)) })
	}
}

// openState opens a store and closes it when the test ends.
func openState(t testing.TB, reopen func() State) State {
	s := reopen()
	t.Cleanup(func() { s.Close() })
	return s
}

// testWitness is a Witness with its cosigner and its plain Ed25519 vkey.
type testWitness struct {
	*Witness
	cosigner *Cosigner
	vkey     string // plain Ed25519 note vkey (type 0x01) of the same key
	state    State
}

func newTestWitness(t testing.TB, state State, logs ...Log) *testWitness {
	t.Helper()
	c, vkey := newTestCosigner(t, "witness.example.com/w1")
	return newTestWitnessWithKey(t, c, vkey, state, logs...)
}

// newTestWitnessWithKey is newTestWitness with a given cosigner and its plain
// Ed25519 vkey.
func newTestWitnessWithKey(t testing.TB, c *Cosigner, vkey string, state State, logs ...Log) *testWitness {
	t.Helper()
	w, err := New(Config{Cosigner: c, Logs: logs, State: state, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	return &testWitness{Witness: w, cosigner: c, vkey: vkey, state: state}
}

// post sends an add-checkpoint request to h and returns the response.
func post(t testing.TB, h http.Handler, body []byte) (code int, contentType, respBody string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("POST", "/add-checkpoint", bytes.NewReader(body)))
	b, _ := io.ReadAll(rec.Result().Body)
	return rec.Code, rec.Result().Header.Get("Content-Type"), string(b)
}

// mustCosign posts a request that must succeed and checks the cosignature.
func (w *testWitness) mustCosign(t testing.TB, l *fakeLog, old, size uint64) string {
	t.Helper()
	code, _, body := post(t, w, l.request(old, size))
	if code != http.StatusOK {
		t.Fatalf("add-checkpoint %s old %d size %d: %d %q", l.origin, old, size, code, body)
	}
	w.checkCosignature(t, l.checkpoint(size), body)
	return body
}

// checkCosignature verifies a 200 response body against the checkpoint it
// cosigns, with the independent verifier of transparency-dev/formats, both
// from the witness's cosignature vkey and from its plain Ed25519 vkey, and
// through golang.org/x/mod/sumdb/note.Open on the concatenated note. It
// checks the timestamp is non-zero and close to now.
func (w *testWitness) checkCosignature(t testing.TB, cp []byte, resp string) {
	t.Helper()
	if !strings.HasPrefix(resp, "— ") || !strings.HasSuffix(resp, "\n") || strings.Count(resp, "\n") != 1 {
		t.Fatalf("response is not one signature line: %q", resp)
	}
	want, err := fnote.VKeyToCosignatureV1(w.vkey)
	if err != nil {
		t.Fatal(err)
	}
	if got := w.cosigner.VerifierKey(); got != want {
		t.Fatalf("VerifierKey() = %q, formats.VKeyToCosignatureV1 = %q", got, want)
	}
	for _, vkey := range []string{w.cosigner.VerifierKey(), w.vkey} {
		v, err := fnote.NewVerifierForCosignatureV1(vkey)
		if err != nil {
			t.Fatal(err)
		}
		if v.KeyHash() != w.cosigner.KeyID() {
			t.Fatalf("key ID %08x, formats says %08x", w.cosigner.KeyID(), v.KeyHash())
		}
		// The client MAY concatenate the response to the checkpoint and
		// open it with the witness keys it trusts (c2sp.org/tlog-witness).
		n, err := note.Open(append(bytes.Clone(cp), resp...), note.VerifierList(v))
		if err != nil {
			t.Fatalf("note.Open with the cosignature verifier: %v", err)
		}
		if len(n.Sigs) != 1 || n.Sigs[0].Name != w.cosigner.Name() {
			t.Fatalf("verified signatures %+v", n.Sigs)
		}
		ts, err := fnote.CoSigV1Timestamp(n.Sigs[0])
		if err != nil {
			t.Fatal(err)
		}
		if ts.Unix() == 0 || time.Since(ts).Abs() > time.Minute {
			t.Fatalf("cosignature timestamp %v, want about now", ts)
		}
	}
}

// mustGet returns the record of origin.
func mustGet(t testing.TB, s State, origin string) Record {
	t.Helper()
	r, err := s.Get(context.Background(), origin)
	if err != nil {
		t.Fatalf("state of %s: %v", origin, err)
	}
	return r
}
