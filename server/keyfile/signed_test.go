package keyfile

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// TestSigned: nothing recorded is fs.ErrNotExist; a record replaces the one
// before whole, is private, and leaves no temporary file; a file too large
// or a bad name is refused.
func TestSigned(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "keys") // created by SaveSigned
	if _, err := LoadSigned(dir, "log"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("LoadSigned before any record: %v, want fs.ErrNotExist", err)
	}
	for _, note := range []string{"a longer first checkpoint note\n", "second\n"} {
		if err := SaveSigned(dir, "log", []byte(note)); err != nil {
			t.Fatal(err)
		}
		got, err := LoadSigned(dir, "log")
		if err != nil || string(got) != note {
			t.Fatalf("LoadSigned = %q, %v; want %q", got, err, note)
		}
	}
	fi, err := os.Stat(SignedPath(dir, "log"))
	if err != nil {
		t.Fatal(err)
	}
	if runtime.GOOS != "windows" && fi.Mode().Perm() != 0o600 {
		t.Errorf("%s has mode %v, want 0600", SignedPath(dir, "log"), fi.Mode().Perm())
	}
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(es) != 1 {
		t.Errorf("key directory holds %d files after two records, want 1", len(es))
	}

	if err := os.WriteFile(SignedPath(dir, "big"), bytes.Repeat([]byte("x"), maxSignedSize+1), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadSigned(dir, "big"); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Errorf("LoadSigned of an oversized file: %v", err)
	}
	for _, name := range []string{"", ".hidden", "a/b"} {
		if err := SaveSigned(dir, name, []byte("x\n")); err == nil {
			t.Errorf("SaveSigned(%q) succeeded", name)
		}
		if _, err := LoadSigned(dir, name); err == nil || errors.Is(err, fs.ErrNotExist) {
			t.Errorf("LoadSigned(%q) = %v, want a name error", name, err)
		}
	}
}
