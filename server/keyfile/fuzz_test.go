package keyfile_test

import (
	"os"
	"strings"
	"testing"

	"github.com/tlog-dev/tlog/pkg/checkpoint"
	"github.com/tlog-dev/tlog/server/keyfile"
)

// FuzzLoad checks the key file parser. The input is the file's content,
// with "SEED" replaced by the key material of a fixed key, so that the
// fuzzer can misplace key material anywhere. Load must not panic, must
// accept exactly one valid private key and a newline, and must never put
// key material in an error.
func FuzzLoad(f *testing.F) {
	skey, _, err := checkpoint.GenerateKey(origin, strings.NewReader("tlog: a key for fuzzing, public."))
	if err != nil {
		f.Fatal(err)
	}
	seed := skey[strings.LastIndexByte(skey, '+')+1:]
	templ := strings.Replace(skey, seed, "SEED", 1)
	for _, s := range []string{
		templ + "\n", templ, templ + "\r\n", templ + "\n\n", " " + templ + "\n", "PRIVATE+KEY+SEED\n",
		"PRIVATE+KEY+" + origin + "+SEED\n", "SEED\n", "\n", "", templ + "\n" + templ + "\n",
		strings.Replace(templ, origin, origin+" x", 1) + "\n",
	} {
		f.Add([]byte(s))
	}
	dir := f.TempDir()
	path := keyfile.Path(dir, "log1")
	f.Fuzz(func(t *testing.T, data []byte) {
		content := strings.ReplaceAll(string(data), "SEED", seed)
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		got, err := keyfile.Load(dir, "log1")
		if err != nil {
			if strings.Contains(string(data), "SEED") && leaks(err.Error(), seed) {
				t.Fatalf("error leaks key material: %v", err)
			}
			if _, serr := checkpoint.NewSigner(strings.TrimSuffix(content, "\n")); serr == nil && len(content) <= 4096 && strings.Count(content, "\n") == 1 && strings.HasSuffix(content, "\n") && !strings.Contains(content, "\r") {
				t.Fatalf("refused a valid key file: %v", err)
			}
			return
		}
		if content != got+"\n" {
			t.Fatalf("loaded %q from %q", got, content)
		}
		if _, err := checkpoint.NewSigner(got); err != nil {
			t.Fatalf("loaded a key NewSigner refuses: %v", err)
		}
	})
}

// leaks reports whether msg holds 12 or more consecutive characters of
// secret.
func leaks(msg, secret string) bool {
	for i := 0; i+12 <= len(secret); i++ {
		if strings.Contains(msg, secret[i:i+12]) {
			return true
		}
	}
	return false
}
