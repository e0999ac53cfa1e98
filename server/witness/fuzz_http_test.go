package witness

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

// FuzzHTTP sends arbitrary requests to the witness's HTTP handler (under a
// prefix) that has cosigned size 5 of a log: no panic, only the statuses of
// c2sp.org/tlog-witness (and net/http's 405 and clean-path redirects), an
// error says why, and only a 200 to an add-checkpoint changes the state.
func FuzzHTTP(f *testing.F) {
	l := newFakeLog(f, "example.com/fuzz")
	l.grow(12, "leaf")
	state := newBoltState(f)
	c, _ := newTestCosigner(f, "witness.example.com/w1")
	// No Logger: testLogger's writer calls Helper, which panics on an F
	// inside the fuzz target.
	w, err := New(Config{Cosigner: c, Logs: []Log{l.config()}, State: state, Prefix: "/w"})
	if err != nil {
		f.Fatal(err)
	}
	if rec := serve(w, "POST", "/w/add-checkpoint", l.request(0, 5)); rec == nil || rec.Code != http.StatusOK {
		f.Fatalf("cosigning size 5: %v", rec)
	}
	sum := sha256.Sum256([]byte(l.origin))
	monitor := "/w/" + hex.EncodeToString(sum[:]) + "/checkpoint"
	for _, s := range []struct {
		method, target string
		body           []byte
	}{
		{"POST", "/w/add-checkpoint", l.request(5, 12)},
		{"POST", "/w/add-checkpoint", l.request(0, 12)},
		{"POST", "/w/add-checkpoint", l.request(5, 5)},
		{"GET", "/w/add-checkpoint", nil},
		{"PUT", "/w/add-checkpoint", l.request(5, 6)},
		{"POST", "/add-checkpoint", l.request(5, 6)},
		{"POST", "/w//add-checkpoint", l.request(5, 6)},
		{"GET", monitor, nil},
		{"HEAD", monitor, nil},
		{"GET", strings.ToUpper(monitor), nil},
		{"GET", "/w/00/checkpoint", nil},
		{"DELETE", monitor, nil},
	} {
		f.Add(s.method, s.target, s.body)
	}
	documented := map[int]bool{200: true, 307: true, 400: true, 403: true, 404: true, 405: true, 409: true, 413: true, 422: true}
	f.Fuzz(func(t *testing.T, method, target string, body []byte) {
		before := mustGet(t, state, l.origin)
		rec := serve(w, method, target, body)
		if rec == nil {
			return
		}
		after := mustGet(t, state, l.origin)
		if !documented[rec.Code] {
			t.Fatalf("%s %q: undocumented status %d: %q", method, target, rec.Code, rec.Body.Bytes())
		}
		if rec.Code >= 400 && len(bytes.TrimSpace(rec.Body.Bytes())) == 0 && target != "*" {
			t.Fatalf("%s %q: %d without a reason", method, target, rec.Code)
		}
		if rec.Code == http.StatusOK && method == "POST" {
			if after.Size < before.Size {
				t.Fatalf("state went back from %d to %d", before.Size, after.Size)
			}
			return
		}
		if !equalRecords(before, after) {
			t.Fatalf("%s %q: %d, and the state changed", method, target, rec.Code)
		}
	})
}

// serve hands w the request that net/http's server would build from this
// request line and body, or returns nil if the server would refuse the
// request line itself.
func serve(h http.Handler, method, target string, body []byte) *httptest.ResponseRecorder {
	if method == "" || strings.ContainsAny(target, " \r\n") {
		return nil
	}
	u, err := url.ParseRequestURI(target)
	if err != nil {
		return nil
	}
	req, err := http.NewRequest(method, "http://witness.test/", bytes.NewReader(body))
	if err != nil {
		return nil
	}
	req.URL, req.RequestURI = u, target
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}
