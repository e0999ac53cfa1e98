package witnessing_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	fmtnote "github.com/transparency-dev/formats/note"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
	"golang.org/x/mod/sumdb/note"

	"github.com/tlog-dev/tlog/pkg/checkpoint"
	"github.com/tlog-dev/tlog/pkg/policy"
	"github.com/tlog-dev/tlog/pkg/tile"
	"github.com/tlog-dev/tlog/pkg/tree"
	"github.com/tlog-dev/tlog/server/sequencer"
	"github.com/tlog-dev/tlog/server/witnessing"
	"github.com/tlog-dev/tlog/storage"
	"github.com/tlog-dev/tlog/storage/embedded"
)

// fakeWitness is a C2SP tlog-witness written here from the spec alone (it
// shares no code with server/witness), with switchable misbehaviour.
type fakeWitness struct {
	t      testing.TB
	name   string // key name
	priv   ed25519.PrivateKey
	keyID  uint32
	vkey   string // cosignature/v1 (type 0x04) verifier key
	origin string
	logV   note.Verifier
	srv    *httptest.Server

	release chan struct{} // closed at the end of the test

	mu       sync.Mutex
	size     uint64
	root     [32]byte
	mode     string // "", "hang", "status:<code>", "otherkey", "othername", "zerotime"
	requests int
	inflight int
	maxIn    int // most requests in flight at once
}

func newFakeWitness(t testing.TB, name, origin string, logV note.Verifier) *fakeWitness {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	fw := &fakeWitness{t: t, name: name, priv: priv, origin: origin, logV: logV, root: sha256.Sum256(nil)}
	fw.keyID = cosigKeyID(name, pub)
	fw.vkey = fmt.Sprintf("%s+%08x+%s", name, fw.keyID, base64.StdEncoding.EncodeToString(append([]byte{0x04}, pub...)))
	fw.release = make(chan struct{})
	fw.srv = httptest.NewServer(http.HandlerFunc(fw.serve))
	t.Cleanup(fw.srv.Close)
	t.Cleanup(func() { close(fw.release) }) // runs first: frees hanging handlers
	return fw
}

// cosigKeyID is SHA-256(name || "\n" || 0x04 || key)[:4].
func cosigKeyID(name string, pub ed25519.PublicKey) uint32 {
	h := sha256.Sum256(append(append([]byte(name+"\n"), 0x04), pub...))
	return binary.BigEndian.Uint32(h[:])
}

// cosign returns the cosignature/v1 line on the note text by key priv
// under name and key ID id, timestamped t.
func cosign(name string, id uint32, priv ed25519.PrivateKey, text string, t uint64) string {
	msg := fmt.Sprintf("cosignature/v1\ntime %d\n%s", t, text)
	sig := binary.BigEndian.AppendUint32(nil, id)
	sig = binary.BigEndian.AppendUint64(sig, t)
	sig = append(sig, ed25519.Sign(priv, []byte(msg))...)
	return "— " + name + " " + base64.StdEncoding.EncodeToString(sig) + "\n"
}

func (fw *fakeWitness) setMode(m string) {
	fw.mu.Lock()
	fw.mode = m
	fw.mu.Unlock()
}

func (fw *fakeWitness) state() (uint64, int) {
	fw.mu.Lock()
	defer fw.mu.Unlock()
	return fw.size, fw.requests
}

func (fw *fakeWitness) serve(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost || r.URL.Path != "/add-checkpoint" {
		http.Error(w, "not found", http.StatusNotFound)
		return
	}
	fw.mu.Lock()
	fw.requests++
	fw.inflight++
	fw.maxIn = max(fw.maxIn, fw.inflight)
	mode := fw.mode
	fw.mu.Unlock()
	defer func() {
		fw.mu.Lock()
		fw.inflight--
		fw.mu.Unlock()
	}()
	switch {
	case mode == "hang":
		io.ReadAll(r.Body) // so that the server notices the client hanging up
		select {
		case <-r.Context().Done():
		case <-fw.release:
		}
		return
	case strings.HasPrefix(mode, "status:"):
		code, _ := strconv.Atoi(strings.TrimPrefix(mode, "status:"))
		http.Error(w, "fake witness says no", code)
		return
	}
	body, _ := io.ReadAll(r.Body)
	// old <size>\n, proof lines, empty line, checkpoint.
	sc := bufio.NewReader(bytes.NewReader(body))
	first, _ := sc.ReadString('\n')
	oldStr, ok := strings.CutPrefix(strings.TrimSuffix(first, "\n"), "old ")
	old, err := strconv.ParseUint(oldStr, 10, 64)
	if !ok || err != nil || !strings.HasSuffix(first, "\n") {
		http.Error(w, "bad old line", http.StatusBadRequest)
		return
	}
	var hashes [][]byte
	for {
		l, err := sc.ReadString('\n')
		if err != nil {
			http.Error(w, "no empty line", http.StatusBadRequest)
			return
		}
		if l == "\n" {
			break
		}
		h, err := base64.StdEncoding.DecodeString(strings.TrimSuffix(l, "\n"))
		if err != nil || len(h) != 32 {
			http.Error(w, "bad proof line", http.StatusBadRequest)
			return
		}
		hashes = append(hashes, h)
	}
	rest, _ := io.ReadAll(sc)
	lines := strings.SplitN(string(rest), "\n", 4)
	if len(lines) < 4 {
		http.Error(w, "bad checkpoint", http.StatusBadRequest)
		return
	}
	if lines[0] != fw.origin {
		http.Error(w, "unknown log", http.StatusNotFound)
		return
	}
	n, err := note.Open(rest, note.VerifierList(fw.logV))
	if err != nil {
		http.Error(w, "not signed by the log", http.StatusForbidden)
		return
	}
	size, err1 := strconv.ParseUint(lines[1], 10, 64)
	rootB, err2 := base64.StdEncoding.DecodeString(lines[2])
	if err1 != nil || err2 != nil || len(rootB) != 32 {
		http.Error(w, "bad checkpoint", http.StatusBadRequest)
		return
	}
	root := [32]byte(rootB)
	if old > size {
		http.Error(w, "old > size", http.StatusBadRequest)
		return
	}
	fw.mu.Lock()
	defer fw.mu.Unlock()
	if old != fw.size {
		w.Header().Set("Content-Type", "text/x.tlog.size")
		w.WriteHeader(http.StatusConflict)
		fmt.Fprintf(w, "%d\n", fw.size)
		return
	}
	switch {
	case old == 0 && len(hashes) > 0:
		http.Error(w, "proof from 0", http.StatusUnprocessableEntity)
		return
	case old == size && root != fw.root:
		http.Error(w, "same size, other root", http.StatusUnprocessableEntity)
		return
	case old > 0 && old < size:
		if err := proof.VerifyConsistency(rfc6962.DefaultHasher, old, size, hashes, fw.root[:], root[:]); err != nil {
			http.Error(w, "bad proof: "+err.Error(), http.StatusUnprocessableEntity)
			return
		}
	}
	fw.size, fw.root = size, root
	now := uint64(time.Now().Unix())
	switch mode {
	case "otherkey": // the witness's name and key ID, another key
		_, other, _ := ed25519.GenerateKey(rand.Reader)
		io.WriteString(w, cosign(fw.name, fw.keyID, other, n.Text, now))
	case "othername": // a valid cosignature by a key nobody configured
		pub, other, _ := ed25519.GenerateKey(rand.Reader)
		io.WriteString(w, cosign("stranger.example", cosigKeyID("stranger.example", pub), other, n.Text, now))
	case "zerotime":
		io.WriteString(w, cosign(fw.name, fw.keyID, fw.priv, n.Text, 0))
	default:
		io.WriteString(w, cosign(fw.name, fw.keyID, fw.priv, n.Text, now))
	}
}

// env is one log with a running sequencer and a Witnesser.
type env struct {
	t         *testing.T
	store     storage.Store
	name      string
	origin    string
	verifier  note.Verifier
	seq       *sequencer.Sequencer
	witnesses []*fakeWitness
	w         *witnessing.Witnesser
	pol       *policy.Policy
	cfg       witnessing.Config
	stop      func()
}

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tlogWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tlogWriter struct{ t testing.TB }

func (w tlogWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(b), "\n"))
	return len(b), nil
}

// newEnv creates a log and n fake witnesses; policy is the quorum part of
// the policy (after the witness lines W0, W1, ...).
func newEnv(t *testing.T, n int, quorum string) *env {
	t.Helper()
	store, err := embedded.Open(filepath.Join(t.TempDir(), "tlog.db"), embedded.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	e := &env{t: t, store: store, name: "audit", origin: "example.com/audit"}
	skey, vkey, err := checkpoint.GenerateKey(e.origin, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	signer, _ := checkpoint.NewSigner(skey)
	e.verifier, _ = checkpoint.NewVerifier(vkey)
	root := tree.EmptyRoot()
	signed, err := checkpoint.Sign(checkpoint.Checkpoint{Origin: e.origin, Hash: root}, signer)
	if err != nil {
		t.Fatal(err)
	}
	if err := store.CreateLog(t.Context(), storage.Log{Name: e.name, Origin: e.origin, VerifierKey: vkey}, storage.Checkpoint{TreeHead: storage.TreeHead{Root: root}, Note: signed}); err != nil {
		t.Fatal(err)
	}
	var pol strings.Builder
	fmt.Fprintf(&pol, "log %s\n", vkey)
	for i := range n {
		fw := newFakeWitness(t, fmt.Sprintf("witness.example/w%d", i), e.origin, e.verifier)
		e.witnesses = append(e.witnesses, fw)
		fmt.Fprintf(&pol, "witness W%d %s %s\n", i, fw.vkey, fw.srv.URL)
	}
	pol.WriteString(quorum + "\n")
	if e.pol, err = policy.Parse([]byte(pol.String())); err != nil {
		t.Fatal(err)
	}
	e.cfg = witnessing.Config{
		Store:        store,
		Timeout:      2 * time.Second,
		MinInterval:  10 * time.Millisecond,
		IdleInterval: 100 * time.Millisecond,
		MaxBackoff:   50 * time.Millisecond,
		Logger:       testLogger(t),
	}
	seq, err := sequencer.New(t.Context(), sequencer.Config{
		Store: store, Log: e.name, Signer: signer, Verifier: e.verifier,
		MaxBatchAge: 2 * time.Millisecond,
		Logger:      slog.New(slog.NewTextHandler(io.Discard, nil)),
		OnCommit:    func(storage.Checkpoint) { e.notify() },
	})
	if err != nil {
		t.Fatal(err)
	}
	e.seq = seq
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- seq.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("sequencer: %v", err)
		}
	})
	return e
}

var notifyMu sync.Mutex

func (e *env) notify() {
	notifyMu.Lock()
	w := e.w
	notifyMu.Unlock()
	if w != nil {
		w.Notify(e.name)
	}
}

func (e *env) logConfig() witnessing.Log {
	return witnessing.Log{
		Name:     e.name,
		Verifier: e.verifier,
		Policy:   e.pol,
		Latest:   e.seq.Latest,
		Tiles: func(ctx context.Context) tree.TileReader {
			return tree.TileReaderFunc(func(ts []tile.Tile) ([][]byte, error) { return e.store.ReadTiles(ctx, e.name, ts) })
		},
	}
}

// start runs a Witnesser for the log until the test ends (or e.stop).
func (e *env) start() *witnessing.Witnesser {
	e.t.Helper()
	w, err := witnessing.New(e.cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	w.SetLog(e.logConfig())
	notifyMu.Lock()
	e.w = w
	notifyMu.Unlock()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { w.Run(ctx); close(done) }()
	var once sync.Once
	e.stop = func() { once.Do(func() { cancel(); <-done }) }
	e.t.Cleanup(e.stop)
	return w
}

func (e *env) append(n int) storage.Checkpoint {
	e.t.Helper()
	var last storage.Checkpoint
	for range n {
		data := make([]byte, 16)
		rand.Read(data)
		res, err := e.seq.Add(e.t.Context(), []sequencer.Entry{{Data: data}})
		if err != nil {
			e.t.Fatal(err)
		}
		last = res[0].Checkpoint
	}
	return last
}

// waitFor polls cond until it holds or the time is up.
func waitFor(t testing.TB, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (e *env) stats(witness string) witnessing.Stats {
	for _, s := range e.w.Stats() {
		if s.Witness == witness {
			return s
		}
	}
	e.t.Fatalf("no stats for witness %s", witness)
	return witnessing.Stats{}
}

// checkCosigned checks that the stored cosignatures on the checkpoint at
// size verify with transparency-dev/formats' cosignature/v1 verifiers and
// golang.org/x/mod/sumdb/note, and returns the witnesses (by index) that
// cosigned.
func (e *env) checkCosigned(size uint64) map[int]bool {
	e.t.Helper()
	cp, err := e.store.CheckpointAt(e.t.Context(), e.name, size)
	if err != nil {
		e.t.Fatal(err)
	}
	cs, err := e.store.CosignaturesAt(e.t.Context(), e.name, size)
	if err != nil {
		e.t.Fatal(err)
	}
	signed := witnessing.AppendCosignatures(cp.Note, cs)
	vs := []note.Verifier{e.verifier}
	for _, fw := range e.witnesses {
		v, err := fmtnote.NewVerifierForCosignatureV1(fw.vkey)
		if err != nil {
			e.t.Fatal(err)
		}
		vs = append(vs, v)
	}
	n, err := note.Open(signed, note.VerifierList(vs...))
	if err != nil {
		e.t.Fatalf("cosigned checkpoint at %d does not open: %v\n%s", size, err, signed)
	}
	if len(n.UnverifiedSigs) != 0 {
		e.t.Errorf("stored cosignatures by unknown keys: %v", n.UnverifiedSigs)
	}
	got := map[int]bool{}
	for _, s := range n.Sigs {
		for i, fw := range e.witnesses {
			if s.Name == fw.name && s.Hash == fw.keyID {
				got[i] = true
				ts, err := fmtnote.CoSigV1Timestamp(s)
				if err != nil || time.Since(ts) > time.Minute || time.Until(ts) > time.Minute {
					e.t.Errorf("cosignature by %s: timestamp %v, %v", fw.name, ts, err)
				}
			}
		}
	}
	if _, _, err := checkpoint.Open(signed, e.verifier, vs[1:]...); err != nil {
		e.t.Errorf("checkpoint.Open of the cosigned checkpoint: %v", err)
	}
	return got
}

func TestCosign(t *testing.T) {
	e := newEnv(t, 3, "group Q 2 W0 W1 W2\nquorum Q")
	w := e.start()
	cp := e.append(10)
	waitFor(t, "a cosigned checkpoint at the latest size", 10*time.Second, func() bool {
		n, ok := w.Newest(e.name)
		return ok && n == cp.Size
	})
	waitFor(t, "all three witnesses to cosign", 10*time.Second, func() bool {
		cs, _, err := w.Cosignatures(t.Context(), e.name, cp)
		return err == nil && len(cs) == 3
	})
	if got := e.checkCosigned(cp.Size); len(got) != 3 {
		t.Errorf("stored cosignatures by %v, want all three", got)
	}
	cs, names, err := w.Cosignatures(t.Context(), e.name, cp)
	if err != nil || len(cs) != 3 || len(names) != 3 || !e.pol.Satisfied(names) {
		t.Fatalf("Cosignatures = %d lines, %v, %v", len(cs), names, err)
	}
	for i, fw := range e.witnesses {
		size, _ := fw.state()
		if size != cp.Size {
			t.Errorf("witness %d has size %d, want %d", i, size, cp.Size)
		}
		st := e.stats(fmt.Sprintf("W%d", i))
		if st.Cosigned == 0 || st.Size != cp.Size || len(st.Errors) != 0 {
			t.Errorf("stats of W%d: %+v", i, st)
		}
	}

	// More entries: each witness is sent a consistency proof from the
	// size it cosigned.
	cp2 := e.append(37)
	waitFor(t, "the next checkpoint cosigned", 10*time.Second, func() bool {
		n, ok := w.Newest(e.name)
		return ok && n == cp2.Size
	})
	if got := e.checkCosigned(cp2.Size); len(got) < 2 {
		t.Errorf("checkpoint %d cosigned by %v", cp2.Size, got)
	}
}

func TestConflictAdoption(t *testing.T) {
	e := newEnv(t, 1, "quorum W0")
	cp5 := e.append(5)
	// The witness already cosigned size 5 (say, before tlogd restarted).
	fw := e.witnesses[0]
	fw.mu.Lock()
	fw.size, fw.root = cp5.Size, cp5.Root
	fw.mu.Unlock()
	w := e.start()
	waitFor(t, "the checkpoint at 5 cosigned", 10*time.Second, func() bool {
		n, ok := w.Newest(e.name)
		return ok && n == 5
	})
	if st := e.stats("W0"); st.Conflicts == 0 {
		t.Errorf("no 409 conflict was seen: %+v", st)
	}
	cp := e.append(3)
	waitFor(t, "the checkpoint at 8 cosigned", 10*time.Second, func() bool {
		n, ok := w.Newest(e.name)
		return ok && n == cp.Size
	})
	if got := e.checkCosigned(cp.Size); !got[0] {
		t.Errorf("not cosigned by W0")
	}

	// The witness moves on without us (another tlogd instance, say): the
	// next request gets 409 with a size that is not the one we sent.
	cp2 := e.append(4)
	waitFor(t, "the checkpoint cosigned", 10*time.Second, func() bool {
		n, ok := w.Newest(e.name)
		return ok && n == cp2.Size
	})
	e.stop()
	fw.mu.Lock()
	fw.size, fw.root = cp.Size, cp.Root // rolled back, from the witness's point of view
	fw.mu.Unlock()
	w = e.start()
	cp3 := e.append(2)
	waitFor(t, "the checkpoint cosigned after a conflict", 10*time.Second, func() bool {
		n, ok := w.Newest(e.name)
		return ok && n == cp3.Size
	})
}

func TestWitnessRefuses(t *testing.T) {
	for _, tt := range []struct {
		mode, category string
	}{
		{"status:404", "unknown_log"},
		{"status:403", "forbidden"},
		{"status:422", "inconsistent"},
		{"status:400", "bad_request"},
		{"status:500", "http_status"},
		{"otherkey", "bad_cosignature"},
		{"othername", "bad_response"},
		{"zerotime", "bad_cosignature"},
	} {
		t.Run(tt.mode, func(t *testing.T) {
			e := newEnv(t, 1, "quorum W0")
			e.witnesses[0].setMode(tt.mode)
			w := e.start()
			cp := e.append(3)
			waitFor(t, "the failure to be recorded", 10*time.Second, func() bool {
				return e.stats("W0").Errors[tt.category] > 0
			})
			st := e.stats("W0")
			if st.Cosigned != 0 || !strings.HasPrefix(st.LastError, tt.category) || st.LastErrorAt.IsZero() {
				t.Errorf("stats: %+v", st)
			}
			if cs, err := e.store.CosignaturesAt(t.Context(), e.name, cp.Size); err != nil || len(cs) != 0 {
				t.Errorf("stored cosignatures: %q, %v; want none", cs, err)
			}
			if n, ok := w.Newest(e.name); ok {
				t.Errorf("Newest = %d, want none", n)
			}
			// It recovers once the witness behaves.
			e.witnesses[0].setMode("")
			waitFor(t, "recovery", 10*time.Second, func() bool {
				n, ok := w.Newest(e.name)
				return ok && n == cp.Size
			})
		})
	}
}

// TestHangingWitness: a witness that never answers delays nobody: appends
// go on at full speed and the other two witnesses make the quorum.
func TestHangingWitness(t *testing.T) {
	e := newEnv(t, 3, "group Q 2 W0 W1 W2\nquorum Q")
	e.witnesses[1].setMode("hang")
	w := e.start()
	var cp storage.Checkpoint
	for range 20 {
		start := time.Now()
		entries := make([]sequencer.Entry, 5)
		for i := range entries {
			entries[i].Data = make([]byte, 16)
			rand.Read(entries[i].Data)
		}
		res, err := e.seq.Add(t.Context(), entries)
		if err != nil {
			t.Fatal(err)
		}
		cp = res[0].Checkpoint
		if d := time.Since(start); d > time.Second {
			t.Errorf("an append took %v while a witness hung", d)
		}
		time.Sleep(20 * time.Millisecond)
	}
	waitFor(t, "a 2-of-3 quorum at the latest size", 10*time.Second, func() bool {
		n, ok := w.Newest(e.name)
		return ok && n == cp.Size
	})
	if got := e.checkCosigned(cp.Size); !got[0] || got[1] || !got[2] {
		t.Errorf("cosigned by %v, want W0 and W2", got)
	}
	waitFor(t, "the time-out to be recorded", 10*time.Second, func() bool { return e.stats("W1").Errors["timeout"] > 0 })
	fw := e.witnesses[1]
	fw.mu.Lock()
	defer fw.mu.Unlock()
	if fw.maxIn > 1 {
		t.Errorf("the hanging witness had %d requests in flight at once, want 1: requests queue up", fw.maxIn)
	}
}

// TestRestart: a new Witnesser finds the policy-satisfying checkpoint in
// storage, and serves only stored cosignatures that verify.
func TestRestart(t *testing.T) {
	e := newEnv(t, 2, "group Q all W0 W1\nquorum Q")
	w := e.start()
	cp := e.append(4)
	waitFor(t, "cosigned", 10*time.Second, func() bool { n, ok := w.Newest(e.name); return ok && n == cp.Size })
	e.stop()

	// The witnesses are down now; whatever is known comes from storage,
	// even before the new Witnesser runs (a request can come first).
	for _, fw := range e.witnesses {
		fw.setMode("status:503")
	}
	early, err := witnessing.New(e.cfg)
	if err != nil {
		t.Fatal(err)
	}
	early.SetLog(e.logConfig())
	if _, names, err := early.Cosignatures(t.Context(), e.name, cp); err != nil || !names["W0"] || !names["W1"] {
		t.Errorf("Cosignatures before the restarted Witnesser ran = %v, %v; want W0 and W1 from storage", names, err)
	}
	w = e.start()
	waitFor(t, "the stored quorum to be found", 10*time.Second, func() bool { n, ok := w.Newest(e.name); return ok && n == cp.Size })

	// Tampered storage: a cosignature line by W0's key that does not
	// verify is not served.
	e.stop()
	cs, _ := e.store.CosignaturesAt(t.Context(), e.name, cp.Size)
	for i := range cs {
		if strings.HasPrefix(string(cs[i].Signature), "— "+e.witnesses[0].name+" ") {
			b := []byte(cs[i].Signature)
			b[len(b)-3] ^= 1
			if b[len(b)-3] == '=' || b[len(b)-3] == '/' {
				b[len(b)-3] = 'A'
			}
			cs[i].Signature = b
		}
	}
	if err := e.store.AddCosignatures(t.Context(), e.name, cp.Size, cs); err != nil {
		t.Fatal(err)
	}
	w = e.start()
	time.Sleep(100 * time.Millisecond)
	got, names, err := w.Cosignatures(t.Context(), e.name, cp)
	if err != nil || len(got) != 1 || names["W0"] || !names["W1"] {
		t.Errorf("Cosignatures after tampering = %q, %v, %v; want W1's only", got, names, err)
	}
	if n, ok := w.Newest(e.name); ok {
		t.Errorf("Newest = %d after tampering, want none (all of W0 and W1 needed)", n)
	}
}

func TestValidate(t *testing.T) {
	_, lvkey, _ := note.GenerateKey(rand.Reader, "example.com/log")
	_, othervkey, _ := note.GenerateKey(rand.Reader, "example.com/other")
	w0 := newFakeWitness(t, "w0.example", "x", nil).vkey
	w1 := newFakeWitness(t, "w1.example", "x", nil).vkey
	tests := []struct {
		name     string
		text     string
		lenient  bool
		err      string
		warnings []string
	}{
		{"fine", "log " + lvkey + "\nwitness A " + w0 + " https://a.example/w\nquorum A\n", false, "", nil},
		{"no logs", "witness A " + w0 + " http://127.0.0.1:1\nquorum A\n", false, "", nil},
		{"no URL", "witness A " + w0 + "\nwitness B " + w1 + " https://b.example\ngroup G all A B\nquorum G\n", false, "", []string{"no URL", "cannot satisfy quorum"}},
		{"bad scheme", "witness A " + w0 + " ftp://a.example\nquorum A\n", false, "not an http:// or https://", nil},
		{"relative URL", "witness A " + w0 + " a.example/w\nquorum A\n", false, "not an http:// or https://", nil},
		{"other log", "log " + othervkey + "\nquorum none\n", false, "not this log's key", nil},
		{"other log, lenient", "log " + othervkey + "\nquorum none\n", true, "", []string{"not this log's key"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := policy.Parse([]byte(tt.text))
			if err != nil {
				t.Fatal(err)
			}
			warnings, err := witnessing.Validate(p, lvkey, tt.lenient)
			if (err == nil) != (tt.err == "") || (err != nil && !strings.Contains(err.Error(), tt.err)) {
				t.Errorf("Validate error = %v, want %q", err, tt.err)
			}
			if len(warnings) != len(tt.warnings) {
				t.Fatalf("warnings = %q, want %q", warnings, tt.warnings)
			}
			for i, w := range tt.warnings {
				if !strings.Contains(warnings[i], w) {
					t.Errorf("warning %q does not say %q", warnings[i], w)
				}
			}
		})
	}
}

func TestAppendCosignatures(t *testing.T) {
	got := witnessing.AppendCosignatures([]byte("a\n\n— k x\n"), []storage.Cosignature{{KeyID: "1", Signature: []byte("— w1 y")}, {KeyID: "2", Signature: []byte("— w2 z")}})
	if want := "a\n\n— k x\n— w1 y\n— w2 z\n"; string(got) != want {
		t.Errorf("AppendCosignatures = %q, want %q", got, want)
	}
}
