package main

// Where `tlogctl audit` reads a log from: a C2SP tlog-tiles HTTP prefix (any
// tlog-tiles log), or a tlogd gRPC address. Proofs over HTTP are computed
// here, from the tiles, not taken from the log.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tlog-dev/tlog/pkg/checkpoint"
	"github.com/tlog-dev/tlog/pkg/tile"
	"github.com/tlog-dev/tlog/pkg/tree"
	tlogv1 "github.com/tlog-dev/tlog/proto/tlog/v1"
)

// errAbsent is wrapped by the errors of resources the log answered it does
// not have (HTTP 404, gRPC NOT_FOUND or OUT_OF_RANGE).
var errAbsent = errors.New("the log does not have it")

// errBadAnswer is wrapped by the errors of answers that are malformed (a
// tile of the wrong size, an entry bundle that does not parse): the log
// misbehaved.
var errBadAnswer = errors.New("malformed answer")

// chunk is a run of consecutive entries within one entry bundle: entries
// [start, start+len(entries)). leafTile is the level-0 hash tile at the
// same width as the bundle, or nil if the source serves no tiles.
type chunk struct {
	start    uint64
	entries  [][]byte
	leafTile []byte
}

// logSource is what audit reads.
type logSource interface {
	// String names the log for messages.
	String() string
	// Checkpoint returns the log's latest signed checkpoint note.
	Checkpoint(ctx context.Context) ([]byte, error)
	// ConsistencyProof returns the proof that the tree of size n (at
	// which the log signed a checkpoint) extends the tree of size m.
	ConsistencyProof(ctx context.Context, m, n uint64) ([][]byte, error)
	// Tiles returns a reader of hash tiles, or nil if the source has none.
	Tiles(ctx context.Context) tree.TileReader
	// Entries sends the entries [start, end) of the tree of size size, in
	// order, as chunks that never cross an entry bundle boundary, until it
	// is done, fails, or ctx ends. The channel is closed at the end; a
	// failure is its last element (a chunk with a nil entries and the error).
	Entries(ctx context.Context, start, end, size uint64) <-chan chunkOrError
	// Downloaded returns the bytes downloaded so far.
	Downloaded() int64
}

type chunkOrError struct {
	chunk
	err error
}

// httpSource reads a C2SP tlog-tiles log under a URL prefix.
type httpSource struct {
	prefix  string // without a trailing slash
	hc      *http.Client
	c       *cli
	fetched atomic.Int64 // bytes
}

func newHTTPSource(c *cli, prefix string) *httpSource {
	return &httpSource{prefix: strings.TrimSuffix(prefix, "/"), hc: &http.Client{}, c: c}
}

func (s *httpSource) String() string { return s.prefix }

func (s *httpSource) Downloaded() int64 { return s.fetched.Load() }

// get fetches url and returns the body of a 200 answer of at most max
// bytes. A 404 wraps errAbsent; an answer over max wraps errBadAnswer; other
// failures (network, other statuses) are errors reaching the log.
func (s *httpSource) get(ctx context.Context, url string, max int64) ([]byte, error) {
	return httpGet(ctx, s.c, s.hc, url, max, &s.fetched)
}

func httpGet(ctx context.Context, c *cli, hc *http.Client, url string, max int64, counter *atomic.Int64) ([]byte, error) {
	if c.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.timeout)
		defer cancel()
	}
	req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("User-Agent", "tlogctl-audit")
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, max+1))
	if counter != nil {
		counter.Add(int64(len(body)))
	}
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", url, err)
	}
	switch {
	case resp.StatusCode == http.StatusNotFound:
		return nil, fmt.Errorf("GET %s: %w (HTTP 404: %s)", url, errAbsent, short(body))
	case resp.StatusCode != http.StatusOK:
		return nil, fmt.Errorf("GET %s: HTTP %d: %s", url, resp.StatusCode, short(body))
	case int64(len(body)) > max:
		return nil, fmt.Errorf("GET %s: %w: more than %d bytes", url, errBadAnswer, max)
	}
	return body, nil
}

// short returns the start of an error body, on one line.
func short(b []byte) string {
	s := strings.Join(strings.Fields(string(b)), " ")
	if len(s) > 200 {
		s = s[:200] + "..."
	}
	return s
}

func (s *httpSource) Checkpoint(ctx context.Context) ([]byte, error) {
	return s.get(ctx, s.prefix+"/checkpoint", checkpoint.MaxNoteSize)
}

func (s *httpSource) ConsistencyProof(ctx context.Context, m, n uint64) ([][]byte, error) {
	return tree.ConsistencyProof(s.Tiles(ctx), m, n)
}

// Tiles reads hash tiles over HTTP, a few at a time. A partial tile the log
// no longer serves is read from its full tile, as tlog-tiles allows. A tile
// the log does not have wraps tree.ErrMissingTile and errAbsent.
func (s *httpSource) Tiles(ctx context.Context) tree.TileReader {
	return tree.TileReaderFunc(func(ts []tile.Tile) ([][]byte, error) {
		out := make([][]byte, len(ts))
		err := parallel(ctx, len(ts), 8, func(ctx context.Context, i int) error {
			var err error
			out[i], err = s.tile(ctx, ts[i])
			return err
		})
		if err != nil {
			return nil, err
		}
		return out, nil
	})
}

func (s *httpSource) tile(ctx context.Context, t tile.Tile) ([]byte, error) {
	n := t.Width * tile.HashSize
	b, err := s.get(ctx, s.prefix+"/"+t.Path(), int64(n))
	if errors.Is(err, errAbsent) && !t.IsFull() {
		full := t
		full.Width = tile.Width
		if fb, ferr := s.get(ctx, s.prefix+"/"+full.Path(), tile.Width*tile.HashSize); ferr == nil {
			if len(fb) != tile.Width*tile.HashSize {
				return nil, fmt.Errorf("%s: %w: %d bytes, want %d", full.Path(), errBadAnswer, len(fb), tile.Width*tile.HashSize)
			}
			return fb[:n], nil
		}
	}
	if errors.Is(err, errAbsent) {
		return nil, fmt.Errorf("%w: %w", tree.ErrMissingTile, err)
	}
	if err != nil {
		return nil, err
	}
	if len(b) != n {
		return nil, fmt.Errorf("%s: %w: %d bytes, want %d", t.Path(), errBadAnswer, len(b), n)
	}
	return b, nil
}

// bundle fetches entry bundle index at width w, and, if withTile, the
// level-0 hash tile of the same entries.
func (s *httpSource) bundle(ctx context.Context, index uint64, w int, withTile bool) (entries [][]byte, leafTile []byte, err error) {
	t := tile.Tile{Level: tile.EntriesLevel, Index: index, Width: w}
	b, err := s.get(ctx, s.prefix+"/"+t.Path(), int64(w)*(2+tile.MaxEntrySize))
	if errors.Is(err, errAbsent) && !t.IsFull() {
		// The full bundle may have replaced the partial one.
		full := t
		full.Width = tile.Width
		if fb, ferr := s.get(ctx, s.prefix+"/"+full.Path(), tile.Width*(2+tile.MaxEntrySize)); ferr == nil {
			b, err = fb, nil
		}
	}
	if err != nil {
		return nil, nil, err
	}
	es, err := tile.ParseBundle(b)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w: %w", t.Path(), errBadAnswer, err)
	}
	if len(es) < w || (len(es) > w && len(es) != tile.Width) {
		return nil, nil, fmt.Errorf("%s: %w: %d entries, want %d", t.Path(), errBadAnswer, len(es), w)
	}
	es = es[:w]
	if withTile {
		if leafTile, err = s.tile(ctx, tile.Tile{Level: 0, Index: index, Width: w}); err != nil {
			return nil, nil, err
		}
	}
	return es, leafTile, nil
}

// Entries fetches entry bundles (and their level-0 tiles) up to 16 ahead of
// the consumer.
func (s *httpSource) Entries(ctx context.Context, start, end, size uint64) <-chan chunkOrError {
	out := make(chan chunkOrError, 1)
	ctx, cancel := context.WithCancel(ctx)
	pending := make(chan chan chunkOrError, 16)
	go func() {
		defer close(pending)
		for k := start / tile.Width; k*tile.Width < end; k++ {
			ch := make(chan chunkOrError, 1)
			select {
			case pending <- ch:
			case <-ctx.Done():
				return
			}
			go func() {
				w := tile.WidthAt(tile.EntriesLevel, k, size)
				es, lt, err := s.bundle(ctx, k, w, true)
				if err != nil {
					ch <- chunkOrError{err: err}
					return
				}
				// Keep the part in [start, end).
				lo := max(start, k*tile.Width) - k*tile.Width
				hi := min(end, k*tile.Width+uint64(w)) - k*tile.Width
				ch <- chunkOrError{chunk: chunk{start: k*tile.Width + lo, entries: es[lo:hi], leafTile: lt}}
			}()
		}
	}()
	go func() {
		defer close(out)
		defer cancel()
		for ch := range pending {
			var r chunkOrError
			select {
			case r = <-ch:
			case <-ctx.Done():
				return
			}
			select {
			case out <- r:
			case <-ctx.Done():
				return
			}
			if r.err != nil {
				return
			}
		}
	}()
	return out
}

// grpcSource reads a log from a tlogd's gRPC API. It has no tiles: the
// consistency proofs are the server's (verified here), and a full audit
// recomputes the root from the entries only.
type grpcSource struct {
	c       *cli
	fetched atomic.Int64
}

func (s *grpcSource) String() string { return fmt.Sprintf("log %q at %s", s.c.log, s.c.addr) }

func (s *grpcSource) Downloaded() int64 { return s.fetched.Load() }

func (s *grpcSource) Tiles(context.Context) tree.TileReader { return nil }

// grpcErr classifies a gRPC error: NOT_FOUND and OUT_OF_RANGE wrap errAbsent.
func grpcErr(method string, err error) error {
	switch status.Code(err) {
	case codes.NotFound, codes.OutOfRange:
		return fmt.Errorf("%s: %w: %w", method, errAbsent, rpcError(method, err))
	}
	return rpcError(method, err)
}

func (s *grpcSource) Checkpoint(ctx context.Context) ([]byte, error) {
	lc, err := s.c.logClient()
	if err != nil {
		return nil, err
	}
	resp, err := lc.GetCheckpoint(ctx, &tlogv1.GetCheckpointRequest{Log: s.c.log})
	if err != nil {
		return nil, grpcErr("GetCheckpoint", err)
	}
	return resp.GetCheckpoint(), nil
}

func (s *grpcSource) ConsistencyProof(ctx context.Context, m, n uint64) ([][]byte, error) {
	lc, err := s.c.logClient()
	if err != nil {
		return nil, err
	}
	resp, err := lc.GetConsistencyProof(ctx, &tlogv1.GetConsistencyProofRequest{Log: s.c.log, FromSize: m, ToSize: n})
	if err != nil {
		return nil, grpcErr("GetConsistencyProof", err)
	}
	if resp.GetFromSize() != m || resp.GetToSize() != n {
		return nil, fmt.Errorf("GetConsistencyProof: %w: asked for sizes %d to %d, the server answered %d to %d", errBadAnswer, m, n, resp.GetFromSize(), resp.GetToSize())
	}
	return resp.GetHashes(), nil
}

// Entries streams entries with GetEntries, regrouped by entry bundle.
func (s *grpcSource) Entries(ctx context.Context, start, end, size uint64) <-chan chunkOrError {
	out := make(chan chunkOrError, 4)
	go func() {
		defer close(out)
		send := func(r chunkOrError) bool {
			select {
			case out <- r:
				return r.err == nil
			case <-ctx.Done():
				return false
			}
		}
		lc, err := s.c.logClient()
		if err != nil {
			send(chunkOrError{err: err})
			return
		}
		next := start
		var cur chunk
		for next < end {
			// The server may stop a stream early: continue from next.
			stream, err := lc.GetEntries(ctx, &tlogv1.GetEntriesRequest{Log: s.c.log, Start: next, End: end})
			if err != nil {
				send(chunkOrError{err: grpcErr("GetEntries", err)})
				return
			}
			got := false
			for {
				msg, err := stream.Recv()
				if errors.Is(err, io.EOF) {
					break
				}
				if err != nil {
					send(chunkOrError{err: grpcErr("GetEntries", err)})
					return
				}
				for _, e := range msg.GetEntries() {
					if e.GetIndex() != next || next >= end {
						send(chunkOrError{err: fmt.Errorf("GetEntries: %w: expected entry %d, the server sent entry %d", errBadAnswer, next, e.GetIndex())})
						return
					}
					s.fetched.Add(int64(len(e.GetData())))
					got = true
					if len(cur.entries) == 0 {
						cur.start = next
					}
					cur.entries = append(cur.entries, e.GetData())
					next++
					if next%tile.Width == 0 || next == end {
						if !send(chunkOrError{chunk: cur}) {
							return
						}
						cur = chunk{}
					}
				}
			}
			if !got {
				send(chunkOrError{err: fmt.Errorf("GetEntries: %w: entry %d (the stream ended without it)", errAbsent, next)})
				return
			}
		}
	}()
	return out
}
