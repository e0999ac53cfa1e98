// Package embedded is the zero-setup storage driver: every log lives in one
// local file, a bbolt database (etcd's B+tree store: ACID, copy-on-write,
// fsync on commit). tlogd uses it when no database URL is given.
//
// One process at a time: Open takes an exclusive lock on the file, and a
// second process (another tlogd, or a tool) that opens the same file gets an
// error wrapping storage.ErrLocked instead of a chance to corrupt it. Within
// the process, a Store is safe for concurrent use: Integrate transactions run
// one at a time, and reads run in parallel with them and never block them.
//
// # File layout
//
// All integers in keys are big-endian, so cursors iterate in numeric order.
//
//	meta                    "format" → format version (uint64)
//	logs                    name → log record (JSON: origin, verifier key,
//	                        creation time, current tree head)
//	data/<name>/entries     index → flags(1) | identity(32) | [leaf hash(32)] | data
//	data/<name>/identities  identity → index (a hashIndex, see below)
//	data/<name>/leaves      leaf hash → lowest index, only for entries whose
//	                        identity is not their leaf hash (a hashIndex)
//	data/<name>/tiles       level(1) | index(8) → hashes (Width*32 bytes)
//	data/<name>/checkpoints size → root(32) | signed note
//	data/<name>/cosigs      size | key ID → signature line
//
// An entry's leaf hash is stored only when it differs from its identity
// (flags bit 0), so an entry appended with the default identity costs no
// extra bytes. The two hash indexes are small log-structured merge trees of
// sorted runs with Bloom filters (see index.go): their keys are random, and
// inserting random keys into a copy-on-write B+tree rewrites a page per key,
// which made them 90% of the cost of Integrate at a million entries.
//
// Every Integrate is one bbolt transaction, fsync'd before it returns.
// Entries, tiles and checkpoints are appended with full pages (their keys
// only grow).
package embedded

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

	"github.com/tlog-dev/tlog/storage"
)

// formatVersion is the store format this binary writes. Open refuses a file
// with a newer one (storage.ErrSchemaTooNew), and marks an older one as of
// this format, so that an older binary refuses it in turn.
//
//  1. The first format.
//  2. An index may have a merge in progress (see merger), whose output run
//     format 1 binaries would mistake for a free run ID.
const formatVersion = 2

// Config tunes Open. The zero value is the recommended configuration.
type Config struct {
	// Logger receives the driver's few log lines (open, close).
	// Default: slog.Default().
	Logger *slog.Logger

	// LockTimeout is how long Open waits for another process to release the
	// file before it fails with an error wrapping storage.ErrLocked.
	// Default (0): 1 second. A negative value fails at once.
	LockTimeout time.Duration

	// InitialMmapSize is the size of the initial memory map of the file, in
	// bytes. While the file fits in the map, Integrate never waits for
	// readers to finish so the map can grow. It reserves address space, not
	// memory or disk. Default (0): 1 GiB on 64-bit platforms, 64 MiB on
	// 32-bit ones. A negative value maps only the file's current size.
	InitialMmapSize int

	// PageSize is the page size of a new file, in bytes: a power of two
	// from 4096 to 65536. An existing file keeps the page size it was
	// created with. Default (0): the operating system's page size. Larger
	// pages measured no faster.
	PageSize int

	// ReadOnly opens an existing store without changing it, for tools that
	// only read (tlogd fsck): a file of an older format is read as it is,
	// not upgraded, and every write fails. Open fails if there is no file.
	ReadOnly bool
}

const defaultLockTimeout = time.Second

func (c Config) withDefaults() Config {
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	switch {
	case c.LockTimeout == 0:
		c.LockTimeout = defaultLockTimeout
	case c.LockTimeout < 0:
		c.LockTimeout = time.Nanosecond // bbolt: 0 would mean "wait forever"
	}
	switch {
	case c.InitialMmapSize == 0 && math.MaxInt > math.MaxInt32:
		c.InitialMmapSize = 1 << 30
	case c.InitialMmapSize == 0:
		c.InitialMmapSize = 64 << 20
	case c.InitialMmapSize < 0:
		c.InitialMmapSize = 0
	}
	return c
}

// Store is a storage.Store kept in one bbolt file.
type Store struct {
	db   *bolt.DB
	path string
	log  *slog.Logger

	merges   mergeFilters // of the indexes' merges in progress
	readOnly bool         // Config.ReadOnly

	closeOnce sync.Once
	closeErr  error
}

var _ storage.Store = (*Store)(nil)

// Bucket and key names.
var (
	bucketMeta = []byte("meta")
	bucketLogs = []byte("logs")
	bucketData = []byte("data")

	keyFormat = []byte("format")

	bucketEntries     = []byte("entries")
	bucketIdentities  = []byte("identities")
	bucketLeaves      = []byte("leaves")
	bucketTiles       = []byte("tiles")
	bucketCheckpoints = []byte("checkpoints")
	bucketCosigs      = []byte("cosigs")
)

// Open opens the store in the file at path, creating the file (mode 0600)
// and its parent directory (mode 0700) if they do not exist. It fails with an
// error wrapping storage.ErrLocked if another process has the file open, and
// with one wrapping storage.ErrSchemaTooNew if a newer tlog wrote it.
func Open(path string, cfg Config) (*Store, error) {
	cfg = cfg.withDefaults()
	if ps := cfg.PageSize; ps != 0 && (ps < 4096 || ps > 1<<16 || ps&(ps-1) != 0) {
		return nil, fmt.Errorf("embedded store %s: page size %d is not a power of two from 4096 to 65536", path, ps)
	}
	if !cfg.ReadOnly {
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, fmt.Errorf("embedded store: %w", err)
		}
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{
		ReadOnly: cfg.ReadOnly,
		Timeout:  cfg.LockTimeout,
		// The freelist is written on commit (NoFreelistSync would save
		// nothing measurable here, and costs a scan of the file at open:
		// 0.1 s per million entries). The map freelist allocates in O(1).
		NoFreelistSync:  false,
		FreelistType:    bolt.FreelistMapType,
		InitialMmapSize: cfg.InitialMmapSize,
		PageSize:        cfg.PageSize,
		NoSync:          false, // acknowledged means durable
	})
	if errors.Is(err, bolterrors.ErrTimeout) {
		waited := "without waiting"
		if cfg.LockTimeout > time.Nanosecond {
			waited = "after waiting " + cfg.LockTimeout.String()
		}
		return nil, fmt.Errorf("embedded store %s: %w: another tlogd (or a tlog tool) has the file open; stop it or use another file (gave up %s)",
			path, storage.ErrLocked, waited)
	}
	if err != nil {
		return nil, fmt.Errorf("embedded store %s: %w", path, err)
	}
	s := &Store{db: db, path: path, log: cfg.Logger.With(slog.String("path", path)), readOnly: cfg.ReadOnly}
	version, err := s.initFormat()
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("embedded store %s: %w", path, err)
	}
	s.log.Debug("opened embedded store", slog.Uint64("format", version), slog.Int("page_size", db.Info().PageSize))
	return s, nil
}

// initFormat checks the format version of the file, writing it (and the
// top-level buckets) into a new file.
func (s *Store) initFormat() (uint64, error) {
	var version uint64
	err := s.db.View(func(tx *bolt.Tx) error {
		var err error
		version, err = readFormat(tx)
		return err
	})
	switch {
	case err != nil || version == formatVersion:
		return version, err
	case s.readOnly && version == 0:
		return 0, errors.New("not a tlog store: the file is empty")
	case s.readOnly:
		return version, nil // an older format, read as it is
	}
	err = s.db.Update(func(tx *bolt.Tx) error {
		var err error
		switch version, err = readFormat(tx); {
		case err != nil || version == formatVersion:
			return err
		case version != 0:
			// Format 1 is format 2 without merges in progress.
			s.log.Info("upgrading embedded store format", slog.Uint64("from", version), slog.Uint64("to", formatVersion))
			version = formatVersion
			return tx.Bucket(bucketMeta).Put(keyFormat, u64(formatVersion))
		}
		meta, err := tx.CreateBucket(bucketMeta)
		if err != nil {
			return err
		}
		for _, name := range [][]byte{bucketLogs, bucketData} {
			if _, err := tx.CreateBucket(name); err != nil {
				return err
			}
		}
		version = formatVersion
		return meta.Put(keyFormat, u64(formatVersion))
	})
	return version, err
}

// readFormat returns the format version of the file, or 0 for a new, empty
// file.
func readFormat(tx *bolt.Tx) (uint64, error) {
	meta := tx.Bucket(bucketMeta)
	if meta == nil {
		empty := true
		_ = tx.ForEach(func([]byte, *bolt.Bucket) error { empty = false; return nil })
		if !empty {
			return 0, errors.New("not a tlog store: the file has no format version")
		}
		return 0, nil
	}
	v := meta.Get(keyFormat)
	if len(v) != 8 {
		return 0, errors.New("not a tlog store: bad format version")
	}
	switch version := binary.BigEndian.Uint64(v); {
	case version > formatVersion:
		return 0, fmt.Errorf("%w: file format %d, this binary knows up to %d", storage.ErrSchemaTooNew, version, formatVersion)
	case version == 0:
		return 0, errors.New("not a tlog store: format version 0")
	default:
		return version, nil
	}
}

// Path returns the file the store is kept in.
func (s *Store) Path() string { return s.path }

// Close releases the file and its lock. Calling it again returns the first
// call's result.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		if !s.readOnly { // else nothing was integrated: no filters to keep
			if err := s.merges.keep(s.db); err != nil {
				s.log.Warn("keeping the filters of index merges in progress failed; they will be built again", "err", err)
			}
		}
		s.closeErr = s.db.Close()
		if s.closeErr != nil {
			s.closeErr = fmt.Errorf("embedded store %s: close: %w", s.path, s.closeErr)
		}
		s.log.Debug("closed embedded store")
	})
	return s.closeErr
}

// view runs fn in a read transaction on the log's buckets, after checking
// ctx.
func (s *Store) view(ctx context.Context, name string, fn func(lb *logBuckets) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return s.db.View(func(tx *bolt.Tx) error {
		lb, err := openLog(tx, name)
		if err != nil {
			return err
		}
		return fn(lb)
	})
}
