package main

// A black-box test of the tlog-witness binary: build it, print a verifier
// key, start it, have a log (built with tlog's pkg/tree and pkg/checkpoint)
// submit a checkpoint over HTTP, check the cosignature with the independent
// transparency-dev/formats verifier, stop it with SIGTERM, restart it.

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	fnote "github.com/transparency-dev/formats/note"
	"golang.org/x/mod/sumdb/note"

	"github.com/tlog-dev/tlog/internal/pgtest"
	"github.com/tlog-dev/tlog/pkg/checkpoint"
	"github.com/tlog-dev/tlog/pkg/tree"
)

func build(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "tlog-witness")
	// go test puts its own go command first on PATH.
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// witnessProcess is a running tlog-witness.
type witnessProcess struct {
	cmd            *exec.Cmd
	stdout, stderr syncBuffer
	url            string
	exited         chan error
}

var addrRE = regexp.MustCompile(`msg="tlog-witness serving" addr=(\S+)`)

func start(t *testing.T, bin string, args ...string) *witnessProcess {
	t.Helper()
	p := &witnessProcess{cmd: exec.Command(bin, args...), exited: make(chan error, 1)}
	p.cmd.Stdout, p.cmd.Stderr = &p.stdout, &p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.exited <- p.cmd.Wait() }()
	t.Cleanup(func() {
		if p.cmd.ProcessState == nil {
			p.cmd.Process.Kill()
			<-p.exited
		}
		t.Logf("tlog-witness stderr:\n%s", p.stderr.String())
	})
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if m := addrRE.FindStringSubmatch(p.stderr.String()); m != nil {
			p.url = m[1]
			return p
		}
		select {
		case err := <-p.exited:
			t.Fatalf("tlog-witness exited: %v\n%s", err, p.stderr.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
	t.Fatalf("tlog-witness did not start:\n%s", p.stderr.String())
	return nil
}

// stop sends SIGTERM and waits for a clean exit.
func (p *witnessProcess) stop(t *testing.T) {
	t.Helper()
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-p.exited:
		if err != nil {
			t.Fatalf("tlog-witness exited with %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("tlog-witness did not stop on SIGTERM")
	}
	if !strings.Contains(p.stderr.String(), `msg=stopped`) {
		t.Fatalf("no graceful shutdown in the log")
	}
}

func post(t *testing.T, url string, body []byte) (int, string, string) {
	t.Helper()
	resp, err := http.Post(url, "text/plain", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header.Get("Content-Type"), string(b)
}

func TestBinary(t *testing.T) {
	bin := build(t)
	dir := t.TempDir()

	// vkey prints the cosignature/v1 verifier key: type 0x04, not the
	// plain Ed25519 vkey of the same key.
	skey, plainVKey, err := note.GenerateKey(rand.Reader, "witness.example.com/given")
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "given.key"), []byte(skey+"\n"), 0o600)
	out, err := exec.Command(bin, "vkey", "--key-file", filepath.Join(dir, "given.key")).Output()
	if err != nil {
		t.Fatal(err)
	}
	if want, _ := fnote.VKeyToCosignatureV1(plainVKey); strings.TrimSpace(string(out)) != want {
		t.Fatalf("vkey printed %q, want %q", out, want)
	}

	// A log, built with tlog's own log side.
	const origin = "example.com/binary-test"
	logSkey, logVKey, err := checkpoint.GenerateKey(origin, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	signer, _ := checkpoint.NewSigner(logSkey)
	leaves := make([]tree.Hash, 17)
	for i := range leaves {
		leaves[i] = tree.LeafHash([]byte(fmt.Sprint("entry ", i)))
	}
	edge, _, err := tree.EmptyEdge().Append(leaves)
	if err != nil {
		t.Fatal(err)
	}
	cp, err := checkpoint.Sign(checkpoint.Checkpoint{Origin: origin, Size: edge.Size(), Hash: edge.Root()}, signer)
	if err != nil {
		t.Fatal(err)
	}
	logsFile := filepath.Join(dir, "logs")
	_, otherVKey, _ := checkpoint.GenerateKey("example.com/other", rand.Reader)
	os.WriteFile(logsFile, []byte("# logs\nexample.com/other "+otherVKey+"\n"), 0o600)

	for _, state := range []string{filepath.Join(dir, "state.db"), pgtest.NewDatabase(t)} {
		name := "bbolt"
		if strings.HasPrefix(state, "postgres") {
			name = "postgres"
		}
		t.Run(name, func(t *testing.T) {
			keyFile := filepath.Join(t.TempDir(), "witness.key")
			args := []string{"--listen", "127.0.0.1:0", "--key-file", keyFile, "--state", state,
				"--log", origin + "=" + logVKey, "--logs-file", logsFile, "--prefix", "/w"}
			p := start(t, bin, append(args, "--name", "witness.example.com/w1")...)
			if fi, err := os.Stat(keyFile); err != nil || fi.Mode().Perm() != 0o600 {
				t.Fatalf("key file not created 0600: %v", err)
			}
			vkey, err := exec.Command(bin, "vkey", "--key-file", keyFile).Output()
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(p.stdout.String(), "verifier key: "+string(vkey)) {
				t.Fatalf("start printed %q, vkey says %q", p.stdout.String(), vkey)
			}

			code, _, resp := post(t, p.url+"/add-checkpoint", append([]byte("old 0\n\n"), cp...))
			if code != 200 {
				t.Fatalf("add-checkpoint: %d %q", code, resp)
			}
			v, err := fnote.NewVerifierForCosignatureV1(strings.TrimSpace(string(vkey)))
			if err != nil {
				t.Fatal(err)
			}
			n, err := note.Open(append(bytes.Clone(cp), resp...), note.VerifierList(v))
			if err != nil {
				t.Fatalf("cosignature does not verify: %v (%q)", err, resp)
			}
			if ts, err := fnote.CoSigV1Timestamp(n.Sigs[0]); err != nil || time.Since(ts).Abs() > time.Minute {
				t.Fatalf("timestamp %v, %v", ts, err)
			}
			p.stop(t)

			// Restart: the key file exists (no --name needed), the state
			// remembers size 17.
			p = start(t, bin, args...)
			code, ctype, resp := post(t, p.url+"/add-checkpoint", append([]byte("old 0\n\n"), cp...))
			if code != 409 || ctype != "text/x.tlog.size" || resp != "17\n" {
				t.Fatalf("after restart: %d %q %q, want 409 \"17\\n\"", code, ctype, resp)
			}
			p.stop(t)
		})
	}
}
