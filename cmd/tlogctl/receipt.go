package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"golang.org/x/mod/sumdb/note"

	"github.com/tlog-dev/tlog/pkg/checkpoint"
	"github.com/tlog-dev/tlog/pkg/receipt"
	"github.com/tlog-dev/tlog/pkg/tree"
	tlogv1 "github.com/tlog-dev/tlog/proto/tlog/v1"
)

var receiptCmd = &command{
	name:     "receipt",
	synopsis: "(--index N | --data D | --data-file F | --leaf-hash HEX) [--size N] [-o FILE]",
	summary:  "fetch, verify and save an offline-verifiable receipt of an entry",
	help: `Fetches a receipt (a C2SP tlog-proof: the entry's index, its inclusion proof
and the signed checkpoint) for an entry, verifies it as verify-receipt would,
and writes it to FILE, by default <log>-<index>.tlog-proof ("-": standard
output). With --index the entry is fetched and its data hashed to verify the
receipt against.

Anyone with the log's verifier key and the entry's data can later check the
receipt offline with verify-receipt.`,
	setup: func(fs *flag.FlagSet) runFunc {
		var lf leafFlags
		lf.define(fs, true)
		size := fs.Uint64("size", 0, "prove inclusion in the tree of size `N` (default: the latest); the log must have signed a checkpoint at N")
		var out string
		fs.StringVar(&out, "o", "", "write the receipt to `FILE` (default <log>-<index>.tlog-proof; \"-\": standard output)")
		fs.StringVar(&out, "output", "", "same as -o")
		return func(ctx context.Context, c *cli, args []string) error {
			if len(args) > 0 {
				return usagef("unexpected arguments %q", args)
			}
			l, err := lf.resolve(fs, c.stdin)
			if err != nil {
				return err
			}
			return c.receipt(ctx, l, *size, out)
		}
	},
}

// receiptJSON is the JSON output of a verified receipt.
type receiptJSON struct {
	Verified bool   `json:"verified"`
	File     string `json:"file"`
	Origin   string `json:"origin"`
	Index    uint64 `json:"index"`
	LeafHash string `json:"leaf_hash"`
	TreeSize uint64 `json:"tree_size"`
	RootHash string `json:"root_hash"`
	Extra    []byte `json:"extra,omitempty"` // not authenticated
}

func (c *cli) receipt(ctx context.Context, l leaf, size uint64, out string) error {
	v, err := c.verifier(ctx)
	if err != nil {
		return err
	}
	lc, err := c.logClient()
	if err != nil {
		return err
	}
	req := &tlogv1.GetReceiptRequest{Log: c.log, TreeSize: size}
	if l.byIndex {
		if l.hash, err = c.fetchLeafHash(ctx, lc, l.index); err != nil {
			return err
		}
		req.Leaf = &tlogv1.GetReceiptRequest_Index{Index: l.index}
	} else {
		req.Leaf = &tlogv1.GetReceiptRequest_LeafHash{LeafHash: l.hash[:]}
	}
	resp, err := lc.GetReceipt(ctx, req)
	if err != nil {
		return rpcError("GetReceipt", err)
	}
	r, err := receipt.Parse(resp.GetReceipt())
	if err != nil {
		return failf("the server's receipt: %w", err)
	}
	switch {
	case r.Index != resp.GetIndex():
		return failf("the server's receipt is for index %d, but it answered index %d", r.Index, resp.GetIndex())
	case l.byIndex && r.Index != l.index:
		return failf("asked for the receipt of entry %d, the server answered one for entry %d", l.index, r.Index)
	}
	cp, _, err := receipt.Verify(r, l.hash, v)
	if err != nil {
		return failf("the server's receipt for entry %d: %w", r.Index, err)
	}
	if size != 0 && cp.Size != size {
		return failf("asked for a receipt in the tree of size %d, the server answered one of size %d", size, cp.Size)
	}

	if out == "" {
		out = fmt.Sprintf("%s-%d.tlog-proof", c.log, r.Index)
	}
	report := c.stdout
	if out == "-" {
		if _, err := c.stdout.Write(resp.GetReceipt()); err != nil {
			return err
		}
		report = c.stderr
	} else if err := os.WriteFile(out, resp.GetReceipt(), 0o644); err != nil {
		return err
	}
	if c.json {
		if out == "-" {
			return nil // stdout holds the receipt
		}
		return c.emit(receiptJSON{Verified: true, File: out, Origin: cp.Origin, Index: r.Index, LeafHash: fmt.Sprintf("%x", l.hash), TreeSize: cp.Size, RootHash: b64(cp.Hash[:])})
	}
	where := out
	if out == "-" {
		where = "standard output"
	}
	if _, err := fmt.Fprintf(report, "verified receipt of entry %d, written to %s\n", r.Index, where); err != nil {
		return err
	}
	printReceipt(report, cp, r, l.hash, nil)
	return nil
}

// fetchLeafHash fetches the entry at index and returns the hash of its data.
func (c *cli) fetchLeafHash(ctx context.Context, lc tlogv1.LogServiceClient, index uint64) (tree.Hash, error) {
	ctx, cancel := c.streamContext(ctx)
	defer cancel()
	stream, err := lc.GetEntries(ctx, &tlogv1.GetEntriesRequest{Log: c.log, Start: index, End: index + 1})
	if err != nil {
		return tree.Hash{}, rpcError("GetEntries", err)
	}
	msg, err := stream.Recv()
	if err != nil {
		return tree.Hash{}, rpcError("GetEntries", err)
	}
	if len(msg.GetEntries()) != 1 {
		return tree.Hash{}, failf("asked for entry %d, the server answered %d entries", index, len(msg.GetEntries()))
	}
	e := msg.GetEntries()[0]
	if err := checkEntry(e, index, index+1); err != nil {
		return tree.Hash{}, err
	}
	return tree.LeafHash(e.GetData()), nil
}

func printReceipt(w io.Writer, cp checkpoint.Checkpoint, r receipt.Receipt, leaf tree.Hash, n *note.Note) {
	fmt.Fprintf(w, "  origin:     %s\n  index:      %d\n  leaf hash:  %x\n  tree size:  %d\n  root hash:  %s\n", cp.Origin, r.Index, leaf, cp.Size, b64(cp.Hash[:]))
	if len(r.Extra) > 0 {
		fmt.Fprintf(w, "  extra:      %s (not authenticated)\n", displayData(r.Extra))
	}
	if n != nil && len(n.UnverifiedSigs) > 0 {
		fmt.Fprintf(w, "  other signatures: %d, not checked (no keys given for them)\n", len(n.UnverifiedSigs))
	}
}

var verifyReceiptCmd = &command{
	name:     "verify-receipt",
	synopsis: "FILE (--data D | --data-file F | --leaf-hash HEX) --vkey KEY",
	summary:  "verify a receipt offline, against the entry's data and the log's key",
	help: `Verifies a receipt (a C2SP tlog-proof file, "-": standard input) without any
network access: that it is well-formed, that its checkpoint is signed by the
log's key --vkey (required here: there is no server to ask), and that its
inclusion proof leads from the entry's leaf hash to the checkpoint's root
hash. Prints the log's origin, the entry's index and the tree size.

A receipt that is malformed, tampered with, signed by another key or for other
data exits with code 3.`,
	setup: func(fs *flag.FlagSet) runFunc {
		var lf leafFlags
		lf.define(fs, false)
		return func(ctx context.Context, c *cli, args []string) error {
			if len(args) != 1 {
				return usagef("want one FILE, got %d arguments", len(args))
			}
			if args[0] == "-" && lf.dataFile == "-" {
				return usagef("FILE and --data-file cannot both be standard input")
			}
			v, err := c.givenVerifier()
			if err != nil {
				return err
			}
			if v == nil {
				return usagef("--vkey is required: verify-receipt works offline and trusts only the key it is given")
			}
			l, err := lf.resolve(fs, c.stdin)
			if err != nil {
				return err
			}
			return c.verifyReceipt(args[0], l, v)
		}
	},
}

func (c *cli) verifyReceipt(file string, l leaf, v note.Verifier) error {
	var in io.Reader = c.stdin
	if file != "-" {
		f, err := os.Open(file)
		if err != nil {
			return err
		}
		defer f.Close()
		in = f
	}
	b, err := io.ReadAll(io.LimitReader(in, int64(receipt.MaxSize)+1))
	if err != nil {
		return fmt.Errorf("reading %s: %w", file, err)
	}
	r, err := receipt.Parse(b)
	if err != nil {
		return failf("%s is not a valid receipt: %w", file, err)
	}
	cp, n, err := receipt.Verify(r, l.hash, v)
	switch {
	case errors.Is(err, checkpoint.ErrSignature), errors.Is(err, checkpoint.ErrOrigin):
		return failf("%s: the checkpoint is not signed by the key %s+%08x: %w", file, v.Name(), v.KeyHash(), err)
	case errors.Is(err, receipt.ErrInvalid):
		return failf("%s does not prove that the entry with leaf hash %x is in the log: %w", file, l.hash, err)
	case err != nil:
		return failf("%s: %w", file, err)
	}
	if c.json {
		return c.emit(receiptJSON{Verified: true, File: file, Origin: cp.Origin, Index: r.Index, LeafHash: fmt.Sprintf("%x", l.hash), TreeSize: cp.Size, RootHash: b64(cp.Hash[:]), Extra: r.Extra})
	}
	if _, err := fmt.Fprintf(c.stdout, "verified: %s\n", file); err != nil {
		return err
	}
	printReceipt(c.stdout, cp, r, l.hash, n)
	return nil
}
