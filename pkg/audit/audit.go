// Package audit verifies a whole log from its stored data: it recomputes the
// Merkle tree from every entry, compares it with every stored hash tile, and
// checks every signed checkpoint against the recomputed tree. It is what
// tests run after every storage write, what `fsck` runs against storage and
// what an auditor runs against a downloaded copy of a log.
//
// The package is pure: it reads through the Source interface and does no I/O
// of its own, no logging, and takes no context (a Source closes over its
// own).
package audit

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"

	"golang.org/x/mod/sumdb/note"

	"github.com/tlog-dev/tlog/pkg/checkpoint"
	"github.com/tlog-dev/tlog/pkg/tile"
	"github.com/tlog-dev/tlog/pkg/tree"
)

// ErrTampered is wrapped by every error VerifyLog returns because the log
// itself is wrong (entries, tiles and checkpoints disagree, or a checkpoint
// is not properly signed), as opposed to an error reading it.
var ErrTampered = errors.New("log verification failed")

// Source is what VerifyLog reads. Implementations close over their context
// and the log they read.
type Source interface {
	// ReadTiles reads hash tiles (see tree.TileReader). A tile the source
	// does not have is an error wrapping tree.ErrMissingTile.
	tree.TileReader
	// ReadEntries returns the data of entries [start, end) in order. If an
	// entry in the range is absent, it returns the entries before it (so
	// possibly none) and no error; an error means the source could not be
	// read.
	ReadEntries(start, end uint64) ([][]byte, error)
	// ListCheckpoints returns up to limit signed checkpoint notes whose tree
	// size is greater than after, in increasing size order (none: empty).
	ListCheckpoints(after uint64, limit int) ([][]byte, error)
}

// Report says how much of a log VerifyLog checked.
type Report struct {
	// Size is the tree size of the latest verified checkpoint.
	Size uint64
	// Entries is the number of entries read and hashed.
	Entries uint64
	// Checkpoints is the number of checkpoints verified. (The checkpoint of
	// the empty tree is not counted: ListCheckpoints never lists it.)
	Checkpoints int
	// Tiles is the number of stored hash tiles compared with the
	// recomputed ones.
	Tiles int
}

const (
	// entryChunk is the most entries VerifyLog reads and hashes at once.
	entryChunk = 4096
	// checkpointPage is the most checkpoints VerifyLog lists at once.
	checkpointPage = 256
)

// VerifyLog recomputes the tree of the log in src from every stored entry
// and checks that:
//   - every stored hash tile equals the recomputed one (full tiles, and the
//     partial tiles of the latest tree size);
//   - every checkpoint verifies with v (see checkpoint.Open), the sizes of
//     successive checkpoints strictly increase, and each checkpoint's root
//     hash equals the recomputed root at its size, so all checkpoints are
//     consistent with each other;
//   - the latest checkpoint's size is the number of entries: no entry is
//     missing below it and none exists beyond it.
//
// Memory stays bounded: VerifyLog streams entries in chunks and keeps only
// the right edge of the tree (O(log n) hashes and one partial tile per
// level).
//
// If the log is wrong, the error wraps ErrTampered and names the first
// problem found, such as "entry 1234: leaf hash differs from tile/0/004
// position 210". If src fails, its error is returned unchanged. A tile that
// src reports missing (tree.ErrMissingTile) makes the log wrong. In both
// cases the Report says what was verified before the failure.
//
// The log may grow while VerifyLog runs: entries found beyond the latest
// checkpoint are an error only if no newer checkpoint covers them.
func VerifyLog(src Source, v note.Verifier) (Report, error) {
	if v == nil {
		return Report{}, errors.New("audit: nil verifier")
	}
	a := &auditor{src: src, v: v, edge: tree.EmptyEdge(), partials: make(map[int]tree.TileData)}
	err := a.run()
	return a.report, err
}

type auditor struct {
	src    Source
	v      note.Verifier
	report Report
	edge   *tree.Edge
	// partials holds the latest contents of each partial tile on the right
	// edge of the recomputed tree, by level; a full tile is compared with
	// storage as soon as it is complete.
	partials map[int]tree.TileData
}

func tampered(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrTampered}, args...)...)
}

func (a *auditor) run() error {
	for {
		page, err := a.src.ListCheckpoints(a.report.Size, checkpointPage)
		if err != nil {
			return err
		}
		if len(page) == 0 {
			size := a.edge.Size()
			next, err := a.src.ReadEntries(size, size+1)
			if err != nil {
				return err
			}
			if len(next) == 0 {
				if err := a.comparePartials(); err != nil {
					return err
				}
				a.report.Tiles += len(a.partials)
				return nil
			}
			// An entry beyond the latest checkpoint is fine if its batch
			// was committed meanwhile, with a newer checkpoint.
			if page, err = a.src.ListCheckpoints(a.report.Size, checkpointPage); err != nil {
				return err
			}
			if len(page) == 0 {
				return tampered("entry %d exists beyond the latest checkpoint (size %d)", size, size)
			}
		}
		for _, signed := range page {
			if err := a.checkpoint(signed); err != nil {
				return err
			}
		}
	}
}

// checkpoint verifies one signed checkpoint and advances the recomputed tree
// to its size.
func (a *auditor) checkpoint(signed []byte) error {
	c, _, err := checkpoint.Open(signed, a.v)
	if errors.Is(err, checkpoint.ErrSignature) {
		return tampered("checkpoint at size %s: signature: %w", unverifiedSize(signed), err)
	}
	if err != nil {
		return tampered("checkpoint at size %s: %w", unverifiedSize(signed), err)
	}
	if c.Size <= a.report.Size {
		return tampered("checkpoint at size %d follows the checkpoint at size %d: sizes must increase", c.Size, a.report.Size)
	}
	if err := a.advance(c.Size); err != nil {
		return err
	}
	if root := a.edge.Root(); c.Hash != root {
		// A differing tile pinpoints the entry; else the checkpoint is wrong.
		if err := a.comparePartials(); err != nil {
			return err
		}
		return tampered("checkpoint at size %d: root %s != recomputed %s", c.Size, b64(c.Hash[:]), b64(root[:]))
	}
	a.report.Size = c.Size
	a.report.Checkpoints++
	return nil
}

// unverifiedSize returns the size line of a signed checkpoint that did not
// verify, for error messages only, or "?".
func unverifiedSize(signed []byte) string {
	if i := bytes.LastIndex(signed, []byte("\n\n")); i >= 0 {
		if c, err := checkpoint.Parse(signed[:i+1]); err == nil {
			return fmt.Sprint(c.Size)
		}
	}
	return "?"
}

// advance reads and hashes entries until the recomputed tree has size
// leaves, comparing each tile that becomes full with the stored one.
func (a *auditor) advance(size uint64) error {
	for a.edge.Size() < size {
		start := a.edge.Size()
		end := min(size, start+entryChunk)
		data, err := a.src.ReadEntries(start, end)
		if err != nil {
			return err
		}
		if uint64(len(data)) > end-start {
			return fmt.Errorf("audit: source returned %d entries for range [%d, %d)", len(data), start, end)
		}
		if len(data) > 0 {
			leaves := make([]tree.Hash, len(data))
			for i, d := range data {
				leaves[i] = tree.LeafHash(d)
			}
			edge, tiles, err := a.edge.Append(leaves)
			if err != nil {
				return fmt.Errorf("audit: recomputing the tree: %w", err)
			}
			a.edge = edge
			a.report.Entries += uint64(len(data))
			var full []tree.TileData
			for _, td := range tiles {
				if td.IsFull() {
					full = append(full, td)
					delete(a.partials, td.Level)
				} else {
					a.partials[td.Level] = td
				}
			}
			if err := a.compareTiles(full); err != nil {
				return err
			}
			a.report.Tiles += len(full)
		}
		if uint64(len(data)) < end-start {
			return tampered("entry %d: missing (checkpoint at size %d)", a.edge.Size(), size)
		}
	}
	return nil
}

// comparePartials compares the partial tiles of the recomputed tree with the
// stored ones.
func (a *auditor) comparePartials() error {
	var tds []tree.TileData
	for l := range tile.MaxLevel + 1 {
		if td, ok := a.partials[l]; ok {
			tds = append(tds, td)
		}
	}
	return a.compareTiles(tds)
}

// compareTiles reads the stored versions of tds and compares them.
func (a *auditor) compareTiles(tds []tree.TileData) error {
	if len(tds) == 0 {
		return nil
	}
	ts := make([]tile.Tile, len(tds))
	for i, td := range tds {
		ts[i] = td.Tile
	}
	stored, err := a.src.ReadTiles(ts)
	if errors.Is(err, tree.ErrMissingTile) && len(ts) > 1 {
		// Find which one.
		for _, td := range tds {
			if err := a.compareTiles([]tree.TileData{td}); err != nil {
				return err
			}
		}
	}
	if errors.Is(err, tree.ErrMissingTile) {
		if len(ts) == 1 {
			return tampered("%s: %w", ts[0].Path(), err)
		}
		return tampered("%w", err)
	}
	if err != nil {
		return err
	}
	if len(stored) != len(ts) {
		return fmt.Errorf("audit: source returned %d tiles, want %d", len(stored), len(ts))
	}
	for i, td := range tds {
		if len(stored[i]) < len(td.Hashes) {
			return tampered("%s: stored tile has %d bytes, want at least %d", td.Path(), len(stored[i]), len(td.Hashes))
		}
		if err := compareHashes(td, stored[i][:len(td.Hashes)]); err != nil {
			return err
		}
	}
	return nil
}

func compareHashes(td tree.TileData, stored []byte) error {
	for p := 0; p < td.Width; p++ {
		want := td.Hashes[p*tile.HashSize : (p+1)*tile.HashSize]
		got := stored[p*tile.HashSize : (p+1)*tile.HashSize]
		if bytes.Equal(want, got) {
			continue
		}
		if td.Level == 0 {
			return tampered("entry %d: leaf hash differs from %s position %d (stored %s, recomputed %s)",
				td.Index*tile.Width+uint64(p), td.Path(), p, b64(got), b64(want))
		}
		return tampered("%s position %d: stored hash %s != recomputed %s", td.Path(), p, b64(got), b64(want))
	}
	return nil
}

func b64(h []byte) string { return base64.StdEncoding.EncodeToString(h) }
