package main

// The witnessing test: tlogd with three tlog-witness processes over real
// HTTP on loopback and a 2-of-3 policy given with --witness-policy. What
// tlogd serves is checked with verifiers that share no code with either
// side: transparency-dev/formats' cosignature/v1 verifiers and
// golang.org/x/mod/sumdb/note.

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	fmtnote "github.com/transparency-dev/formats/note"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tlog-dev/tlog/pkg/checkpoint"
	"github.com/tlog-dev/tlog/pkg/receipt"
	tlogv1 "github.com/tlog-dev/tlog/proto/tlog/v1"
)

var (
	witnessBuildOnce sync.Once
	witnessBuildPath string
	witnessBuildErr  error
)

// witnessBinary returns the path of the tlog-witness binary, built on first
// use next to the tlogd binary.
func witnessBinary(t testing.TB) string {
	t.Helper()
	binary(t) // makes buildDir
	witnessBuildOnce.Do(func() {
		witnessBuildPath = filepath.Join(buildDir, "tlog-witness")
		out, err := exec.Command("go", "build", "-o", witnessBuildPath, "../tlog-witness").CombinedOutput()
		if err != nil {
			witnessBuildErr = fmt.Errorf("go build ../tlog-witness: %v\n%s", err, out)
		}
	})
	if witnessBuildErr != nil {
		t.Fatal(witnessBuildErr)
	}
	return witnessBuildPath
}

// witnessProc is one running tlog-witness.
type witnessProc struct {
	t      testing.TB
	name   string // key name
	url    string // submission prefix
	vkey   string // cosignature verifier key, as the witness prints it
	cmd    *exec.Cmd
	stdout syncBuffer
	stderr syncBuffer
	exited chan struct{}
}

var witnessVKeyRE = regexp.MustCompile(`verifier key: (\S+)`)

// startWitness starts a tlog-witness that witnesses the log origin with key
// logVKey, and waits until it prints its key and accepts connections.
func startWitness(t testing.TB, name, origin, logVKey string) *witnessProc {
	t.Helper()
	dir := t.TempDir()
	addr := freeAddr(t)
	w := &witnessProc{t: t, name: name, url: "http://" + addr, exited: make(chan struct{})}
	w.cmd = exec.Command(witnessBinary(t),
		"--listen", addr, "--name", name,
		"--key-file", filepath.Join(dir, "witness.key"), "--state", filepath.Join(dir, "state.db"),
		"--log", origin+"="+logVKey)
	w.cmd.Env = cleanEnv()
	w.cmd.Stdout, w.cmd.Stderr = &w.stdout, &w.stderr
	if err := w.cmd.Start(); err != nil {
		t.Fatalf("starting tlog-witness: %v", err)
	}
	go func() { w.cmd.Wait(); close(w.exited) }()
	t.Cleanup(func() {
		if w.running() {
			w.cmd.Process.Kill()
			<-w.exited
		}
		if t.Failed() {
			t.Logf("witness %s stderr:\n%s", name, w.stderr.String())
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		if m := witnessVKeyRE.FindStringSubmatch(w.stdout.String()); m != nil {
			if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
				c.Close()
				w.vkey = m[1]
				return w
			}
		}
		if !w.running() || time.Now().After(deadline) {
			t.Fatalf("tlog-witness %s did not start:\n%s%s", name, w.stdout.String(), w.stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (w *witnessProc) running() bool {
	select {
	case <-w.exited:
		return false
	default:
		return true
	}
}

func (w *witnessProc) kill() {
	w.cmd.Process.Kill()
	<-w.exited
}

// verifier is the witness's cosignature verifier, built by
// transparency-dev/formats from the key the witness printed.
func (w *witnessProc) verifier(t testing.TB) note.Verifier {
	t.Helper()
	v, err := fmtnote.NewVerifierForCosignatureV1(w.vkey)
	if err != nil {
		t.Fatalf("witness key %q: %v", w.vkey, err)
	}
	return v
}

// cosigners opens a cosigned checkpoint with golang.org/x/mod/sumdb/note,
// the log's key and the witnesses' cosignature verifiers, and returns its
// tree head and the indices of the witnesses whose cosignatures verified.
func cosigners(t testing.TB, key *logKey, ws []*witnessProc, signed []byte) (treeHead, map[int]bool) {
	t.Helper()
	h, err := key.verify(signed)
	if err != nil {
		t.Fatal(err)
	}
	vs := []note.Verifier{key.verifier}
	for _, w := range ws {
		vs = append(vs, w.verifier(t))
	}
	n, err := note.Open(signed, note.VerifierList(vs...))
	if err != nil {
		t.Fatalf("cosigned checkpoint does not open: %v\n%s", err, signed)
	}
	got := map[int]bool{}
	for _, s := range n.Sigs {
		for i, w := range ws {
			if s.Name == vs[i+1].Name() && s.Hash == vs[i+1].KeyHash() {
				got[i] = true
				ts, err := fmtnote.CoSigV1Timestamp(s)
				if err != nil || time.Since(ts) > 5*time.Minute || time.Until(ts) > time.Minute {
					t.Errorf("cosignature by %s: timestamp %v, %v", w.name, ts, err)
				}
			}
		}
	}
	// pkg/checkpoint agrees.
	lv, _ := checkpoint.NewVerifier(key.vkey)
	if _, _, err := checkpoint.Open(signed, lv, vs[1:]...); err != nil {
		t.Errorf("pkg/checkpoint rejects the cosigned checkpoint: %v", err)
	}
	return h, got
}

// waitWitnessed polls GetCheckpoint with require_witness_policy until it
// returns a checkpoint of at least size.
func (d *daemon) waitWitnessed(t testing.TB, size uint64, within time.Duration) []byte {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		resp, err := d.log.GetCheckpoint(context.Background(), &tlogv1.GetCheckpointRequest{Log: logName, RequireWitnessPolicy: true})
		switch {
		case err == nil && resp.GetTreeSize() >= size:
			return resp.GetCheckpoint()
		case err != nil && status.Code(err) != codes.NotFound:
			t.Fatalf("GetCheckpoint(require_witness_policy): %v", err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("no checkpoint of size >= %d satisfies the policy after %v (last: %v, %v)\nstderr:\n%s", size, within, resp, err, d.stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestWitnesses(t *testing.T) {
	eachBackend(t, func(t *testing.T, st store) {
		ctx := context.Background()
		const origin = "example.com/witnessed"

		// First start: create the log, learn its key.
		d := start(t, options{args: append(st.args(), "--origin", origin)})
		key := d.fetchLogKey(t)
		d.cmd.Process.Signal(syscall.SIGTERM)
		if code := d.wait(30 * time.Second); code != 0 {
			t.Fatalf("tlogd exited with %d after SIGTERM", code)
		}

		ws := []*witnessProc{
			startWitness(t, "witness.example/w0", origin, key.vkey),
			startWitness(t, "witness.example/w1", origin, key.vkey),
			startWitness(t, "witness.example/w2", origin, key.vkey),
		}
		var pol strings.Builder
		fmt.Fprintf(&pol, "# 2 of 3 witnesses\nlog %s\n\n", key.vkey)
		for i, w := range ws {
			fmt.Fprintf(&pol, "witness W%d %s %s\n", i, w.vkey, w.url)
		}
		pol.WriteString("group all-witnesses 2 W0 W1 W2\nquorum all-witnesses\n")
		policyFile := filepath.Join(t.TempDir(), "witnesses.policy")
		if err := os.WriteFile(policyFile, []byte(pol.String()), 0o644); err != nil {
			t.Fatal(err)
		}
		d = start(t, options{args: append(st.args(), "--witness-policy", policyFile)})

		// Append, then wait for a 2-of-3 cosigned checkpoint that has
		// every entry.
		var data [][]byte
		for i := range 10 {
			data = append(data, fmt.Appendf(nil, "witnessed entry %d", i))
		}
		if _, err := d.appendGRPC(ctx, data[:5]); err != nil {
			t.Fatal(err)
		}
		if _, err := d.appendHTTP(ctx, data[5]); err != nil {
			t.Fatal(err)
		}
		res, err := d.appendGRPC(ctx, data[6:])
		if err != nil {
			t.Fatal(err)
		}
		latest, err := key.verify(res[0].cp)
		if err != nil {
			t.Fatal(err)
		}
		signed := d.waitWitnessed(t, latest.size, 30*time.Second)
		h, got := cosigners(t, key, ws, signed)
		if h.size != latest.size || len(got) < 2 {
			t.Fatalf("cosigned checkpoint of size %d by witnesses %v, want size %d by 2 or more", h.size, got, latest.size)
		}

		// One witness down: appends go on, and the next checkpoint still
		// gets a 2-of-3 quorum.
		ws[1].kill()
		start := time.Now()
		var more [][]byte
		for i := range 20 {
			b := fmt.Appendf(nil, "entry %d with witness 1 down", i)
			more = append(more, b)
			if _, err := d.appendGRPC(ctx, [][]byte{b}); err != nil {
				t.Fatalf("append with a witness down: %v", err)
			}
		}
		if el := time.Since(start); el > 10*time.Second {
			t.Errorf("20 appends took %v with a witness down", el)
		}
		data = append(data, more...)
		want := uint64(len(data))
		signed = d.waitWitnessed(t, want, 30*time.Second)
		h, got = cosigners(t, key, ws, signed)
		if h.size != want || !got[0] || got[1] || !got[2] {
			t.Fatalf("with W1 down: checkpoint of size %d cosigned by %v, want size %d by W0 and W2", h.size, got, want)
		}

		// The tlog-tiles checkpoint carries the cosignatures too (the log
		// is idle now, so its latest checkpoint is the cosigned one).
		deadline := time.Now().Add(30 * time.Second)
		for {
			body, _, err := d.get(ctx, "/logs/"+logName+"/checkpoint")
			if err != nil {
				t.Fatal(err)
			}
			if h, got := cosigners(t, key, ws, body); h.size == want && len(got) >= 2 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("GET checkpoint never carried 2 cosignatures:\n%s", body)
			}
			time.Sleep(50 * time.Millisecond)
		}

		// A receipt with cosignatures verifies offline with the witness
		// verifiers.
		wvs := []note.Verifier{ws[0].verifier(t), ws[1].verifier(t), ws[2].verifier(t)}
		lv, _ := checkpoint.NewVerifier(key.vkey)
		for _, idx := range []uint64{0, 7, want - 1} {
			rr, err := d.log.GetReceipt(ctx, &tlogv1.GetReceiptRequest{Log: logName, Leaf: &tlogv1.GetReceiptRequest_Index{Index: idx}, RequireWitnessPolicy: true})
			if err != nil {
				t.Fatalf("GetReceipt(%d, require_witness_policy): %v", idx, err)
			}
			r, err := receipt.Parse(rr.GetReceipt())
			if err != nil {
				t.Fatal(err)
			}
			c, n, err := receipt.Verify(r, tlog.RecordHash(data[idx]), lv, wvs...)
			if err != nil {
				t.Fatalf("receipt %d: %v", idx, err)
			}
			if c.Size != want || len(n.Sigs) < 3 {
				t.Errorf("receipt %d: checkpoint of size %d with %d verified signatures, want size %d with 3", idx, c.Size, len(n.Sigs), want)
			}
			if !bytes.Contains(rr.GetReceipt(), []byte("— witness.example/w0 ")) {
				t.Errorf("receipt %d lacks W0's cosignature", idx)
			}
		}
		// The policy is the server's default: the log has none of its own.
		if resp, err := d.admin.GetLog(ctx, &tlogv1.GetLogRequest{Name: logName}); err != nil || resp.GetLog().GetWitnessPolicy() != "" {
			t.Errorf("GetLog: %v, %v; want no own policy", resp, err)
		}
		d.checkLogClean(t, "witness=W1 ") // the one that was killed
	})
}
