package witness

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"testing"
)

func FuzzParseAddRequest(f *testing.F) {
	l := newFakeLog(f, "example.com/fuzz")
	l.grow(9, "leaf")
	f.Add(l.request(0, 9))
	f.Add(l.request(3, 9))
	f.Add([]byte("old 0\n\n"))
	f.Add([]byte("old 01\n\nx\n"))
	f.Fuzz(func(t *testing.T, body []byte) {
		r, err := parseAddRequest(body)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			return
		}
		// One encoding only: the parse re-encodes to the same bytes.
		if got := requestBody(r.oldSize, r.proof, r.note); !bytes.Equal(got, body) {
			t.Fatalf("re-encoded %q, was %q", got, body)
		}
		if len(r.proof) > MaxProofLines {
			t.Fatalf("%d proof lines", len(r.proof))
		}
	})
}

func FuzzParseCheckpoint(f *testing.F) {
	f.Add([]byte(cosignText))
	f.Add([]byte(cosignText + "ext\n"))
	f.Add([]byte("o\n0\n" + base64.StdEncoding.EncodeToString(emptyRoot[:]) + "\n"))
	f.Add([]byte("o\n00\nAAAA\n"))
	f.Fuzz(func(t *testing.T, text []byte) {
		c, err := parseCheckpoint(text)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			return
		}
		head := fmt.Sprintf("%s\n%d\n%s\n", c.origin, c.size, base64.StdEncoding.EncodeToString(c.hash[:]))
		if !strings.HasPrefix(string(text), head) {
			t.Fatalf("parsed %q from %q", head, text)
		}
	})
}

// FuzzAddCheckpoint sends arbitrary bodies to a witness that has cosigned
// size 5 of a log: none may panic, and only a 200 may change the state.
func FuzzAddCheckpoint(f *testing.F) {
	l := newFakeLog(f, "example.com/fuzz")
	l.grow(12, "leaf")
	state := newBoltState(f)
	w := newTestWitness(f, state, l.config())
	w.mustCosign(f, l, 0, 5)
	for _, old := range []uint64{0, 5} {
		for _, size := range []uint64{5, 6, 12} {
			f.Add(l.request(old, size))
		}
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		before := mustGet(t, state, l.origin)
		_, err := w.AddCheckpoint(context.Background(), body)
		after := mustGet(t, state, l.origin)
		if err == nil {
			if after.Size < before.Size {
				t.Fatalf("state went back from %d to %d", before.Size, after.Size)
			}
			return
		}
		if StatusCode(err) == 500 {
			t.Fatalf("internal error: %v", err)
		}
		if !equalRecords(before, after) {
			t.Fatalf("state changed on error %v", err)
		}
	})
}
