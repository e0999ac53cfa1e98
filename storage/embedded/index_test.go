package embedded

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/tlog-dev/tlog/pkg/tree"
	"github.com/tlog-dev/tlog/storage"
)

// TestHashIndex inserts runs of many sizes, with keys repeated across runs
// (as leaf hashes of keyed entries are), and checks after each transaction
// that every key maps to its lowest index, that absent keys are absent, and
// that compaction keeps fewer than runFanIn runs in every tier.
//
// Merges larger than an insert's budget are done in steps over several
// transactions; with small budgets, with and without the filters kept
// between steps (as after a restart, when the last step reads the output
// again), lookups must not change while they go on.
func TestHashIndex(t *testing.T) {
	t.Run("default", func(t *testing.T) { testHashIndex(t, &mergeFilters{}, true) })
	t.Run("small frozen runs", func(t *testing.T) {
		defer func(f, m uint64) { frozenRunKeys, maxMergeKeys = f, m }(frozenRunKeys, maxMergeKeys)
		frozenRunKeys, maxMergeKeys = 3000, 5000
		testHashIndex(t, &mergeFilters{}, true)
	})
	for _, memo := range []*mergeFilters{{}, nil} {
		t.Run(fmt.Sprintf("small merge steps, filters kept %v", memo != nil), func(t *testing.T) {
			defer func(s, m uint64) { mergeStepPerKey, minMergeStep = s, m }(mergeStepPerKey, minMergeStep)
			mergeStepPerKey, minMergeStep = 1, 16
			testHashIndex(t, memo, false)
		})
	}
}

// testHashIndex checks that tiers stay below runFanIn runs if tiers, which
// small merge steps do not promise.
func testHashIndex(t *testing.T, memo *mergeFilters, tiers bool) {
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
	open := func(tx *bolt.Tx) *hashIndex {
		ix := openIndex(tx.Bucket([]byte("root")).Bucket([]byte("ix")))
		ix.memo, ix.memoKey = memo, mergeKey{log: "ix"}
		return ix
	}
	stepped := 0 // rounds that ended with a merge in progress

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
		if err := db.Update(func(tx *bolt.Tx) error {
			ix := open(tx)
			if err := ix.insert(es); err != nil {
				return err
			}
			if ix.bucket.Get(keyMerge) != nil {
				stepped++
			}
			return nil
		}); err != nil {
			t.Fatalf("round %d: insert: %v", round, err)
		}
		if round%100 != 99 && round%100 != 50 {
			continue
		}
		err := db.View(func(tx *bolt.Tx) error {
			ix := open(tx)
			if err := ix.load(); err != nil {
				return err
			}
			inputs := map[uint64]bool{} // of the merge in progress
			if m, err := ix.mergeInProgress(); err != nil {
				return err
			} else if m != nil {
				for _, r := range m.inputs {
					inputs[r.id] = true
				}
			}
			byTier := map[int]int{}
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
				if inputs[r.id] {
					continue
				}
				byTier[runTier(r.count)]++
				if n := byTier[runTier(r.count)]; tiers && n >= runFanIn {
					t.Errorf("round %d: %d runs in tier %d", round, n, runTier(r.count))
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
			t.Logf("round %d: %d keys in %d runs, %d frozen, tiers %v, %d rounds ended mid-merge", round, len(want), len(ix.list), frozen, byTier, stepped)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}

// TestMergeAcrossRestarts integrates batches through the Store while index
// merges run in small steps, reopening the store in the middle of merges:
// first after Close, which keeps their filters, then without it, as after a
// crash, so that their last step must read the output's keys again. Then it
// checks that a batch repeating an early identity is refused, that every
// identity and leaf is still found, and the whole log.
func TestMergeAcrossRestarts(t *testing.T) {
	defer func(s, m uint64) { mergeStepPerKey, minMergeStep = s, m }(mergeStepPerKey, minMergeStep)
	mergeStepPerKey, minMergeStep = 1, 64

	path := filepath.Join(t.TempDir(), "tlog.db")
	s := openTest(t, path)
	l := newTestLog(t, s, "log")
	inProgress := func() (merging bool) {
		t.Helper()
		if err := s.db.View(func(tx *bolt.Tx) error {
			lb, err := openLog(tx, "log")
			if err != nil {
				return err
			}
			merging = lb.identities.bucket.Get(keyMerge) != nil
			// Every step would write it again: the first takes it.
			if lb.identities.bucket.Get(keyMergeFilter) != nil {
				t.Fatal("a kept filter outlived the first step after Open")
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		return merging
	}
	restarts := func(rounds int, crash bool) (n int) {
		for i := range rounds {
			l.integrate(20+i%7*40, i%3 == 0)
			if !inProgress() || i%3 != 1 {
				continue
			}
			var err error
			if crash {
				err = s.db.Close() // and not s.Close
			} else {
				err = s.Close()
			}
			if err != nil {
				t.Fatal(err)
			}
			s = openTest(t, path)
			l.s = s
			n++
		}
		return n
	}
	rebuilds := filterRebuilds.Load()
	if n := restarts(150, false); n < 5 || filterRebuilds.Load() != rebuilds {
		t.Fatalf("%d restarts after Close in the middle of a merge, %d filters built again; want 5 or more, 0", n, filterRebuilds.Load()-rebuilds)
	}
	if n := restarts(150, true); n < 5 || filterRebuilds.Load() == rebuilds {
		t.Fatalf("%d restarts without Close in the middle of a merge, no filter built again; want 5 or more, some", n)
	}
	t.Logf("%d entries; %d filters built again", l.edge.Size(), filterRebuilds.Load()-rebuilds)

	l.next = l.edge.Size()
	b, _ := l.batch(5, false)
	b.Entries[2].Identity = tree.LeafHash([]byte("entry 20 of log")) // the second batch, not keyed
	if err := s.Integrate(context.Background(), "log", b); !errors.Is(err, storage.ErrDuplicate) {
		t.Fatalf("Integrate of the identity stored at index 20: %v, want ErrDuplicate", err)
	}
	verifyLog(t, s, "log")
	s.Close()
}

// TestMergeEndsWithoutKeys: a merge in progress goes on in transactions that
// insert no keys (batches without keyed entries, for the leaves index), and
// lookups stay right throughout.
func TestMergeEndsWithoutKeys(t *testing.T) {
	defer func(s, m uint64) { mergeStepPerKey, minMergeStep = s, m }(mergeStepPerKey, minMergeStep)
	mergeStepPerKey, minMergeStep = 1, 16
	db, err := bolt.Open(filepath.Join(t.TempDir(), "index.db"), 0o600, &bolt.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	update := func(f func(ix *hashIndex) error) {
		t.Helper()
		if err := db.Update(func(tx *bolt.Tx) error {
			root, err := tx.CreateBucketIfNotExists([]byte("root"))
			if err != nil {
				return err
			}
			if root.Bucket([]byte("ix")) == nil {
				if err := createIndex(root, []byte("ix")); err != nil {
					return err
				}
			}
			return f(openIndex(root.Bucket([]byte("ix"))))
		}); err != nil {
			t.Fatal(err)
		}
	}
	rng := rand.New(rand.NewPCG(3, 4))
	var keys [][]byte
	merging := false
	for round := 0; !merging; round++ {
		if round == 100 {
			t.Fatal("no merge in progress after 100 inserts")
		}
		es := make([]indexEntry, 40)
		for i := range es {
			k := make([]byte, 32)
			for j := range 4 {
				binary.LittleEndian.PutUint64(k[8*j:], rng.Uint64())
			}
			keys = append(keys, k)
			es[i] = indexEntry{key: k, value: u64(uint64(len(keys) - 1))}
		}
		slices.SortFunc(es, func(a, b indexEntry) int { return bytes.Compare(a.key, b.key) })
		update(func(ix *hashIndex) error {
			if err := ix.insert(es); err != nil {
				return err
			}
			merging = ix.bucket.Get(keyMerge) != nil
			return nil
		})
	}
	check := func(ix *hashIndex) error {
		for i, k := range keys {
			if got, ok, err := ix.get(k); err != nil || !ok || got != uint64(i) {
				return fmt.Errorf("get(key %d) = %d, %v, %v", i, got, ok, err)
			}
		}
		return nil
	}
	for steps := 0; merging; steps++ {
		if steps == 1000 {
			t.Fatal("the merge did not end in 1000 transactions without keys")
		}
		update(func(ix *hashIndex) error {
			if err := ix.insert(nil); err != nil {
				return err
			}
			merging = ix.bucket.Get(keyMerge) != nil
			return check(ix)
		})
	}
	update(check)
}
