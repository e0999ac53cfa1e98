package checkpoint_test

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"strings"
	"testing"

	"github.com/tlog-dev/tlog/pkg/checkpoint"
	fmtlog "github.com/transparency-dev/formats/log"
	fmtnote "github.com/transparency-dev/formats/note"
	"golang.org/x/mod/sumdb/note"
)

// specHash is the root hash of the example in c2sp.org/tlog-checkpoint.
const specHash = "CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I="

func mustHash(t testing.TB, s string) [32]byte {
	t.Helper()
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil || len(b) != 32 {
		t.Fatalf("bad test hash %q: %v", s, err)
	}
	return [32]byte(b)
}

func TestMarshalParseRoundTrip(t *testing.T) {
	h := mustHash(t, specHash)
	tests := []struct {
		name string
		body string
		want checkpoint.Checkpoint
	}{
		{
			name: "spec example",
			body: "example.com/behind-the-sofa\n20852163\n" + specHash + "\n",
			want: checkpoint.Checkpoint{Origin: "example.com/behind-the-sofa", Size: 20852163, Hash: h},
		},
		{
			name: "empty tree",
			body: "example.com/log\n0\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n",
			want: checkpoint.Checkpoint{Origin: "example.com/log", Size: 0},
		},
		{
			name: "max size",
			body: "example.com/log\n18446744073709551615\n" + specHash + "\n",
			want: checkpoint.Checkpoint{Origin: "example.com/log", Size: 1<<64 - 1, Hash: h},
		},
		{
			name: "extensions",
			body: "example.com/log\n5\n" + specHash + "\nfoo bar\n— not a signature\n",
			want: checkpoint.Checkpoint{Origin: "example.com/log", Size: 5, Hash: h, Extensions: []string{"foo bar", "— not a signature"}},
		},
		{
			name: "unicode origin",
			body: "例え.jp/ログ\n1\n" + specHash + "\n",
			want: checkpoint.Checkpoint{Origin: "例え.jp/ログ", Size: 1, Hash: h},
		},
		{
			// The spec only recommends that origins have no spaces and
			// says clients must not assume it.
			name: "origin with spaces",
			body: " my log \n1\n" + specHash + "\n",
			want: checkpoint.Checkpoint{Origin: " my log ", Size: 1, Hash: h},
		},
		{
			name: "all-ones hash",
			body: "o\n42\n//////////////////////////////////////////8=\n",
			want: checkpoint.Checkpoint{Origin: "o", Size: 42, Hash: [32]byte(bytes.Repeat([]byte{0xff}, 32))},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := checkpoint.Parse([]byte(tt.body))
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if !equal(got, tt.want) {
				t.Errorf("Parse = %+v, want %+v", got, tt.want)
			}
			if m := string(got.Marshal()); m != tt.body {
				t.Errorf("Marshal(Parse(body)) = %q, want %q", m, tt.body)
			}
			if m := string(tt.want.Marshal()); m != tt.body {
				t.Errorf("Marshal(want) = %q, want %q", m, tt.body)
			}

			// Independent parser: transparency-dev/formats.
			var fc fmtlog.Checkpoint
			rest, err := fc.Unmarshal([]byte(tt.body))
			if err != nil {
				t.Fatalf("formats Unmarshal: %v", err)
			}
			if fc.Origin != got.Origin || fc.Size != got.Size || !bytes.Equal(fc.Hash, got.Hash[:]) {
				t.Errorf("formats parsed %+v, we parsed %+v", fc, got)
			}
			var ext string
			for _, e := range got.Extensions {
				ext += e + "\n"
			}
			if string(rest) != ext {
				t.Errorf("formats rest = %q, want %q", rest, ext)
			}
		})
	}
}

func equal(a, b checkpoint.Checkpoint) bool {
	if a.Origin != b.Origin || a.Size != b.Size || a.Hash != b.Hash || len(a.Extensions) != len(b.Extensions) {
		return false
	}
	for i := range a.Extensions {
		if a.Extensions[i] != b.Extensions[i] {
			return false
		}
	}
	return true
}

func TestParseMalformed(t *testing.T) {
	const h = specHash
	tests := []struct {
		name string
		body string
		want string // fragment of the error message
	}{
		{"empty", "", "malformed checkpoint: empty body"},
		{"too large", "o\n1\n" + h + "\n" + strings.Repeat("x", checkpoint.MaxBodySize) + "\n", "more than the limit of 65536"},
		{"no final newline", "o\n1\n" + h, "body does not end with a newline"},
		{"only newline", "\n", "body has only 1 line(s), want at least 3"},
		{"two lines", "o\n1\n", "body has only 2 line(s), want at least 3"},
		{"empty origin", "\n1\n" + h + "\n", "line 1: origin is empty"},
		{"empty size", "o\n\n" + h + "\n", "line 2: size is empty"},
		{"leading zero", "o\n01\n" + h + "\n", `line 2: size "01" has a leading zero`},
		{"double zero", "o\n00\n" + h + "\n", `line 2: size "00" has a leading zero`},
		{"plus sign", "o\n+1\n" + h + "\n", `line 2: size "+1" is not a decimal number`},
		{"minus sign", "o\n-1\n" + h + "\n", `line 2: size "-1" is not a decimal number`},
		{"leading space", "o\n 1\n" + h + "\n", `line 2: size " 1" is not a decimal number`},
		{"trailing space", "o\n1 \n" + h + "\n", `line 2: size "1 " is not a decimal number`},
		{"exponent", "o\n1e3\n" + h + "\n", `line 2: size "1e3" is not a decimal number`},
		{"hex", "o\n0x10\n" + h + "\n", `line 2: size "0x10" is not a decimal number`},
		{"underscore", "o\n1_000\n" + h + "\n", `line 2: size "1_000" is not a decimal number`},
		{"non-ASCII digit", "o\n١\n" + h + "\n", `line 2: size "١" is not a decimal number`},
		{"overflow", "o\n18446744073709551616\n" + h + "\n", `line 2: size "18446744073709551616" does not fit in 64 bits`},
		{"huge", "o\n" + strings.Repeat("9", 100) + "\n" + h + "\n", `does not fit in 64 bits`},
		{"empty hash", "o\n1\n\n", "line 3: hash is empty"},
		{"unpadded hash", "o\n1\n" + strings.TrimRight(h, "=") + "\n", `line 3: hash "` + h[:43] + `" is 43 characters, want 44`},
		{"hash too long", "o\n1\n" + h + "AAAA\n", "is 48 characters, want 44"},
		{"url alphabet", "o\n1\n" + strings.NewReplacer("+", "-", "/", "_").Replace(h) + "\n", "line 3: hash \"CsUYapGGPo4dkMgIAUqom_Xajj7h2fB2MPA3j2jxq2I=\" is not canonical standard base64"},
		{"non-canonical padding bits", "o\n1\n" + h[:42] + "J=\n", "is not canonical standard base64"},
		{"31-byte hash", "o\n1\n" + base64.StdEncoding.EncodeToString(make([]byte, 31)) + "\n", "decodes to 31 bytes, want 32"},
		{"33-byte hash", "o\n1\n" + base64.StdEncoding.EncodeToString(make([]byte, 33)) + "\n", "decodes to 33 bytes, want 32"},
		{"hash with space", "o\n1\n" + h[:20] + " " + h[21:] + "\n", "is not canonical standard base64"},
		{"trailing blank line", "o\n1\n" + h + "\n\n", "line 4: empty line"},
		{"blank line between extensions", "o\n1\n" + h + "\na\n\nb\n", "line 5: empty line (extension lines must be non-empty)"},
		{"signed note", "o\n1\n" + h + "\n\n— o AAAA\n", "line 4: empty line; is this a signed note?"},
		{"CRLF origin", "o\r\n1\n" + h + "\n", "line 1: contains a carriage return (U+000D)"},
		{"CRLF size", "o\n1\r\n" + h + "\n", "line 2: contains a carriage return"},
		{"CRLF hash", "o\n1\n" + h + "\r\n", "line 3: contains a carriage return"},
		{"CR in extension", "o\n1\n" + h + "\na\rb\n", "line 4: contains a carriage return"},
		{"tab", "o\n1\n" + h + "\na\tb\n", "line 4: contains control character U+0009"},
		{"NUL", "o\x00\n1\n" + h + "\n", "line 1: contains control character U+0000"},
		{"invalid UTF-8", "o\xff\n1\n" + h + "\n", "line 1: invalid UTF-8"},
		{"truncated UTF-8", "o\n1\n" + h + "\n\xe4\xbe\n", "line 4: invalid UTF-8"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := checkpoint.Parse([]byte(tt.body))
			if err == nil {
				t.Fatalf("Parse(%q) = %+v, want error", tt.body, c)
			}
			if !errors.Is(err, checkpoint.ErrMalformed) {
				t.Errorf("error %v does not wrap ErrMalformed", err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not contain %q", err, tt.want)
			}
			if !strings.HasPrefix(err.Error(), "malformed checkpoint: ") {
				t.Errorf("error %q does not start with %q", err, "malformed checkpoint: ")
			}
		})
	}
}

func TestParseErrorTruncatesLongValues(t *testing.T) {
	_, err := checkpoint.Parse([]byte("o\n" + strings.Repeat("1", 10000) + "x\n" + specHash + "\n"))
	if err == nil || len(err.Error()) > 200 {
		t.Errorf("error = %q (%d bytes), want a short error", err, len(err.Error()))
	}
}

// newKey returns a fresh Ed25519 key pair for origin.
func newKey(t testing.TB, origin string) (note.Signer, note.Verifier, string, string) {
	t.Helper()
	skey, vkey, err := checkpoint.GenerateKey(origin, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s, err := checkpoint.NewSigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	v, err := checkpoint.NewVerifier(vkey)
	if err != nil {
		t.Fatal(err)
	}
	return s, v, skey, vkey
}

func TestSignOpen(t *testing.T) {
	const origin = "example.com/log"
	s, v, _, _ := newKey(t, origin)
	h := mustHash(t, specHash)
	for _, c := range []checkpoint.Checkpoint{
		{Origin: origin, Size: 0},
		{Origin: origin, Size: 20852163, Hash: h},
		{Origin: origin, Size: 1<<64 - 1, Hash: h, Extensions: []string{"ext one", "ext two"}},
	} {
		signed, err := checkpoint.Sign(c, s)
		if err != nil {
			t.Fatalf("Sign(%+v): %v", c, err)
		}
		if !bytes.HasPrefix(signed, c.Marshal()) {
			t.Errorf("signed note %q does not start with the body", signed)
		}
		got, n, err := checkpoint.Open(signed, v)
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		if !equal(got, c) {
			t.Errorf("Open = %+v, want %+v", got, c)
		}
		if n == nil || len(n.Sigs) != 1 || n.Sigs[0].Name != origin || n.Sigs[0].Hash != v.KeyHash() {
			t.Errorf("Open note = %+v, want one signature by %s", n, origin)
		}
		if n.Text != string(c.Marshal()) {
			t.Errorf("note text = %q, want %q", n.Text, c.Marshal())
		}
	}
}

func TestSignRejects(t *testing.T) {
	const origin = "example.com/log"
	s, _, _, _ := newKey(t, origin)
	tests := []struct {
		name string
		c    checkpoint.Checkpoint
		want error
	}{
		{"signer name differs", checkpoint.Checkpoint{Origin: "example.com/other", Size: 1}, checkpoint.ErrOrigin},
		{"empty origin", checkpoint.Checkpoint{Origin: "", Size: 1}, checkpoint.ErrMalformed},
		{"newline in origin", checkpoint.Checkpoint{Origin: origin + "\n1", Size: 1}, checkpoint.ErrMalformed},
		{"CR in origin", checkpoint.Checkpoint{Origin: origin + "\r", Size: 1}, checkpoint.ErrMalformed},
		{"invalid UTF-8 origin", checkpoint.Checkpoint{Origin: origin + "\xff", Size: 1}, checkpoint.ErrMalformed},
		{"empty extension", checkpoint.Checkpoint{Origin: origin, Size: 1, Extensions: []string{""}}, checkpoint.ErrMalformed},
		{"newline in extension", checkpoint.Checkpoint{Origin: origin, Size: 1, Extensions: []string{"a\n\n— x y"}}, checkpoint.ErrMalformed},
		{"too large", checkpoint.Checkpoint{Origin: origin, Size: 1, Extensions: []string{strings.Repeat("x", checkpoint.MaxBodySize)}}, checkpoint.ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			signed, err := checkpoint.Sign(tt.c, s)
			if !errors.Is(err, tt.want) {
				t.Errorf("Sign = %q, %v; want error wrapping %v", signed, err, tt.want)
			}
		})
	}
	if _, err := checkpoint.Sign(checkpoint.Checkpoint{Origin: origin}, nil); err == nil {
		t.Error("Sign with nil signer succeeded")
	}
}

// signRaw signs an arbitrary text, bypassing Sign's checks.
func signRaw(t testing.TB, text string, signers ...note.Signer) []byte {
	t.Helper()
	signed, err := note.Sign(&note.Note{Text: text}, signers...)
	if err != nil {
		t.Fatal(err)
	}
	return signed
}

func TestOpenErrors(t *testing.T) {
	const origin = "example.com/log"
	logS, logV, _, _ := newKey(t, origin)
	_, sameNameV, _, _ := newKey(t, origin) // another key with the log's name
	otherS, otherV, _, _ := newKey(t, "example.com/other")
	wS, wV := newWitness(t, "witness.example/w1")

	c := checkpoint.Checkpoint{Origin: origin, Size: 7, Hash: mustHash(t, specHash)}
	body := string(c.Marshal())
	good, err := checkpoint.Sign(c, logS)
	if err != nil {
		t.Fatal(err)
	}
	tampered := bytes.Replace(good, []byte("\n7\n"), []byte("\n8\n"), 1)
	lines := strings.SplitAfter(string(good), "\n")
	sigLine := lines[len(lines)-2]
	sigB64 := strings.TrimSuffix(sigLine[strings.LastIndex(sigLine, " ")+1:], "\n")
	raw, _ := base64.StdEncoding.DecodeString(sigB64)
	raw[10] ^= 1
	flipped := strings.Replace(string(good), sigB64, base64.StdEncoding.EncodeToString(raw), 1)

	witnessOnly := signRaw(t, body, wS)
	badWitness := func() []byte {
		// Log signature good, witness signature over a different text.
		other := signRaw(t, string(checkpoint.Checkpoint{Origin: origin, Size: 8}.Marshal()), wS)
		i := bytes.LastIndex(other, []byte("\n\n"))
		return append(append([]byte{}, good...), other[i+2:]...)
	}()

	tests := []struct {
		name   string
		signed []byte
		v      note.Verifier
		others []note.Verifier
		want   error // nil: an error wrapping none of the sentinels
		frag   string
	}{
		{"wrong key, same name", good, sameNameV, nil, checkpoint.ErrSignature, "no signature by log key"},
		{"wrong key, other name", good, otherV, nil, checkpoint.ErrSignature, "no signature by log key"},
		{"tampered text", tampered, logV, nil, checkpoint.ErrSignature, "invalid signature"},
		{"tampered signature", []byte(flipped), logV, nil, checkpoint.ErrSignature, "invalid signature"},
		{"unsigned body", []byte(body), logV, nil, checkpoint.ErrSignature, "no signature lines"},
		{"blank line, no signatures", []byte(body + "\n"), logV, nil, checkpoint.ErrSignature, "no signature lines"},
		{"only witness signed", witnessOnly, logV, []note.Verifier{wV}, checkpoint.ErrSignature, "only by other known keys"},
		{"bad witness signature", badWitness, logV, []note.Verifier{wV}, checkpoint.ErrSignature, "invalid signature"},
		{"origin mismatch", signRaw(t, "example.com/other\n7\n"+specHash+"\n", logS), logV, nil, checkpoint.ErrOrigin, `origin "example.com/other", want the log key name "example.com/log"`},
		{"origin mismatch, other key", signRaw(t, body, otherS), otherV, nil, checkpoint.ErrOrigin, "origin"},
		{"malformed body", signRaw(t, "example.com/log\n07\n"+specHash+"\n", logS), logV, nil, checkpoint.ErrMalformed, `line 2: size "07" has a leading zero`},
		{"body without hash", signRaw(t, "example.com/log\n7\n", logS), logV, nil, checkpoint.ErrMalformed, "at least 3"},
		{"garbage signature line", []byte(body + "\n— example.com/log !!!\n"), logV, nil, checkpoint.ErrMalformed, "malformed note"},
		{"CR in note", append([]byte("\r"), good...), logV, nil, checkpoint.ErrMalformed, "malformed note"},
		{"too large", append(bytes.Repeat([]byte("x"), checkpoint.MaxNoteSize), good...), logV, nil, checkpoint.ErrMalformed, "more than the limit"},
		{"duplicate verifiers", good, logV, []note.Verifier{logV}, nil, "two verifiers"},
		{"nil verifier", good, nil, nil, nil, "nil verifier"},
		{"nil other verifier", good, logV, []note.Verifier{nil}, nil, "nil verifier"},
	}
	sentinels := []error{checkpoint.ErrMalformed, checkpoint.ErrSignature, checkpoint.ErrOrigin}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, n, err := checkpoint.Open(tt.signed, tt.v, tt.others...)
			if err == nil {
				t.Fatalf("Open = %+v, want error", c)
			}
			if n != nil || !equal(c, checkpoint.Checkpoint{}) {
				t.Errorf("Open returned %+v, %+v with error", c, n)
			}
			for _, s := range sentinels {
				if errors.Is(err, s) != (s == tt.want) {
					t.Errorf("Open error %q: errors.Is(%v) = %v", err, s, !(s == tt.want))
				}
			}
			if !strings.Contains(err.Error(), tt.frag) {
				t.Errorf("Open error %q does not contain %q", err, tt.frag)
			}
		})
	}

	t.Run("wraps note errors", func(t *testing.T) {
		_, _, err := checkpoint.Open(tampered, logV)
		var invalid *note.InvalidSignatureError
		if !errors.As(err, &invalid) {
			t.Errorf("error %v does not wrap *note.InvalidSignatureError", err)
		}
		_, _, err = checkpoint.Open(good, otherV)
		var unverified *note.UnverifiedNoteError
		if !errors.As(err, &unverified) {
			t.Errorf("error %v does not wrap *note.UnverifiedNoteError", err)
		}
	})
}

// newWitness returns an Ed25519 cosignature/v1 signer and verifier, as a
// C2SP witness uses.
func newWitness(t testing.TB, name string) (note.Signer, note.Verifier) {
	t.Helper()
	skey, _, err := note.GenerateKey(rand.Reader, name)
	if err != nil {
		t.Fatal(err)
	}
	s, err := fmtnote.NewSignerForCosignatureV1(skey)
	if err != nil {
		t.Fatal(err)
	}
	return s, s.Verifier()
}

func TestOpenWitnessCosignatures(t *testing.T) {
	const origin = "example.com/log"
	logS, logV, _, _ := newKey(t, origin)
	w1S, w1V := newWitness(t, "witness.example/w1")
	w2S, _ := newWitness(t, "witness.example/w2") // unknown to the client
	c := checkpoint.Checkpoint{Origin: origin, Size: 3, Hash: mustHash(t, specHash)}
	signed, err := checkpoint.Sign(c, logS)
	if err != nil {
		t.Fatal(err)
	}
	_, n, err := checkpoint.Open(signed, logV)
	if err != nil {
		t.Fatal(err)
	}
	cosigned, err := note.Sign(n, w1S, w2S)
	if err != nil {
		t.Fatal(err)
	}

	got, n, err := checkpoint.Open(cosigned, logV, w1V)
	if err != nil {
		t.Fatalf("Open with witness: %v", err)
	}
	if !equal(got, c) {
		t.Errorf("Open = %+v, want %+v", got, c)
	}
	if len(n.Sigs) != 2 || len(n.UnverifiedSigs) != 1 || n.UnverifiedSigs[0].Name != "witness.example/w2" {
		t.Errorf("Sigs = %+v, UnverifiedSigs = %+v; want log and w1 verified, w2 unverified", n.Sigs, n.UnverifiedSigs)
	}

	// Without witness verifiers, cosignatures are just unknown signatures.
	_, n, err = checkpoint.Open(cosigned, logV)
	if err != nil {
		t.Fatalf("Open without witness: %v", err)
	}
	if len(n.Sigs) != 1 || len(n.UnverifiedSigs) != 2 {
		t.Errorf("Sigs = %+v, UnverifiedSigs = %+v; want 1 and 2", n.Sigs, n.UnverifiedSigs)
	}
}

// TestCrossCheck checks that checkpoints we sign are read by independent
// implementations: transparency-dev/formats and golang.org/x/mod/sumdb/note,
// each with its own parsing of our verifier key.
func TestCrossCheck(t *testing.T) {
	const origin = "example.com/log"
	s, _, _, vkey := newKey(t, origin)
	c := checkpoint.Checkpoint{Origin: origin, Size: 20852163, Hash: mustHash(t, specHash), Extensions: []string{"x"}}
	signed, err := checkpoint.Sign(c, s)
	if err != nil {
		t.Fatal(err)
	}

	xv, err := note.NewVerifier(vkey)
	if err != nil {
		t.Fatalf("x/mod NewVerifier(%q): %v", vkey, err)
	}
	n, err := note.Open(signed, note.VerifierList(xv))
	if err != nil {
		t.Fatalf("x/mod note.Open: %v", err)
	}
	if n.Text != string(c.Marshal()) {
		t.Errorf("x/mod note text = %q", n.Text)
	}

	fv, err := fmtnote.NewVerifier(vkey)
	if err != nil {
		t.Fatalf("formats NewVerifier: %v", err)
	}
	fc, rest, _, err := fmtlog.ParseCheckpoint(signed, origin, fv)
	if err != nil {
		t.Fatalf("formats ParseCheckpoint: %v", err)
	}
	if fc.Origin != c.Origin || fc.Size != c.Size || !bytes.Equal(fc.Hash, c.Hash[:]) || string(rest) != "x\n" {
		t.Errorf("formats ParseCheckpoint = %+v, %q", fc, rest)
	}
}

// TestIndependence checks our key parsing and Ed25519 signer and verifier
// against golang.org/x/mod/sumdb/note, in both directions.
func TestIndependence(t *testing.T) {
	const origin = "example.com/log"
	skey, vkey, err := note.GenerateKey(rand.Reader, origin)
	if err != nil {
		t.Fatal(err)
	}
	xs, err := note.NewSigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	xv, err := note.NewVerifier(vkey)
	if err != nil {
		t.Fatal(err)
	}
	ours, err := checkpoint.NewVerifier(vkey)
	if err != nil {
		t.Fatal(err)
	}
	oursS, err := checkpoint.NewSigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	if ours.Name() != xv.Name() || ours.KeyHash() != xv.KeyHash() || oursS.KeyHash() != xs.KeyHash() {
		t.Errorf("key IDs differ: ours %08x/%08x, x/mod %08x/%08x", ours.KeyHash(), oursS.KeyHash(), xv.KeyHash(), xs.KeyHash())
	}
	c := checkpoint.Checkpoint{Origin: origin, Size: 9, Hash: mustHash(t, specHash)}

	// x/mod signs, we verify.
	signed := signRaw(t, string(c.Marshal()), xs)
	got, _, err := checkpoint.Open(signed, ours)
	if err != nil {
		t.Fatalf("Open of x/mod-signed note: %v", err)
	}
	if !equal(got, c) {
		t.Errorf("Open = %+v, want %+v", got, c)
	}

	// We sign, x/mod verifies.
	signed, err = checkpoint.Sign(c, oursS)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := note.Open(signed, note.VerifierList(xv)); err != nil {
		t.Errorf("x/mod Open of our note: %v", err)
	}
}

// TestSpecExampleNote verifies the example of c2sp.org/signed-note with our
// verifier: a known answer from outside this package.
func TestSpecExampleNote(t *testing.T) {
	const vkey = "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k"
	const msg = "This is an example message.\n\n— example.com/foo Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2ONncAlTgK7Ztg1ERYNZXsYjOBH3mFXmRKuwHjG1Yu72IneyaQM=\n"
	v, err := checkpoint.NewVerifier(vkey)
	if err != nil {
		t.Fatal(err)
	}
	if v.KeyHash() != 0x530d903a {
		t.Errorf("KeyHash = %08x", v.KeyHash())
	}
	if _, err := note.Open([]byte(msg), note.VerifierList(v)); err != nil {
		t.Errorf("spec example does not verify: %v", err)
	}
	if _, err := note.Open([]byte(strings.Replace(msg, "example", "Example", 1)), note.VerifierList(v)); err == nil {
		t.Error("altered spec example verifies")
	}
}

func FuzzParse(f *testing.F) {
	h := specHash
	for _, s := range []string{
		"example.com/behind-the-sofa\n20852163\n" + h + "\n",
		"o\n0\n" + h + "\n",
		"o\n18446744073709551615\n" + h + "\n",
		"o\n18446744073709551616\n" + h + "\n",
		"o\n1\n" + h + "\next\n— y\n",
		"o\n01\n" + h + "\n",
		"o\n1\n" + strings.TrimRight(h, "=") + "\n",
		"o\n1\n" + h[:42] + "J=\n",
		"o\n1\n" + base64.StdEncoding.EncodeToString(make([]byte, 33)) + "\n",
		"o\n1\n" + h + "\n\n— o AAAA\n",
		"o\r\n1\n" + h + "\n",
		"例\n1\n" + h + "\n",
		"\xff\n1\n" + h + "\n",
		"",
		"\n",
		"\n\n\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		c, err := checkpoint.Parse(body)
		if err != nil {
			if !errors.Is(err, checkpoint.ErrMalformed) {
				t.Fatalf("Parse error %v does not wrap ErrMalformed", err)
			}
			return
		}
		if m := c.Marshal(); !bytes.Equal(m, body) {
			t.Fatalf("Parse(%q) = %+v, which marshals to %q", body, c, m)
		}
		if c.Extensions != nil && len(c.Extensions) == 0 {
			t.Fatalf("Parse(%q) returned empty non-nil Extensions", body)
		}
		// An independent parser agrees on everything we accept.
		var fc fmtlog.Checkpoint
		if _, err := fc.Unmarshal(body); err != nil {
			t.Fatalf("we accept %q, formats rejects it: %v", body, err)
		}
		if fc.Origin != c.Origin || fc.Size != c.Size || !bytes.Equal(fc.Hash, c.Hash[:]) {
			t.Fatalf("Parse(%q) = %+v, formats parses %+v", body, c, fc)
		}
	})
}

func FuzzOpen(f *testing.F) {
	const origin = "example.com/log"
	// A fixed key, so that the corpus stays meaningful across runs.
	skey, vkey, err := checkpoint.GenerateKey(origin, bytes.NewReader(make([]byte, 32)))
	if err != nil {
		f.Fatal(err)
	}
	s, err := checkpoint.NewSigner(skey)
	if err != nil {
		f.Fatal(err)
	}
	v, err := checkpoint.NewVerifier(vkey)
	if err != nil {
		f.Fatal(err)
	}
	wS, wV := newWitness(f, "witness.example/w1")
	c := checkpoint.Checkpoint{Origin: origin, Size: 5, Hash: mustHash(f, specHash)}
	good, err := checkpoint.Sign(c, s)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add(signRaw(f, string(c.Marshal()), s, wS))
	f.Add(signRaw(f, "example.com/log\n05\n"+specHash+"\n", s))
	f.Add(signRaw(f, "other\n5\n"+specHash+"\n", s))
	f.Add(c.Marshal())
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, signed []byte) {
		got, n, err := checkpoint.Open(signed, v, wV)
		if err != nil {
			if !errors.Is(err, checkpoint.ErrMalformed) && !errors.Is(err, checkpoint.ErrSignature) && !errors.Is(err, checkpoint.ErrOrigin) {
				t.Fatalf("Open error %v wraps no sentinel", err)
			}
			return
		}
		if got.Origin != origin || n == nil || n.Text != string(got.Marshal()) {
			t.Fatalf("Open(%q) = %+v, %+v", signed, got, n)
		}
	})
}
