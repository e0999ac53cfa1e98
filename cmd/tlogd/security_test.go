package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tlog-dev/tlog/internal/pgtest"
	"github.com/tlog-dev/tlog/internal/testcert"
	"github.com/tlog-dev/tlog/server/auth"
)

func TestTokenNew(t *testing.T) {
	var out, errb bytes.Buffer
	if code := tokenMain([]string{"new", "ci-writer", "append:payments", "read:*"}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	token := strings.TrimSpace(out.String())
	if !regexp.MustCompile(`^tlog_[A-Za-z0-9_-]{43}$`).MatchString(token) {
		t.Fatalf("token %q", token)
	}
	line := errb.String()
	if strings.Contains(line, token) {
		t.Fatal("the tokens-file line holds the token itself")
	}
	if want := "ci-writer " + auth.HashToken(token) + " append:payments read:*\n"; line != want {
		t.Errorf("line %q, want %q", line, want)
	}
	ts, err := auth.ParseTokens(strings.NewReader(line))
	if err != nil || ts.Len() != 1 {
		t.Fatalf("ParseTokens(line) = %v, %v", ts, err)
	}
	for _, bad := range [][]string{nil, {"new"}, {"new", "x"}, {"new", "x", "write:A"}, {"new", "#x", "read:A"}, {"old", "x", "read:A"}} {
		out.Reset()
		errb.Reset()
		if code := tokenMain(bad, &out, &errb); code != 2 || out.Len() != 0 {
			t.Errorf("tlogd token %q: exit %d, stdout %q", bad, code, out.String())
		}
	}
}

// TestOpenStoreRedacts checks that a database URL's password never appears
// in the error of a failed connection.
func TestOpenStoreRedacts(t *testing.T) {
	const password = "hunter2-Sup3rSecret"
	logs := &syncBuffer{}
	logger := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	for _, u := range []string{
		"postgres://tlog:" + password + "@127.0.0.1:1/tlog?sslmode=disable&connect_timeout=2",
		"postgres://tlog:" + password + "@127.0.0.1:1/tlog?sslmode=bogus",
		"host=127.0.0.1 port=1 user=tlog password=" + password + " connect_timeout=2",
		"postgres://tlog:" + password + "@[::1/tlog", // does not parse
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err := openStore(ctx, u, t.TempDir(), 0, logger)
		cancel()
		if err == nil {
			t.Fatalf("openStore(%s): no error", redactTest(u, password))
		}
		if strings.Contains(err.Error(), password) || strings.Contains(err.Error(), url.QueryEscape(password)) {
			t.Errorf("openStore error shows the password: %s", redactTest(err.Error(), password))
		}
		t.Logf("openStore: %v", err)
	}
	if strings.Contains(logs.String(), password) {
		t.Error("the logs show the password")
	}
}

func redactTest(s, secret string) string { return strings.ReplaceAll(s, secret, "<PASSWORD>") }

var (
	secCtlOnce sync.Once
	secCtlPath string
	secCtlErr  error
)

// secCtl returns the path of a tlogctl binary built for these tests.
func secCtl(t testing.TB) string {
	t.Helper()
	dir := filepath.Dir(binary(t)) // removed by TestMain
	secCtlOnce.Do(func() {
		secCtlPath = filepath.Join(dir, "tlogctl-security")
		if out, err := exec.Command("go", "build", "-o", secCtlPath, "../tlogctl").CombinedOutput(); err != nil {
			secCtlErr = fmt.Errorf("go build tlogctl: %v\n%s", err, out)
		}
	})
	if secCtlErr != nil {
		t.Fatal(secCtlErr)
	}
	return secCtlPath
}

// secRun runs a binary with the clean environment and env, and returns its
// output and exit code.
func secRun(t testing.TB, env []string, bin string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(cleanEnv(), env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		code = exit.ExitCode()
	case err != nil:
		t.Fatalf("%s: %v", filepath.Base(bin), err)
	}
	return out.String(), errb.String(), code
}

// TestSecurityEndToEnd runs the real tlogd with a tokens file made by
// `tlogd token new`, TLS, private reads and a database URL with a
// password, drives it with the real tlogctl, reloads the tokens on SIGHUP,
// and scans every output for the secrets.
func TestSecurityEndToEnd(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca := testcert.NewCA(t, dir, "test")
	srv := ca.Server(t, "server")

	newToken := func(name string, grants ...string) (token, line string) {
		out, errb, code := secRun(t, nil, binary(t), append([]string{"token", "new", name}, grants...)...)
		if code != 0 {
			t.Fatalf("tlogd token new: exit %d: %s", code, errb)
		}
		return strings.TrimSpace(out), errb
	}
	writer, writerLine := newToken("writer", "append:default", "read:default")
	admin, adminLine := newToken("ops", "admin:*")
	late, lateLine := newToken("late", "read:*")
	tokensFile := filepath.Join(dir, "tokens")
	if err := os.WriteFile(tokensFile, []byte(writerLine+adminLine), 0o600); err != nil {
		t.Fatal(err)
	}

	// PostgreSQL with a password in the URL (the test server trusts
	// loopback, so it is never checked, but tlogd must never show it).
	const password = "Db-Pa55word-Never-Logged"
	u, err := url.Parse(pgtest.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.UserPassword(u.User.Username(), password)
	dataDir := filepath.Join(dir, "data")
	d := launch(t, options{
		args: []string{"--data-dir", dataDir, "--database-url", u.String(), "--log-level", "debug",
			"--tokens-file", tokensFile, "--public-reads=false", "--tls-cert", srv.CertFile, "--tls-key", srv.KeyFile},
	})
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool()}}}
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := hc.Get("https://" + d.httpAddr + "/readyz")
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if !d.running() || time.Now().After(deadline) {
			t.Fatalf("tlogd not ready: %v\n%s", err, d.stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	_, vkey, ok := d.printedKey()
	if !ok {
		t.Fatalf("tlogd printed no verifier key:\n%s", d.stdout.String())
	}

	ctl := func(env []string, args ...string) (string, string, int) {
		t.Helper()
		return secRun(t, env, secCtl(t), append([]string{"--addr", d.grpcAddr, "--tls-ca", ca.CertFile, "--vkey", vkey}, args...)...)
	}
	expect := func(what string, wantCode int, wantErr string, env []string, args ...string) string {
		t.Helper()
		out, errb, code := ctl(env, args...)
		if code != wantCode || !strings.Contains(errb, wantErr) {
			t.Errorf("%s: exit %d, stderr %q; want exit %d with %q", what, code, errb, wantCode, wantErr)
		}
		return out
	}
	expect("append with --token", 0, "", nil, "--token", writer, "append", "first event")
	expect("append with TLOG_TOKEN", 0, "", []string{"TLOG_TOKEN=" + writer}, "append", "second event")
	tokenFile := filepath.Join(dir, "writer.token")
	if err := os.WriteFile(tokenFile, []byte(writer+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	expect("append with --token @FILE", 0, "", nil, "--token", "@"+tokenFile, "append", "from a file")
	expect("append without a token", 1, "Unauthenticated", nil, "append", "third event")
	expect("append with an unknown token", 1, "unknown bearer token", nil, "--token", late, "append", "third event")
	expect("checkpoint without a token", 1, "Unauthenticated", nil, "checkpoint")
	expect("create-log as the writer", 1, "PermissionDenied", nil, "--token", writer, "create-log", "audit")
	expect("create-log as admin", 0, "", nil, "--token", admin, "create-log", "audit")
	expect("append to another log as the writer", 1, "PermissionDenied", nil, "--token", writer, "--log", "audit", "append", "x")
	if out := expect("logs as the writer", 0, "", nil, "--token", writer, "--json", "logs"); strings.Contains(out, `"audit"`) || !strings.Contains(out, `"default"`) {
		t.Errorf("logs as the writer lists %s; want default only", out)
	}
	expect("plaintext token to a remote address", 1, "refusing to send --token in plaintext", nil,
		"--tls-ca=", "--addr", "192.0.2.1:7600", "--token", writer, "checkpoint")
	// curl-style HTTP with a bearer token.
	req, _ := http.NewRequest("POST", "https://"+d.httpAddr+"/logs/default/add", strings.NewReader("over HTTPS"))
	req.Header.Set("Authorization", "Bearer "+writer)
	if resp, err := hc.Do(req); err != nil || resp.StatusCode != http.StatusOK {
		t.Errorf("POST add over HTTPS: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}

	// A new line in the tokens file takes effect on SIGHUP.
	f, err := os.OpenFile(tokensFile, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(lateLine)
	f.Close()
	if err := d.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	for i := 0; ; i++ {
		_, errb, code := ctl(nil, "--token", late, "checkpoint")
		if code == 0 {
			break
		}
		if i == 50 {
			t.Fatalf("the token added before SIGHUP still fails: %s", errb)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !d.running() {
		t.Fatal("tlogd exited on SIGHUP")
	}
	if out := expect("get as the late reader", 0, "", nil, "--token", late, "get", "0", "4"); strings.Count(out, "\n") < 4 {
		t.Errorf("get 0 4: %q", out)
	}

	d.cmd.Process.Signal(syscall.SIGTERM)
	d.wait(30 * time.Second)

	// The secrets: tokens, the database password, the signing key.
	key, err := os.ReadFile(filepath.Join(dataDir, "keys", "default.key"))
	if err != nil {
		t.Fatal(err)
	}
	skey := strings.TrimSpace(string(key))
	secrets := map[string]string{
		"writer token": writer, "admin token": admin, "late token": late,
		"database password": password, "signing key": skey, "signing key bytes": strings.SplitN(skey, "+", 5)[4],
		"TLS key": strings.TrimSpace(string(srv.KeyPEM)),
	}
	output := d.stdout.String() + d.stderr.String()
	for what, s := range secrets {
		if strings.Contains(output, s) {
			t.Errorf("the %s appears in tlogd's output", what)
		}
	}
	if !strings.Contains(output, "caller=writer") {
		t.Error("tlogd's logs do not name the refused caller")
	}
}

// TestWarnOpen checks the warning when authentication is off on a
// non-loopback address, and the refusal of private reads without tokens.
func TestWarnOpen(t *testing.T) {
	t.Parallel()
	d := launch(t, options{args: []string{"--data-dir", t.TempDir(), "--public-reads=false"}})
	if code := d.wait(30 * time.Second); code == 0 || !strings.Contains(d.stderr.String(), "private reads need a tokens file") {
		t.Errorf("--public-reads=false without --tokens-file: exit %d, %s", code, d.stderr.String())
	}

	d = launch(t, options{args: []string{"--data-dir", t.TempDir()}})
	if err := d.waitReady(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(d.stderr.String(), "AUTHENTICATION IS OFF") {
		t.Errorf("warning on loopback:\n%s", d.stderr.String())
	}

	// HTTP on every address: the flag wins over TLOG_HTTP_ADDR.
	d = launch(t, options{args: []string{"--data-dir", t.TempDir(), "--http-addr", "0.0.0.0:0"}, addrsByEnv: true})
	for deadline := time.Now().Add(30 * time.Second); !strings.Contains(d.stderr.String(), "tlogd serving"); time.Sleep(20 * time.Millisecond) {
		if !d.running() || time.Now().After(deadline) {
			t.Fatalf("tlogd did not start:\n%s", d.stderr.String())
		}
	}
	if !strings.Contains(d.stderr.String(), "AUTHENTICATION IS OFF") {
		t.Errorf("no warning on 0.0.0.0:\n%s", d.stderr.String())
	}
}
