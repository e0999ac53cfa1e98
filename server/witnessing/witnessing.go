// Package witnessing is the log side of C2SP tlog-witness
// (https://c2sp.org/tlog-witness): it asks the witnesses of each log's
// witness policy (C2SP tlog-policy) to cosign the log's checkpoints,
// verifies the cosignatures they return and stores them, and knows, per log,
// the newest checkpoint whose cosignatures satisfy the policy.
//
// # How checkpoints reach the witnesses
//
// Each witnessed log has one dispatcher goroutine and one worker goroutine
// per witness that has a URL. The dispatcher is woken by [Witnesser.Notify]
// after every commit, and by a timer when the log is idle; at most once per
// MinInterval it takes the log's latest checkpoint and offers it to every
// worker, so that all witnesses are asked about the same checkpoints (and a
// quorum can form on one of them). A worker holds one offer at a time: a
// newer offer replaces an older one it has not started, so a slow or
// hung witness never queues work, never holds up the others, and never
// blocks the sequencer or appends. Every IdleInterval the latest checkpoint
// is offered again even if it did not change: a witness that was down or
// newly added catches up, and cosignatures get fresh timestamps. The
// checkpoint of an empty log (size 0) is not sent: there is nothing to
// witness.
//
// A worker remembers the size the witness last cosigned (0 at start, as the
// spec allows) and sends
//
//	POST <url>/add-checkpoint
//	old <size>
//	<consistency proof lines, from size to the checkpoint's size>
//
//	<the signed checkpoint>
//
// On 409 Conflict it adopts the size in the text/x.tlog.size body and tries
// again (twice at most). 404 (the witness does not know the log), 403 (it
// does not trust the log's key), 422 (the proof or the root hash did not
// check out: a possible fork), 400, other statuses, network errors and
// time-outs are logged (slog, ERROR for 404/403/422 and bad cosignatures,
// WARN otherwise) and counted in [Witnesser.Stats]; the worker then backs
// off exponentially (up to MaxBackoff) before its next request.
//
// # Verifying cosignatures
//
// A 200 answer must be one or more signature lines. They are appended to
// the checkpoint and opened with golang.org/x/mod/sumdb/note and the
// verifiers of the log's key and of every witness of the policy (built by
// package policy with transparency-dev/formats): lines by unknown keys are
// ignored, a line by a known key that does not verify rejects the whole
// answer. Each verified cosignature must carry a timestamp that is not zero,
// not more than MaxClockSkew in the future, and not older than the request
// by more than MaxClockSkew. Only then are the lines stored, with
// storage.AddCosignatures, keyed by "<key name>+<key ID>". Cosignatures read
// back from storage are verified again before they are served: the database
// is not trusted.
package witnessing

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"sync"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/tlog-dev/tlog/pkg/policy"
	"github.com/tlog-dev/tlog/pkg/tree"
	"github.com/tlog-dev/tlog/storage"
)

// Config configures a Witnesser. Zero values take the documented defaults.
type Config struct {
	// Store stores and reads cosignatures. Required.
	Store Store
	// Client sends the add-checkpoint requests (default: a client with
	// keep-alive connections; Timeout bounds each request either way).
	Client *http.Client
	// Timeout bounds one add-checkpoint request, answer included
	// (default 10s).
	Timeout time.Duration
	// MinInterval is the shortest time between two checkpoints offered to
	// the witnesses of one log, and the first back-off after a failure
	// (default 1s).
	MinInterval time.Duration
	// IdleInterval is how often the latest checkpoint is offered again when
	// the log does not grow (default 30s).
	IdleInterval time.Duration
	// MaxBackoff bounds the wait after repeated failures of one witness
	// (default 1m).
	MaxBackoff time.Duration
	// MaxClockSkew is how far a cosignature's timestamp may be in the
	// future, or before the request was sent (default 10m).
	MaxClockSkew time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
	// Logger receives the witnessing logs (default slog.Default()).
	Logger *slog.Logger
}

// Store is the part of the storage contract that witnessing uses.
type Store interface {
	storage.Cosignatures
	CheckpointAt(ctx context.Context, log string, size uint64) (storage.Checkpoint, error)
}

// Log is a log to witness.
type Log struct {
	// Name is the log's name in storage.
	Name string
	// Verifier verifies the log's own signature on its checkpoints.
	Verifier note.Verifier
	// Policy is the log's witness policy; nil means the log is not
	// witnessed.
	Policy *policy.Policy
	// Latest returns the log's newest signed checkpoint.
	Latest func() storage.Checkpoint
	// Tiles reads the log's hash tiles, for consistency proofs.
	Tiles func(ctx context.Context) tree.TileReader
}

// Witnesser witnesses logs. Create it with New, add logs with SetLog, and
// call Run.
type Witnesser struct {
	cfg Config
	log *slog.Logger

	mu     sync.Mutex
	logs   map[string]*logWitnessing
	runCtx context.Context // set by Run
	wg     sync.WaitGroup
}

// New returns a Witnesser.
func New(cfg Config) (*Witnesser, error) {
	if cfg.Store == nil {
		return nil, errors.New("witnessing: Store is required")
	}
	if cfg.Client == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.MaxIdleConnsPerHost = 4
		cfg.Client = &http.Client{Transport: t}
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Second
	}
	if cfg.MinInterval <= 0 {
		cfg.MinInterval = time.Second
	}
	if cfg.IdleInterval <= 0 {
		cfg.IdleInterval = 30 * time.Second
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = time.Minute
	}
	if cfg.MaxClockSkew <= 0 {
		cfg.MaxClockSkew = 10 * time.Minute
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Witnesser{cfg: cfg, log: cfg.Logger, logs: map[string]*logWitnessing{}}, nil
}

// Run witnesses every log set with SetLog until ctx is done, then returns
// once every witnessing goroutine has stopped. Requests in flight are
// cancelled.
func (w *Witnesser) Run(ctx context.Context) error {
	w.mu.Lock()
	if w.runCtx != nil {
		w.mu.Unlock()
		return errors.New("witnessing: Run called twice")
	}
	w.runCtx = ctx
	for _, lw := range w.logs {
		w.start(lw)
	}
	w.mu.Unlock()
	<-ctx.Done()
	w.wg.Wait()
	return nil
}

// SetLog starts witnessing l, or, if l.Name is witnessed already, replaces
// its policy (the witnesses of the old policy are no longer asked; the
// cosignatures stored so far stay). A nil l.Policy stops witnessing the
// log. Before Run, it only records the log.
func (w *Witnesser) SetLog(l Log) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if old := w.logs[l.Name]; old != nil {
		if old.cancel != nil {
			old.cancel()
		}
		delete(w.logs, l.Name)
	}
	if l.Policy == nil {
		return
	}
	lw := newLogWitnessing(w, l)
	w.logs[l.Name] = lw
	if w.runCtx != nil {
		w.start(lw)
	}
}

// start runs lw's goroutines. w.mu must be held.
func (w *Witnesser) start(lw *logWitnessing) {
	ctx, cancel := context.WithCancel(w.runCtx)
	lw.cancel = cancel
	w.wg.Add(1 + len(lw.workers))
	go func() {
		defer w.wg.Done()
		lw.seed(ctx)
		lw.dispatch(ctx)
	}()
	for _, wk := range lw.workers {
		go func() {
			defer w.wg.Done()
			wk.run(ctx)
		}()
	}
}

func (w *Witnesser) get(log string) *logWitnessing {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.logs[log]
}

// Notify tells the Witnesser that the log has a new checkpoint. It never
// blocks.
func (w *Witnesser) Notify(log string) {
	if lw := w.get(log); lw != nil {
		select {
		case lw.notify <- struct{}{}:
		default:
		}
	}
}

// Policy returns the witness policy of a witnessed log, or nil.
func (w *Witnesser) Policy(log string) *policy.Policy {
	if lw := w.get(log); lw != nil {
		return lw.l.Policy
	}
	return nil
}

// Newest returns the size of the newest checkpoint known to carry
// cosignatures that satisfy the log's policy (for a quorum of "none", the
// latest checkpoint), and false if there is none yet or the log is not
// witnessed.
func (w *Witnesser) Newest(log string) (uint64, bool) {
	lw := w.get(log)
	if lw == nil {
		return 0, false
	}
	if lw.l.Policy.Quorum == policy.None {
		return lw.l.Latest().Size, true
	}
	lw.mu.Lock()
	defer lw.mu.Unlock()
	return lw.best, lw.hasBest
}

// Cosignatures returns the verified cosignatures that the log holds on its
// checkpoint cp, ordered by key, and the names (as in the policy) of the
// witnesses they are from. A log that is not witnessed has none. Stored
// cosignatures that do not verify with the current policy are left out (and
// logged, if they are by a key of the policy).
func (w *Witnesser) Cosignatures(ctx context.Context, log string, cp storage.Checkpoint) ([]storage.Cosignature, map[string]bool, error) {
	lw := w.get(log)
	if lw == nil {
		return nil, map[string]bool{}, nil
	}
	set, err := lw.lookup(ctx, cp)
	if err != nil {
		return nil, nil, err
	}
	return set.list(), set.witnesses(), nil
}

// AppendCosignatures returns the signed note of cp followed by the lines
// of cs: a signed note that stays valid, the log's signature first.
func AppendCosignatures(signedNote []byte, cs []storage.Cosignature) []byte {
	out := make([]byte, 0, len(signedNote)+len(cs)*128)
	out = append(out, signedNote...)
	for _, c := range cs {
		out = append(out, c.Signature...)
		out = append(out, '\n')
	}
	return out
}

// Stats describes the witnessing of one log by one witness.
type Stats struct {
	// Log and Witness (its name in the policy) identify the pair; URL is
	// the witness's submission prefix.
	Log, Witness, URL string
	// Size is the tree size the witness last cosigned, as far as the log
	// knows (0 until it learns).
	Size uint64
	// Requests counts add-checkpoint requests; Cosigned the answers whose
	// cosignatures were verified and stored; Conflicts the 409 answers.
	Requests, Cosigned, Conflicts uint64
	// Errors counts failures by category: "unknown_log" (404),
	// "forbidden" (403), "inconsistent" (422), "bad_request" (400),
	// "http_status" (other statuses), "timeout", "network",
	// "bad_response", "bad_cosignature", "witness_ahead", "conflicts",
	// "proof", "storage".
	Errors map[string]uint64
	// LastError describes the last failure; LastErrorAt is when it
	// happened, LastCosignedAt when the last cosignature was stored.
	LastError                   string
	LastErrorAt, LastCosignedAt time.Time
}

// Stats returns the statistics of every (log, witness) pair, ordered by log
// and by the witnesses' order in the policy.
func (w *Witnesser) Stats() []Stats {
	w.mu.Lock()
	lws := make([]*logWitnessing, 0, len(w.logs))
	for _, lw := range w.logs {
		lws = append(lws, lw)
	}
	w.mu.Unlock()
	sort.Slice(lws, func(i, j int) bool { return lws[i].l.Name < lws[j].l.Name })
	var out []Stats
	for _, lw := range lws {
		for _, wk := range lw.workers {
			out = append(out, wk.stats())
		}
	}
	return out
}

// Validate checks that a policy can be used to witness the log whose
// verifier key is logVKey: every witness URL is an absolute http or https
// URL, and, if the policy lists logs, the log is among them. It returns
// warnings about what would work but probably not as meant: witnesses
// without URL (tlogd cannot ask them) and a quorum that the witnesses with
// URLs cannot meet. If lenientLogs, a policy whose log lines do not list the
// log is a warning instead of an error (for a server-wide default policy).
func Validate(p *policy.Policy, logVKey string, lenientLogs bool) (warnings []string, err error) {
	reachable := map[string]bool{}
	for _, wt := range p.Witnesses {
		if wt.URL == "" {
			warnings = append(warnings, fmt.Sprintf("witness %q (line %d) has no URL: tlogd cannot ask it for cosignatures", wt.Name, wt.Line))
			continue
		}
		if _, err := endpoint(wt.URL); err != nil {
			return warnings, fmt.Errorf("witness %q (line %d): %w", wt.Name, wt.Line, err)
		}
		reachable[wt.Name] = true
	}
	if p.Quorum != policy.None && !p.Satisfied(reachable) {
		warnings = append(warnings, fmt.Sprintf("the witnesses with URLs cannot satisfy quorum %q on their own", p.Quorum))
	}
	if len(p.Logs) > 0 {
		found := false
		for _, l := range p.Logs {
			if l.VerifierKey == logVKey {
				found = true
			}
		}
		if !found {
			msg := fmt.Sprintf("the policy lists %d log(s), but not this log's key %s", len(p.Logs), logVKey)
			if !lenientLogs {
				return warnings, errors.New(msg)
			}
			warnings = append(warnings, msg)
		}
	}
	return warnings, nil
}

// endpoint returns the add-checkpoint URL of a witness's submission prefix.
func endpoint(prefix string) (string, error) {
	u, err := url.Parse(prefix)
	if err != nil {
		return "", fmt.Errorf("URL %q: %w", prefix, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return "", fmt.Errorf("URL %q is not an http:// or https:// submission prefix", prefix)
	}
	return strings.TrimSuffix(prefix, "/") + "/add-checkpoint", nil
}
