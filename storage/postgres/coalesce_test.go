package postgres

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tlog-dev/tlog/pkg/tile"
	"github.com/tlog-dev/tlog/pkg/tree"
	"github.com/tlog-dev/tlog/storage"
)

// storedTiles integrates batches of the given sizes into a new log and
// returns the bytes of each hash tile as last written.
func storedTiles(t *testing.T, s *Store, name string, sizes ...int) map[tile.Tile][]byte {
	t.Helper()
	l := newTestLog(t, s, name)
	stored := make(map[tile.Tile][]byte)
	for _, n := range sizes {
		for _, td := range l.integrate(t, s, n, 10).Tiles {
			stored[tile.Tile{Level: td.Level, Index: td.Index}] = td.Hashes
		}
	}
	return stored
}

// tileCall is one ReadTiles call, or a ReadTileSlices call if it has
// slices, and what it returned.
type tileCall struct {
	log    string
	tiles  []tile.Tile
	slices []tree.TileSlice
	hashes [][]byte
	err    error
}

func (c *tileCall) run(ctx context.Context, s *Store) {
	if c.slices != nil {
		c.hashes, c.err = s.ReadTileSlices(ctx, c.log, c.slices)
		return
	}
	c.hashes, c.err = s.ReadTiles(ctx, c.log, c.tiles)
}

// check compares c with the stored tiles of its log: each tile or slice
// returned as stored, or ErrNotFound naming the first tile absent or too
// narrow.
func (c *tileCall) check(stored map[tile.Tile][]byte) error {
	if c.slices != nil {
		return c.checkSlices(stored)
	}
	for _, t := range c.tiles {
		h := stored[tile.Tile{Level: t.Level, Index: t.Index}]
		if len(h) >= t.Width*tile.HashSize {
			continue
		}
		if !errors.Is(c.err, storage.ErrNotFound) || !strings.Contains(c.err.Error(), t.Path()) {
			return fmt.Errorf("ReadTiles(%q, %v) = %v, want ErrNotFound for %s", c.log, c.tiles, c.err, t.Path())
		}
		return nil
	}
	if c.err != nil || len(c.hashes) != len(c.tiles) {
		return fmt.Errorf("ReadTiles(%q, %v) = %d tiles, %v", c.log, c.tiles, len(c.hashes), c.err)
	}
	for i, t := range c.tiles {
		if !bytes.Equal(c.hashes[i], stored[tile.Tile{Level: t.Level, Index: t.Index}]) {
			return fmt.Errorf("ReadTiles(%q, %v): %s has the wrong %d bytes", c.log, c.tiles, t.Path(), len(c.hashes[i]))
		}
	}
	return nil
}

func (c *tileCall) checkSlices(stored map[tile.Tile][]byte) error {
	for _, sl := range c.slices {
		h := stored[tile.Tile{Level: sl.Tile.Level, Index: sl.Tile.Index}]
		if len(h) >= sl.To*tile.HashSize {
			continue
		}
		if !errors.Is(c.err, storage.ErrNotFound) || !strings.Contains(c.err.Error(), sl.Tile.Path()) {
			return fmt.Errorf("ReadTileSlices(%q, %v) = %v, want ErrNotFound for %s", c.log, c.slices, c.err, sl.Tile.Path())
		}
		return nil
	}
	if c.err != nil || len(c.hashes) != len(c.slices) {
		return fmt.Errorf("ReadTileSlices(%q, %v) = %d slices, %v", c.log, c.slices, len(c.hashes), c.err)
	}
	for i, sl := range c.slices {
		h := stored[tile.Tile{Level: sl.Tile.Level, Index: sl.Tile.Index}]
		if !bytes.Equal(c.hashes[i], h[sl.From*tile.HashSize:sl.To*tile.HashSize]) {
			return fmt.Errorf("ReadTileSlices(%q, %v): %d..%d of %s: wrong %d bytes", c.log, c.slices, sl.From, sl.To, sl.Tile.Path(), len(c.hashes[i]))
		}
	}
	return nil
}

// lockTiles makes tile queries wait until unlock is called, by holding an
// exclusive lock on the tiles table.
func lockTiles(t *testing.T, url string) (unlock func()) {
	t.Helper()
	tx, err := conn(t, url).Begin(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(t.Context(), `LOCK TABLE tiles IN ACCESS EXCLUSIVE MODE`); err != nil {
		t.Fatal(err)
	}
	return func() {
		if err := tx.Rollback(context.Background()); err != nil {
			t.Error(err)
		}
	}
}

// waitTileReads waits until cond holds for the coalescer's state.
func waitTileReads(t *testing.T, s *Store, what string, cond func(c *tileReads) bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		s.tiles.mu.Lock()
		ok := cond(s.tiles)
		s.tiles.mu.Unlock()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

func TestReadTilesCoalesced(t *testing.T) {
	for _, gated := range []bool{false, true} {
		t.Run(fmt.Sprintf("gated=%v", gated), func(t *testing.T) {
			ctx := t.Context()
			s, url := openStore(t)
			// a: level 0 tiles 0-2 full, 3 of width 232, level 1 tile 0 of
			// width 3; b: level 0 tiles 0-1 full, 2 of width 88, level 1 tile
			// 0 of width 2.
			stored := map[string]map[tile.Tile][]byte{
				"a": storedTiles(t, s, "a", 300, 700),
				"b": storedTiles(t, s, "b", 600),
			}
			// Calls read random tiles of one log, overlapping each other's; a
			// few also want a missing tile or a partial tile wider than stored.
			calls := make([]*tileCall, 200)
			ntiles := 0
			for i := range calls {
				rng := rand.New(rand.NewPCG(uint64(i), 0))
				c := &tileCall{log: []string{"a", "b"}[i%2]}
				var keys []tile.Tile
				for k := range stored[c.log] {
					keys = append(keys, k)
				}
				for range 1 + rng.IntN(4) {
					k := keys[rng.IntN(len(keys))]
					k.Width = 1 + rng.IntN(len(stored[c.log][k])/tile.HashSize)
					c.tiles = append(c.tiles, k)
				}
				switch i % 10 {
				case 3:
					c.tiles = append(c.tiles, tile.Tile{Level: 0, Index: 50, Width: 1})
				case 7:
					partial := tile.Tile{Level: 1, Index: 0}
					partial.Width = len(stored[c.log][partial])/tile.HashSize + 1
					c.tiles = append(c.tiles, partial)
				}
				if i%3 == 1 { // read slices of the same tiles instead
					for _, t := range c.tiles {
						from := rng.IntN(t.Width)
						to := from + 1 + rng.IntN(t.Width-from)
						if t.Index == 50 || t.Width > len(stored[c.log][tile.Tile{Level: t.Level, Index: t.Index}])/tile.HashSize {
							from, to = t.Width-1, t.Width // missing, or reaching past what is stored
						}
						t.Width = tile.Width
						c.slices = append(c.slices, tree.TileSlice{Tile: t, From: from, To: to})
					}
				}
				ntiles += len(c.tiles)
				calls[i] = c
			}

			// Alone, each call runs its own query.
			single := make([]*tileCall, len(calls))
			for i, c := range calls {
				single[i] = &tileCall{log: c.log, tiles: c.tiles, slices: c.slices}
				single[i].run(ctx, s)
				if err := single[i].check(stored[c.log]); err != nil {
					t.Fatalf("alone: %v", err)
				}
			}

			var unlock func()
			if gated {
				unlock = lockTiles(t, url)
			}
			queries := s.tiles.queries.Load()
			var wg sync.WaitGroup
			start := make(chan struct{})
			for _, c := range calls {
				wg.Go(func() {
					<-start
					c.run(ctx, s)
				})
			}
			close(start)
			if gated {
				// Both slots wait for the lock, the other calls queue.
				waitTileReads(t, s, "calls to queue", func(c *tileReads) bool { return len(c.queue) == len(calls)-maxTileQueries })
				unlock()
			}
			wg.Wait()
			queries = s.tiles.queries.Load() - queries

			owner := make(map[*byte]int) // no two calls share memory
			for i, c := range calls {
				if err := c.check(stored[c.log]); err != nil {
					t.Error(err)
					continue
				}
				for _, h := range c.hashes {
					if o, ok := owner[&h[0]]; ok && o != i {
						t.Errorf("calls %d and %d got the same %s", o, i, c.tiles[0].Path())
					}
					owner[&h[0]] = i
				}
				if fmt.Sprint(c.err) != fmt.Sprint(single[i].err) {
					t.Errorf("ReadTiles(%q, %v, %v) = %v, alone %v", c.log, c.tiles, c.slices, c.err, single[i].err)
				}
			}
			t.Logf("%d calls reading %d tiles: %d queries", len(calls), ntiles, queries)
			// Each merged query but the last carries more than
			// maxQueryTiles/2 tiles.
			if want := int64(maxTileQueries + ntiles/(maxQueryTiles/2) + 1); gated && queries > want {
				t.Errorf("%d calls made %d queries, want at most %d", len(calls), queries, want)
			}
			waitTileReads(t, s, "the slots to free", func(c *tileReads) bool { return c.running == 0 && len(c.queue) == 0 })
		})
	}
}

// TestReadTilesCancel holds tile queries with a table lock to cancel calls
// while they queue and while they share a query.
func TestReadTilesCancel(t *testing.T) {
	s, url := openStore(t)
	stored := storedTiles(t, s, "a", 600)
	s.tiles.limit = 1
	unlock := lockTiles(t, url)
	defer func() {
		if unlock != nil {
			unlock()
		}
	}()

	// start makes a call, with its own cancel function, and returns its
	// result channel.
	start := func(i int) (*tileCall, context.CancelFunc, chan struct{}) {
		c := &tileCall{log: "a", tiles: []tile.Tile{{Level: 0, Index: uint64(i % 3), Width: 1}, {Level: 1, Index: 0, Width: 2}}}
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan struct{})
		go func() {
			defer close(done)
			c.run(ctx, s)
		}()
		return c, cancel, done
	}
	returns := func(what string, c *tileCall, done chan struct{}, want error) {
		t.Helper()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: call did not return", what)
		}
		if c.err != want {
			t.Errorf("%s: ReadTiles = %v, want %v", what, c.err, want)
		}
	}
	running := func(c *tileReads) bool { return c.running == 1 && len(c.queue) == 0 }
	queued := func(n int) func(c *tileReads) bool {
		return func(c *tileReads) bool { return len(c.queue) == n }
	}
	queries := s.tiles.queries.Load()

	// x takes the only slot; a, b and c queue behind it.
	x, cancelX, doneX := start(0)
	waitTileReads(t, s, "x to run", running)
	var calls []*tileCall
	var cancels []context.CancelFunc
	var dones []chan struct{}
	for i := range 3 {
		c, cancel, done := start(i)
		calls, cancels, dones = append(calls, c), append(cancels, cancel), append(dones, done)
		defer cancel()
	}
	waitTileReads(t, s, "a, b and c to queue", queued(3))

	// Cancelled while queued: d leaves the queue at once.
	d, cancelD, doneD := start(3)
	waitTileReads(t, s, "d to queue", queued(4))
	cancelD()
	returns("d cancelled while queued", d, doneD, context.Canceled)
	waitTileReads(t, s, "d to leave the queue", queued(3))

	// x's own query ends with its context; a, b and c then share a query.
	cancelX()
	returns("x cancelled while running alone", x, doneX, context.Canceled)
	waitTileReads(t, s, "a, b and c to share a query", running)

	// Cancelled while sharing it: a returns, b and c still wait.
	cancels[0]()
	returns("a cancelled while sharing a query", calls[0], dones[0], context.Canceled)
	for i := 1; i < 3; i++ {
		select {
		case <-dones[i]:
			t.Fatalf("call %d returned while its query waits for the lock: %v", i, calls[i].err)
		default:
		}
	}
	unlock()
	unlock = nil
	for i := 1; i < 3; i++ {
		returns(fmt.Sprintf("call %d", i), calls[i], dones[i], nil)
		if err := calls[i].check(stored); err != nil {
			t.Error(err)
		}
	}
	if n := s.tiles.queries.Load() - queries; n != 2 {
		t.Errorf("%d queries, want 2 (x alone, then b and c)", n)
	}

	// A query all of whose callers give up is cancelled: its slot frees
	// while the lock is still held.
	unlock = lockTiles(t, url)
	x, cancelX, doneX = start(0)
	waitTileReads(t, s, "x to run", running)
	e, cancelE, doneE := start(1)
	waitTileReads(t, s, "e to queue", queued(1))
	cancelX()
	returns("x", x, doneX, context.Canceled)
	waitTileReads(t, s, "e's query to run", running)
	cancelE()
	returns("e", e, doneE, context.Canceled)
	waitTileReads(t, s, "the slot to free", func(c *tileReads) bool { return c.running == 0 })
}

// TestReadTilesClose closes the store under queued and merged reads: they
// fail, and Close does not wait for the lock their query waits for.
func TestReadTilesClose(t *testing.T) {
	s, url := openStore(t)
	storedTiles(t, s, "a", 10)
	s.tiles.limit = 1
	unlock := lockTiles(t, url)
	defer unlock()
	call := func(ctx context.Context) (*tileCall, chan struct{}) {
		c := &tileCall{log: "a", tiles: []tile.Tile{{Level: 0, Index: 0, Width: 10}}}
		done := make(chan struct{})
		go func() {
			defer close(done)
			c.run(ctx, s)
		}()
		return c, done
	}
	ctx, cancelX := context.WithCancel(t.Context())
	x, doneX := call(ctx)
	waitTileReads(t, s, "x to run", func(c *tileReads) bool { return c.running == 1 })
	a, doneA := call(t.Context())
	waitTileReads(t, s, "a to queue", func(c *tileReads) bool { return len(c.queue) == 1 })
	cancelX()
	<-doneX
	waitTileReads(t, s, "a's query to run", func(c *tileReads) bool { return len(c.queue) == 0 })
	b, doneB := call(t.Context())
	waitTileReads(t, s, "b to queue", func(c *tileReads) bool { return len(c.queue) == 1 })

	closed := make(chan error)
	go func() { closed <- s.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Errorf("Close: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close waits")
	}
	<-doneA
	<-doneB
	for name, c := range map[string]*tileCall{"x": x, "a (merged)": a, "b (queued)": b} {
		if name == "x" {
			if c.err != context.Canceled {
				t.Errorf("x: %v, want context.Canceled", c.err)
			}
			continue
		}
		if !errors.Is(c.err, errClosed) || !strings.Contains(c.err.Error(), `"a"`) {
			t.Errorf("%s: ReadTiles = %v, want an error naming the log and wrapping %v", name, c.err, errClosed)
		}
	}
	if _, err := s.ReadTiles(t.Context(), "a", []tile.Tile{{Level: 0, Index: 0, Width: 1}}); err == nil {
		t.Error("ReadTiles after Close succeeded")
	}
}
