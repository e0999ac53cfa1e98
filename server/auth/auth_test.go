package auth

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

func mustGrants(t *testing.T, ss ...string) []Grant {
	t.Helper()
	var gs []Grant
	for _, s := range ss {
		g, err := ParseGrant(s)
		if err != nil {
			t.Fatal(err)
		}
		gs = append(gs, g)
	}
	return gs
}

func TestNewToken(t *testing.T) {
	re := regexp.MustCompile(`^tlog_[A-Za-z0-9_-]{43}$`)
	a, b := NewToken(), NewToken()
	if !re.MatchString(a) || a == b {
		t.Errorf("NewToken: %q, %q", a, b)
	}
	if h := HashToken("test"); h != "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08" {
		t.Errorf("HashToken(test) = %s", h)
	}
}

func TestParseGrant(t *testing.T) {
	for _, ok := range []string{"read:A", "append:*", "admin:payments.eu-1"} {
		g, err := ParseGrant(ok)
		if err != nil || g.String() != ok {
			t.Errorf("ParseGrant(%q) = %v, %v", ok, g, err)
		}
	}
	for _, bad := range []string{"", "read", "read:", "write:A", "Read:A", ":A", "read:a:b"} {
		if _, err := ParseGrant(bad); err == nil {
			t.Errorf("ParseGrant(%q): no error", bad)
		}
	}
}

func TestParseTokens(t *testing.T) {
	tok := NewToken()
	file := "# comment\n\n" + TokenLine("ci", tok, mustGrants(t, "append:A", "read:*")) + "\n  cert-only  -  admin:B  \n"
	ts, err := ParseTokens(strings.NewReader(file))
	if err != nil {
		t.Fatal(err)
	}
	if ts.Len() != 2 {
		t.Fatalf("Len = %d", ts.Len())
	}
	id := ts.lookupToken(tok)
	if id == nil || id.Name != "ci" || !id.Can(Append, "A") || id.Can(Append, "B") || !id.Can(Read, "B") {
		t.Errorf("lookupToken = %+v", id)
	}
	if ts.lookupToken(tok+"x") != nil || ts.lookupToken("") != nil {
		t.Error("lookupToken found a wrong token")
	}
	// "-" lines have no token: not even the all-zero hash matches.
	if ts.lookupName("cert-only") == nil {
		t.Error("lookupName(cert-only) = nil")
	}

	secret := "tlog_THIS-IS-A-SECRET-PASTED-BY-MISTAKE"
	for _, bad := range []string{
		"ci " + secret + " append:A", // a token instead of its hash
		"ci sha256:abcd append:A",
		"ci sha256:" + strings.Repeat("g", 64) + " append:A",
		"ci " + HashToken(tok),
		"ci " + HashToken(tok) + " write:A",
		"ci " + HashToken(tok) + " append:A\nci " + HashToken(tok+"2") + " append:A", // name twice
		"a " + HashToken(tok) + " append:A\nb " + HashToken(tok) + " append:A",       // token twice
	} {
		_, err := ParseTokens(strings.NewReader(bad))
		if err == nil {
			t.Errorf("ParseTokens(%q): no error", bad)
			continue
		}
		if strings.Contains(err.Error(), secret) || strings.Contains(err.Error(), HashToken(tok)[7:]) {
			t.Errorf("ParseTokens error %q quotes the secret column", err)
		}
		if !strings.Contains(err.Error(), "line ") {
			t.Errorf("ParseTokens error %q does not name the line", err)
		}
	}
}

func TestGrants(t *testing.T) {
	id := &Identity{Name: "x", Grants: mustGrants(t, "admin:A", "read:B", "append:*")}
	for _, c := range []struct {
		scope Scope
		log   string
		want  bool
	}{
		{Admin, "A", true}, {Read, "A", true}, {Append, "A", true},
		{Read, "B", true}, {Admin, "B", false}, {Append, "B", true},
		{Read, "C", false}, {Append, "C", true},
		{Admin, AllLogs, false}, {Append, AllLogs, true}, {Read, AllLogs, false},
	} {
		if got := id.Can(c.scope, c.log); got != c.want {
			t.Errorf("Can(%s, %s) = %v", c.scope, c.log, got)
		}
	}
	var anon *Identity
	if anon.Can(Read, "A") {
		t.Error("nil identity can read")
	}
}

func writeTokens(t *testing.T, path string, lines ...string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestAuthorizer(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "tokens")
	tok1, tok2 := NewToken(), NewToken()
	writeTokens(t, path, TokenLine("one", tok1, mustGrants(t, "append:A")), "spiffe://x/y - read:A")
	a, err := New(Config{TokensFile: path})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name  string
		authz []string
		cert  *x509.Certificate
		want  string // identity name, "" anonymous, "!" ErrUnauthenticated
	}{
		{"nothing", nil, nil, ""},
		{"token", []string{"Bearer " + tok1}, nil, "one"},
		{"lower-case scheme", []string{"bearer " + tok1}, nil, "one"},
		{"unknown token", []string{"Bearer " + tok2}, nil, "!"},
		{"basic", []string{"Basic b25lOnR3bw=="}, nil, "!"},
		{"no token", []string{"Bearer "}, nil, "!"},
		{"two headers", []string{"Bearer " + tok1, "Bearer " + tok1}, nil, "!"},
		{"cert URI", nil, &x509.Certificate{URIs: []*url.URL{{Scheme: "spiffe", Host: "x", Path: "/y"}}}, "spiffe://x/y"},
		{"cert CN unknown", nil, &x509.Certificate{Subject: pkix.Name{CommonName: "z"}}, ""},
		{"cert CN naming a token line", nil, &x509.Certificate{Subject: pkix.Name{CommonName: "one"}}, "one"},
		{"token beats cert", []string{"Bearer " + tok1}, &x509.Certificate{URIs: []*url.URL{{Scheme: "spiffe", Host: "x", Path: "/y"}}}, "one"},
	} {
		id, err := a.Authenticate(c.authz, c.cert)
		got := ""
		switch {
		case errors.Is(err, ErrUnauthenticated):
			got = "!"
		case err != nil:
			t.Errorf("%s: %v", c.name, err)
		case id != nil:
			got = id.Name
		}
		if got != c.want {
			t.Errorf("%s: identity %q, want %q (err %v)", c.name, got, c.want, err)
		}
		if err != nil && (strings.Contains(err.Error(), tok1) || strings.Contains(err.Error(), tok2)) {
			t.Errorf("%s: the error %q holds the token", c.name, err)
		}
	}

	one, _ := a.Authenticate([]string{"Bearer " + tok1}, nil)
	if err := a.Authorize(nil, Append, "A"); !errors.Is(err, ErrUnauthenticated) {
		t.Errorf("anonymous append: %v", err)
	}
	if err := a.Authorize(one, Append, "B"); !errors.Is(err, ErrPermissionDenied) || !strings.Contains(err.Error(), `one has no append grant on log "B"`) {
		t.Errorf("append to B: %v", err)
	}
	if err := a.Authorize(one, Read, "A"); !errors.Is(err, ErrPermissionDenied) {
		t.Errorf("private read: %v", err)
	}
	if err := a.Authorize(one, Admin, AllLogs); !errors.Is(err, ErrPermissionDenied) || !strings.Contains(err.Error(), "every log") {
		t.Errorf("create: %v", err)
	}
	keep, err := a.ListFilter(one)
	if err != nil || keep == nil || keep("A") || keep("B") {
		t.Errorf("ListFilter(one) = %v, %v", keep != nil, err)
	}
	if _, err := a.ListFilter(nil); !errors.Is(err, ErrUnauthenticated) {
		t.Errorf("anonymous ListFilter: %v", err)
	}

	// Reload: new tokens take effect; a broken file leaves them in force.
	writeTokens(t, path, TokenLine("two", tok2, mustGrants(t, "admin:*")))
	if err := a.Reload(); err != nil {
		t.Fatal(err)
	}
	if id, _ := a.Authenticate([]string{"Bearer " + tok2}, nil); id == nil || id.Name != "two" {
		t.Errorf("after reload: %v", id)
	}
	if _, err := a.Authenticate([]string{"Bearer " + tok1}, nil); !errors.Is(err, ErrUnauthenticated) {
		t.Errorf("removed token after reload: %v", err)
	}
	writeTokens(t, path, "two "+tok2+" admin:*") // a token pasted instead of its hash
	if err := a.Reload(); err == nil || strings.Contains(err.Error(), tok2) {
		t.Errorf("Reload of a broken file: %v", err)
	}
	if id, _ := a.Authenticate([]string{"Bearer " + tok2}, nil); id == nil || id.Name != "two" {
		t.Errorf("after a failed reload: %v", id)
	}
}

func TestDisabled(t *testing.T) {
	a, err := New(Config{PublicReads: true})
	if err != nil || a != nil {
		t.Fatalf("New without tokens = %v, %v; want nil, nil", a, err)
	}
	if a.Enabled() || !a.PublicReads() {
		t.Error("nil Authorizer: enabled or private")
	}
	if id, err := a.Authenticate([]string{"Bearer whatever"}, nil); id != nil || err != nil {
		t.Errorf("nil Authenticate = %v, %v", id, err)
	}
	if err := a.Authorize(nil, Admin, AllLogs); err != nil {
		t.Errorf("nil Authorize: %v", err)
	}
	if _, err := New(Config{PublicReads: false}); err == nil {
		t.Error("private reads without tokens: no error")
	}
	if _, err := New(Config{TokensFile: filepath.Join(t.TempDir(), "missing"), PublicReads: true}); err == nil {
		t.Error("missing tokens file: no error")
	}
}
