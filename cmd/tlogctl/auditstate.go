package main

// The state directory of `tlogctl audit`: what the auditor has verified,
// kept between runs. Every file is replaced atomically (written aside,
// fsynced, renamed over, directory fsynced), so a crash leaves either the
// old state or the new one.
//
//	checkpoint   the last verified checkpoint, the signed note as the log served it
//	vkey         the log's verifier key, saved on first use
//	full.json    how far --full got: the tree size whose entries were all
//	             downloaded and hashed, and the partial hash tiles of that
//	             tree (what is needed to go on from there)

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/tlog-dev/tlog/pkg/tile"
	"github.com/tlog-dev/tlog/pkg/tree"
)

const (
	stateCheckpoint = "checkpoint"
	stateVKey       = "vkey"
	stateFull       = "full.json"
)

// stateDir is an audit state directory; the zero value (no directory)
// keeps nothing.
type stateDir string

func (d stateDir) path(name string) string { return filepath.Join(string(d), name) }

// read returns the content of a state file, or nil if it does not exist.
func (d stateDir) read(name string) ([]byte, error) {
	if d == "" {
		return nil, nil
	}
	b, err := os.ReadFile(d.path(name))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("--state: %w", err)
	}
	return b, nil
}

// write replaces a state file atomically and durably.
func (d stateDir) write(name string, data []byte) error {
	if d == "" {
		return nil
	}
	if err := os.MkdirAll(string(d), 0o700); err != nil {
		return fmt.Errorf("--state: %w", err)
	}
	f, err := os.CreateTemp(string(d), "."+name+".tmp*")
	if err != nil {
		return fmt.Errorf("--state: %w", err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // fails harmlessly once renamed
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("--state: writing %s: %w", tmp, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("--state: syncing %s: %w", tmp, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("--state: %w", err)
	}
	if err := os.Rename(tmp, d.path(name)); err != nil {
		return fmt.Errorf("--state: %w", err)
	}
	if dir, err := os.Open(string(d)); err == nil {
		dir.Sync() // best effort: not every platform can sync a directory
		dir.Close()
	}
	return nil
}

// fullState is full.json.
type fullState struct {
	// Origin is the log's origin, so that a state directory is never
	// resumed against another log.
	Origin string `json:"origin"`
	// Size is the number of entries downloaded and hashed.
	Size uint64 `json:"size"`
	// Partials are the partial hash tiles of the tree of that size,
	// recomputed from the entries.
	Partials []stateTile `json:"partials"`
}

type stateTile struct {
	Level  int    `json:"level"`
	Index  uint64 `json:"index"`
	Hashes []byte `json:"hashes"` // base64 in JSON
}

// edge rebuilds the right edge of the tree that fs describes.
func (fs *fullState) edge() (*tree.Edge, map[int]tree.TileData, error) {
	partials := make(map[int]tree.TileData)
	for _, t := range fs.Partials {
		w := len(t.Hashes) / tile.HashSize
		if len(t.Hashes)%tile.HashSize != 0 || w != tile.WidthAt(t.Level, t.Index, fs.Size) || w == tile.Width {
			return nil, nil, fmt.Errorf("tile %d/%d is not a partial tile of the tree of size %d", t.Level, t.Index, fs.Size)
		}
		partials[t.Level] = tree.TileData{Tile: tile.Tile{Level: t.Level, Index: t.Index, Width: w}, Hashes: t.Hashes}
	}
	e, err := tree.LoadEdge(tree.TileReaderFunc(func(ts []tile.Tile) ([][]byte, error) {
		out := make([][]byte, len(ts))
		for i, t := range ts {
			p, ok := partials[t.Level]
			if !ok || p.Index != t.Index || p.Width < t.Width {
				return nil, fmt.Errorf("%w: %s is not saved", tree.ErrMissingTile, t.Path())
			}
			out[i] = p.Hashes
		}
		return out, nil
	}), fs.Size)
	if err != nil {
		return nil, nil, err
	}
	return e, partials, nil
}

// loadFull reads full.json, or returns nil if there is none.
func (d stateDir) loadFull(origin string) (*fullState, *tree.Edge, map[int]tree.TileData, error) {
	b, err := d.read(stateFull)
	if b == nil || err != nil {
		return nil, nil, nil, err
	}
	var st fullState
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, nil, nil, fmt.Errorf("--state: %s: %w", d.path(stateFull), err)
	}
	if st.Origin != origin {
		return nil, nil, nil, fmt.Errorf("--state: %s is the state of the log %q, not of %q", d.path(stateFull), st.Origin, origin)
	}
	e, partials, err := st.edge()
	if err != nil {
		return nil, nil, nil, fmt.Errorf("--state: %s: %w", d.path(stateFull), err)
	}
	return &st, e, partials, nil
}

func (d stateDir) saveFull(origin string, size uint64, partials map[int]tree.TileData) error {
	st := fullState{Origin: origin, Size: size, Partials: []stateTile{}}
	for l := range tile.MaxLevel + 1 {
		if p, ok := partials[l]; ok {
			st.Partials = append(st.Partials, stateTile{Level: l, Index: p.Index, Hashes: p.Hashes})
		}
	}
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	return d.write(stateFull, append(b, '\n'))
}

// loadVKey returns the saved verifier key, or "".
func (d stateDir) loadVKey() (string, error) {
	b, err := d.read(stateVKey)
	return strings.TrimSpace(string(b)), err
}
