package client_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"testing"

	fmtnote "github.com/transparency-dev/formats/note"
	"golang.org/x/mod/sumdb/note"

	"github.com/tlog-dev/tlog/pkg/checkpoint"
	"github.com/tlog-dev/tlog/pkg/client"
	"github.com/tlog-dev/tlog/pkg/tree"
	tlogv1 "github.com/tlog-dev/tlog/proto/tlog/v1"
)

// newWitness returns an Ed25519 cosignature/v1 signer and verifier.
func newWitness(t testing.TB, name string) (note.Signer, note.Verifier) {
	t.Helper()
	skey, _, err := note.GenerateKey(rand.Reader, name)
	if err != nil {
		t.Fatal(err)
	}
	s, err := fmtnote.NewSignerForCosignatureV1(skey)
	if err != nil {
		t.Fatal(err)
	}
	return s, s.Verifier()
}

// cosign adds cosignatures by witnesses to a checkpoint signed by the log.
func cosign(t testing.TB, signed []byte, log note.Verifier, witnesses ...note.Signer) []byte {
	t.Helper()
	n, err := note.Open(signed, note.VerifierList(log))
	if err != nil {
		t.Fatal(err)
	}
	out, err := note.Sign(n, witnesses...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// breakSignature returns signed with the signature by name altered so that
// it no longer verifies.
func breakSignature(t testing.TB, signed []byte, name string) []byte {
	t.Helper()
	lines := bytes.Split(signed, []byte("\n"))
	for i, line := range lines {
		b64sig, ok := bytes.CutPrefix(line, []byte("— "+name+" "))
		if !ok {
			continue
		}
		sig, err := base64.StdEncoding.DecodeString(string(b64sig))
		if err != nil {
			t.Fatal(err)
		}
		sig[len(sig)-1] ^= 1
		lines[i] = []byte("— " + name + " " + base64.StdEncoding.EncodeToString(sig))
		return bytes.Join(lines, []byte("\n"))
	}
	t.Fatalf("no signature by %s", name)
	return nil
}

func TestWitnessPolicy(t *testing.T) {
	t.Parallel()
	skey, vkey, err := checkpoint.GenerateKey("example.com/log", rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ls, _ := checkpoint.NewSigner(skey)
	lv, _ := checkpoint.NewVerifier(vkey)
	signed, err := checkpoint.Sign(checkpoint.Checkpoint{Origin: "example.com/log", Size: 5, Hash: tree.Hash{5}}, ls)
	if err != nil {
		t.Fatal(err)
	}
	s1, v1 := newWitness(t, "w1.example")
	s2, v2 := newWitness(t, "w2.example")
	_, v3 := newWitness(t, "w3.example")
	s4, _ := newWitness(t, "w4.example") // unknown to the client
	both := cosign(t, signed, lv, s1, s2, s4)
	one := cosign(t, signed, lv, s1, s4)
	bad := breakSignature(t, both, "w2.example")

	for _, tc := range []struct {
		name      string
		signed    []byte
		k         int
		witnesses []note.Verifier
		want      error // nil: satisfied
	}{
		{"2 of 3", both, 2, []note.Verifier{v1, v2, v3}, nil},
		{"1 of 1", one, 1, []note.Verifier{v1}, nil},
		{"3 of 3", both, 3, []note.Verifier{v1, v2, v3}, client.ErrWitnessPolicy},
		{"2 of 2, one cosigned", one, 2, []note.Verifier{v1, v2}, client.ErrWitnessPolicy},
		{"no cosignatures", signed, 1, []note.Verifier{v1}, client.ErrWitnessPolicy},
		{"the log's own signature does not count", signed, 1, []note.Verifier{v1, v2}, client.ErrWitnessPolicy},
		{"an invalid cosignature", bad, 1, []note.Verifier{v1, v2}, client.ErrVerification},
		{"a witness given twice", both, 2, []note.Verifier{v1, v1}, errors.New("any error")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			vc, err := client.OpenCosigned(tc.signed, lv, tc.k, tc.witnesses)
			switch {
			case tc.want == nil && err != nil:
				t.Fatalf("policy not satisfied: %v", err)
			case tc.want == nil:
				if vc.Size != 5 || !bytes.Equal(vc.Note, tc.signed) {
					t.Errorf("checkpoint %+v", vc)
				}
			case err == nil:
				t.Fatalf("policy satisfied, want %v", tc.want)
			case errors.Is(tc.want, client.ErrVerification) || errors.Is(tc.want, client.ErrWitnessPolicy):
				if !errors.Is(err, tc.want) || !errors.Is(err, client.ErrVerification) {
					t.Fatalf("%v, want %v", err, tc.want)
				}
			}
			t.Logf("%v", err)
		})
	}
}

// TestAppendAndProveWitnessed runs AppendAndProve with a witness policy
// against a proxy that cosigns checkpoints, as a log with witnesses will.
func TestAppendAndProveWitnessed(t *testing.T) {
	t.Parallel()
	l := startLog(t)
	s1, v1 := newWitness(t, "w1.example")
	s2, v2 := newWitness(t, "w2.example")
	_, v3 := newWitness(t, "w3.example")
	cosignAppend := onMethod(mAppend, func(ctx context.Context, req, reply any, call func() error) error {
		err := call()
		if r, ok := reply.(*tlogv1.AppendResponse); ok && err == nil {
			r.Checkpoint = cosign(t, r.Checkpoint, l.verifier(), s1, s2)
		}
		return err
	})
	cosignLatest := onMethod(mCheckpoint, func(ctx context.Context, req, reply any, call func() error) error {
		err := call()
		if r, ok := reply.(*tlogv1.GetCheckpointResponse); ok && err == nil {
			r.Checkpoint = cosign(t, r.Checkpoint, l.verifier(), s1)
		}
		return err
	})

	// The append's checkpoint is cosigned.
	c := l.client(client.Config{}, cosignAppend)
	p, err := c.AppendAndProve(t.Context(), []byte("a"), client.WithCosignatureVerifiers(2, v1, v2, v3))
	if err != nil {
		t.Fatalf("AppendAndProve: %v", err)
	}
	if _, err := client.OpenCosigned(p.Checkpoint.Note, l.verifier(), 2, []note.Verifier{v1, v2}); err != nil {
		t.Errorf("the proof's checkpoint: %v", err)
	}
	if _, err := c.AppendAndProve(t.Context(), []byte("b"), client.WithCosignatureVerifiers(3, v1, v2, v3)); !errors.Is(err, client.ErrWitnessPolicy) || !errors.Is(err, client.ErrVerification) {
		t.Errorf("AppendAndProve with 3 of 3: %v, want ErrWitnessPolicy", err)
	}

	// Only the latest checkpoint is cosigned.
	c = l.client(client.Config{}, cosignLatest)
	p, err = c.AppendAndProve(t.Context(), []byte("c"), client.WithCosignatureVerifiers(1, v1, v2))
	if err != nil {
		t.Fatalf("AppendAndProve, latest checkpoint cosigned: %v", err)
	}
	if p.Index != 2 || p.Checkpoint.Size < 3 {
		t.Errorf("proof of %d in size %d", p.Index, p.Checkpoint.Size)
	}

	// No cosignatures anywhere: today's server.
	c = l.client(client.Config{})
	if _, err := c.AppendAndProve(t.Context(), []byte("d"), client.WithCosignatureVerifiers(1, v1)); !errors.Is(err, client.ErrWitnessPolicy) {
		t.Errorf("AppendAndProve without cosignatures: %v, want ErrWitnessPolicy", err)
	}
	// Without a policy, the same works.
	if _, err := c.AppendAndProve(t.Context(), []byte("e")); err != nil {
		t.Errorf("AppendAndProve: %v", err)
	}
	if size := l.verify(); size != 5 {
		t.Errorf("log size %d, want 5", size)
	}
}
