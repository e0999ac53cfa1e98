package client

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"math/bits"

	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"

	"github.com/tlog-dev/tlog/pkg/checkpoint"
	"github.com/tlog-dev/tlog/pkg/tree"
	tlogv1 "github.com/tlog-dev/tlog/proto/tlog/v1"
)

// maxKnown bounds the sizes remembered as consistent with the trusted state.
const maxKnown = 1024

var rangeFactory = &compact.RangeFactory{Hash: rfc6962.DefaultHasher.HashChildren}

// advance makes vc, a verified checkpoint, part of the trusted state:
//   - with no trusted checkpoint yet, vc becomes it;
//   - a larger vc must be proven consistent with the trusted one, and
//     replaces it (and is stored);
//   - a vc of the trusted size must have the same root hash;
//   - a smaller vc must be proven consistent with the trusted one (it is
//     remembered, so proven once).
//
// It returns the trusted checkpoint after the change, which may be newer than
// vc. A checkpoint that is not consistent is ErrFork.
func (c *Client) advance(ctx context.Context, vc VerifiedCheckpoint) (VerifiedCheckpoint, error) {
	c.advanceMu.Lock()
	defer c.advanceMu.Unlock()
	// Only advance changes trusted, and it holds advanceMu.
	c.stateMu.Lock()
	t := c.trusted
	h, known := c.known[vc.Size]
	c.stateMu.Unlock()
	if t != nil {
		if known {
			if h != vc.Hash {
				return VerifiedCheckpoint{}, c.forked(vc.Size, h, vc.Hash)
			}
			return *t, nil
		}
		if vc.Size < t.Size {
			if err := c.consistent(ctx, vc.Checkpoint, t.Checkpoint); err != nil {
				return VerifiedCheckpoint{}, err
			}
			c.stateMu.Lock()
			c.remember(vc)
			c.stateMu.Unlock()
			return *t, nil
		}
		// vc.Size > t.Size: vc.Size == t.Size is known.
		if err := c.consistent(ctx, t.Checkpoint, vc.Checkpoint); err != nil {
			return VerifiedCheckpoint{}, err
		}
	}
	if s := c.cfg.TrustedState; s != nil {
		if err := s.Store(vc.Note); err != nil {
			return VerifiedCheckpoint{}, fmt.Errorf("client: storing the trusted state (checkpoint of size %d, verified): %w", vc.Size, err)
		}
	}
	c.stateMu.Lock()
	c.trusted = &vc
	c.remember(vc)
	c.stateMu.Unlock()
	return vc, nil
}

// remember records that vc is consistent with the trusted state. c.stateMu
// must be held.
func (c *Client) remember(vc VerifiedCheckpoint) {
	if len(c.known) >= maxKnown {
		clear(c.known)
		c.known[c.trusted.Size] = c.trusted.Hash
	}
	c.known[vc.Size] = vc.Hash
}

// checkKnown checks, without any RPC, that vc does not contradict a
// checkpoint of the same size known to be consistent with the trusted state.
func (c *Client) checkKnown(vc VerifiedCheckpoint) error {
	c.stateMu.Lock()
	defer c.stateMu.Unlock()
	if h, ok := c.known[vc.Size]; ok && h != vc.Hash {
		return c.forked(vc.Size, h, vc.Hash)
	}
	return nil
}

func (c *Client) forked(size uint64, trusted, got tree.Hash) error {
	return c.failf("%w: the log signed two root hashes for size %d: %s (trusted) and %s", ErrFork, size, b64(trusted[:]), b64(got[:]))
}

// trustedSize returns the size of the trusted checkpoint, and whether there
// is one.
func (c *Client) trustedSize() (uint64, bool) {
	c.stateMu.Lock()
	defer c.stateMu.Unlock()
	if c.trusted == nil {
		return 0, false
	}
	return c.trusted.Size, true
}

// consistent fetches and verifies the consistency proof that the signed tree
// newer extends the signed tree older. A proof that does not verify is
// ErrFork: both trees are signed, and a log that did not fork can always
// prove them consistent.
func (c *Client) consistent(ctx context.Context, older, newer checkpoint.Checkpoint) error {
	if older.Size == 0 {
		if older.Hash != tree.EmptyRoot() {
			return c.failf("%w: the log signed root hash %s for the empty tree", ErrFork, b64(older.Hash[:]))
		}
		return nil
	}
	var resp *tlogv1.GetConsistencyProofResponse
	err := c.retry(ctx, "GetConsistencyProof", func(ctx context.Context) error {
		var err error
		resp, err = c.rpc.GetConsistencyProof(ctx, &tlogv1.GetConsistencyProofRequest{Log: c.cfg.Log, FromSize: older.Size, ToSize: newer.Size})
		return err
	})
	if err != nil {
		return err
	}
	if err := c.checkEcho(resp.GetCheckpoint(), newer); err != nil {
		return err
	}
	hashes := resp.GetHashes()
	if err := checkHashes(hashes); err != nil {
		return c.failf("consistency proof from size %d to %d: %w", older.Size, newer.Size, err)
	}
	if err := proof.VerifyConsistency(rfc6962.DefaultHasher, older.Size, newer.Size, hashes, older.Hash[:], newer.Hash[:]); err != nil {
		return c.failf("%w: the tree of size %d (root %s) is not proven to extend the tree of size %d (root %s): %s",
			ErrFork, newer.Size, b64(newer.Hash[:]), older.Size, b64(older.Hash[:]), proofError(err))
	}
	return nil
}

// inclusionProof fetches and verifies the inclusion proof of the leaf at
// index in the tree of vc.
func (c *Client) inclusionProof(ctx context.Context, index uint64, leaf tree.Hash, vc VerifiedCheckpoint) ([][]byte, error) {
	var resp *tlogv1.GetInclusionProofResponse
	err := c.retry(ctx, "GetInclusionProof", func(ctx context.Context) error {
		var err error
		resp, err = c.rpc.GetInclusionProof(ctx, &tlogv1.GetInclusionProofRequest{
			Log: c.cfg.Log, Leaf: &tlogv1.GetInclusionProofRequest_Index{Index: index}, TreeSize: vc.Size,
		})
		return err
	})
	if err != nil {
		return nil, err
	}
	if resp.GetIndex() != index {
		return nil, c.failf("asked for the inclusion proof of entry %d, the server answered one for entry %d", index, resp.GetIndex())
	}
	if err := c.checkEcho(resp.GetCheckpoint(), vc.Checkpoint); err != nil {
		return nil, err
	}
	hashes := resp.GetHashes()
	if err := c.verifyInclusion(index, leaf, hashes, vc.Checkpoint); err != nil {
		return nil, err
	}
	return hashes, nil
}

// verifyInclusion verifies that hashes prove leaf at index in the tree of cp.
func (c *Client) verifyInclusion(index uint64, leaf tree.Hash, hashes [][]byte, cp checkpoint.Checkpoint) error {
	if index >= cp.Size {
		return c.failf("entry %d is not in the tree of size %d", index, cp.Size)
	}
	if err := checkHashes(hashes); err != nil {
		return c.failf("inclusion proof of entry %d: %w", index, err)
	}
	if err := proof.VerifyInclusion(rfc6962.DefaultHasher, index, cp.Size, leaf[:], hashes, cp.Hash[:]); err != nil {
		return c.failf("inclusion proof of entry %d (leaf hash %x) in the tree of size %d: %s", index, leaf, cp.Size, proofError(err))
	}
	return nil
}

// checkEcho checks the checkpoint the server sent along with a proof for the
// tree of want: it must verify and be of want's tree.
func (c *Client) checkEcho(signed []byte, want checkpoint.Checkpoint) error {
	got, err := c.open(signed)
	if err != nil {
		return err
	}
	switch {
	case got.Size != want.Size:
		return c.failf("asked for a proof in the tree of size %d, the server answered with a checkpoint of size %d", want.Size, got.Size)
	case got.Hash != want.Hash:
		return c.forked(want.Size, want.Hash, got.Hash)
	}
	return nil
}

// leftRange returns the compact range of the leaves [0, index) of the tree
// of cp, taken from hashes, the verified inclusion proof of leaf index: the
// left-hand siblings on the leaf's path are the roots of the perfect
// subtrees that cover [0, index), one per bit set in index, from the lowest
// level up. (In an RFC 6962 tree every left subtree is perfect.)
func leftRange(index, size uint64, hashes [][]byte) (*compact.Range, error) {
	inner := bits.Len64(index ^ (size - 1))
	if inner > len(hashes) {
		return nil, fmt.Errorf("inclusion proof of %d hashes is too short", len(hashes))
	}
	var left [][]byte
	for i := range inner {
		if index>>i&1 == 1 {
			left = append(left, hashes[i])
		}
	}
	left = append(left, hashes[inner:]...)
	// The compact range lists its subtrees from left (highest) to right.
	for i, j := 0, len(left)-1; i < j; i, j = i+1, j-1 {
		left[i], left[j] = left[j], left[i]
	}
	return rangeFactory.NewRange(0, index, left)
}

// checkHashes checks that every proof hash has the size of a SHA-256 hash.
func checkHashes(hashes [][]byte) error {
	for i, h := range hashes {
		if len(h) != len(tree.Hash{}) {
			return fmt.Errorf("hash %d is %d bytes, want %d", i, len(h), len(tree.Hash{}))
		}
	}
	return nil
}

// proofError describes an error of proof.VerifyInclusion or
// proof.VerifyConsistency, whose root mismatch message prints byte arrays.
func proofError(err error) string {
	var mismatch proof.RootMismatchError
	if errors.As(err, &mismatch) {
		return fmt.Sprintf("it leads to root hash %s, not to %s", b64(mismatch.CalculatedRoot), b64(mismatch.ExpectedRoot))
	}
	return err.Error()
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }
