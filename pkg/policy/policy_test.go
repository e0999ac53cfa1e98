package policy_test

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"testing"

	fmtnote "github.com/transparency-dev/formats/note"
	"golang.org/x/mod/sumdb/note"

	"github.com/tlog-dev/tlog/pkg/policy"
)

// witnessKey returns a cosignature/v1 (type 0x04) vkey and its signer.
func witnessKey(t testing.TB, name string) (string, note.Signer) {
	t.Helper()
	skey, vkey, err := note.GenerateKey(rand.Reader, name)
	if err != nil {
		t.Fatal(err)
	}
	s, err := fmtnote.NewSignerForCosignatureV1(skey)
	if err != nil {
		t.Fatal(err)
	}
	cvkey, err := fmtnote.VKeyToCosignatureV1(vkey)
	if err != nil {
		t.Fatal(err)
	}
	return cvkey, s
}

func logKey(t testing.TB, name string) string {
	t.Helper()
	_, vkey, err := note.GenerateKey(rand.Reader, name)
	if err != nil {
		t.Fatal(err)
	}
	return vkey
}

// The example of the spec, with real keys.
func specExample(t testing.TB) (string, map[string]string) {
	keys := map[string]string{}
	var b strings.Builder
	fmt.Fprintf(&b, "log %s\n\n", logKey(t, "example.com/log"))
	for _, g := range []string{"X", "Y"} {
		for i := 1; i <= 3; i++ {
			n := fmt.Sprintf("%s%d", g, i)
			keys[n], _ = witnessKey(t, "witness.example/"+n)
			fmt.Fprintf(&b, "witness %s %s\n", n, keys[n])
		}
		if g == "X" {
			b.WriteString("group X-witnesses 2 X1 X2 X3\n\n")
		} else {
			b.WriteString("group Y-witnesses any Y1 Y2 Y3\n\n")
		}
	}
	b.WriteString("group X-and-Y all X-witnesses Y-witnesses\nquorum X-and-Y\n")
	return b.String(), keys
}

func TestParseSpecExample(t *testing.T) {
	text, keys := specExample(t)
	p, err := policy.Parse([]byte(text))
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Logs) != 1 || len(p.Witnesses) != 6 || len(p.Groups) != 3 || p.Quorum != "X-and-Y" {
		t.Fatalf("parsed %d logs, %d witnesses, %d groups, quorum %q", len(p.Logs), len(p.Witnesses), len(p.Groups), p.Quorum)
	}
	if p.Logs[0].Name != "example.com/log" || p.Logs[0].Line != 1 {
		t.Errorf("log = %+v", p.Logs[0])
	}
	w, ok := p.Witness("Y2")
	if !ok || w.VerifierKey != keys["Y2"] || w.Name != "Y2" || w.Key.Name != "witness.example/Y2" || w.Type != policy.TypeCosignatureV1 || w.Verifier == nil {
		t.Errorf("Witness(Y2) = %+v, %v", w, ok)
	}
	if g := p.Groups[0]; g.Name != "X-witnesses" || g.Threshold != 2 || len(g.Members) != 3 {
		t.Errorf("group 0 = %+v", g)
	}
	if g := p.Groups[2]; g.Threshold != 2 {
		t.Errorf("all of 2 members: threshold %d", g.Threshold)
	}
	for _, tt := range []struct {
		set  string
		want bool
	}{
		{"", false},
		{"X1 X2", false},
		{"X1 X2 X3", false},
		{"Y1 Y2 Y3", false},
		{"X1 Y1", false},
		{"X1 X2 Y3", true},
		{"X1 X3 Y1 Y2", true},
		{"X1 X2 X3 Y1 Y2 Y3", true},
		{"X1 X2 X-witnesses Y-witnesses", false}, // groups are not witnesses
		{"X1 X2 Y9 Z", false},
	} {
		set := map[string]bool{}
		for _, n := range strings.Fields(tt.set) {
			set[n] = true
		}
		if got := p.Satisfied(set); got != tt.want {
			t.Errorf("Satisfied(%s) = %v, want %v", tt.set, got, tt.want)
		}
	}
}

func TestParseValid(t *testing.T) {
	w1, _ := witnessKey(t, "w1.example")
	w2, _ := witnessKey(t, "w2.example")
	_, mlvkey, err := fmtnote.GenerateMLDSAKey("pq.example/w")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		text   string
		quorum string
		check  func(t *testing.T, p *policy.Policy)
	}{
		{"quorum none alone", "quorum none\n", "none", func(t *testing.T, p *policy.Policy) {
			if !p.Satisfied(nil) {
				t.Error("quorum none not satisfied by no witness")
			}
		}},
		{"no final newline", "quorum none", "none", nil},
		{"comments, blanks, tabs", "# a policy\n   # indented comment\n\t\n \twitness\tA  " + w1 + " \t https://w1.example/prefix \nquorum A\t\n", "A", func(t *testing.T, p *policy.Policy) {
			if w := p.Witnesses[0]; w.URL != "https://w1.example/prefix" || w.Line != 4 {
				t.Errorf("witness = %+v", w)
			}
			if !p.Satisfied(map[string]bool{"A": true}) || p.Satisfied(map[string]bool{"B": true}) {
				t.Error("single-witness quorum misjudged")
			}
		}},
		{"witness after quorum", "witness A " + w1 + "\nquorum A\nwitness B " + w2 + "\n", "A", nil},
		{"keywords as names", "witness all " + w1 + "\nwitness 2 " + w2 + "\ngroup any 2 all 2\nquorum any\n", "any", func(t *testing.T, p *policy.Policy) {
			if p.Groups[0].Threshold != 2 || !p.Satisfied(map[string]bool{"all": true, "2": true}) {
				t.Errorf("group = %+v", p.Groups[0])
			}
		}},
		{"threshold with leading zero", "witness A " + w1 + "\nwitness B " + w2 + "\ngroup G 02 A B\nquorum G\n", "G", func(t *testing.T, p *policy.Policy) {
			if p.Groups[0].Threshold != 2 {
				t.Errorf("threshold %d", p.Groups[0].Threshold)
			}
		}},
		{"non-ASCII names", "witness K\xe2\x84\xaa " + w1 + "\nwitness K " + w2 + "\ngroup G any K\xe2\x84\xaa\nquorum G\n", "G", func(t *testing.T, p *policy.Policy) {
			if p.Satisfied(map[string]bool{"K": true}) || !p.Satisfied(map[string]bool{"K\xe2\x84\xaa": true}) {
				t.Error("names are not opaque octet strings")
			}
		}},
		{"ML-DSA-44 witness", "witness P " + mlvkey + "\nquorum P\n", "P", func(t *testing.T, p *policy.Policy) {
			if p.Witnesses[0].Type != policy.TypeMLDSA44 || p.Witnesses[0].Verifier == nil {
				t.Errorf("witness = %+v", p.Witnesses[0])
			}
		}},
		{"group of a group", "witness A " + w1 + "\nwitness B " + w2 + "\ngroup G1 any A\ngroup G2 all G1 B\nquorum G2\n", "G2", func(t *testing.T, p *policy.Policy) {
			if p.Satisfied(map[string]bool{"A": true}) || !p.Satisfied(map[string]bool{"A": true, "B": true}) {
				t.Error("nested groups misjudged")
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := policy.Parse([]byte(tt.text))
			if err != nil {
				t.Fatal(err)
			}
			if p.Quorum != tt.quorum {
				t.Errorf("quorum %q, want %q", p.Quorum, tt.quorum)
			}
			if tt.check != nil {
				tt.check(t, p)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	w1, _ := witnessKey(t, "w1.example")
	// The uppercase case needs a key ID with a letter in it; one in 43 has
	// only digits, which uppercasing leaves as they are.
	for upperID(w1) == w1 {
		w1, _ = witnessKey(t, "w1.example")
	}
	w2, _ := witnessKey(t, "w2.example")
	l1 := logKey(t, "example.com/log")
	// w1 again, under another name (same public key).
	w1again := "other.example/w1+" + strings.SplitN(w1, "+", 3)[1] + "+" + strings.SplitN(w1, "+", 3)[2]
	w1again = fixID(t, w1again)
	badID := strings.Replace(w1, "+"+strings.SplitN(w1, "+", 3)[1]+"+", "+00000000+", 1)
	tests := []struct {
		name string
		text string
		line int
		msg  string
	}{
		{"empty", "", 0, "no quorum line"},
		{"only comments", "# nothing\n", 0, "no quorum line"},
		{"two quorums", "quorum none\nquorum none\n", 2, "second quorum line"},
		{"quorum undefined", "quorum A\n", 1, "not a witness or group defined"},
		{"quorum defined later", "quorum A\nwitness A " + w1 + "\n", 1, "defined on line 2, after its use"},
		{"quorum extra field", "quorum none x\n", 1, "want \"quorum <name>\""},
		{"unknown keyword", "witnesses A " + w1 + "\nquorum none\n", 1, "unknown keyword"},
		{"uppercase keyword", "Quorum none\n", 1, "keywords are lowercase"},
		{"carriage return", "quorum none\r\n", 1, "carriage return"},
		{"control char", "# a\x01b\nquorum none\n", 1, "control character 0x01"},
		{"DEL", "quorum none\x7f\n", 1, "control character 0x7F"},
		{"witness fields", "witness A\nquorum none\n", 1, "want \"witness <name> <vkey> [<url>]\""},
		{"witness too many fields", "witness A " + w1 + " url extra\nquorum none\n", 1, "got 5 fields"},
		{"witness named none", "witness none " + w1 + "\nquorum none\n", 1, "predefined"},
		{"witness twice", "witness A " + w1 + "\nwitness A " + w2 + "\nquorum A\n", 2, "already defined on line 1"},
		{"group named like a witness", "witness A " + w1 + "\ngroup A any A\nquorum A\n", 2, "already defined on line 1"},
		{"duplicate witness key", "witness A " + w1 + "\nwitness B " + w1again + "\nquorum A\n", 2, "same public key as witness \"A\" on line 1"},
		{"witness plain ed25519 key", "witness A " + l1 + "\nquorum A\n", 1, "type 0x04"},
		{"witness bad key ID", "witness A " + badID + "\nquorum A\n", 1, "does not match the key"},
		{"witness not a vkey", "witness A nonsense\nquorum A\n", 1, "not a verifier key"},
		{"witness bad base64", "witness A w.example+01234567+!!!!\nquorum A\n", 1, "not standard base64"},
		{"witness uppercase ID", "witness A " + upperID(w1) + "\nquorum A\n", 1, "lowercase hexadecimal"},
		{"log fields", "log\nquorum none\n", 1, "want \"log <vkey> [<url>]\""},
		{"duplicate log", "log " + l1 + "\nlog " + fixID(t, "example.com/x+"+strings.SplitN(l1, "+", 3)[1]+"+"+strings.SplitN(l1, "+", 3)[2]) + "\nquorum none\n", 2, "duplicate logs"},
		{"log with witness key", "log " + w1 + "\nquorum none\n", 1, "witness cosignature key"},
		{"group no members", "witness A " + w1 + "\ngroup G any\nquorum G\n", 2, "at least one member"},
		{"group undefined member", "witness A " + w1 + "\ngroup G any A B\nquorum G\n", 2, "\"B\" is not a witness or group"},
		{"group member defined later", "witness A " + w1 + "\ngroup G any A B\nwitness B " + w2 + "\nquorum G\n", 2, "defined on line 3, after its use"},
		{"group self reference", "witness A " + w1 + "\ngroup G any A G\nquorum G\n", 2, "after its use"},
		{"group none member", "witness A " + w1 + "\ngroup G any A none\nquorum G\n", 2, "cannot be a group member"},
		{"group member twice", "witness A " + w1 + "\ngroup G any A A\nquorum G\n", 2, "listed twice"},
		{"threshold zero", "witness A " + w1 + "\ngroup G 0 A\nquorum G\n", 2, "out of range"},
		{"threshold too big", "witness A " + w1 + "\ngroup G 2 A\nquorum G\n", 2, "out of range"},
		{"threshold huge", "witness A " + w1 + "\ngroup G 99999999999999999999999 A\nquorum G\n", 2, "out of range"},
		{"threshold signed", "witness A " + w1 + "\ngroup G +1 A\nquorum G\n", 2, "not all, any or a decimal"},
		{"threshold keyword case", "witness A " + w1 + "\ngroup G ALL A\nquorum G\n", 2, "not all, any or a decimal"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := policy.Parse([]byte(tt.text))
			if err == nil {
				t.Fatal("Parse succeeded")
			}
			if !errors.Is(err, policy.ErrMalformed) {
				t.Errorf("error %v does not wrap ErrMalformed", err)
			}
			var se *policy.SyntaxError
			if !errors.As(err, &se) || se.Line != tt.line {
				t.Errorf("error %v: want line %d", err, tt.line)
			}
			if !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("error %q does not say %q", err, tt.msg)
			}
		})
	}
}

// upperID returns vkey with its key ID in uppercase.
func upperID(vkey string) string {
	p := strings.SplitN(vkey, "+", 3)
	return p[0] + "+" + strings.ToUpper(p[1]) + "+" + p[2]
}

// fixID recomputes the key ID of a vkey after its name was changed:
// SHA-256(name || "\n" || type || key)[:4].
func fixID(t testing.TB, vkey string) string {
	t.Helper()
	p := strings.SplitN(vkey, "+", 3)
	raw, err := base64.StdEncoding.DecodeString(p[2])
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.Sum256(append([]byte(p[0]+"\n"), raw...))
	return fmt.Sprintf("%s+%08x+%s", p[0], binary.BigEndian.Uint32(h[:]), p[2])
}

func TestLimits(t *testing.T) {
	var b strings.Builder
	for i := range policy.MaxWitnesses + 1 {
		k, _ := witnessKey(t, fmt.Sprintf("w%d.example", i))
		fmt.Fprintf(&b, "witness W%d %s\n", i, k)
	}
	b.WriteString("quorum none\n")
	_, err := policy.Parse([]byte(b.String()))
	var se *policy.SyntaxError
	if !errors.As(err, &se) || se.Line != policy.MaxWitnesses+1 || !strings.Contains(err.Error(), "more than") {
		t.Errorf("Parse(%d witnesses) = %v", policy.MaxWitnesses+1, err)
	}
	if _, err := policy.Parse(make([]byte, policy.MaxSize+1)); err == nil || !strings.Contains(err.Error(), "limit") {
		t.Errorf("Parse(too large) = %v", err)
	}
}

// TestVerifiers checks that the verifiers of a policy verify cosignatures
// made with transparency-dev/formats' cosignature/v1 signer.
func TestVerifiers(t *testing.T) {
	vkey, signer := witnessKey(t, "w.example/1")
	p, err := policy.Parse([]byte("witness W " + vkey + "\nquorum W\n"))
	if err != nil {
		t.Fatal(err)
	}
	lskey, lvkey, _ := note.GenerateKey(rand.Reader, "example.com/log")
	ls, _ := note.NewSigner(lskey)
	lv, _ := note.NewVerifier(lvkey)
	signed, err := note.Sign(&note.Note{Text: "example.com/log\n1\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"}, ls, signer)
	if err != nil {
		t.Fatal(err)
	}
	n, err := note.Open(signed, note.VerifierList(append(p.Verifiers(), lv)...))
	if err != nil {
		t.Fatal(err)
	}
	if len(n.Sigs) != 2 {
		t.Errorf("%d verified signatures, want 2", len(n.Sigs))
	}
}

func FuzzParse(f *testing.F) {
	text, _ := specExample(f)
	w1, _ := witnessKey(f, "w1.example")
	for _, s := range []string{
		text,
		"quorum none\n",
		"quorum none",
		"# c\n\tquorum none \n",
		"witness A " + w1 + " https://w1.example\nquorum A\n",
		"witness A " + w1 + "\ngroup G 1 A\ngroup H all G A\nquorum H\n",
		"group G any\n",
		"witness A x+y+z\n",
		"quorum A\r\n",
		"log example.com+00000000+AQ==\nquorum none\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := policy.Parse(b)
		if err != nil {
			var se *policy.SyntaxError
			if !errors.As(err, &se) || !errors.Is(err, policy.ErrMalformed) {
				t.Fatalf("error %v is not a SyntaxError wrapping ErrMalformed", err)
			}
			return
		}
		if p.Quorum == "" {
			t.Fatal("accepted policy without a quorum")
		}
		// Every reference resolves, every threshold is in range.
		all := map[string]bool{}
		for _, w := range p.Witnesses {
			if w.Verifier == nil {
				t.Fatalf("witness %q without a verifier", w.Name)
			}
			all[w.Name] = true
		}
		for _, g := range p.Groups {
			if g.Threshold < 1 || g.Threshold > len(g.Members) {
				t.Fatalf("group %q: threshold %d of %d", g.Name, g.Threshold, len(g.Members))
			}
		}
		// Satisfied is monotone: all witnesses satisfy any quorum that
		// some set does, and evaluation never panics.
		if !p.Satisfied(all) && p.Quorum != policy.None {
			// Fine only if the quorum needs groups that need more than
			// there are — impossible, since members are defined.
			t.Fatalf("quorum %q not satisfied by every witness", p.Quorum)
		}
	})
}
