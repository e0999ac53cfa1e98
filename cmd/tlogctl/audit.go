package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	fmtnote "github.com/transparency-dev/formats/note"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
	"golang.org/x/mod/sumdb/note"

	"github.com/tlog-dev/tlog/pkg/checkpoint"
	"github.com/tlog-dev/tlog/pkg/tree"
)

var auditCmd = &command{
	name:     "audit",
	synopsis: "--log URL --vkey KEY [--state DIR] [--full] [--follow] [--witness URL=VKEY]...",
	summary:  "audit a log: no bad signature, fork, rollback or split view (--full: recompute it all)",
	help: `Fetches the log's latest checkpoint and verifies its signature, then proves,
with a consistency proof, that it extends the last checkpoint this audit
verified (kept in --state DIR), and saves it there as the new last verified
checkpoint.

--log is the URL prefix of a C2SP tlog-tiles log, such as
http://127.0.0.1:7601/logs/default (any tlog-tiles log can be audited). The
consistency proofs are computed here, from the hash tiles the log serves; none
is taken from the log. If --log is a log name instead of a URL, the log is
read from the tlogd at --addr over gRPC, whose consistency proofs are verified
(and --full recomputes the root from the entries, without tiles).

--full downloads every entry and every hash tile the log has, recomputes the
Merkle tree from the entries and checks it against the tiles and the signed
root. It resumes where it stopped (with --state), so a large log can be
audited in several runs, and afterwards only the new entries are downloaded.
A terminal shows a progress bar.

--witness URL=VKEY names a C2SP tlog-witness by its monitoring prefix and its
cosignature verifier key. The audit fetches the checkpoint the witness last
cosigned for this log (GET URL/<sha256 of origin>/checkpoint), verifies the
log's signature and the witness's cosignature on it, and checks that the log
showed the witness the same history it shows this audit (same root at the same
size, or a consistency proof between the two sizes). A mismatch is a split
view: the log shows different histories to different parties.
--witness-quorum K requires the log's checkpoint to carry cosignatures of at
least K of the --witness keys.

--follow repeats the audit every --interval until interrupted; a log that
cannot be reached is reported and tried again.

With --json every step is a JSON object on its own line, {"event": ...}:
checkpoint, consistent, witness, progress, full, saved, warning, unreachable,
misbehavior (with "kind": signature, rollback, fork, split_view, policy,
tampered_entry, tampered_tile, missing_data or bad_answer), and ok.

Exit codes: 0 the log is consistent with everything verified before; 1 usage
error, or the log (or a witness) could not be reached; 3 the log misbehaved:
a bad signature, a fork, a rollback, a split view, or data that does not hash
to what it signed.`,
	setup: func(fs *flag.FlagSet) runFunc {
		a := &auditor{}
		var witnesses stringList
		fs.StringVar((*string)(&a.state), "state", "", "directory `DIR` of the audit's state: the last verified checkpoint and the progress of --full\n(created if needed; without it nothing is remembered between runs)")
		fs.BoolVar(&a.full, "full", false, "download every entry and tile and recompute the tree")
		fs.BoolVar(&a.follow, "follow", false, "audit again every --interval until interrupted")
		fs.DurationVar(&a.interval, "interval", 30*time.Second, "time between two audits with --follow")
		fs.Var(&witnesses, "witness", "a witness to compare the log with: its monitoring prefix and cosignature verifier key, `URL=VKEY` (repeatable)")
		fs.IntVar(&a.quorum, "witness-quorum", 0, "require cosignatures of at least `K` of the --witness keys on the log's checkpoint")
		return func(ctx context.Context, c *cli, args []string) error {
			if len(args) > 0 {
				return usagef("unexpected arguments %q", args)
			}
			if err := a.setup(c, witnesses); err != nil {
				return err
			}
			if a.follow {
				var stop context.CancelFunc
				ctx, stop = signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
				defer stop()
			}
			return a.run(ctx)
		}
	},
}

// auditor is one run of tlogctl audit.
type auditor struct {
	c         *cli
	src       logSource
	v         note.Verifier
	vkey      string
	state     stateDir
	full      bool
	follow    bool
	interval  time.Duration
	quorum    int
	witnesses []*witness
	progress  bool // draw a progress bar on stderr

	// prev is the last verified checkpoint (nil: none yet).
	prev *checkpoint.Checkpoint

	// The progress of --full: the tree of the first fullSize entries.
	fullLoaded bool
	fullSize   uint64
	fullEdge   *tree.Edge
	partials   map[int]tree.TileData
}

// witness is a --witness.
type witness struct {
	url  string
	vkey string
	v    note.Verifier
	hc   *http.Client
}

// misbehavior is a verified misbehavior of the log: kind names it (see the
// help), err says what exactly.
type misbehavior struct {
	kind string
	err  error
}

func (m *misbehavior) Error() string {
	return fmt.Sprintf("the log misbehaved (%s): %v", m.kind, m.err)
}
func (m *misbehavior) Unwrap() error { return m.err }

// misbehaved returns an error with exit code 3.
func misbehaved(kind, format string, args ...any) error {
	return &verifyError{err: &misbehavior{kind: kind, err: fmt.Errorf(format, args...)}}
}

// auditEvent is one line of --json output.
type auditEvent struct {
	Event       string   `json:"event"`
	Log         string   `json:"log,omitempty"`
	Size        *uint64  `json:"size,omitempty"`
	RootHash    string   `json:"root_hash,omitempty"`
	FromSize    *uint64  `json:"from_size,omitempty"`
	Verified    *uint64  `json:"verified,omitempty"`
	Bytes       int64    `json:"bytes,omitempty"`
	Tiles       int      `json:"tiles,omitempty"`
	Witness     string   `json:"witness,omitempty"`
	CosignedBy  []string `json:"cosigned_by,omitempty"`
	Kind        string   `json:"kind,omitempty"`
	Message     string   `json:"message,omitempty"`
	StateDir    string   `json:"state,omitempty"`
	ElapsedSecs float64  `json:"elapsed_seconds,omitempty"`
}

func u64p(n uint64) *uint64 { return &n }

// event prints an event: JSON with --json, else text (warnings and
// unreachable logs on stderr).
func (a *auditor) event(e auditEvent, text string) {
	if a.c.json {
		a.c.emit(e)
		return
	}
	switch e.Event {
	case "warning", "unreachable":
		fmt.Fprintf(a.c.stderr, "tlogctl: %s: %s\n", e.Event, text)
	default:
		fmt.Fprintln(a.c.stdout, text)
	}
}

func (a *auditor) setup(c *cli, witnesses []string) error {
	a.c = c
	if a.interval <= 0 {
		return usagef("--interval must be positive")
	}
	if a.quorum < 0 || a.quorum > len(witnesses) {
		return usagef("--witness-quorum %d: there are %d --witness", a.quorum, len(witnesses))
	}
	if strings.HasPrefix(c.log, "http://") || strings.HasPrefix(c.log, "https://") {
		a.src = newHTTPSource(c, c.log)
	} else {
		a.src = &grpcSource{c: c}
	}

	// The key: --vkey, or the one saved in the state directory.
	saved, err := a.state.loadVKey()
	if err != nil {
		return err
	}
	given, err := c.givenVerifier()
	if err != nil {
		return err
	}
	switch {
	case given != nil:
		a.v, a.vkey = given, strings.TrimSpace(c.vkey)
		if strings.HasPrefix(a.vkey, "@") {
			b, _ := os.ReadFile(a.vkey[1:]) // givenVerifier read it
			a.vkey = strings.TrimSpace(string(b))
		}
		if saved != "" && saved != a.vkey {
			return usagef("--vkey is not the key this state directory was audited with (%s): use another --state", saved)
		}
	case saved != "":
		if a.v, err = checkpoint.NewVerifier(saved); err != nil {
			return fmt.Errorf("--state: %s: %w", a.state.path(stateVKey), err)
		}
		a.vkey = saved
	default:
		return usagef("give the log's verifier key with --vkey: an audit needs a key it trusts")
	}

	seen := map[string]bool{fmt.Sprintf("%s+%08x", a.v.Name(), a.v.KeyHash()): true}
	for _, w := range witnesses {
		url, vkey, ok := strings.Cut(w, "=")
		if !ok || url == "" || vkey == "" {
			return usagef("--witness %q: want URL=VKEY", w)
		}
		v, err := fmtnote.NewVerifierForCosignatureV1(vkey)
		if err != nil {
			return usagef("--witness %s: verifier key %q: %v", url, vkey, err)
		}
		k := fmt.Sprintf("%s+%08x", v.Name(), v.KeyHash())
		if seen[k] {
			return usagef("--witness %s: the key %s is given twice", url, vkey)
		}
		seen[k] = true
		a.witnesses = append(a.witnesses, &witness{url: strings.TrimSuffix(url, "/"), vkey: vkey, v: v, hc: &http.Client{}})
	}

	// The last verified checkpoint.
	b, err := a.state.read(stateCheckpoint)
	if err != nil {
		return err
	}
	if b != nil {
		cp, _, err := checkpoint.Open(b, a.v)
		if err != nil {
			return usagef("--state: %s does not verify with the log's key (the state of another log?): %v", a.state.path(stateCheckpoint), err)
		}
		a.prev = &cp
	}
	if f, ok := c.stderr.(*os.File); ok && !c.json {
		if fi, err := f.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
			a.progress = true
		}
	}
	return nil
}

// run audits once, or until interrupted with --follow.
func (a *auditor) run(ctx context.Context) error {
	for {
		err := a.round(ctx)
		var verr *verifyError
		switch {
		case errors.As(err, &verr):
			var m *misbehavior
			if errors.As(err, &m) {
				a.event(auditEvent{Event: "misbehavior", Log: a.src.String(), Kind: m.kind, Message: m.err.Error()}, "")
			} else {
				a.event(auditEvent{Event: "misbehavior", Log: a.src.String(), Kind: "bad_answer", Message: verr.err.Error()}, "")
			}
			return err
		case err != nil && ctx.Err() != nil && a.follow:
			return nil // interrupted
		case err != nil && !a.follow:
			var uerr *usageError
			if !errors.As(err, &uerr) {
				a.event(auditEvent{Event: "unreachable", Log: a.src.String(), Message: err.Error()}, "")
				return fmt.Errorf("could not complete the audit: %w", err)
			}
			return err
		case err != nil:
			a.event(auditEvent{Event: "unreachable", Log: a.src.String(), Message: err.Error()}, fmt.Sprintf("%v (trying again in %v)", err, a.interval))
		}
		if !a.follow {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(a.interval):
		}
	}
}

// classify turns an error reading the log into a misbehavior where the
// log answered something wrong, and leaves errors reaching it as they are.
func classify(err error, what string) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, tree.ErrMissingTile), errors.Is(err, errAbsent):
		return misbehaved("missing_data", "%s: the log does not serve data its signed checkpoint covers: %v", what, err)
	case errors.Is(err, errBadAnswer):
		return misbehaved("bad_answer", "%s: %v", what, err)
	}
	return err
}

// round is one audit.
func (a *auditor) round(ctx context.Context) error {
	signed, err := a.src.Checkpoint(ctx)
	if errors.Is(err, errBadAnswer) {
		return misbehaved("bad_answer", "%v", err)
	}
	if err != nil {
		return err
	}
	others := make([]note.Verifier, len(a.witnesses))
	for i, w := range a.witnesses {
		others[i] = w.v
	}
	cp, n, err := checkpoint.Open(signed, a.v, others...)
	if err != nil {
		return misbehaved("signature", "the checkpoint the log serves (size %s) does not verify with the log's key %s: %v", unverifiedSize(signed), a.vkey, err)
	}
	var cosigned []string
	for _, w := range a.witnesses {
		for _, s := range n.Sigs {
			if s.Name == w.v.Name() && s.Hash == w.v.KeyHash() {
				cosigned = append(cosigned, w.v.Name())
			}
		}
	}
	text := fmt.Sprintf("checkpoint: size %d, root %s, signed by %s", cp.Size, b64(cp.Hash[:]), a.v.Name())
	if len(cosigned) > 0 {
		text += ", cosigned by " + strings.Join(cosigned, ", ")
	}
	a.event(auditEvent{Event: "checkpoint", Log: a.src.String(), Size: u64p(cp.Size), RootHash: b64(cp.Hash[:]), CosignedBy: cosigned}, text)
	if len(cosigned) < a.quorum {
		return misbehaved("policy", "the checkpoint at size %d carries cosignatures of %d of the --witness keys, fewer than --witness-quorum %d", cp.Size, len(cosigned), a.quorum)
	}

	if err := a.checkPrevious(ctx, cp); err != nil {
		return err
	}

	// Witnesses: a split view is the log's misbehavior; a witness that
	// cannot be reached is reported after the other checks.
	var unreachable []error
	for _, w := range a.witnesses {
		err := a.checkWitness(ctx, w, cp)
		var verr *verifyError
		if errors.As(err, &verr) {
			return err
		}
		if err != nil {
			unreachable = append(unreachable, fmt.Errorf("witness %s: %w", w.url, err))
		}
	}

	if err := a.state.write(stateCheckpoint, signed); err != nil {
		return err
	}
	if err := a.state.write(stateVKey, []byte(a.vkey+"\n")); err != nil {
		return err
	}
	a.prev = &cp
	if a.state != "" {
		a.event(auditEvent{Event: "saved", Size: u64p(cp.Size), StateDir: string(a.state)}, fmt.Sprintf("state: checkpoint of size %d saved in %s", cp.Size, a.state))
	}

	if a.full {
		if err := a.fullAudit(ctx, cp); err != nil {
			return err
		}
	}
	if err := errors.Join(unreachable...); err != nil {
		return err
	}
	a.event(auditEvent{Event: "ok", Log: a.src.String(), Size: u64p(cp.Size), RootHash: b64(cp.Hash[:])}, fmt.Sprintf("OK: the log at size %d is consistent with everything this audit verified before", cp.Size))
	return nil
}

// checkPrevious checks that cp extends the last verified checkpoint.
func (a *auditor) checkPrevious(ctx context.Context, cp checkpoint.Checkpoint) error {
	prev := a.prev
	switch {
	case prev == nil:
		if a.state != "" {
			a.event(auditEvent{Event: "warning", Message: "no previous checkpoint: this is the first audit of this state, which trusts the log's history up to now"},
				"no previous checkpoint to compare with: this is the first audit of this state, which trusts the log's history up to now")
		}
		return nil
	case cp.Size < prev.Size:
		return misbehaved("rollback", "the log now shows tree size %d (root %s), but it showed size %d (root %s) before: it rolled back %d entries",
			cp.Size, b64(cp.Hash[:]), prev.Size, b64(prev.Hash[:]), prev.Size-cp.Size)
	case cp.Size == prev.Size && cp.Hash != prev.Hash:
		return misbehaved("fork", "the log signed two different roots for tree size %d: %s now, %s before", cp.Size, b64(cp.Hash[:]), b64(prev.Hash[:]))
	case cp.Size == prev.Size:
		a.event(auditEvent{Event: "consistent", Size: u64p(cp.Size), FromSize: u64p(prev.Size)}, fmt.Sprintf("consistent: same tree as before (size %d)", cp.Size))
		return nil
	}
	err := a.consistent(ctx, prev.Size, prev.Hash, cp.Size, cp.Hash)
	switch {
	case errors.As(err, new(*misbehavior)):
		return err
	case errors.As(err, new(*verifyError)):
		return misbehaved("fork", "the log's checkpoint at size %d does not extend the checkpoint at size %d it showed before: %v", cp.Size, prev.Size, unwrapVerify(err))
	case err != nil:
		return err
	}
	a.event(auditEvent{Event: "consistent", Size: u64p(cp.Size), FromSize: u64p(prev.Size)}, fmt.Sprintf("consistent: size %d extends size %d (consistency proof verified)", cp.Size, prev.Size))
	return nil
}

func unwrapVerify(err error) error {
	var verr *verifyError
	if errors.As(err, &verr) {
		var m *misbehavior
		if errors.As(verr.err, &m) {
			return m.err
		}
		return verr.err
	}
	return err
}

// consistent proves that the tree (n, nRoot) extends the tree (m, mRoot),
// m < n. A proof that does not verify is a verifyError; a tile the log does
// not serve is a misbehavior (missing_data).
func (a *auditor) consistent(ctx context.Context, m uint64, mRoot tree.Hash, n uint64, nRoot tree.Hash) error {
	if m == 0 {
		return nil // every tree extends the empty tree
	}
	p, err := a.src.ConsistencyProof(ctx, m, n)
	if err != nil {
		return classify(err, fmt.Sprintf("consistency proof from size %d to %d", m, n))
	}
	for i, h := range p {
		if len(h) != hashSize {
			return failf("consistency proof: hash %d has %d bytes", i, len(h))
		}
	}
	if err := proof.VerifyConsistency(rfc6962.DefaultHasher, m, n, p, mRoot[:], nRoot[:]); err != nil {
		how := "computed from the log's tiles"
		if a.src.Tiles(ctx) == nil {
			how = "from the log"
		}
		return failf("the consistency proof %s does not verify: %s", how, proofError(err))
	}
	return nil
}

// checkWitness compares what the log showed a witness with cp.
func (a *auditor) checkWitness(ctx context.Context, w *witness, cp checkpoint.Checkpoint) error {
	sum := sha256.Sum256([]byte(cp.Origin))
	url := w.url + "/" + hex.EncodeToString(sum[:]) + "/checkpoint"
	signed, err := httpGet(ctx, a.c, w.hc, url, checkpoint.MaxNoteSize, nil)
	if errors.Is(err, errAbsent) {
		a.event(auditEvent{Event: "warning", Witness: w.url, Message: "the witness has cosigned no checkpoint of this log"},
			fmt.Sprintf("witness %s has cosigned no checkpoint of this log", w.url))
		return nil
	}
	if err != nil {
		return err
	}
	wc, n, err := checkpoint.Open(signed, a.v, w.v)
	if err != nil {
		return fmt.Errorf("the checkpoint it serves does not verify with the log's key and its own: %w", err)
	}
	found := false
	for _, s := range n.Sigs {
		if s.Name == w.v.Name() && s.Hash == w.v.KeyHash() {
			found = true
		}
	}
	if !found {
		return fmt.Errorf("the checkpoint it serves (size %d) carries no cosignature by its key %s", wc.Size, w.vkey)
	}
	splitView := func(format string, args ...any) error {
		return misbehaved("split_view", "witness %s (%s) cosigned a checkpoint at size %d, root %s; the log shows this audit size %d, root %s: %s",
			w.url, w.v.Name(), wc.Size, b64(wc.Hash[:]), cp.Size, b64(cp.Hash[:]), fmt.Sprintf(format, args...))
	}
	ev := auditEvent{Event: "witness", Witness: w.url, Size: u64p(wc.Size), RootHash: b64(wc.Hash[:])}
	switch {
	case wc.Size == cp.Size && wc.Hash != cp.Hash:
		return splitView("two different roots for one tree size")
	case wc.Size == cp.Size:
		a.event(ev, fmt.Sprintf("witness %s: cosigned the same checkpoint (size %d)", w.url, wc.Size))
	case wc.Size < cp.Size:
		if err := a.consistent(ctx, wc.Size, wc.Hash, cp.Size, cp.Hash); err != nil {
			if errors.As(err, new(*verifyError)) {
				return splitView("the two trees are not consistent: %v", unwrapVerify(err))
			}
			return fmt.Errorf("checking consistency with witness %s: %w", w.url, err)
		}
		a.event(ev, fmt.Sprintf("witness %s: cosigned size %d, consistent with size %d", w.url, wc.Size, cp.Size))
	default:
		// The witness saw a larger tree than the log shows us: a stale
		// view (or a lagging cache), consistent or not.
		err := a.consistent(ctx, cp.Size, cp.Hash, wc.Size, wc.Hash)
		switch {
		case errors.As(err, new(*verifyError)) && !errors.As(err, new(*misbehavior)):
			return splitView("the two trees are not consistent: %v", unwrapVerify(err))
		case err != nil:
			why := err.Error()
			if errors.As(err, new(*misbehavior)) {
				why = fmt.Sprintf("the log does not serve the tiles of size %d", wc.Size)
			}
			msg := fmt.Sprintf("the log shows an older tree (size %d) than the witness cosigned (size %d), and cannot prove they are consistent (%s): a stale view, or a cache", cp.Size, wc.Size, why)
			a.event(auditEvent{Event: "warning", Witness: w.url, Size: u64p(wc.Size), Message: msg}, fmt.Sprintf("witness %s: %s", w.url, msg))
		default:
			a.event(ev, fmt.Sprintf("witness %s: cosigned size %d, ahead of the log's size %d, consistent", w.url, wc.Size, cp.Size))
		}
	}
	return nil
}

// unverifiedSize returns the size line of a checkpoint that did not
// verify, for messages, or "?".
func unverifiedSize(signed []byte) string {
	body, _, ok := strings.Cut(string(signed), "\n\n")
	if !ok {
		return "?"
	}
	if c, err := checkpoint.Parse([]byte(body + "\n")); err == nil {
		return fmt.Sprint(c.Size)
	}
	return "?"
}
