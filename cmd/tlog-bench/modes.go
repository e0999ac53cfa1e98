package main

import (
	"bufio"
	"bytes"
	"context"
	crand "crypto/rand"
	"errors"
	"fmt"
	"math/bits"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/tlog-dev/tlog/pkg/checkpoint"
	"github.com/tlog-dev/tlog/pkg/tile"
	tlogv1 "github.com/tlog-dev/tlog/proto/tlog/v1"
)

// streamsPerConn is how many concurrent callers share one gRPC connection.
const streamsPerConn = 32

// client holds the connections of a run.
type client struct {
	log         string
	size        int
	concurrency int

	conns []*grpc.ClientConn
	grpc  []tlogv1.LogServiceClient // by worker % len

	http     *http.Client
	httpAddr string
	logURL   string // http://addr/logs/<log>/
	useHTTP  bool   // read the tree size over HTTP
}

func newClient(cfg config) (*client, error) {
	c := &client{log: cfg.log, size: cfg.size, concurrency: cfg.concurrency}
	switch cfg.mode {
	case "grpc", "grpc-single", "proofs":
		n := max(1, (cfg.concurrency+streamsPerConn-1)/streamsPerConn)
		for range n {
			cc, err := grpc.NewClient(cfg.grpcAddr,
				grpc.WithTransportCredentials(insecure.NewCredentials()),
				grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20), grpc.MaxCallSendMsgSize(64<<20)))
			if err != nil {
				c.close()
				return nil, fmt.Errorf("--grpc-addr %s: %w", cfg.grpcAddr, err)
			}
			c.conns = append(c.conns, cc)
			c.grpc = append(c.grpc, tlogv1.NewLogServiceClient(cc))
		}
	default:
		c.useHTTP = true
	}
	// The HTTP client also serves the tree size of HTTP modes.
	tr := &http.Transport{
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        cfg.concurrency + 16,
		MaxIdleConnsPerHost: cfg.concurrency + 16,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
		ForceAttemptHTTP2:   false,
	}
	c.http = &http.Client{Transport: tr}
	c.httpAddr = cfg.httpAddr
	c.logURL = "http://" + cfg.httpAddr + "/logs/" + cfg.log + "/"
	return c, nil
}

func (c *client) close() {
	for _, cc := range c.conns {
		cc.Close()
	}
	if c.http != nil {
		c.http.CloseIdleConnections()
	}
}

// treeSize returns the size of the log's latest checkpoint.
func (c *client) treeSize(ctx context.Context) (uint64, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if !c.useHTTP {
		resp, err := c.grpc[0].GetCheckpoint(ctx, &tlogv1.GetCheckpointRequest{Log: c.log})
		if err != nil {
			return 0, fmt.Errorf("GetCheckpoint: %w", err)
		}
		return resp.GetTreeSize(), nil
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.logURL+"checkpoint", nil)
	if err != nil {
		return 0, err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return 0, fmt.Errorf("GET checkpoint: %w", err)
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	if _, err := b.ReadFrom(resp.Body); err != nil {
		return 0, fmt.Errorf("GET checkpoint: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("GET %s: %s: %s", req.URL, resp.Status, strings.TrimSpace(b.String()))
	}
	body, _, _ := bytes.Cut(b.Bytes(), []byte("\n\n"))
	cp, err := checkpoint.Parse(append(body, '\n'))
	if err != nil {
		return 0, fmt.Errorf("GET checkpoint: %w", err)
	}
	return cp.Size, nil
}

// newRand returns a fast generator seeded from crypto/rand.
func newRand() *rand.ChaCha8 {
	var seed [32]byte
	crand.Read(seed[:])
	return rand.NewChaCha8(seed)
}

// appendOp appends batch random entries per request over gRPC. Each worker
// reuses its request and one buffer, refilled with fresh random bytes before
// every request so that no entry is a duplicate.
func (c *client) appendOp(batch int) opFunc {
	type worker struct {
		req *tlogv1.AppendRequest
		buf []byte
		rng *rand.ChaCha8
	}
	ws := make([]*worker, c.concurrency)
	return func(ctx context.Context, w int) (int, error) {
		s := ws[w]
		if s == nil {
			s = &worker{req: &tlogv1.AppendRequest{Log: c.log}, buf: make([]byte, batch*c.size), rng: newRand()}
			for i := range batch {
				s.req.Entries = append(s.req.Entries, &tlogv1.AppendEntry{Data: s.buf[i*c.size : (i+1)*c.size]})
			}
			ws[w] = s
		}
		s.rng.Read(s.buf)
		resp, err := c.grpc[w%len(c.grpc)].Append(ctx, s.req)
		if err != nil {
			return 0, err
		}
		if len(resp.GetResults()) != batch {
			return 0, badResponse("Append returned %d results for %d entries", len(resp.GetResults()), batch)
		}
		for _, r := range resp.GetResults() {
			if r.GetDuplicate() {
				return 0, errDuplicate
			}
		}
		return batch, nil
	}
}

// httpAddOp posts one random entry per request to /logs/{log}/add.
//
// Each caller keeps one keep-alive HTTP/1.1 connection of its own and
// writes its request, prepared once, in one call, as wrk does; responses
// are parsed by net/http.ReadResponse. http.Client's pooling, goroutines
// and per-request allocations took about as much CPU as the server it
// measured, on the machine they share.
func (c *client) httpAddOp() opFunc {
	type worker struct {
		req  []byte // request line, headers and body
		body []byte // the body, within req
		conn net.Conn
		br   *bufio.Reader
		resp bytes.Buffer
		rng  *rand.ChaCha8
	}
	ws := make([]*worker, c.concurrency)
	head := fmt.Sprintf("POST /logs/%s/add HTTP/1.1\r\nHost: %s\r\nContent-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n",
		c.log, c.httpAddr, c.size)
	return func(ctx context.Context, w int) (n int, err error) {
		s := ws[w]
		if s == nil {
			s = &worker{req: make([]byte, len(head)+c.size), rng: newRand()}
			copy(s.req, head)
			s.body = s.req[len(head):]
			ws[w] = s
		}
		if s.conn == nil {
			var d net.Dialer
			if s.conn, err = d.DialContext(ctx, "tcp", c.httpAddr); err != nil {
				return 0, err
			}
			s.br = bufio.NewReader(s.conn)
		}
		ok := false // the exchange completed: the connection may be reused
		defer func() {
			if !ok && s.conn != nil {
				s.conn.Close()
				s.conn = nil
			}
		}()
		if d, ok := ctx.Deadline(); ok {
			s.conn.SetDeadline(d)
		}
		stop := context.AfterFunc(ctx, func() { s.conn.SetDeadline(time.Unix(1, 0)) })
		defer stop()

		s.rng.Read(s.body)
		if _, err := s.conn.Write(s.req); err != nil {
			return 0, err
		}
		resp, err := http.ReadResponse(s.br, nil)
		if err != nil {
			return 0, err
		}
		s.resp.Reset()
		_, err = s.resp.ReadFrom(resp.Body)
		resp.Body.Close()
		if err != nil {
			return 0, err
		}
		ok = !resp.Close
		if resp.StatusCode != http.StatusOK {
			return 0, &httpStatusError{code: resp.StatusCode, msg: strings.TrimSpace(s.resp.String())}
		}
		line, _, _ := bytes.Cut(s.resp.Bytes(), []byte("\n"))
		if _, err := strconv.ParseUint(string(line), 10, 64); err != nil {
			return 0, badResponse("add answered %q, not an index", line)
		}
		return 1, nil
	}
}

// do sends req, reads the whole response into buf and returns it; a status
// other than 200 is an *httpStatusError.
func (c *client) do(req *http.Request, buf *bytes.Buffer) ([]byte, error) {
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	buf.Reset()
	if _, err := buf.ReadFrom(resp.Body); err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, &httpStatusError{code: resp.StatusCode, msg: strings.TrimSpace(buf.String())}
	}
	return buf.Bytes(), nil
}

// proofOp asks for inclusion proofs of random entries below size, in the
// latest tree, and checks each proof has the RFC 6962 length.
func (c *client) proofOp(size uint64) opFunc {
	rngs := make([]*rand.ChaCha8, c.concurrency)
	return func(ctx context.Context, w int) (int, error) {
		if rngs[w] == nil {
			rngs[w] = newRand()
		}
		idx := rand.New(rngs[w]).Uint64N(size)
		resp, err := c.grpc[w%len(c.grpc)].GetInclusionProof(ctx, &tlogv1.GetInclusionProofRequest{
			Log: c.log, Leaf: &tlogv1.GetInclusionProofRequest_Index{Index: idx},
		})
		if err != nil {
			return 0, err
		}
		if resp.GetIndex() != idx || resp.GetTreeSize() <= idx {
			return 0, badResponse("proof of index %d in tree %d, asked for %d", resp.GetIndex(), resp.GetTreeSize(), idx)
		}
		if want := inclusionProofLen(idx, resp.GetTreeSize()); len(resp.GetHashes()) != want {
			return 0, badResponse("proof of %d in %d has %d hashes, want %d", idx, resp.GetTreeSize(), len(resp.GetHashes()), want)
		}
		return 1, nil
	}
}

// inclusionProofLen is the number of hashes in the RFC 6962 inclusion proof
// of leaf index in a tree of size leaves.
func inclusionProofLen(index, size uint64) int {
	inner := bits.Len64(index ^ (size - 1))
	return inner + bits.OnesCount64(index>>inner)
}

// tileOp reads random tiles of the tree of the given size over HTTP: each
// request picks uniformly one kind among entry bundles and every hash tile
// level of the tree (as a client building proofs reads one tile per level),
// then a random tile of that kind, at its width in that tree.
func (c *client) tileOp(size uint64) opFunc {
	levels := 0 // hash tile levels in the tree
	for size>>(tile.Height*uint(levels)) > 0 {
		levels++
	}
	type worker struct {
		rng  *rand.Rand
		resp bytes.Buffer
	}
	ws := make([]*worker, c.concurrency)
	return func(ctx context.Context, w int) (int, error) {
		s := ws[w]
		if s == nil {
			s = &worker{rng: rand.New(newRand())}
			ws[w] = s
		}
		level := s.rng.IntN(levels+1) - 1 // -1: entries
		n := size
		if level > 0 {
			n = size >> (tile.Height * uint(level))
		}
		t, _ := tile.ForSize(level, s.rng.Uint64N(n)/tile.Width, size)
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.logURL+t.Path(), nil)
		if err != nil {
			return 0, err
		}
		body, err := c.do(req, &s.resp)
		if err != nil {
			return 0, err
		}
		if !t.IsEntries() && len(body) != t.Width*tile.HashSize {
			return 0, badResponse("%s has %d bytes, want %d", t.Path(), len(body), t.Width*tile.HashSize)
		}
		if t.IsEntries() && len(body) < 2*t.Width {
			return 0, badResponse("%s has %d bytes, too few for %d entries", t.Path(), len(body), t.Width)
		}
		return 1, nil
	}
}

// prefill appends batches of 1000 entries over gRPC from 16 callers until
// the log holds at least target entries.
func prefill(ctx context.Context, cfg config, target uint64, progress func(string)) error {
	pc := cfg
	pc.mode, pc.concurrency = "grpc", 16
	c, err := newClient(pc)
	if err != nil {
		return err
	}
	defer c.close()
	size, err := c.treeSize(ctx)
	if err != nil {
		return err
	}
	if size >= target {
		return nil
	}
	const batch = 1000
	op := c.appendOp(batch)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var left atomic.Int64
	left.Store(int64(target - size))
	errc := make(chan error, pc.concurrency)
	start := time.Now()
	for w := range pc.concurrency {
		go func() {
			for left.Add(-batch) > -batch && ctx.Err() == nil {
				if _, err := op(ctx, w); err != nil {
					if isPushback(err) {
						left.Add(batch)
						time.Sleep(50 * time.Millisecond)
						continue
					}
					cancel()
					errc <- fmt.Errorf("prefill: %w", err)
					return
				}
			}
			errc <- nil
		}()
	}
	t := time.NewTicker(time.Second)
	defer t.Stop()
	var firstErr error
	for done := 0; done < pc.concurrency; {
		select {
		case err := <-errc:
			done++
			if err != nil && firstErr == nil {
				firstErr = err
			}
		case <-t.C:
			filled := int64(target-size) - max(left.Load(), 0)
			progress(fmt.Sprintf("prefill %s/%s entries (%s entries/s)", commas(float64(size)+float64(filled)), commas(float64(target)), commas(float64(filled)/time.Since(start).Seconds())))
		}
	}
	return firstErr
}

// Error kinds.

var errDuplicate = errors.New("entry reported as a duplicate")

type badResponseError struct{ msg string }

func (e *badResponseError) Error() string { return "bad response: " + e.msg }

func badResponse(format string, args ...any) error {
	return &badResponseError{fmt.Sprintf(format, args...)}
}

type httpStatusError struct {
	code int
	msg  string
}

func (e *httpStatusError) Error() string { return fmt.Sprintf("HTTP %d: %s", e.code, e.msg) }

// errorKind names the category of err for the error counts: a gRPC code
// ("ResourceExhausted"), an HTTP status ("http_503"), or one of timeout,
// network, bad_response, duplicate, other.
func errorKind(err error) string {
	var he *httpStatusError
	var br *badResponseError
	var ne net.Error
	switch {
	case errors.As(err, &he):
		return "http_" + strconv.Itoa(he.code)
	case errors.As(err, &br):
		return "bad_response"
	case errors.Is(err, errDuplicate):
		return "duplicate"
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	}
	if s, ok := status.FromError(err); ok {
		return s.Code().String()
	}
	if errors.As(err, &ne) {
		if ne.Timeout() {
			return "timeout"
		}
		return "network"
	}
	return "other"
}

// isPushback reports whether err is the server asking to retry later.
func isPushback(err error) bool {
	var he *httpStatusError
	if errors.As(err, &he) {
		return he.code == http.StatusServiceUnavailable || he.code == http.StatusTooManyRequests
	}
	return status.Code(err) == codes.ResourceExhausted
}
