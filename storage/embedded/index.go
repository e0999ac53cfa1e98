package embedded

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"sort"

	bolt "go.etcd.io/bbolt"

	"github.com/tlog-dev/tlog/internal/bloom"
)

// A hashIndex maps 32-byte hashes (identities, leaf hashes) to entry
// indices. Its keys are random, and a copy-on-write B+tree pays a whole page
// write for each random insert once the tree is larger than a batch: at a
// million entries that was about 90% of the cost of Integrate. So the index
// is a small log-structured merge tree instead, kept in bbolt:
//
//	<index>/runs/<run ID>    bucket: last key of a block → block of up to
//	                         blockRecords sorted records key(32) | index(8)
//	<index>/filters/<run ID> count(8) | flags(1) | Bloom filter of the run's keys
//
// Integrate writes the batch's keys, sorted, as a new run: a few
// page-sized blocks appended in order. Runs of similar size (a tier) are
// merged once there are runFanIn of them, so each key is rewritten a few
// times, sequentially. Runs of frozenRunKeys keys or more are never merged
// again, and neither are runs whose merge would write more than
// maxMergeKeys keys (they are marked frozen instead): that bounds the work
// of one Integrate (the largest merge takes about half a second). A lookup
// probes the Bloom filter of every run (read in place from the file, one
// cache line each) and searches only the runs that may hold the key: one
// B+tree descent to the block, then a binary search in it. Frozen runs
// accumulate, one per 2M entries, so a lookup in a log of n entries costs
// about 20 + n/2M filter probes of ~25 ns.
//
// All of this happens inside the caller's transaction, so readers see the
// runs of one committed state, and a failed Integrate leaves no trace.
type hashIndex struct {
	runs    *bolt.Bucket
	filters *bolt.Bucket

	loaded bool
	list   []indexRun
}

type indexRun struct {
	id     uint64
	count  uint64
	frozen bool
	filter []byte // aliases the file: valid during the transaction
	blocks *bolt.Bucket
}

const (
	// runFanIn runs of one tier are merged into one run. Tier t holds the
	// runs of runFanIn^t up to runFanIn^(t+1)-1 keys.
	runFanIn = 8
	// Run flags.
	runFrozen = 1 << 0
	// runHeader is the size of a run's count and flags.
	runHeader = 9

	indexKeySize = 32
	recordSize   = indexKeySize + 8
	// blockRecords records make a block that fits a 4 KiB page with its key.
	blockRecords = 96
)

// Variables for tests.
var (
	// frozenRunKeys: runs this large are not merged any more.
	frozenRunKeys uint64 = 1 << 21
	// maxMergeKeys bounds the keys one merge writes (about 40 bytes each).
	maxMergeKeys = 2 * frozenRunKeys
)

var (
	bucketRuns    = []byte("runs")
	bucketFilters = []byte("filters")
)

func createIndex(parent *bolt.Bucket, name []byte) error {
	b, err := parent.CreateBucket(name)
	if err != nil {
		return err
	}
	if _, err := b.CreateBucket(bucketRuns); err != nil {
		return err
	}
	_, err = b.CreateBucket(bucketFilters)
	return err
}

func openIndex(b *bolt.Bucket) *hashIndex {
	if b == nil {
		return nil
	}
	ix := &hashIndex{runs: b.Bucket(bucketRuns), filters: b.Bucket(bucketFilters)}
	if ix.runs == nil || ix.filters == nil {
		return nil
	}
	return ix
}

// load reads the list of runs.
func (ix *hashIndex) load() error {
	if ix.loaded {
		return nil
	}
	c := ix.filters.Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		if len(k) != 8 || len(v) <= runHeader || (len(v)-runHeader)%bloom.BlockBytes != 0 || v[8]&^runFrozen != 0 {
			return fmt.Errorf("embedded store is damaged: index run %x has a malformed filter", k)
		}
		r := indexRun{
			id:     binary.BigEndian.Uint64(k),
			count:  binary.BigEndian.Uint64(v),
			frozen: v[8]&runFrozen != 0,
			filter: v[runHeader:],
			blocks: ix.runs.Bucket(k),
		}
		if r.blocks == nil {
			return fmt.Errorf("embedded store is damaged: index run %x is missing", k)
		}
		ix.list = append(ix.list, r)
	}
	ix.loaded = true
	return nil
}

// get returns the lowest index stored for key.
func (ix *hashIndex) get(key []byte) (uint64, bool, error) {
	if err := ix.load(); err != nil {
		return 0, false, err
	}
	h := bloom.Hash(key)
	best, found := uint64(0), false
	for i := range ix.list {
		r := &ix.list[i]
		if !bloom.MayContain(r.filter, h) {
			continue
		}
		idx, ok, err := r.get(key)
		if err != nil {
			return 0, false, err
		}
		if ok && (!found || idx < best) {
			best, found = idx, true
		}
	}
	return best, found, nil
}

func (r *indexRun) get(key []byte) (uint64, bool, error) {
	// The block that may hold key is the first whose last key is >= key.
	_, block := r.blocks.Cursor().Seek(key)
	if block == nil {
		return 0, false, nil
	}
	if len(block) == 0 || len(block)%recordSize != 0 {
		return 0, false, fmt.Errorf("embedded store is damaged: index run %d has a malformed block", r.id)
	}
	n := len(block) / recordSize
	i, ok := sort.Find(n, func(i int) int { return bytes.Compare(key, block[i*recordSize:i*recordSize+indexKeySize]) })
	if !ok {
		return 0, false, nil
	}
	return binary.BigEndian.Uint64(block[i*recordSize+indexKeySize:]), true, nil
}

// indexEntry is a key and its entry index, as 8 big-endian bytes.
type indexEntry struct {
	key, value []byte
}

// insert adds entries, sorted by key with no key twice, as a new run, then
// merges runs as needed.
func (ix *hashIndex) insert(entries []indexEntry) error {
	if len(entries) == 0 {
		return nil
	}
	if err := ix.load(); err != nil {
		return err
	}
	w, err := ix.newRun(uint64(len(entries)))
	if err != nil {
		return err
	}
	for _, e := range entries {
		if len(e.key) != indexKeySize || len(e.value) != 8 {
			return fmt.Errorf("index entry of %d+%d bytes", len(e.key), len(e.value))
		}
		if err := w.add(e.key, e.value); err != nil {
			return err
		}
	}
	if err := w.close(); err != nil {
		return err
	}
	return ix.compact()
}

// runWriter writes a new run, taking its records in key order.
type runWriter struct {
	ix     *hashIndex
	run    indexRun
	block  []byte
	filter []byte
	last   []byte
}

// newRun starts a run of at most maxKeys keys (the Bloom filter's size).
func (ix *hashIndex) newRun(maxKeys uint64) (*runWriter, error) {
	id := uint64(1)
	if k, _ := ix.filters.Cursor().Last(); k != nil {
		id = binary.BigEndian.Uint64(k) + 1
	}
	b, err := ix.runs.CreateBucket(u64(id))
	if err != nil {
		return nil, err
	}
	b.FillPercent = appendFillPercent
	return &runWriter{ix: ix, run: indexRun{id: id, blocks: b}, filter: bloom.New(maxKeys)}, nil
}

func (w *runWriter) add(key, value []byte) error {
	if w.last != nil && bytes.Compare(key, w.last) <= 0 {
		return fmt.Errorf("index run keys out of order")
	}
	if w.block == nil {
		// bbolt holds on to the slice until the transaction ends: a fresh
		// one for each block.
		w.block = make([]byte, 0, blockRecords*recordSize)
	}
	w.block = append(append(w.block, key...), value...)
	w.last = w.block[len(w.block)-recordSize : len(w.block)-8]
	bloom.Add(w.filter, bloom.Hash(key))
	w.run.count++
	if len(w.block) == cap(w.block) {
		return w.flush()
	}
	return nil
}

func (w *runWriter) flush() error {
	if len(w.block) == 0 {
		return nil
	}
	err := w.run.blocks.Put(w.last, w.block)
	w.block = nil
	return err
}

func (w *runWriter) close() error {
	if err := w.flush(); err != nil {
		return err
	}
	w.run.frozen = w.run.count >= frozenRunKeys
	v, err := w.run.putFilter(w.ix, w.filter)
	if err != nil {
		return err
	}
	w.run.filter = v[runHeader:]
	w.ix.list = append(w.ix.list, w.run)
	return nil
}

// putFilter stores the run's count, flags and filter.
func (r *indexRun) putFilter(ix *hashIndex, filter []byte) ([]byte, error) {
	v := binary.BigEndian.AppendUint64(make([]byte, 0, runHeader+len(filter)), r.count)
	flags := byte(0)
	if r.frozen {
		flags |= runFrozen
	}
	v = append(append(v, flags), filter...)
	return v, ix.filters.Put(u64(r.id), v)
}

func runTier(count uint64) int {
	t := 0
	for c := count; c >= runFanIn; c /= runFanIn {
		t++
	}
	return t
}

// compact merges the runs of a tier that has runFanIn of them, until no
// tier has.
func (ix *hashIndex) compact() error {
	for {
		byTier := map[int][]int{}
		var full []int
		for i, r := range ix.list {
			if r.frozen {
				continue
			}
			t := runTier(r.count)
			byTier[t] = append(byTier[t], i)
			if len(byTier[t]) == runFanIn {
				full = byTier[t]
				break
			}
		}
		if full == nil {
			return nil
		}
		var total uint64
		runs := make([]indexRun, len(full))
		for j, i := range full {
			runs[j] = ix.list[i]
			total += runs[j].count
		}
		if total <= maxMergeKeys {
			if err := ix.merge(runs); err != nil {
				return err
			}
			continue
		}
		// Too big to merge in one Integrate: these runs stay as they are.
		for _, i := range full {
			r := &ix.list[i]
			r.frozen = true
			v, err := r.putFilter(ix, r.filter)
			if err != nil {
				return err
			}
			r.filter = v[runHeader:]
		}
	}
}

// runReader reads a run's records in key order.
type runReader struct {
	c      *bolt.Cursor
	block  []byte
	record []byte // the current record, nil at the end
}

func (r *runReader) next() error {
	if len(r.block) == 0 {
		_, r.block = r.c.Next()
		if r.block == nil {
			r.record = nil
			return nil
		}
		if len(r.block) == 0 || len(r.block)%recordSize != 0 {
			return fmt.Errorf("embedded store is damaged: malformed index block")
		}
	}
	r.record, r.block = r.block[:recordSize], r.block[recordSize:]
	return nil
}

// merge replaces runs by one run holding all their keys; a key in several
// runs (a leaf hash of several keyed entries) keeps its lowest index.
func (ix *hashIndex) merge(runs []indexRun) error {
	var total uint64
	readers := make([]*runReader, len(runs))
	for i, r := range runs {
		total += r.count
		c := r.blocks.Cursor()
		_, block := c.First()
		readers[i] = &runReader{c: c, block: block}
		if len(block)%recordSize != 0 {
			return fmt.Errorf("embedded store is damaged: malformed index block")
		}
		if err := readers[i].next(); err != nil {
			return err
		}
	}
	w, err := ix.newRun(total)
	if err != nil {
		return err
	}
	for {
		var least []byte
		for _, r := range readers {
			if r.record != nil && (least == nil || bytes.Compare(r.record[:indexKeySize], least[:indexKeySize]) < 0) {
				least = r.record
			}
		}
		if least == nil {
			break
		}
		key, value := least[:indexKeySize], least[indexKeySize:]
		for _, r := range readers {
			if r.record != nil && bytes.Equal(r.record[:indexKeySize], key) {
				if v := r.record[indexKeySize:]; bytes.Compare(v, value) < 0 {
					value = v
				}
				if err := r.next(); err != nil {
					return err
				}
			}
		}
		// add copies key and value before the source runs are deleted.
		if err := w.add(key, value); err != nil {
			return err
		}
	}
	if err := w.close(); err != nil {
		return err
	}
	drop := map[uint64]bool{}
	for _, r := range runs {
		name := u64(r.id)
		if err := ix.runs.DeleteBucket(name); err != nil {
			return err
		}
		if err := ix.filters.Delete(name); err != nil {
			return err
		}
		drop[r.id] = true
	}
	list := ix.list[:0]
	for _, r := range ix.list {
		if !drop[r.id] {
			list = append(list, r)
		}
	}
	ix.list = list
	return nil
}
