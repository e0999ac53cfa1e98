// Package tile implements the coordinates, paths and entry bundles of C2SP
// tlog-tiles: a Merkle tree stored as tiles of height 8 (256 hashes wide), and
// log entries stored as bundles of 256 length-prefixed entries.
//
// The package is pure: it does no I/O.
package tile

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

const (
	// Height is the number of Merkle tree levels one tile spans.
	Height = 8
	// Width is the number of hashes (or entries) in a full tile (or bundle).
	Width = 1 << Height
	// HashSize is the size of a SHA-256 hash.
	HashSize = 32
	// MaxEntrySize is the largest entry an entry bundle can hold: its length
	// prefix is a big-endian uint16.
	MaxEntrySize = 1<<16 - 1
	// EntriesLevel is the Level of a Tile that is an entry bundle.
	EntriesLevel = -1
	// MaxLevel is the highest hash tile level tlog-tiles allows.
	MaxLevel = 63
)

// ErrInvalidPath is wrapped by every error ParsePath returns.
var ErrInvalidPath = errors.New("invalid tile path")

// ErrInvalidBundle is wrapped by every error ParseBundle returns.
var ErrInvalidBundle = errors.New("invalid entry bundle")

// Tile names a hash tile or an entry bundle, possibly partial.
type Tile struct {
	// Level is the tile level (0 holds leaf hashes), or EntriesLevel for an
	// entry bundle.
	Level int
	// Index is the position of the tile within its level.
	Index uint64
	// Width is the number of hashes (or entries) in the tile: 1..Width, where
	// Width means a full tile.
	Width int
}

// IsEntries reports whether t is an entry bundle.
func (t Tile) IsEntries() bool { return t.Level == EntriesLevel }

// IsFull reports whether t is a full (and so immutable) tile.
func (t Tile) IsFull() bool { return t.Width == Width }

// Path returns the tlog-tiles path of t, such as "tile/0/x001/234.p/7" or
// "tile/entries/012", relative to the log prefix.
func (t Tile) Path() string {
	var b strings.Builder
	b.WriteString("tile/")
	if t.IsEntries() {
		b.WriteString("entries")
	} else {
		b.WriteString(strconv.Itoa(t.Level))
	}
	b.WriteByte('/')
	b.WriteString(encodeIndex(t.Index))
	if t.Width < Width {
		b.WriteString(".p/")
		b.WriteString(strconv.Itoa(t.Width))
	}
	return b.String()
}

func (t Tile) String() string { return t.Path() }

// encodeIndex writes n as zero-padded groups of three digits, all but the
// last prefixed with "x": 1234067 is "x001/x234/067".
func encodeIndex(n uint64) string {
	s := fmt.Sprintf("%03d", n%1000)
	for n >= 1000 {
		n /= 1000
		s = fmt.Sprintf("x%03d/%s", n%1000, s)
	}
	return s
}

// ParsePath parses a tlog-tiles tile path relative to the log prefix, such as
// "tile/1/x001/234" or "tile/entries/000.p/17". It accepts exactly the paths
// Path produces, so every tile has one path.
func ParsePath(path string) (Tile, error) {
	rest, ok := strings.CutPrefix(path, "tile/")
	if !ok {
		return Tile{}, fmt.Errorf("%w %q: does not start with \"tile/\"", ErrInvalidPath, path)
	}
	levelStr, rest, ok := strings.Cut(rest, "/")
	if !ok {
		return Tile{}, fmt.Errorf("%w %q: missing tile index", ErrInvalidPath, path)
	}
	t := Tile{Width: Width}
	if levelStr == "entries" {
		t.Level = EntriesLevel
	} else {
		l, err := parseDecimal(levelStr, MaxLevel)
		if err != nil {
			return Tile{}, fmt.Errorf("%w %q: level: %v", ErrInvalidPath, path, err)
		}
		t.Level = int(l)
	}
	if i := strings.Index(rest, ".p/"); i >= 0 {
		w, err := parseDecimal(rest[i+3:], Width-1)
		if err != nil || w == 0 {
			return Tile{}, fmt.Errorf("%w %q: partial width must be 1..255 without leading zeros", ErrInvalidPath, path)
		}
		t.Width = int(w)
		rest = rest[:i]
	}
	elems := strings.Split(rest, "/")
	for i, e := range elems {
		last := i == len(elems)-1
		if !last {
			var ok bool
			if e, ok = strings.CutPrefix(e, "x"); !ok {
				return Tile{}, fmt.Errorf("%w %q: index element %d must start with 'x'", ErrInvalidPath, path, i)
			}
		}
		if len(e) != 3 || !isDigits(e) {
			return Tile{}, fmt.Errorf("%w %q: index element %d must be three digits", ErrInvalidPath, path, i)
		}
		if i == 0 && !last && e == "000" {
			return Tile{}, fmt.Errorf("%w %q: index has a leading zero element", ErrInvalidPath, path)
		}
		d, _ := strconv.ParseUint(e, 10, 64)
		if t.Index > (^uint64(0)-d)/1000 {
			return Tile{}, fmt.Errorf("%w %q: index overflows", ErrInvalidPath, path)
		}
		t.Index = t.Index*1000 + d
	}
	return t, nil
}

func isDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return len(s) > 0
}

// parseDecimal parses a canonical decimal (no sign, no leading zeros) <= max.
func parseDecimal(s string, max uint64) (uint64, error) {
	if !isDigits(s) || (len(s) > 1 && s[0] == '0') {
		return 0, fmt.Errorf("%q is not a canonical decimal", s)
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil || n > max {
		return 0, fmt.Errorf("%q is out of range 0..%d", s, max)
	}
	return n, nil
}

// WidthAt returns the width of tile (level, index) in a tree of the given
// size, or 0 if that tree has no such tile. Use EntriesLevel for bundles.
func WidthAt(level int, index, size uint64) int {
	if level == EntriesLevel {
		level = 0
	}
	n := size >> (Height * uint(level)) // hashes at this tile level
	if n <= index*Width {
		return 0
	}
	return int(min(n-index*Width, Width))
}

// ForSize returns the tile (level, index) as it exists in a tree of the given
// size, and false if that tree has no such tile.
func ForSize(level int, index, size uint64) (Tile, bool) {
	w := WidthAt(level, index, size)
	return Tile{Level: level, Index: index, Width: w}, w > 0
}

// Partials returns the partial hash tiles (and the partial entry bundle) on
// the right edge of a tree of the given size, lowest level first.
func Partials(size uint64) []Tile {
	var ts []Tile
	if w := size % Width; w > 0 {
		ts = append(ts, Tile{Level: EntriesLevel, Index: size / Width, Width: int(w)})
	}
	for l := 0; l <= MaxLevel && size>>(Height*uint(l)) > 0; l++ {
		n := size >> (Height * uint(l))
		if w := n % Width; w > 0 {
			ts = append(ts, Tile{Level: l, Index: n / Width, Width: int(w)})
		}
	}
	return ts
}

// AppendBundleEntry appends entry to the entry bundle b with its uint16
// length prefix. It panics if entry is longer than MaxEntrySize: callers
// validate entries when they are submitted.
func AppendBundleEntry(b, entry []byte) []byte {
	if len(entry) > MaxEntrySize {
		panic("tile: entry too large for a bundle")
	}
	b = binary.BigEndian.AppendUint16(b, uint16(len(entry)))
	return append(b, entry...)
}

// ParseBundle splits an entry bundle into its entries. The entries alias
// data.
func ParseBundle(data []byte) ([][]byte, error) {
	var entries [][]byte
	for len(data) > 0 {
		if len(data) < 2 {
			return nil, fmt.Errorf("%w: truncated length prefix after entry %d", ErrInvalidBundle, len(entries))
		}
		n := int(binary.BigEndian.Uint16(data))
		if len(data)-2 < n {
			return nil, fmt.Errorf("%w: entry %d is truncated (%d of %d bytes)", ErrInvalidBundle, len(entries), len(data)-2, n)
		}
		entries = append(entries, data[2:2+n:2+n])
		data = data[2+n:]
		if len(entries) > Width {
			return nil, fmt.Errorf("%w: more than %d entries", ErrInvalidBundle, Width)
		}
	}
	return entries, nil
}
