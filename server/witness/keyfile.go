package witness

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/mod/sumdb/note"
)

// OpenKeyFile returns the Cosigner whose private key is in the file at path.
// If the file does not exist, OpenKeyFile generates a new Ed25519 key named
// name (golang.org/x/mod/sumdb/note.GenerateKey), writes it to a new file
// readable only by its owner (mode 0600), syncs it and reports created.
//
// name may be empty when the file exists; otherwise it must equal the key's
// name, so that a witness never starts under a name its key does not have.
func OpenKeyFile(path, name string) (c *Cosigner, created bool, err error) {
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		c, err := NewCosigner(strings.TrimSpace(string(b)))
		if err != nil {
			return nil, false, fmt.Errorf("key file %s: %w", path, err)
		}
		if name != "" && name != c.Name() {
			return nil, false, fmt.Errorf("key file %s holds the key of %q, not %q", path, c.Name(), name)
		}
		return c, false, nil
	case !errors.Is(err, fs.ErrNotExist):
		return nil, false, err
	}

	if name == "" {
		return nil, false, fmt.Errorf("key file %s does not exist, and no name was given to generate a key", path)
	}
	if !validKeyName(name) {
		return nil, false, fmt.Errorf("invalid witness name %q: it must be non-empty, without spaces or '+'", name)
	}
	skey, _, err := note.GenerateKey(rand.Reader, name)
	if err != nil {
		return nil, false, err
	}
	c, err = NewCosigner(skey)
	if err != nil {
		return nil, false, err
	}
	if err := writeNewFile(path, []byte(skey+"\n")); err != nil {
		return nil, false, fmt.Errorf("writing key file: %w", err)
	}
	return c, true, nil
}

// writeNewFile creates path (failing if it exists) with mode 0600, writes b,
// and syncs the file and its directory.
func writeNewFile(path string, b []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		os.Remove(path)
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(path)
		return err
	}
	if err := f.Close(); err != nil {
		os.Remove(path)
		return err
	}
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
