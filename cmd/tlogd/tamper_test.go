package main

// The tamper tests: the point of the product. Someone who can write to the
// storage (PostgreSQL, or the embedded bbolt file) changes it behind tlogd's
// back; `tlogd fsck` must find and name what changed, `tlogctl audit` (with
// the state it saved before the tampering) must find what a log's readers
// can see of it, and tlogd must never sign a checkpoint inconsistent with
// one it signed before.
//
// What each tampering is visible to:
//
//	tampering                       fsck  audit    audit --full  tlogd afterwards
//	one byte of an entry            yes   no (1)   yes           appends; consistent
//	an entry deleted                yes   no (1)   yes           appends; consistent
//	a leaf hash in a tile           yes   yes (2)  yes           appends; consistent
//	latest checkpoint re-signed     yes   yes      yes           stops sequencing the log
//	  with another key                                           (from the start: /readyz
//	                                                             says 503 and why)
//	last batch rolled back          yes   yes (3)  yes           stops sequencing the log
//	  (tree head and checkpoints                                 (from the start: the last
//	  moved back, entries deleted)                               checkpoint it signed is
//	                                                             kept beside the key)
//
//	(1) the tree is unchanged: only the entry's data differs from what was
//	    signed, which only downloading the entries shows.
//	(2) when the consistency proof from the saved checkpoint to the current
//	    one reads the tile (here: a state saved at size 140, before the
//	    tampered leaf's subtree was complete); from a state at the current
//	    size there is nothing to prove and only --full sees it.
//	(3) from a state saved after the rolled-back batch; a state older than
//	    the rollback point sees a consistent, if shorter, log.
//
// A checkpoint replaced by one signed with another key makes tlogd stop
// sequencing that log from the start (other logs would go on); it still
// serves what the storage holds, as a compromised operator would, and
// mirror, a tlog-tiles server that serves the storage directly, must give
// the audits the same answers.

import (
	"bytes"
	"context"
	"crypto/rand"
	binenc "encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	bolt "go.etcd.io/bbolt"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tlog-dev/tlog/internal/pgtest"
	"github.com/tlog-dev/tlog/pkg/checkpoint"
	"github.com/tlog-dev/tlog/pkg/tile"
	"github.com/tlog-dev/tlog/storage"
	"github.com/tlog-dev/tlog/storage/embedded"
	"github.com/tlog-dev/tlog/storage/postgres"
)

var (
	ctlOnce sync.Once
	ctlPath string
	ctlErr  error
)

// ctlBinary returns the path of the tlogctl binary, built on first use.
func ctlBinary(t testing.TB) string {
	t.Helper()
	dir := filepath.Dir(binary(t)) // removed by TestMain
	ctlOnce.Do(func() {
		ctlPath = filepath.Join(dir, "tlogctl")
		out, err := exec.Command("go", "build", "-o", ctlPath, "../tlogctl").CombinedOutput()
		if err != nil {
			ctlErr = fmt.Errorf("go build tlogctl: %v\n%s", err, out)
		}
	})
	if ctlErr != nil {
		t.Fatal(ctlErr)
	}
	return ctlPath
}

// runTool runs a binary to completion and returns its output and exit code.
func runTool(t testing.TB, bin string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = cleanEnv()
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		code = exit.ExitCode()
	case err != nil:
		t.Fatalf("%s %q: %v", filepath.Base(bin), args, err)
	}
	t.Logf("%s %s: exit %d\n%s%s", filepath.Base(bin), strings.Join(args, " "), code, out.String(), errb.String())
	return out.String(), errb.String(), code
}

// stop stops tlogd with SIGTERM and waits for it.
func (d *daemon) stop() {
	d.t.Helper()
	d.cmd.Process.Signal(syscall.SIGTERM)
	if code := d.wait(30 * time.Second); code != 0 {
		d.t.Errorf("%s exited with %d after SIGTERM", d.name, code)
	}
}

// tamperLog is a log built by tlogd for a tamper test, with everything
// known about it before the tampering.
type tamperLog struct {
	st   store
	key  *logKey
	data [][]byte    // every entry, by index
	mt   *merkleTree // of data
	// States of tlogctl audit saved at size midSize and at the end.
	midState, endState string
}

const (
	tamperBatches   = 5
	tamperBatchSize = 70
	midSize         = 2 * tamperBatchSize
	endSize         = tamperBatches * tamperBatchSize
)

func (l *tamperLog) httpPrefix(d *daemon) string { return "http://" + d.httpAddr + "/logs/" + logName }

// buildTamperLog starts tlogd on st, appends tamperBatches batches, audits
// the log after the second batch and at the end, and stops tlogd.
func buildTamperLog(t *testing.T, st store) *tamperLog {
	l, d := buildTamperLogRunning(t, st)
	d.stop()
	return l
}

// buildTamperLogRunning is buildTamperLog, but leaves tlogd running.
func buildTamperLogRunning(t *testing.T, st store) (*tamperLog, *daemon) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	d := start(t, options{args: append(st.args(), "--batch-max-age", "2ms")})
	l := &tamperLog{st: st, key: d.fetchLogKey(t), mt: &merkleTree{}}
	dir := t.TempDir()
	l.midState, l.endState = filepath.Join(dir, "mid"), filepath.Join(dir, "end")
	for b := range tamperBatches {
		var batch [][]byte
		for i := range tamperBatchSize {
			batch = append(batch, fmt.Appendf(nil, "audit event %d of batch %d", i, b))
		}
		res, err := d.appendGRPC(ctx, batch) // one request: one batch
		if err != nil {
			t.Fatal(err)
		}
		for i, r := range res {
			if r.index != uint64(len(l.data)) || r.duplicate {
				t.Fatalf("entry %d of batch %d appended at %d (duplicate %v)", i, b, r.index, r.duplicate)
			}
			l.data = append(l.data, batch[i])
			l.mt.add(batch[i])
		}
		if h, err := l.key.open(res[0].cp); err != nil || h.size != uint64(len(l.data)) || h.root != l.mt.root(h.size) {
			t.Fatalf("batch %d: checkpoint %+v, %v; want size %d", b, h, err, len(l.data))
		}
		if len(l.data) == midSize {
			l.audit(t, d, l.midState)
		}
	}
	l.audit(t, d, l.endState)
	return l, d
}

// audit runs a plain audit that must succeed, saving its state in dir.
func (l *tamperLog) audit(t *testing.T, d *daemon, dir string) {
	t.Helper()
	if _, _, code := runTool(t, ctlBinary(t), "audit", "--log", l.httpPrefix(d), "--vkey", l.key.vkey, "--state", dir); code != 0 {
		t.Fatalf("audit of the untampered log: exit code %d", code)
	}
}

// outcome is what an audit must find: its exit code and, for 3, the kind
// of misbehavior and a piece of its report.
type outcome struct {
	code int
	kind string
	says string
}

// auditWith runs tlogctl audit --json from a copy of a saved state and
// checks its outcome.
func (l *tamperLog) auditWith(t *testing.T, prefix, state string, want outcome, extra ...string) {
	t.Helper()
	dir := t.TempDir()
	copyDir(t, state, dir)
	args := append([]string{"audit", "--json", "--log", prefix, "--vkey", l.key.vkey, "--state", dir}, extra...)
	stdout, stderr, code := runTool(t, ctlBinary(t), args...)
	if code != want.code {
		t.Errorf("audit %v from the state at %s: exit code %d, want %d", extra, filepath.Base(state), code, want.code)
		return
	}
	if want.code != 3 {
		return
	}
	var kind, msg string
	for _, line := range strings.Split(strings.TrimSpace(stdout), "\n") {
		var e struct{ Event, Kind, Message string }
		if json.Unmarshal([]byte(line), &e) == nil && e.Event == "misbehavior" {
			kind, msg = e.Kind, e.Message
		}
	}
	if kind != want.kind || !strings.Contains(msg, want.says) || !strings.Contains(stderr, "VERIFICATION FAILED") {
		t.Errorf("audit %v from the state at %s: misbehavior %q %q, want %q saying %q", extra, filepath.Base(state), kind, msg, want.kind, want.says)
	}
}

func copyDir(t *testing.T, from, to string) {
	t.Helper()
	es, err := os.ReadDir(from)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range es {
		b, err := os.ReadFile(filepath.Join(from, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(to, e.Name()), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// fsck runs tlogd fsck and checks that it exits with code and reports each
// of says.
func (l *tamperLog) fsck(t *testing.T, code int, says []string, extra ...string) {
	t.Helper()
	stdout, stderr, got := runTool(t, binary(t), append(append([]string{"fsck"}, l.st.args()...), extra...)...)
	if got != code {
		t.Errorf("fsck: exit code %d, want %d", got, code)
	}
	for _, s := range says {
		if !strings.Contains(stdout+stderr, s) {
			t.Errorf("fsck's report does not say %q", s)
		}
	}
}

// checkSigned checks every stored checkpoint that verifies with the log's
// key (those that do not were not signed by the log) against the tree of
// the entries the test appended: no checkpoint tlogd signed may be
// inconsistent with another. tlogd must be stopped (for the embedded
// store).
func (l *tamperLog) checkSigned(t *testing.T) {
	t.Helper()
	s := l.st.open(t)
	defer s.Close()
	v, err := checkpoint.NewVerifier(l.key.vkey)
	if err != nil {
		t.Fatal(err)
	}
	cps, err := s.ListCheckpoints(context.Background(), logName, 0, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cps {
		cp, _, err := checkpoint.Open(c.Note, v)
		if err != nil {
			continue // not signed by the log: the tampering
		}
		switch {
		case cp.Size > uint64(len(l.data)):
			t.Errorf("tlogd signed a checkpoint of size %d, beyond the %d entries appended", cp.Size, len(l.data))
		case cp.Hash != l.mt.root(cp.Size):
			t.Errorf("tlogd signed root %x at size %d; the entries appended give %x: a fork", cp.Hash, cp.Size, l.mt.root(cp.Size))
		}
	}
}

// appendAfter starts tlogd on the tampered store and appends. If refused
// is false the append must succeed with a checkpoint consistent with every
// one signed before; else it must fail with FAILED_PRECONDITION and a log
// line saying why.
func (l *tamperLog) appendAfter(t *testing.T, d *daemon, refused bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	batch := [][]byte{[]byte("after the tampering 1"), []byte("after the tampering 2")}
	res, err := d.appendGRPC(ctx, batch)
	if refused {
		if status.Code(err) != codes.FailedPrecondition {
			t.Errorf("append after the tampering: %v, want FAILED_PRECONDITION", err)
		}
		time.Sleep(100 * time.Millisecond)
		if !strings.Contains(d.stderr.String(), "stopped sequencing") {
			t.Errorf("tlogd did not log why it stopped sequencing")
		}
		return
	}
	if err != nil {
		t.Fatalf("append after the tampering: %v", err)
	}
	for i, r := range res {
		if r.index != uint64(len(l.data)) {
			t.Fatalf("appended at %d, want %d", r.index, len(l.data))
		}
		l.data = append(l.data, batch[i])
		l.mt.add(batch[i])
	}
	h, err := l.key.open(res[0].cp)
	if err != nil {
		t.Fatal(err)
	}
	// The consistency of the new checkpoint with the ones before, by the
	// test's own copy of every leaf.
	if h.size != uint64(len(l.data)) || h.root != l.mt.root(h.size) {
		t.Errorf("after the tampering tlogd signed size %d root %x; the entries appended give %x", h.size, h.root, l.mt.root(h.size))
	}
}

// open opens the store of st (tlogd must be stopped for the embedded one).
func (s store) open(t testing.TB) storage.Store {
	t.Helper()
	var st storage.Store
	var err error
	if s.databaseURL != "" {
		st, err = postgres.Open(context.Background(), s.databaseURL, postgres.Config{})
	} else {
		st, err = embedded.Open(filepath.Join(s.dataDir, "tlog.db"), embedded.Config{})
	}
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// mirror serves the log in st as a C2SP tlog-tiles log, straight from
// storage, with no checks: what a compromised operator could serve.
func mirror(t *testing.T, st store) string {
	s := st.open(t)
	t.Cleanup(func() { s.Close() })
	fail := func(w http.ResponseWriter, err error) {
		if errors.Is(err, storage.ErrNotFound) {
			http.Error(w, err.Error(), http.StatusNotFound)
			return
		}
		http.Error(w, err.Error(), http.StatusInternalServerError)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /logs/default/checkpoint", func(w http.ResponseWriter, r *http.Request) {
		c, err := s.LatestCheckpoint(r.Context(), logName)
		if err != nil {
			fail(w, err)
			return
		}
		w.Write(c.Note)
	})
	mux.HandleFunc("GET /logs/default/tile/", func(w http.ResponseWriter, r *http.Request) {
		tl, err := tile.ParsePath(strings.TrimPrefix(r.URL.Path, "/logs/default/"))
		if err != nil {
			http.NotFound(w, r)
			return
		}
		if tl.IsEntries() {
			es, err := s.ReadEntries(r.Context(), logName, tl.Index*tile.Width, tl.Index*tile.Width+uint64(tl.Width))
			if err != nil {
				fail(w, err)
				return
			}
			var b []byte
			for _, e := range es {
				b = tile.AppendBundleEntry(b, e.Data)
			}
			w.Write(b)
			return
		}
		ts, err := s.ReadTiles(r.Context(), logName, []tile.Tile{tl})
		if err != nil {
			fail(w, err)
			return
		}
		w.Write(ts[0][:tl.Width*tile.HashSize])
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv.URL + "/logs/default"
}

// tamperer changes a stopped tlogd's storage behind its back.
type tamperer interface {
	// flipEntryByte changes the first byte of entry idx's data.
	flipEntryByte(t *testing.T, idx uint64)
	deleteEntry(t *testing.T, idx uint64)
	// flipTileHash changes hash pos of a hash tile.
	flipTileHash(t *testing.T, level int, index uint64, pos int)
	// replaceNote replaces the note of the checkpoint at size.
	replaceNote(t *testing.T, size uint64, note []byte)
	// rollback deletes the entries from size on and the checkpoints after
	// size, and moves the tree head back to size; the tiles stay.
	rollback(t *testing.T, size uint64)
}

func newTamperer(t *testing.T, st store) tamperer {
	if st.databaseURL != "" {
		return &pgTamperer{url: st.databaseURL}
	}
	return &boltTamperer{path: filepath.Join(st.dataDir, "tlog.db")}
}

// pgTamperer tampers with PostgreSQL in SQL, as a database administrator
// (or an attacker with the tlog role's password) could.
type pgTamperer struct{ url string }

func (p *pgTamperer) exec(t *testing.T, sqls ...string) {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, p.url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range sqls {
		tag, err := tx.Exec(ctx, q)
		if err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		if strings.HasPrefix(q, "UPDATE") || strings.HasPrefix(q, "DELETE") {
			if tag.RowsAffected() == 0 {
				t.Fatalf("%s: no row changed", q)
			}
		}
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
}

const logIDSQL = `(SELECT id FROM logs WHERE name = 'default')`

func (p *pgTamperer) flipEntryByte(t *testing.T, idx uint64) {
	p.exec(t, fmt.Sprintf(`UPDATE entries SET data = set_byte(data, 0, get_byte(data, 0) # 1) WHERE log_id = %s AND idx = %d`, logIDSQL, idx))
}

func (p *pgTamperer) deleteEntry(t *testing.T, idx uint64) {
	p.exec(t, fmt.Sprintf(`DELETE FROM entries WHERE log_id = %s AND idx = %d`, logIDSQL, idx))
}

func (p *pgTamperer) flipTileHash(t *testing.T, level int, index uint64, pos int) {
	// The trigger that keeps tiles from shrinking or changing is no
	// obstacle to whoever owns the table.
	p.exec(t,
		`ALTER TABLE tiles DISABLE TRIGGER tiles_grow_only`,
		fmt.Sprintf(`UPDATE tiles SET hashes = set_byte(hashes, %d, get_byte(hashes, %d) # 1) WHERE log_id = %s AND level = %d AND idx = %d`, pos*32, pos*32, logIDSQL, level, index),
		`ALTER TABLE tiles ENABLE TRIGGER tiles_grow_only`)
}

func (p *pgTamperer) replaceNote(t *testing.T, size uint64, note []byte) {
	p.exec(t, fmt.Sprintf(`UPDATE checkpoints SET note = '\x%x' WHERE log_id = %s AND size = %d`, note, logIDSQL, size))
}

func (p *pgTamperer) rollback(t *testing.T, size uint64) {
	p.exec(t,
		fmt.Sprintf(`DELETE FROM entries WHERE log_id = %s AND idx >= %d`, logIDSQL, size),
		fmt.Sprintf(`DELETE FROM checkpoints WHERE log_id = %s AND size > %d`, logIDSQL, size),
		fmt.Sprintf(`UPDATE logs SET tree_size = %d, root_hash = (SELECT root_hash FROM checkpoints WHERE log_id = logs.id AND size = %d) WHERE name = 'default'`, size, size))
}

// boltTamperer edits the embedded store's bbolt file (see the layout in
// storage/embedded), as anyone who can write the file could.
type boltTamperer struct{ path string }

func (b *boltTamperer) update(t *testing.T, f func(logs, d *bolt.Bucket) error) {
	t.Helper()
	db, err := bolt.Open(b.path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	err = db.Update(func(tx *bolt.Tx) error {
		return f(tx.Bucket([]byte("logs")), tx.Bucket([]byte("data")).Bucket([]byte(logName)))
	})
	if err != nil {
		t.Fatal(err)
	}
}

func u64key(n uint64) []byte { return binenc.BigEndian.AppendUint64(nil, n) }

func (b *boltTamperer) flipEntryByte(t *testing.T, idx uint64) {
	b.update(t, func(_, d *bolt.Bucket) error {
		es := d.Bucket([]byte("entries"))
		v := bytes.Clone(es.Get(u64key(idx)))
		off := 33 // flags, identity
		if v[0]&1 != 0 {
			off += 32 // leaf hash
		}
		v[off] ^= 1
		return es.Put(u64key(idx), v)
	})
}

func (b *boltTamperer) deleteEntry(t *testing.T, idx uint64) {
	b.update(t, func(_, d *bolt.Bucket) error { return d.Bucket([]byte("entries")).Delete(u64key(idx)) })
}

func (b *boltTamperer) flipTileHash(t *testing.T, level int, index uint64, pos int) {
	b.update(t, func(_, d *bolt.Bucket) error {
		ts := d.Bucket([]byte("tiles"))
		k := append([]byte{byte(level)}, u64key(index)...)
		v := bytes.Clone(ts.Get(k))
		v[pos*32] ^= 1
		return ts.Put(k, v)
	})
}

func (b *boltTamperer) replaceNote(t *testing.T, size uint64, note []byte) {
	b.update(t, func(_, d *bolt.Bucket) error {
		cs := d.Bucket([]byte("checkpoints"))
		v := cs.Get(u64key(size))
		return cs.Put(u64key(size), append(bytes.Clone(v[:32]), note...))
	})
}

func (b *boltTamperer) rollback(t *testing.T, size uint64) {
	b.update(t, func(logs, d *bolt.Bucket) error {
		var del [][]byte
		c := d.Bucket([]byte("entries")).Cursor()
		for k, _ := c.Seek(u64key(size)); k != nil; k, _ = c.Next() {
			del = append(del, bytes.Clone(k))
		}
		for _, k := range del {
			if err := d.Bucket([]byte("entries")).Delete(k); err != nil {
				return err
			}
		}
		del = nil
		cs := d.Bucket([]byte("checkpoints"))
		c = cs.Cursor()
		for k, _ := c.Seek(u64key(size + 1)); k != nil; k, _ = c.Next() {
			del = append(del, bytes.Clone(k))
		}
		for _, k := range del {
			if err := cs.Delete(k); err != nil {
				return err
			}
		}
		var rec map[string]any
		if err := json.Unmarshal(logs.Get([]byte(logName)), &rec); err != nil {
			return err
		}
		rec["size"], rec["root"] = size, cs.Get(u64key(size))[:32]
		v, err := json.Marshal(rec)
		if err != nil {
			return err
		}
		return logs.Put([]byte(logName), v)
	})
}

// TestTamper tampers with the storage of a log in one way per subtest, on
// both backends, and checks that fsck, the audit and tlogd each react as
// the table at the top of this file says.
func TestTamper(t *testing.T) {
	ctlBinary(t) // build before the subtests run in parallel
	type tc struct {
		name   string
		tamper func(t *testing.T, tp tamperer, l *tamperLog)
		fsck   []string // what fsck reports (exit code 3)
		// fsckKnown is what fsck reports given the checkpoint saved by
		// the audit at endSize (--checkpoint); empty: not run.
		fsckKnown string
		// refuses is what tlogd says (in /readyz, which answers 503) when
		// it refuses to sequence the log from the start on the tampered
		// store; empty if it starts normally.
		refuses string
		// Audits from the state saved at midSize, at endSize, and with
		// --full from the state at endSize.
		mid, end, full outcome
	}
	ok := outcome{code: 0}
	cases := []tc{{
		name:   "entry byte",
		tamper: func(t *testing.T, tp tamperer, l *tamperLog) { tp.flipEntryByte(t, 100) },
		fsck:   []string{"TAMPERED: entry 100: leaf hash differs from tile/0/000"},
		mid:    ok, end: ok,
		full: outcome{3, "tampered_entry", "entry 100: the entry the log serves has leaf hash"},
	}, {
		name:   "entry deleted",
		tamper: func(t *testing.T, tp tamperer, l *tamperLog) { tp.deleteEntry(t, 200) },
		fsck:   []string{"TAMPERED: entry 200: missing"},
		mid:    ok, end: ok,
		full: outcome{3, "missing_data", "tile/entries/000"},
	}, {
		name:   "tile hash",
		tamper: func(t *testing.T, tp tamperer, l *tamperLog) { tp.flipTileHash(t, 0, 0, 5) },
		fsck:   []string{"TAMPERED: entry 5: leaf hash differs from tile/0/000 position 5"},
		mid:    outcome{3, "fork", "consistency proof computed from the log's tiles does not verify"},
		end:    ok,
		full:   outcome{3, "tampered_tile", "tile/0/000 holds"},
	}, {
		name: "checkpoint signed by another key",
		tamper: func(t *testing.T, tp tamperer, l *tamperLog) {
			skey, _, err := checkpoint.GenerateKey(l.key.origin, rand.Reader)
			if err != nil {
				t.Fatal(err)
			}
			signer, _ := checkpoint.NewSigner(skey)
			// Same tree head, other key: only the signature is wrong.
			note, err := checkpoint.Sign(checkpoint.Checkpoint{Origin: l.key.origin, Size: endSize, Hash: l.mt.root(endSize)}, signer)
			if err != nil {
				t.Fatal(err)
			}
			tp.replaceNote(t, endSize, note)
		},
		fsck:    []string{fmt.Sprintf("TAMPERED: checkpoint at size %d: signature", endSize)},
		refuses: "latest stored checkpoint does not verify with the log's key",
		mid:     outcome{3, "signature", "does not verify with the log's key"},
		end:     outcome{3, "signature", "does not verify with the log's key"},
		full:    outcome{3, "signature", "does not verify with the log's key"},
	}, {
		name:   "rollback",
		tamper: func(t *testing.T, tp tamperer, l *tamperLog) { tp.rollback(t, endSize-tamperBatchSize) },
		fsck: []string{
			"TAMPERED: tile/0/001 holds at least 25 hashes, not 24",
			fmt.Sprintf("storage holds part of a larger tree than its latest checkpoint (size %d)", endSize-tamperBatchSize),
		},
		fsckKnown: fmt.Sprintf("the log signed a checkpoint at size %d", endSize),
		mid:       ok,
		end:       outcome{3, "rollback", fmt.Sprintf("it showed size %d (root", endSize)},
		full:      outcome{3, "rollback", "it rolled back 70 entries"},
		// The checkpoint tlogd signed last, kept beside the key, is at
		// endSize.
		refuses: fmt.Sprintf("is behind the checkpoint the log signed at size %d", endSize),
	}}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			eachBackend(t, func(t *testing.T, st store) {
				t.Parallel()
				l := buildTamperLog(t, st)
				l.fsck(t, 0, []string{"OK:       tree size 350, 350 entries, 5 checkpoints"})
				c.tamper(t, newTamperer(t, st), l)
				l.fsck(t, 3, c.fsck)
				if c.fsckKnown != "" {
					l.fsck(t, 3, []string{c.fsckKnown}, "--checkpoint", filepath.Join(l.endState, "checkpoint"))
				}

				var prefix string
				var d *daemon
				if c.refuses != "" {
					d = launch(t, options{args: st.args()})
					if err := d.waitStopped(30*time.Second, c.refuses); err != nil {
						t.Errorf("tlogd on the tampered store: %v\nstderr:\n%s", err, d.stderr.String())
					}
					// tlogd serves what storage holds, as the mirror does
					// (which needs tlogd stopped, for the embedded store).
					l.auditWith(t, l.httpPrefix(d), l.midState, c.mid)
					l.auditWith(t, l.httpPrefix(d), l.endState, c.end)
					l.auditWith(t, l.httpPrefix(d), l.endState, c.full, "--full")
					l.appendAfter(t, d, true)
					d.stop()
					l.checkSigned(t)
					prefix = mirror(t, st)
					l.auditWith(t, prefix, l.midState, c.mid)
					l.auditWith(t, prefix, l.endState, c.end)
					l.auditWith(t, prefix, l.endState, c.full, "--full")
					return
				} else {
					d = start(t, options{args: st.args()})
					prefix = l.httpPrefix(d)
				}
				l.auditWith(t, prefix, l.midState, c.mid)
				l.auditWith(t, prefix, l.endState, c.end)
				l.auditWith(t, prefix, l.endState, c.full, "--full")
				if c.refuses == "" {
					l.appendAfter(t, d, false)
					d.stop()
					l.checkSigned(t)
				}
			})
		})
	}
}

// TestTamperLive rolls a PostgreSQL log back while tlogd runs. tlogd still
// serves the checkpoint it signed last (audits see nothing wrong: the log
// as served did not misbehave), fsck sees the rollback in storage, and the
// next batch finds the tree head moved back: tlogd stops sequencing the log
// rather than extend the rolled-back head.
func TestTamperLive(t *testing.T) {
	st := store{dataDir: t.TempDir(), databaseURL: pgtest.NewDatabase(t)}
	l, d := buildTamperLogRunning(t, st)
	newTamperer(t, st).rollback(t, endSize-tamperBatchSize)
	l.fsck(t, 3, []string{"TAMPERED: tile/0/001 holds at least 25 hashes, not 24"})
	l.auditWith(t, l.httpPrefix(d), l.endState, outcome{code: 0})

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// The first batch loses the compare-and-swap of the head (UNAVAILABLE,
	// retried); re-reading the head then stops the log.
	err := withRetry(func() error {
		_, err := d.appendGRPC(ctx, [][]byte{[]byte("after the rollback")})
		return err
	})
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "stored tree head went back from 350 to 280") {
		t.Errorf("append after a live rollback: %v, want FAILED_PRECONDITION saying the head went back", err)
	}
	d.stop()
	if !strings.Contains(d.stderr.String(), "stopped sequencing") {
		t.Errorf("tlogd did not log why it stopped sequencing")
	}
	l.checkSigned(t)
}

// waitStopped waits until tlogd runs and its /readyz answers 503 saying
// that a log stopped sequencing because of reason.
func (d *daemon) waitStopped(timeout time.Duration, reason string) error {
	if err := d.waitReady(0); err != nil && !d.running() {
		return err
	}
	var last string
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if !d.running() {
			return fmt.Errorf("exited: %v", d.waitErr)
		}
		resp, err := d.http.Get("http://" + d.httpAddr + "/readyz")
		if err != nil {
			last = err.Error()
			continue
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		last = fmt.Sprintf("%s: %s", resp.Status, body)
		if resp.StatusCode == http.StatusServiceUnavailable && strings.Contains(string(body), "stopped sequencing") && strings.Contains(string(body), reason) {
			return nil
		}
	}
	return fmt.Errorf("/readyz does not say the log stopped sequencing (%q) after %v; last: %s", reason, timeout, last)
}

// TestRestoredBackup restores the store from a backup taken before the
// last batch, with tlogd stopped: the thorough rollback, where entries,
// tiles, tree head and checkpoints all go back together and storage is
// consistent in itself (fsck given only the log's key finds nothing
// wrong). Only what tlogd keeps beside the key, the checkpoint it signed
// last, shows that storage went back: fsck reports it, and tlogd must
// refuse to sequence the log, and say why, rather than sign a second
// history from the restored head.
func TestRestoredBackup(t *testing.T) {
	eachBackend(t, func(t *testing.T, st store) {
		l := buildTamperLog(t, st)
		restore := backup(t, st)
		d := start(t, options{args: st.args()})
		l.appendAfter(t, d, false)
		d.stop()
		restore()
		l.fsck(t, 0, []string{fmt.Sprintf("tree size %d, %d entries", endSize, endSize)},
			"--key-dir", t.TempDir(), "--vkey", logName+"="+l.key.vkey)
		l.fsck(t, 3, []string{fmt.Sprintf("the log signed a checkpoint at size %d (%s), but storage's latest checkpoint is at size %d: the log was rolled back",
			endSize+2, filepath.Join(st.dataDir, "keys", logName+".signed"), endSize)})

		d = launch(t, options{args: st.args()})
		want := fmt.Sprintf("is behind the checkpoint the log signed at size %d", endSize+2)
		if err := d.waitStopped(30*time.Second, want); err != nil {
			t.Errorf("tlogd on the restored store: %v\nstderr:\n%s", err, d.stderr.String())
		}
		l.appendAfter(t, d, true)
		d.stop()
		l.checkSigned(t)

		// A record that is not the log's signature is a finding too.
		signed := filepath.Join(st.dataDir, "keys", logName+".signed")
		if err := os.WriteFile(signed, []byte("not a checkpoint\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		l.fsck(t, 3, []string{signed + ", the checkpoint tlogd signed last, does not verify with the log's key"})
	})
}

// backup copies st's storage (tlogd must be stopped) and returns a function
// that puts the copy back in its place.
func backup(t *testing.T, st store) (restore func()) {
	t.Helper()
	if st.databaseURL == "" {
		path := filepath.Join(st.dataDir, "tlog.db")
		saved, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		return func() {
			if err := os.WriteFile(path, saved, 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	u, err := url.Parse(st.databaseURL)
	if err != nil {
		t.Fatal(err)
	}
	db := pgx.Identifier{strings.TrimPrefix(u.Path, "/")}
	copyDB := pgx.Identifier{db[0] + "_backup"}
	admin := func(sql string) {
		t.Helper()
		ctx := context.Background()
		conn, err := pgx.Connect(ctx, pgtest.URL())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	admin("CREATE DATABASE " + copyDB.Sanitize() + " TEMPLATE " + db.Sanitize())
	t.Cleanup(func() { admin("DROP DATABASE IF EXISTS " + copyDB.Sanitize() + " WITH (FORCE)") })
	return func() {
		admin("DROP DATABASE " + db.Sanitize() + " WITH (FORCE)")
		admin("CREATE DATABASE " + db.Sanitize() + " TEMPLATE " + copyDB.Sanitize())
	}
}
