package client

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/tlog-dev/tlog/pkg/checkpoint"
	"github.com/tlog-dev/tlog/pkg/receipt"
	"github.com/tlog-dev/tlog/pkg/tile"
	"github.com/tlog-dev/tlog/pkg/tree"
	tlogv1 "github.com/tlog-dev/tlog/proto/tlog/v1"
)

// entryOverhead is what an entry costs in flight beside its data and key.
const entryOverhead = 64

// Result says where an appended entry is.
type Result struct {
	// Index is the entry's zero-based index in the log.
	Index uint64
	// LeafHash is the RFC 6962 leaf hash of the entry at Index: that of the
	// appended data, except for a duplicate found by a caller's idempotency
	// key that was first used for other data.
	LeafHash tree.Hash
	// Duplicate is true if the entry's identity was already in the log, so
	// that nothing new was appended: a caller's idempotency key used
	// before, or an earlier attempt of this very append that the server
	// committed although the client saw it fail.
	Duplicate bool
	// Checkpoint is the log's signed checkpoint whose tree contains Index.
	Checkpoint VerifiedCheckpoint
}

// Proof is a verified proof that an entry is in the log.
type Proof struct {
	// Index, LeafHash and Duplicate are as in Result.
	Index     uint64
	LeafHash  tree.Hash
	Duplicate bool
	// InclusionProof is the RFC 6962 inclusion proof of LeafHash at Index in
	// the tree of Checkpoint, verified.
	InclusionProof [][]byte
	// Checkpoint is the verified checkpoint the proof leads to. With
	// WithCosignatureVerifiers, it carries the required cosignatures.
	Checkpoint VerifiedCheckpoint
}

// Receipt returns the proof as a C2SP tlog-proof document (see package
// receipt), which anyone holding the log's verifier key and the entry can
// verify offline.
func (p Proof) Receipt() []byte {
	return receipt.Receipt{Index: p.Index, Proof: p.InclusionProof, Checkpoint: p.Checkpoint.Note}.Marshal()
}

// AppendOption is an option of Append and AppendAndProve.
type AppendOption func(*appendOptions)

type appendOptions struct {
	key       string
	keySet    bool
	k         int
	witnesses []note.Verifier
	policySet bool
}

// WithIdempotencyKey sets the entry's idempotency key, instead of a random
// one. The log stores one entry per key: appending with a key already in the
// log appends nothing and returns the original entry's index and leaf hash,
// with Duplicate set, whatever the data. The key must not be empty.
func WithIdempotencyKey(key string) AppendOption {
	return func(o *appendOptions) { o.key, o.keySet = key, true }
}

// WithCosignatureVerifiers makes AppendAndProve require a checkpoint that
// carries valid cosignatures (C2SP tlog-cosignature) by at least k distinct
// keys among witnesses (such as verifiers from
// github.com/transparency-dev/formats/note.NewVerifierForCosignatureV1). A
// cosignature by a given witness key that does not verify rejects the
// checkpoint. If no checkpoint that contains the entry satisfies the policy,
// AppendAndProve fails with an error wrapping ErrWitnessPolicy (and
// ErrVerification). Append does not take this option.
func WithCosignatureVerifiers(k int, witnesses ...note.Verifier) AppendOption {
	return func(o *appendOptions) { o.k, o.witnesses, o.policySet = k, witnesses, true }
}

func (o *appendOptions) check() error {
	if o.keySet && o.key == "" {
		return errors.New("client: WithIdempotencyKey: empty key")
	}
	if o.policySet {
		if o.k < 1 || o.k > len(o.witnesses) {
			return fmt.Errorf("client: WithCosignatureVerifiers: k is %d, want 1 to the number of witnesses (%d)", o.k, len(o.witnesses))
		}
		for _, w := range o.witnesses {
			if w == nil {
				return errors.New("client: WithCosignatureVerifiers: nil verifier")
			}
		}
	}
	return nil
}

// pending is an entry waiting for its batch.
type pending struct {
	ctx    context.Context
	data   []byte
	key    string
	ownKey bool // the client chose the key
	cost   int64
	added  time.Time
	done   chan outcome // buffered: the batch never blocks on it
}

type outcome struct {
	res Result
	err error
}

// Append appends data to the log as one entry and returns where it is,
// once the server has durably committed it under a signed checkpoint. It
// sends the entry in one RPC with those of concurrent Appends (see
// Config.MaxBatch and MaxBatchDelay), retrying transient failures with the
// same idempotency key.
//
// Append verifies the checkpoint's signature, that the index is in its tree
// and that the leaf hash is that of data; it does not fetch an inclusion
// proof (AppendAndProve does). data must be 1 to 65535 bytes; Append copies
// it. The entries of concurrent Appends are appended in no particular order.
//
// If ctx ends first, Append returns an error wrapping ctx.Err(); if the
// entry was already sent it may still be appended. After Close, Append
// fails with ErrClosed.
func (c *Client) Append(ctx context.Context, data []byte, opts ...AppendOption) (Result, error) {
	var o appendOptions
	for _, opt := range opts {
		opt(&o)
	}
	if o.policySet {
		return Result{}, errors.New("client: Append does not take WithCosignatureVerifiers; use AppendAndProve")
	}
	return c.append(ctx, data, &o)
}

func (c *Client) append(ctx context.Context, data []byte, o *appendOptions) (Result, error) {
	switch err := o.check(); {
	case err != nil:
		return Result{}, err
	case len(data) == 0:
		return Result{}, errors.New("client: empty entry (the log does not take empty entries)")
	case len(data) > tile.MaxEntrySize:
		return Result{}, fmt.Errorf("client: entry of %d bytes is larger than the limit of %d", len(data), tile.MaxEntrySize)
	}
	c.mu.Lock()
	closed := c.closed
	c.mu.Unlock()
	if closed {
		return Result{}, ErrClosed
	}
	// A copy: a retry re-sends the data, maybe after the caller gave up.
	p := &pending{ctx: ctx, data: bytes.Clone(data), key: o.key, done: make(chan outcome, 1)}
	if !o.keySet {
		p.key, p.ownKey = newKey(), true
	}
	p.cost = int64(len(data) + len(p.key) + entryOverhead)
	if err := c.budget.acquire(ctx, p.cost); err != nil {
		return Result{}, fmt.Errorf("client: Append: waiting for room in flight: %w", err)
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		c.budget.release(p.cost)
		return Result{}, ErrClosed
	}
	p.added = time.Now()
	wasEmpty := len(c.queue) == 0
	c.queue = append(c.queue, p)
	c.queueBytes += len(p.data) + len(p.key)
	full := len(c.queue) >= c.cfg.MaxBatch || c.queueBytes >= c.cfg.MaxBatchBytes
	c.mu.Unlock()
	if wasEmpty || full {
		c.signal()
	}
	select {
	case out := <-p.done:
		return out.res, out.err
	case <-ctx.Done():
		return Result{}, fmt.Errorf("client: Append: %w", ctx.Err())
	}
}

// newKey returns a random idempotency key: 16 bytes in hexadecimal.
func newKey() string {
	var b [16]byte
	rand.Read(b[:]) // never fails
	return hex.EncodeToString(b[:])
}

// signal wakes the batcher.
func (c *Client) signal() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// batcher sends the pooled entries in batches until Close, then sends what
// is left.
func (c *Client) batcher() {
	defer close(c.batcherDone)
	for {
		c.mu.Lock()
		if len(c.queue) == 0 {
			closed := c.closed
			c.mu.Unlock()
			if closed {
				return
			}
			<-c.wake
			continue
		}
		ready := c.closed || len(c.queue) >= c.cfg.MaxBatch || c.queueBytes >= c.cfg.MaxBatchBytes
		wait := time.Until(c.queue[0].added.Add(c.cfg.MaxBatchDelay))
		if !ready && wait > 0 {
			c.mu.Unlock()
			t := time.NewTimer(wait)
			select {
			case <-t.C:
			case <-c.wake:
				t.Stop()
			}
			continue
		}
		batch := c.takeBatch()
		c.mu.Unlock()
		c.batches.Go(func() { c.send(batch) })
	}
}

// takeBatch removes the next batch from the queue. c.mu must be held.
func (c *Client) takeBatch() []*pending {
	n, size := 0, 0
	for n < len(c.queue) && n < c.cfg.MaxBatch {
		s := len(c.queue[n].data) + len(c.queue[n].key)
		if n > 0 && size+s > c.cfg.MaxBatchBytes {
			break
		}
		size += s
		n++
	}
	batch := slices.Clone(c.queue[:n])
	clear(c.queue[:n])
	c.queue = c.queue[n:]
	if len(c.queue) == 0 {
		c.queue = nil
	}
	c.queueBytes -= size
	return batch
}

// send appends a batch, retrying, verifies the answer and hands each entry
// its outcome.
func (c *Client) send(batch []*pending) {
	var cost int64
	live := batch[:0]
	for _, p := range batch {
		cost += p.cost
		if err := p.ctx.Err(); err != nil {
			// The caller gave up before its entry was sent: drop it.
			p.done <- outcome{err: err}
			continue
		}
		live = append(live, p)
	}
	defer c.budget.release(cost)
	if len(live) == 0 {
		return
	}
	req := &tlogv1.AppendRequest{Log: c.cfg.Log, Entries: make([]*tlogv1.AppendEntry, len(live))}
	for i, p := range live {
		req.Entries[i] = &tlogv1.AppendEntry{Data: p.data, IdempotencyKey: p.key}
	}
	var resp *tlogv1.AppendResponse
	// The batch outlives its callers' contexts: it holds other callers'
	// entries, and is bounded by the retry policy.
	err := c.retry(context.Background(), "Append", func(ctx context.Context) error {
		var err error
		resp, err = c.rpc.Append(ctx, req)
		return err
	})
	var results []Result
	if err == nil {
		results, err = c.checkAppend(live, resp)
	}
	if err != nil {
		c.log.Warn("append failed", "entries", len(live), "err", err)
		for _, p := range live {
			p.done <- outcome{err: err}
		}
		return
	}
	for i, p := range live {
		p.done <- outcome{res: results[i]}
	}
}

// checkAppend verifies the answer to an Append RPC of batch.
func (c *Client) checkAppend(batch []*pending, resp *tlogv1.AppendResponse) ([]Result, error) {
	vc, err := c.open(resp.GetCheckpoint())
	if err != nil {
		return nil, fmt.Errorf("the checkpoint answered by Append: %w", err)
	}
	if err := c.checkKnown(vc); err != nil {
		return nil, err
	}
	rs := resp.GetResults()
	if len(rs) != len(batch) {
		return nil, c.failf("sent %d entries, the server answered %d results", len(batch), len(rs))
	}
	out := make([]Result, len(batch))
	for i, r := range rs {
		if len(r.GetLeafHash()) != len(tree.Hash{}) {
			return nil, c.failf("the server answered a leaf hash of %d bytes", len(r.GetLeafHash()))
		}
		lh := tree.Hash(r.GetLeafHash())
		if want := tree.LeafHash(batch[i].data); lh != want {
			// Only a key the caller reused for other data names an entry
			// with another leaf hash; the client's own keys are unique.
			if !r.GetDuplicate() || batch[i].ownKey {
				return nil, c.failf("the server answered leaf hash %x for index %d, but the data hashes to %x", lh, r.GetIndex(), want)
			}
			c.log.Warn("idempotency key already names an entry with other data; nothing was appended", "key", batch[i].key, "index", r.GetIndex())
		}
		if r.GetIndex() >= vc.Size {
			return nil, c.failf("the server answered index %d, not in the tree of size %d of its checkpoint", r.GetIndex(), vc.Size)
		}
		out[i] = Result{Index: r.GetIndex(), LeafHash: lh, Duplicate: r.GetDuplicate(), Checkpoint: vc}
	}
	return out, nil
}

// AppendAndProve appends data as Append does, then proves it: it fetches the
// inclusion proof of the entry in the tree of the checkpoint the append
// answered (or, with WithCosignatureVerifiers, of a checkpoint that
// satisfies the witness policy), verifies it, and advances the trusted state
// to that checkpoint through a verified consistency proof. Verification
// failures wrap ErrVerification (ErrFork if the checkpoint is not consistent
// with the trusted state).
func (c *Client) AppendAndProve(ctx context.Context, data []byte, opts ...AppendOption) (Proof, error) {
	var o appendOptions
	for _, opt := range opts {
		opt(&o)
	}
	r, err := c.append(ctx, data, &o)
	if err != nil {
		return Proof{}, err
	}
	vc := r.Checkpoint
	if o.policySet {
		if vc, err = c.witnessed(ctx, vc, r.Index, o.k, o.witnesses); err != nil {
			return Proof{}, err
		}
	}
	hashes, err := c.inclusionProof(ctx, r.Index, r.LeafHash, vc)
	if err != nil {
		return Proof{}, err
	}
	if _, err := c.advance(ctx, vc); err != nil {
		return Proof{}, err
	}
	return Proof{Index: r.Index, LeafHash: r.LeafHash, Duplicate: r.Duplicate, InclusionProof: hashes, Checkpoint: vc}, nil
}

// witnessed returns a checkpoint that contains index and satisfies the
// witness policy: the append's own, or else the log's latest.
func (c *Client) witnessed(ctx context.Context, appended VerifiedCheckpoint, index uint64, k int, witnesses []note.Verifier) (VerifiedCheckpoint, error) {
	if vc, err := openCosigned(appended.Note, c.verifier, k, witnesses); err == nil {
		return vc, nil
	}
	var resp *tlogv1.GetCheckpointResponse
	err := c.retry(ctx, "GetCheckpoint", func(ctx context.Context) error {
		var err error
		resp, err = c.rpc.GetCheckpoint(ctx, &tlogv1.GetCheckpointRequest{Log: c.cfg.Log})
		return err
	})
	if err != nil {
		return VerifiedCheckpoint{}, err
	}
	vc, err := openCosigned(resp.GetCheckpoint(), c.verifier, k, witnesses)
	if err != nil {
		c.log.Error("verification failed", "err", err)
		return VerifiedCheckpoint{}, fmt.Errorf("neither the checkpoint of the append nor the latest one: %w", err)
	}
	if index >= vc.Size {
		return VerifiedCheckpoint{}, c.failf("%w: the newest checkpoint with %d cosignatures has size %d, and does not contain entry %d yet", ErrWitnessPolicy, k, vc.Size, index)
	}
	if err := c.checkKnown(vc); err != nil {
		return VerifiedCheckpoint{}, err
	}
	return vc, nil
}

// openCosigned verifies a checkpoint signed by the log's key log and counts
// the distinct witness keys among witnesses whose cosignatures verified. It
// fails, wrapping ErrVerification, if the log's signature or a cosignature by
// a given witness does not verify, and also ErrWitnessPolicy if fewer than k
// witnesses cosigned.
func openCosigned(signed []byte, log note.Verifier, k int, witnesses []note.Verifier) (VerifiedCheckpoint, error) {
	cp, n, err := checkpoint.Open(signed, log, witnesses...)
	if err != nil {
		return VerifiedCheckpoint{}, fmt.Errorf("%w: checkpoint: %w", ErrVerification, err)
	}
	type key struct {
		name string
		hash uint32
	}
	want := make(map[key]bool, len(witnesses))
	for _, w := range witnesses {
		want[key{w.Name(), w.KeyHash()}] = true
	}
	delete(want, key{log.Name(), log.KeyHash()})
	got := make(map[key]bool)
	for _, s := range n.Sigs {
		if k := (key{s.Name, s.Hash}); want[k] {
			got[k] = true
		}
	}
	if len(got) < k {
		return VerifiedCheckpoint{}, fmt.Errorf("%w: %w: the checkpoint of size %d has verified cosignatures by %d of the witnesses, want %d", ErrVerification, ErrWitnessPolicy, cp.Size, len(got), k)
	}
	return VerifiedCheckpoint{Checkpoint: cp, Note: signed}, nil
}
