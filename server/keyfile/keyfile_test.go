package keyfile_test

import (
	"crypto/rand"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/tlog-dev/tlog/pkg/checkpoint"
	"github.com/tlog-dev/tlog/server/keyfile"
)

const origin = "example.com/log"

func TestLoadOrCreateCreates(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "keys", "sub")
	skey, created, err := keyfile.LoadOrCreate(dir, "log1", origin)
	if err != nil {
		t.Fatal(err)
	}
	if !created {
		t.Error("created = false for a new key")
	}
	s, err := checkpoint.NewSigner(skey)
	if err != nil {
		t.Fatalf("created key does not parse: %v", err)
	}
	if s.Name() != origin {
		t.Errorf("key name = %q, want %q", s.Name(), origin)
	}

	fi, err := os.Stat(keyfile.Path(dir, "log1"))
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o600 {
		t.Errorf("key file mode = %04o, want 0600", perm)
	}
	di, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if perm := di.Mode().Perm(); perm != 0o700 {
		t.Errorf("dir mode = %04o, want 0700", perm)
	}
	data, err := os.ReadFile(filepath.Join(dir, "log1.key"))
	if err != nil {
		t.Fatal(err)
	}
	if string(data) != skey+"\n" {
		t.Errorf("file content = %q, want the key and a newline", data)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 {
		t.Errorf("dir holds %v, want only log1.key (no temporary files)", entries)
	}
}

func TestLoadOrCreateLoads(t *testing.T) {
	dir := t.TempDir()
	skey1, created, err := keyfile.LoadOrCreate(dir, "log1", origin)
	if err != nil || !created {
		t.Fatalf("first LoadOrCreate = %v, %v", created, err)
	}
	skey2, created, err := keyfile.LoadOrCreate(dir, "log1", origin)
	if err != nil {
		t.Fatal(err)
	}
	if created {
		t.Error("second LoadOrCreate created a key")
	}
	if skey2 != skey1 {
		t.Error("second LoadOrCreate returned a different key")
	}
	skey3, err := keyfile.Load(dir, "log1")
	if err != nil || skey3 != skey1 {
		t.Errorf("Load = different key or error %v", err)
	}
	// Another log in the same dir gets its own key.
	other, created, err := keyfile.LoadOrCreate(dir, "log2", "example.com/log2")
	if err != nil || !created || other == skey1 {
		t.Errorf("LoadOrCreate(log2) = created %v, err %v, same key %v", created, err, other == skey1)
	}
}

func TestLoadMissing(t *testing.T) {
	dir := t.TempDir()
	for _, d := range []string{dir, filepath.Join(dir, "nonexistent")} {
		_, err := keyfile.Load(d, "log1")
		if !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("Load(%s) error = %v, want fs.ErrNotExist", d, err)
		}
	}
}

// writeKey writes content to dir/name.key with mode perm.
func writeKey(t *testing.T, dir, name, content string, perm os.FileMode) string {
	t.Helper()
	path := keyfile.Path(dir, name)
	if err := os.WriteFile(path, []byte(content), perm); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, perm); err != nil { // despite the umask
		t.Fatal(err)
	}
	return path
}

func newSkey(t *testing.T, name string) string {
	t.Helper()
	skey, _, err := checkpoint.GenerateKey(name, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return skey
}

func TestPermissions(t *testing.T) {
	skey := newSkey(t, origin)
	tests := []struct {
		perm os.FileMode
		ok   bool
	}{
		{0o600, true},
		{0o400, true},
		{0o644, false},
		{0o640, false},
		{0o604, false},
		{0o660, false},
		{0o700, false},
		{0o666, false},
	}
	for _, tt := range tests {
		t.Run(tt.perm.String(), func(t *testing.T) {
			dir := t.TempDir()
			writeKey(t, dir, "log1", skey+"\n", tt.perm)
			for fn, load := range map[string]func() (string, error){
				"Load": func() (string, error) { return keyfile.Load(dir, "log1") },
				"LoadOrCreate": func() (string, error) {
					s, _, err := keyfile.LoadOrCreate(dir, "log1", origin)
					return s, err
				},
			} {
				got, err := load()
				if tt.ok {
					if err != nil || got != skey {
						t.Errorf("%s: err = %v, same key %v", fn, err, got == skey)
					}
					continue
				}
				if err == nil || !strings.Contains(err.Error(), "wider than 0600") {
					t.Errorf("%s: err = %v, want a permissions error", fn, err)
				}
				if strings.Contains(err.Error(), skey) {
					t.Errorf("%s: error leaks the key", fn)
				}
			}
			assertContent(t, dir, "log1", skey+"\n")
		})
	}
}

func assertContent(t *testing.T, dir, name, want string) {
	t.Helper()
	data, err := os.ReadFile(keyfile.Path(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	if string(data) != want {
		t.Errorf("key file was changed to %q", data)
	}
}

func TestWrongOrigin(t *testing.T) {
	dir := t.TempDir()
	skey := newSkey(t, "example.com/other")
	writeKey(t, dir, "log1", skey+"\n", 0o600)
	_, _, err := keyfile.LoadOrCreate(dir, "log1", origin)
	if err == nil || !strings.Contains(err.Error(), `holds a key named "example.com/other", not the log origin "example.com/log"`) {
		t.Errorf("LoadOrCreate error = %v, want an origin mismatch", err)
	}
	assertContent(t, dir, "log1", skey+"\n")
}

func TestMalformed(t *testing.T) {
	skey := newSkey(t, origin)
	vkey, err := checkpoint.VerifierKey(skey)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, content, want string
	}{
		{"empty", "", "does not end with a newline"},
		{"garbage", "garbage\n", "malformed"},
		{"no newline", skey, "does not end with a newline"},
		{"two newlines", skey + "\n\n", "more than one line"},
		{"CRLF", skey + "\r\n", "more than one line"},
		{"leading space", " " + skey + "\n", "malformed"},
		{"trailing space", skey + " \n", "malformed"},
		{"verifier key", vkey + "\n", "malformed"},
		{"two keys", skey + "\n" + skey + "\n", "more than one line"},
		{"corrupted key", skey[:len(skey)-5] + "AAAA=\n", "malformed"},
		{"huge", strings.Repeat("x", 1<<20) + "\n", "larger than 4096 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			writeKey(t, dir, "log1", tt.content, 0o600)
			if _, err := keyfile.Load(dir, "log1"); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Load error = %v, want one containing %q", err, tt.want)
			}
			_, _, err := keyfile.LoadOrCreate(dir, "log1", origin)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("LoadOrCreate error = %v, want one containing %q", err, tt.want)
			}
			if err != nil && strings.Contains(err.Error(), skey[len(skey)-20:]) {
				t.Errorf("error leaks key material: %v", err)
			}
			assertContent(t, dir, "log1", tt.content)
		})
	}
}

func TestNotRegularFile(t *testing.T) {
	dir := t.TempDir()
	if err := os.Mkdir(keyfile.Path(dir, "log1"), 0o700); err != nil {
		t.Fatal(err)
	}
	if _, _, err := keyfile.LoadOrCreate(dir, "log1", origin); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("LoadOrCreate error = %v, want not a regular file", err)
	}
}

func TestInvalidOrigin(t *testing.T) {
	dir := t.TempDir()
	for _, o := range []string{"", "a b", "a+b"} {
		if _, _, err := keyfile.LoadOrCreate(dir, "log1", o); err == nil {
			t.Errorf("LoadOrCreate with origin %q succeeded", o)
		}
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("dir holds %v after failures", entries)
	}
}

func TestNames(t *testing.T) {
	tests := []struct {
		name string
		ok   bool
	}{
		{"a", true},
		{"log-1_2.x", true},
		{"LOG", true},
		{strings.Repeat("a", 64), true},
		{"", false},
		{".", false},
		{"..", false},
		{".hidden", false},
		{"a/b", false},
		{"../x", false},
		{`a\b`, false},
		{"a b", false},
		{"a\x00b", false},
		{"ü", false},
		{"a:b", false},
		{strings.Repeat("a", 65), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			_, _, err := keyfile.LoadOrCreate(dir, tt.name, origin)
			if (err == nil) != tt.ok {
				t.Errorf("LoadOrCreate(%q) error = %v, want ok %v", tt.name, err, tt.ok)
			}
			_, err = keyfile.Load(dir, tt.name)
			if !tt.ok && (err == nil || errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), "log name")) {
				t.Errorf("Load(%q) error = %v, want a log name error", tt.name, err)
			}
			if !tt.ok {
				if entries, _ := os.ReadDir(dir); len(entries) != 0 {
					t.Errorf("dir holds %v after invalid name", entries)
				}
			}
		})
	}
}

// TestConcurrentCreate checks that racing creators agree on one key: the
// key file is never replaced once it exists.
func TestConcurrentCreate(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "keys")
	const n = 16
	var (
		wg      sync.WaitGroup
		keys    [n]string
		created [n]bool
		errs    [n]error
	)
	for i := range n {
		wg.Go(func() {
			keys[i], created[i], errs[i] = keyfile.LoadOrCreate(dir, "log1", origin)
		})
	}
	wg.Wait()
	nCreated := 0
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("LoadOrCreate %d: %v", i, errs[i])
		}
		if keys[i] != keys[0] {
			t.Errorf("LoadOrCreate %d returned a different key", i)
		}
		if created[i] {
			nCreated++
		}
	}
	if nCreated != 1 {
		t.Errorf("%d callers report creating the key, want 1", nCreated)
	}
	assertContent(t, dir, "log1", keys[0]+"\n")
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("dir holds %v, want only log1.key", entries)
	}
}
