package tile

import (
	"bytes"
	"errors"
	"testing"

	sumdb "golang.org/x/mod/sumdb/tlog"
)

func TestPaths(t *testing.T) {
	for _, tc := range []struct {
		tile Tile
		path string
	}{
		{Tile{0, 0, 256}, "tile/0/000"},
		{Tile{0, 1234067, 256}, "tile/0/x001/x234/067"},
		{Tile{2, 999, 1}, "tile/2/999.p/1"},
		{Tile{1, 1000, 255}, "tile/1/x001/000.p/255"},
		{Tile{EntriesLevel, 12, 256}, "tile/entries/012"},
		{Tile{EntriesLevel, 5, 17}, "tile/entries/005.p/17"},
		{Tile{63, 0, 256}, "tile/63/000"},
	} {
		if got := tc.tile.Path(); got != tc.path {
			t.Errorf("%+v.Path() = %q, want %q", tc.tile, got, tc.path)
		}
		got, err := ParsePath(tc.path)
		if err != nil || got != tc.tile {
			t.Errorf("ParsePath(%q) = %+v, %v; want %+v", tc.path, got, err, tc.tile)
		}
	}
}

// TestPathsMatchSumdb cross-checks hash tile paths with sumdb/tlog, whose
// paths carry the height ("tile/8/...") where tlog-tiles has none.
func TestPathsMatchSumdb(t *testing.T) {
	for _, n := range []uint64{0, 1, 999, 1000, 1001, 123456789, 1 << 40} {
		for _, w := range []int{1, 100, 256} {
			ours := Tile{Level: 3, Index: n, Width: w}.Path()
			theirs := sumdb.Tile{H: 8, L: 3, N: int64(n), W: w}.Path()
			if want := "tile/" + theirs[len("tile/8/"):]; ours != want {
				t.Errorf("path %q, sumdb %q", ours, theirs)
			}
		}
	}
}

func TestParsePathErrors(t *testing.T) {
	for _, p := range []string{
		"", "tile", "tile/", "tile/0", "tile/0/", "tile/00/000", "tile/64/000", "tile/-1/000",
		"tile/0/1", "tile/0/0000", "tile/0/x000/001", "tile/0/001/002", "tile/0/x001",
		"tile/0/000.p/0", "tile/0/000.p/256", "tile/0/000.p/01", "tile/0/000.p/",
		"tile/0/x1/000", "tile/entry/000", "tiles/0/000", "/tile/0/000", "tile/0/000/",
		"tile/0/x018/x446/x744/x073/x709/x551/616", // 2^64 overflows
		"tile/0/x999/x999/x999/x999/x999/x999/x999/999",
		"tile/0/00a",
	} {
		if tl, err := ParsePath(p); !errors.Is(err, ErrInvalidPath) {
			t.Errorf("ParsePath(%q) = %+v, %v; want ErrInvalidPath", p, tl, err)
		}
	}
}

func TestWidths(t *testing.T) {
	// The example of the spec: a tree of size 70,000.
	size := uint64(70000)
	if w := WidthAt(0, 272, size); w != 256 {
		t.Errorf("level 0 tile 272: %d", w)
	}
	if w := WidthAt(0, 273, size); w != 112 {
		t.Errorf("level 0 tile 273: %d", w)
	}
	if w := WidthAt(0, 274, size); w != 0 {
		t.Errorf("level 0 tile 274: %d", w)
	}
	if w := WidthAt(1, 0, size); w != 256 {
		t.Errorf("level 1 tile 0: %d", w)
	}
	if w := WidthAt(1, 1, size); w != 17 {
		t.Errorf("level 1 tile 1: %d", w)
	}
	if w := WidthAt(2, 0, size); w != 1 {
		t.Errorf("level 2 tile 0: %d", w)
	}
	got := Partials(size)
	want := []Tile{{EntriesLevel, 273, 112}, {0, 273, 112}, {1, 1, 17}, {2, 0, 1}}
	if len(got) != len(want) {
		t.Fatalf("Partials(70000) = %v", got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("Partials(70000)[%d] = %v, want %v", i, got[i], want[i])
		}
	}
	if p := Partials(256); len(p) != 1 || p[0] != (Tile{1, 0, 1}) {
		t.Errorf("Partials(256) = %v", p)
	}
}

func TestBundle(t *testing.T) {
	entries := [][]byte{[]byte("a"), {}, bytes.Repeat([]byte{7}, MaxEntrySize)}
	var b []byte
	for _, e := range entries {
		b = AppendBundleEntry(b, e)
	}
	got, err := ParseBundle(b)
	if err != nil || len(got) != 3 || !bytes.Equal(got[2], entries[2]) || len(got[1]) != 0 {
		t.Fatalf("ParseBundle: %d entries, %v", len(got), err)
	}
	for _, bad := range [][]byte{{0}, {0, 5, 1, 2}, append(b, 0)} {
		if _, err := ParseBundle(bad); !errors.Is(err, ErrInvalidBundle) {
			t.Errorf("ParseBundle(%x): %v", bad, err)
		}
	}
}

func FuzzParsePath(f *testing.F) {
	for _, s := range []string{"tile/0/000", "tile/entries/x001/234.p/5", "tile/63/x999/999", "tile/0/000.p/255"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		tl, err := ParsePath(p)
		if err != nil {
			return
		}
		if got := tl.Path(); got != p {
			t.Fatalf("ParsePath(%q) = %+v, which prints as %q", p, tl, got)
		}
	})
}

func FuzzParseBundle(f *testing.F) {
	f.Add([]byte{0, 1, 'a'})
	f.Fuzz(func(t *testing.T, b []byte) {
		entries, err := ParseBundle(b)
		if err != nil {
			return
		}
		var out []byte
		for _, e := range entries {
			out = AppendBundleEntry(out, e)
		}
		if !bytes.Equal(out, b) {
			t.Fatalf("bundle does not round-trip")
		}
	})
}
