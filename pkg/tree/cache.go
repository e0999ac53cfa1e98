package tree

import (
	"container/list"
	"crypto/sha256"
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
type Cache struct {
	mu    sync.Mutex
	max   int
	lru   list.List // of *cachedTile, most recent first
	tiles map[cacheKey]*list.Element
}

type cacheKey struct {
	log   string
	level int
	index uint64
	width int
}

type cachedTile struct {
	key cacheKey
	// levels[k] holds the width>>k hashes k levels above the tile's own
	// (for a partial tile, the complete subtrees only).
	levels [tile.Height + 1][]byte
}

// CacheEntryBytes is the memory one cached tile takes, roughly.
const CacheEntryBytes = 2 * tile.Width * tile.HashSize

// NewCache returns a cache of at most maxTiles tiles (each about
// CacheEntryBytes).
func NewCache(maxTiles int) *Cache {
	return &Cache{max: max(maxTiles, 1), tiles: make(map[cacheKey]*list.Element)}
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

func (c *Cache) get(k cacheKey) *cachedTile {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.tiles[k]
	if !ok {
		return nil
	}
	c.lru.MoveToFront(e)
	return e.Value.(*cachedTile)
}

func (c *Cache) put(ct *cachedTile) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.tiles[ct.key]; ok {
		return
	}
	c.tiles[ct.key] = c.lru.PushFront(ct)
	for c.lru.Len() > c.max {
		old := c.lru.Remove(c.lru.Back()).(*cachedTile)
		delete(c.tiles, old.key)
	}
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

// node returns the hash r levels above the tile's own hashes at position i.
func (ct *cachedTile) node(r uint, i int) []byte {
	return ct.levels[r][i*tile.HashSize : (i+1)*tile.HashSize]
}

func (cr *cacheReader) key(t tile.Tile) cacheKey { return cacheKey{cr.log, t.Level, t.Index, t.Width} }

// cached returns the cached tiles ts, reading those it lacks.
func (cr *cacheReader) cached(ts []tile.Tile) ([]*cachedTile, error) {
	out := make([]*cachedTile, len(ts))
	var missing []tile.Tile
	var at []int
	for i, t := range ts {
		if out[i] = cr.c.get(cr.key(t)); out[i] == nil {
			missing = append(missing, t)
			at = append(at, i)
		}
	}
	if len(missing) == 0 {
		return out, nil
	}
	data, err := cr.r.ReadTiles(missing)
	if err != nil {
		return nil, err
	}
	if err := checkTiles(missing, data); err != nil {
		return nil, err
	}
	for j, i := range at {
		out[i] = expand(cr.key(missing[j]), data[j])
		cr.c.put(out[i])
	}
	return out, nil
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
func (cr *cacheReader) nodeHashes(ids []compact.NodeID, tiles []tile.Tile, spans []span) ([][]byte, error) {
	cts, err := cr.cached(tiles)
	if err != nil {
		return nil, err
	}
	out := make([][]byte, len(ids))
	for i, s := range spans {
		r := ids[i].Level % tile.Height
		out[i] = cts[s.t].node(r, s.lo>>r)
	}
	return out, nil
}
