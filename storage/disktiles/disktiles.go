// Package disktiles keeps full hash tiles in a local file for the life of a
// process, so that a store whose reads cost a database query can answer the
// tiles it has read once with a pread instead.
//
// A full tile never changes: its hashes are fixed by the 256 subtrees under
// it, and the log never forks. So the file needs no invalidation, only a
// bound. It is created in a directory of the caller's and unlinked at once:
// its space goes back to the file system when the process ends, however it
// ends, and no later process can mistake it for its own. Tiles are written
// only after they were read from committed storage, never from a batch that
// may still roll back. Once the file holds its maximum, further tiles are
// not kept (no eviction: random proofs over a large log touch every tile
// alike, and a tile kept is one query fewer for as long as the process runs).
//
// Reads are preads, not a mapping of the file, so the tiles stay in the
// kernel's page cache and out of the process's resident memory.
package disktiles

import (
	"errors"
	"fmt"
	"os"
	"sync"

	"github.com/tlog-dev/tlog/pkg/tile"
)

// TileBytes is the space one tile takes in the file.
const TileBytes = tile.Width * tile.HashSize

// Cache is a file of full hash tiles of any number of logs. It is safe for
// concurrent use.
type Cache struct {
	f        *os.File
	maxTiles int64

	mu     sync.RWMutex
	slots  map[key]int64 // tile -> its slot in the file, in TileBytes
	next   int64         // the next free slot
	failed error         // the first write error; no tile is added after it
	closed bool
}

type key struct {
	log   string
	level int
	index uint64
}

// Open creates the file in dir (which must exist), unlinked, for at most
// maxBytes of tiles (rounded down to whole tiles, at least one).
func Open(dir string, maxBytes int64) (*Cache, error) {
	f, err := os.CreateTemp(dir, "tlog-tiles-*.cache")
	if err != nil {
		return nil, fmt.Errorf("disktiles: %w", err)
	}
	if err := os.Remove(f.Name()); err != nil {
		f.Close()
		os.Remove(f.Name())
		return nil, fmt.Errorf("disktiles: unlink %s: %w", f.Name(), err)
	}
	return &Cache{f: f, maxTiles: max(1, maxBytes/TileBytes), slots: make(map[key]int64)}, nil
}

// Read returns hashes [from, to) of the full tile (log, level, index), or
// nil if the file does not hold it (or cannot be read).
func (c *Cache) Read(log string, level int, index uint64, from, to int) []byte {
	if from < 0 || to > tile.Width || from >= to {
		return nil
	}
	c.mu.RLock()
	slot, ok := c.slots[key{log, level, index}]
	closed := c.closed
	c.mu.RUnlock()
	if !ok || closed {
		return nil
	}
	// Slots are never reused, so the tile is still there without the lock;
	// a Close racing this read makes it fail, which is a miss.
	buf := make([]byte, (to-from)*tile.HashSize)
	if n, _ := c.f.ReadAt(buf, slot*TileBytes+int64(from*tile.HashSize)); n != len(buf) {
		return nil
	}
	return buf
}

// ErrFull is Write's error when the file holds as many tiles as it may.
var ErrFull = errors.New("disktiles: file full")

// Write keeps the hashes of the full tile (log, level, index), which must
// have been read from committed storage. A tile already kept is left as it
// is. It fails with ErrFull once the file is at its maximum, and with the
// first write error for good: the caller may log it and carry on, since
// reads then go to the store.
func (c *Cache) Write(log string, level int, index uint64, hashes []byte) error {
	if len(hashes) != TileBytes {
		return fmt.Errorf("disktiles: tile %d/%d of %q has %d bytes, want a full tile's %d", level, index, log, len(hashes), TileBytes)
	}
	k := key{log, level, index}
	// The write happens under the lock: it only copies 8 KiB into the page
	// cache, and a tile is written once, after a query that took far longer.
	c.mu.Lock()
	defer c.mu.Unlock()
	switch _, kept := c.slots[k]; {
	case c.closed:
		return os.ErrClosed
	case kept:
		return nil
	case c.failed != nil:
		return c.failed
	case c.next >= c.maxTiles:
		return ErrFull
	}
	if _, err := c.f.WriteAt(hashes, c.next*TileBytes); err != nil {
		c.failed = fmt.Errorf("disktiles: %w", err)
		return c.failed
	}
	c.slots[k] = c.next
	c.next++
	return nil
}

// Tiles returns how many tiles the file holds.
func (c *Cache) Tiles() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.slots)
}

// Close closes the file, which frees its space. Reads then miss and writes
// fail.
func (c *Cache) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	c.closed = true
	return c.f.Close()
}
