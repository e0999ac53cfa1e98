package disktiles

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"sync"
	"testing"
)

// tileData returns distinct hashes for a tile of a log.
func tileData(log string, level int, index uint64) []byte {
	b := make([]byte, TileBytes)
	r := rand.New(rand.NewPCG(uint64(level)<<56|index, uint64(len(log))))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	copy(b, fmt.Sprintf("%s/%d/%d", log, level, index))
	return b
}

func TestReadWrite(t *testing.T) {
	dir := t.TempDir()
	c, err := Open(dir, 3*TileBytes+100)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if names, _ := os.ReadDir(dir); len(names) != 0 {
		t.Errorf("the file is still linked in %s: %v", dir, names)
	}

	if got := c.Read("a", 0, 1, 0, 256); got != nil {
		t.Fatal("Read of a tile never written answered")
	}
	if err := c.Write("a", 0, 1, make([]byte, TileBytes-32)); err == nil {
		t.Fatal("Write of a partial tile: no error")
	}
	for _, k := range []key{{"a", 0, 1}, {"b", 0, 1}, {"a", 1, 1}} {
		if err := c.Write(k.log, k.level, k.index, tileData(k.log, k.level, k.index)); err != nil {
			t.Fatalf("Write %v: %v", k, err)
		}
	}
	// A tile written again keeps its first hashes and takes no slot.
	if err := c.Write("a", 0, 1, make([]byte, TileBytes)); err != nil {
		t.Fatalf("Write of a kept tile: %v", err)
	}
	if err := c.Write("a", 0, 2, tileData("a", 0, 2)); !errors.Is(err, ErrFull) {
		t.Fatalf("Write beyond the maximum of 3 tiles: %v, want ErrFull", err)
	}
	if n := c.Tiles(); n != 3 {
		t.Fatalf("Tiles() = %d, want 3", n)
	}
	if got := c.Read("a", 0, 2, 0, 256); got != nil {
		t.Fatal("Read of the tile refused as full answered")
	}
	for _, k := range []key{{"a", 0, 1}, {"b", 0, 1}, {"a", 1, 1}} {
		want := tileData(k.log, k.level, k.index)
		for _, r := range [][2]int{{0, 256}, {0, 1}, {32, 64}, {255, 256}, {17, 200}} {
			if got := c.Read(k.log, k.level, k.index, r[0], r[1]); !bytes.Equal(got, want[r[0]*32:r[1]*32]) {
				t.Errorf("Read %v hashes %d..%d: wrong hashes", k, r[0], r[1])
			}
		}
	}
	for _, r := range [][2]int{{-1, 5}, {5, 5}, {6, 5}, {0, 257}} {
		if got := c.Read("a", 0, 1, r[0], r[1]); got != nil {
			t.Errorf("Read hashes %d..%d: answered, want nil", r[0], r[1])
		}
	}

	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if got := c.Read("a", 0, 1, 0, 256); got != nil {
		t.Error("Read after Close answered")
	}
	if err := c.Write("z", 0, 0, tileData("z", 0, 0)); err == nil {
		t.Error("Write after Close: no error")
	}
}

func TestOpenMissingDir(t *testing.T) {
	if _, err := Open(t.TempDir()+"/missing", 1<<20); err == nil {
		t.Fatal("Open in a missing directory: no error")
	}
}

// TestConcurrent reads and writes from many goroutines (run with -race):
// every read answers nothing or the tile's own hashes.
func TestConcurrent(t *testing.T) {
	c, err := Open(t.TempDir(), 64*TileBytes)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(g), 1))
			for range 500 {
				i := r.Uint64N(100)
				if r.IntN(2) == 0 {
					if err := c.Write("log", 0, i, tileData("log", 0, i)); err != nil && !errors.Is(err, ErrFull) {
						t.Error(err)
						return
					}
					continue
				}
				from := r.IntN(256)
				if got := c.Read("log", 0, i, from, 256); got != nil && !bytes.Equal(got, tileData("log", 0, i)[from*32:]) {
					t.Errorf("tile %d: wrong hashes", i)
					return
				}
			}
		})
	}
	wg.Wait()
	if n := c.Tiles(); n != 64 {
		t.Errorf("Tiles() = %d after writes of 100 tiles, want the maximum of 64", n)
	}
}
