package embedded

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// TestHashIndex inserts runs of many sizes, with keys repeated across runs
// (as leaf hashes of keyed entries are), and checks after each transaction
// that every key maps to its lowest index, that absent keys are absent, and
// that compaction keeps fewer than runFanIn runs in every tier.
func TestHashIndex(t *testing.T) {
	t.Run("default", testHashIndex)
	t.Run("small frozen runs", func(t *testing.T) {
		defer func(f, m uint64) { frozenRunKeys, maxMergeKeys = f, m }(frozenRunKeys, maxMergeKeys)
		frozenRunKeys, maxMergeKeys = 3000, 5000
		testHashIndex(t)
	})
}

func testHashIndex(t *testing.T) {
	db, err := bolt.Open(filepath.Join(t.TempDir(), "index.db"), 0o600, &bolt.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Update(func(tx *bolt.Tx) error {
		root, err := tx.CreateBucket([]byte("root"))
		if err != nil {
			return err
		}
		return createIndex(root, []byte("ix"))
	}); err != nil {
		t.Fatal(err)
	}
	open := func(tx *bolt.Tx) *hashIndex { return openIndex(tx.Bucket([]byte("root")).Bucket([]byte("ix"))) }

	rng := rand.New(rand.NewPCG(1, 2))
	key := func() []byte {
		k := make([]byte, 32)
		for i := range 4 {
			binary.LittleEndian.PutUint64(k[8*i:], rng.Uint64())
		}
		return k
	}
	want := map[string]uint64{}
	var keys []string
	next := uint64(0)
	sizes := []int{1, 1, 1, 7, 3, 300, 1, 1000, 2, 50}
	for round := range 700 {
		n := sizes[round%len(sizes)]
		var es []indexEntry
		for range n {
			var k []byte
			if len(keys) > 0 && rng.IntN(10) == 0 {
				k = []byte(keys[rng.IntN(len(keys))]) // a key again, at a higher index
			} else {
				k = key()
				keys = append(keys, string(k))
			}
			if slices.ContainsFunc(es, func(e indexEntry) bool { return bytes.Equal(e.key, k) }) {
				continue
			}
			if _, ok := want[string(k)]; !ok {
				want[string(k)] = next
			}
			es = append(es, indexEntry{key: k, value: u64(next)})
			next++
		}
		slices.SortFunc(es, func(a, b indexEntry) int { return bytes.Compare(a.key, b.key) })
		if err := db.Update(func(tx *bolt.Tx) error { return open(tx).insert(es) }); err != nil {
			t.Fatalf("round %d: insert: %v", round, err)
		}
		if round%100 != 99 {
			continue
		}
		err := db.View(func(tx *bolt.Tx) error {
			ix := open(tx)
			if err := ix.load(); err != nil {
				return err
			}
			tiers := map[int]int{}
			var total uint64
			frozen := 0
			for _, r := range ix.list {
				total += r.count
				if r.frozen {
					frozen++
					continue
				}
				if r.count > maxMergeKeys {
					t.Errorf("round %d: run of %d keys", round, r.count)
				}
				tiers[runTier(r.count)]++
				if tiers[runTier(r.count)] >= runFanIn {
					t.Errorf("round %d: %d runs in tier %d", round, tiers[runTier(r.count)], runTier(r.count))
				}
			}
			// A key repeated in runs not merged yet counts more than once.
			if total < uint64(len(want)) || total > next {
				t.Errorf("round %d: runs hold %d keys, want %d..%d", round, total, len(want), next)
			}
			for k, idx := range want {
				got, ok, err := ix.get([]byte(k))
				if err != nil || !ok || got != idx {
					t.Fatalf("round %d: get(%x) = %d, %v, %v; want %d", round, k, got, ok, err, idx)
				}
			}
			for range 1000 {
				if _, ok, err := ix.get(key()); ok || err != nil {
					t.Fatalf("round %d: get(absent) = %v, %v", round, ok, err)
				}
			}
			t.Logf("round %d: %d keys in %d runs, %d frozen, tiers %v", round, len(want), len(ix.list), frozen, tiers)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}
