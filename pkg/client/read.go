package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"iter"

	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
	"google.golang.org/grpc"

	"github.com/tlog-dev/tlog/pkg/receipt"
	"github.com/tlog-dev/tlog/pkg/tree"
	tlogv1 "github.com/tlog-dev/tlog/proto/tlog/v1"
)

// Checkpoint returns the log's latest checkpoint, verified: its signature,
// and its consistency with the trusted state, which it then advances (and
// stores). A latest checkpoint smaller than the trusted one fails with
// ErrRollback, one that is not consistent with it with ErrFork. If another
// call advanced the trusted state beyond the server's answer meanwhile,
// Checkpoint returns that newer trusted checkpoint.
func (c *Client) Checkpoint(ctx context.Context) (VerifiedCheckpoint, error) {
	before, ok := c.trustedSize()
	var resp *tlogv1.GetCheckpointResponse
	err := c.retry(ctx, "GetCheckpoint", func(ctx context.Context) error {
		var err error
		resp, err = c.rpc.GetCheckpoint(ctx, &tlogv1.GetCheckpointRequest{Log: c.cfg.Log})
		return err
	})
	if err != nil {
		return VerifiedCheckpoint{}, err
	}
	vc, err := c.open(resp.GetCheckpoint())
	if err != nil {
		return VerifiedCheckpoint{}, err
	}
	if ok && vc.Size < before {
		return VerifiedCheckpoint{}, c.failf("%w: the log's latest checkpoint has size %d, smaller than the trusted checkpoint's %d", ErrRollback, vc.Size, before)
	}
	return c.advance(ctx, vc)
}

// Entry is an entry of the log.
type Entry struct {
	// Index is the entry's zero-based index in the log.
	Index uint64
	// Data is the entry's data.
	Data []byte
	// LeafHash is the RFC 6962 leaf hash of Data.
	LeafHash tree.Hash
}

// Entries returns the entries [start, end) of the log, in index order, each
// verified to be the log's entry at its index in the tree of the latest
// checkpoint (see the package documentation for how). It first fetches and
// verifies that checkpoint, as Checkpoint does; an end beyond its size is
// cut to it. A start at or beyond it is an error.
//
// Entries are yielded a chunk at a time, after their chunk verified. On
// failure the sequence yields one last pair with a zero Entry and the error
// (wrapping ErrVerification if an answer did not verify).
func (c *Client) Entries(ctx context.Context, start, end uint64) iter.Seq2[Entry, error] {
	return func(yield func(Entry, error) bool) {
		err := c.entries(ctx, start, end, func(chunk []Entry) bool {
			for _, e := range chunk {
				if !yield(e, nil) {
					return false
				}
			}
			return true
		})
		if err != nil {
			yield(Entry{}, err)
		}
	}
}

func (c *Client) entries(ctx context.Context, start, end uint64, emit func([]Entry) bool) error {
	if end <= start {
		return fmt.Errorf("client: Entries: end %d is not after start %d", end, start)
	}
	vc, err := c.Checkpoint(ctx)
	if err != nil {
		return err
	}
	if start >= vc.Size {
		return fmt.Errorf("client: Entries: start %d is not below the log's size %d", start, vc.Size)
	}
	end = min(end, vc.Size)

	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // ends the stream
	s := &entryStream{c: c, ctx: ctx, next: start, end: end}
	var rng *compact.Range
	for s.next < end {
		chunk, err := s.read(c.chunkEntries, c.chunkBytes)
		if err != nil {
			return err
		}
		if rng == nil {
			if rng, err = c.rangeBefore(ctx, start, chunk[0].LeafHash, vc); err != nil {
				return err
			}
		}
		for _, e := range chunk {
			if err := rng.Append(e.LeafHash[:], nil); err != nil {
				return err
			}
		}
		if err := c.checkPrefix(ctx, rng, vc); err != nil {
			return fmt.Errorf("entries [%d, %d): %w", chunk[0].Index, rng.End(), err)
		}
		if !emit(chunk) {
			return nil
		}
	}
	return nil
}

// rangeBefore returns the compact range of the leaves [0, start) of the tree
// of vc, from the verified inclusion proof of leaf, the leaf hash of entry
// start.
func (c *Client) rangeBefore(ctx context.Context, start uint64, leaf tree.Hash, vc VerifiedCheckpoint) (*compact.Range, error) {
	if start == 0 {
		return rangeFactory.NewEmptyRange(0), nil
	}
	hashes, err := c.inclusionProof(ctx, start, leaf, vc)
	if err != nil {
		return nil, err
	}
	rng, err := leftRange(start, vc.Size, hashes)
	if err != nil {
		return nil, c.failf("inclusion proof of entry %d: %w", start, err)
	}
	return rng, nil
}

// checkPrefix checks that rng, a compact range [0, n) of leaf hashes, is the
// beginning of the tree of vc: it recomputes the root hash of the tree of
// size n and verifies the consistency proof from it to vc.
func (c *Client) checkPrefix(ctx context.Context, rng *compact.Range, vc VerifiedCheckpoint) error {
	root, err := rng.GetRootHash(nil)
	if err != nil {
		return err
	}
	n := rng.End()
	if n == vc.Size {
		if tree.Hash(root) != vc.Hash {
			return c.failf("they make root hash %s, not the checkpoint's %s (size %d)", b64(root), b64(vc.Hash[:]), vc.Size)
		}
		return nil
	}
	var resp *tlogv1.GetConsistencyProofResponse
	err = c.retry(ctx, "GetConsistencyProof", func(ctx context.Context) error {
		var err error
		resp, err = c.rpc.GetConsistencyProof(ctx, &tlogv1.GetConsistencyProofRequest{Log: c.cfg.Log, FromSize: n, ToSize: vc.Size})
		return err
	})
	if err != nil {
		return err
	}
	if err := c.checkEcho(resp.GetCheckpoint(), vc.Checkpoint); err != nil {
		return err
	}
	hashes := resp.GetHashes()
	if err := checkHashes(hashes); err != nil {
		return c.failf("consistency proof from size %d to %d: %w", n, vc.Size, err)
	}
	if err := proof.VerifyConsistency(rfc6962.DefaultHasher, n, vc.Size, hashes, root, vc.Hash[:]); err != nil {
		return c.failf("the tree of size %d they make (root %s) is not proven to be the beginning of the tree of size %d: %s", n, b64(root), vc.Size, proofError(err))
	}
	return nil
}

// entryStream reads entries [next, end) from a GetEntries stream, checking
// that they come in order, and reopening the stream from where it stopped
// after a transient failure.
type entryStream struct {
	c         *Client
	ctx       context.Context
	next, end uint64
	stream    grpc.ServerStreamingClient[tlogv1.GetEntriesResponse]
	buf       []*tlogv1.Entry
	failures  int
}

// read returns the next entries: at least one, at most max, and no more once
// their data reach maxBytes.
func (s *entryStream) read(max, maxBytes int) ([]Entry, error) {
	var out []Entry
	size := 0
	for s.next < s.end && len(out) < max && size < maxBytes {
		if len(s.buf) == 0 {
			if err := s.fill(); err != nil {
				return nil, err
			}
		}
		e := s.buf[0]
		s.buf = s.buf[1:]
		if e.GetIndex() != s.next {
			return nil, s.c.failf("expected entry %d, the server answered entry %d", s.next, e.GetIndex())
		}
		lh := tree.LeafHash(e.GetData())
		if string(lh[:]) != string(e.GetLeafHash()) {
			return nil, s.c.failf("entry %d: its data hashes to %x, not to the leaf hash %x the server sent", s.next, lh, e.GetLeafHash())
		}
		out = append(out, Entry{Index: s.next, Data: e.GetData(), LeafHash: lh})
		size += len(e.GetData())
		s.next++
	}
	return out, nil
}

// fill reads the next message of the stream into s.buf.
func (s *entryStream) fill() error {
	p := s.c.cfg.Retry
	for {
		if s.stream == nil {
			st, err := s.c.rpc.GetEntries(s.ctx, &tlogv1.GetEntriesRequest{Log: s.c.cfg.Log, Start: s.next, End: s.end})
			if err != nil {
				if err := s.failed(p, err); err != nil {
					return err
				}
				continue
			}
			s.stream = st
		}
		msg, err := s.stream.Recv()
		switch {
		case err == nil && len(msg.GetEntries()) > 0:
			s.buf = msg.GetEntries()
			s.failures = 0
			return nil
		case err == nil:
			continue // an empty message; the next one may have entries
		case errors.Is(err, io.EOF):
			return s.c.failf("the server ended the entries at index %d, before %d", s.next, s.end)
		}
		s.stream = nil
		if err := s.failed(p, err); err != nil {
			return err
		}
	}
}

// failed decides whether to reopen the stream after err, and waits if so.
func (s *entryStream) failed(p RetryPolicy, err error) error {
	if s.ctx.Err() != nil {
		return fmt.Errorf("client: GetEntries: %w", s.ctx.Err())
	}
	s.failures++
	if !retryable(err) || s.failures >= p.MaxAttempts {
		return fmt.Errorf("client: GetEntries from index %d: %w", s.next, err)
	}
	d := p.delay(s.failures)
	s.c.log.Debug("retrying", "method", "GetEntries", "from", s.next, "attempt", s.failures, "delay", d, "err", err)
	if err := sleep(s.ctx, d); err != nil {
		return fmt.Errorf("client: GetEntries: %w", err)
	}
	return nil
}

// Receipt returns a C2SP tlog-proof receipt (see package receipt) that the
// entry at index is in the log, in the tree of the log's latest checkpoint.
// It verifies the receipt against the entry's data, which it fetches, and
// the log's key, and checks the receipt's checkpoint against the trusted
// state (advancing it).
func (c *Client) Receipt(ctx context.Context, index uint64) ([]byte, error) {
	var resp *tlogv1.GetReceiptResponse
	err := c.retry(ctx, "GetReceipt", func(ctx context.Context) error {
		var err error
		resp, err = c.rpc.GetReceipt(ctx, &tlogv1.GetReceiptRequest{Log: c.cfg.Log, Leaf: &tlogv1.GetReceiptRequest_Index{Index: index}})
		return err
	})
	if err != nil {
		return nil, err
	}
	doc := resp.GetReceipt()
	r, err := receipt.Parse(doc)
	if err != nil {
		return nil, c.failf("the server's receipt: %w", err)
	}
	if r.Index != index {
		return nil, c.failf("asked for the receipt of entry %d, the server answered one for entry %d", index, r.Index)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s := &entryStream{c: c, ctx: ctx, next: index, end: index + 1}
	es, err := s.read(1, 1)
	if err != nil {
		return nil, err
	}
	cp, _, err := receipt.Verify(r, es[0].LeafHash, c.verifier)
	if err != nil {
		return nil, c.failf("the server's receipt for entry %d: %w", index, err)
	}
	if _, err := c.advance(ctx, VerifiedCheckpoint{Checkpoint: cp, Note: r.Checkpoint}); err != nil {
		return nil, err
	}
	return doc, nil
}
