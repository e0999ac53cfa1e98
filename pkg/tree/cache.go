package tree

import (
	"container/list"
	"crypto/sha256"
	"fmt"
	"sync"

	"github.com/transparency-dev/merkle/compact"

	"github.com/transparency-dev/merkle/rfc6962"

	"github.com/tlog-dev/tlog/pkg/tile"
)

// Cache keeps recently read hash tiles in memory, for any number of logs,
// together with the interior nodes of each tile's subtree, so that building
// a proof from cached tiles hashes nothing. A tile of a given width never
// changes (a partial tile of width W is always the first W hashes of the
// tile), so cached tiles never go stale. A Cache is safe for concurrent use.
//
// A large tree has far more full tiles than the cache holds, and random
// proofs into it mostly miss. So the cache also remembers, for many more
// full tiles, a summary: the 8 hashes summaryLevel levels above the tile's
// own (256 bytes instead of 16 KiB). A tile that missed but has a summary
// is read again and cached with its summary in place of its interior
// levels: proofs into it hash at most 30 nodes, instead of the 255 it
// takes to compute all interior levels. Through a SliceReader, such a tile
// is not read whole: a proof reads only the 32 hashes under its nodes below
// the summary, and caches nothing.
type Cache struct {
	mu       sync.Mutex
	maxBytes int // of the tiles' hashes, all levels
	bytes    int
	lru      list.List // of *cachedTile, most recent first
	tiles    map[cacheKey]*list.Element

	// Summaries, in two generations: when sums reaches maxSums/2 it
	// becomes old and a new generation starts, so the summaries used since
	// the last switch survive it (an approximate LRU without per-entry
	// links).
	maxSums   int
	sums, old map[cacheKey]*summary
}

type cacheKey struct {
	log   string
	level int
	index uint64
	width int
}

// summaryLevel is the level, within a tile, of its summary's hashes: a
// proof hashes at most 2^5-1-5 nodes below it and 2^3-1-3 above.
const summaryLevel = 5

type summary [tile.Width >> summaryLevel * tile.HashSize]byte

type cachedTile struct {
	key cacheKey
	// levels[k] holds the width>>k hashes k levels above the tile's own
	// (for a partial tile, the complete subtrees only). A tile read again
	// for its summary has only levels 0 and summaryLevel; node computes the
	// rest.
	levels [tile.Height + 1][]byte
}

// CacheEntryBytes is the memory one cached tile takes, roughly.
const CacheEntryBytes = 2 * tile.Width * tile.HashSize

// SummariesPerTile is how many tile summaries a Cache keeps per tile it
// keeps whole; each takes about 350 bytes. With two generations of at most
// half of them, the summaries of 16 * maxTiles tiles stay cached under
// random access (maxTiles 4,096: the level-0 tiles of a 16M-entry tree).
const SummariesPerTile = 32

// NewCache returns a cache of the hashes of at most maxTiles tiles with all
// their interior levels (CacheEntryBytes each; a tile cached from its
// summary takes about half) and SummariesPerTile times as many summaries.
func NewCache(maxTiles int) *Cache {
	maxTiles = max(maxTiles, 1)
	c := &Cache{maxBytes: maxTiles * CacheEntryBytes, tiles: make(map[cacheKey]*list.Element)}
	c.maxSums = SummariesPerTile * maxTiles
	c.sums, c.old = make(map[cacheKey]*summary), make(map[cacheKey]*summary)
	return c
}

// Reader returns a TileReader for one log that answers tiles from the cache
// and reads the others from r, caching them.
func (c *Cache) Reader(log string, r TileReader) TileReader {
	return &cacheReader{c: c, log: log, r: r}
}

type cacheReader struct {
	c   *Cache
	log string
	r   TileReader
}

// get returns the cached tile k, or else its summary, or else nothing.
func (c *Cache) get(k cacheKey) (*cachedTile, *summary) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.tiles[k]; ok {
		c.lru.MoveToFront(e)
		return e.Value.(*cachedTile), nil
	}
	if s, ok := c.sums[k]; ok {
		return nil, s
	}
	if s, ok := c.old[k]; ok {
		c.putSummaryLocked(k, s)
		return nil, s
	}
	return nil, nil
}

func (c *Cache) put(ct *cachedTile) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.tiles[ct.key]; ok {
		return
	}
	c.tiles[ct.key] = c.lru.PushFront(ct)
	c.bytes += ct.size()
	for c.bytes > c.maxBytes && c.lru.Len() > 1 {
		old := c.lru.Remove(c.lru.Back()).(*cachedTile)
		delete(c.tiles, old.key)
		c.bytes -= old.size()
	}
	if _, ok := c.sums[ct.key]; !ok && ct.key.width == tile.Width {
		s := new(summary)
		copy(s[:], ct.levels[summaryLevel])
		c.putSummaryLocked(ct.key, s)
	}
}

func (c *Cache) putSummaryLocked(k cacheKey, s *summary) {
	if len(c.sums) >= c.maxSums/2 {
		c.old, c.sums = c.sums, make(map[cacheKey]*summary, len(c.sums))
	}
	c.sums[k] = s
}

// size is the memory of ct's hashes.
func (ct *cachedTile) size() int {
	n := 0
	for _, l := range ct.levels {
		n += len(l)
	}
	return n
}

// expand computes the interior levels of a tile.
func expand(k cacheKey, hashes []byte) *cachedTile {
	ct := &cachedTile{key: k}
	ct.levels[0] = append([]byte(nil), hashes[:k.width*tile.HashSize]...)
	var buf [1 + 2*tile.HashSize]byte
	buf[0] = rfc6962.RFC6962NodeHashPrefix
	for l := 1; l <= tile.Height; l++ {
		below := ct.levels[l-1]
		n := len(below) / tile.HashSize / 2
		out := make([]byte, n*tile.HashSize)
		for i := 0; i < n; i++ {
			copy(buf[1:], below[2*i*tile.HashSize:(2*i+2)*tile.HashSize])
			h := sha256.Sum256(buf[:])
			copy(out[i*tile.HashSize:], h[:])
		}
		ct.levels[l] = out
	}
	return ct
}

// node returns the hash r levels above the tile's own hashes at position i,
// from the highest level at or below r that ct has.
func (ct *cachedTile) node(r uint, i int) []byte {
	k := r
	for ct.levels[k] == nil {
		k--
	}
	n := 1 << (r - k) // hashes at level k under the node
	return subtreeHash(ct.levels[k][i*n*tile.HashSize : (i+1)*n*tile.HashSize])
}

func (cr *cacheReader) key(t tile.Tile) cacheKey { return cacheKey{cr.log, t.Level, t.Index, t.Width} }

// cached returns the cached tiles ts, reading and caching those it lacks.
func (cr *cacheReader) cached(ts []tile.Tile) ([]*cachedTile, error) {
	out, sums := cr.lookup(ts)
	return out, cr.fill(ts, out, sums, nil)
}

// lookup returns the cached tiles ts, and the summaries of those not cached
// (see Cache.get).
func (cr *cacheReader) lookup(ts []tile.Tile) ([]*cachedTile, []*summary) {
	out := make([]*cachedTile, len(ts))
	sums := make([]*summary, len(ts))
	for i, t := range ts {
		out[i], sums[i] = cr.c.get(cr.key(t))
	}
	return out, sums
}

// fill reads and caches the tiles ts[i] that lookup did not find, except
// those with skip[i] set (skip may be nil). A tile read again for its summary
// sums[i] gets levels 0 and summaryLevel only.
func (cr *cacheReader) fill(ts []tile.Tile, out []*cachedTile, sums []*summary, skip []bool) error {
	var (
		missing []tile.Tile
		at      []int
	)
	for i, t := range ts {
		if out[i] == nil && (skip == nil || !skip[i]) {
			missing = append(missing, t)
			at = append(at, i)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	data, err := cr.r.ReadTiles(missing)
	if err != nil {
		return err
	}
	if err := checkTiles(missing, data); err != nil {
		return err
	}
	for j, i := range at {
		k := cr.key(missing[j])
		if s := sums[i]; s != nil {
			ct := &cachedTile{key: k}
			ct.levels[0] = append([]byte(nil), data[j][:tile.Width*tile.HashSize]...)
			ct.levels[summaryLevel] = s[:]
			out[i] = ct
		} else {
			out[i] = expand(k, data[j])
		}
		cr.c.put(out[i])
	}
	return nil
}

// ReadTiles reads tiles through the cache.
func (cr *cacheReader) ReadTiles(ts []tile.Tile) ([][]byte, error) {
	cts, err := cr.cached(ts)
	if err != nil {
		return nil, err
	}
	out := make([][]byte, len(ts))
	for i, ct := range cts {
		out[i] = ct.levels[0]
	}
	return out, nil
}

// nodeHashes looks the given nodes up in the cached tiles' interior levels.
// Through a SliceReader, a tile that is not cached but has a summary is not
// read whole (nor cached): nodes at or above the summary's level come from
// the summary, and those below from the slice of 2^summaryLevel hashes under
// them, a quarter of a page instead of two.
func (cr *cacheReader) nodeHashes(ids []compact.NodeID, tiles []tile.Tile, spans []span) ([][]byte, error) {
	cts, sums := cr.lookup(tiles)
	sr, _ := cr.r.(SliceReader)
	var sliced []bool
	if sr != nil {
		sliced = make([]bool, len(tiles))
		for i := range tiles {
			sliced[i] = cts[i] == nil && sums[i] != nil
		}
	}
	if err := cr.fill(tiles, cts, sums, sliced); err != nil {
		return nil, err
	}

	const block = 1 << summaryLevel // hashes per slice
	type blockKey struct{ t, b int }
	var slices []TileSlice
	blocks := make(map[blockKey]int) // index in slices
	for i, s := range spans {
		if cts[s.t] != nil || ids[i].Level%tile.Height >= summaryLevel {
			continue
		}
		k := blockKey{s.t, s.lo / block}
		if _, ok := blocks[k]; !ok {
			blocks[k] = len(slices)
			slices = append(slices, TileSlice{Tile: tiles[s.t], From: k.b * block, To: (k.b + 1) * block})
		}
	}
	var data [][]byte
	if len(slices) > 0 {
		var err error
		if data, err = sr.ReadTileSlices(slices); err != nil {
			return nil, err
		}
		if err := checkSlices(slices, data); err != nil {
			return nil, err
		}
	}

	out := make([][]byte, len(ids))
	for i, s := range spans {
		r := ids[i].Level % tile.Height
		switch {
		case cts[s.t] != nil:
			out[i] = cts[s.t].node(r, s.lo>>r)
		case r >= summaryLevel:
			out[i] = subtreeHash(sums[s.t][s.lo/block*tile.HashSize : s.hi/block*tile.HashSize])
		default:
			b := s.lo / block
			d := data[blocks[blockKey{s.t, b}]]
			out[i] = subtreeHash(d[(s.lo-b*block)*tile.HashSize : (s.hi-b*block)*tile.HashSize])
		}
	}
	return out, nil
}

// checkSlices checks that a SliceReader returned every slice, whole.
func checkSlices(slices []TileSlice, data [][]byte) error {
	if len(data) != len(slices) {
		return fmt.Errorf("tile reader returned %d slices, want %d", len(data), len(slices))
	}
	for i, s := range slices {
		if want := (s.To - s.From) * tile.HashSize; len(data[i]) != want {
			return fmt.Errorf("%w: hashes %d..%d of %s: %d bytes, want %d", ErrMissingTile, s.From, s.To, s.Tile.Path(), len(data[i]), want)
		}
	}
	return nil
}
