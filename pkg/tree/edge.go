package tree

import (
	"fmt"

	"github.com/transparency-dev/merkle/compact"

	"github.com/tlog-dev/tlog/pkg/tile"
)

// Edge is the right edge of a tree: enough state to append leaves and to
// produce every hash tile that changes, without reading storage again. It
// holds the compact range of the tree and its partial tiles, so its size is
// O(log n) hashes plus at most one partial tile per level.
//
// An Edge is immutable; Append returns a new one.
type Edge struct {
	rng      *compact.Range
	root     Hash
	partials map[int][]byte // tile level -> hashes of the partial tile
}

// TileData is a hash tile with its contents.
type TileData struct {
	tile.Tile
	Hashes []byte
}

// LoadEdge reads the right edge of the tree of the given size.
func LoadEdge(r TileReader, size uint64) (*Edge, error) {
	rng, err := loadRange(r, size)
	if err != nil {
		return nil, err
	}
	e := &Edge{rng: rng, partials: make(map[int][]byte)}
	var ts []tile.Tile
	for _, t := range tile.Partials(size) {
		if !t.IsEntries() {
			ts = append(ts, t)
		}
	}
	if len(ts) > 0 {
		data, err := r.ReadTiles(ts)
		if err != nil {
			return nil, err
		}
		if len(data) != len(ts) {
			return nil, fmt.Errorf("tile reader returned %d tiles, want %d", len(data), len(ts))
		}
		for i, t := range ts {
			n := t.Width * tile.HashSize
			if len(data[i]) < n {
				return nil, fmt.Errorf("%w: %s has %d bytes, want %d", ErrMissingTile, t.Path(), len(data[i]), n)
			}
			e.partials[t.Level] = append([]byte(nil), data[i][:n]...)
		}
	}
	if e.root, err = rootOf(rng); err != nil {
		return nil, err
	}
	return e, nil
}

// EmptyEdge returns the edge of the empty tree.
func EmptyEdge() *Edge {
	return &Edge{rng: factory.NewEmptyRange(0), root: EmptyRoot(), partials: map[int][]byte{}}
}

// Size returns the number of leaves in the tree.
func (e *Edge) Size() uint64 { return e.rng.End() }

// Root returns the root hash of the tree.
func (e *Edge) Root() Hash { return e.root }

// Append returns the edge of the tree extended with the given leaf hashes,
// and every hash tile that the new leaves create or change, each with its
// full contents (full tiles, and the partial tiles of the new size).
func (e *Edge) Append(leaves []Hash) (*Edge, []TileData, error) {
	next := &Edge{
		rng:      factory.NewEmptyRange(0),
		partials: make(map[int][]byte, len(e.partials)+1),
	}
	if err := next.rng.AppendRange(e.rng, nil); err != nil {
		return nil, nil, err
	}
	for l, p := range e.partials {
		next.partials[l] = p // copied on write below
	}
	touched := make(map[tile.Tile][]byte)
	owned := make(map[int]bool)
	var order []tile.Tile
	var visitErr error
	visit := func(id compact.NodeID, hash []byte) {
		if id.Level%tile.Height != 0 || visitErr != nil {
			return
		}
		level := int(id.Level / tile.Height)
		p := next.partials[level]
		if int(id.Index%tile.Width) != len(p)/tile.HashSize {
			visitErr = fmt.Errorf("tree: node %d/%d does not extend the partial tile of %d hashes", id.Level, id.Index, len(p)/tile.HashSize)
			return
		}
		if !owned[level] {
			// Copy on write: e and earlier results keep their tiles.
			q := make([]byte, len(p), tile.Width*tile.HashSize)
			copy(q, p)
			p = q
			owned[level] = true
		}
		p = append(p, hash...)
		t := tile.Tile{Level: level, Index: id.Index / tile.Width, Width: len(p) / tile.HashSize}
		key := tile.Tile{Level: level, Index: t.Index}
		if _, ok := touched[key]; !ok {
			order = append(order, key)
		}
		touched[key] = p
		if t.IsFull() {
			delete(next.partials, level)
			owned[level] = false
		} else {
			next.partials[level] = p
		}
	}
	for i := range leaves {
		if err := next.rng.Append(leaves[i][:], visit); err != nil {
			return nil, nil, err
		}
		if visitErr != nil {
			return nil, nil, visitErr
		}
	}
	var err error
	if next.root, err = rootOf(next.rng); err != nil {
		return nil, nil, err
	}
	tiles := make([]TileData, len(order))
	for i, key := range order {
		p := touched[key]
		key.Width = len(p) / tile.HashSize
		tiles[i] = TileData{Tile: key, Hashes: p}
	}
	return next, tiles, nil
}
