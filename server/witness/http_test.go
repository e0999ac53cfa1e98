package witness

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func newBoltState(t testing.TB) State {
	s, err := OpenBoltState(filepath.Join(t.TempDir(), "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestClock(t *testing.T) {
	l := newFakeLog(t, "example.com/clock")
	l.grow(10, "leaf")
	c, _ := newTestCosigner(t, "witness.example.com/w1")
	state := newBoltState(t)
	var now time.Time
	w, err := New(Config{Cosigner: c, Logs: []Log{l.config()}, State: state, Now: func() time.Time { return now }, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	for _, bad := range []time.Time{time.Unix(0, 0), time.Unix(-5, 0), time.Unix(0, 999)} {
		now = bad
		if code, _, body := post(t, w, l.request(0, 3)); code != http.StatusInternalServerError || strings.Contains(body, "—") {
			t.Fatalf("clock at %v: %d %q, want 500", bad, code, body)
		}
	}
	now = time.Unix(1000, 0)
	if code, _, body := post(t, w, l.request(0, 3)); code != 200 {
		t.Fatalf("%d %q", code, body)
	}
	// A clock that went back must not sign an older time than the last
	// cosignature, whose statement it could contradict.
	now = time.Unix(999, 0)
	if code, _, body := post(t, w, l.request(3, 5)); code != http.StatusInternalServerError {
		t.Fatalf("clock went back: %d %q, want 500", code, body)
	}
	if r := mustGet(t, state, l.origin); r.Size != 3 || r.Time.Unix() != 1000 {
		t.Fatalf("state %d at %v", r.Size, r.Time)
	}
	now = time.Unix(1000, 0)
	if code, _, body := post(t, w, l.request(3, 5)); code != 200 {
		t.Fatalf("%d %q", code, body)
	}
}

func TestHTTP(t *testing.T) {
	l := newFakeLog(t, "example.com/http")
	l.grow(10, "leaf")
	c, _ := newTestCosigner(t, "witness.example.com/w1")
	w, err := New(Config{Cosigner: c, Logs: []Log{l.config()}, State: newBoltState(t), Prefix: "/w/v1", MaxBodySize: 4096, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(w)
	defer srv.Close()

	do := func(method, path string, body []byte) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(method, srv.URL+path, bytes.NewReader(body))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var b bytes.Buffer
		b.ReadFrom(resp.Body)
		return resp.StatusCode, b.String()
	}
	if code, _ := do("POST", "/add-checkpoint", l.request(0, 3)); code != 404 {
		t.Errorf("without prefix: %d, want 404", code)
	}
	if code, _ := do("GET", "/w/v1/add-checkpoint", nil); code != 405 {
		t.Errorf("GET add-checkpoint: %d, want 405", code)
	}
	big := append(l.request(0, 3), bytes.Repeat([]byte("x"), 4096)...)
	if code, _ := do("POST", "/w/v1/add-checkpoint", big); code != http.StatusRequestEntityTooLarge {
		t.Errorf("large body: %d, want 413", code)
	}
	if code, body := do("POST", "/w/v1/add-checkpoint", l.request(0, 3)); code != 200 || !strings.HasPrefix(body, "— witness.example.com/w1 ") {
		t.Errorf("add-checkpoint: %d %q", code, body)
	}
	code, body := do("GET", "/w/v1/"+originHash(l.origin)+"/checkpoint", nil)
	if code != 200 || !strings.HasPrefix(body, string(l.checkpoint(3))) {
		t.Errorf("monitoring endpoint: %d %q", code, body)
	}
	if code, _ := do("GET", "/w/v1/"+strings.ToUpper(originHash(l.origin))+"/checkpoint", nil); code != 404 {
		t.Errorf("upper-case origin hash: %d, want 404 (the spec says lowercase)", code)
	}
	if code, _ := do("POST", "/w/v1/"+originHash(l.origin)+"/checkpoint", nil); code != 405 {
		t.Errorf("POST checkpoint: %d, want 405", code)
	}
}

func TestNewConfig(t *testing.T) {
	c, _ := newTestCosigner(t, "witness.example.com/w1")
	l := newFakeLog(t, "example.com/log")
	state := newBoltState(t)
	_, vkey2 := otherKey(t, "example.com/log")
	for _, tc := range []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"ok", Config{Cosigner: c, State: state, Logs: []Log{l.config()}}, true},
		{"no logs", Config{Cosigner: c, State: state}, true},
		{"same key twice", Config{Cosigner: c, State: state, Logs: []Log{l.config(), l.config()}}, true},
		{"two keys", Config{Cosigner: c, State: state, Logs: []Log{l.config(), {Origin: l.origin, VerifierKeys: []string{vkey2}}}}, true},
		{"prefix", Config{Cosigner: c, State: state, Prefix: "/a/b"}, true},
		{"no cosigner", Config{State: state}, false},
		{"no state", Config{Cosigner: c}, false},
		{"prefix without slash", Config{Cosigner: c, State: state, Prefix: "a"}, false},
		{"prefix with trailing slash", Config{Cosigner: c, State: state, Prefix: "/a/"}, false},
		{"bad vkey", Config{Cosigner: c, State: state, Logs: []Log{{Origin: "o", VerifierKeys: []string{"nope"}}}}, false},
		{"cosignature vkey for a log", Config{Cosigner: c, State: state, Logs: []Log{{Origin: "o", VerifierKeys: []string{c.VerifierKey()}}}}, false},
		{"no vkey", Config{Cosigner: c, State: state, Logs: []Log{{Origin: "o"}}}, false},
		{"empty origin", Config{Cosigner: c, State: state, Logs: []Log{{Origin: "", VerifierKeys: []string{l.vkey}}}}, false},
		{"origin with newline", Config{Cosigner: c, State: state, Logs: []Log{{Origin: "a\nb", VerifierKeys: []string{l.vkey}}}}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.cfg)
			if (err == nil) != tc.ok {
				t.Fatalf("New: %v, want ok=%v", err, tc.ok)
			}
		})
	}
}
