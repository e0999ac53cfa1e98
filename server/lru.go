package server

import (
	"container/list"
	"sync"
)

// bundleKey names a full entry bundle of a log.
type bundleKey struct {
	log   string
	index uint64
}

// lru is a byte-bounded least-recently-used cache of immutable byte slices.
type lru struct {
	mu    sync.Mutex
	max   int
	size  int
	order list.List // of *lruEntry, most recent first
	items map[bundleKey]*list.Element
}

type lruEntry struct {
	key  bundleKey
	data []byte
}

func newLRU(maxBytes int) *lru {
	return &lru{max: maxBytes, items: make(map[bundleKey]*list.Element)}
}

func (c *lru) get(k bundleKey) ([]byte, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.items[k]
	if !ok {
		return nil, false
	}
	c.order.MoveToFront(e)
	return e.Value.(*lruEntry).data, true
}

func (c *lru) put(k bundleKey, data []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.items[k]; ok || len(data) > c.max {
		return
	}
	c.items[k] = c.order.PushFront(&lruEntry{k, data})
	c.size += len(data)
	for c.size > c.max {
		old := c.order.Remove(c.order.Back()).(*lruEntry)
		delete(c.items, old.key)
		c.size -= len(old.data)
	}
}
