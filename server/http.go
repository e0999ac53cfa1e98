package server

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/tlog-dev/tlog/pkg/tile"
	"github.com/tlog-dev/tlog/server/sequencer"
)

// HTTPHandler serves the HTTP API of s:
//
//	POST /logs/{log}/add                  append the request body as one entry
//	GET  /logs/{log}/checkpoint           C2SP tlog-tiles checkpoint, with its cosignatures
//	GET  /logs/{log}/tile/<L>/<N>[.p/<W>] hash tiles
//	GET  /logs/{log}/tile/entries/<N>[.p/<W>] entry bundles
//	GET  /logs                            every log, as JSON
//	GET  /healthz, /readyz                liveness and readiness
func HTTPHandler(s *Service) http.Handler {
	h := &httpHandler{s: s}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /logs/{log}/add", h.add)
	mux.HandleFunc("GET /logs/{log}/checkpoint", h.checkpoint)
	mux.HandleFunc("GET /logs/{log}/tile/", h.tile)
	mux.HandleFunc("GET /logs", h.logs)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok\n") })
	mux.HandleFunc("GET /readyz", h.ready)
	return mux
}

type httpHandler struct{ s *Service }

// httpError writes a one-line reason with the status mapped from err.
func httpError(w http.ResponseWriter, err error) {
	_, code := Status(err)
	if code == http.StatusServiceUnavailable || code == http.StatusTooManyRequests {
		w.Header().Set("Retry-After", retryAfter(err))
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	// Errors are not cacheable (a 404 is, by default): a tile missing now
	// exists once the tree grows.
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	fmt.Fprintln(w, strings.ReplaceAll(err.Error(), "\n", " "))
}

func (h *httpHandler) add(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, tile.MaxEntrySize))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			httpError(w, fmt.Errorf("entry is over %d bytes: %w", tile.MaxEntrySize, sequencer.ErrEntryTooLarge))
			return
		}
		httpError(w, fmt.Errorf("%w: reading body: %v", ErrInvalidArgument, err))
		return
	}
	ctx := withHTTPAuthorization(r.Context(), r.Header.Values("Authorization"))
	res, err := h.s.Append(ctx, r.PathValue("log"), []sequencer.Entry{{Data: body}})
	if err != nil {
		httpError(w, err)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Tlog-Leaf-Hash", fmt.Sprintf("%x", res[0].LeafHash))
	w.Header().Set("X-Tlog-Duplicate", strconv.FormatBool(res[0].Duplicate))
	// The index alone on the first line, as tlog load tools expect, then
	// the checkpoint that contains it.
	fmt.Fprintf(w, "%d\n\n", res[0].Index)
	w.Write(res[0].Checkpoint.Note)
}

func (h *httpHandler) checkpoint(w http.ResponseWriter, r *http.Request) {
	// With the witness cosignatures collected so far, after the log's
	// signature: still one valid signed note.
	cp, err := h.s.CosignedCheckpoint(r.Context(), r.PathValue("log"), 0)
	if err != nil {
		httpError(w, err)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-cache")
	w.Write(cp.Note)
}

func (h *httpHandler) tile(w http.ResponseWriter, r *http.Request) {
	log := r.PathValue("log")
	t, err := tile.ParsePath(strings.TrimPrefix(r.URL.Path, "/logs/"+log+"/"))
	if err != nil {
		w.Header().Set("Cache-Control", "no-store")
		http.Error(w, err.Error(), http.StatusNotFound)
		return
	}
	data, err := h.s.Tile(r.Context(), log, t)
	if err != nil {
		httpError(w, err)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	if t.IsFull() {
		w.Header().Set("Cache-Control", "public, max-age=31536000, immutable")
	} else {
		w.Header().Set("Cache-Control", "public, max-age=60")
	}
	w.Write(data)
}

type logJSON struct {
	Name        string `json:"name"`
	Origin      string `json:"origin"`
	VerifierKey string `json:"verifier_key"`
	Size        uint64 `json:"size"`
	CreateTime  string `json:"create_time"`
	// Leader: this process leads the log; LeaderAddr is the leader's gRPC
	// address, if known; Sequencing: this process sequences it now (it
	// leads it and has not stopped), else Stopped says why not.
	Leader     bool   `json:"leader"`
	LeaderAddr string `json:"leader_addr"`
	Sequencing bool   `json:"sequencing"`
	Stopped    string `json:"stopped,omitempty"`
}

func (h *httpHandler) logs(w http.ResponseWriter, r *http.Request) {
	out := struct {
		Logs []logJSON `json:"logs"`
	}{Logs: []logJSON{}}
	for _, l := range h.s.ListLogs(r.Context()) {
		j := logJSON{Name: l.Name, Origin: l.Origin, VerifierKey: l.VerifierKey, Size: l.Size, CreateTime: l.CreatedAt.UTC().Format("2006-01-02T15:04:05.000000Z"),
			Leader: l.Leader, LeaderAddr: l.LeaderAddr, Sequencing: l.Sequencing}
		if l.Stopped != nil {
			j.Stopped = l.Stopped.Error()
		}
		out.Logs = append(out.Logs, j)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-cache")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(out)
}

// ready answers 200 once the storage answers and every log has been
// through its first leader election; 503 while not, or while a log that
// this process leads has stopped sequencing (naming it and why).
func (h *httpHandler) ready(w http.ResponseWriter, r *http.Request) {
	if _, err := h.s.cfg.Store.ListLogs(r.Context()); err != nil {
		httpError(w, fmt.Errorf("storage is not ready: %w", err))
		return
	}
	if msg := h.s.notReady(); msg != "" {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		w.WriteHeader(http.StatusServiceUnavailable)
		io.WriteString(w, msg)
		return
	}
	io.WriteString(w, "ready\n")
}
