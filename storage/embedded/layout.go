package embedded

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/tlog-dev/tlog/pkg/tile"
	"github.com/tlog-dev/tlog/storage"
)

// logRecord is the value of a log's key in the logs bucket.
type logRecord struct {
	Origin      string    `json:"origin"`
	VerifierKey string    `json:"verifier_key"`
	CreatedAt   time.Time `json:"created_at"`
	// Size and Root are the current tree head.
	Size uint64 `json:"size"`
	Root []byte `json:"root"`
	// WitnessPolicy is the log's own tlog-policy text (empty: none).
	WitnessPolicy string `json:"witness_policy,omitempty"`
}

func (r *logRecord) head() storage.TreeHead {
	h := storage.TreeHead{Size: r.Size}
	copy(h.Root[:], r.Root)
	return h
}

// logBuckets are one log's buckets within a transaction.
type logBuckets struct {
	name string
	logs *bolt.Bucket // the shared logs bucket, holding the record

	entries, tiles, checkpoints, cosigs *bolt.Bucket
	identities, leaves                  *hashIndex
}

// openLog returns the buckets of the named log, or an error wrapping
// storage.ErrLogNotFound.
func openLog(tx *bolt.Tx, name string) (*logBuckets, error) {
	logs, d, err := openLogData(tx, name)
	if err != nil {
		return nil, err
	}
	lb := &logBuckets{
		name:        name,
		logs:        logs,
		entries:     d.Bucket(bucketEntries),
		identities:  openIndex(d.Bucket(bucketIdentities)),
		leaves:      openIndex(d.Bucket(bucketLeaves)),
		tiles:       d.Bucket(bucketTiles),
		checkpoints: d.Bucket(bucketCheckpoints),
		cosigs:      d.Bucket(bucketCosigs),
	}
	for _, b := range []*bolt.Bucket{lb.entries, lb.tiles, lb.checkpoints, lb.cosigs} {
		if b == nil || lb.identities == nil || lb.leaves == nil {
			return nil, fmt.Errorf("log %q: embedded store is damaged: a bucket is missing", name)
		}
	}
	return lb, nil
}

// openLogData returns the logs bucket and the data bucket of log name.
func openLogData(tx *bolt.Tx, name string) (logs, d *bolt.Bucket, err error) {
	logs = tx.Bucket(bucketLogs)
	data := tx.Bucket(bucketData)
	if logs == nil || data == nil {
		return nil, nil, fmt.Errorf("embedded store: top-level buckets are missing")
	}
	if name != "" {
		d = data.Bucket([]byte(name))
	}
	if d == nil || logs.Get([]byte(name)) == nil {
		return nil, nil, fmt.Errorf("log %q: %w", name, storage.ErrLogNotFound)
	}
	return logs, d, nil
}

// openTiles returns the tiles bucket of log name: tile reads, which serve
// every proof, need no other bucket, and opening all of them (openLog) was
// a third of their cost.
func openTiles(tx *bolt.Tx, name string) (*bolt.Bucket, error) {
	_, d, err := openLogData(tx, name)
	if err != nil {
		return nil, err
	}
	b := d.Bucket(bucketTiles)
	if b == nil {
		return nil, fmt.Errorf("log %q: embedded store is damaged: a bucket is missing", name)
	}
	return b, nil
}

// record reads and decodes the log's record.
func (lb *logBuckets) record() (*logRecord, error) {
	var r logRecord
	if err := json.Unmarshal(lb.logs.Get([]byte(lb.name)), &r); err != nil {
		return nil, fmt.Errorf("log %q: embedded store is damaged: log record: %v", lb.name, err)
	}
	if len(r.Root) != 32 {
		return nil, fmt.Errorf("log %q: embedded store is damaged: tree head root has %d bytes", lb.name, len(r.Root))
	}
	return &r, nil
}

func (lb *logBuckets) putRecord(r *logRecord) error {
	v, err := json.Marshal(r)
	if err != nil {
		return err
	}
	return lb.logs.Put([]byte(lb.name), v)
}

func (r *logRecord) log(name string) storage.Log {
	return storage.Log{Name: name, Origin: r.Origin, VerifierKey: r.VerifierKey, CreatedAt: r.CreatedAt, WitnessPolicy: r.WitnessPolicy}
}

// Key and value encodings.

func u64(n uint64) []byte { return binary.BigEndian.AppendUint64(make([]byte, 0, 8), n) }

func tileKey(level int, index uint64) []byte {
	k := make([]byte, 1, 9)
	k[0] = byte(level)
	return binary.BigEndian.AppendUint64(k, index)
}

func cosigKey(size uint64, keyID string) []byte {
	return append(binary.BigEndian.AppendUint64(make([]byte, 0, 8+len(keyID)), size), keyID...)
}

// Entry values: flags | identity | [leaf hash] | data.
const (
	flagLeafHash = 1 << 0 // the leaf hash is stored (it is not the identity)

	entryHeader = 1 + 32
)

func appendEntryValue(dst []byte, e *storage.Entry) []byte {
	if e.LeafHash == e.Identity {
		dst = append(dst, 0)
		dst = append(dst, e.Identity[:]...)
	} else {
		dst = append(dst, flagLeafHash)
		dst = append(dst, e.Identity[:]...)
		dst = append(dst, e.LeafHash[:]...)
	}
	return append(dst, e.Data...)
}

// decodeEntry decodes an entry value, copying everything out of v.
func decodeEntry(index uint64, v []byte) (storage.Entry, error) {
	e := storage.Entry{Index: index}
	if len(v) < entryHeader || v[0]&^flagLeafHash != 0 {
		return e, fmt.Errorf("embedded store is damaged: entry %d is malformed", index)
	}
	copy(e.Identity[:], v[1:entryHeader])
	rest := v[entryHeader:]
	if v[0]&flagLeafHash != 0 {
		if len(rest) < 32 {
			return e, fmt.Errorf("embedded store is damaged: entry %d is malformed", index)
		}
		copy(e.LeafHash[:], rest)
		rest = rest[32:]
	} else {
		e.LeafHash = e.Identity
	}
	if len(rest) > tile.MaxEntrySize {
		return e, fmt.Errorf("embedded store is damaged: entry %d is too long", index)
	}
	e.Data = append(make([]byte, 0, len(rest)), rest...)
	return e, nil
}

func checkpointValue(c *storage.Checkpoint) []byte {
	v := make([]byte, 0, 32+len(c.Note))
	return append(append(v, c.Root[:]...), c.Note...)
}

func decodeCheckpoint(size uint64, v []byte) (storage.Checkpoint, error) {
	c := storage.Checkpoint{TreeHead: storage.TreeHead{Size: size}}
	if len(v) < 32 {
		return c, fmt.Errorf("embedded store is damaged: checkpoint %d is malformed", size)
	}
	copy(c.Root[:], v)
	c.Note = append(make([]byte, 0, len(v)-32), v[32:]...)
	return c, nil
}
