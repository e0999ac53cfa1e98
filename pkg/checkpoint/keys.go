package checkpoint

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/mod/sumdb/note"
)

// algEd25519 is the signed-note signature type of Ed25519 signatures.
const algEd25519 = 0x01

// GenerateKey generates an Ed25519 note key pair for the log whose origin is
// origin, reading randomness from rand, and returns the private key string
// ("PRIVATE+KEY+<origin>+<key ID>+<base64 key>", to be kept secret) and the
// verifier key ("<origin>+<key ID>+<base64 key>", to be published).
//
// The origin becomes the key name, so it must be a valid note key name and
// checkpoint origin: non-empty UTF-8 without spaces, plus signs or control
// characters.
func GenerateKey(origin string, rand io.Reader) (skey, vkey string, err error) {
	if err := checkKeyName(origin); err != nil {
		return "", "", err
	}
	if rand == nil {
		return "", "", errors.New("checkpoint: nil random source")
	}
	skey, vkey, err = note.GenerateKey(rand, origin)
	if err != nil {
		return "", "", fmt.Errorf("checkpoint: generating key: %w", err)
	}
	return skey, vkey, nil
}

// NewSigner returns a note signer for the Ed25519 private key string skey, as
// produced by [GenerateKey] or golang.org/x/mod/sumdb/note.GenerateKey.
//
// The key is parsed by this package, not by golang.org/x/mod, and strictly:
// the key ID must be 8 lowercase hexadecimal digits that match the key, and
// the key material canonical base64 of 0x01 followed by a 32-byte seed.
func NewSigner(skey string) (note.Signer, error) {
	name, hash, priv, err := parsePrivateKey(skey)
	if err != nil {
		return nil, err
	}
	return &signer{name: name, hash: hash, key: priv}, nil
}

// VerifierKey returns the verifier key ("<name>+<key ID>+base64(0x01 ||
// public key)") of the Ed25519 private key string skey. For a pair from
// [GenerateKey] it returns the vkey that GenerateKey returned.
func VerifierKey(skey string) (string, error) {
	name, hash, priv, err := parsePrivateKey(skey)
	if err != nil {
		return "", err
	}
	return formatVerifierKey(name, hash, priv.Public().(ed25519.PublicKey)), nil
}

// NewVerifier returns a note verifier for the Ed25519 verifier key vkey
// ("<name>+<key ID>+base64(0x01 || public key)").
//
// The key is parsed by this package, not by golang.org/x/mod, and strictly,
// like [NewSigner]. Only Ed25519 (signature type 0x01) keys are supported.
func NewVerifier(vkey string) (note.Verifier, error) {
	name, rest, _ := strings.Cut(vkey, "+")
	hash16, key64, _ := strings.Cut(rest, "+")
	if err := checkKeyName(name); err != nil {
		return nil, fmt.Errorf("checkpoint: verifier key: %w", err)
	}
	hash, err := parseKeyID(hash16)
	if err != nil {
		return nil, fmt.Errorf("checkpoint: verifier key %s: %w", name, err)
	}
	key, err := parseKeyMaterial(key64)
	if err != nil {
		return nil, fmt.Errorf("checkpoint: verifier key %s: %w", name, err)
	}
	pub := ed25519.PublicKey(key)
	if want := keyID(name, pub); hash != want {
		return nil, fmt.Errorf("checkpoint: verifier key %s: key ID %08x does not match the key (want %08x)", name, hash, want)
	}
	return &verifier{name: name, hash: hash, key: pub}, nil
}

func parsePrivateKey(skey string) (name string, hash uint32, priv ed25519.PrivateKey, err error) {
	rest, ok := strings.CutPrefix(skey, "PRIVATE+KEY+")
	if !ok {
		return "", 0, nil, errors.New(`checkpoint: private key: does not start with "PRIVATE+KEY+"`)
	}
	name, rest, _ = strings.Cut(rest, "+")
	hash16, key64, _ := strings.Cut(rest, "+")
	// Errors quote nothing of skey but a well-formed key ID: in a malformed
	// key string (a missing field, a stray space) any field, the name
	// included, may be key material.
	if why := keyNameProblem(name); why != "" {
		return "", 0, nil, errors.New("checkpoint: private key: key name " + why)
	}
	hash, err = parseKeyID(hash16)
	if err != nil {
		return "", 0, nil, errors.New("checkpoint: private key: key ID is not 8 lowercase hexadecimal digits")
	}
	seed, err := parseKeyMaterial(key64)
	if err != nil {
		return "", 0, nil, errors.New("checkpoint: private key: malformed key material")
	}
	priv = ed25519.NewKeyFromSeed(seed)
	if want := keyID(name, priv.Public().(ed25519.PublicKey)); hash != want {
		return "", 0, nil, fmt.Errorf("checkpoint: private key: key ID %08x does not match the key and name (want %08x)", hash, want)
	}
	return name, hash, priv, nil
}

// parseKeyID parses a key ID: exactly 8 lowercase hexadecimal digits.
func parseKeyID(s string) (uint32, error) {
	if len(s) != 8 || strings.IndexFunc(s, func(r rune) bool {
		return (r < '0' || r > '9') && (r < 'a' || r > 'f')
	}) >= 0 {
		return 0, fmt.Errorf("key ID %q is not 8 lowercase hexadecimal digits", s)
	}
	h, err := strconv.ParseUint(s, 16, 32)
	if err != nil {
		return 0, fmt.Errorf("key ID %q: %w", s, err)
	}
	return uint32(h), nil
}

// parseKeyMaterial decodes canonical base64 of 0x01 followed by 32 bytes
// (an Ed25519 public key or seed) and returns the 32 bytes.
func parseKeyMaterial(s string) ([]byte, error) {
	const n = 1 + 32
	if len(s) != base64.StdEncoding.EncodedLen(n) {
		return nil, errors.New("key material is not base64 of 33 bytes")
	}
	b, err := base64.StdEncoding.Strict().DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("key material is not canonical base64: %w", err)
	}
	if len(b) != n {
		return nil, errors.New("key material is not base64 of 33 bytes")
	}
	if b[0] != algEd25519 {
		return nil, fmt.Errorf("key type 0x%02x is not Ed25519 (0x01)", b[0])
	}
	return b[1:], nil
}

// checkKeyName reports whether name is a valid note key name and
// checkpoint origin: non-empty valid UTF-8 with no Unicode spaces, no plus
// signs and no control characters.
func checkKeyName(name string) error {
	switch why := keyNameProblem(name); {
	case why == "":
		return nil
	case name == "":
		return errors.New("key name " + why)
	default:
		return fmt.Errorf("key name %q %s", name, why)
	}
}

// keyNameProblem says what makes name an invalid key name ("is empty",
// "contains a space", ...), or returns "" if it is valid.
func keyNameProblem(name string) string {
	switch {
	case name == "":
		return "is empty"
	case !utf8.ValidString(name):
		return "is not valid UTF-8"
	case strings.ContainsRune(name, '+'):
		return "contains a plus sign"
	case strings.IndexFunc(name, unicode.IsSpace) >= 0:
		return "contains a space"
	case strings.IndexFunc(name, unicode.IsControl) >= 0:
		return "contains a control character"
	}
	return ""
}

// keyID is SHA-256(name || "\n" || 0x01 || public key)[:4], big-endian.
func keyID(name string, pub ed25519.PublicKey) uint32 {
	h := sha256.New()
	h.Write([]byte(name))
	h.Write([]byte{'\n', algEd25519})
	h.Write(pub)
	return binary.BigEndian.Uint32(h.Sum(nil))
}

func formatVerifierKey(name string, hash uint32, pub ed25519.PublicKey) string {
	return fmt.Sprintf("%s+%08x+%s", name, hash, base64.StdEncoding.EncodeToString(append([]byte{algEd25519}, pub...)))
}

// signer is an Ed25519 note.Signer.
type signer struct {
	name string
	hash uint32
	key  ed25519.PrivateKey
}

func (s *signer) Name() string    { return s.name }
func (s *signer) KeyHash() uint32 { return s.hash }
func (s *signer) Sign(msg []byte) ([]byte, error) {
	return ed25519.Sign(s.key, msg), nil
}

// verifier is an Ed25519 note.Verifier.
type verifier struct {
	name string
	hash uint32
	key  ed25519.PublicKey
}

func (v *verifier) Name() string    { return v.name }
func (v *verifier) KeyHash() uint32 { return v.hash }
func (v *verifier) Verify(msg, sig []byte) bool {
	return len(sig) == ed25519.SignatureSize && ed25519.Verify(v.key, msg, sig)
}
