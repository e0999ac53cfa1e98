package checkpoint

import (
	"bytes"
	"errors"
	"fmt"

	"golang.org/x/mod/sumdb/note"
)

// Sign signs c as a C2SP signed note with signer, the log's Ed25519 note
// signer, and returns the encoded note.
//
// The signer's name must equal c.Origin (the spec says it SHOULD, and [Open]
// requires it); otherwise Sign returns an error wrapping [ErrOrigin]. Sign
// refuses, with an error wrapping [ErrMalformed], a checkpoint that [Parse]
// would not read back unchanged: an empty origin or extension line, or one
// holding a newline, another control character or invalid UTF-8, or a body
// larger than [MaxBodySize].
func Sign(c Checkpoint, signer note.Signer) ([]byte, error) {
	if signer == nil {
		return nil, errors.New("checkpoint: nil signer")
	}
	if err := c.validate(); err != nil {
		return nil, err
	}
	if name := signer.Name(); name != c.Origin {
		return nil, fmt.Errorf("%w: signer name %q is not the origin %q", ErrOrigin, name, c.Origin)
	}
	signed, err := note.Sign(&note.Note{Text: string(c.Marshal())}, signer)
	if err != nil {
		return nil, fmt.Errorf("checkpoint: signing: %w", err)
	}
	return signed, nil
}

// Open verifies a signed checkpoint note with the log's verifier v and parses
// its body. It returns the parsed checkpoint and the verified note: its Sigs
// hold every verified signature, the log's and those by others, in the
// order of the note (find one by name and key hash), and its UnverifiedSigs
// hold the signatures by keys Open was not given.
//
// Extra verifiers, such as witness cosignature verifiers, may be passed in
// others. Signatures by unknown keys are allowed and ignored, as the
// signed-note spec requires. A signature by a known key (v or one of others)
// that does not verify rejects the whole note, as the spec recommends.
//
// Open checks signatures before it reads the text, and fails with an error
// wrapping:
//   - [ErrSignature] if the note has no signature by v, or a signature by a
//     known key fails to verify (the error also wraps the note package's
//     error, e.g. *note.InvalidSignatureError);
//   - [ErrMalformed] if the note is not a well-formed signed note, is larger
//     than [MaxNoteSize], or its text is not a valid checkpoint (see [Parse]);
//   - [ErrOrigin] if the origin line is not v.Name().
//
// Passing two verifiers with the same name and key hash is a caller error
// and wraps none of the above. On error Open returns a zero Checkpoint and a
// nil note.
func Open(signed []byte, v note.Verifier, others ...note.Verifier) (Checkpoint, *note.Note, error) {
	if v == nil {
		return Checkpoint{}, nil, errors.New("checkpoint: nil verifier")
	}
	if len(signed) > MaxNoteSize {
		return Checkpoint{}, nil, fmt.Errorf("%w: signed note is %d bytes, more than the limit of %d", ErrMalformed, len(signed), MaxNoteSize)
	}
	list := make([]note.Verifier, 0, 1+len(others))
	list = append(list, v)
	list = append(list, others...)
	type key struct {
		name string
		hash uint32
	}
	seen := make(map[key]bool, len(list))
	for _, o := range list {
		if o == nil {
			return Checkpoint{}, nil, errors.New("checkpoint: nil verifier")
		}
		k := key{o.Name(), o.KeyHash()}
		if seen[k] {
			return Checkpoint{}, nil, fmt.Errorf("checkpoint: two verifiers for key %s+%08x", k.name, k.hash)
		}
		seen[k] = true
	}

	n, err := note.Open(signed, note.VerifierList(list...))
	if err != nil {
		var unverified *note.UnverifiedNoteError
		var invalid *note.InvalidSignatureError
		switch {
		case errors.As(err, &unverified):
			return Checkpoint{}, nil, fmt.Errorf("%w: no signature by log key %s+%08x: %w", ErrSignature, v.Name(), v.KeyHash(), err)
		case errors.As(err, &invalid):
			return Checkpoint{}, nil, fmt.Errorf("%w: %w", ErrSignature, err)
		case !hasSignatureBlock(signed):
			return Checkpoint{}, nil, fmt.Errorf("%w: note has no signature lines: %w", ErrSignature, err)
		default:
			// The note package's remaining errors are all "malformed note"
			// (duplicate verifiers, its other failure, were ruled out above).
			return Checkpoint{}, nil, fmt.Errorf("%w: signed note: %w", ErrMalformed, err)
		}
	}

	logSigned := false
	for _, s := range n.Sigs {
		if s.Name == v.Name() && s.Hash == v.KeyHash() {
			logSigned = true
			break
		}
	}
	if !logSigned {
		return Checkpoint{}, nil, fmt.Errorf("%w: no signature by log key %s+%08x (only by other known keys)", ErrSignature, v.Name(), v.KeyHash())
	}

	c, err := Parse([]byte(n.Text))
	if err != nil {
		return Checkpoint{}, nil, err
	}
	if c.Origin != v.Name() {
		return Checkpoint{}, nil, fmt.Errorf("%w: origin %s, want the log key name %q", ErrOrigin, quote([]byte(c.Origin)), v.Name())
	}
	return c, n, nil
}

// hasSignatureBlock reports whether msg has, after its last blank line, at
// least one line that starts like a signature line.
func hasSignatureBlock(msg []byte) bool {
	i := bytes.LastIndex(msg, []byte("\n\n"))
	return i >= 0 && bytes.HasPrefix(msg[i+2:], []byte("— "))
}
