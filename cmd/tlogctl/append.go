package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"golang.org/x/mod/sumdb/note"

	"github.com/tlog-dev/tlog/pkg/checkpoint"
	"github.com/tlog-dev/tlog/pkg/tile"
	"github.com/tlog-dev/tlog/pkg/tree"
	tlogv1 "github.com/tlog-dev/tlog/proto/tlog/v1"
)

const (
	// maxBatchEntries is the most entries sent in one Append call.
	maxBatchEntries = 1000
	// maxBatchBytes is the most entry data sent in one Append call,
	// leaving room under gRPC's default 4 MiB message limit of the server.
	maxBatchBytes = 3 << 20
	// proofWorkers is the number of inclusion proofs fetched at once.
	proofWorkers = 16
)

var appendCmd = &command{
	name:     "append",
	synopsis: "[--key K] [--file F]... [DATA...]",
	summary:  "append entries, then verify the checkpoint and an inclusion proof of each",
	help: `Appends one entry per DATA argument, or one per --file (its whole content),
or, when neither is given, one per line of standard input (the line without
its final "\n"; a "\r" is kept).

Entries must not be empty and may be at most 65535 bytes. tlogctl checks every
entry before sending any: an empty argument, an empty file or an empty line on
standard input (other than the end of the input) is an error and nothing is
appended. Empty lines are not skipped, so that the output lines match the
input lines one to one. Standard input is read to its end first.

Entries are sent in batches of at most 1000 (and 3 MiB). For each batch
tlogctl verifies the signature of the returned checkpoint, that each returned
leaf hash is the hash of the entry's data, and an inclusion proof of each entry
in the tree of that checkpoint. Then it prints one line per entry:

    INDEX <TAB> LEAF-HASH-HEX <TAB> new|duplicate

An entry already in the log (same data, or same --key) is not appended again:
its original index is printed with "duplicate". With --json each line is
{"index","leaf_hash","duplicate","tree_size"}.

If a batch fails, the batches before it stay appended (and were printed).
Appending the same input again is safe: entries already in the log come back
as duplicates.

Use "--" before DATA that starts with "-".`,
	setup: func(fs *flag.FlagSet) runFunc {
		var files stringList
		fs.Var(&files, "file", "append the content of file `F` as one entry (repeatable)")
		key := fs.String("key", "", "idempotency `KEY` of the entry (only with a single entry): the log stores one entry per key")
		return func(ctx context.Context, c *cli, args []string) error {
			return c.append(ctx, args, files, *key)
		}
	},
}

// stringList is a repeatable string flag.
type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, ",") }
func (l *stringList) Set(s string) error { *l = append(*l, s); return nil }

// input is one entry to append and where it came from.
type input struct {
	data []byte
	from string // for messages: "argument 2", "file x", "line 3 of standard input"
}

func (c *cli) append(ctx context.Context, args, files []string, key string) error {
	inputs, err := c.readInputs(args, files)
	if err != nil {
		return err
	}
	if key != "" && len(inputs) != 1 {
		return usagef("--key needs exactly one entry, not %d", len(inputs))
	}
	v, err := c.verifier(ctx)
	if err != nil {
		return err
	}
	lc, err := c.logClient()
	if err != nil {
		return err
	}
	for len(inputs) > 0 {
		n, size := 0, 0
		for n < len(inputs) && n < maxBatchEntries && (n == 0 || size+len(inputs[n].data) <= maxBatchBytes) {
			size += len(inputs[n].data)
			n++
		}
		if err := c.appendBatch(ctx, lc, v, inputs[:n], key); err != nil {
			return err
		}
		inputs = inputs[n:]
	}
	return nil
}

// readInputs collects the entries from args, files or standard input, and
// checks them all before anything is sent.
func (c *cli) readInputs(args, files []string) ([]input, error) {
	var inputs []input
	switch {
	case len(args) > 0 && len(files) > 0:
		return nil, usagef("give entries as DATA arguments or with --file, not both")
	case len(args) > 0:
		for i, a := range args {
			inputs = append(inputs, input{data: []byte(a), from: fmt.Sprintf("argument %d", i+1)})
		}
	case len(files) > 0:
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err != nil {
				return nil, err
			}
			inputs = append(inputs, input{data: b, from: fmt.Sprintf("file %s", f)})
		}
	default:
		if f, ok := c.stdin.(*os.File); ok {
			if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
				fmt.Fprintln(c.stderr, "tlogctl: reading entries from the terminal, one per line; end with Ctrl-D")
			}
		}
		r := bufio.NewReader(c.stdin)
		for line := 1; ; line++ {
			b, err := r.ReadBytes('\n')
			if err != nil && !errors.Is(err, io.EOF) {
				return nil, fmt.Errorf("reading standard input: %w", err)
			}
			if len(b) == 0 && err != nil {
				break // end of input
			}
			inputs = append(inputs, input{data: bytes.TrimSuffix(b, []byte("\n")), from: fmt.Sprintf("line %d of standard input", line)})
			if err != nil {
				break
			}
		}
		if len(inputs) == 0 {
			return nil, usagef("no entries: give DATA arguments, --file, or lines on standard input")
		}
	}
	for _, in := range inputs {
		switch {
		case len(in.data) == 0:
			return nil, usagef("%s is empty, and the log does not take empty entries; nothing was appended", in.from)
		case len(in.data) > tile.MaxEntrySize:
			return nil, usagef("%s has %d bytes, more than the limit of %d; nothing was appended", in.from, len(in.data), tile.MaxEntrySize)
		}
	}
	return inputs, nil
}

// appendResult is the JSON output of one appended entry.
type appendResult struct {
	Index     uint64 `json:"index"`
	LeafHash  string `json:"leaf_hash"`
	Duplicate bool   `json:"duplicate"`
	TreeSize  uint64 `json:"tree_size"`
}

// appendBatch appends a batch with one Append call, verifies the answer and
// prints it.
func (c *cli) appendBatch(ctx context.Context, lc tlogv1.LogServiceClient, v note.Verifier, batch []input, key string) error {
	req := &tlogv1.AppendRequest{Log: c.log, Entries: make([]*tlogv1.AppendEntry, len(batch))}
	for i, in := range batch {
		req.Entries[i] = &tlogv1.AppendEntry{Data: in.data, IdempotencyKey: key}
	}
	resp, err := lc.Append(ctx, req)
	if err != nil {
		return rpcError("Append", err)
	}
	cp, err := openCheckpoint(resp.GetCheckpoint(), v)
	if err != nil {
		return fmt.Errorf("after appending %d entries: %w", len(batch), err)
	}
	results := resp.GetResults()
	if len(results) != len(batch) {
		return failf("sent %d entries, the server answered %d results", len(batch), len(results))
	}
	leaves := make([]tree.Hash, len(batch))
	for i, r := range results {
		if len(r.GetLeafHash()) != hashSize {
			return failf("%s: the server answered a leaf hash of %d bytes", batch[i].from, len(r.GetLeafHash()))
		}
		leaves[i] = tree.Hash(r.GetLeafHash())
		want := tree.LeafHash(batch[i].data)
		switch {
		case leaves[i] == want:
		case key != "" && r.GetDuplicate():
			// A duplicate by key is the original entry, whatever its data.
			fmt.Fprintf(c.stderr, "tlogctl: warning: key %q already names entry %d, whose data differs from this entry's; nothing was appended\n", key, r.GetIndex())
		default:
			return failf("%s: the log answered leaf hash %x for index %d, but the data hashes to %x", batch[i].from, leaves[i], r.GetIndex(), want)
		}
		if r.GetIndex() >= cp.Size {
			return failf("%s: the log answered index %d, not in the tree of size %d of its checkpoint", batch[i].from, r.GetIndex(), cp.Size)
		}
	}
	err = parallel(ctx, len(results), proofWorkers, func(ctx context.Context, i int) error {
		return proveAppended(ctx, lc, c.log, v, cp, results[i].GetIndex(), leaves[i])
	})
	if err != nil {
		return err
	}
	for i, r := range results {
		if c.json {
			if err := c.emit(appendResult{Index: r.GetIndex(), LeafHash: fmt.Sprintf("%x", leaves[i]), Duplicate: r.GetDuplicate(), TreeSize: cp.Size}); err != nil {
				return err
			}
			continue
		}
		state := "new"
		if r.GetDuplicate() {
			state = "duplicate"
		}
		if _, err := fmt.Fprintf(c.stdout, "%d\t%x\t%s\n", r.GetIndex(), leaves[i], state); err != nil {
			return err
		}
	}
	return nil
}

// proveAppended fetches and verifies the inclusion proof of an appended
// entry in the tree of cp, the checkpoint its Append call answered.
func proveAppended(ctx context.Context, lc tlogv1.LogServiceClient, log string, v note.Verifier, cp checkpoint.Checkpoint, index uint64, leaf tree.Hash) error {
	resp, err := lc.GetInclusionProof(ctx, &tlogv1.GetInclusionProofRequest{
		Log: log, Leaf: &tlogv1.GetInclusionProofRequest_Index{Index: index}, TreeSize: cp.Size,
	})
	if err != nil {
		return rpcError(fmt.Sprintf("GetInclusionProof of entry %d", index), err)
	}
	if resp.GetIndex() != index {
		return failf("asked for the inclusion proof of entry %d, the server answered one for entry %d", index, resp.GetIndex())
	}
	pcp, err := openCheckpoint(resp.GetCheckpoint(), v)
	if err != nil {
		return err
	}
	if err := sameTree(cp, pcp); err != nil {
		return err
	}
	return verifyInclusion(index, leaf, resp.GetHashes(), cp)
}
