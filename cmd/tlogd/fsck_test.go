package main

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/tlog-dev/tlog/internal/pgtest"
	"github.com/tlog-dev/tlog/pkg/checkpoint"
)

// TestFsckLive runs fsck on PostgreSQL while tlogd appends: the log grows
// under fsck, which must not mistake that for tampering.
func TestFsckLive(t *testing.T) {
	st := store{dataDir: t.TempDir(), databaseURL: pgtest.NewDatabase(t)}
	d := start(t, options{args: append(st.args(), "--batch-max-age", "1ms")})
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var appended atomic.Int64
	for w := range 4 {
		wg.Go(func() {
			for i := 0; ctx.Err() == nil; i++ {
				batch := [][]byte{fmt.Appendf(nil, "live %d/%d a", w, i), fmt.Appendf(nil, "live %d/%d b", w, i)}
				if _, err := d.appendGRPC(ctx, batch); err != nil {
					if ctx.Err() == nil {
						t.Errorf("append: %v", err)
					}
					return
				}
				appended.Add(2)
			}
		})
	}
	defer func() { cancel(); wg.Wait() }()
	for appended.Load() < 200 {
		time.Sleep(10 * time.Millisecond)
	}
	for range 3 {
		stdout, _, code := runTool(t, binary(t), append([]string{"fsck", "--json"}, st.args()...)...)
		var r fsckReport
		if err := json.Unmarshal([]byte(stdout), &r); err != nil {
			t.Fatalf("fsck --json printed %q: %v", stdout, err)
		}
		if code != 0 || r.Status != "ok" || r.Size == 0 || r.Entries != r.Size {
			t.Errorf("fsck of a growing log: exit code %d, report %+v", code, r)
		}
	}
	cancel()
	wg.Wait()
	d.stop()
	if _, _, code := runTool(t, binary(t), append([]string{"fsck"}, st.args()...)...); code != 0 {
		t.Errorf("fsck after the appends: exit code %d", code)
	}
}

// TestFsckKeys checks how fsck chooses the key it checks signatures with,
// and that keys that disagree are a finding.
func TestFsckKeys(t *testing.T) {
	st := store{dataDir: t.TempDir()}
	d := start(t, options{args: st.args()})
	key := d.fetchLogKey(t)
	if _, err := d.appendGRPC(context.Background(), [][]byte{[]byte("one"), []byte("two")}); err != nil {
		t.Fatal(err)
	}

	// The embedded store is refused while tlogd has it.
	_, stderr, code := runTool(t, binary(t), append([]string{"fsck"}, st.args()...)...)
	if code != 1 || !strings.Contains(stderr, "in use, most likely by a running tlogd: stop it first") {
		t.Errorf("fsck while tlogd runs: exit code %d, stderr %q", code, stderr)
	}
	d.stop()

	fsck := func(wantCode int, want string, args ...string) {
		t.Helper()
		stdout, stderr, code := runTool(t, binary(t), append(append([]string{"fsck"}, st.args()...), args...)...)
		if code != wantCode || !strings.Contains(stdout+stderr, want) {
			t.Errorf("fsck %q: exit code %d, want %d saying %q", args, code, wantCode, want)
		}
	}
	_, otherKey, err := checkpoint.GenerateKey(key.origin, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	fsck(0, "from --vkey", "--vkey", "default="+key.vkey)
	fsck(0, "from key file", "--log", "default")
	fsck(3, "is not the key of --vkey", "--vkey", "default="+otherKey)
	fsck(3, "the database holds verifier key "+key.vkey+" for the log, not the trusted key (from --vkey)", "--vkey", "default="+otherKey)
	fsck(0, "checking with the verifier key stored in the database", "--key-dir", t.TempDir())
	fsck(1, "not found", "--log", "nosuchlog")
	fsck(1, "want NAME=KEY", "--vkey", key.vkey)

	// A checkpoint the log signed (with its key, as a fork would be) that
	// storage does not hold; and one of another log.
	skey, err := os.ReadFile(filepath.Join(st.dataDir, "keys", "default.key"))
	if err != nil {
		t.Fatal(err)
	}
	signer, err := checkpoint.NewSigner(strings.TrimSpace(string(skey)))
	if err != nil {
		t.Fatal(err)
	}
	forked, err := checkpoint.Sign(checkpoint.Checkpoint{Origin: key.origin, Size: 1, Hash: [32]byte{1}}, signer)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "checkpoint")
	os.WriteFile(file, forked, 0o600)
	fsck(3, "the log signed root AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA= at size 1 ("+file+"), but the stored tree has root", "--checkpoint", file)
	otherSkey, _, _ := checkpoint.GenerateKey("example.com/other", rand.Reader)
	otherSigner, _ := checkpoint.NewSigner(otherSkey)
	other, _ := checkpoint.Sign(checkpoint.Checkpoint{Origin: "example.com/other", Size: 1, Hash: [32]byte{1}}, otherSigner)
	os.WriteFile(file, other, 0o600)
	fsck(1, "not a checkpoint of any checked log", "--checkpoint", file)

	// The stored key replaced (with the checkpoints re-signed, say): the
	// key file disagrees.
	db, err := bolt.Open(filepath.Join(st.dataDir, "tlog.db"), 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		logs := tx.Bucket([]byte("logs"))
		var rec map[string]any
		if err := json.Unmarshal(logs.Get([]byte(logName)), &rec); err != nil {
			return err
		}
		rec["verifier_key"] = otherKey
		v, _ := json.Marshal(rec)
		return logs.Put([]byte(logName), v)
	})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	fsck(3, "the database holds verifier key "+otherKey)
	if _, err := os.Stat(filepath.Join(st.dataDir, "keys", "default.key")); err != nil {
		t.Fatal(err)
	}
}
