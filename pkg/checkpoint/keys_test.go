package checkpoint_test

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"strings"
	"testing"

	"github.com/tlog-dev/tlog/pkg/checkpoint"
	"golang.org/x/mod/sumdb/note"
)

func TestVerifierKeyMatchesGenerateKey(t *testing.T) {
	for i := range 20 {
		origin := "example.com/log" + strings.Repeat("x", i)
		skey, vkey, err := checkpoint.GenerateKey(origin, rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		got, err := checkpoint.VerifierKey(skey)
		if err != nil {
			t.Fatalf("VerifierKey: %v", err)
		}
		if got != vkey {
			t.Errorf("VerifierKey = %q, GenerateKey returned %q", got, vkey)
		}
		if !strings.HasPrefix(skey, "PRIVATE+KEY+"+origin+"+") || !strings.HasPrefix(vkey, origin+"+") {
			t.Errorf("keys %q / %q are not named %q", skey, vkey, origin)
		}
		// x/mod reads both keys and agrees on the key ID.
		xs, err := note.NewSigner(skey)
		if err != nil {
			t.Fatalf("x/mod NewSigner: %v", err)
		}
		xv, err := note.NewVerifier(vkey)
		if err != nil {
			t.Fatalf("x/mod NewVerifier: %v", err)
		}
		s, err := checkpoint.NewSigner(skey)
		if err != nil {
			t.Fatal(err)
		}
		if s.Name() != origin || s.KeyHash() != xs.KeyHash() || s.KeyHash() != xv.KeyHash() {
			t.Errorf("signer %s/%08x, x/mod %08x", s.Name(), s.KeyHash(), xs.KeyHash())
		}
	}
}

func TestGenerateKeyDeterministic(t *testing.T) {
	seed := bytes.Repeat([]byte{7}, 32)
	s1, v1, err := checkpoint.GenerateKey("o", bytes.NewReader(seed))
	if err != nil {
		t.Fatal(err)
	}
	s2, v2, err := note.GenerateKey(bytes.NewReader(seed), "o")
	if err != nil {
		t.Fatal(err)
	}
	if s1 != s2 || v1 != v2 {
		t.Errorf("GenerateKey = %q, %q; x/mod = %q, %q", s1, v1, s2, v2)
	}
}

func TestGenerateKeyErrors(t *testing.T) {
	for _, origin := range []string{"", "a b", "a+b", "a\nb", "a\tb", "a\x01b", "a\u00a0b", "\xff"} {
		t.Run(origin, func(t *testing.T) {
			if skey, _, err := checkpoint.GenerateKey(origin, rand.Reader); err == nil {
				t.Errorf("GenerateKey(%q) = %q, want error", origin, skey)
			}
		})
	}
	if _, _, err := checkpoint.GenerateKey("o", bytes.NewReader(nil)); err == nil {
		t.Error("GenerateKey with empty random source succeeded")
	}
	if _, _, err := checkpoint.GenerateKey("o", nil); err == nil {
		t.Error("GenerateKey with nil random source succeeded")
	}
}

func TestNewSignerErrors(t *testing.T) {
	skey, _, err := checkpoint.GenerateKey("example.com/log", rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.SplitN(skey, "+", 5) // PRIVATE, KEY, name, id, key
	id, key := parts[3], parts[4]
	raw, _ := base64.StdEncoding.DecodeString(key)
	cosig := append([]byte{0x04}, raw[1:]...)
	tests := []struct {
		name, skey, want string
	}{
		{"empty", "", "PRIVATE+KEY+"},
		{"vkey instead", "example.com/log+" + id + "+" + key, "PRIVATE+KEY+"},
		{"lowercase prefix", "private+key+example.com/log+" + id + "+" + key, "PRIVATE+KEY+"},
		{"empty name", "PRIVATE+KEY++" + id + "+" + key, "key name is empty"},
		{"name with space", "PRIVATE+KEY+a b+" + id + "+" + key, "contains a space"},
		{"other name", "PRIVATE+KEY+example.com/other+" + id + "+" + key, "does not match the key"},
		{"uppercase ID", "PRIVATE+KEY+example.com/log+" + "ABCDEF01+" + key, "not 8 lowercase hexadecimal digits"},
		{"short ID", "PRIVATE+KEY+example.com/log+" + id[:7] + "+" + key, "not 8 lowercase hexadecimal digits"},
		{"wrong ID", "PRIVATE+KEY+example.com/log+00000000+" + key, "does not match the key"},
		{"missing key", "PRIVATE+KEY+example.com/log+" + id, "malformed key material"},
		{"truncated key", "PRIVATE+KEY+example.com/log+" + id + "+" + key[:40], "malformed key material"},
		{"key with newline", "PRIVATE+KEY+example.com/log+" + id + "+" + key[:20] + "\n" + key[20:], "malformed key material"},
		{"cosignature key type", "PRIVATE+KEY+example.com/log+" + id + "+" + base64.StdEncoding.EncodeToString(cosig), "malformed key material"},
		{"trailing newline", skey + "\n", "malformed key material"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := checkpoint.NewSigner(tt.skey); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("NewSigner error = %v, want one containing %q", err, tt.want)
			}
			if _, err := checkpoint.VerifierKey(tt.skey); err == nil {
				t.Error("VerifierKey succeeded")
			}
			if err := func() error { _, err := checkpoint.NewSigner(tt.skey); return err }(); err != nil && strings.Contains(err.Error(), key[5:20]) {
				t.Errorf("error %q leaks key material", err)
			}
		})
	}
}

func TestNewVerifierErrors(t *testing.T) {
	_, vkey, err := checkpoint.GenerateKey("example.com/log", rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.SplitN(vkey, "+", 3)
	id, key := parts[1], parts[2]
	raw, _ := base64.StdEncoding.DecodeString(key)
	cosig := append([]byte{0x04}, raw[1:]...)
	tests := []struct {
		name, vkey, want string
	}{
		{"empty", "", "key name is empty"},
		{"no parts", "example.com/log", "key ID"},
		{"name with plus", "a+b+" + id + "+" + key, "key ID"},
		{"name with space", "a b+" + id + "+" + key, "contains a space"},
		{"other name", "example.com/other+" + id + "+" + key, "does not match the key"},
		{"uppercase ID", "example.com/log+ABCDEF01+" + key, "not 8 lowercase hexadecimal digits"},
		{"long ID", "example.com/log+" + id + "0+" + key, "not 8 lowercase hexadecimal digits"},
		{"wrong ID", "example.com/log+00000000+" + key, "does not match the key"},
		{"truncated key", "example.com/log+" + id + "+" + key[:40], "not base64 of 33 bytes"},
		{"key with newline", "example.com/log+" + id + "+" + key[:20] + "\n" + key[20:], "not base64 of 33 bytes"},
		{"key with bad character", "example.com/log+" + id + "+" + key[:20] + "*" + key[21:], "not canonical base64"},
		{"cosignature key type", "example.com/log+" + id + "+" + base64.StdEncoding.EncodeToString(cosig), "key type 0x04 is not Ed25519"},
		{"private key", "PRIVATE+KEY+example.com/log+" + id + "+" + key, "key ID"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := checkpoint.NewVerifier(tt.vkey); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("NewVerifier(%q) error = %v, want one containing %q", tt.vkey, err, tt.want)
			}
		})
	}
}

func TestVerifierRejectsBadSignatures(t *testing.T) {
	s, v, _, _ := newKey(t, "o")
	msg := []byte("hello\n")
	sig, err := s.Sign(msg)
	if err != nil {
		t.Fatal(err)
	}
	if !v.Verify(msg, sig) {
		t.Fatal("good signature rejected")
	}
	for name, bad := range map[string][]byte{
		"empty":     nil,
		"short":     sig[:63],
		"long":      append(append([]byte{}, sig...), 0),
		"flipped":   append([]byte{sig[0] ^ 1}, sig[1:]...),
		"other msg": nil,
	} {
		m := msg
		if name == "other msg" {
			m, bad = []byte("hullo\n"), sig
		}
		if v.Verify(m, bad) {
			t.Errorf("%s: bad signature accepted", name)
		}
	}
}

// fuzzSkey is a fixed private key. The key fuzz targets put its key material
// (base64 of 0x01 || seed, see fuzzSeed; it has no '+') wherever the input
// says "SEED", so that the fuzzer can misplace key material in every part of
// a key string.
var fuzzSkey, fuzzVkey = func() (string, string) {
	skey, vkey, err := checkpoint.GenerateKey("example.com/log", strings.NewReader("tlog: a key for fuzzing, public."))
	if err != nil {
		panic(err)
	}
	return skey, vkey
}()

func fuzzSeed() string { return fuzzSkey[strings.LastIndexByte(fuzzSkey, '+')+1:] }

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

// FuzzNewSigner checks the private key parser: no panic, no key material in
// errors, and every key it accepts is one x/mod accepts, with the same name
// and key ID, that signs what its verifier key verifies.
func FuzzNewSigner(f *testing.F) {
	seed := fuzzSeed()
	templ := strings.Replace(fuzzSkey, seed, "SEED", 1)
	for _, s := range []string{
		templ, "PRIVATE+KEY+SEED", "PRIVATE+KEY+example.com/log+SEED", "PRIVATE+KEY+SEED+SEED",
		"PRIVATE+KEY+ SEED", "PRIVATE+KEY+example.com/log+SEED+SEED", templ + "\n", "SEED", "",
		strings.Replace(templ, "+SEED", "+0000SEED", 1), strings.Replace(templ, "example.com/log", "a b", 1),
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		skey := strings.ReplaceAll(s, "SEED", seed)
		signer, err := checkpoint.NewSigner(skey)
		vkey, verr := checkpoint.VerifierKey(skey)
		if (err == nil) != (verr == nil) {
			t.Fatalf("NewSigner error %v, VerifierKey error %v", err, verr)
		}
		if err != nil {
			if strings.Contains(s, "SEED") && (leaks(err.Error(), seed) || leaks(verr.Error(), seed)) {
				t.Fatalf("error leaks key material:\n%v\n%v", err, verr)
			}
			return
		}
		xs, err := note.NewSigner(skey)
		if err != nil {
			t.Fatalf("accepted %q, which x/mod refuses: %v", skey, err)
		}
		if signer.Name() != xs.Name() || signer.KeyHash() != xs.KeyHash() {
			t.Fatalf("signer %s/%08x, x/mod %s/%08x", signer.Name(), signer.KeyHash(), xs.Name(), xs.KeyHash())
		}
		v, err := checkpoint.NewVerifier(vkey)
		if err != nil {
			t.Fatalf("verifier key %q of an accepted private key: %v", vkey, err)
		}
		msg := []byte("fuzz\n")
		sig, err := signer.Sign(msg)
		if err != nil || !v.Verify(msg, sig) {
			t.Fatalf("signature does not verify (%v)", err)
		}
	})
}

// FuzzNewVerifier checks the verifier key parser (verifier keys reach
// clients over the network, from GetLog and /logs): no panic, one encoding
// per key, and nothing x/mod refuses.
func FuzzNewVerifier(f *testing.F) {
	for _, s := range []string{
		fuzzVkey, fuzzVkey + "\n", "example.com/log", "example.com/log+00000000+", "a+b+c+d", "",
		strings.ToUpper(fuzzVkey), strings.TrimSuffix(fuzzVkey, "="), "PRIVATE+KEY+" + fuzzVkey,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, vkey string) {
		v, err := checkpoint.NewVerifier(vkey)
		if err != nil {
			return
		}
		if prefix := fmt.Sprintf("%s+%08x+", v.Name(), v.KeyHash()); !strings.HasPrefix(vkey, prefix) {
			t.Fatalf("parsed %q as %s", vkey, prefix)
		}
		xv, err := note.NewVerifier(vkey)
		if err != nil {
			t.Fatalf("accepted %q, which x/mod refuses: %v", vkey, err)
		}
		if v.Name() != xv.Name() || v.KeyHash() != xv.KeyHash() {
			t.Fatalf("verifier %s/%08x, x/mod %s/%08x", v.Name(), v.KeyHash(), xv.Name(), xv.KeyHash())
		}
	})
}
