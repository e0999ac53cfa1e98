package witnessing

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	fmtnote "github.com/transparency-dev/formats/note"
	"golang.org/x/mod/sumdb/note"

	"github.com/tlog-dev/tlog/pkg/policy"
	"github.com/tlog-dev/tlog/pkg/tree"
	"github.com/tlog-dev/tlog/storage"
)

// maxResponseSize bounds a witness's answer: many ML-DSA-44 cosignature
// lines (about 3.3 kB each) fit.
const maxResponseSize = 256 << 10

// maxConflicts is how many 409 answers in a row one checkpoint may get
// before the worker gives up on it until the next offer.
const maxConflicts = 2

// worker asks one witness to cosign one log's checkpoints.
type worker struct {
	lw  *logWitnessing
	wit policy.Witness
	url string // the add-checkpoint endpoint
	log *slog.Logger

	wake chan struct{}

	mu    sync.Mutex
	next  *storage.Checkpoint // the offer not yet taken
	st    Stats
	size  uint64 // the size the witness last cosigned, as far as we know
	fails int    // consecutive failures
}

func newWorker(lw *logWitnessing, wt policy.Witness, url string) *worker {
	return &worker{
		lw:   lw,
		wit:  wt,
		url:  url,
		log:  lw.log.With("witness", wt.Name, "url", wt.URL),
		wake: make(chan struct{}, 1),
		st:   Stats{Log: lw.l.Name, Witness: wt.Name, URL: wt.URL, Errors: map[string]uint64{}},
	}
}

// offer replaces the worker's pending checkpoint with cp.
func (wk *worker) offer(cp storage.Checkpoint) {
	wk.mu.Lock()
	wk.next = &cp
	wk.mu.Unlock()
	select {
	case wk.wake <- struct{}{}:
	default:
	}
}

func (wk *worker) take() (storage.Checkpoint, bool) {
	wk.mu.Lock()
	defer wk.mu.Unlock()
	if wk.next == nil {
		return storage.Checkpoint{}, false
	}
	cp := *wk.next
	wk.next = nil
	return cp, true
}

func (wk *worker) stats() Stats {
	wk.mu.Lock()
	defer wk.mu.Unlock()
	st := wk.st
	st.Size = wk.size
	st.Errors = make(map[string]uint64, len(wk.st.Errors))
	for k, v := range wk.st.Errors {
		st.Errors[k] = v
	}
	return st
}

func (wk *worker) run(ctx context.Context) {
	cfg := &wk.lw.w.cfg
	for {
		select {
		case <-ctx.Done():
			return
		case <-wk.wake:
		}
		cp, ok := wk.take()
		if !ok {
			continue
		}
		err := wk.submit(ctx, cp)
		if ctx.Err() != nil {
			return
		}
		wk.mu.Lock()
		if err == nil {
			wk.fails = 0
			wk.mu.Unlock()
			continue
		}
		wk.fails++
		backoff := cfg.MinInterval << min(wk.fails-1, 16)
		wk.mu.Unlock()
		t := time.NewTimer(min(backoff, cfg.MaxBackoff))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// failure is a failed request, with its category for Stats.
type failure struct {
	category string
	err      error
}

func (f *failure) Error() string { return f.err.Error() }
func (f *failure) Unwrap() error { return f.err }

// fail records and logs a failure.
func (wk *worker) fail(ctx context.Context, level slog.Level, category string, size uint64, format string, args ...any) error {
	err := fmt.Errorf(format, args...)
	wk.mu.Lock()
	wk.st.Errors[category]++
	wk.st.LastError = category + ": " + err.Error()
	wk.st.LastErrorAt = wk.lw.w.cfg.Now()
	wk.mu.Unlock()
	wk.log.Log(ctx, level, "witness did not cosign", "size", size, "category", category, "err", err)
	return &failure{category, err}
}

// submit asks the witness to cosign cp, adopting the witness's size on 409.
func (wk *worker) submit(ctx context.Context, cp storage.Checkpoint) error {
	lw := wk.lw
	for conflicts := 0; ; {
		wk.mu.Lock()
		old := wk.size
		wk.mu.Unlock()
		if old > cp.Size {
			if latest := lw.l.Latest().Size; old > latest {
				return wk.fail(ctx, slog.LevelError, "witness_ahead", cp.Size,
					"the witness cosigned size %d, beyond the log's latest size %d: it saw a checkpoint this log does not have (was storage rolled back? does another log use this origin and key?)", old, latest)
			}
			// A newer checkpoint reached the witness already.
			return nil
		}
		body, err := wk.body(ctx, old, cp)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return wk.fail(ctx, slog.LevelError, "proof", cp.Size, "building the consistency proof from %d to %d: %v", old, cp.Size, err)
		}
		sent := lw.w.cfg.Now()
		status, ctype, resp, err := wk.post(ctx, body)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			var ne net.Error
			if errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) {
				return wk.fail(ctx, slog.LevelWarn, "timeout", cp.Size, "no answer within %v: %v", lw.w.cfg.Timeout, err)
			}
			return wk.fail(ctx, slog.LevelWarn, "network", cp.Size, "%v", err)
		}
		switch status {
		case http.StatusOK:
			return wk.cosigned(ctx, cp, resp, sent)
		case http.StatusConflict:
			n, err := parseSize(resp)
			if err != nil {
				return wk.fail(ctx, slog.LevelError, "bad_response", cp.Size, "409 answer (Content-Type %q): %v", ctype, err)
			}
			if ctype != "text/x.tlog.size" {
				wk.log.Debug("409 answer without Content-Type text/x.tlog.size", "content_type", ctype)
			}
			wk.mu.Lock()
			wk.st.Conflicts++
			wk.size = n
			wk.mu.Unlock()
			wk.log.Info("witness has cosigned another size; adopting it", "sent_old", old, "witness_size", n, "size", cp.Size)
			if _, err := lw.lookup(ctx, storage.Checkpoint{TreeHead: storage.TreeHead{Size: n}}); err != nil && !errors.Is(err, storage.ErrNotFound) && ctx.Err() == nil {
				wk.log.Debug("reading stored cosignatures at the witness's size", "size", n, "err", err)
			}
			if conflicts++; conflicts > maxConflicts {
				return wk.fail(ctx, slog.LevelWarn, "conflicts", cp.Size, "%d conflicts in a row; the witness's size keeps changing (is another process submitting this log?)", conflicts)
			}
		case http.StatusNotFound:
			return wk.fail(ctx, slog.LevelError, "unknown_log", cp.Size, "404: the witness does not know this log (configure origin %q and the log's key on the witness): %s", lw.l.Verifier.Name(), snippet(resp))
		case http.StatusForbidden:
			return wk.fail(ctx, slog.LevelError, "forbidden", cp.Size, "403: the witness does not accept the log's signature (is it configured with the log's verifier key?): %s", snippet(resp))
		case http.StatusUnprocessableEntity:
			return wk.fail(ctx, slog.LevelError, "inconsistent", cp.Size, "422: the witness found the checkpoint inconsistent with size %d it cosigned before (a possible fork, or a bad proof): %s", old, snippet(resp))
		case http.StatusBadRequest:
			return wk.fail(ctx, slog.LevelError, "bad_request", cp.Size, "400: the witness rejected the request: %s", snippet(resp))
		default:
			return wk.fail(ctx, slog.LevelWarn, "http_status", cp.Size, "HTTP %d: %s", status, snippet(resp))
		}
	}
}

// body builds the add-checkpoint request body.
func (wk *worker) body(ctx context.Context, old uint64, cp storage.Checkpoint) ([]byte, error) {
	var b bytes.Buffer
	b.WriteString("old ")
	b.WriteString(strconv.FormatUint(old, 10))
	b.WriteByte('\n')
	if old > 0 && old < cp.Size {
		proof, err := tree.ConsistencyProof(wk.lw.l.Tiles(ctx), old, cp.Size)
		if err != nil {
			return nil, err
		}
		for _, h := range proof {
			b.WriteString(base64.StdEncoding.EncodeToString(h))
			b.WriteByte('\n')
		}
	}
	b.WriteByte('\n')
	b.Write(cp.Note)
	return b.Bytes(), nil
}

// post sends an add-checkpoint request and reads the answer.
func (wk *worker) post(ctx context.Context, body []byte) (status int, ctype string, resp []byte, err error) {
	cfg := &wk.lw.w.cfg
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, wk.url, bytes.NewReader(body))
	if err != nil {
		return 0, "", nil, err
	}
	req.Header.Set("User-Agent", "tlogd (+https://github.com/tlog-dev/tlog)")
	wk.mu.Lock()
	wk.st.Requests++
	wk.mu.Unlock()
	r, err := cfg.Client.Do(req)
	if err != nil {
		return 0, "", nil, err
	}
	defer r.Body.Close()
	resp, err = io.ReadAll(io.LimitReader(r.Body, maxResponseSize+1))
	if err != nil {
		return 0, "", nil, err
	}
	if len(resp) > maxResponseSize {
		return 0, "", nil, fmt.Errorf("answer is over %d bytes", maxResponseSize)
	}
	return r.StatusCode, r.Header.Get("Content-Type"), resp, nil
}

// cosigned verifies and stores the cosignatures of a 200 answer.
func (wk *worker) cosigned(ctx context.Context, cp storage.Checkpoint, resp []byte, sent time.Time) error {
	lw := wk.lw
	wk.mu.Lock()
	wk.size = cp.Size // the witness has recorded cp, whatever we make of its answer
	wk.mu.Unlock()
	set, err := lw.verifyAnswer(cp, resp, sent)
	if err != nil {
		return wk.fail(ctx, slog.LevelError, err.category, cp.Size, "%v", err.err)
	}
	own := keyID(wk.wit.Key.Name, wk.wit.Key.ID)
	if _, ok := set.byKey[own]; !ok {
		return wk.fail(ctx, slog.LevelError, "bad_response", cp.Size, "the answer has no cosignature by the witness's key %s", own)
	}
	if err := lw.w.cfg.Store.AddCosignatures(ctx, lw.l.Name, cp.Size, set.list()); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return wk.fail(ctx, slog.LevelError, "storage", cp.Size, "storing cosignatures: %v", err)
	}
	lw.record(cp.Size, set)
	wk.mu.Lock()
	wk.st.Cosigned++
	wk.st.LastCosignedAt = lw.w.cfg.Now()
	wk.mu.Unlock()
	wk.log.Debug("witness cosigned", "size", cp.Size)
	return nil
}

// verifyAnswer parses and verifies the signature lines of a 200 answer to
// an add-checkpoint request for cp, sent at sent. Lines by keys that are not
// in the policy are ignored; a line by a key of the policy that does not
// verify, or whose timestamp is zero or off by more than MaxClockSkew,
// rejects the answer.
func (lw *logWitnessing) verifyAnswer(cp storage.Checkpoint, resp []byte, sent time.Time) (*cosigSet, *failure) {
	bad := func(category, format string, args ...any) *failure {
		return &failure{category, fmt.Errorf(format, args...)}
	}
	switch {
	case len(resp) == 0:
		return nil, bad("bad_response", "empty 200 answer, want signature lines")
	case !utf8.Valid(resp):
		return nil, bad("bad_response", "answer is not valid UTF-8")
	case resp[len(resp)-1] != '\n':
		return nil, bad("bad_response", "answer does not end with a newline")
	}
	for i, line := range strings.Split(strings.TrimSuffix(string(resp), "\n"), "\n") {
		if !strings.HasPrefix(line, "— ") {
			return nil, bad("bad_response", "answer line %d is not a signature line (\"— <name> <signature>\"): %s", i+1, snippet([]byte(line)))
		}
	}
	known := append([]note.Verifier{lw.l.Verifier}, lw.verifiers...)
	n, err := note.Open(append(append([]byte{}, cp.Note...), resp...), note.VerifierList(known...))
	if err != nil {
		var invalid *note.InvalidSignatureError
		if errors.As(err, &invalid) {
			return nil, bad("bad_cosignature", "a cosignature does not verify: %v", err)
		}
		return nil, bad("bad_response", "the checkpoint with the answer is not a valid signed note: %v", err)
	}
	cfg := &lw.w.cfg
	now := cfg.Now()
	set := newCosigSet()
	for _, sig := range n.Sigs {
		id := keyID(sig.Name, sig.Hash)
		name, ok := lw.byKey[id]
		if !ok {
			continue // the log's own signature
		}
		ts, err := fmtnote.CoSigV1Timestamp(sig)
		switch {
		case err != nil:
			return nil, bad("bad_cosignature", "cosignature by %s: %v", id, err)
		case ts.Unix() <= 0:
			return nil, bad("bad_cosignature", "cosignature by %s has no timestamp (zero)", id)
		case ts.After(now.Add(cfg.MaxClockSkew)):
			return nil, bad("bad_cosignature", "cosignature by %s has timestamp %s, more than %v in the future", id, ts.UTC().Format(time.RFC3339), cfg.MaxClockSkew)
		case ts.Before(sent.Add(-cfg.MaxClockSkew)):
			return nil, bad("bad_cosignature", "cosignature by %s has timestamp %s, more than %v before the request", id, ts.UTC().Format(time.RFC3339), cfg.MaxClockSkew)
		}
		set.byKey[id] = storage.Cosignature{KeyID: id, Signature: []byte("— " + sig.Name + " " + sig.Base64)}
		set.names[name] = true
	}
	return set, nil
}

// parseSize parses a text/x.tlog.size body: a decimal tree size and a
// newline.
func parseSize(b []byte) (uint64, error) {
	s, ok := strings.CutSuffix(string(b), "\n")
	if !ok {
		return 0, fmt.Errorf("body %s does not end with a newline", snippet(b))
	}
	if s == "" || strings.IndexFunc(s, func(r rune) bool { return r < '0' || r > '9' }) >= 0 || (len(s) > 1 && s[0] == '0') {
		return 0, fmt.Errorf("body %s is not a decimal tree size", snippet(b))
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("body %s is not a 64-bit tree size", snippet(b))
	}
	return n, nil
}

// snippet quotes the start of an answer for a log line.
func snippet(b []byte) string {
	const max = 200
	if len(b) > max {
		return strconv.Quote(string(b[:max])) + "..."
	}
	return strconv.Quote(string(b))
}
