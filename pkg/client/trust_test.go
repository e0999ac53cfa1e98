package client_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/tlog-dev/tlog/pkg/checkpoint"
	"github.com/tlog-dev/tlog/pkg/client"
	"github.com/tlog-dev/tlog/pkg/tree"
	tlogv1 "github.com/tlog-dev/tlog/proto/tlog/v1"
)

func TestFileStore(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "state")
	path := filepath.Join(dir, "audit.checkpoint")
	s := client.FileStore(path)
	if b, err := s.Load(); b != nil || err != nil {
		t.Fatalf("Load of a missing file: %q, %v; want nil, nil", b, err)
	}
	for _, note := range []string{"first note\n", "second, longer note\n", "x\n"} {
		if err := s.Store([]byte(note)); err != nil {
			t.Fatalf("Store: %v", err)
		}
		b, err := s.Load()
		if err != nil || string(b) != note {
			t.Fatalf("Load: %q, %v; want %q", b, err, note)
		}
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o600 && runtime.GOOS != "windows" {
		t.Errorf("file mode %04o, want 0600", perm)
	}
	if names, _ := filepath.Glob(filepath.Join(dir, "*")); len(names) != 1 {
		t.Errorf("files in the directory: %v, want only the state (no temporary files left)", names)
	}
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Load(); err == nil {
		t.Error("Load of an empty file: no error")
	}
}

// TestTrustedStateAcrossRuns: a client restarted with the same state file
// after the log grew verifies that the log extends what it trusted.
func TestTrustedStateAcrossRuns(t *testing.T) {
	t.Parallel()
	l := startLog(t)
	path := filepath.Join(t.TempDir(), "audit.checkpoint")

	c1 := l.client(client.Config{TrustedState: client.FileStore(path)})
	for i := range 3 {
		if _, err := c1.AppendAndProve(t.Context(), event(i)); err != nil {
			t.Fatal(err)
		}
	}
	t1, ok := c1.Trusted()
	if !ok || t1.Size != 3 {
		t.Fatalf("trusted size %d (%v), want 3", t1.Size, ok)
	}
	c1.Close()
	if b, err := os.ReadFile(path); err != nil || !bytes.Equal(b, t1.Note) {
		t.Fatalf("state file holds %q (%v), want the trusted note %q", b, err, t1.Note)
	}

	growLog(t, l, 10)
	var cs calls
	c2 := l.client(client.Config{TrustedState: client.FileStore(path)}, cs.interceptor())
	if t2, ok := c2.Trusted(); !ok || t2.Size != 3 {
		t.Fatalf("restarted client trusts size %d (%v), want the stored 3", t2.Size, ok)
	}
	vc, err := c2.Checkpoint(t.Context())
	if err != nil {
		t.Fatalf("Checkpoint: %v", err)
	}
	if vc.Size != 13 {
		t.Errorf("Checkpoint size %d, want 13", vc.Size)
	}
	if n := cs.count(mConsistency); n != 1 {
		t.Errorf("%d consistency proofs, want 1", n)
	}
	if b, err := os.ReadFile(path); err != nil || !bytes.Equal(b, vc.Note) {
		t.Errorf("state file holds %q (%v), want the new checkpoint", b, err)
	}
	// Asking again costs no proof.
	if _, err := c2.Checkpoint(t.Context()); err != nil {
		t.Fatal(err)
	}
	if n := cs.count(mConsistency); n != 1 {
		t.Errorf("%d consistency proofs, want still 1", n)
	}

	// A state file of another log (another key) is refused.
	skey, _, err := checkpoint.GenerateKey(logOrigin, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s, _ := checkpoint.NewSigner(skey)
	other, err := checkpoint.Sign(checkpoint.Checkpoint{Origin: logOrigin, Size: 100, Hash: tree.Hash{1}}, s)
	if err != nil {
		t.Fatal(err)
	}
	otherPath := filepath.Join(t.TempDir(), "other")
	if err := client.FileStore(otherPath).Store(other); err != nil {
		t.Fatal(err)
	}
	if _, err := client.New(client.Config{Conn: l.conn(), Log: logName, VerifierKey: l.vkey, TrustedState: client.FileStore(otherPath), Logger: testLogger(t)}); !errors.Is(err, client.ErrVerification) {
		t.Errorf("New with another log's state: %v, want ErrVerification", err)
	}
	l.verify()
}

// replaceCheckpoint returns an interceptor that answers GetCheckpoint with
// the signed note instead of the server's.
func replaceCheckpoint(signed []byte) func(ctx context.Context, req, reply any, call func() error) error {
	return func(ctx context.Context, req, reply any, call func() error) error {
		err := call()
		r := reply.(*tlogv1.GetCheckpointResponse)
		r.Checkpoint = signed
		return err
	}
}

func TestRollbackAndFork(t *testing.T) {
	t.Parallel()
	l := startLog(t)
	growLog(t, l, 6)
	old := l.latestNote() // size 6
	growLog(t, l, 10)     // size 16
	path := filepath.Join(t.TempDir(), "audit.checkpoint")
	c := l.client(client.Config{TrustedState: client.FileStore(path)})
	trusted, err := c.Checkpoint(t.Context())
	if err != nil || trusted.Size != 16 {
		t.Fatalf("Checkpoint: size %d, %v; want 16", trusted.Size, err)
	}
	c.Close()
	l.appendRaw("x", "y") // size 18, not yet trusted
	var root tree.Hash
	rand.Read(root[:])

	for _, tc := range []struct {
		name   string
		signed []byte
		want   error
	}{
		{"rolled back", old, client.ErrRollback},
		{"same size, other root", l.sign(checkpoint.Checkpoint{Origin: logOrigin, Size: 16, Hash: root}), client.ErrFork},
		{"larger size, other root", l.sign(checkpoint.Checkpoint{Origin: logOrigin, Size: 18, Hash: root}), client.ErrFork},
		{"empty tree", l.sign(checkpoint.Checkpoint{Origin: logOrigin, Size: 0, Hash: tree.EmptyRoot()}), client.ErrRollback},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := l.client(client.Config{TrustedState: client.FileStore(path)}, onMethod(mCheckpoint, replaceCheckpoint(tc.signed)))
			_, err := c.Checkpoint(t.Context())
			if !errors.Is(err, tc.want) || !errors.Is(err, client.ErrVerification) {
				t.Fatalf("Checkpoint: %v, want %v", err, tc.want)
			}
			t.Logf("%v", err)
			if b, err := os.ReadFile(path); err != nil || !bytes.Equal(b, trusted.Note) {
				t.Errorf("the state file changed: %q (%v)", b, err)
			}
			if vc, _ := c.Trusted(); vc.Size != 16 {
				t.Errorf("trusted size %d, want 16", vc.Size)
			}
		})
	}

	// A fork shown in an Append answer: a checkpoint of the trusted size
	// with another root.
	forged := l.sign(checkpoint.Checkpoint{Origin: logOrigin, Size: 16, Hash: root})
	lie := onMethod(mAppend, func(ctx context.Context, req, reply any, call func() error) error {
		err := call()
		reply.(*tlogv1.AppendResponse).Checkpoint = forged
		reply.(*tlogv1.AppendResponse).Results[0].Index = 3 // an index within size 16
		return err
	})
	c = l.client(client.Config{TrustedState: client.FileStore(path)}, lie)
	if _, err := c.Append(t.Context(), []byte("z"), client.WithIdempotencyKey("x-key")); !errors.Is(err, client.ErrFork) {
		t.Errorf("Append answered with a forked checkpoint: %v, want ErrFork", err)
	}

	// Honest again: the trusted state advances.
	c = l.client(client.Config{TrustedState: client.FileStore(path)})
	if vc, err := c.Checkpoint(t.Context()); err != nil || vc.Size != 19 {
		t.Errorf("Checkpoint: size %d, %v; want 19", vc.Size, err)
	}
	l.verify()
}
