// Package checkpoint reads and writes C2SP tlog-checkpoints: the signed tree
// heads of a transparency log (https://c2sp.org/tlog-checkpoint).
//
// A checkpoint is a signed note (https://c2sp.org/signed-note) whose text is
// the log's origin, its tree size and its root hash, one per line, optionally
// followed by extension lines:
//
//	example.com/behind-the-sofa
//	20852163
//	CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=
//
//	— example.com/behind-the-sofa Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URYN7u5/Zhcyv2q1gGzGku9nTo+zyWE+xeMcTOAYQ8=
//
// [Parse] and [Checkpoint.Marshal] convert between a [Checkpoint] and a note
// text. [Sign] and [Open] add and check the log's Ed25519 signature; Open also
// checks, and hands back, signatures by other keys such as witness
// cosignatures. [GenerateKey], [NewSigner], [VerifierKey] and [NewVerifier]
// manage the log's Ed25519 note keys.
//
// Parse is strict: it accepts exactly the texts that Marshal produces, so a
// checkpoint has one encoding and two parties that agree on a Checkpoint
// agree on the bytes that were signed.
//
// The package is pure: no I/O, no logging, no global state.
package checkpoint

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"unicode/utf8"

	"github.com/tlog-dev/tlog/internal/text"
)

// HashSize is the size of a root hash in bytes (SHA-256, RFC 6962).
const HashSize = 32

// MaxBodySize is the largest note text, in bytes, that [Parse] accepts.
//
// A checkpoint without extension lines is about a hundred bytes; 64 KiB leaves
// ample room for extension lines (which the spec discourages) while bounding
// what a peer can make us parse.
const MaxBodySize = 64 << 10

// MaxNoteSize is the largest signed note, in bytes, that [Open] accepts: a body
// of [MaxBodySize] plus room for the signature lines. golang.org/x/mod/sumdb/note
// reads at most 100 signatures; 100 ML-DSA-44 cosignatures (the largest kind in
// use, about 3.3 KB each in base64) fit. Callers that read checkpoints from the
// network can use it to bound their reads.
const MaxNoteSize = 1 << 20

var (
	// ErrMalformed reports a checkpoint text (or signed note) that does not
	// follow the format. Every error returned by [Parse] wraps it.
	ErrMalformed = errors.New("malformed checkpoint")

	// ErrSignature reports a checkpoint that lacks a valid signature by the
	// log's key, or carries a signature by a known key that does not verify.
	ErrSignature = errors.New("checkpoint signature not verified")

	// ErrOrigin reports a checkpoint whose origin line is not the expected
	// one (the log's key name).
	ErrOrigin = errors.New("checkpoint origin mismatch")
)

// Checkpoint is the body of a C2SP tlog-checkpoint.
type Checkpoint struct {
	// Origin identifies the log; it is the first line of the note text.
	Origin string
	// Size is the number of leaves in the tree.
	Size uint64
	// Hash is the RFC 6962 Merkle tree hash of the first Size leaves.
	Hash [HashSize]byte
	// Extensions are optional extension lines, without newline. Parse
	// returns nil when there are none.
	Extensions []string
}

// Marshal returns the note text of c: the origin, the size in decimal, the
// hash in base64, and each extension line, each followed by a newline.
//
// Marshal does not check c; a Checkpoint whose origin or extensions are empty
// or contain newlines or other control characters yields text that [Parse]
// rejects or reads differently. [Sign] refuses such checkpoints.
func (c Checkpoint) Marshal() []byte {
	n := len(c.Origin) + 1 + 20 + 1 + base64.StdEncoding.EncodedLen(HashSize) + 1
	for _, e := range c.Extensions {
		n += len(e) + 1
	}
	b := make([]byte, 0, n)
	b = append(b, c.Origin...)
	b = append(b, '\n')
	b = strconv.AppendUint(b, c.Size, 10)
	b = append(b, '\n')
	b = base64.StdEncoding.AppendEncode(b, c.Hash[:])
	b = append(b, '\n')
	for _, e := range c.Extensions {
		b = append(b, e...)
		b = append(b, '\n')
	}
	return b
}

// Parse parses the text of a checkpoint note: the body only, without the
// blank line and the signatures that follow it in a signed note.
//
// Parse does not check any signature; use [Open] on notes from elsewhere.
//
// Parse is strict. The body must be valid UTF-8 without control characters
// other than newline (so no "\r"), at most [MaxBodySize] bytes, and end in a
// newline. It must have at least three lines, none of them empty: a non-empty
// origin; the size in ASCII decimal without sign or leading zeros that fits
// in a uint64; the hash in standard, padded, canonical base64 that decodes to
// exactly 32 bytes; then any extension lines. Parse accepts exactly what
// [Checkpoint.Marshal] produces: for every body Parse accepts,
// Marshal(Parse(body)) == body.
//
// Every error wraps [ErrMalformed] and says which line is wrong and why, as in
// `malformed checkpoint: line 2: size "01" has a leading zero`.
func Parse(body []byte) (Checkpoint, error) {
	if len(body) == 0 {
		return Checkpoint{}, malformed("empty body")
	}
	if len(body) > MaxBodySize {
		return Checkpoint{}, malformed("body is %d bytes, more than the limit of %d", len(body), MaxBodySize)
	}
	if err := checkText(body); err != nil {
		return Checkpoint{}, err
	}
	if body[len(body)-1] != '\n' {
		return Checkpoint{}, malformed("body does not end with a newline")
	}
	lines := bytes.Split(body[:len(body)-1], []byte("\n"))
	if len(lines) < 3 {
		return Checkpoint{}, malformed("body has only %d line(s), want at least 3 (origin, size, hash)", len(lines))
	}

	var c Checkpoint
	if len(lines[0]) == 0 {
		return Checkpoint{}, malformed("line 1: origin is empty")
	}
	c.Origin = string(lines[0])

	size, err := parseSize(lines[1])
	if err != nil {
		return Checkpoint{}, err
	}
	c.Size = size

	if err := parseHash(lines[2], &c.Hash); err != nil {
		return Checkpoint{}, err
	}

	for i, l := range lines[3:] {
		if len(l) == 0 {
			if i+1 < len(lines[3:]) && bytes.HasPrefix(lines[3+i+1], []byte("— ")) {
				return Checkpoint{}, malformed("line %d: empty line; is this a signed note? Parse takes only the note text, use Open", i+4)
			}
			return Checkpoint{}, malformed("line %d: empty line (extension lines must be non-empty)", i+4)
		}
		c.Extensions = append(c.Extensions, string(l))
	}
	return c, nil
}

// checkText reports the first invalid UTF-8 sequence or control character
// other than newline in b, naming its line.
func checkText(b []byte) error {
	if err := text.Check(b); err != nil {
		return fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	return nil
}

func parseSize(l []byte) (uint64, error) {
	if len(l) == 0 {
		return 0, malformed("line 2: size is empty")
	}
	for _, b := range l {
		if b < '0' || b > '9' {
			return 0, malformed("line 2: size %s is not a decimal number (only digits 0-9 allowed)", quote(l))
		}
	}
	if len(l) > 1 && l[0] == '0' {
		return 0, malformed("line 2: size %s has a leading zero", quote(l))
	}
	size, err := strconv.ParseUint(string(l), 10, 64)
	if err != nil {
		// Only digits, no leading zero: the sole possible failure is range.
		return 0, malformed("line 2: size %s does not fit in 64 bits", quote(l))
	}
	return size, nil
}

func parseHash(l []byte, h *[HashSize]byte) error {
	if len(l) == 0 {
		return malformed("line 3: hash is empty")
	}
	if want := base64.StdEncoding.EncodedLen(HashSize); len(l) != want {
		return malformed("line 3: hash %s is %d characters, want %d (base64 of %d bytes)", quote(l), len(l), want, HashSize)
	}
	// Strict rejects non-zero padding bits, so every accepted line is the
	// one encoding of its bytes. (Newlines, which the decoder skips, cannot
	// occur inside a line.)
	var buf [HashSize + 1]byte // DecodedLen(44) == 33
	n, err := base64.StdEncoding.Strict().Decode(buf[:], l)
	if err != nil {
		return malformed("line 3: hash %s is not canonical standard base64: %v", quote(l), err)
	}
	if n != HashSize {
		return malformed("line 3: hash %s decodes to %d bytes, want %d", quote(l), n, HashSize)
	}
	copy(h[:], buf[:n])
	return nil
}

// validate reports whether Marshal(c) is a body that Parse reads back as c.
func (c Checkpoint) validate() error {
	if err := checkLine("origin", c.Origin); err != nil {
		return err
	}
	for i, e := range c.Extensions {
		if err := checkLine(fmt.Sprintf("extension %d", i), e); err != nil {
			return err
		}
	}
	if n := len(c.Marshal()); n > MaxBodySize {
		return malformed("body is %d bytes, more than the limit of %d", n, MaxBodySize)
	}
	return nil
}

func checkLine(what, s string) error {
	if s == "" {
		return malformed("%s is empty", what)
	}
	if !utf8.ValidString(s) {
		return malformed("%s %s is not valid UTF-8", what, quote([]byte(s)))
	}
	for _, r := range s {
		if r < 0x20 {
			return malformed("%s %s contains control character %U", what, quote([]byte(s)), r)
		}
	}
	return nil
}

func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrMalformed}, args...)...)
}

// quote quotes b for an error message, cut short if long.
func quote(b []byte) string { return text.Quote(b) }
