package keyfile

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// The database is not trusted, and it is also the sequencer's only memory
// of what the log signed: whoever can rewrite it wholesale (restore an old
// backup, or roll back entries, tiles, head and checkpoints together) could
// make tlogd sign a second, different history. So beside each key, in
// dir/<name>.signed, tlogd keeps the latest checkpoint it signed (the signed
// note as served), and refuses to sequence storage whose tree does not
// extend it.

// maxSignedSize bounds what LoadSigned reads: a checkpoint note is a few
// hundred bytes.
const maxSignedSize = 64 << 10

// SignedPath returns the path of the file of the log name's latest signed
// checkpoint in dir.
func SignedPath(dir, name string) string {
	return filepath.Join(dir, name+".signed")
}

// LoadSigned reads the latest signed checkpoint recorded for the log name
// in dir. If none was recorded the error wraps fs.ErrNotExist. The note is
// not verified here.
func LoadSigned(dir, name string) ([]byte, error) {
	if err := checkName(name); err != nil {
		return nil, err
	}
	f, err := os.Open(SignedPath(dir, name))
	if err != nil {
		return nil, fmt.Errorf("keyfile: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxSignedSize+1))
	if err != nil {
		return nil, fmt.Errorf("keyfile: %w", err)
	}
	if len(b) > maxSignedSize {
		return nil, fmt.Errorf("keyfile: %s is larger than %d bytes", SignedPath(dir, name), maxSignedSize)
	}
	return b, nil
}

// SaveSigned records note as the latest signed checkpoint of the log name
// in dir, replacing the one before atomically (a temporary file, fsynced,
// renamed over it; mode 0600). The rename is not fsynced: after a crash the
// file may hold an earlier checkpoint, which guards less but never wrongly.
func SaveSigned(dir, name string, note []byte) error {
	if err := checkName(name); err != nil {
		return err
	}
	if err := mkdir(dir); err != nil {
		return err
	}
	tmp, err := writeTemp(dir, "."+name+".signed.tmp*", note)
	if err != nil {
		return err
	}
	if err := os.Rename(tmp, SignedPath(dir, name)); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("keyfile: %w", err)
	}
	return nil
}
