// Package receipt reads, writes and verifies C2SP tlog-proofs
// (https://c2sp.org/tlog-proof), here called receipts: self-contained,
// offline-verifiable proofs that an entry is in a transparency log, stored in
// files with the extension .tlog-proof.
//
// A receipt holds the entry's index, an RFC 6962 inclusion proof for it, and
// the log's signed checkpoint, optionally with witness cosignatures and with
// opaque extra data. Here is the receipt for entry 2 ("two") of a log of five
// entries, with the extra data "two.txt" and an (elided) witness cosignature:
//
//	c2sp.org/tlog-proof@v1
//	extra dHdvLnR4dA==
//	index 2
//	Zx8UbF5HHooag6PCFM5LqQe486WIjRTMjNPOdbsS75Q=
//	iiq+yu+Pz0GJ9OZMFdfUJhwUJRvf4oYcY90ek68bmUs=
//	9xWrP6pdBx5uKsS7mU1b9zWUPcw3mdoNCF55gM+5M2o=
//
//	example.com/log
//	5
//	ii7ViYyVMrUss8/JH3IOusEasWyEafEphOEB4JSXozA=
//
//	— example.com/log Hd5FMXgq9rPkZTkePX0Z988odF0g6VyxwtI/rrPiMn1aMNv9ZQGLFHcqXHztBTrntBNRTxrdqp32rEPk9v94Wy2hLgQ=
//	— witness.example/w1 ...
//
// [Parse] and [Receipt.Marshal] convert between a [Receipt] and this text.
// [Verify] checks a receipt against the entry's leaf hash and the log's and
// witnesses' keys.
//
// Parse is strict: Marshal gives back every document Parse accepts byte for
// byte, so a receipt has one encoding.
//
// The package is pure: no I/O, no logging, no global state.
package receipt

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"math/bits"
	"strconv"
	"strings"
	"unicode"

	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
	"golang.org/x/mod/sumdb/note"

	"github.com/tlog-dev/tlog/internal/text"
	"github.com/tlog-dev/tlog/pkg/checkpoint"
)

// header is the first line of every receipt.
const header = "c2sp.org/tlog-proof@v1"

// HashSize is the size of an inclusion proof hash in bytes (SHA-256).
const HashSize = 32

// MaxProofHashes is the most hashes an inclusion proof can have, and so the
// most proof lines [Parse] accepts: a tree of up to 2^64-1 leaves (the
// largest a checkpoint can describe) is 64 levels high.
const MaxProofHashes = 64

// MaxExtraSize is the largest extra data, in bytes before base64, that
// [Parse] accepts. The spec does not bound it; its uses (out-of-band context,
// data needed to recompute the leaf hash, such as a VRF proof) are small.
const MaxExtraSize = 64 << 10

// MaxSize is the largest document, in bytes, that [Parse] accepts: the
// longest header lines (header, extra data of [MaxExtraSize], the largest
// index, [MaxProofHashes] proof lines, the empty line) followed by a
// checkpoint note of [checkpoint.MaxNoteSize]. Callers that read receipts from
// files or the network can use it to bound their reads.
const MaxSize = maxPreambleSize + checkpoint.MaxNoteSize

const (
	b64HashLen      = (HashSize + 2) / 3 * 4 // 44
	maxPreambleSize = len(header) + 1 +
		len("extra ") + (MaxExtraSize+2)/3*4 + 1 +
		len("index 18446744073709551615") + 1 +
		MaxProofHashes*(b64HashLen+1) +
		1
)

var (
	// ErrMalformed reports a document that does not follow the tlog-proof
	// format. Every error returned by [Parse] wraps it.
	ErrMalformed = errors.New("malformed tlog-proof")

	// ErrInvalid reports a receipt whose inclusion proof does not prove
	// that the leaf is at its index in the tree of its checkpoint.
	ErrInvalid = errors.New("invalid tlog-proof")
)

// Receipt is a C2SP tlog-proof.
type Receipt struct {
	// Extra is optional opaque extra data. It is not authenticated: the
	// application must not trust it without checking it, for example by
	// making it part of the leaf hash. Nil (or empty) means none.
	Extra []byte
	// Index is the zero-based index of the entry in the log.
	Index uint64
	// Proof is the RFC 6962 inclusion proof of the entry at Index in the
	// tree of Checkpoint: the leaf's sibling hash first, up to a child of
	// the root. Each hash is HashSize bytes. It is empty for a tree of one
	// leaf.
	Proof [][]byte
	// Checkpoint is the log's signed checkpoint note, verbatim, including
	// any cosignatures.
	Checkpoint []byte
}

// Marshal returns the tlog-proof document of r: the header line, an extra
// line if r.Extra is not empty, the index line, one line per proof hash, an
// empty line, and r.Checkpoint as is.
//
// Marshal does not check r; a Receipt whose proof hashes are not [HashSize]
// bytes, that has more than [MaxProofHashes] of them, or whose checkpoint is
// not a well-formed signed checkpoint yields a document that [Parse] rejects.
func (r Receipt) Marshal() []byte {
	n := len(header) + 1 + len("index ") + 20 + 1 + 1 + len(r.Checkpoint)
	if len(r.Extra) > 0 {
		n += len("extra ") + base64.StdEncoding.EncodedLen(len(r.Extra)) + 1
	}
	for _, h := range r.Proof {
		n += base64.StdEncoding.EncodedLen(len(h)) + 1
	}
	b := make([]byte, 0, n)
	b = append(b, header...)
	b = append(b, '\n')
	if len(r.Extra) > 0 {
		b = append(b, "extra "...)
		b = base64.StdEncoding.AppendEncode(b, r.Extra)
		b = append(b, '\n')
	}
	b = append(b, "index "...)
	b = strconv.AppendUint(b, r.Index, 10)
	b = append(b, '\n')
	for _, h := range r.Proof {
		b = base64.StdEncoding.AppendEncode(b, h)
		b = append(b, '\n')
	}
	b = append(b, '\n')
	b = append(b, r.Checkpoint...)
	return b
}

// Parse parses a tlog-proof document. It checks the format only: use
// [Verify] to check the proof and the signatures.
//
// Parse is strict. The document must be valid UTF-8 without control
// characters other than newline (so no "\r"), at most [MaxSize] bytes, and
// consist of:
//   - the line "c2sp.org/tlog-proof@v1";
//   - optionally, "extra " and the extra data, at most [MaxExtraSize] bytes
//     and not empty, in standard, padded, canonical base64;
//   - "index " and the index in ASCII decimal without sign or leading zeros
//     that fits in a uint64;
//   - up to [MaxProofHashes] proof lines, each the standard, padded,
//     canonical base64 of [HashSize] bytes;
//   - an empty line;
//   - the checkpoint, to the end of the document: a well-formed signed note
//     of at most [checkpoint.MaxNoteSize] bytes, ending in a newline, whose
//     text is a well-formed checkpoint (see [checkpoint.Parse]). Its
//     signatures are not checked.
//
// [Receipt.Marshal] gives back every document Parse accepts, byte for byte:
// Marshal(Parse(b)) == b. The returned Receipt does not share
// memory with b; its Extra is nil if there is no extra line.
//
// Every error wraps [ErrMalformed] and says which line is wrong and why, as
// in `malformed tlog-proof: line 3: index "01" has a leading zero`. Errors
// about the checkpoint's text also wrap [checkpoint.ErrMalformed].
func Parse(b []byte) (Receipt, error) {
	if len(b) == 0 {
		return Receipt{}, malformed("empty document")
	}
	if len(b) > MaxSize {
		return Receipt{}, malformed("document is %d bytes, more than the limit of %d", len(b), MaxSize)
	}
	if err := checkText(b); err != nil {
		return Receipt{}, err
	}

	var r Receipt
	lr := lineReader{rest: b}
	line, err := lr.next("the header line")
	if err != nil {
		return Receipt{}, err
	}
	if string(line) != header {
		return Receipt{}, malformed("line 1: %s is not the header line %q", quote(line), header)
	}

	line, err = lr.next(`the "index" line`)
	if err != nil {
		return Receipt{}, err
	}
	if data, ok := bytes.CutPrefix(line, []byte("extra ")); ok {
		if r.Extra, err = parseExtra(lr.n, data); err != nil {
			return Receipt{}, err
		}
		if line, err = lr.next(`the "index" line`); err != nil {
			return Receipt{}, err
		}
	}
	if r.Index, err = parseIndex(lr.n, line); err != nil {
		return Receipt{}, err
	}

	for {
		line, err = lr.next("the empty line before the checkpoint")
		if err != nil {
			return Receipt{}, err
		}
		if len(line) == 0 {
			break
		}
		if len(r.Proof) == MaxProofHashes {
			return Receipt{}, malformed("line %d: more than %d proof hashes", lr.n, MaxProofHashes)
		}
		h, err := parseHash(lr.n, line)
		if err != nil {
			return Receipt{}, err
		}
		r.Proof = append(r.Proof, h)
	}

	if err := checkCheckpoint(lr.n+1, lr.rest); err != nil {
		return Receipt{}, err
	}
	r.Checkpoint = bytes.Clone(lr.rest)
	return r, nil
}

// lineReader splits a document into lines, counting them.
type lineReader struct {
	rest []byte
	n    int // number of the line last returned
}

// next returns the next line, without its newline, or an error saying that
// want is missing.
func (lr *lineReader) next(want string) ([]byte, error) {
	if len(lr.rest) == 0 {
		return nil, malformed("document ends after line %d, want %s", lr.n, want)
	}
	i := bytes.IndexByte(lr.rest, '\n')
	if i < 0 {
		return nil, malformed("line %d: document ends without a newline, before the checkpoint", lr.n+1)
	}
	line := lr.rest[:i]
	lr.rest = lr.rest[i+1:]
	lr.n++
	return line, nil
}

// checkText reports the first invalid UTF-8 sequence or control character
// other than newline in b, naming its line.
func checkText(b []byte) error {
	if err := text.Check(b); err != nil {
		return fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	return nil
}

func parseExtra(n int, data []byte) ([]byte, error) {
	if len(data) == 0 {
		return nil, malformed("line %d: extra data is empty (omit the extra line when there is none)", n)
	}
	if max := base64.StdEncoding.EncodedLen(MaxExtraSize); len(data) > max {
		return nil, malformed("line %d: extra data is %d base64 characters, more than the limit of %d (%d bytes)", n, len(data), max, MaxExtraSize)
	}
	// Strict rejects non-zero padding bits, so every accepted line is the
	// one encoding of its bytes. (Newlines and carriage returns, which the
	// decoder skips, cannot occur inside a line.)
	extra, err := base64.StdEncoding.Strict().AppendDecode(nil, data)
	if err != nil {
		return nil, malformed("line %d: extra data %s is not canonical standard base64: %v", n, quote(data), err)
	}
	if len(extra) > MaxExtraSize {
		return nil, malformed("line %d: extra data is %d bytes, more than the limit of %d", n, len(extra), MaxExtraSize)
	}
	return extra, nil
}

func parseIndex(n int, line []byte) (uint64, error) {
	l, ok := bytes.CutPrefix(line, []byte("index "))
	if !ok {
		return 0, malformed(`line %d: %s is not the index line ("index " and a decimal number)`, n, quote(line))
	}
	if len(l) == 0 {
		return 0, malformed("line %d: index is empty", n)
	}
	for _, c := range l {
		if c < '0' || c > '9' {
			return 0, malformed("line %d: index %s is not a decimal number (only digits 0-9 allowed)", n, quote(l))
		}
	}
	if len(l) > 1 && l[0] == '0' {
		return 0, malformed("line %d: index %s has a leading zero", n, quote(l))
	}
	index, err := strconv.ParseUint(string(l), 10, 64)
	if err != nil {
		// Only digits, no leading zero: the sole possible failure is range.
		return 0, malformed("line %d: index %s does not fit in 64 bits", n, quote(l))
	}
	return index, nil
}

func parseHash(n int, line []byte) ([]byte, error) {
	if len(line) != b64HashLen {
		return nil, malformed("line %d: proof hash %s is %d characters, want %d (base64 of %d bytes); is the empty line before the checkpoint missing?",
			n, quote(line), len(line), b64HashLen, HashSize)
	}
	h, err := base64.StdEncoding.Strict().AppendDecode(make([]byte, 0, HashSize+1), line)
	if err != nil {
		return nil, malformed("line %d: proof hash %s is not canonical standard base64: %v", n, quote(line), err)
	}
	if len(h) != HashSize {
		return nil, malformed("line %d: proof hash %s decodes to %d bytes, want %d", n, quote(line), len(h), HashSize)
	}
	return h[:HashSize:HashSize], nil
}

// checkCheckpoint checks that cp, which starts on line first of the
// document, is a well-formed signed note whose text is a well-formed
// checkpoint. It does not check signatures.
func checkCheckpoint(first int, cp []byte) error {
	switch {
	case len(cp) == 0:
		return malformed("document ends after the empty line on line %d, want the checkpoint", first-1)
	case len(cp) > checkpoint.MaxNoteSize:
		return malformed("checkpoint (from line %d) is %d bytes, more than the limit of %d", first, len(cp), checkpoint.MaxNoteSize)
	case cp[len(cp)-1] != '\n':
		return malformed("line %d: document does not end with a newline", first+bytes.Count(cp, []byte("\n")))
	}
	// With no known keys, note.Open fails on a well-formed note only
	// because no signature verifies. It does not allocate much: signatures
	// are not checked.
	_, err := note.Open(cp, note.VerifierList())
	var unverified *note.UnverifiedNoteError
	if !errors.As(err, &unverified) {
		return diagnoseNote(first, cp, err)
	}
	if _, err := checkpoint.Parse([]byte(unverified.Note.Text)); err != nil {
		return fmt.Errorf("%w: checkpoint (from line %d): %w", ErrMalformed, first, err)
	}
	return nil
}

// maxNoteSigs is the most signatures golang.org/x/mod/sumdb/note.Open reads.
const maxNoteSigs = 100

// diagnoseNote explains why note.Open rejected cp, which starts on line
// first of the document, with error err. The text was already checked by
// checkText.
func diagnoseNote(first int, cp []byte, err error) error {
	split := bytes.LastIndex(cp, []byte("\n\n"))
	if split < 0 {
		return malformed("checkpoint (from line %d) has no signatures: want an empty line and signature lines after the checkpoint text", first)
	}
	n := first + bytes.Count(cp[:split+2], []byte("\n"))
	sigs := cp[split+2:]
	if len(sigs) == 0 {
		return malformed("line %d: checkpoint has no signature lines after its last empty line", n-1)
	}
	for count := 1; len(sigs) > 0; count, n = count+1, n+1 {
		if count > maxNoteSigs {
			return malformed("line %d: checkpoint has more than %d signatures", n, maxNoteSigs)
		}
		i := bytes.IndexByte(sigs, '\n') // sigs ends in a newline
		line := sigs[:i]
		sigs = sigs[i+1:]
		rest, ok := bytes.CutPrefix(line, []byte("— "))
		if !ok {
			return malformed("line %d: checkpoint signature line %s does not start with an em dash (U+2014) and a space", n, quote(line))
		}
		name, b64, _ := strings.Cut(string(rest), " ")
		if name == "" || strings.ContainsRune(name, '+') || strings.IndexFunc(name, unicode.IsSpace) >= 0 {
			return malformed("line %d: checkpoint signature line has invalid key name %q", n, name)
		}
		if sig, err := base64.StdEncoding.DecodeString(b64); err != nil || len(sig) < 5 {
			return malformed("line %d: checkpoint signature by %s is not base64 of a key ID and a signature", n, quote([]byte(name)))
		}
	}
	return malformed("checkpoint (from line %d) is not a well-formed signed note: %v", first, err)
}

// Verify checks that the leaf with hash leafHash is at index r.Index in the
// tree of r.Checkpoint, and that the checkpoint is signed by the log's key v,
// as [checkpoint.Open] does. leafHash is the RFC 6962 leaf hash of the entry
// (see tree.LeafHash); computing it, possibly from r.Extra, is up to the
// application.
//
// Witness cosignature verifiers may be passed in witnesses: their
// cosignatures, when present, must verify, and are returned in the note's
// Sigs with the log's signature; signatures by other keys are in its
// UnverifiedSigs. Whether enough witnesses cosigned is the caller's policy.
//
// Verify returns the checkpoint and the verified note, or an error wrapping:
//   - one of the [checkpoint.Open] errors ([checkpoint.ErrSignature],
//     [checkpoint.ErrMalformed], [checkpoint.ErrOrigin]) if the checkpoint
//     is not a well-formed checkpoint validly signed by v;
//   - [ErrMalformed] if a proof hash is not [HashSize] bytes;
//   - [ErrInvalid] if r.Index is not in the tree, the proof has the wrong
//     number of hashes, or it does not lead from leafHash to the
//     checkpoint's root hash.
//
// Verify does not check the rest of r's format: a Receipt that verifies may
// still not Marshal to a document that [Parse] accepts. On error Verify
// returns a zero Checkpoint and a nil note.
func Verify(r Receipt, leafHash [32]byte, v note.Verifier, witnesses ...note.Verifier) (checkpoint.Checkpoint, *note.Note, error) {
	c, n, err := checkpoint.Open(r.Checkpoint, v, witnesses...)
	if err != nil {
		return checkpoint.Checkpoint{}, nil, fmt.Errorf("tlog-proof: %w", err)
	}
	if r.Index >= c.Size {
		return checkpoint.Checkpoint{}, nil, fmt.Errorf("%w: index %d is not in the tree of size %d", ErrInvalid, r.Index, c.Size)
	}
	for i, h := range r.Proof {
		if len(h) != HashSize {
			return checkpoint.Checkpoint{}, nil, fmt.Errorf("%w: proof hash %d is %d bytes, want %d", ErrMalformed, i, len(h), HashSize)
		}
	}
	if got, want := len(r.Proof), inclusionProofSize(r.Index, c.Size); got != want {
		return checkpoint.Checkpoint{}, nil, fmt.Errorf("%w: proof has %d hashes, want %d for index %d in a tree of size %d", ErrInvalid, got, want, r.Index, c.Size)
	}
	err = proof.VerifyInclusion(rfc6962.DefaultHasher, r.Index, c.Size, leafHash[:], r.Proof, c.Hash[:])
	var mismatch proof.RootMismatchError
	switch {
	case errors.As(err, &mismatch):
		return checkpoint.Checkpoint{}, nil, fmt.Errorf("%w: proof for leaf hash %s at index %d leads to root hash %s, not to the checkpoint's %s (size %d)",
			ErrInvalid, b64(leafHash[:]), r.Index, b64(mismatch.CalculatedRoot), b64(c.Hash[:]), c.Size)
	case err != nil:
		return checkpoint.Checkpoint{}, nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return c, n, nil
}

// inclusionProofSize returns the number of hashes in the RFC 6962 inclusion
// proof of leaf index in a tree of the given size, index < size: one per
// level below the node where the leaf's path joins the tree's right edge,
// plus one per left sibling on the edge above it (as in
// transparency-dev/merkle's proof.VerifyInclusion).
func inclusionProofSize(index, size uint64) int {
	inner := bits.Len64(index ^ (size - 1))
	return inner + bits.OnesCount64(index>>inner)
}

func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrMalformed}, args...)...)
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

// quote quotes b for an error message, cut short if long.
func quote(b []byte) string { return text.Quote(b) }
