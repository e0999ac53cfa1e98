package witness

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	fnote "github.com/transparency-dev/formats/note"
	"golang.org/x/mod/sumdb/note"

	"github.com/tlog-dev/tlog/pkg/checkpoint"
)

// signText signs an arbitrary note text with l's key.
func signText(t testing.TB, l *fakeLog, text string) []byte {
	t.Helper()
	b, err := note.Sign(&note.Note{Text: text}, l.signer)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// text returns the unsigned checkpoint text of l at size.
func (l *fakeLog) text(size uint64) string {
	return string(checkpoint.Checkpoint{Origin: l.origin, Size: size, Hash: l.root(size)}.Marshal())
}

func b64(h []byte) string { return base64.StdEncoding.EncodeToString(h) }

func rootB64(l *fakeLog, size uint64) string {
	h := l.root(size)
	return b64(h[:])
}

// corruptLastSig flips a bit inside the signature (after the key ID) of the
// last signature line of a note.
func corruptLastSig(t testing.TB, n []byte) []byte {
	t.Helper()
	i := bytes.LastIndex(n, []byte("\n— "))
	line := string(n[i+1 : len(n)-1])
	sp := strings.LastIndex(line, " ")
	sig, err := base64.StdEncoding.DecodeString(line[sp+1:])
	if err != nil {
		t.Fatal(err)
	}
	sig[10] ^= 1
	return []byte(string(n[:i+1]) + line[:sp+1] + b64(sig) + "\n")
}

func otherKey(t testing.TB, name string) (note.Signer, string) {
	t.Helper()
	skey, vkey, err := note.GenerateKey(rand.Reader, name)
	if err != nil {
		t.Fatal(err)
	}
	s, err := note.NewSigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	return s, vkey
}

func TestAddCheckpointStatusCodes(t *testing.T) {
	type tcase struct {
		name string
		at   uint64 // the witness first cosigns 0 -> at (if at > 0)
		logs func(t testing.TB, l *fakeLog) []Log
		body func(t testing.TB, l *fakeLog) []byte
		code int
		// for 409, the expected text/x.tlog.size body
		size string
	}
	junk := func(n int) [][]byte {
		p := make([][]byte, n)
		for i := range p {
			p[i] = bytes.Repeat([]byte{byte(i)}, 32)
		}
		return p
	}
	cases := []tcase{
		// 200
		{name: "first checkpoint", body: func(t testing.TB, l *fakeLog) []byte { return l.request(0, 8) }, code: 200},
		{name: "extends", at: 5, body: func(t testing.TB, l *fakeLog) []byte { return l.request(5, 8) }, code: 200},
		{name: "extends by one", at: 7, body: func(t testing.TB, l *fakeLog) []byte { return l.request(7, 8) }, code: 200},
		{name: "same size same root", at: 5, body: func(t testing.TB, l *fakeLog) []byte { return l.request(5, 5) }, code: 200},
		{name: "empty tree", body: func(t testing.TB, l *fakeLog) []byte { return l.request(0, 0) }, code: 200},
		{name: "extension lines", body: func(t testing.TB, l *fakeLog) []byte {
			return requestBody(0, nil, signText(t, l, l.text(8)+"ext one\next two\n"))
		}, code: 200},
		{name: "unknown extra signature ignored", body: func(t testing.TB, l *fakeLog) []byte {
			s, _ := otherKey(t, "someone.example/else")
			n, err := note.Sign(&note.Note{Text: l.text(8)}, s, l.signer)
			if err != nil {
				t.Fatal(err)
			}
			return requestBody(0, nil, n)
		}, code: 200},
		{name: "key name differs from origin", logs: func(t testing.TB, l *fakeLog) []Log {
			s, vkey := otherKey(t, "keys.example/log-key")
			l.signer = s
			return []Log{{Origin: l.origin, VerifierKeys: []string{vkey}}}
		}, body: func(t testing.TB, l *fakeLog) []byte { return l.request(0, 8) }, code: 200},
		{name: "second of two trusted keys", logs: func(t testing.TB, l *fakeLog) []Log {
			old := l.vkey
			s, vkey := otherKey(t, l.origin)
			l.signer = s
			return []Log{{Origin: l.origin, VerifierKeys: []string{old, vkey}}}
		}, body: func(t testing.TB, l *fakeLog) []byte { return l.request(0, 8) }, code: 200},
		{name: "63 proof lines is not malformed", at: 5, body: func(t testing.TB, l *fakeLog) []byte {
			return requestBody(5, junk(63), l.checkpoint(8))
		}, code: 422},

		// 404
		{name: "unknown origin", body: func(t testing.TB, l *fakeLog) []byte {
			return newFakeLog(t, "example.com/unknown").request(0, 0)
		}, code: 404},
		{name: "unknown origin unsigned", body: func(t testing.TB, l *fakeLog) []byte {
			return []byte("old 0\n\nexample.com/unknown\n0\n" + b64(emptyRoot[:]) + "\n")
		}, code: 404},

		// 403
		{name: "unsigned", body: func(t testing.TB, l *fakeLog) []byte {
			return requestBody(0, nil, []byte(l.text(8)))
		}, code: 403},
		{name: "unsigned with blank line", body: func(t testing.TB, l *fakeLog) []byte {
			return requestBody(0, nil, []byte(l.text(8)+"\n"))
		}, code: 403},
		{name: "wrong key same name", body: func(t testing.TB, l *fakeLog) []byte {
			s, _ := otherKey(t, l.origin)
			n, _ := note.Sign(&note.Note{Text: l.text(8)}, s)
			return requestBody(0, nil, n)
		}, code: 403},
		{name: "bad signature", body: func(t testing.TB, l *fakeLog) []byte {
			return requestBody(0, nil, corruptLastSig(t, l.checkpoint(8)))
		}, code: 403},
		{name: "signature over other text", at: 5, body: func(t testing.TB, l *fakeLog) []byte {
			cp := l.checkpoint(8)
			other := l.checkpoint(9)
			sigs := other[bytes.Index(other, []byte("\n\n"))+2:]
			return requestBody(5, l.proof(5, 8), append(cp[:bytes.Index(cp, []byte("\n\n"))+2], sigs...))
		}, code: 403},
		{name: "valid and invalid trusted signatures", logs: func(t testing.TB, l *fakeLog) []Log {
			s, vkey := otherKey(t, l.origin)
			n, err := note.Sign(&note.Note{Text: l.text(8)}, l.signer, s)
			if err != nil {
				t.Fatal(err)
			}
			l.prepared = corruptLastSig(t, n)
			return []Log{{Origin: l.origin, VerifierKeys: []string{l.vkey, vkey}}}
		}, body: func(t testing.TB, l *fakeLog) []byte { return requestBody(0, nil, l.prepared) }, code: 403},
		{name: "garbled signature line", body: func(t testing.TB, l *fakeLog) []byte {
			return requestBody(0, nil, []byte(l.text(8)+"\n— "+l.origin+" !!!\n"))
		}, code: 403},

		// 400
		{name: "empty body", body: func(t testing.TB, l *fakeLog) []byte { return nil }, code: 400},
		{name: "no newline", body: func(t testing.TB, l *fakeLog) []byte { return []byte("old 0") }, code: 400},
		{name: "no old line", body: func(t testing.TB, l *fakeLog) []byte { return append([]byte("\n"), l.checkpoint(8)...) }, code: 400},
		{name: "Old", body: func(t testing.TB, l *fakeLog) []byte { return append([]byte("Old 0\n\n"), l.checkpoint(8)...) }, code: 400},
		{name: "old leading zero", body: func(t testing.TB, l *fakeLog) []byte { return append([]byte("old 00\n\n"), l.checkpoint(8)...) }, code: 400},
		{name: "old negative", body: func(t testing.TB, l *fakeLog) []byte { return append([]byte("old -1\n\n"), l.checkpoint(8)...) }, code: 400},
		{name: "old plus", body: func(t testing.TB, l *fakeLog) []byte { return append([]byte("old +0\n\n"), l.checkpoint(8)...) }, code: 400},
		{name: "old two spaces", body: func(t testing.TB, l *fakeLog) []byte { return append([]byte("old  0\n\n"), l.checkpoint(8)...) }, code: 400},
		{name: "old CRLF", body: func(t testing.TB, l *fakeLog) []byte { return append([]byte("old 0\r\n\n"), l.checkpoint(8)...) }, code: 400},
		{name: "old too large", body: func(t testing.TB, l *fakeLog) []byte {
			return append([]byte("old 18446744073709551616\n\n"), l.checkpoint(8)...)
		}, code: 400},
		{name: "proof not base64", at: 5, body: func(t testing.TB, l *fakeLog) []byte {
			return append([]byte("old 5\n!!!!\n\n"), l.checkpoint(8)...)
		}, code: 400},
		{name: "proof hash 31 bytes", at: 5, body: func(t testing.TB, l *fakeLog) []byte {
			return requestBody(5, [][]byte{make([]byte, 31)}, l.checkpoint(8))
		}, code: 400},
		{name: "proof hash 33 bytes", at: 5, body: func(t testing.TB, l *fakeLog) []byte {
			return requestBody(5, [][]byte{make([]byte, 33)}, l.checkpoint(8))
		}, code: 400},
		{name: "proof line CR", at: 5, body: func(t testing.TB, l *fakeLog) []byte {
			p := l.proof(5, 8)
			return []byte(strings.Replace(string(requestBody(5, p, l.checkpoint(8))), b64(p[0])+"\n", b64(p[0])+"\r\n", 1))
		}, code: 400},
		{name: "64 proof lines", at: 5, body: func(t testing.TB, l *fakeLog) []byte {
			return requestBody(5, junk(64), l.checkpoint(8))
		}, code: 400},
		{name: "no empty line", body: func(t testing.TB, l *fakeLog) []byte { return append([]byte("old 0\n"), l.checkpoint(8)...) }, code: 400},
		{name: "only old line", body: func(t testing.TB, l *fakeLog) []byte { return []byte("old 0\n") }, code: 400},
		{name: "no checkpoint", body: func(t testing.TB, l *fakeLog) []byte { return []byte("old 0\n\n") }, code: 400},
		{name: "checkpoint size leading zero", body: func(t testing.TB, l *fakeLog) []byte {
			return requestBody(0, nil, signText(t, l, l.origin+"\n08\n"+rootB64(l, 8)+"\n"))
		}, code: 400},
		{name: "checkpoint hash 31 bytes", body: func(t testing.TB, l *fakeLog) []byte {
			return requestBody(0, nil, signText(t, l, l.origin+"\n8\n"+b64(make([]byte, 31))+"\n"))
		}, code: 400},
		{name: "checkpoint hash not canonical", body: func(t testing.TB, l *fakeLog) []byte {
			h := l.root(8)
			h[31] = 0 // the last base64 digit then carries unused bits
			s := b64(h[:])
			s = s[:42] + string("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"[strings.IndexByte("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/", s[42])+1]) + "="
			return requestBody(0, nil, signText(t, l, l.origin+"\n8\n"+s+"\n"))
		}, code: 400},
		{name: "checkpoint two lines", body: func(t testing.TB, l *fakeLog) []byte {
			return requestBody(0, nil, signText(t, l, l.origin+"\n8\n"))
		}, code: 400},
		{name: "checkpoint empty extension line", body: func(t testing.TB, l *fakeLog) []byte {
			return requestBody(0, nil, signText(t, l, l.text(8)+"\next\n"))
		}, code: 400},
		{name: "checkpoint control character", body: func(t testing.TB, l *fakeLog) []byte {
			return requestBody(0, nil, append([]byte(l.text(8)+"ext\tension\n\n"), l.checkpoint(8)[len(l.text(8))+1:]...))
		}, code: 400},
		{name: "old larger than size", body: func(t testing.TB, l *fakeLog) []byte {
			return requestBody(9, nil, l.checkpoint(8))
		}, code: 400},
		{name: "old larger than size after cosigning", at: 9, body: func(t testing.TB, l *fakeLog) []byte {
			return requestBody(9, nil, l.checkpoint(8))
		}, code: 400},

		// 409
		{name: "old zero after cosigning", at: 5, body: func(t testing.TB, l *fakeLog) []byte { return l.request(0, 8) }, code: 409, size: "5\n"},
		{name: "old behind", at: 5, body: func(t testing.TB, l *fakeLog) []byte { return l.request(3, 8) }, code: 409, size: "5\n"},
		{name: "old ahead", at: 5, body: func(t testing.TB, l *fakeLog) []byte { return l.request(7, 8) }, code: 409, size: "5\n"},
		{name: "never cosigned", body: func(t testing.TB, l *fakeLog) []byte { return l.request(5, 8) }, code: 409, size: "0\n"},
		{name: "smaller checkpoint", at: 8, body: func(t testing.TB, l *fakeLog) []byte { return l.request(5, 5) }, code: 409, size: "8\n"},
		{name: "empty tree after cosigning", at: 8, body: func(t testing.TB, l *fakeLog) []byte { return l.request(0, 0) }, code: 409, size: "8\n"},

		// 422
		{name: "bad proof", at: 5, body: func(t testing.TB, l *fakeLog) []byte {
			p := l.proof(5, 8)
			p[0][0] ^= 1
			return requestBody(5, p, l.checkpoint(8))
		}, code: 422},
		{name: "short proof", at: 5, body: func(t testing.TB, l *fakeLog) []byte {
			p := l.proof(5, 8)
			return requestBody(5, p[:len(p)-1], l.checkpoint(8))
		}, code: 422},
		{name: "long proof", at: 5, body: func(t testing.TB, l *fakeLog) []byte {
			p := l.proof(5, 8)
			return requestBody(5, append(p, p[0]), l.checkpoint(8))
		}, code: 422},
		{name: "proof for other sizes", at: 5, body: func(t testing.TB, l *fakeLog) []byte {
			return requestBody(5, l.proof(4, 8), l.checkpoint(8))
		}, code: 422},
		{name: "missing proof", at: 5, body: func(t testing.TB, l *fakeLog) []byte {
			return requestBody(5, nil, l.checkpoint(8))
		}, code: 422},
		{name: "same size different root", at: 5, body: func(t testing.TB, l *fakeLog) []byte {
			return requestBody(5, nil, signText(t, l, l.origin+"\n5\n"+rootB64(l, 6)+"\n"))
		}, code: 422},
		{name: "same size with proof", at: 5, body: func(t testing.TB, l *fakeLog) []byte {
			return requestBody(5, l.proof(4, 5), l.checkpoint(5))
		}, code: 422},
		{name: "old zero with proof", body: func(t testing.TB, l *fakeLog) []byte {
			return requestBody(0, l.proof(4, 8), l.checkpoint(8))
		}, code: 422},
		{name: "empty tree wrong root", body: func(t testing.TB, l *fakeLog) []byte {
			return requestBody(0, nil, signText(t, l, l.origin+"\n0\n"+rootB64(l, 8)+"\n"))
		}, code: 422},
		{name: "empty tree with proof", body: func(t testing.TB, l *fakeLog) []byte {
			return requestBody(0, junk(1), l.checkpoint(0))
		}, code: 422},
	}

	forEachBackend(t, func(t *testing.T, reopen func() State) {
		state := openState(t, reopen)
		for i, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				l := newFakeLog(t, fmt.Sprintf("example.com/log%d", i))
				l.grow(20, "leaf")
				logs := []Log{l.config()}
				if tc.logs != nil {
					logs = tc.logs(t, l)
				}
				w := newTestWitness(t, state, logs...)
				if tc.at > 0 {
					w.mustCosign(t, l, 0, tc.at)
				}
				before, beforeErr := state.Get(context.Background(), l.origin)

				body := tc.body(t, l)
				code, ctype, resp := post(t, w, body)
				if code != tc.code {
					t.Fatalf("status %d %q, want %d\nrequest:\n%s", code, resp, tc.code, body)
				}
				after, afterErr := state.Get(context.Background(), l.origin)
				if code == 200 {
					_, cp, _ := bytes.Cut(body, []byte("\n\n"))
					w.checkCosignature(t, cp, resp)
					if afterErr != nil {
						t.Fatal(afterErr)
					}
					return
				}
				if !errors.Is(afterErr, beforeErr) || !equalRecords(before, after) {
					t.Errorf("state changed on %d: %+v (%v) -> %+v (%v)", code, before, beforeErr, after, afterErr)
				}
				if code == 409 {
					if ctype != "text/x.tlog.size" || resp != tc.size {
						t.Errorf("409 body %q type %q, want %q type text/x.tlog.size", resp, ctype, tc.size)
					}
				}
				if strings.Contains(resp, "—") {
					t.Errorf("refusal carries a signature: %q", resp)
				}
			})
		}
	})
}

func equalRecords(a, b Record) bool {
	return a.Size == b.Size && a.Root == b.Root && bytes.Equal(a.Checkpoint, b.Checkpoint) && a.Time.Equal(b.Time)
}

// TestCosignedState checks what a 200 stores and the monitoring endpoint.
func TestCosignedState(t *testing.T) {
	forEachBackend(t, func(t *testing.T, reopen func() State) {
		state := openState(t, reopen)
		l := newFakeLog(t, "example.com/monitored")
		l.grow(10, "leaf")
		w := newTestWitness(t, state, l.config())
		get := func() (int, string) {
			rec := httptest.NewRecorder()
			w.ServeHTTP(rec, httptest.NewRequest("GET", "/"+originHash(l.origin)+"/checkpoint", nil))
			return rec.Code, rec.Body.String()
		}
		if code, _ := get(); code != 404 {
			t.Fatalf("monitoring endpoint before any cosignature: %d, want 404", code)
		}
		rec := httptest.NewRecorder()
		w.ServeHTTP(rec, httptest.NewRequest("GET", "/"+originHash("example.com/other")+"/checkpoint", nil))
		if rec.Code != 404 {
			t.Fatalf("monitoring endpoint for an unknown log: %d, want 404", rec.Code)
		}

		w.mustCosign(t, l, 0, 4)
		cosig := w.mustCosign(t, l, 4, 10)
		r := mustGet(t, state, l.origin)
		if r.Size != 10 || r.Root != l.root(10) {
			t.Fatalf("state %d %x, want 10 %x", r.Size, r.Root, l.root(10))
		}
		cp := l.checkpoint(10)
		if want := string(cp) + cosig; string(r.Checkpoint) != want {
			t.Fatalf("stored checkpoint %q, want %q", r.Checkpoint, want)
		}
		code, body := get()
		if code != 200 || body != string(cp)+cosig {
			t.Fatalf("monitoring endpoint: %d %q", code, body)
		}
		// It verifies with the log's key and the witness's.
		lv, _ := note.NewVerifier(l.vkey)
		wv, err := fnote.NewVerifierForCosignatureV1(w.cosigner.VerifierKey())
		if err != nil {
			t.Fatal(err)
		}
		n, err := note.Open([]byte(body), note.VerifierList(lv, wv))
		if err != nil || len(n.Sigs) != 2 {
			t.Fatalf("monitoring checkpoint does not verify: %v", err)
		}
		if time.Since(r.Time).Abs() > time.Minute {
			t.Fatalf("stored time %v", r.Time)
		}
	})
}

func originHash(origin string) string {
	return fmt.Sprintf("%x", sha256.Sum256([]byte(origin)))
}
