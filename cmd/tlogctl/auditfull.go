package main

// tlogctl audit --full: download every entry and tile, recompute the tree.

import (
	"bytes"
	"context"
	"fmt"
	"time"

	"github.com/tlog-dev/tlog/pkg/checkpoint"
	"github.com/tlog-dev/tlog/pkg/tile"
	"github.com/tlog-dev/tlog/pkg/tree"
)

const (
	// fullSaveEvery is how often --full saves its progress.
	fullSaveEvery = 5 * time.Second
	// progressEvery is how often the progress bar (or a JSON progress
	// event) is updated.
	progressEvery = 250 * time.Millisecond
)

// fullAudit extends the recomputed tree from where the last run stopped to
// cp.Size, comparing every hash tile that becomes full with the log's, and
// at the end the partial tiles and the root of cp.
func (a *auditor) fullAudit(ctx context.Context, cp checkpoint.Checkpoint) error {
	if !a.fullLoaded {
		st, e, partials, err := a.state.loadFull(cp.Origin)
		if err != nil {
			return err
		}
		if st != nil {
			a.fullSize, a.fullEdge, a.partials = st.Size, e, partials
		}
		a.fullLoaded = true
	}
	if a.fullEdge == nil || a.fullSize > cp.Size {
		if a.fullEdge != nil {
			a.event(auditEvent{Event: "warning", Message: fmt.Sprintf("the saved progress of --full (size %d) is beyond the checkpoint (size %d): starting over", a.fullSize, cp.Size)}, "")
		}
		a.fullSize, a.fullEdge, a.partials = 0, tree.EmptyEdge(), make(map[int]tree.TileData)
	}
	start := a.fullSize
	began := time.Now()
	edge, partials := a.fullEdge, clonePartials(a.partials)
	tiles := a.src.Tiles(ctx)

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		mismatch     string // the first tile that differs
		entryChanged bool   // mismatch is in a level-0 tile: an entry's leaf hash
		compared     int
		lastSave     = time.Now()
		lastProgress time.Time
	)
	compare := func(td tree.TileData, served []byte) {
		compared++
		if mismatch != "" {
			return
		}
		if d := tileDiff(td, served); d != "" {
			mismatch, entryChanged = d, td.Level == 0
		}
	}
	save := func() error {
		if mismatch != "" {
			return nil // never resume from a tree that disagrees with the log
		}
		a.fullSize, a.fullEdge, a.partials = edge.Size(), edge, clonePartials(partials)
		return a.state.saveFull(cp.Origin, edge.Size(), partials)
	}
	progress := func(force bool) {
		if !force && time.Since(lastProgress) < progressEvery {
			return
		}
		lastProgress = time.Now()
		done := edge.Size()
		if a.c.json {
			if force || done == cp.Size {
				return // the "full" event follows
			}
			a.c.emit(auditEvent{Event: "progress", Size: u64p(cp.Size), Verified: u64p(done), Bytes: a.src.Downloaded()})
			return
		}
		if a.progress {
			drawProgress(a.c, done, cp.Size, a.src.Downloaded(), time.Since(began))
		}
	}

	for r := range a.src.Entries(ctx, start, cp.Size, cp.Size) {
		if r.err != nil {
			if a.progress {
				fmt.Fprintln(a.c.stderr)
			}
			if err := save(); err != nil {
				return err
			}
			return classify(r.err, fmt.Sprintf("entries from index %d", edge.Size()))
		}
		if r.start != edge.Size() {
			return fmt.Errorf("full audit: got entries from %d, want %d", r.start, edge.Size())
		}
		leaves := make([]tree.Hash, len(r.entries))
		for i, e := range r.entries {
			leaves[i] = tree.LeafHash(e)
		}
		next, tds, err := edge.Append(leaves)
		if err != nil {
			return fmt.Errorf("full audit: recomputing the tree: %w", err)
		}
		edge = next
		var fullTiles []tree.TileData
		for _, td := range tds {
			switch {
			case td.Level == 0 && r.leafTile != nil:
				compare(td, r.leafTile) // the bundle's own tile, full or not
			case td.IsFull() && tiles != nil:
				fullTiles = append(fullTiles, td)
			}
			if td.IsFull() {
				delete(partials, td.Level)
			} else {
				partials[td.Level] = td
			}
		}
		if len(fullTiles) > 0 {
			if err := a.compareTiles(tiles, fullTiles, compare); err != nil {
				return err
			}
		}
		if time.Since(lastSave) >= fullSaveEvery {
			if err := save(); err != nil {
				return err
			}
			lastSave = time.Now()
		}
		progress(false)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if edge.Size() != cp.Size {
		return fmt.Errorf("full audit: the entries stopped at %d, before %d", edge.Size(), cp.Size)
	}
	// The partial tiles of cp's tree above level 0 (level 0 was compared
	// with its bundle).
	if tiles != nil {
		var ps []tree.TileData
		for l := 1; l <= tile.MaxLevel; l++ {
			if p, ok := partials[l]; ok {
				ps = append(ps, p)
			}
		}
		if err := a.compareTiles(tiles, ps, compare); err != nil {
			return err
		}
		if start == cp.Size {
			if p, ok := partials[0]; ok {
				// Nothing was downloaded: still check the leaf tile.
				if err := a.compareTiles(tiles, []tree.TileData{p}, compare); err != nil {
					return err
				}
			}
		}
	}
	if a.progress {
		progress(true)
		fmt.Fprintln(a.c.stderr)
	}

	root := edge.Root()
	switch {
	case root != cp.Hash && mismatch != "" && entryChanged:
		return misbehaved("tampered_entry", "%s; and the entries the log serves recompute root %s at size %d, not the signed %s: the log serves an entry other than the one it signed",
			mismatch, b64(root[:]), cp.Size, b64(cp.Hash[:]))
	case root != cp.Hash && mismatch != "":
		return misbehaved("tampered_entry", "the entries the log serves recompute root %s at size %d, not the signed %s (and %s)", b64(root[:]), cp.Size, b64(cp.Hash[:]), mismatch)
	case root != cp.Hash:
		return misbehaved("tampered_entry", "the entries the log serves recompute root %s at size %d, not the signed %s: the log serves entries other than the ones it signed",
			b64(root[:]), cp.Size, b64(cp.Hash[:]))
	case mismatch != "":
		return misbehaved("tampered_tile", "%s; the entries do recompute the signed root, so the tile is wrong", mismatch)
	}
	if err := save(); err != nil {
		return err
	}
	a.event(auditEvent{Event: "full", Size: u64p(cp.Size), FromSize: u64p(start), Verified: u64p(cp.Size - start), Tiles: compared, Bytes: a.src.Downloaded(), ElapsedSecs: time.Since(began).Seconds()},
		fmt.Sprintf("full: entries %d to %d downloaded and hashed, %d tiles compared: the recomputed root is the signed one (size %d)", start, cp.Size, compared, cp.Size))
	return nil
}

// compareTiles fetches tds from the log and compares each with compare.
func (a *auditor) compareTiles(r tree.TileReader, tds []tree.TileData, compare func(tree.TileData, []byte)) error {
	if len(tds) == 0 {
		return nil
	}
	ts := make([]tile.Tile, len(tds))
	for i, td := range tds {
		ts[i] = td.Tile
	}
	served, err := r.ReadTiles(ts)
	if err != nil {
		return classify(err, "hash tiles")
	}
	for i, td := range tds {
		compare(td, served[i])
	}
	return nil
}

// tileDiff describes the first difference between a recomputed tile and
// the one the log serves, or returns "".
func tileDiff(td tree.TileData, served []byte) string {
	if len(served) < len(td.Hashes) {
		return fmt.Sprintf("%s: the log serves %d bytes, want %d", td.Path(), len(served), len(td.Hashes))
	}
	for p := 0; p < td.Width; p++ {
		want := td.Hashes[p*tile.HashSize : (p+1)*tile.HashSize]
		got := served[p*tile.HashSize : (p+1)*tile.HashSize]
		if bytes.Equal(want, got) {
			continue
		}
		if td.Level == 0 {
			return fmt.Sprintf("entry %d: the entry the log serves has leaf hash %x, but the log's %s holds %x at position %d",
				td.Index*tile.Width+uint64(p), want, td.Path(), got, p)
		}
		return fmt.Sprintf("%s position %d: the log serves hash %s, the entries give %s", td.Path(), p, b64(got), b64(want))
	}
	return ""
}

func clonePartials(m map[int]tree.TileData) map[int]tree.TileData {
	out := make(map[int]tree.TileData, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// drawProgress draws a one-line progress bar on the terminal.
func drawProgress(c *cli, done, total uint64, bytes int64, elapsed time.Duration) {
	const width = 30
	frac := 1.0
	if total > 0 {
		frac = float64(done) / float64(total)
	}
	n := int(frac * width)
	bar := make([]byte, width)
	for i := range bar {
		bar[i] = ' '
		if i < n {
			bar[i] = '='
		}
	}
	rate := 0.0
	if s := elapsed.Seconds(); s > 0 {
		rate = float64(bytes) / s / (1 << 20)
	}
	fmt.Fprintf(c.stderr, "\rfull audit [%s] %5.1f%%  %d/%d entries  %.1f MiB/s ", bar, 100*frac, done, total, rate)
}
