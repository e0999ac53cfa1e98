package main

import (
	"context"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sync"

	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"

	"github.com/tlog-dev/tlog/pkg/checkpoint"
	"github.com/tlog-dev/tlog/pkg/tree"
)

// hashSize is the size of every hash of the tree (SHA-256).
const hashSize = 32

// verifyInclusion checks an inclusion proof from the server: that the leaf
// with hash leaf is at index in the tree of cp.
func verifyInclusion(index uint64, leaf tree.Hash, hashes [][]byte, cp checkpoint.Checkpoint) error {
	if index >= cp.Size {
		return failf("entry %d is not in the tree of size %d", index, cp.Size)
	}
	for i, h := range hashes {
		if len(h) != hashSize {
			return failf("inclusion proof of entry %d: hash %d is %d bytes, want %d", index, i, len(h), hashSize)
		}
	}
	if err := proof.VerifyInclusion(rfc6962.DefaultHasher, index, cp.Size, leaf[:], hashes, cp.Hash[:]); err != nil {
		return failf("inclusion proof of entry %d (leaf hash %x) in the tree of size %d does not verify: %s", index, leaf, cp.Size, proofError(err))
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

// sameTree checks that two verified checkpoints of the log that claim the
// same size have the same root hash; two different roots for one size are
// proof that the log forked.
func sameTree(a, b checkpoint.Checkpoint) error {
	if a.Size != b.Size {
		return failf("asked for the checkpoint of size %d, the server answered one of size %d", a.Size, b.Size)
	}
	if a.Hash != b.Hash {
		return failf("the log signed two different root hashes for size %d (%x and %x): it forked", a.Size, a.Hash, b.Hash)
	}
	return nil
}

// parallel runs f(0), ..., f(n-1) on up to workers goroutines and returns
// the first error. After an error it starts no more calls and cancels ctx.
func parallel(ctx context.Context, n, workers int, f func(ctx context.Context, i int) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg    sync.WaitGroup
		once  sync.Once
		first error
		next  = make(chan int)
	)
	for range min(n, workers) {
		wg.Go(func() {
			for i := range next {
				if err := f(ctx, i); err != nil {
					once.Do(func() { first = err; cancel() })
				}
			}
		})
	}
loop:
	for i := range n {
		select {
		case next <- i:
		case <-ctx.Done():
			break loop
		}
	}
	close(next)
	wg.Wait()
	return first
}

// leafFlags select one entry of the log: by index (if the command allows
// it), by its data, or by its leaf hash.
type leafFlags struct {
	index    uint64
	data     string
	dataFile string
	leafHash string
}

func (l *leafFlags) define(fs *flag.FlagSet, byIndex bool) {
	if byIndex {
		fs.Uint64Var(&l.index, "index", 0, "the entry at index `N`")
	}
	fs.StringVar(&l.data, "data", "", "the entry whose data is the text `D`")
	fs.StringVar(&l.dataFile, "data-file", "", "the entry whose data is the content of file `F` (\"-\": standard input)")
	fs.StringVar(&l.leafHash, "leaf-hash", "", "the entry whose RFC 6962 leaf hash is `HEX` (64 hexadecimal digits)")
}

// leaf is a selected entry: by index, or by leaf hash (and possibly data).
type leaf struct {
	byIndex bool
	index   uint64
	hash    tree.Hash
	data    []byte // nil unless given by data
}

// resolve returns the entry the flags select; exactly one must be set.
func (l *leafFlags) resolve(fs *flag.FlagSet, stdin io.Reader) (leaf, error) {
	var set []string
	fs.Visit(func(f *flag.Flag) {
		switch f.Name {
		case "index", "data", "data-file", "leaf-hash":
			set = append(set, "--"+f.Name)
		}
	})
	if len(set) != 1 {
		choices := "--data, --data-file or --leaf-hash"
		if fs.Lookup("index") != nil {
			choices = "--index, " + choices
		}
		if len(set) == 0 {
			return leaf{}, &usageError{err: fmt.Errorf("give the entry with one of %s", choices)}
		}
		return leaf{}, &usageError{err: fmt.Errorf("give only one of %s, not %v", choices, set)}
	}
	switch set[0] {
	case "--index":
		return leaf{byIndex: true, index: l.index}, nil
	case "--data":
		return leaf{hash: tree.LeafHash([]byte(l.data)), data: []byte(l.data)}, nil
	case "--data-file":
		var b []byte
		var err error
		if l.dataFile == "-" {
			b, err = io.ReadAll(stdin)
		} else {
			b, err = os.ReadFile(l.dataFile)
		}
		if err != nil {
			return leaf{}, fmt.Errorf("--data-file: %w", err)
		}
		return leaf{hash: tree.LeafHash(b), data: b}, nil
	default:
		h, err := parseLeafHash(l.leafHash)
		if err != nil {
			return leaf{}, &usageError{err: err}
		}
		return leaf{hash: h}, nil
	}
}

func parseLeafHash(s string) (tree.Hash, error) {
	var h tree.Hash
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != len(h) {
		return h, fmt.Errorf("--leaf-hash %q is not %d hexadecimal digits", s, 2*len(h))
	}
	copy(h[:], b)
	return h, nil
}
