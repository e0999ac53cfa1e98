package storage

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"

	"golang.org/x/mod/sumdb/note"

	"github.com/tlog-dev/tlog/pkg/audit"
	"github.com/tlog-dev/tlog/pkg/checkpoint"
	"github.com/tlog-dev/tlog/pkg/tile"
	"github.com/tlog-dev/tlog/pkg/tree"
)

// verifyChunk is the most entries VerifyLog reads in one ReadEntries call.
const verifyChunk = 4096

// VerifyLog verifies the whole log stored in r with audit.VerifyLog: it
// recomputes the tree from every entry and checks it against every stored
// tile and every checkpoint, whose signatures it checks with v. It also
// checks that the latest checkpoint (the tree head that Integrate extends)
// is signed by v and matches the recomputed tree.
//
// An error wrapping audit.ErrTampered means the stored log is wrong; any
// other error (such as ErrLogNotFound, or the context's error) is r's error
// reading it, unchanged.
func VerifyLog(ctx context.Context, r Reader, log string, v note.Verifier) (audit.Report, error) {
	if v == nil {
		return audit.Report{}, errors.New("storage: VerifyLog: nil verifier")
	}
	// Read the head first: the log may grow while it is verified.
	latest, err := r.LatestCheckpoint(ctx, log)
	if err != nil {
		return audit.Report{}, err
	}
	src := verifySource{ctx: ctx, r: r, log: log}
	report, err := audit.VerifyLog(src, v)
	if err != nil {
		return report, err
	}
	if latest.Size > report.Size {
		return report, fmt.Errorf("%w: latest checkpoint at size %d is beyond the last listed checkpoint (size %d)", audit.ErrTampered, latest.Size, report.Size)
	}
	c, _, err := checkpoint.Open(latest.Note, v)
	if err != nil {
		return report, fmt.Errorf("%w: latest checkpoint at size %d: %w", audit.ErrTampered, latest.Size, err)
	}
	if c.Size != latest.Size || c.Hash != latest.Root {
		return report, fmt.Errorf("%w: latest checkpoint is stored as size %d, root %s but its note says size %d, root %s", audit.ErrTampered, latest.Size, b64(latest.Root), c.Size, b64(c.Hash))
	}
	// The tiles up to report.Size are verified.
	root, err := tree.RootHash(src, latest.Size)
	if err != nil {
		return report, err
	}
	if c.Hash != root {
		return report, fmt.Errorf("%w: latest checkpoint at size %d: root %s != recomputed %s", audit.ErrTampered, c.Size, b64(c.Hash), b64(root))
	}
	// A head behind the checkpoints would make the next Integrate rewrite
	// history.
	now, err := r.LatestCheckpoint(ctx, log)
	if err != nil {
		return report, err
	}
	if now.Size < report.Size {
		return report, fmt.Errorf("%w: latest checkpoint at size %d is behind the checkpoint at size %d", audit.ErrTampered, now.Size, report.Size)
	}
	return report, nil
}

// verifySource adapts a Reader to audit.Source.
type verifySource struct {
	ctx context.Context
	r   Reader
	log string
}

// ReadTiles reads hash tiles; a missing tile is an error wrapping both
// tree.ErrMissingTile and ErrNotFound.
func (s verifySource) ReadTiles(ts []tile.Tile) ([][]byte, error) {
	data, err := s.r.ReadTiles(s.ctx, s.log, ts)
	if errors.Is(err, ErrNotFound) {
		return nil, fmt.Errorf("%w: %w", tree.ErrMissingTile, err)
	}
	return data, err
}

// ReadEntries reads entries [start, end) in chunks. Where a chunk is not
// all there, it reads that chunk's entries one at a time, to return those
// before the first absent one.
func (s verifySource) ReadEntries(start, end uint64) ([][]byte, error) {
	var out [][]byte
	for start < end {
		n := min(end, start+verifyChunk)
		es, err := s.r.ReadEntries(s.ctx, s.log, start, n)
		if errors.Is(err, ErrNotFound) && n-start == 1 {
			return out, nil
		}
		if errors.Is(err, ErrNotFound) {
			for i := start; i < n; i++ {
				e, err := s.r.ReadEntries(s.ctx, s.log, i, i+1)
				if errors.Is(err, ErrNotFound) {
					return out, nil
				}
				if err != nil {
					return nil, err
				}
				if err := checkEntries(e, i, i+1); err != nil {
					return nil, err
				}
				out = append(out, e[0].Data)
			}
			// Every entry was there on the second read: the log grew.
			start = n
			continue
		}
		if err != nil {
			return nil, err
		}
		if err := checkEntries(es, start, n); err != nil {
			return nil, err
		}
		for _, e := range es {
			out = append(out, e.Data)
		}
		start = n
	}
	return out, nil
}

// checkEntries checks that a driver returned exactly entries [start, end).
func checkEntries(es []Entry, start, end uint64) error {
	if uint64(len(es)) != end-start {
		return fmt.Errorf("storage: ReadEntries(%d, %d) returned %d entries", start, end, len(es))
	}
	for i, e := range es {
		if e.Index != start+uint64(i) {
			return fmt.Errorf("storage: ReadEntries(%d, %d) returned entry %d at position %d", start, end, e.Index, i)
		}
	}
	return nil
}

// ListCheckpoints returns the notes of the checkpoints after size after.
func (s verifySource) ListCheckpoints(after uint64, limit int) ([][]byte, error) {
	cs, err := s.r.ListCheckpoints(s.ctx, s.log, after, limit)
	if err != nil {
		return nil, err
	}
	notes := make([][]byte, len(cs))
	for i, c := range cs {
		notes[i] = c.Note
	}
	return notes, nil
}

func b64(h Hash) string { return base64.StdEncoding.EncodeToString(h[:]) }
