package server_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	fmtnote "github.com/transparency-dev/formats/note"
	"golang.org/x/mod/sumdb/note"
	"google.golang.org/grpc/codes"

	"github.com/tlog-dev/tlog/pkg/checkpoint"
	"github.com/tlog-dev/tlog/pkg/receipt"
	"github.com/tlog-dev/tlog/pkg/tree"
	tlogv1 "github.com/tlog-dev/tlog/proto/tlog/v1"
	"github.com/tlog-dev/tlog/server"
	"github.com/tlog-dev/tlog/server/witnessing"
	"github.com/tlog-dev/tlog/storage"
)

// cosigner is a minimal stand-in for a C2SP witness: it cosigns every
// checkpoint it is sent (cosignature/v1, written here from the spec) and
// checks nothing; the witnessing package's own tests cover the protocol.
type cosigner struct {
	name string
	priv ed25519.PrivateKey
	id   uint32
	vkey string
	srv  *httptest.Server
	down atomic.Bool // answer 503
}

func newCosigner(t testing.TB, name string) *cosigner {
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	h := sha256.Sum256(append(append([]byte(name+"\n"), 0x04), pub...))
	c := &cosigner{name: name, priv: priv, id: binary.BigEndian.Uint32(h[:])}
	c.vkey = fmt.Sprintf("%s+%08x+%s", name, c.id, base64.StdEncoding.EncodeToString(append([]byte{0x04}, pub...)))
	c.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if c.down.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		body, _ := io.ReadAll(r.Body)
		_, cp, ok := bytes.Cut(body, []byte("\n\n"))
		text, _, ok2 := bytes.Cut(cp, []byte("\n\n"))
		if r.URL.Path != "/add-checkpoint" || !ok || !ok2 {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		ts := uint64(time.Now().Unix())
		msg := fmt.Sprintf("cosignature/v1\ntime %d\n%s\n", ts, text)
		sig := binary.BigEndian.AppendUint32(nil, c.id)
		sig = binary.BigEndian.AppendUint64(sig, ts)
		sig = append(sig, ed25519.Sign(c.priv, []byte(msg))...)
		fmt.Fprintf(w, "— %s %s\n", c.name, base64.StdEncoding.EncodeToString(sig))
	}))
	t.Cleanup(c.srv.Close)
	return c
}

func (c *cosigner) verifier(t testing.TB) note.Verifier {
	v, err := fmtnote.NewVerifierForCosignatureV1(c.vkey)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func fastWitnessing(c *server.Config) {
	c.Witnessing = witnessing.Config{MinInterval: 5 * time.Millisecond, IdleInterval: 50 * time.Millisecond, MaxBackoff: 20 * time.Millisecond}
}

// waitCosigned waits until GetCheckpoint with require_witness_policy
// returns a checkpoint of at least size.
func (e *env) waitCosigned(log string, size uint64) *tlogv1.GetCheckpointResponse {
	e.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := e.log.GetCheckpoint(context.Background(), &tlogv1.GetCheckpointRequest{Log: log, RequireWitnessPolicy: true})
		if err == nil && resp.GetTreeSize() >= size {
			return resp
		}
		if err != nil && code(err) != codes.NotFound {
			e.t.Fatalf("GetCheckpoint(require_witness_policy): %v", err)
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("no checkpoint of size >= %d satisfies the policy: %v, %v", size, resp, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestWitnessPolicy(t *testing.T) {
	forEachDriver(t, func(t *testing.T, open func(testing.TB) storage.Store) {
		ctx := context.Background()
		store := open(t)
		keys := t.TempDir()
		withKeys := func(c *server.Config) { c.KeyDir = keys }
		e := start(t, store, []string{"audit"}, withKeys, fastWitnessing)
		w1, w2, w3 := newCosigner(t, "w1.example"), newCosigner(t, "w2.example"), newCosigner(t, "w3.example")

		// No policy yet.
		if resp, err := e.admin.GetLog(ctx, &tlogv1.GetLogRequest{Name: "audit"}); err != nil || resp.GetLog().GetWitnessPolicy() != "" {
			t.Fatalf("GetLog = %v, %v; want no policy", resp, err)
		}
		_, err := e.log.GetCheckpoint(ctx, &tlogv1.GetCheckpointRequest{Log: "audit", RequireWitnessPolicy: true})
		if code(err) != codes.FailedPrecondition {
			t.Fatalf("GetCheckpoint(require) without a policy: %v, want FAILED_PRECONDITION", err)
		}
		_, err = e.log.GetReceipt(ctx, &tlogv1.GetReceiptRequest{Log: "audit", Leaf: &tlogv1.GetReceiptRequest_Index{Index: 0}, RequireWitnessPolicy: true})
		if code(err) != codes.FailedPrecondition {
			t.Fatalf("GetReceipt(require) without a policy: %v, want FAILED_PRECONDITION", err)
		}

		// Bad policies.
		_, otherVKey, _ := note.GenerateKey(rand.Reader, "example.com/other")
		for _, bad := range []string{
			"quorum nobody\n",
			"witness A " + w1.vkey + " ftp://x\nquorum A\n",
			"log " + otherVKey + "\nquorum none\n",
		} {
			_, err := e.admin.SetWitnessPolicy(ctx, &tlogv1.SetWitnessPolicyRequest{Log: "audit", WitnessPolicy: bad})
			if code(err) != codes.InvalidArgument {
				t.Errorf("SetWitnessPolicy(%q) = %v, want INVALID_ARGUMENT", bad, err)
			}
		}
		if _, err := e.admin.SetWitnessPolicy(ctx, &tlogv1.SetWitnessPolicyRequest{Log: "nope", WitnessPolicy: "quorum none\n"}); code(err) != codes.NotFound {
			t.Errorf("SetWitnessPolicy(unknown log) = %v, want NOT_FOUND", err)
		}

		vkey := e.verifier("audit")
		logVKey, _ := e.admin.GetLog(ctx, &tlogv1.GetLogRequest{Name: "audit"})
		pol := fmt.Sprintf("log %s\nwitness A %s %s\nwitness B %s %s\nwitness C %s %s\ngroup Q 2 A B C\nquorum Q\n",
			logVKey.GetLog().GetVerifierKey(), w1.vkey, w1.srv.URL, w2.vkey, w2.srv.URL, w3.vkey, w3.srv.URL)
		resp, err := e.admin.SetWitnessPolicy(ctx, &tlogv1.SetWitnessPolicyRequest{Log: "audit", WitnessPolicy: pol})
		if err != nil || resp.GetLog().GetWitnessPolicy() != pol {
			t.Fatalf("SetWitnessPolicy = %v, %v", resp, err)
		}
		if _, err := e.log.GetCheckpoint(ctx, &tlogv1.GetCheckpointRequest{Log: "audit", RequireWitnessPolicy: true}); code(err) != codes.NotFound {
			t.Errorf("GetCheckpoint(require) of an empty log: %v, want NOT_FOUND", err)
		}

		r := e.appendData("audit", []byte("one"), []byte("two"), []byte("three"))
		cosigned := e.waitCosigned("audit", 3)
		witnesses := []note.Verifier{w1.verifier(t), w2.verifier(t), w3.verifier(t)}
		c, n, err := checkpoint.Open(cosigned.GetCheckpoint(), vkey, witnesses...)
		if err != nil || c.Size != 3 || len(n.Sigs) < 3 {
			t.Fatalf("cosigned checkpoint: %v, %d signatures: %v\n%s", c, len(n.Sigs), err, cosigned.GetCheckpoint())
		}
		if !bytes.HasPrefix(cosigned.GetCheckpoint(), r.GetCheckpoint()) {
			t.Errorf("the cosigned checkpoint does not start with the log-signed note")
		}
		// Only the log's signature in the Append answer; the HTTP
		// checkpoint carries the cosignatures once they are in.
		if _, err := note.Open(r.GetCheckpoint(), note.VerifierList(witnesses...)); err == nil {
			t.Errorf("the Append answer carries cosignatures")
		}
		deadline := time.Now().Add(10 * time.Second)
		for {
			_, body := e.get("/logs/audit/checkpoint")
			if n, err := note.Open(body, note.VerifierList(append(witnesses, vkey)...)); err == nil && len(n.Sigs) == 4 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the HTTP checkpoint never carried the three cosignatures:\n%s", body)
			}
			time.Sleep(10 * time.Millisecond)
		}

		// Receipts.
		rr, err := e.log.GetReceipt(ctx, &tlogv1.GetReceiptRequest{Log: "audit", Leaf: &tlogv1.GetReceiptRequest_Index{Index: 1}, RequireWitnessPolicy: true})
		if err != nil {
			t.Fatal(err)
		}
		rc, err := receipt.Parse(rr.GetReceipt())
		if err != nil {
			t.Fatal(err)
		}
		if _, n, err := receipt.Verify(rc, tree.LeafHash([]byte("two")), vkey, witnesses...); err != nil || len(n.Sigs) < 3 {
			t.Fatalf("receipt does not verify with its cosignatures: %v", err)
		}
		rr, err = e.log.GetReceipt(ctx, &tlogv1.GetReceiptRequest{Log: "audit", Leaf: &tlogv1.GetReceiptRequest_Index{Index: 1}})
		if err != nil {
			t.Fatal(err)
		}
		if rc, _ := receipt.Parse(rr.GetReceipt()); !bytes.Equal(rc.Checkpoint, r.GetCheckpoint()) {
			t.Errorf("a receipt not asking for cosignatures has them:\n%s", rc.Checkpoint)
		}
		rr, err = e.log.GetReceipt(ctx, &tlogv1.GetReceiptRequest{Log: "audit", Leaf: &tlogv1.GetReceiptRequest_Index{Index: 1}, IncludeCosignatures: true, TreeSize: 3})
		if err != nil {
			t.Fatal(err)
		}
		rc, _ = receipt.Parse(rr.GetReceipt())
		if _, n, err := receipt.Verify(rc, tree.LeafHash([]byte("two")), vkey, witnesses...); err != nil || len(n.Sigs) < 3 {
			t.Fatalf("receipt with include_cosignatures: %v", err)
		}
		// An entry not yet cosigned: OUT_OF_RANGE until it is.
		for _, w := range []*cosigner{w1, w2, w3} {
			w.down.Store(true)
		}
		e.appendData("audit", []byte("four"))
		_, err = e.log.GetReceipt(ctx, &tlogv1.GetReceiptRequest{Log: "audit", Leaf: &tlogv1.GetReceiptRequest_Index{Index: 3}, RequireWitnessPolicy: true})
		if code(err) != codes.OutOfRange {
			t.Errorf("GetReceipt(require) of an entry not cosigned yet: %v, want OUT_OF_RANGE", err)
		}

		// The restarted service knows the policy, and finds the cosigned
		// checkpoint in storage.
		e.stop()
		e = start(t, store, nil, withKeys, fastWitnessing)
		if resp, err := e.admin.GetLog(ctx, &tlogv1.GetLogRequest{Name: "audit"}); err != nil || resp.GetLog().GetWitnessPolicy() != pol {
			t.Fatalf("GetLog after restart = %v, %v", resp, err)
		}
		got, err := e.log.GetCheckpoint(ctx, &tlogv1.GetCheckpointRequest{Log: "audit", TreeSize: 3, RequireWitnessPolicy: true})
		if err != nil || got.GetTreeSize() != 3 {
			t.Fatalf("GetCheckpoint(size 3, require) after restart = %v, %v", got, err)
		}
		if _, n, err := checkpoint.Open(got.GetCheckpoint(), vkey, witnesses...); err != nil || len(n.Sigs) < 3 {
			t.Errorf("GetCheckpoint(size 3, require) after restart: %v\n%s", err, got.GetCheckpoint())
		}
		if _, err := e.log.GetCheckpoint(ctx, &tlogv1.GetCheckpointRequest{Log: "audit", TreeSize: 4, RequireWitnessPolicy: true}); code(err) != codes.NotFound {
			t.Errorf("GetCheckpoint(size 4, require): %v, want NOT_FOUND", err)
		}
		// Witnesses back: the latest checkpoint gets cosigned.
		w1.down.Store(false)
		w3.down.Store(false)
		if got := e.waitCosigned("audit", 4); got.GetTreeSize() != 4 {
			t.Errorf("newest cosigned checkpoint has size %d, want 4", got.GetTreeSize())
		}

		// Cleared: no policy.
		if resp, err := e.admin.SetWitnessPolicy(ctx, &tlogv1.SetWitnessPolicyRequest{Log: "audit"}); err != nil || resp.GetLog().GetWitnessPolicy() != "" {
			t.Fatalf("SetWitnessPolicy(clear) = %v, %v", resp, err)
		}
		if _, err := e.log.GetCheckpoint(ctx, &tlogv1.GetCheckpointRequest{Log: "audit", RequireWitnessPolicy: true}); code(err) != codes.FailedPrecondition {
			t.Errorf("GetCheckpoint(require) after clearing: %v", err)
		}

		// CreateLog with a policy: checked before anything is created.
		if _, err := e.admin.CreateLog(ctx, &tlogv1.CreateLogRequest{Name: "bad", WitnessPolicy: "quorum\n"}); code(err) != codes.InvalidArgument {
			t.Errorf("CreateLog(bad policy) = %v, want INVALID_ARGUMENT", err)
		}
		if _, err := e.admin.GetLog(ctx, &tlogv1.GetLogRequest{Name: "bad"}); code(err) != codes.NotFound {
			t.Errorf("a log was created with a bad policy: %v", err)
		}
		one := "witness A " + w1.vkey + " " + w1.srv.URL + "\nquorum A\n"
		cr, err := e.admin.CreateLog(ctx, &tlogv1.CreateLogRequest{Name: "second", WitnessPolicy: one})
		if err != nil || cr.GetLog().GetWitnessPolicy() != one {
			t.Fatalf("CreateLog with a policy = %v, %v", cr, err)
		}
		e.appendData("second", []byte("x"))
		got = e.waitCosigned("second", 1)
		_ = got
		if _, _, err := checkpoint.Open(got.GetCheckpoint(), e.verifier("second"), witnesses[0]); err != nil {
			t.Errorf("cosigned checkpoint of the second log: %v", err)
		}
		if st := e.svc.WitnessStats(); len(st) != 1 || st[0].Log != "second" || st[0].Cosigned == 0 {
			t.Errorf("WitnessStats = %+v", st)
		}
		e.verifyLog("audit")
		e.verifyLog("second")
	})
}

// TestDefaultWitnessPolicy: the server's default policy applies to every
// log without its own; a log's own policy replaces it.
func TestDefaultWitnessPolicy(t *testing.T) {
	forEachDriver(t, func(t *testing.T, open func(testing.TB) storage.Store) {
		ctx := context.Background()
		w := newCosigner(t, "w.example")
		def := "witness W " + w.vkey + " " + w.srv.URL + "\nquorum W\n"
		e := start(t, open(t), []string{"a", "b"}, fastWitnessing, func(c *server.Config) { c.WitnessPolicy = def })
		if _, err := e.admin.SetWitnessPolicy(ctx, &tlogv1.SetWitnessPolicyRequest{Log: "b", WitnessPolicy: "quorum none\n"}); err != nil {
			t.Fatal(err)
		}
		e.appendData("a", []byte("x"))
		r := e.appendData("b", []byte("y"))
		got := e.waitCosigned("a", 1)
		if _, _, err := checkpoint.Open(got.GetCheckpoint(), e.verifier("a"), w.verifier(t)); err != nil || !strings.Contains(string(got.GetCheckpoint()), "— w.example ") {
			t.Errorf("log a under the default policy: %v\n%s", err, got.GetCheckpoint())
		}
		// Quorum none: the latest checkpoint satisfies it, uncosigned.
		got = e.waitCosigned("b", 1)
		if !bytes.Equal(got.GetCheckpoint(), r.GetCheckpoint()) {
			t.Errorf("log b (quorum none) = %s, want its latest checkpoint", got.GetCheckpoint())
		}
		if resp, _ := e.admin.GetLog(ctx, &tlogv1.GetLogRequest{Name: "a"}); resp.GetLog().GetWitnessPolicy() != "" {
			t.Errorf("log a reports an own policy %q", resp.GetLog().GetWitnessPolicy())
		}
	})
	t.Run("invalid", func(t *testing.T) {
		_, err := server.New(context.Background(), server.Config{Store: drivers[0].open(t), KeyDir: t.TempDir(), WitnessPolicy: "quorum\n"})
		if err == nil || !strings.Contains(err.Error(), "default witness policy") {
			t.Errorf("server.New with a bad default policy: %v", err)
		}
	})
}
