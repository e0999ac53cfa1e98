package witness

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	fnote "github.com/transparency-dev/formats/note"
	"golang.org/x/mod/sumdb/note"
)

const cosignText = "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"

// TestCosignMatchesFormats signs with transparency-dev/formats' independent
// cosignature/v1 signer and with Cosigner at the same timestamp: Ed25519 is
// deterministic, so the signatures must be byte for byte equal.
func TestCosignMatchesFormats(t *testing.T) {
	skey, vkey, err := note.GenerateKey(rand.Reader, "witness.example.com/w1")
	if err != nil {
		t.Fatal(err)
	}
	c, err := NewCosigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	fs, err := fnote.NewSignerForCosignatureV1(skey)
	if err != nil {
		t.Fatal(err)
	}
	if fs.KeyHash() != c.KeyID() || fs.Name() != c.Name() {
		t.Fatalf("key %s %08x, formats %s %08x", c.Name(), c.KeyID(), fs.Name(), fs.KeyHash())
	}
	for _, text := range []string{cosignText, cosignText + "extension\n"} {
		want, err := fs.Sign([]byte(text))
		if err != nil {
			t.Fatal(err)
		}
		ts := binary.BigEndian.Uint64(want)
		line, err := c.Cosign([]byte(text), ts)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := base64.StdEncoding.DecodeString(strings.Fields(line)[2])
		if binary.BigEndian.Uint32(got) != c.KeyID() || string(got[4:]) != string(want) {
			t.Fatalf("Cosign = %x, formats signed %x", got[4:], want)
		}
	}

	// The signed message, rebuilt by hand from the spec.
	line, err := c.Cosign([]byte(cosignText), 1679315147)
	if err != nil {
		t.Fatal(err)
	}
	sig, _ := base64.StdEncoding.DecodeString(strings.Fields(line)[2])
	if len(sig) != 4+8+64 || binary.BigEndian.Uint64(sig[4:]) != 1679315147 {
		t.Fatalf("signature %x", sig)
	}
	pub, _ := base64.StdEncoding.DecodeString(strings.SplitN(vkey, "+", 3)[2])
	msg := "cosignature/v1\ntime 1679315147\n" + cosignText
	if !ed25519.Verify(pub[1:], []byte(msg), sig[12:]) {
		t.Fatal("signature does not verify over the spec's message")
	}
	h := sha256.Sum256(append([]byte("witness.example.com/w1\n\x04"), pub[1:]...))
	if binary.BigEndian.Uint32(h[:]) != c.KeyID() {
		t.Fatal("key ID is not SHA-256(name || \\n || 0x04 || key)[:4]")
	}

	// A changed timestamp breaks the signature.
	v, err := fnote.NewVerifierForCosignatureV1(c.VerifierKey())
	if err != nil {
		t.Fatal(err)
	}
	if !v.Verify([]byte(cosignText), sig[4:]) {
		t.Fatal("formats does not verify the cosignature")
	}
	binary.BigEndian.PutUint64(sig[4:], 1679315148)
	if v.Verify([]byte(cosignText), sig[4:]) {
		t.Fatal("formats verifies a cosignature with a changed timestamp")
	}
}

func TestCosignRefuses(t *testing.T) {
	c, _ := newTestCosigner(t, "w.example/1")
	for _, ts := range []uint64{0, math.MaxInt64 + 1, math.MaxUint64} {
		if _, err := c.Cosign([]byte(cosignText), ts); err == nil {
			t.Errorf("Cosign with timestamp %d succeeded", ts)
		}
	}
	if _, err := c.Cosign([]byte(strings.TrimSuffix(cosignText, "\n")), 1); err == nil {
		t.Error("Cosign of a text without final newline succeeded")
	}
}

func TestNewCosigner(t *testing.T) {
	skey, _, err := note.GenerateKey(rand.Reader, "w.example/1")
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.SplitN(skey, "+", 5)
	raw, _ := base64.StdEncoding.DecodeString(parts[4])
	pub := ed25519.NewKeyFromSeed(raw[1:]).Public().(ed25519.PublicKey)
	// The same seed as a cosignature/v1 (0x04) private key.
	cosigKey := fmt.Sprintf("PRIVATE+KEY+w.example/1+%08x+%s", keyID("w.example/1", 0x04, pub),
		base64.StdEncoding.EncodeToString(append([]byte{0x04}, raw[1:]...)))
	a, err := NewCosigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	b, err := NewCosigner(cosigKey)
	if err != nil {
		t.Fatal(err)
	}
	if a.VerifierKey() != b.VerifierKey() {
		t.Fatalf("0x01 and 0x04 forms of one key differ: %s, %s", a.VerifierKey(), b.VerifierKey())
	}
	for _, bad := range []string{
		"",
		strings.Replace(skey, "PRIVATE+KEY", "PRIVATE+KEX", 1),
		strings.Replace(skey, "+"+parts[3]+"+", "+00000000+", 1),
		strings.Replace(skey, "+"+parts[3]+"+", "+"+strings.ToUpper(parts[3])+"x+", 1),
		"PRIVATE+KEY+w.example/1+" + parts[3] + "+" + base64.StdEncoding.EncodeToString(append([]byte{0x02}, raw[1:]...)),
		"PRIVATE+KEY+w.example/1+" + parts[3] + "+" + base64.StdEncoding.EncodeToString(raw[:20]),
		"PRIVATE+KEY+w example/1+" + parts[3] + "+" + parts[4],
		"PRIVATE+KEY++" + parts[3] + "+" + parts[4],
	} {
		if _, err := NewCosigner(bad); err == nil {
			t.Errorf("NewCosigner(%q) succeeded", bad)
		}
	}
}

func TestOpenKeyFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "witness.key")
	if _, _, err := OpenKeyFile(path, ""); err == nil {
		t.Fatal("OpenKeyFile of a missing file without a name succeeded")
	}
	if _, _, err := OpenKeyFile(path, "bad name"); err == nil {
		t.Fatal("OpenKeyFile with an invalid name succeeded")
	}
	c, created, err := OpenKeyFile(path, "witness.example.com/w1")
	if err != nil || !created {
		t.Fatalf("OpenKeyFile: %v, created %v", err, created)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v (%v), want 0600", fi.Mode().Perm(), err)
	}
	for _, name := range []string{"", "witness.example.com/w1"} {
		c2, created, err := OpenKeyFile(path, name)
		if err != nil || created || c2.VerifierKey() != c.VerifierKey() {
			t.Fatalf("reopen with name %q: %v, created %v, %s", name, err, created, c2.VerifierKey())
		}
	}
	if _, _, err := OpenKeyFile(path, "witness.example.com/w2"); err == nil {
		t.Fatal("OpenKeyFile with another name succeeded")
	}
	os.WriteFile(filepath.Join(dir, "corrupt.key"), []byte("PRIVATE+KEY+x"), 0o600)
	if _, _, err := OpenKeyFile(filepath.Join(dir, "corrupt.key"), ""); err == nil {
		t.Fatal("OpenKeyFile of a corrupt file succeeded")
	}
}

func TestParseLogList(t *testing.T) {
	logs, err := ParseLogList(`# logs
example.com/a example.com/a+01234567+AAAA
  example.com/b	 example.com/b+01234567+BBBB  

example.com/with space k+01234567+CCCC
  # indented comment
example.com/a example.com/a+89abcdef+DDDD
`)
	if err != nil {
		t.Fatal(err)
	}
	want := []Log{
		{"example.com/a", []string{"example.com/a+01234567+AAAA"}},
		{"example.com/b", []string{"example.com/b+01234567+BBBB"}},
		{"example.com/with space", []string{"k+01234567+CCCC"}},
		{"example.com/a", []string{"example.com/a+89abcdef+DDDD"}},
	}
	if fmt.Sprint(logs) != fmt.Sprint(want) {
		t.Fatalf("got %v, want %v", logs, want)
	}
	if _, err := ParseLogList("justone\n"); err == nil {
		t.Fatal("a line without a key was accepted")
	}
}
