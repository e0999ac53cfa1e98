package bloom

import (
	"encoding/binary"
	"math/rand/v2"
	"slices"
	"testing"
)

func TestFalsePositives(t *testing.T) {
	const n = 100_000
	f := New(n)
	rng := rand.New(rand.NewPCG(3, 4))
	k := make([]byte, 32)
	fill := func() {
		for i := range 4 {
			binary.LittleEndian.PutUint64(k[8*i:], rng.Uint64())
		}
	}
	added := make([]uint64, n)
	for i := range n {
		fill()
		added[i] = Hash(k)
		Add(f, added[i])
	}
	for _, h := range added {
		if !MayContain(f, h) {
			t.Fatal("false negative")
		}
	}
	fp := 0
	for range n {
		fill()
		if MayContain(f, Hash(k)) {
			fp++
		}
	}
	rate := float64(fp) / n
	t.Logf("false positive rate %.2f%% at %d bits per key", 100*rate, BitsPerKey)
	if rate > 0.003 {
		t.Errorf("false positive rate %.2f%%, want < 0.3%%", 100*rate)
	}
	// Keys that are not random hashes spread as well.
	f = New(1000)
	for i := range 1000 {
		Add(f, Hash(binary.BigEndian.AppendUint64(make([]byte, 24), uint64(i))))
	}
	fp = 0
	for i := range n {
		if MayContain(f, Hash(binary.BigEndian.AppendUint64(make([]byte, 24), uint64(1000+i)))) {
			fp++
		}
	}
	if rate := float64(fp) / n; rate > 0.005 {
		t.Errorf("false positive rate %.2f%% for sequential keys", 100*rate)
	}
}

// TestLayout pins the stored layout to what the embedded store has written
// since its first release (values read off that code): filters in files and
// databases must still answer for their keys.
func TestLayout(t *testing.T) {
	f := New(10)
	if len(f) != BlockBytes {
		t.Fatalf("New(10) has %d bytes, want one block", len(f))
	}
	h := Hash([]byte("tlog"))
	if h != 0xe174f7186d1c1afd {
		t.Errorf("Hash(tlog) = %#x, want 0xe174f7186d1c1afd", h)
	}
	Add(f, h)
	var set []int
	for i, c := range f {
		for b := range 8 {
			if c&(1<<b) != 0 {
				set = append(set, 8*i+b)
			}
		}
	}
	if want := []int{165, 176, 205, 226, 269, 338, 411}; !slices.Equal(set, want) {
		t.Errorf("bits set %v, want %v", set, want)
	}
}
