// Command httpmiddleware is an example of the tlog Go client: an HTTP server
// whose middleware records every request as an audit event in a tlog log.
//
// Each event is a JSON object with the time, method, path, response status,
// remote address, duration and user of the request:
//
//	{"time":"2025-01-02T15:04:05.123Z","method":"GET","path":"/","status":200,"remote_addr":"127.0.0.1:51234","user":"alice","duration_ms":0.12}
//
// Recording never delays the request: the middleware queues the event and
// background workers append it (the client batches the events of all
// workers into few RPCs and retries transient failures). No event is lost
// silently: an event that cannot be queued (the queue is full) or appended
// is logged, in full, as an error.
//
// Run a tlogd, then:
//
//	go run ./examples/httpmiddleware --addr 127.0.0.1:7600 --log default --vkey "$(cat default.vkey)"
//	curl -H 'X-Authenticated-User: alice' http://127.0.0.1:8080/hello
//
// The user is read from the X-Authenticated-User header, which only an
// authenticating reverse proxy in front of this server may set.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/tlog-dev/tlog/pkg/client"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:7600", "gRPC address of the tlog server")
	logName := flag.String("log", "default", "name of the log")
	vkey := flag.String("vkey", "", "the log's verifier key (required)")
	state := flag.String("state", "", "file that keeps the trusted checkpoint between runs (optional)")
	listen := flag.String("listen", "127.0.0.1:8080", "HTTP address to serve on")
	flag.Parse()
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := run(*addr, *logName, *vkey, *state, *listen, logger); err != nil {
		logger.Error("httpmiddleware", "err", err)
		os.Exit(1)
	}
}

func run(addr, logName, vkey, state, listen string, logger *slog.Logger) error {
	if vkey == "" {
		return errors.New("--vkey is required")
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	cfg := client.Config{Conn: conn, Log: logName, VerifierKey: vkey, Logger: logger}
	if state != "" {
		cfg.TrustedState = client.FileStore(state)
	}
	c, err := client.New(cfg)
	if err != nil {
		return err
	}
	defer c.Close()

	rec := NewRecorder(c, logger, RecorderConfig{})
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello from %s\n", r.URL.Path)
	})
	srv := &http.Server{Addr: listen, Handler: rec.Middleware(mux), ReadHeaderTimeout: 10 * time.Second}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	errc := make(chan error, 1)
	go func() { errc <- srv.ListenAndServe() }()
	logger.Info("serving", "addr", listen)
	select {
	case err := <-errc:
		rec.Close()
		return err
	case <-ctx.Done():
	}
	shutdown, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err = srv.Shutdown(shutdown)
	// No handler runs any more: record what is queued, then stop.
	rec.Close()
	return err
}

// Event is the audit event of one HTTP request.
type Event struct {
	Time       time.Time `json:"time"`
	Method     string    `json:"method"`
	Path       string    `json:"path"`
	Status     int       `json:"status"`
	RemoteAddr string    `json:"remote_addr"`
	User       string    `json:"user,omitempty"`
	DurationMS float64   `json:"duration_ms"`
}

// RecorderConfig configures a Recorder. The zero value means the defaults.
type RecorderConfig struct {
	// UserHeader is the request header that names the authenticated user
	// (default "X-Authenticated-User").
	UserHeader string
	// QueueSize is the most events waiting to be appended (default 10000).
	// Beyond it events are logged as errors instead of waiting.
	QueueSize int
	// Workers is the number of concurrent appends (default 256); the
	// client batches them into few RPCs.
	Workers int
	// Timeout bounds the append of one event, retries included (default 1m).
	Timeout time.Duration
}

// Recorder records audit events in a log, in the background.
type Recorder struct {
	client *client.Client
	log    *slog.Logger
	cfg    RecorderConfig
	events chan []byte
	wg     sync.WaitGroup
}

// NewRecorder starts the workers of a Recorder that appends with c and
// reports failures to logger. Call Close when no more events come.
func NewRecorder(c *client.Client, logger *slog.Logger, cfg RecorderConfig) *Recorder {
	if cfg.UserHeader == "" {
		cfg.UserHeader = "X-Authenticated-User"
	}
	if cfg.QueueSize <= 0 {
		cfg.QueueSize = 10000
	}
	if cfg.Workers <= 0 {
		cfg.Workers = 256
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = time.Minute
	}
	r := &Recorder{client: c, log: logger, cfg: cfg, events: make(chan []byte, cfg.QueueSize)}
	for range cfg.Workers {
		r.wg.Go(r.work)
	}
	return r
}

func (r *Recorder) work() {
	for ev := range r.events {
		ctx, cancel := context.WithTimeout(context.Background(), r.cfg.Timeout)
		res, err := r.client.Append(ctx, ev)
		cancel()
		if err != nil {
			r.log.Error("audit event not recorded", "event", string(ev), "err", err)
			continue
		}
		r.log.Debug("audit event recorded", "index", res.Index, "tree_size", res.Checkpoint.Size)
	}
}

// Close appends the queued events and stops the workers. Call it once no
// handler can record any more (after http.Server.Shutdown).
func (r *Recorder) Close() {
	close(r.events)
	r.wg.Wait()
}

// Middleware returns next wrapped so that every request is recorded once it
// is served (also when the handler panics).
func (r *Recorder) Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w}
		defer func() {
			p := recover()
			status := sw.status
			switch {
			case p != nil && !sw.wrote:
				status = http.StatusInternalServerError
			case status == 0:
				status = http.StatusOK
			}
			r.record(Event{
				Time: start.UTC(), Method: req.Method, Path: req.URL.Path, Status: status,
				RemoteAddr: req.RemoteAddr, User: req.Header.Get(r.cfg.UserHeader),
				DurationMS: float64(time.Since(start).Microseconds()) / 1000,
			})
			if p != nil {
				panic(p)
			}
		}()
		next.ServeHTTP(sw, req)
	})
}

// record queues an event without blocking; if the queue is full it logs the
// event as an error, so that it is not lost silently.
func (r *Recorder) record(ev Event) {
	b, err := json.Marshal(ev)
	if err != nil {
		r.log.Error("audit event not recorded", "event", fmt.Sprintf("%+v", ev), "err", err)
		return
	}
	select {
	case r.events <- b:
	default:
		r.log.Error("audit event not recorded", "event", string(b), "err", "queue full")
	}
}

// statusWriter remembers the status of a response.
type statusWriter struct {
	http.ResponseWriter
	status int
	wrote  bool
}

func (w *statusWriter) WriteHeader(code int) {
	if !w.wrote && code >= 200 { // 1xx responses are not the final status
		w.status, w.wrote = code, true
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if !w.wrote {
		w.status, w.wrote = http.StatusOK, true
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
