package embedded

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sort"
	"sync"
	"sync/atomic"

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
//	<index>/merge            the merge in progress, if any (see merger)
//	<index>/merge-filter     its filter, kept by Close
//
// Integrate writes the batch's keys, sorted, as a new run: a few
// page-sized blocks appended in order. Runs of similar size (a tier) are
// merged once there are runFanIn of them, so each key is rewritten a few
// times, sequentially. Runs of frozenRunKeys keys or more are never merged
// again, and neither are runs whose merge would write more than
// maxMergeKeys keys (they are marked frozen instead). A merge larger than
// one Integrate's budget is done a step at a time (see merger), so that no
// append waits for a whole large merge. A lookup
// probes the Bloom filter of every run (read in place from the file, one
// cache line each) and searches only the runs that may hold the key: one
// B+tree descent to the block, then a binary search in it. Frozen runs
// accumulate, one per 2M entries, so a lookup in a log of n entries costs
// about 20 + n/2M filter probes of ~25 ns.
//
// All of this happens inside the caller's transaction, so readers see the
// runs of one committed state, and a failed Integrate leaves no trace.
type hashIndex struct {
	bucket  *bolt.Bucket
	runs    *bolt.Bucket
	filters *bolt.Bucket

	// memo keeps the filter of the merge in progress between
	// transactions, under memoKey; nil: built again by its last step.
	memo    *mergeFilters
	memoKey mergeKey

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
	// An insert of n keys does merge work of up to mergeStepPerKey*n keys,
	// and at least minMergeStep: enough to keep up, since each key is
	// merged once per tier (four or five times), and small enough that a
	// step takes a few ms per thousand keys inserted.
	mergeStepPerKey uint64 = 8
	minMergeStep    uint64 = 4096
	// filterRebuilds counts the merges whose filter was built again from
	// their output.
	filterRebuilds atomic.Int64
)

var (
	bucketRuns     = []byte("runs")
	bucketFilters  = []byte("filters")
	keyMerge       = []byte("merge")
	keyMergeFilter = []byte("merge-filter")
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
	ix := &hashIndex{bucket: b, runs: b.Bucket(bucketRuns), filters: b.Bucket(bucketFilters)}
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
// merges runs as needed. With no entries, a merge in progress still takes a
// step of minMergeStep keys, so that it ends even when no more keys come
// (the leaves index gets keys only from keyed entries).
func (ix *hashIndex) insert(entries []indexEntry) error {
	if len(entries) == 0 {
		if ix.bucket.Get(keyMerge) == nil {
			return nil
		}
		if err := ix.load(); err != nil {
			return err
		}
		return ix.compact(minMergeStep)
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
	return ix.compact(max(minMergeStep, mergeStepPerKey*uint64(len(entries))))
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
	// A merge in progress has a run bucket but no filter yet.
	id := uint64(1)
	for _, b := range []*bolt.Bucket{ix.filters, ix.runs} {
		if k, _ := b.Cursor().Last(); len(k) == 8 {
			id = max(id, binary.BigEndian.Uint64(k)+1)
		}
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
	if w.filter != nil {
		bloom.Add(w.filter, bloom.Hash(key))
	}
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
// tier has, doing at most budget keys of the merge in progress.
//
// A full tier is merged at once if its merge fits budget; else it becomes
// the merge in progress, of which there is one at a time (its tier waits
// while another runs: such a tier briefly holds more runs than runFanIn).
// Whole merges come before the step so that no bucket is deleted under the
// step's cursors.
func (ix *hashIndex) compact(budget uint64) error {
	m, err := ix.mergeInProgress()
	if err != nil {
		return err
	}
	if err := ix.takeKeptFilter(m); err != nil {
		return err
	}
	for changed := true; changed; {
		changed = false
		for _, runs := range ix.fullTiers(m) {
			var total uint64
			for _, r := range runs {
				total += r.count
			}
			switch {
			case total > maxMergeKeys:
				// Too big to merge: these runs stay as they are.
				err = ix.freeze(runs)
			case total <= budget:
				err = ix.merge(runs)
			case m == nil:
				m, err = ix.startMerge(runs, total)
			default:
				continue
			}
			if err != nil {
				return err
			}
			changed = true
			break // the list of runs changed
		}
	}
	if m == nil {
		return nil
	}
	return m.step(budget)
}

// fullTiers returns the first runFanIn runs of each tier that has as many,
// leaving out frozen runs and the inputs of m.
func (ix *hashIndex) fullTiers(m *merger) [][]indexRun {
	busy := map[uint64]bool{}
	if m != nil {
		for _, r := range m.inputs {
			busy[r.id] = true
		}
	}
	byTier := map[int][]indexRun{}
	var full [][]indexRun
	for _, r := range ix.list {
		if r.frozen || busy[r.id] {
			continue
		}
		t := runTier(r.count)
		byTier[t] = append(byTier[t], r)
		if len(byTier[t]) == runFanIn {
			full = append(full, byTier[t])
		}
	}
	return full
}

// freeze marks runs as never to be merged again.
func (ix *hashIndex) freeze(runs []indexRun) error {
	for _, run := range runs {
		i := slices.IndexFunc(ix.list, func(r indexRun) bool { return r.id == run.id })
		r := &ix.list[i]
		r.frozen = true
		v, err := r.putFilter(ix, r.filter)
		if err != nil {
			return err
		}
		r.filter = v[runHeader:]
	}
	return nil
}

// merge replaces runs by one run holding all their keys, at once.
func (ix *hashIndex) merge(runs []indexRun) error {
	var total uint64
	for _, r := range runs {
		total += r.count
	}
	w, err := ix.newRun(total)
	if err != nil {
		return err
	}
	m := &merger{ix: ix, inputs: runs, total: total, out: w.run.id, filter: w.filter}
	_, err = m.copy(w, math.MaxUint64)
	if err != nil {
		return err
	}
	return m.finish(w)
}

// A merger merges input runs into a new output run, in key order; a key in
// several runs (a leaf hash of several keyed entries) keeps its lowest index.
// A merge too large for one transaction is done in steps, one per insert,
// and stored beside the runs between them:
//
//	<index>/merge  output run ID(8) | keys in the inputs(8) | keys written(8) | nonce(8) | input run IDs(8 each)
//
// The output's blocks are written under runs/ as the merge goes, but it
// gets its filter (and so is seen by lookups) only in the last step, which
// also deletes the inputs: until then lookups use the inputs. A step ends
// between two keys; the next one starts after the output's last key. The
// output's filter is kept in memory between steps (see mergeFilters), under
// the random nonce of the merge; Close stores it as <index>/merge-filter,
// with the nonce and the keys written then, for the next Open. If it was
// lost (a crash) the last step builds it again from the output: for a merge
// of 2M keys, about 0.3 s in one Integrate.
type merger struct {
	ix      *hashIndex
	inputs  []indexRun
	total   uint64 // keys in the inputs: the size of the output's filter
	out     uint64 // output run ID
	written uint64 // keys in the output so far
	nonce   uint64 // names the merge in mergeFilters
	filter  []byte // the output's filter so far; nil if lost
}

// startMerge makes runs the merge in progress, whose output is empty.
func (ix *hashIndex) startMerge(runs []indexRun, total uint64) (*merger, error) {
	w, err := ix.newRun(total)
	if err != nil {
		return nil, err
	}
	m := &merger{ix: ix, inputs: runs, total: total, out: w.run.id, nonce: rand.Uint64(), filter: w.filter}
	return m, m.save()
}

// mergeInProgress returns the stored merge in progress, or nil.
func (ix *hashIndex) mergeInProgress() (*merger, error) {
	v := ix.bucket.Get(keyMerge)
	if v == nil {
		return nil, nil
	}
	damaged := fmt.Errorf("embedded store is damaged: malformed merge in progress %x", v)
	if len(v) < 40 || len(v)%8 != 0 {
		return nil, damaged
	}
	m := &merger{
		ix:      ix,
		out:     binary.BigEndian.Uint64(v),
		total:   binary.BigEndian.Uint64(v[8:]),
		written: binary.BigEndian.Uint64(v[16:]),
		nonce:   binary.BigEndian.Uint64(v[24:]),
	}
	if ix.runs.Bucket(u64(m.out)) == nil || ix.filters.Get(u64(m.out)) != nil {
		return nil, damaged
	}
	var sum uint64
	for in := v[32:]; len(in) > 0; in = in[8:] {
		id := binary.BigEndian.Uint64(in)
		i := slices.IndexFunc(ix.list, func(r indexRun) bool { return r.id == id })
		if i < 0 || ix.list[i].frozen {
			return nil, damaged
		}
		m.inputs = append(m.inputs, ix.list[i])
		sum += ix.list[i].count
	}
	if sum != m.total || m.written > m.total {
		return nil, damaged
	}
	if ix.memo != nil {
		m.filter = ix.memo.get(ix.memoKey, m.nonce)
	}
	return m, nil
}

// takeKeptFilter gives m (if any, and if it has no filter) the filter Close
// stored for it, if that is of m's present progress, and deletes it: a
// value this large must not stay beside the merge's state, which every step
// rewrites (with it, each step wrote its 4 MiB again).
func (ix *hashIndex) takeKeptFilter(m *merger) error {
	v := ix.bucket.Get(keyMergeFilter)
	if v == nil {
		return nil
	}
	if m != nil && m.filter == nil && len(v) == 16+bloom.Size(m.total) &&
		binary.BigEndian.Uint64(v) == m.nonce && binary.BigEndian.Uint64(v[8:]) == m.written {
		m.filter = bytes.Clone(v[16:])
	}
	return ix.bucket.Delete(keyMergeFilter)
}

// keepFilter stores the filter of the merge in progress, if its nonce is
// nonce, for the next Open.
func (ix *hashIndex) keepFilter(nonce uint64, filter []byte) error {
	v := ix.bucket.Get(keyMerge)
	if len(v) < 40 || binary.BigEndian.Uint64(v[24:]) != nonce {
		return nil
	}
	kept := make([]byte, 0, 16+len(filter))
	kept = append(kept, v[24:32]...) // nonce
	kept = append(kept, v[16:24]...) // keys written
	return ix.bucket.Put(keyMergeFilter, append(kept, filter...))
}

func (m *merger) state() []byte {
	v := make([]byte, 0, 32+8*len(m.inputs))
	v = binary.BigEndian.AppendUint64(v, m.out)
	v = binary.BigEndian.AppendUint64(v, m.total)
	v = binary.BigEndian.AppendUint64(v, m.written)
	v = binary.BigEndian.AppendUint64(v, m.nonce)
	for _, r := range m.inputs {
		v = binary.BigEndian.AppendUint64(v, r.id)
	}
	return v
}

// save stores the merge's progress.
func (m *merger) save() error {
	if m.ix.memo != nil && m.filter != nil {
		m.ix.memo.put(m.ix.memoKey, m.nonce, m.filter)
	}
	return m.ix.bucket.Put(keyMerge, m.state())
}

// step merges up to budget more keys, and finishes the merge if that was all.
func (m *merger) step(budget uint64) error {
	b := m.ix.runs.Bucket(u64(m.out))
	w := &runWriter{ix: m.ix, run: indexRun{id: m.out, blocks: b, count: m.written}, filter: m.filter}
	if k, _ := b.Cursor().Last(); k != nil {
		w.last = k
	}
	b.FillPercent = appendFillPercent
	done, err := m.copy(w, budget)
	if err != nil {
		return err
	}
	if !done {
		if err := w.flush(); err != nil {
			return err
		}
		m.written = w.run.count
		return m.save()
	}
	if err := m.finish(w); err != nil {
		return err
	}
	if m.ix.memo != nil {
		m.ix.memo.drop(m.ix.memoKey)
	}
	return m.ix.bucket.Delete(keyMerge)
}

// copy writes to w the inputs' keys after w's last one, until budget keys
// of the inputs are read; done reports whether that was all of them.
func (m *merger) copy(w *runWriter, budget uint64) (done bool, err error) {
	readers := make([]*runReader, len(m.inputs))
	for i, r := range m.inputs {
		if readers[i], err = seekRun(r, w.last); err != nil {
			return false, err
		}
	}
	for read := uint64(0); read < budget; {
		var least []byte
		for _, r := range readers {
			if r.record != nil && (least == nil || bytes.Compare(r.record[:indexKeySize], least[:indexKeySize]) < 0) {
				least = r.record
			}
		}
		if least == nil {
			return true, nil
		}
		key, value := least[:indexKeySize], least[indexKeySize:]
		for _, r := range readers {
			if r.record != nil && bytes.Equal(r.record[:indexKeySize], key) {
				if v := r.record[indexKeySize:]; bytes.Compare(v, value) < 0 {
					value = v
				}
				if err := r.next(); err != nil {
					return false, err
				}
				read++
			}
		}
		// add copies key and value before the source runs are deleted.
		if err := w.add(key, value); err != nil {
			return false, err
		}
	}
	for _, r := range readers {
		if r.record != nil {
			return false, nil
		}
	}
	return true, nil
}

// seekRun returns a reader of r's records whose keys are after after (all
// of them if after is nil).
func seekRun(r indexRun, after []byte) (*runReader, error) {
	c := r.blocks.Cursor()
	var block []byte
	if after == nil {
		_, block = c.First()
	} else {
		// The first block whose last key is >= after.
		_, block = c.Seek(after)
	}
	if len(block)%recordSize != 0 {
		return nil, fmt.Errorf("embedded store is damaged: malformed index block")
	}
	rr := &runReader{c: c, block: block}
	if block == nil {
		return rr, nil // nothing after
	}
	for {
		if err := rr.next(); err != nil {
			return nil, err
		}
		if rr.record == nil || after == nil || bytes.Compare(rr.record[:indexKeySize], after) > 0 {
			return rr, nil
		}
	}
}

// finish completes the output run with its filter, and deletes the inputs.
// The stored merge in progress, if any, is step's to delete.
func (m *merger) finish(w *runWriter) error {
	if w.filter == nil {
		// Lost between steps: read the output again.
		filterRebuilds.Add(1)
		if err := w.flush(); err != nil {
			return err
		}
		w.filter = bloom.New(m.total)
		r, err := seekRun(w.run, nil)
		if err != nil {
			return err
		}
		for r.record != nil {
			bloom.Add(w.filter, bloom.Hash(r.record[:indexKeySize]))
			if err := r.next(); err != nil {
				return err
			}
		}
	}
	if err := w.close(); err != nil {
		return err
	}
	drop := map[uint64]bool{}
	for _, r := range m.inputs {
		name := u64(r.id)
		if err := m.ix.runs.DeleteBucket(name); err != nil {
			return err
		}
		if err := m.ix.filters.Delete(name); err != nil {
			return err
		}
		drop[r.id] = true
	}
	m.ix.list = slices.DeleteFunc(m.ix.list, func(r indexRun) bool { return drop[r.id] })
	return nil
}

// mergeFilters holds, between transactions, the filters of the merges in
// progress of a store's indexes, by index and merge. A transaction that
// rolls back may leave keys in a filter that its output does not hold yet:
// they will be, since the step is done again, and meanwhile they only cost
// a false positive.
type mergeFilters struct {
	mu sync.Mutex
	m  map[mergeKey]mergeFilter
}

// A mergeKey names an index: of a log's identities, or of its leaves.
type mergeKey struct {
	log    string
	leaves bool
}

type mergeFilter struct {
	nonce  uint64
	filter []byte
}

func (f *mergeFilters) get(index mergeKey, nonce uint64) []byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	if mf, ok := f.m[index]; ok && mf.nonce == nonce {
		return mf.filter
	}
	return nil
}

func (f *mergeFilters) put(index mergeKey, nonce uint64, filter []byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.m == nil {
		f.m = map[mergeKey]mergeFilter{}
	}
	f.m[index] = mergeFilter{nonce, filter}
}

func (f *mergeFilters) drop(index mergeKey) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.m, index)
}

// keep stores the filters with their merges, for the next Open.
func (f *mergeFilters) keep(db *bolt.DB) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.m) == 0 {
		return nil
	}
	return db.Update(func(tx *bolt.Tx) error {
		for k, mf := range f.m {
			lb, err := openLog(tx, k.log)
			if err != nil {
				return err
			}
			ix := lb.identities
			if k.leaves {
				ix = lb.leaves
			}
			if err := ix.keepFilter(mf.nonce, mf.filter); err != nil {
				return err
			}
		}
		return nil
	})
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
