// Package bloom is the blocked Bloom filter both storage drivers keep of
// their identity index's older parts: all of a key's bits lie in one 512-bit
// block (one cache line), about 0.1% false positives at BitsPerKey.
//
// The layout is stored (in the embedded store's file, in PostgreSQL's
// entry_filters table), so it must not change: a filter read back with other
// parameters would answer "absent" for keys it holds. A new layout needs a
// new Format.
package bloom

import (
	"encoding/binary"
	"math/bits"
)

const (
	// Format names this layout where filters are stored beside a format.
	Format = 1

	BitsPerKey = 16
	Probes     = 7
	BlockBits  = 512
	// BlockBytes is the size of a block; a filter is a whole number of them.
	BlockBytes = BlockBits / 8
)

// New returns an empty filter sized for keys keys.
func New(keys uint64) []byte { return make([]byte, Size(keys)) }

// Size is the size in bytes of a filter for keys keys.
func Size(keys uint64) int {
	blocks := max(1, (keys*BitsPerKey+BlockBits-1)/BlockBits)
	return int(blocks * BlockBytes)
}

// Hash mixes a key into 64 bits. Keys are hashes already, but the filter
// must not depend on that.
func Hash(key []byte) uint64 {
	h := uint64(len(key)) * 0x9e3779b97f4a7c15
	for len(key) >= 8 {
		h = mix64(h ^ binary.LittleEndian.Uint64(key))
		key = key[8:]
	}
	for _, c := range key {
		h = mix64(h ^ uint64(c))
	}
	return h
}

// mix64 is the SplitMix64 finalizer.
func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// block returns the block of filter f for key hash h.
func block(f []byte, h uint64) []byte {
	blocks := uint64(len(f)) / BlockBytes
	hi, _ := bits.Mul64(h, blocks)
	off := hi * BlockBytes
	return f[off : off+BlockBytes]
}

// Add adds the key whose Hash is h to f.
func Add(f []byte, h uint64) {
	b := block(f, h)
	g := mix64(h)
	for range Probes {
		bit := g % BlockBits
		g /= BlockBits
		b[bit/8] |= 1 << (bit % 8)
	}
}

// MayContain reports whether f may hold the key whose Hash is h; false means
// it certainly does not.
func MayContain(f []byte, h uint64) bool {
	b := block(f, h)
	g := mix64(h)
	for range Probes {
		bit := g % BlockBits
		g /= BlockBits
		if b[bit/8]&(1<<(bit%8)) == 0 {
			return false
		}
	}
	return true
}

// Valid reports whether f has the shape of a filter (a whole, non-zero
// number of blocks).
func Valid(f []byte) bool { return len(f) > 0 && len(f)%BlockBytes == 0 }
