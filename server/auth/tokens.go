package auth

import (
	"bufio"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"strings"
)

// TokenPrefix starts every token NewToken makes, so that secret scanners
// and people recognize tlog tokens.
const TokenPrefix = "tlog_"

// hashPrefix starts the hash column of the tokens file.
const hashPrefix = "sha256:"

// NewToken returns a new random token: TokenPrefix and 32 random bytes in
// unpadded base64url.
func NewToken() string {
	b := make([]byte, 32)
	rand.Read(b) // never fails (crypto/rand panics instead)
	return TokenPrefix + base64.RawURLEncoding.EncodeToString(b)
}

// HashToken returns the hash column of the tokens file for token:
// "sha256:" and the hex SHA-256 of the token.
func HashToken(token string) string {
	h := sha256.Sum256([]byte(token))
	return hashPrefix + hex.EncodeToString(h[:])
}

// TokenLine returns the tokens-file line that gives the holder of token the
// name and grants.
func TokenLine(name, token string, grants []Grant) string {
	var b strings.Builder
	b.WriteString(name)
	b.WriteByte(' ')
	b.WriteString(HashToken(token))
	for _, g := range grants {
		b.WriteByte(' ')
		b.WriteString(g.String())
	}
	return b.String()
}

// CheckName reports whether name can name a line of the tokens file: 1 to
// 256 printable characters without spaces, not starting with '#'.
func CheckName(name string) error {
	if name == "" || len(name) > 256 || strings.HasPrefix(name, "#") {
		return fmt.Errorf("name %q must be 1-256 printable characters without spaces, not starting with '#'", name)
	}
	for _, r := range name {
		if r <= ' ' || r == 0x7f || r == 0xfffd {
			return fmt.Errorf("name %q must be 1-256 printable characters without spaces, not starting with '#'", name)
		}
	}
	return nil
}

// Tokens is a parsed tokens file. It is immutable.
type Tokens struct {
	entries []tokenEntry
	byName  map[string]*tokenEntry
}

type tokenEntry struct {
	id      Identity
	hash    [sha256.Size]byte
	hasHash bool // false: "-", the identity of client certificates only
}

// Len returns the number of identities in t.
func (t *Tokens) Len() int { return len(t.entries) }

// ReadTokensFile reads and parses a tokens file.
func ReadTokensFile(path string) (*Tokens, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	t, err := ParseTokens(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return t, nil
}

// ParseTokens parses the lines of a tokens file (see the package comment).
// Errors name the line but never quote the hash column.
func ParseTokens(r io.Reader) (*Tokens, error) {
	t := &Tokens{byName: map[string]*tokenEntry{}}
	names := map[string]int{}             // name -> line
	hashes := map[[sha256.Size]byte]int{} // hash -> line
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		e, err := parseTokenLine(line)
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", n, err)
		}
		if m, dup := names[e.id.Name]; dup {
			return nil, fmt.Errorf("line %d: name %q is on line %d too", n, e.id.Name, m)
		}
		names[e.id.Name] = n
		if m, dup := hashes[e.hash]; dup && e.hasHash {
			return nil, fmt.Errorf("line %d: %s has the same token hash as line %d", n, e.id.Name, m)
		}
		if e.hasHash {
			hashes[e.hash] = n
		}
		t.entries = append(t.entries, e)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	for i := range t.entries {
		t.byName[t.entries[i].id.Name] = &t.entries[i]
	}
	return t, nil
}

func parseTokenLine(line string) (tokenEntry, error) {
	f := strings.Fields(line)
	if len(f) < 3 {
		return tokenEntry{}, fmt.Errorf("want <name> sha256:<hex> <grant>..., got %d fields", len(f))
	}
	var e tokenEntry
	if err := CheckName(f[0]); err != nil {
		return tokenEntry{}, err
	}
	e.id.Name = f[0]
	switch h := f[1]; {
	case h == "-":
	case strings.HasPrefix(h, hashPrefix):
		b, err := hex.DecodeString(h[len(hashPrefix):])
		if err != nil || len(b) != sha256.Size {
			return tokenEntry{}, fmt.Errorf("%s: the hash is not sha256: and 64 hex digits", e.id.Name)
		}
		copy(e.hash[:], b)
		e.hasHash = true
	default:
		// Do not echo the field: it may be a token pasted by mistake.
		return tokenEntry{}, fmt.Errorf("%s: the second field is not sha256:<hex> or -", e.id.Name)
	}
	for _, s := range f[2:] {
		g, err := ParseGrant(s)
		if err != nil {
			return tokenEntry{}, fmt.Errorf("%s: %w", e.id.Name, err)
		}
		e.id.Grants = append(e.id.Grants, g)
	}
	return e, nil
}

// lookupToken returns the identity whose hash is the hash of token, or nil.
// It compares with every stored hash in constant time, so its timing tells
// nothing about how close a guess came.
func (t *Tokens) lookupToken(token string) *Identity {
	h := sha256.Sum256([]byte(token))
	var found *Identity
	for i := range t.entries {
		e := &t.entries[i]
		if subtle.ConstantTimeCompare(h[:], e.hash[:])&boolInt(e.hasHash) == 1 {
			found = &e.id
		}
	}
	return found
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// lookupName returns the identity named name, or nil.
func (t *Tokens) lookupName(name string) *Identity {
	if e, ok := t.byName[name]; ok {
		return &e.id
	}
	return nil
}
