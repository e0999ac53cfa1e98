package witnessing

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"strconv"
	"testing"
	"time"

	fmtnote "github.com/transparency-dev/formats/note"
	"golang.org/x/mod/sumdb/note"

	"github.com/tlog-dev/tlog/pkg/checkpoint"

	"github.com/tlog-dev/tlog/pkg/policy"
	"github.com/tlog-dev/tlog/storage"
)

// FuzzParseSize: a text/x.tlog.size body is accepted only in its one
// canonical form.
func FuzzParseSize(f *testing.F) {
	for _, s := range []string{"0\n", "1\n", "20852014\n", "18446744073709551615\n", "18446744073709551616\n", "01\n", "1", " 1\n", "1\r\n", "+1\n", "\n", ""} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		n, err := parseSize(b)
		if err != nil {
			return
		}
		if want := strconv.FormatUint(n, 10) + "\n"; string(b) != want {
			t.Fatalf("parseSize(%q) = %d, but its canonical form is %q", b, n, want)
		}
	})
}

// FuzzVerifyAnswer: whatever a witness answers, verifyAnswer does not
// panic, and every cosignature it accepts verifies with
// transparency-dev/formats on the checkpoint.
func FuzzVerifyAnswer(f *testing.F) {
	skey, vkey, _ := note.GenerateKey(rand.Reader, "w.example")
	wsigner, _ := fmtnote.NewSignerForCosignatureV1(skey)
	cvkey, _ := fmtnote.VKeyToCosignatureV1(vkey)
	p, err := policy.Parse([]byte("witness W " + cvkey + " http://127.0.0.1:1\nquorum W\n"))
	if err != nil {
		f.Fatal(err)
	}
	lskey, lvkey, _ := checkpoint.GenerateKey("example.com/log", rand.Reader)
	ls, _ := checkpoint.NewSigner(lskey)
	lv, _ := checkpoint.NewVerifier(lvkey)
	signed, err := checkpoint.Sign(checkpoint.Checkpoint{Origin: "example.com/log", Size: 3, Hash: [32]byte{1}}, ls)
	if err != nil {
		f.Fatal(err)
	}
	cp := storage.Checkpoint{TreeHead: storage.TreeHead{Size: 3}, Note: signed}
	cosigned, _ := note.Sign(&note.Note{Text: "example.com/log\n3\n" + base64.StdEncoding.EncodeToString(make([]byte, 32)) + "\n"}, wsigner)
	good := cosigned[bytes.LastIndex(cosigned, []byte("\n\n"))+2:]
	n, _ := note.Open(signed, note.VerifierList(lv))
	withSig, _ := note.Sign(n, wsigner)
	f.Add(withSig[bytes.LastIndex(withSig, []byte("\n— example.com/log"))+1:]) // the log's line and the witness's
	f.Add(good)
	f.Add([]byte("— other.example AQIDBA==\n"))
	f.Add([]byte("not a signature\n"))
	f.Add([]byte(""))
	wv, _ := fmtnote.NewVerifierForCosignatureV1(cvkey)
	f.Fuzz(func(t *testing.T, resp []byte) {
		w, _ := New(Config{Store: nopStore{}})
		lw := newLogWitnessing(w, Log{Name: "log", Verifier: lv, Policy: p})
		set, ferr := lw.verifyAnswer(cp, resp, time.Now())
		if ferr != nil {
			return
		}
		for _, c := range set.byKey {
			if _, err := note.Open(AppendCosignatures(signed, []storage.Cosignature{c}), note.VerifierList(wv)); err != nil {
				t.Fatalf("accepted cosignature %q does not verify: %v", c.Signature, err)
			}
		}
	})
}

type nopStore struct{}

func (nopStore) AddCosignatures(context.Context, string, uint64, []storage.Cosignature) error {
	return nil
}
func (nopStore) CosignaturesAt(context.Context, string, uint64) ([]storage.Cosignature, error) {
	return nil, nil
}
func (nopStore) CheckpointAt(context.Context, string, uint64) (storage.Checkpoint, error) {
	return storage.Checkpoint{}, storage.ErrNotFound
}
