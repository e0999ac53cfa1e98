// Package policy reads C2SP tlog-policy files (https://c2sp.org/tlog-policy):
// the logs a verifier accepts, the witnesses it knows, and the quorum rule
// that says which sets of witness cosignatures make a checkpoint valid.
//
//	log example.com/log+c0ffee01+AQ...
//
//	witness X1 witness.example/x1+12345678+BA... https://x1.example/witness
//	witness X2 witness.example/x2+23456789+BA...
//	witness X3 witness.example/x3+3456789a+BA...
//	group X-witnesses 2 X1 X2 X3
//	quorum X-witnesses
//
// [Parse] checks a policy completely: syntax, the character set, that every
// name is defined before it is used and only once, thresholds, duplicate
// keys, and the verifier keys themselves. Witness keys must be C2SP
// tlog-cosignature keys (signature type 0x04, Ed25519 cosignature/v1, or
// 0x06, ML-DSA-44); their verifiers are built with
// github.com/transparency-dev/formats/note. [Policy.Satisfied] evaluates the
// quorum for the set of witnesses whose cosignatures verified.
//
// Where the spec leaves room, Parse decides as follows, and says so in its
// errors: keywords are lowercase; a final line without its newline is
// accepted; a numeric threshold is ASCII digits only (leading zeros allowed,
// no sign); names are opaque byte strings (so "all", "any" or "2" are valid
// names, and a name may hold '#' after its first byte); witness and group
// lines may appear after the quorum line (groups defined there simply cannot
// be the quorum); log keys of signature type 0x04 or 0x06 (cosignature
// keys), 0x03 (reserved) or 0xfa-0xfe (reserved) are refused; two log keys,
// or two witness keys, that wrap the same public key bytes are duplicates
// whatever their names and types. URLs are kept as written: their meaning is
// up to the application.
//
// The package is pure: no I/O, no logging, no global state.
package policy

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	fmtnote "github.com/transparency-dev/formats/note"
	"golang.org/x/mod/sumdb/note"
)

// Limits. The spec recommends supporting at least 32 of each.
const (
	// MaxSize is the largest policy file, in bytes, that Parse accepts.
	MaxSize = 1 << 20
	// MaxLogs, MaxWitnesses and MaxGroups bound the definitions of a policy.
	MaxLogs      = 256
	MaxWitnesses = 256
	MaxGroups    = 256
)

// None is the predefined name of the quorum that needs no cosignature.
const None = "none"

// Signature types of C2SP signed-note verifier keys (c2sp.org/signed-note).
const (
	TypeEd25519       = 0x01 // log signatures (c2sp.org/tlog-checkpoint)
	TypeECDSA         = 0x02
	TypeCosignatureV1 = 0x04 // Ed25519 cosignature/v1 (c2sp.org/tlog-cosignature)
	TypeRFC6962STH    = 0x05
	TypeMLDSA44       = 0x06 // ML-DSA-44 cosignatures (c2sp.org/tlog-cosignature)
)

// ErrMalformed is wrapped by every error of [Parse].
var ErrMalformed = errors.New("malformed tlog-policy")

// SyntaxError is the error of [Parse]: the line (counting from 1; 0 for
// the file as a whole) and what is wrong. It wraps [ErrMalformed].
type SyntaxError struct {
	Line int
	Msg  string
}

func (e *SyntaxError) Error() string {
	if e.Line == 0 {
		return "tlog-policy: " + e.Msg
	}
	return fmt.Sprintf("tlog-policy: line %d: %s", e.Line, e.Msg)
}

// Unwrap returns ErrMalformed.
func (e *SyntaxError) Unwrap() error { return ErrMalformed }

// Key is a parsed signed-note verifier key (vkey).
type Key struct {
	// VerifierKey is the vkey as written: "<name>+<key ID>+<base64>".
	VerifierKey string
	// Name is the key name: the log's origin, or the witness's key name
	// that its cosignature lines carry.
	Name string
	// ID is the 32-bit key ID (key hash).
	ID uint32
	// Type is the signature type byte.
	Type byte
	// PublicKey is the key material after the type byte.
	PublicKey []byte
}

// Log is a log line: "log <vkey> [<url>]".
type Log struct {
	Key
	// URL is optional; empty when absent.
	URL string
	// Line is the line that defines the log.
	Line int
}

// Witness is a witness line: "witness <name> <vkey> [<url>]".
type Witness struct {
	// Name is the witness's name within the policy.
	Name string
	Key
	// URL is optional; empty when absent. For tlog-witness it is the
	// witness's submission prefix.
	URL string
	// Line is the line that defines the witness.
	Line int
	// Verifier verifies the witness's cosignatures (its Name and KeyHash
	// are Key.Name and Key.ID).
	Verifier note.Verifier
}

// Group is a group line: "group <name> all|any|<k> <name>...".
type Group struct {
	// Name is the group's name within the policy.
	Name string
	// Threshold is k: the group witnesses a checkpoint when at least k of
	// its members do ("all" is len(Members), "any" is 1).
	Threshold int
	// Members are names of witnesses and groups defined before the group.
	Members []string
	// Line is the line that defines the group.
	Line int
}

// Policy is a parsed tlog-policy.
type Policy struct {
	// Logs, Witnesses and Groups are in the order of the file.
	Logs      []Log
	Witnesses []Witness
	Groups    []Group
	// Quorum is the name of the witness or group whose witnessing makes a
	// checkpoint valid, or None.
	Quorum string

	witnesses map[string]int // name -> index in Witnesses
	groups    map[string]int // name -> index in Groups
}

// Witness returns the witness of that name.
func (p *Policy) Witness(name string) (Witness, bool) {
	i, ok := p.witnesses[name]
	if !ok {
		return Witness{}, false
	}
	return p.Witnesses[i], true
}

// Verifiers returns the cosignature verifiers of every witness, in the
// order of the file.
func (p *Policy) Verifiers() []note.Verifier {
	out := make([]note.Verifier, len(p.Witnesses))
	for i, w := range p.Witnesses {
		out[i] = w.Verifier
	}
	return out
}

// Satisfied reports whether a checkpoint cosigned by the named witnesses
// (names as in the policy, whose cosignatures the caller verified) meets
// the quorum. Names that are not witnesses of the policy are ignored. A
// quorum of None is always satisfied.
func (p *Policy) Satisfied(witnessed map[string]bool) bool {
	if p.Quorum == None {
		return true
	}
	memo := make(map[string]bool)
	var eval func(name string) bool
	eval = func(name string) bool {
		if _, ok := p.witnesses[name]; ok {
			return witnessed[name]
		}
		if v, ok := memo[name]; ok {
			return v
		}
		g := p.Groups[p.groups[name]]
		n := 0
		for _, m := range g.Members {
			if eval(m) {
				n++
			}
		}
		memo[name] = n >= g.Threshold
		return memo[name]
	}
	return eval(p.Quorum)
}

// Parse parses and checks a policy file. Errors are *SyntaxError values
// wrapping ErrMalformed, naming the line at fault.
func Parse(b []byte) (*Policy, error) {
	if len(b) > MaxSize {
		return nil, &SyntaxError{0, fmt.Sprintf("policy is %d bytes, more than the limit of %d", len(b), MaxSize)}
	}
	p := &Policy{witnesses: map[string]int{}, groups: map[string]int{}}
	defined := map[string]int{} // witness and group names -> line
	later := laterNames(b)      // names defined anywhere, for better errors
	quorumLine := 0
	line := 0
	for len(b) > 0 {
		line++
		var l []byte
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			l, b = b[:i], b[i+1:]
		} else {
			l, b = b, nil
		}
		if err := checkChars(l); err != nil {
			return nil, &SyntaxError{line, err.Error()}
		}
		f := fields(l)
		if len(f) == 0 || f[0][0] == '#' {
			continue
		}
		bad := func(format string, args ...any) error {
			return &SyntaxError{line, fmt.Sprintf(format, args...)}
		}
		switch kw := f[0]; kw {
		case "log":
			if len(f) < 2 || len(f) > 3 {
				return nil, bad("want \"log <vkey> [<url>]\", got %d fields", len(f))
			}
			if len(p.Logs) == MaxLogs {
				return nil, bad("more than %d logs", MaxLogs)
			}
			k, err := parseLogKey(f[1])
			if err != nil {
				return nil, bad("log key: %v", err)
			}
			for _, o := range p.Logs {
				if bytes.Equal(o.PublicKey, k.PublicKey) {
					return nil, bad("log key %s wraps the same public key as the log on line %d (duplicate logs are not allowed)", short(k.VerifierKey), o.Line)
				}
			}
			p.Logs = append(p.Logs, Log{Key: k, URL: opt(f, 2), Line: line})

		case "witness":
			if len(f) < 3 || len(f) > 4 {
				return nil, bad("want \"witness <name> <vkey> [<url>]\", got %d fields", len(f))
			}
			name := f[1]
			if err := checkNewName(name, defined); err != nil {
				return nil, bad("witness %s", err)
			}
			if len(p.Witnesses) == MaxWitnesses {
				return nil, bad("more than %d witnesses", MaxWitnesses)
			}
			k, v, err := parseWitnessKey(f[2])
			if err != nil {
				return nil, bad("witness %q: key: %v", name, err)
			}
			for _, o := range p.Witnesses {
				if bytes.Equal(o.PublicKey, k.PublicKey) {
					return nil, bad("witness %q has the same public key as witness %q on line %d (duplicate witnesses are not allowed)", name, o.Name, o.Line)
				}
			}
			defined[name] = line
			p.witnesses[name] = len(p.Witnesses)
			p.Witnesses = append(p.Witnesses, Witness{Name: name, Key: k, URL: opt(f, 3), Line: line, Verifier: v})

		case "group":
			if len(f) < 4 {
				return nil, bad("want \"group <name> all|any|<k> <name>...\" with at least one member, got %d fields", len(f))
			}
			name := f[1]
			if err := checkNewName(name, defined); err != nil {
				return nil, bad("group %s", err)
			}
			if len(p.Groups) == MaxGroups {
				return nil, bad("more than %d groups", MaxGroups)
			}
			members := f[3:]
			seen := map[string]bool{}
			for _, m := range members {
				switch {
				case m == None:
					return nil, bad("group %q: %q cannot be a group member", name, None)
				case seen[m]:
					return nil, bad("group %q: member %q is listed twice", name, m)
				}
				if err := checkDefined(m, defined, later, line); err != nil {
					return nil, bad("group %q: member %s", name, err)
				}
				seen[m] = true
			}
			k, err := parseThreshold(f[2], len(members))
			if err != nil {
				return nil, bad("group %q: %v", name, err)
			}
			defined[name] = line
			p.groups[name] = len(p.Groups)
			p.Groups = append(p.Groups, Group{Name: name, Threshold: k, Members: members, Line: line})

		case "quorum":
			if len(f) != 2 {
				return nil, bad("want \"quorum <name>\", got %d fields", len(f))
			}
			if quorumLine != 0 {
				return nil, bad("second quorum line (the first is on line %d; a policy has exactly one)", quorumLine)
			}
			if f[1] != None {
				if err := checkDefined(f[1], defined, later, line); err != nil {
					return nil, bad("quorum %s", err)
				}
			}
			p.Quorum, quorumLine = f[1], line

		default:
			if lower := strings.ToLower(kw); lower != kw && (lower == "log" || lower == "witness" || lower == "group" || lower == "quorum") {
				return nil, bad("unknown keyword %q (keywords are lowercase: %q)", kw, lower)
			}
			return nil, bad("unknown keyword %s: want log, witness, group or quorum (comments start with '#')", quoteName(kw))
		}
	}
	if quorumLine == 0 {
		return nil, &SyntaxError{0, `no quorum line (a policy needs exactly one; "quorum none" asks for no cosignatures)`}
	}
	return p, nil
}

// laterNames returns the line defining each witness or group name anywhere
// in b, ignoring errors, so that a reference to a name defined further down
// gets a precise message.
func laterNames(b []byte) map[string]int {
	out := map[string]int{}
	for i, l := range bytes.Split(b, []byte("\n")) {
		f := fields(l)
		if len(f) >= 2 && (f[0] == "witness" || f[0] == "group") {
			if _, ok := out[f[1]]; !ok {
				out[f[1]] = i + 1
			}
		}
	}
	return out
}

// checkChars allows tab, 0x20-0x7E and 0x80-0xFF only (newlines were split
// off already).
func checkChars(l []byte) error {
	for _, c := range l {
		if c == '\t' || (c >= 0x20 && c != 0x7f) {
			continue
		}
		if c == '\r' {
			return errors.New("contains a carriage return (0x0D): lines end with a newline alone")
		}
		return fmt.Errorf("contains control character 0x%02X (only tab and newline are allowed)", c)
	}
	return nil
}

// fields splits a line at runs of spaces and tabs.
func fields(l []byte) []string {
	return strings.FieldsFunc(string(l), func(r rune) bool { return r == ' ' || r == '\t' })
}

func opt(f []string, i int) string {
	if i < len(f) {
		return f[i]
	}
	return ""
}

func checkNewName(name string, defined map[string]int) error {
	if name == None {
		return fmt.Errorf("name %q is predefined and cannot be redefined", None)
	}
	if l, ok := defined[name]; ok {
		return fmt.Errorf("name %s is already defined on line %d (witnesses and groups share one namespace)", quoteName(name), l)
	}
	return nil
}

func checkDefined(name string, defined, later map[string]int, line int) error {
	if _, ok := defined[name]; ok {
		return nil
	}
	if l, ok := later[name]; ok && l >= line {
		return fmt.Errorf("%s is defined on line %d, after its use (names must be defined on a preceding line)", quoteName(name), l)
	}
	return fmt.Errorf("%s is not a witness or group defined on a preceding line", quoteName(name))
}

func parseThreshold(s string, n int) (int, error) {
	switch s {
	case "all":
		return n, nil
	case "any":
		return 1, nil
	}
	for _, c := range []byte(s) {
		if c < '0' || c > '9' {
			return 0, fmt.Errorf("threshold %s is not all, any or a decimal number", quoteName(s))
		}
	}
	k, err := strconv.Atoi(s)
	if err != nil || k < 1 || k > n {
		return 0, fmt.Errorf("threshold %s is out of range: want 1 <= k <= %d (the number of members)", s, n)
	}
	return k, nil
}

// parseVKey parses "<name>+<8 hex digits>+<base64(type || key)>".
func parseVKey(vkey string) (Key, error) {
	name, rest, ok1 := strings.Cut(vkey, "+")
	id16, key64, ok2 := strings.Cut(rest, "+")
	if !ok1 || !ok2 {
		return Key{}, fmt.Errorf("%s is not a verifier key <name>+<key ID>+<base64 key>", short(vkey))
	}
	if err := checkKeyName(name); err != nil {
		return Key{}, err
	}
	if len(id16) != 8 || strings.IndexFunc(id16, func(r rune) bool { return (r < '0' || r > '9') && (r < 'a' || r > 'f') }) >= 0 {
		return Key{}, fmt.Errorf("key ID %q of %s is not 8 lowercase hexadecimal digits", id16, quoteName(name))
	}
	id, _ := strconv.ParseUint(id16, 16, 32)
	raw, err := base64.StdEncoding.Strict().DecodeString(key64)
	if err != nil || len(raw) < 2 {
		return Key{}, fmt.Errorf("key material of %s is not standard base64 of a type byte and a key", quoteName(name))
	}
	return Key{VerifierKey: vkey, Name: name, ID: uint32(id), Type: raw[0], PublicKey: raw[1:]}, nil
}

// checkKeyName: signed-note key names are non-empty UTF-8 without Unicode
// spaces or '+'.
func checkKeyName(name string) error {
	switch {
	case name == "":
		return errors.New("key name is empty")
	case !utf8.ValidString(name):
		return fmt.Errorf("key name %q is not valid UTF-8", name)
	case strings.IndexFunc(name, unicode.IsSpace) >= 0:
		return fmt.Errorf("key name %q contains a space", name)
	}
	return nil
}

// keyID is the recommended key ID: SHA-256(name || "\n" || type || key)[:4].
func keyID(name string, typ byte, key []byte) uint32 {
	h := sha256.New()
	h.Write([]byte(name))
	h.Write([]byte{'\n', typ})
	h.Write(key)
	return binary.BigEndian.Uint32(h.Sum(nil))
}

func parseLogKey(vkey string) (Key, error) {
	k, err := parseVKey(vkey)
	if err != nil {
		return Key{}, err
	}
	switch {
	case k.Type == TypeEd25519:
		if len(k.PublicKey) != ed25519.PublicKeySize {
			return Key{}, fmt.Errorf("%s: an Ed25519 key has %d bytes, not %d", quoteName(k.Name), ed25519.PublicKeySize, len(k.PublicKey))
		}
		if want := keyID(k.Name, k.Type, k.PublicKey); k.ID != want {
			return Key{}, fmt.Errorf("%s: key ID %08x does not match the key (want %08x)", quoteName(k.Name), k.ID, want)
		}
	case k.Type == TypeCosignatureV1 || k.Type == TypeMLDSA44:
		return Key{}, fmt.Errorf("%s has signature type 0x%02x, a witness cosignature key, not a log key", quoteName(k.Name), k.Type)
	case k.Type == 0x03 || (k.Type >= 0xfa && k.Type <= 0xfe):
		return Key{}, fmt.Errorf("%s has reserved signature type 0x%02x", quoteName(k.Name), k.Type)
	}
	return k, nil
}

// mldsa44PublicKeySize is the size of an ML-DSA-44 public key (FIPS 204).
const mldsa44PublicKeySize = 1312

func parseWitnessKey(vkey string) (Key, note.Verifier, error) {
	k, err := parseVKey(vkey)
	if err != nil {
		return Key{}, nil, err
	}
	switch k.Type {
	case TypeCosignatureV1:
		if len(k.PublicKey) != ed25519.PublicKeySize {
			return Key{}, nil, fmt.Errorf("%s: an Ed25519 key has %d bytes, not %d", quoteName(k.Name), ed25519.PublicKeySize, len(k.PublicKey))
		}
	case TypeMLDSA44:
		if len(k.PublicKey) != mldsa44PublicKeySize {
			return Key{}, nil, fmt.Errorf("%s: an ML-DSA-44 key has %d bytes, not %d", quoteName(k.Name), mldsa44PublicKeySize, len(k.PublicKey))
		}
	case TypeEd25519:
		return Key{}, nil, fmt.Errorf("%s has signature type 0x01 (a plain Ed25519 note key); a witness key is a cosignature/v1 key of type 0x04 (tlog-witness prints it; formats/note.VKeyToCosignatureV1 converts)", quoteName(k.Name))
	default:
		return Key{}, nil, fmt.Errorf("%s has signature type 0x%02x; a witness key has type 0x04 (Ed25519 cosignature/v1) or 0x06 (ML-DSA-44)", quoteName(k.Name), k.Type)
	}
	if want := keyID(k.Name, k.Type, k.PublicKey); k.ID != want {
		return Key{}, nil, fmt.Errorf("%s: key ID %08x does not match the key (want %08x)", quoteName(k.Name), k.ID, want)
	}
	v, err := fmtnote.NewVerifierForCosignatureV1(vkey)
	if err != nil {
		return Key{}, nil, fmt.Errorf("%s: %v", quoteName(k.Name), err)
	}
	if v.Name() != k.Name || v.KeyHash() != k.ID {
		return Key{}, nil, fmt.Errorf("%s: verifier disagrees on the key name or ID", quoteName(k.Name))
	}
	return k, v, nil
}

// quoteName quotes a name for an error message, cut short if long.
func quoteName(s string) string {
	const max = 64
	if len(s) > max {
		return strconv.Quote(s[:max]) + "..."
	}
	return strconv.Quote(s)
}

// short quotes a key for an error message, cut short.
func short(s string) string {
	const max = 48
	if len(s) > max {
		return strconv.Quote(s[:max]) + "..."
	}
	return strconv.Quote(s)
}
