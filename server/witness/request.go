package witness

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"math"
	"strconv"
	"unicode/utf8"
)

// HashSize is the size of an RFC 6962 (SHA-256) Merkle tree hash.
const HashSize = 32

// MaxProofLines is the most consistency proof lines an add-checkpoint request
// may carry: c2sp.org/tlog-witness says a client "MUST NOT send more than 63".
const MaxProofLines = 63

// addRequest is a parsed add-checkpoint request body.
type addRequest struct {
	oldSize uint64
	proof   [][]byte
	note    []byte // the signed checkpoint note, unverified
}

// parseAddRequest parses an add-checkpoint request body (c2sp.org/tlog-witness):
// an old size line, zero to MaxProofLines consistency proof lines, an empty
// line, then the checkpoint note. Every line ends in a newline. Errors wrap
// ErrMalformed.
func parseAddRequest(body []byte) (addRequest, error) {
	var r addRequest
	line, rest, ok := bytes.Cut(body, []byte("\n"))
	if !ok {
		return r, malformed("missing old size line")
	}
	size, ok := bytes.CutPrefix(line, []byte("old "))
	if !ok {
		return r, malformed("first line is not an old size line \"old <size>\"")
	}
	var err error
	if r.oldSize, err = parseSize(size); err != nil {
		return r, malformed("old size: %v", err)
	}
	for {
		line, rest, ok = bytes.Cut(rest, []byte("\n"))
		if !ok {
			return r, malformed("missing the empty line before the checkpoint")
		}
		if len(line) == 0 {
			break
		}
		if len(r.proof) == MaxProofLines {
			return r, malformed("more than %d consistency proof lines", MaxProofLines)
		}
		h, err := parseHash(line)
		if err != nil {
			return r, malformed("consistency proof line %d: %v", len(r.proof)+1, err)
		}
		r.proof = append(r.proof, h)
	}
	if len(rest) == 0 {
		return r, malformed("missing checkpoint")
	}
	r.note = rest
	return r, nil
}

// treeHead is the parsed text of a C2SP tlog-checkpoint (extension lines
// are checked but not kept).
type treeHead struct {
	origin string
	size   uint64
	hash   [HashSize]byte
}

// parseCheckpoint parses a checkpoint note text (c2sp.org/tlog-checkpoint),
// without the blank line and signatures that follow it: at least three
// non-empty newline-terminated lines, the origin, the tree size in ASCII
// decimal without leading zeroes, the root hash in base64 (exactly 32 bytes),
// then optional non-empty extension lines. The text must be valid UTF-8
// without control characters other than newline (c2sp.org/signed-note).
// Errors wrap ErrMalformed.
func parseCheckpoint(text []byte) (treeHead, error) {
	var c treeHead
	if !utf8.Valid(text) {
		return c, malformed("checkpoint is not valid UTF-8")
	}
	for _, b := range text {
		if b < 0x20 && b != '\n' {
			return c, malformed("checkpoint holds control character 0x%02x", b)
		}
	}
	if len(text) == 0 || text[len(text)-1] != '\n' {
		return c, malformed("checkpoint text does not end in a newline")
	}
	lines := bytes.Split(text[:len(text)-1], []byte("\n"))
	if len(lines) < 3 {
		return c, malformed("checkpoint has %d lines, want at least 3", len(lines))
	}
	for i, l := range lines {
		if len(l) == 0 {
			return c, malformed("checkpoint line %d is empty", i+1)
		}
	}
	c.origin = string(lines[0])
	var err error
	if c.size, err = parseSize(lines[1]); err != nil {
		return c, malformed("checkpoint tree size: %v", err)
	}
	h, err := parseHash(lines[2])
	if err != nil {
		return c, malformed("checkpoint root hash: %v", err)
	}
	copy(c.hash[:], h)
	return c, nil
}

// parseSize parses a tree size: ASCII decimal, no sign, no leading zeroes
// (except "0" itself). Sizes beyond 2^63-1 are refused: no log is that big,
// and the PostgreSQL state store keeps sizes in a bigint.
func parseSize(b []byte) (uint64, error) {
	if len(b) == 0 {
		return 0, errors.New("empty")
	}
	if len(b) > 1 && b[0] == '0' {
		return 0, fmt.Errorf("%q has a leading zero", b)
	}
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, fmt.Errorf("%q is not a decimal number", b)
		}
	}
	n, err := strconv.ParseUint(string(b), 10, 64)
	if err != nil || n > math.MaxInt64 {
		return 0, fmt.Errorf("%q is too large", b)
	}
	return n, nil
}

// parseHash decodes a hash in standard, padded, canonical base64 that must be
// exactly HashSize bytes.
func parseHash(b []byte) ([]byte, error) {
	h, err := base64.StdEncoding.Strict().DecodeString(string(b))
	if err != nil {
		return nil, fmt.Errorf("%q is not base64", b)
	}
	if len(h) != HashSize {
		return nil, fmt.Errorf("%q decodes to %d bytes, want %d", b, len(h), HashSize)
	}
	// The decoder skips '\r' and '\n'; accept only the one encoding.
	if base64.StdEncoding.EncodeToString(h) != string(b) {
		return nil, fmt.Errorf("%q is not canonical base64", b)
	}
	return h, nil
}
