package witness

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Signature type identifier bytes from c2sp.org/signed-note.
const (
	algEd25519         = 0x01 // plain Ed25519 note signatures
	algCosignatureV1   = 0x04 // timestamped Ed25519 cosignatures (c2sp.org/tlog-cosignature)
	timestampSize      = 8
	cosignatureSigSize = timestampSize + ed25519.SignatureSize
)

// Cosigner makes Ed25519 cosignature/v1 signatures (c2sp.org/tlog-cosignature,
// signature type 0x04) on checkpoints.
//
// This is the witness's own implementation of the format, on purpose: tests
// check it against an independent one (transparency-dev/formats).
type Cosigner struct {
	name  string
	key   ed25519.PrivateKey
	keyID uint32
}

// NewCosigner returns a Cosigner for a note private key of the form
// "PRIVATE+KEY+<name>+<hex key ID>+<base64 key>", as written by
// golang.org/x/mod/sumdb/note.GenerateKey. The key material is an Ed25519 seed
// after the type byte 0x01 (a plain Ed25519 note key, whose key ID must match)
// or 0x04 (a cosignature/v1 key). Either way the Cosigner signs with type 0x04
// and the key ID of that type, so its verifier key (VerifierKey) differs from
// the plain Ed25519 vkey of the same key.
func NewCosigner(skey string) (*Cosigner, error) {
	errBad := errors.New("witness: malformed private key")
	parts := strings.SplitN(skey, "+", 5) // the base64 key may hold "+"
	if len(parts) != 5 || parts[0] != "PRIVATE" || parts[1] != "KEY" {
		return nil, errBad
	}
	name, idHex, b64 := parts[2], parts[3], parts[4]
	if !validKeyName(name) || len(idHex) != 8 {
		return nil, errBad
	}
	id, err := strconv.ParseUint(idHex, 16, 32)
	if err != nil {
		return nil, errBad
	}
	raw, err := base64.StdEncoding.Strict().DecodeString(b64)
	if err != nil || len(raw) != 1+ed25519.SeedSize {
		return nil, errBad
	}
	alg, seed := raw[0], raw[1:]
	if alg != algEd25519 && alg != algCosignatureV1 {
		return nil, fmt.Errorf("witness: private key type 0x%02x is not Ed25519 (0x01) or cosignature/v1 (0x04)", alg)
	}
	key := ed25519.NewKeyFromSeed(seed)
	pub := key.Public().(ed25519.PublicKey)
	if uint32(id) != keyID(name, alg, pub) {
		return nil, errors.New("witness: private key ID does not match its name and key")
	}
	return &Cosigner{name: name, key: key, keyID: keyID(name, algCosignatureV1, pub)}, nil
}

// Name returns the cosigner's key name, such as "witness.example.com/w1".
func (c *Cosigner) Name() string { return c.name }

// KeyID returns the cosignature/v1 key ID:
// SHA-256(name || "\n" || 0x04 || public key)[:4], big-endian.
func (c *Cosigner) KeyID() uint32 { return c.keyID }

// VerifierKey returns the cosigner's verifier key (vkey):
// "<name>+<hex key ID>+base64(0x04 || 32-byte Ed25519 public key)".
// Logs and clients configure the witness with it.
func (c *Cosigner) VerifierKey() string {
	pub := c.key.Public().(ed25519.PublicKey)
	return fmt.Sprintf("%s+%08x+%s", c.name, c.keyID,
		base64.StdEncoding.EncodeToString(append([]byte{algCosignatureV1}, pub...)))
}

// Cosign returns the note signature line ("— <name> <base64>\n") of a
// cosignature/v1 on text, the checkpoint note text including its final
// newline and without signatures, made at timestamp (POSIX seconds).
//
// The signed message is "cosignature/v1\ntime <timestamp>\n" followed by text;
// the signature is the 4-byte key ID, the 8-byte big-endian timestamp and the
// 64-byte Ed25519 signature. Cosign refuses a zero timestamp (the witness
// spec forbids it) and one beyond 2^63-1 (the cosignature spec does).
func (c *Cosigner) Cosign(text []byte, timestamp uint64) (string, error) {
	if timestamp == 0 || timestamp > math.MaxInt64 {
		return "", fmt.Errorf("witness: invalid cosignature timestamp %d", timestamp)
	}
	if len(text) == 0 || text[len(text)-1] != '\n' {
		return "", errors.New("witness: note text does not end in a newline")
	}
	msg := make([]byte, 0, 64+len(text))
	msg = append(msg, "cosignature/v1\ntime "...)
	msg = strconv.AppendUint(msg, timestamp, 10)
	msg = append(msg, '\n')
	msg = append(msg, text...)

	sig := make([]byte, 0, 4+cosignatureSigSize)
	sig = binary.BigEndian.AppendUint32(sig, c.keyID)
	sig = binary.BigEndian.AppendUint64(sig, timestamp)
	sig = append(sig, ed25519.Sign(c.key, msg)...)
	return "— " + c.name + " " + base64.StdEncoding.EncodeToString(sig) + "\n", nil
}

// keyID computes a note key ID: SHA-256(name || "\n" || alg || key)[:4].
func keyID(name string, alg byte, key []byte) uint32 {
	h := sha256.New()
	h.Write([]byte(name))
	h.Write([]byte{'\n', alg})
	h.Write(key)
	return binary.BigEndian.Uint32(h.Sum(nil))
}

// validKeyName reports whether name is a valid note key name: non-empty
// UTF-8 without Unicode spaces, plus signs or control characters.
func validKeyName(name string) bool {
	if name == "" || !utf8.ValidString(name) {
		return false
	}
	for _, r := range name {
		if unicode.IsSpace(r) || r == '+' || r < 0x20 {
			return false
		}
	}
	return true
}
