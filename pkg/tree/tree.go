// Package tree computes RFC 6962 Merkle tree hashes, inclusion proofs and
// consistency proofs from C2SP tlog-tiles hash tiles, and extends the right
// edge of a tree with new leaves, producing the tiles to store.
//
// Tiles are read through the one-method TileReader interface; the package
// itself does no I/O. Proofs are built with transparency-dev/merkle.
package tree

import (
	"crypto/sha256"
	"errors"
	"fmt"

	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"

	"github.com/tlog-dev/tlog/pkg/tile"
)

// Hash is a SHA-256 Merkle tree hash.
type Hash = [32]byte

// ErrIndexOutOfRange is returned for a leaf index at or beyond the tree size.
var ErrIndexOutOfRange = errors.New("leaf index out of range")

// ErrSizeOutOfRange is returned when a proof asks for sizes that are not
// ordered (first > second) or a tree size that does not exist.
var ErrSizeOutOfRange = errors.New("tree size out of range")

// ErrMissingTile is returned (wrapped) when a TileReader cannot supply a tile
// the tree needs: the storage is missing data it ought to have.
var ErrMissingTile = errors.New("missing tile")

// TileReader reads hash tiles (never entry bundles). ReadTiles returns, for
// each requested tile, its hashes: at least Width*32 bytes; it may return a
// wider version of a partial tile, since a tile only ever grows by appending.
// A tile it does not have is an error wrapping ErrMissingTile.
type TileReader interface {
	ReadTiles(tiles []tile.Tile) ([][]byte, error)
}

// TileReaderFunc adapts a function to a TileReader.
type TileReaderFunc func(tiles []tile.Tile) ([][]byte, error)

// ReadTiles calls f.
func (f TileReaderFunc) ReadTiles(tiles []tile.Tile) ([][]byte, error) { return f(tiles) }

// TileSlice names the hashes [From, To) of a tile, 0 <= From < To <=
// Tile.Width.
type TileSlice struct {
	Tile     tile.Tile
	From, To int
}

// InRange reports whether 0 <= From < To <= Tile.Width.
func (s TileSlice) InRange() bool { return 0 <= s.From && s.From < s.To && s.To <= s.Tile.Width }

// SliceReader is a TileReader that can also read slices of tiles, for
// storage where that costs less than reading whole tiles: a proof that
// misses a cached tile but has its summary (see Cache) needs only 32 of its
// hashes. ReadTileSlices returns exactly (To-From)*32 bytes per slice; a
// tile it does not have, or has narrower than To, is an error wrapping
// ErrMissingTile.
type SliceReader interface {
	TileReader
	ReadTileSlices(slices []TileSlice) ([][]byte, error)
}

var hasher = rfc6962.DefaultHasher

// LeafHash returns the RFC 6962 leaf hash of an entry.
func LeafHash(entry []byte) Hash {
	h := sha256.New()
	h.Write([]byte{rfc6962.RFC6962LeafHashPrefix})
	h.Write(entry)
	var out Hash
	h.Sum(out[:0])
	return out
}

// Identity returns the de-duplication identity of a log entry: its leaf
// hash, or, for an entry appended with an idempotency key, the SHA-256 of
// "tlog idempotency key\x00" followed by the key. Appending an identity that
// is already in a log returns the original index instead of a new leaf.
func Identity(leafHash Hash, idempotencyKey string) Hash {
	if idempotencyKey == "" {
		return leafHash
	}
	h := sha256.New()
	h.Write([]byte("tlog idempotency key\x00"))
	h.Write([]byte(idempotencyKey))
	var id Hash
	h.Sum(id[:0])
	return id
}

// NodeHash returns the RFC 6962 hash of an interior node. It is
// rfc6962.DefaultHasher.HashChildren without its digest allocation (it
// hashes every proof's right-edge nodes).
func NodeHash(left, right []byte) []byte {
	var buf [1 + 2*tile.HashSize]byte
	buf[0] = rfc6962.RFC6962NodeHashPrefix
	copy(buf[1:], left)
	copy(buf[1+tile.HashSize:], right)
	h := sha256.Sum256(buf[:])
	return h[:]
}

// EmptyRoot is the root hash of the empty tree.
func EmptyRoot() Hash { return Hash(hasher.EmptyRoot()) }

// nodeTile returns the tile that holds the hashes node id is computed from in
// a tree of the given size, and the range [lo, hi) of hashes within it.
func nodeTile(id compact.NodeID, size uint64) (tile.Tile, int, int, error) {
	level := int(id.Level / tile.Height)
	r := id.Level % tile.Height // levels above the tile's own hashes
	first := id.Index << r      // first tile-level hash under the node
	t, ok := tile.ForSize(level, first/tile.Width, size)
	lo := int(first % tile.Width)
	hi := lo + 1<<r
	if !ok || hi > t.Width {
		return tile.Tile{}, 0, 0, fmt.Errorf("node %d/%d is not complete in a tree of size %d", id.Level, id.Index, size)
	}
	return t, lo, hi, nil
}

// nodeHashes returns the hashes of the given perfect nodes of a tree of the
// given size, reading each needed tile once.
type span struct{ t, lo, hi int }

func nodeHashes(r TileReader, ids []compact.NodeID, size uint64) ([][]byte, error) {
	var tiles []tile.Tile
	seen := make(map[tile.Tile]int)
	spans := make([]span, len(ids))
	for i, id := range ids {
		t, lo, hi, err := nodeTile(id, size)
		if err != nil {
			return nil, err
		}
		j, ok := seen[t]
		if !ok {
			j = len(tiles)
			seen[t] = j
			tiles = append(tiles, t)
		}
		spans[i] = span{j, lo, hi}
	}
	if len(tiles) == 0 {
		return nil, nil
	}
	if cr, ok := r.(*cacheReader); ok {
		return cr.nodeHashes(ids, tiles, spans)
	}
	data, err := r.ReadTiles(tiles)
	if err != nil {
		return nil, err
	}
	if err := checkTiles(tiles, data); err != nil {
		return nil, err
	}
	out := make([][]byte, len(ids))
	for i, s := range spans {
		out[i] = subtreeHash(data[s.t][s.lo*tile.HashSize : s.hi*tile.HashSize])
	}
	return out, nil
}

// checkTiles checks that a TileReader returned every tile, wide enough.
func checkTiles(tiles []tile.Tile, data [][]byte) error {
	if len(data) != len(tiles) {
		return fmt.Errorf("tile reader returned %d tiles, want %d", len(data), len(tiles))
	}
	for i, t := range tiles {
		if len(data[i]) < t.Width*tile.HashSize {
			return fmt.Errorf("%w: %s has %d bytes, want at least %d", ErrMissingTile, t.Path(), len(data[i]), t.Width*tile.HashSize)
		}
	}
	return nil
}

// subtreeHash hashes a power-of-two run of consecutive hashes up to their
// common ancestor.
func subtreeHash(hashes []byte) []byte {
	n := len(hashes) / tile.HashSize
	if n == 1 {
		return hashes
	}
	// Hash level by level in place in one buffer: this is the hot loop of
	// proof building. Node i of a level overwrites no node of the level
	// below that is still to be read (those are at 2i and beyond).
	out := make([]byte, n/2*tile.HashSize)
	src := hashes
	var buf [1 + 2*tile.HashSize]byte
	buf[0] = rfc6962.RFC6962NodeHashPrefix
	for ; n > 1; n /= 2 {
		for i := 0; i < n/2; i++ {
			copy(buf[1:], src[2*i*tile.HashSize:(2*i+2)*tile.HashSize])
			h := sha256.Sum256(buf[:])
			copy(out[i*tile.HashSize:], h[:])
		}
		src = out
	}
	return out[:tile.HashSize:tile.HashSize]
}

// InclusionProof returns the proof that leaf index is in the tree of the
// given size.
func InclusionProof(r TileReader, index, size uint64) ([][]byte, error) {
	if index >= size {
		return nil, fmt.Errorf("%w: index %d, tree size %d", ErrIndexOutOfRange, index, size)
	}
	nodes, err := proof.Inclusion(index, size)
	if err != nil {
		return nil, err
	}
	return rehash(r, nodes, size)
}

// ConsistencyProof returns the proof that the tree of size n extends the tree
// of size m.
func ConsistencyProof(r TileReader, m, n uint64) ([][]byte, error) {
	if m > n {
		return nil, fmt.Errorf("%w: first size %d is greater than second size %d", ErrSizeOutOfRange, m, n)
	}
	nodes, err := proof.Consistency(m, n)
	if err != nil {
		return nil, err
	}
	return rehash(r, nodes, n)
}

func rehash(r TileReader, nodes proof.Nodes, size uint64) ([][]byte, error) {
	hashes, err := nodeHashes(r, nodes.IDs, size)
	if err != nil {
		return nil, err
	}
	return nodes.Rehash(hashes, NodeHash)
}

// RootHash returns the root hash of the tree of the given size.
func RootHash(r TileReader, size uint64) (Hash, error) {
	rng, err := loadRange(r, size)
	if err != nil {
		return Hash{}, err
	}
	return rootOf(rng)
}

func rootOf(rng *compact.Range) (Hash, error) {
	if rng.End() == 0 {
		return EmptyRoot(), nil
	}
	root, err := rng.GetRootHash(nil)
	if err != nil {
		return Hash{}, err
	}
	return Hash(root), nil
}

var factory = &compact.RangeFactory{Hash: NodeHash}

// loadRange returns the compact range [0, size): the perfect subtrees on the
// right edge of the tree.
func loadRange(r TileReader, size uint64) (*compact.Range, error) {
	hashes, err := nodeHashes(r, compact.RangeNodes(0, size, nil), size)
	if err != nil {
		return nil, err
	}
	return factory.NewRange(0, size, hashes)
}
