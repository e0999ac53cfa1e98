// Package witness is a C2SP tlog-witness server (https://c2sp.org/tlog-witness):
// it cosigns the checkpoints of the transparency logs it is configured for,
// after checking that each one is consistent with the last one it cosigned,
// so that a log cannot show two different histories to two different people.
//
// The witness speaks only the specs, and shares no code with the log side of
// tlog: it opens notes with golang.org/x/mod/sumdb/note, parses checkpoints
// itself (c2sp.org/tlog-checkpoint), verifies consistency proofs with
// transparency-dev/merkle, and makes Ed25519 cosignature/v1 signatures
// (c2sp.org/tlog-cosignature) with its own Cosigner.
//
// Witness serves two endpoints under a URL prefix:
//
//	POST <prefix>/add-checkpoint        submit a checkpoint, get a cosignature
//	GET  <prefix>/<origin hash>/checkpoint  the latest cosigned checkpoint
//
// Its State (a bbolt file, or a PostgreSQL table) remembers, per log origin,
// the latest cosigned checkpoint; the check of the request's old size and the
// update are one compare-and-swap transaction, committed durably before the
// cosignature is returned.
package witness

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
	"golang.org/x/mod/sumdb/note"
)

// DefaultMaxBodySize is the default limit on an add-checkpoint request body.
const DefaultMaxBodySize = 1 << 20

// Log is a log the witness cosigns for.
type Log struct {
	// Origin is the log's origin, the first line of its checkpoints.
	Origin string
	// VerifierKeys are the log's Ed25519 note verifier keys (vkeys,
	// "<name>+<hex key ID>+<base64 key>"). A checkpoint needs a valid
	// signature by at least one of them. The key name should be the origin
	// (c2sp.org/tlog-checkpoint says SHOULD), but need not be.
	VerifierKeys []string
}

// Config configures a Witness.
type Config struct {
	// Cosigner signs the cosignatures. Required.
	Cosigner *Cosigner
	// Logs are the logs the witness cosigns for. Each origin may appear
	// more than once; its keys are merged.
	Logs []Log
	// State stores the latest cosigned checkpoint of each log. Required.
	// The Witness does not close it.
	State State
	// Prefix is the URL path prefix of both endpoints: empty, or starting
	// with "/" and not ending with "/" (e.g. "/witness").
	Prefix string
	// MaxBodySize limits an add-checkpoint request body; larger bodies get
	// 413 Request Entity Too Large. Zero means DefaultMaxBodySize.
	MaxBodySize int64
	// Now returns the current time, used for cosignature timestamps. Nil
	// means time.Now.
	Now func() time.Time
	// Logger receives request logs. Nil discards them.
	Logger *slog.Logger
}

// Witness is a C2SP tlog-witness server. It is an http.Handler, safe for
// concurrent use.
type Witness struct {
	cosigner *Cosigner
	state    State
	logs     map[string]note.Verifiers // by origin
	byHash   map[string]string         // lowercase hex SHA-256 of origin -> origin
	maxBody  int64
	now      func() time.Time
	logger   *slog.Logger
	mux      *http.ServeMux
}

// New returns a Witness for cfg. It checks every verifier key.
func New(cfg Config) (*Witness, error) {
	if cfg.Cosigner == nil {
		return nil, errors.New("witness: no Cosigner")
	}
	if cfg.State == nil {
		return nil, errors.New("witness: no State")
	}
	if cfg.Prefix != "" && (!strings.HasPrefix(cfg.Prefix, "/") || strings.HasSuffix(cfg.Prefix, "/")) {
		return nil, fmt.Errorf("witness: prefix %q must start with '/' and not end with '/'", cfg.Prefix)
	}
	w := &Witness{
		cosigner: cfg.Cosigner,
		state:    cfg.State,
		logs:     map[string]note.Verifiers{},
		byHash:   map[string]string{},
		maxBody:  cfg.MaxBodySize,
		now:      cfg.Now,
		logger:   cfg.Logger,
		mux:      http.NewServeMux(),
	}
	if w.maxBody <= 0 {
		w.maxBody = DefaultMaxBodySize
	}
	if w.now == nil {
		w.now = time.Now
	}
	if w.logger == nil {
		w.logger = slog.New(slog.DiscardHandler)
	}

	keys := map[string][]note.Verifier{}
	seen := map[string]bool{} // origin + "\n" + vkey
	for _, l := range cfg.Logs {
		if !validOrigin(l.Origin) {
			return nil, fmt.Errorf("witness: invalid log origin %q", l.Origin)
		}
		if len(l.VerifierKeys) == 0 {
			return nil, fmt.Errorf("witness: log %q has no verifier key", l.Origin)
		}
		for _, vkey := range l.VerifierKeys {
			if seen[l.Origin+"\n"+vkey] {
				continue
			}
			seen[l.Origin+"\n"+vkey] = true
			v, err := note.NewVerifier(vkey)
			if err != nil {
				return nil, fmt.Errorf("witness: log %q: verifier key %q: %w", l.Origin, vkey, err)
			}
			for _, o := range keys[l.Origin] {
				if o.Name() == v.Name() && o.KeyHash() == v.KeyHash() {
					return nil, fmt.Errorf("witness: log %q: two verifier keys with name %q and key ID %08x", l.Origin, v.Name(), v.KeyHash())
				}
			}
			keys[l.Origin] = append(keys[l.Origin], v)
		}
	}
	for origin, vs := range keys {
		w.logs[origin] = note.VerifierList(vs...)
		sum := sha256.Sum256([]byte(origin))
		w.byHash[hex.EncodeToString(sum[:])] = origin
	}

	w.mux.HandleFunc("POST "+cfg.Prefix+"/add-checkpoint", w.serveAddCheckpoint)
	w.mux.HandleFunc("GET "+cfg.Prefix+"/{hash}/checkpoint", w.serveCheckpoint)
	return w, nil
}

// emptyRoot is the RFC 6962 root hash of the empty tree: SHA-256("").
var emptyRoot = sha256.Sum256(nil)

// validOrigin reports whether origin can be a checkpoint's first line:
// non-empty UTF-8 without control characters (c2sp.org/tlog-checkpoint,
// c2sp.org/signed-note).
func validOrigin(origin string) bool {
	if origin == "" || !utf8.ValidString(origin) {
		return false
	}
	for _, r := range origin {
		if r < 0x20 {
			return false
		}
	}
	return true
}

// ServeHTTP implements http.Handler.
func (w *Witness) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	w.mux.ServeHTTP(rw, r)
}

// AddCheckpoint handles the body of an add-checkpoint request and returns
// the response body: the witness's cosignature line(s). It checks, in this
// order (c2sp.org/tlog-witness fixes the status codes, not their order):
//
//   - the body is an old size line, at most MaxProofLines proof lines, an
//     empty line and a checkpoint whose text is well-formed
//     (else ErrMalformed);
//   - the origin is a configured log (else ErrUnknownLog);
//   - the checkpoint has a valid signature by a key of that log, and no
//     invalid one by such a key (else ErrSignature);
//   - old size <= checkpoint size (else ErrMalformed);
//   - old size == the size last cosigned, 0 if none (else *ConflictError);
//   - a size-0 checkpoint has the empty tree's root; a proof from old size
//     0 is empty; otherwise the proof verifies from the stored root to the
//     checkpoint's (so, for equal sizes, the roots are equal)
//     (else ErrInconsistent).
//
// Then it stores the checkpoint as the latest and, only once that is
// durably committed, returns the cosignature.
func (w *Witness) AddCheckpoint(ctx context.Context, body []byte) ([]byte, error) {
	req, err := parseAddRequest(body)
	if err != nil {
		return nil, err
	}
	// The checkpoint text has no empty line, so it ends at the first one.
	text, _, ok := bytes.Cut(req.note, []byte("\n\n"))
	if ok {
		text = req.note[:len(text)+1]
	} else {
		text = req.note
	}
	cp, err := parseCheckpoint(text)
	if err != nil {
		return nil, err
	}
	verifiers, ok := w.logs[cp.origin]
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrUnknownLog, cp.origin)
	}
	n, err := note.Open(req.note, verifiers)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrSignature, err)
	}
	if n.Text != string(text) {
		// The note's signature block holds an empty line; the text that
		// was signed is not a checkpoint.
		return nil, malformed("checkpoint text holds an empty line")
	}
	if req.oldSize > cp.size {
		return nil, malformed("old size %d is larger than the checkpoint size %d", req.oldSize, cp.size)
	}

	var logSigs strings.Builder
	for _, s := range n.Sigs {
		fmt.Fprintf(&logSigs, "— %s %s\n", s.Name, s.Base64)
	}
	var cosig string
	err = w.state.Update(ctx, cp.origin, func(cur Record, found bool) (Record, error) {
		if req.oldSize != cur.Size {
			return Record{}, &ConflictError{Size: cur.Size}
		}
		if err := checkConsistency(req, cp, cur); err != nil {
			return Record{}, err
		}
		now := w.now().Unix()
		if now <= 0 {
			return Record{}, fmt.Errorf("witness: the clock reads %d, refusing to cosign", now)
		}
		if found && now < cur.Time.Unix() {
			// A cosignature says which tree was the largest seen as of its
			// time; signing an older time than the last one could
			// contradict it.
			return Record{}, fmt.Errorf("witness: the clock (%d) is behind the last cosignature (%d), refusing to cosign", now, cur.Time.Unix())
		}
		line, err := w.cosigner.Cosign(text, uint64(now))
		if err != nil {
			return Record{}, err
		}
		cosig = line
		return Record{
			Size:       cp.size,
			Root:       cp.hash,
			Checkpoint: []byte(string(text) + "\n" + logSigs.String() + line),
			Time:       time.Unix(now, 0),
		}, nil
	})
	if err != nil {
		return nil, err
	}
	return []byte(cosig), nil
}

// checkConsistency checks the new checkpoint cp against cur, the latest
// cosigned record, for a request whose old size equals cur.Size.
func checkConsistency(req addRequest, cp treeHead, cur Record) error {
	if cp.size == 0 && cp.hash != emptyRoot {
		return inconsistent("a checkpoint of size 0 must have the root hash of the empty tree")
	}
	if req.oldSize == 0 {
		if len(req.proof) != 0 {
			return inconsistent("old size is 0, but the consistency proof is not empty")
		}
		return nil
	}
	if req.oldSize == cp.size && cur.Root != cp.hash {
		return inconsistent("same size %d as the cosigned checkpoint, different root hash", cp.size)
	}
	if err := proof.VerifyConsistency(rfc6962.DefaultHasher, req.oldSize, cp.size, req.proof, cur.Root[:], cp.hash[:]); err != nil {
		return inconsistent("consistency proof from size %d to %d does not verify: %v", req.oldSize, cp.size, err)
	}
	return nil
}

func (w *Witness) serveAddCheckpoint(rw http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	body, err := io.ReadAll(http.MaxBytesReader(rw, r.Body, w.maxBody))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			http.Error(rw, fmt.Sprintf("request body larger than %d bytes", w.maxBody), http.StatusRequestEntityTooLarge)
			return
		}
		w.logger.DebugContext(ctx, "reading add-checkpoint request", "err", err)
		http.Error(rw, "reading request body failed", http.StatusBadRequest)
		return
	}
	cosig, err := w.AddCheckpoint(ctx, body)
	code := StatusCode(err)
	switch code {
	case http.StatusOK:
		w.logger.InfoContext(ctx, "cosigned checkpoint", "remote", r.RemoteAddr, "checkpoint", checkpointHead(body))
		rw.Header().Set("Content-Type", "text/plain; charset=utf-8")
		rw.Write(cosig)
	case http.StatusConflict:
		var conflict *ConflictError
		errors.As(err, &conflict)
		w.logger.InfoContext(ctx, "add-checkpoint conflict", "remote", r.RemoteAddr, "checkpoint", checkpointHead(body), "size", conflict.Size)
		rw.Header().Set("Content-Type", "text/x.tlog.size")
		rw.Header().Set("X-Content-Type-Options", "nosniff")
		rw.WriteHeader(http.StatusConflict)
		fmt.Fprintf(rw, "%d\n", conflict.Size)
	case http.StatusUnprocessableEntity:
		// The log signed a checkpoint that does not extend what this
		// witness cosigned: possible evidence of a fork. Keep the whole
		// request (c2sp.org/tlog-witness allows logging it).
		w.logger.WarnContext(ctx, "inconsistent checkpoint", "remote", r.RemoteAddr, "err", err, "request", string(body))
		http.Error(rw, err.Error(), code)
	case http.StatusInternalServerError:
		w.logger.ErrorContext(ctx, "add-checkpoint failed", "remote", r.RemoteAddr, "err", err)
		http.Error(rw, "internal error", code)
	default:
		w.logger.InfoContext(ctx, "add-checkpoint refused", "remote", r.RemoteAddr, "status", code, "err", err)
		http.Error(rw, err.Error(), code)
	}
}

// checkpointHead returns the origin and size lines of the checkpoint in an
// add-checkpoint body, for logs.
func checkpointHead(body []byte) string {
	_, note, _ := bytes.Cut(body, []byte("\n\n"))
	lines := strings.SplitN(string(note), "\n", 3)
	if len(lines) < 2 {
		return ""
	}
	return lines[0] + " " + lines[1]
}

// serveCheckpoint serves the monitoring endpoint: the latest checkpoint the
// witness cosigned for the log whose origin hashes to the path's hash, with
// the log's signatures and the witness's cosignature, or 404.
func (w *Witness) serveCheckpoint(rw http.ResponseWriter, r *http.Request) {
	origin, ok := w.byHash[r.PathValue("hash")]
	if !ok {
		http.Error(rw, "unknown log", http.StatusNotFound)
		return
	}
	rec, err := w.state.Get(r.Context(), origin)
	if errors.Is(err, ErrNoRecord) {
		http.Error(rw, "no checkpoint cosigned for this log", http.StatusNotFound)
		return
	}
	if err != nil {
		w.logger.ErrorContext(r.Context(), "reading witness state", "origin", origin, "err", err)
		http.Error(rw, "internal error", http.StatusInternalServerError)
		return
	}
	rw.Header().Set("Content-Type", "text/plain; charset=utf-8")
	rw.Header().Set("Content-Length", strconv.Itoa(len(rec.Checkpoint)))
	rw.Write(rec.Checkpoint)
}
