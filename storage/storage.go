// Package storage defines the contract between tlog and its storage drivers:
// a small set of methods grouped by role (logs, integration, reads,
// cosignatures). Drivers live in subpackages (postgres, embedded) and all pass
// the conformance suite in storagetest.
//
// Storage is not trusted to keep the log honest: it stores what the
// sequencer computed and signed, and every reader verifies. What storage must
// guarantee is atomicity and durability of Integrate, and that the tree head
// only moves by compare-and-swap, so two sequencers can never both extend the
// same head (the log never forks).
package storage

import (
	"context"
	"errors"
	"time"

	"github.com/tlog-dev/tlog/pkg/tile"
	"github.com/tlog-dev/tlog/pkg/tree"
)

// Domain errors. Drivers wrap them with %w; the server maps them to gRPC and
// HTTP status codes in one place.
var (
	// ErrLogNotFound: no log has that name.
	ErrLogNotFound = errors.New("log not found")
	// ErrLogExists: CreateLog with a name already taken.
	ErrLogExists = errors.New("log already exists")
	// ErrNotFound: the log exists but not the requested checkpoint, tile,
	// entry or identity.
	ErrNotFound = errors.New("not found")
	// ErrConflict: Integrate's expected previous tree head is not the stored
	// one (another sequencer moved it, or the caller is stale). Nothing was
	// written.
	ErrConflict = errors.New("tree head conflict")
	// ErrInvalid: the request is malformed (caller bug or bad input). Nothing
	// was written.
	ErrInvalid = errors.New("invalid storage request")
	// ErrDuplicate: Integrate was given an entry whose identity is already
	// in the log. Nothing was written.
	ErrDuplicate = errors.New("identity already in the log")
	// ErrSchemaTooNew: the database was migrated by a newer tlog.
	ErrSchemaTooNew = errors.New("storage schema is newer than this binary")
	// ErrLocked: another process holds the embedded store.
	ErrLocked = errors.New("storage is locked by another process")
)

// Hash is a SHA-256 hash.
type Hash = [32]byte

// Log describes one log. Many logs share one store.
type Log struct {
	// Name identifies the log in APIs and URLs.
	Name string
	// Origin is the checkpoint origin line (and the signing key's name).
	Origin string
	// VerifierKey is the signed-note verifier key of the log's signing key.
	VerifierKey string
	// CreatedAt is when the log was created.
	CreatedAt time.Time
	// WitnessPolicy is the log's own witness policy, a C2SP tlog-policy
	// text (https://c2sp.org/tlog-policy), stored as given; empty means the
	// log has none of its own (the server's default applies). Storage does
	// not parse it.
	WitnessPolicy string
}

// TreeHead is a tree size and its root hash.
type TreeHead struct {
	Size uint64
	Root Hash
}

// Checkpoint is a signed checkpoint as stored: its tree head and the signed
// note text. The note is authoritative; Size and Root are indexed copies.
type Checkpoint struct {
	TreeHead
	Note []byte
}

// Entry is a log entry to integrate or as read back.
type Entry struct {
	// Index is the entry's position in the log.
	Index uint64
	// Identity de-duplicates entries: by default the leaf hash, or a hash of
	// the client's idempotency key.
	Identity Hash
	// LeafHash is the RFC 6962 leaf hash of Data.
	LeafHash Hash
	// Data is the entry itself, at most tile.MaxEntrySize bytes.
	Data []byte
}

// Batch is one atomic extension of a log: entries Prev.Size..Next.Size-1,
// the hash tiles they create or change, and the checkpoint signed for Next.
type Batch struct {
	Prev       TreeHead
	Entries    []Entry         // Index must run from Prev.Size, contiguously
	Tiles      []tree.TileData // each with exactly Width*32 bytes
	Checkpoint Checkpoint      // its TreeHead is the new head
}

// Cosignature is a witness's signature line on a checkpoint.
type Cosignature struct {
	// KeyID identifies the witness key: package witnessing uses
	// "<key name>+<key ID in 8 hex digits>", as in a verifier key.
	KeyID string
	// Signature is the note signature line, without the trailing newline.
	Signature []byte
}

// Store is the whole contract. Every method is safe for concurrent use; a
// context that is cancelled aborts the call with the context's error.
type Store interface {
	Logs
	Integrator
	Reader
	Cosignatures
	// Close releases the store. It is safe to call once.
	Close() error
}

// Logs creates and describes logs.
type Logs interface {
	// CreateLog creates a log (with its WitnessPolicy, if any) and its
	// initial checkpoint (normally the signed empty tree). It returns
	// ErrLogExists if the name is taken.
	CreateLog(ctx context.Context, log Log, initial Checkpoint) error
	// GetLog returns ErrLogNotFound if there is no such log.
	GetLog(ctx context.Context, name string) (Log, error)
	// ListLogs returns every log, ordered by name.
	ListLogs(ctx context.Context) ([]Log, error)
	// SetWitnessPolicy replaces the log's WitnessPolicy (empty clears it).
	// It returns ErrLogNotFound if there is no such log.
	SetWitnessPolicy(ctx context.Context, log, policy string) error
}

// Integrator writes batches.
type Integrator interface {
	// Integrate stores a batch in one transaction: it advances the log's tree
	// head from b.Prev to b.Checkpoint.TreeHead only if the stored head still
	// equals b.Prev (else ErrConflict), stores the entries and their
	// identities, upserts the tiles (a tile only ever grows) and stores the
	// checkpoint. When it returns nil the batch is durable. ErrConflict,
	// ErrLogNotFound (unknown log), ErrDuplicate (an entry's identity is
	// already in the log: callers de-duplicate with LookupIdentities, before
	// or after such a refusal) and ErrInvalid (a malformed batch) mean
	// nothing was stored. After any other error
	// the outcome is unknown (the connection may have dropped during the
	// commit): callers must re-read LatestCheckpoint before building on the
	// head. A batch without entries re-signs the current head: its
	// checkpoint replaces the stored one at that size, with the same root.
	Integrate(ctx context.Context, log string, b *Batch) error
}

// Reader reads what Integrate stored. Reads never block writers.
type Reader interface {
	// LatestCheckpoint returns the checkpoint of the current tree head.
	LatestCheckpoint(ctx context.Context, log string) (Checkpoint, error)
	// CheckpointAt returns the checkpoint signed at tree size size, or
	// ErrNotFound if no checkpoint was signed at that size.
	CheckpointAt(ctx context.Context, log string, size uint64) (Checkpoint, error)
	// ListCheckpoints returns up to limit checkpoints with size > after, in
	// increasing size order (empty when there are none). A limit of 0 returns
	// none; a negative limit is ErrInvalid.
	ListCheckpoints(ctx context.Context, log string, after uint64, limit int) ([]Checkpoint, error)
	// ReadTiles returns the contents of each hash tile (Level >= 0): at least
	// Width*32 bytes, possibly more for a partial tile that has since grown.
	// A missing tile is an error wrapping ErrNotFound.
	ReadTiles(ctx context.Context, log string, tiles []tile.Tile) ([][]byte, error)
	// ReadEntries returns entries [start, end) in order, with Index,
	// Identity, LeafHash and Data set. It returns ErrNotFound if any of them
	// is absent.
	ReadEntries(ctx context.Context, log string, start, end uint64) ([]Entry, error)
	// LookupIdentities returns the index of each identity already in the log;
	// identities not in the log are absent from the map.
	LookupIdentities(ctx context.Context, log string, ids []Hash) (map[Hash]uint64, error)
	// FindLeaf returns the lowest index whose leaf hash (or identity) is h, or
	// ErrNotFound.
	FindLeaf(ctx context.Context, log string, h Hash) (uint64, error)
}

// SliceReader is implemented by stores that read part of a hash tile for
// less than the whole tile (see tree.SliceReader); the server's proofs use
// it when it is there.
type SliceReader interface {
	// ReadTileSlices returns hashes [From, To) of each tile: exactly
	// (To-From)*32 bytes. A tile missing, or stored narrower than To, is an
	// error wrapping ErrNotFound; a slice outside 0 <= From < To <= Width, or
	// not of a hash tile, is ErrInvalid.
	ReadTileSlices(ctx context.Context, log string, slices []tree.TileSlice) ([][]byte, error)
}

// Cosignatures stores witness cosignatures per checkpoint.
type Cosignatures interface {
	// AddCosignatures stores cosignatures on the checkpoint at size; a
	// cosignature from a KeyID already stored for that size replaces it.
	// It returns ErrNotFound if no checkpoint was signed at that size.
	AddCosignatures(ctx context.Context, log string, size uint64, cs []Cosignature) error
	// CosignaturesAt returns the cosignatures stored for size (none: empty).
	CosignaturesAt(ctx context.Context, log string, size uint64) ([]Cosignature, error)
}

// Elector is implemented by stores that several processes may share (the
// PostgreSQL driver): it elects, per log, the one process that sequences it
// (the leader). It is optional: a store that does not implement it (the
// embedded driver, which one process at a time holds) makes its process the
// leader of every log.
//
// Leadership only keeps processes from wasting batches on each other:
// correctness never depends on it. A deposed leader that has not noticed
// yet can still try to commit, and the compare-and-swap of Integrate makes
// that commit fail (ErrConflict) instead of forking the log.
type Elector interface {
	// TryLead tries once, without waiting, to become the leader of log. If
	// this process now leads, it returns a Leadership and records addr as
	// the leader's address (see Leader). If another process leads, it
	// returns nil and no error. It returns ErrLogNotFound for an unknown
	// log, or a storage error.
	TryLead(ctx context.Context, log, addr string) (Leadership, error)
	// Leader returns the address recorded by the latest process to win the
	// leadership of log: the current leader, or one that died and has not
	// been replaced yet. It returns "" if none was ever recorded, and
	// ErrLogNotFound for an unknown log.
	Leader(ctx context.Context, log string) (addr string, err error)
}

// Leadership is a won election. It lasts until Resign, or until the store
// finds that it may have ended (the connection that holds it died); Lost
// is then closed, and the holder must stop sequencing at once.
type Leadership interface {
	// Lost is closed when the leadership is, or may be, lost (also after
	// Resign).
	Lost() <-chan struct{}
	// Resign gives the leadership up. It is safe to call more than once.
	Resign()
}
