package client

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/tlog-dev/tlog/pkg/checkpoint"
)

// TrustedStore keeps a client's trusted state between runs: the newest
// signed checkpoint note it verified. The client verifies what Load returns
// with the log's key, so a store need not be secret, only kept from being
// rolled back by whoever the client does not trust.
type TrustedStore interface {
	// Load returns the stored note, or nil and no error if none was stored
	// yet.
	Load() (note []byte, err error)
	// Store replaces the stored note with note, durably: once Store
	// returns, a later Load (in this or another process) returns note.
	Store(note []byte) error
}

// FileStore is a TrustedStore that keeps the note in the file at its path,
// as the server sent it. Use FileStore("path") as a TrustedStore.
//
// Store writes atomically and durably: a temporary file (mode 0600) in the
// same directory, fsynced, renamed over the file, and the directory fsynced;
// a crash leaves the old note or the new one, never a mix. It creates the
// directory (mode 0700) if needed.
type FileStore string

// Load returns the note in the file, or nil and no error if the file does
// not exist.
func (f FileStore) Load() ([]byte, error) {
	file, err := os.Open(string(f))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer file.Close()
	b, err := io.ReadAll(io.LimitReader(file, checkpoint.MaxNoteSize+1))
	if err != nil {
		return nil, err
	}
	if len(b) > checkpoint.MaxNoteSize {
		return nil, fmt.Errorf("trusted state %s is larger than %d bytes", f, checkpoint.MaxNoteSize)
	}
	if len(b) == 0 {
		return nil, fmt.Errorf("trusted state %s is empty", f)
	}
	return b, nil
}

// Store replaces the file's content with note.
func (f FileStore) Store(note []byte) (err error) {
	path := string(f)
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if err := tmp.Chmod(0o600); err != nil {
		return err
	}
	if _, err := tmp.Write(note); err != nil {
		return err
	}
	if err := tmp.Sync(); err != nil {
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	return syncDir(dir)
}

// syncDir makes a rename in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !errors.Is(err, os.ErrInvalid) {
		// Some systems (Windows) cannot sync a directory.
		return err
	}
	return nil
}
