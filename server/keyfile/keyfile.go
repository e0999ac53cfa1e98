// Package keyfile keeps each log's note signing key in a file of its own,
// outside the database.
//
// The database is not trusted (whoever can write to it must still be unable
// to rewrite history unnoticed), so the Ed25519 key that signs a log's
// checkpoints lives in dir/<name>.key, readable only by its owner (mode 0600,
// in a directory created 0700). The file holds the signed-note private key
// string, as golang.org/x/mod/sumdb/note.GenerateKey writes it, and a
// newline:
//
//	PRIVATE+KEY+example.com/log+1a2b3c4d+AZ...=
//
// [LoadOrCreate] creates the key on first use, atomically, and never
// replaces an existing key file.
package keyfile

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"

	"github.com/tlog-dev/tlog/pkg/checkpoint"
)

// maxFileSize bounds what Load reads; a key file is about 120 bytes.
const maxFileSize = 4096

// Path returns the path of the key file of the log name in dir. It does not
// check name; Load and LoadOrCreate do.
func Path(dir, name string) string {
	return filepath.Join(dir, name+".key")
}

// Load reads the note signing key of the log name from dir/<name>.key and
// returns it as a private key string (see [checkpoint.NewSigner]).
//
// If the file does not exist, the error wraps [fs.ErrNotExist]. Load refuses
// a file that is not a regular file, whose permissions are wider than 0600
// (any bit for group or others, or execute), or whose content is not exactly
// one valid Ed25519 note private key followed by a newline. Error messages
// never contain key material.
func Load(dir, name string) (skey string, err error) {
	if err := checkName(name); err != nil {
		return "", err
	}
	path := Path(dir, name)
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("keyfile: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return "", fmt.Errorf("keyfile: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return "", fmt.Errorf("keyfile: %s is not a regular file (mode %v)", path, fi.Mode())
	}
	// Windows does not have Unix permission bits; os reports 0666 or 0444.
	if perm := fi.Mode().Perm(); perm&^0o600 != 0 && runtime.GOOS != "windows" {
		return "", fmt.Errorf("keyfile: %s has permissions %04o, wider than 0600; the private key may have leaked, restrict it (chmod 600) if it has not", path, perm)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxFileSize+1))
	if err != nil {
		return "", fmt.Errorf("keyfile: %w", err)
	}
	if len(data) > maxFileSize {
		return "", fmt.Errorf("keyfile: %s: malformed: larger than %d bytes", path, maxFileSize)
	}
	line, ok := bytes.CutSuffix(data, []byte("\n"))
	if !ok {
		return "", fmt.Errorf("keyfile: %s: malformed: does not end with a newline", path)
	}
	if bytes.ContainsAny(line, "\r\n") {
		return "", fmt.Errorf("keyfile: %s: malformed: more than one line", path)
	}
	skey = string(line)
	if _, err := checkpoint.NewSigner(skey); err != nil {
		return "", fmt.Errorf("keyfile: %s: malformed: %w", path, err)
	}
	return skey, nil
}

// LoadOrCreate reads the note signing key for the log name from
// dir/<name>.key, creating it (and dir, mode 0700) with a new Ed25519 key for
// origin if it does not exist. It returns the private key string and whether
// it was created.
//
// It refuses, as [Load] does, a key file with permissions wider than 0600 or
// a malformed one, and also a key whose name differs from origin; it never
// overwrites an existing file.
//
// Creation is atomic and durable: the key is written to a temporary file
// (mode 0600) in dir, fsynced, hard-linked to its final name (which, unlike
// a rename, fails if the name exists, so two processes racing to create the
// key end up with the same one), and dir is fsynced. A crash never leaves a
// half-written key file, at worst a stray ".<name>.key.tmp*" file.
//
// Log names must be safe file names: 1 to 64 characters from [a-zA-Z0-9._-],
// not starting with '.'.
func LoadOrCreate(dir, name, origin string) (skey string, created bool, err error) {
	if err := checkName(name); err != nil {
		return "", false, err
	}
	skey, err = Load(dir, name)
	if err == nil {
		if err := checkOrigin(Path(dir, name), skey, origin); err != nil {
			return "", false, err
		}
		return skey, false, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return "", false, err
	}

	skey, _, err = checkpoint.GenerateKey(origin, rand.Reader)
	if err != nil {
		return "", false, fmt.Errorf("keyfile: log %s: %w", name, err)
	}
	if err := mkdir(dir); err != nil {
		return "", false, err
	}
	switch err := create(dir, name, skey); {
	case err == nil:
		return skey, true, nil
	case errors.Is(err, fs.ErrExist):
		// Another process created the key between our Load and now.
		skey, err := Load(dir, name)
		if err != nil {
			return "", false, err
		}
		if err := checkOrigin(Path(dir, name), skey, origin); err != nil {
			return "", false, err
		}
		return skey, false, nil
	default:
		return "", false, err
	}
}

// create writes skey to dir/<name>.key atomically, failing with an error
// wrapping fs.ErrExist if the file exists.
func create(dir, name, skey string) error {
	tmp, err := writeTemp(dir, "."+name+".key.tmp*", []byte(skey+"\n"))
	if err != nil {
		return err
	}
	defer os.Remove(tmp)
	if err := os.Link(tmp, Path(dir, name)); err != nil {
		return fmt.Errorf("keyfile: %w", err)
	}
	if err := os.Remove(tmp); err != nil {
		return fmt.Errorf("keyfile: %w", err)
	}
	return syncDir(dir)
}

// writeTemp writes data to a new file in dir named by pattern (as
// os.CreateTemp), mode 0600, fsynced and closed, and returns its path. On
// error it leaves no file.
func writeTemp(dir, pattern string, data []byte) (path string, err error) {
	f, err := os.CreateTemp(dir, pattern) // mode 0600
	if err != nil {
		return "", fmt.Errorf("keyfile: %w", err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if err := f.Chmod(0o600); err != nil && runtime.GOOS != "windows" {
		return "", fmt.Errorf("keyfile: %w", err)
	}
	if _, err := f.Write(data); err != nil {
		return "", fmt.Errorf("keyfile: %w", err)
	}
	if err := f.Sync(); err != nil {
		return "", fmt.Errorf("keyfile: %w", err)
	}
	if err := f.Close(); err != nil {
		return "", fmt.Errorf("keyfile: %w", err)
	}
	return f.Name(), nil
}

// mkdir creates dir with mode 0700 if it does not exist, and makes its entry
// in the parent directory durable.
func mkdir(dir string) error {
	if _, err := os.Stat(dir); err == nil {
		return nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("keyfile: %w", err)
	}
	return syncDir(filepath.Dir(filepath.Clean(dir)))
}

func syncDir(dir string) error {
	if runtime.GOOS == "windows" {
		return nil // directories cannot be opened for fsync there
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("keyfile: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("keyfile: fsync %s: %w", dir, err)
	}
	return nil
}

func checkOrigin(path, skey, origin string) error {
	s, err := checkpoint.NewSigner(skey)
	if err != nil {
		return fmt.Errorf("keyfile: %s: malformed: %w", path, err)
	}
	if s.Name() != origin {
		return fmt.Errorf("keyfile: %s holds a key named %q, not the log origin %q", path, s.Name(), origin)
	}
	return nil
}

// checkName reports whether name is a safe log name: 1 to 64 characters from
// [a-zA-Z0-9._-], not starting with '.'.
func checkName(name string) error {
	if len(name) < 1 || len(name) > 64 {
		return fmt.Errorf("keyfile: log name %q must be 1 to 64 characters long", name)
	}
	if name[0] == '.' {
		return fmt.Errorf("keyfile: log name %q must not start with '.'", name)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-') {
			return fmt.Errorf("keyfile: log name %q has a character other than [a-zA-Z0-9._-]", name)
		}
	}
	return nil
}
