package main

import (
	"context"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"

	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tlog-dev/tlog/pkg/checkpoint"
	"github.com/tlog-dev/tlog/pkg/tree"
	tlogv1 "github.com/tlog-dev/tlog/proto/tlog/v1"
)

// maxRecompute is the most entries "prove consistency" downloads to
// recompute the root of a tree size the log signed no checkpoint at.
const maxRecompute = 1 << 20

var proveInclusionCmd = &command{
	name:     "prove inclusion",
	synopsis: "(--index N | --data D | --data-file F | --leaf-hash HEX) [--size N]",
	summary:  "prove that an entry is in the log",
	help: `Fetches the inclusion proof of an entry in the tree of the latest checkpoint
(or of the checkpoint of tree size --size), verifies the checkpoint's signature
and the proof, and prints the result.

With --index the entry is fetched too and its data hashed, so the proof is
checked against the hash of the data the log holds at that index. With --data
or --data-file the entry is the first one in the log with that data; a server
answer of NotFound means the log says it holds no such entry (exit code 1).`,
	setup: func(fs *flag.FlagSet) runFunc {
		var lf leafFlags
		lf.define(fs, true)
		size := fs.Uint64("size", 0, "prove inclusion in the tree of size `N` (default: the latest); the log must have signed a checkpoint at N")
		return func(ctx context.Context, c *cli, args []string) error {
			if len(args) > 0 {
				return usagef("unexpected arguments %q", args)
			}
			l, err := lf.resolve(fs, c.stdin)
			if err != nil {
				return err
			}
			return c.proveInclusion(ctx, l, *size)
		}
	},
}

// inclusionJSON is the JSON output of a verified inclusion proof.
type inclusionJSON struct {
	Verified   bool     `json:"verified"`
	Index      uint64   `json:"index"`
	LeafHash   string   `json:"leaf_hash"`
	Origin     string   `json:"origin"`
	TreeSize   uint64   `json:"tree_size"`
	RootHash   string   `json:"root_hash"`
	Proof      [][]byte `json:"proof"`
	Checkpoint string   `json:"checkpoint"`
}

func (c *cli) proveInclusion(ctx context.Context, l leaf, size uint64) error {
	v, err := c.verifier(ctx)
	if err != nil {
		return err
	}
	lc, err := c.logClient()
	if err != nil {
		return err
	}
	var (
		index   uint64
		hashes  [][]byte
		note    []byte
		claimed uint64 // the tree size the server says its proof is for
	)
	if l.byIndex {
		resp, err := lc.GetEntryAndProof(ctx, &tlogv1.GetEntryAndProofRequest{Log: c.log, Index: l.index, TreeSize: size})
		if err != nil {
			return rpcError("GetEntryAndProof", err)
		}
		if err := checkEntry(resp.GetEntry(), l.index, l.index+1); err != nil {
			return err
		}
		index, hashes, note = l.index, resp.GetInclusionProof(), resp.GetCheckpoint()
		l.hash = tree.LeafHash(resp.GetEntry().GetData())
	} else {
		resp, err := lc.GetInclusionProof(ctx, &tlogv1.GetInclusionProofRequest{
			Log: c.log, Leaf: &tlogv1.GetInclusionProofRequest_LeafHash{LeafHash: l.hash[:]}, TreeSize: size,
		})
		if err != nil {
			return rpcError("GetInclusionProof", err)
		}
		index, hashes, note = resp.GetIndex(), resp.GetHashes(), resp.GetCheckpoint()
		claimed = resp.GetTreeSize()
	}
	cp, err := openCheckpoint(note, v)
	if err != nil {
		return err
	}
	switch {
	case size != 0 && cp.Size != size:
		return failf("asked for a proof in the tree of size %d, the server answered a checkpoint of size %d", size, cp.Size)
	case !l.byIndex && claimed != cp.Size:
		return failf("the server answered a proof for the tree of size %d with a checkpoint of size %d", claimed, cp.Size)
	}
	if err := verifyInclusion(index, l.hash, hashes, cp); err != nil {
		return err
	}
	if c.json {
		return c.emit(inclusionJSON{
			Verified: true, Index: index, LeafHash: fmt.Sprintf("%x", l.hash), Origin: cp.Origin,
			TreeSize: cp.Size, RootHash: b64(cp.Hash[:]), Proof: hashes, Checkpoint: string(note),
		})
	}
	_, err = fmt.Fprintf(c.stdout, "verified: entry %d is in the log\n  origin:     %s\n  leaf hash:  %x\n  tree size:  %d\n  root hash:  %s\n  proof:      %s\n",
		index, cp.Origin, l.hash, cp.Size, b64(cp.Hash[:]), hashCount(len(hashes)))
	return err
}

var proveConsistencyCmd = &command{
	name:     "prove consistency",
	synopsis: "FROM [TO]",
	summary:  "prove that the log's tree of size TO extends its tree of size FROM",
	help: `Fetches the consistency proof between tree sizes FROM and TO (default: the
latest checkpoint), the signed checkpoints at both sizes, verifies both
signatures and the proof, and prints the result.

If the log signed no checkpoint at size FROM (it signs one per batch, not one
per entry), tlogctl downloads the first FROM entries (at most 1048576) and
recomputes the root hash of that tree from them instead, and says so. The
proof then shows that the signed tree of size TO starts with exactly those
entries.`,
	setup: func(fs *flag.FlagSet) runFunc {
		return func(ctx context.Context, c *cli, args []string) error {
			if len(args) < 1 || len(args) > 2 {
				return usagef("want FROM [TO], got %d arguments", len(args))
			}
			from, err := parseUint("FROM", args[0])
			if err != nil {
				return usagef("%v", err)
			}
			if from == 0 {
				return usagef("FROM must be at least 1 (every tree extends the empty tree)")
			}
			var to uint64
			if len(args) == 2 {
				if to, err = parseUint("TO", args[1]); err != nil {
					return usagef("%v", err)
				}
				if to < from {
					return usagef("TO %d is smaller than FROM %d", to, from)
				}
			}
			return c.proveConsistency(ctx, from, to)
		}
	},
}

// consistencyJSON is the JSON output of a verified consistency proof.
type consistencyJSON struct {
	Verified       bool     `json:"verified"`
	Origin         string   `json:"origin"`
	FromSize       uint64   `json:"from_size"`
	FromRootHash   string   `json:"from_root_hash"`
	FromCheckpoint string   `json:"from_checkpoint,omitempty"` // empty when recomputed from entries
	ToSize         uint64   `json:"to_size"`
	ToRootHash     string   `json:"to_root_hash"`
	ToCheckpoint   string   `json:"to_checkpoint"`
	Proof          [][]byte `json:"proof"`
}

func (c *cli) proveConsistency(ctx context.Context, from, to uint64) error {
	v, err := c.verifier(ctx)
	if err != nil {
		return err
	}
	lc, err := c.logClient()
	if err != nil {
		return err
	}
	resp, err := lc.GetConsistencyProof(ctx, &tlogv1.GetConsistencyProofRequest{Log: c.log, FromSize: from, ToSize: to})
	if err != nil {
		return rpcError("GetConsistencyProof", err)
	}
	newer, err := openCheckpoint(resp.GetCheckpoint(), v)
	if err != nil {
		return err
	}
	switch {
	case to != 0 && newer.Size != to:
		return failf("asked for a proof to the tree of size %d, the server answered a checkpoint of size %d", to, newer.Size)
	case newer.Size < from:
		return failf("asked for a proof from the tree of size %d, the server answered a checkpoint of size %d", from, newer.Size)
	case resp.GetToSize() != newer.Size || resp.GetFromSize() != from:
		return failf("the server answered a proof from size %d to %d, asked from %d to %d", resp.GetFromSize(), resp.GetToSize(), from, newer.Size)
	}

	var older checkpoint.Checkpoint
	var olderNote []byte
	cresp, err := lc.GetCheckpoint(ctx, &tlogv1.GetCheckpointRequest{Log: c.log, TreeSize: from})
	switch {
	case status.Code(err) == codes.NotFound:
		fmt.Fprintf(c.stderr, "tlogctl: the log signed no checkpoint at size %d; recomputing its root hash from its first %d entries\n", from, from)
		if older, err = c.recomputeTree(ctx, lc, from); err != nil {
			return err
		}
	case err != nil:
		return rpcError("GetCheckpoint", err)
	default:
		olderNote = cresp.GetCheckpoint()
		if older, err = openCheckpoint(olderNote, v); err != nil {
			return err
		}
		if older.Size != from {
			return failf("asked for the checkpoint of size %d, the server answered one of size %d", from, older.Size)
		}
	}

	hashes := resp.GetHashes()
	for i, h := range hashes {
		if len(h) != hashSize {
			return failf("consistency proof: hash %d is %d bytes, want %d", i, len(h), hashSize)
		}
	}
	if err := proof.VerifyConsistency(rfc6962.DefaultHasher, from, newer.Size, hashes, older.Hash[:], newer.Hash[:]); err != nil {
		return failf("the consistency proof from size %d (root hash %s) to size %d (root hash %s) does not verify: %s; the log's history was rewritten, or the proof is wrong",
			from, b64(older.Hash[:]), newer.Size, b64(newer.Hash[:]), proofError(err))
	}
	if c.json {
		return c.emit(consistencyJSON{
			Verified: true, Origin: newer.Origin,
			FromSize: from, FromRootHash: b64(older.Hash[:]), FromCheckpoint: string(olderNote),
			ToSize: newer.Size, ToRootHash: b64(newer.Hash[:]), ToCheckpoint: string(resp.GetCheckpoint()),
			Proof: hashes,
		})
	}
	source := "signed checkpoint"
	if olderNote == nil {
		source = fmt.Sprintf("recomputed from %d entries", from)
	}
	_, err = fmt.Fprintf(c.stdout, "verified: the tree of size %d extends the tree of size %d\n  origin:     %s\n  from:       size %d, root hash %s (%s)\n  to:         size %d, root hash %s (signed checkpoint)\n  proof:      %s\n",
		newer.Size, from, newer.Origin, from, b64(older.Hash[:]), source, newer.Size, b64(newer.Hash[:]), hashCount(len(hashes)))
	return err
}

// recomputeTree downloads entries [0, size), checks each against its leaf
// hash, and returns the (unsigned) checkpoint of the tree they make.
func (c *cli) recomputeTree(ctx context.Context, lc tlogv1.LogServiceClient, size uint64) (checkpoint.Checkpoint, error) {
	if size > maxRecompute {
		return checkpoint.Checkpoint{}, fmt.Errorf("the log signed no checkpoint at size %d, and recomputing it would download more than %d entries; use a size the log signed a checkpoint at", size, maxRecompute)
	}
	ctx, cancel := c.streamContext(ctx)
	defer cancel()
	stream, err := lc.GetEntries(ctx, &tlogv1.GetEntriesRequest{Log: c.log, Start: 0, End: size})
	if err != nil {
		return checkpoint.Checkpoint{}, rpcError("GetEntries", err)
	}
	rng := (&compact.RangeFactory{Hash: rfc6962.DefaultHasher.HashChildren}).NewEmptyRange(0)
	for rng.End() < size {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return checkpoint.Checkpoint{}, failf("the server answered entries up to index %d, fewer than the %d of the tree", rng.End(), size)
		}
		if err != nil {
			return checkpoint.Checkpoint{}, rpcError("GetEntries", err)
		}
		for _, e := range msg.GetEntries() {
			if err := checkEntry(e, rng.End(), size); err != nil {
				return checkpoint.Checkpoint{}, err
			}
			h := tree.LeafHash(e.GetData())
			if err := rng.Append(h[:], nil); err != nil {
				return checkpoint.Checkpoint{}, err
			}
		}
	}
	root, err := rng.GetRootHash(nil)
	if err != nil {
		return checkpoint.Checkpoint{}, err
	}
	return checkpoint.Checkpoint{Size: size, Hash: tree.Hash(root)}, nil
}

func hashCount(n int) string {
	if n == 1 {
		return "1 hash"
	}
	return fmt.Sprintf("%d hashes", n)
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }
