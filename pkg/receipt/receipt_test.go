package receipt_test

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"

	fmtnote "github.com/transparency-dev/formats/note"
	"github.com/transparency-dev/merkle/proof"
	"golang.org/x/mod/sumdb/note"
	sumdb "golang.org/x/mod/sumdb/tlog"

	"github.com/tlog-dev/tlog/pkg/checkpoint"
	"github.com/tlog-dev/tlog/pkg/receipt"
	"github.com/tlog-dev/tlog/pkg/tile"
	"github.com/tlog-dev/tlog/pkg/tree"
)

const header = "c2sp.org/tlog-proof@v1\n"

// memTiles is a hash tile store in memory, keyed by tile with Width 0, that
// keeps the widest version of each tile.
type memTiles map[tile.Tile][]byte

func (m memTiles) put(ts []tree.TileData) {
	for _, td := range ts {
		key := td.Tile
		key.Width = 0
		m[key] = bytes.Clone(td.Hashes)
	}
}

func (m memTiles) ReadTiles(ts []tile.Tile) ([][]byte, error) {
	out := make([][]byte, len(ts))
	for i, t := range ts {
		key := t
		key.Width = 0
		d, ok := m[key]
		if !ok || len(d) < t.Width*tile.HashSize {
			return nil, fmt.Errorf("%w: %s", tree.ErrMissingTile, t.Path())
		}
		out[i] = d
	}
	return out, nil
}

// testLog is a log in memory: leaves entry(0), entry(1), ... in a tree
// built with pkg/tree, and an Ed25519 key.
type testLog struct {
	origin string
	s      note.Signer
	v      note.Verifier
	tiles  memTiles
	edge   *tree.Edge
}

func newLog(t testing.TB, origin string) *testLog {
	t.Helper()
	s, v := newKey(t, origin, rand.Reader)
	return &testLog{origin: origin, s: s, v: v, tiles: memTiles{}, edge: tree.EmptyEdge()}
}

func newKey(t testing.TB, origin string, rnd interface{ Read([]byte) (int, error) }) (note.Signer, note.Verifier) {
	t.Helper()
	skey, vkey, err := checkpoint.GenerateKey(origin, rnd)
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
	return s, v
}

func entry(i uint64) []byte { return binary.BigEndian.AppendUint64([]byte("entry "), i) }

// growTo appends leaves until the tree has size leaves.
func (l *testLog) growTo(t testing.TB, size uint64) {
	t.Helper()
	var leaves []tree.Hash
	for i := l.edge.Size(); i < size; i++ {
		leaves = append(leaves, tree.LeafHash(entry(i)))
	}
	e, tiles, err := l.edge.Append(leaves)
	if err != nil {
		t.Fatal(err)
	}
	l.tiles.put(tiles)
	l.edge = e
}

// checkpoint returns the current checkpoint, signed by the log and by
// cosigners.
func (l *testLog) checkpoint(t testing.TB, cosigners ...note.Signer) (checkpoint.Checkpoint, []byte) {
	t.Helper()
	c := checkpoint.Checkpoint{Origin: l.origin, Size: l.edge.Size(), Hash: l.edge.Root()}
	signed, err := checkpoint.Sign(c, l.s)
	if err != nil {
		t.Fatal(err)
	}
	if len(cosigners) > 0 {
		signed = cosign(t, signed, l.v, cosigners...)
	}
	return c, signed
}

func cosign(t testing.TB, signed []byte, v note.Verifier, cosigners ...note.Signer) []byte {
	t.Helper()
	_, n, err := checkpoint.Open(signed, v)
	if err != nil {
		t.Fatal(err)
	}
	out, err := note.Sign(n, cosigners...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// receipt returns a receipt for leaf index in the current tree.
func (l *testLog) receipt(t testing.TB, index uint64, extra []byte, cosigners ...note.Signer) receipt.Receipt {
	t.Helper()
	p, err := tree.InclusionProof(l.tiles, index, l.edge.Size())
	if err != nil {
		t.Fatal(err)
	}
	_, signed := l.checkpoint(t, cosigners...)
	return receipt.Receipt{Extra: extra, Index: index, Proof: p, Checkpoint: signed}
}

// newWitness returns an Ed25519 cosignature/v1 signer and verifier.
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

// equal reports whether two receipts are equal, not telling nil from empty.
func equal(a, b receipt.Receipt) bool {
	if !bytes.Equal(a.Extra, b.Extra) || a.Index != b.Index || !bytes.Equal(a.Checkpoint, b.Checkpoint) || len(a.Proof) != len(b.Proof) {
		return false
	}
	for i := range a.Proof {
		if !bytes.Equal(a.Proof[i], b.Proof[i]) {
			return false
		}
	}
	return true
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

func TestMarshalParseRoundTrip(t *testing.T) {
	l := newLog(t, "example.com/log")
	l.growTo(t, 1)
	one := l.receipt(t, 0, nil)
	l.growTo(t, 5)
	five := l.receipt(t, 2, nil)
	w, _ := newWitness(t, "witness.example/w1")
	cosigned := l.receipt(t, 4, nil, w)

	withExtra := func(r receipt.Receipt, extra string) receipt.Receipt {
		r.Extra = []byte(extra)
		return r
	}
	tests := []struct {
		name string
		r    receipt.Receipt
		doc  string
	}{
		{"size 1, no proof hashes", one, header + "index 0\n\n" + string(one.Checkpoint)},
		{"size 1 with extra", withExtra(one, "hello"), header + "extra aGVsbG8=\nindex 0\n\n" + string(one.Checkpoint)},
		{"size 5", five, header + "index 2\n" + b64(five.Proof[0]) + "\n" + b64(five.Proof[1]) + "\n" + b64(five.Proof[2]) + "\n\n" + string(five.Checkpoint)},
		{"size 5 with extra", withExtra(five, "\x00\xff binary"), header + "extra AP8gYmluYXJ5\nindex 2\n" + b64(five.Proof[0]) + "\n" + b64(five.Proof[1]) + "\n" + b64(five.Proof[2]) + "\n\n" + string(five.Checkpoint)},
		{"cosigned", cosigned, header + "index 4\n" + b64(cosigned.Proof[0]) + "\n\n" + string(cosigned.Checkpoint)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			doc := tt.r.Marshal()
			if string(doc) != tt.doc {
				t.Fatalf("Marshal =\n%s\nwant\n%s", doc, tt.doc)
			}
			got, err := receipt.Parse(doc)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if !equal(got, tt.r) {
				t.Errorf("Parse(Marshal(r)) = %+v, want %+v", got, tt.r)
			}
			if len(tt.r.Extra) == 0 && got.Extra != nil {
				t.Errorf("Parse returned Extra %q, want nil", got.Extra)
			}
			if m := got.Marshal(); !bytes.Equal(m, doc) {
				t.Errorf("Marshal(Parse(doc)) =\n%s\nwant\n%s", m, doc)
			}
			if _, _, err := receipt.Verify(got, tree.LeafHash(entry(got.Index)), l.v); err != nil {
				t.Errorf("Verify: %v", err)
			}
		})
	}

	// An empty, non-nil Extra is no extra data.
	if m := withExtra(one, "").Marshal(); !bytes.Equal(m, one.Marshal()) {
		t.Errorf("Marshal with empty Extra =\n%s\nwant\n%s", m, one.Marshal())
	}
}

func TestParseDoesNotAlias(t *testing.T) {
	l := newLog(t, "example.com/log")
	l.growTo(t, 3)
	r := l.receipt(t, 1, []byte("x"))
	doc := r.Marshal()
	got, err := receipt.Parse(doc)
	if err != nil {
		t.Fatal(err)
	}
	clear(doc)
	if !equal(got, r) {
		t.Errorf("receipt changed when the parsed document was overwritten: %+v", got)
	}
}

// specExample is the example in c2sp.org/tlog-proof, whose signatures are
// elided with "[...]".
const specExample = `c2sp.org/tlog-proof@v1
extra YWdlLXYxLjIuMS1kYXJ3aW4tYXJtNjQudGFyLmd6kYXJ3aW4tYXJ
index 73894
gSKyXoYZUgZ6jduWYrkDOARinOMGJveXjgMkBTcdPlQ=
B95lDa8R83lS8n0eG+o0buTxRKQTYFi//1U8anccXmA=
EKNzoDWG8LGC0Yp9o+sv3qllpMP9uHQ9B20KNL+Q1zs=
RoopEkOdqkYqMB4MJXrbt/hMjOxsVn0IrWjpz1ZMMes=
AHCioX9nLjsrse6YhjRRmk1WUEirVOLLRoOQ6vfO5vk=

example.com/fancylog
109482
sFodV/vSp5O8n9a8QpW6PRY97tfOSW5bsc2Xl/EQi08=

— example.com/fancylog hI2DJw[...]1roloI=
— witness1.example mJirIklj[...]qY9v2B/5bg==
— witness2.example TnKKVHLX[...]xwYwrSjgow==
— witness3.example S4X82uH5[...]3oEcROGLFQ==
`

func TestSpecExample(t *testing.T) {
	// As printed, the signature lines are not base64.
	_, err := receipt.Parse([]byte(specExample))
	if !errors.Is(err, receipt.ErrMalformed) || !strings.Contains(err.Error(), `line 14: checkpoint signature by "example.com/fancylog" is not base64`) {
		t.Errorf("Parse(spec example) error = %v, want one about line 14's signature", err)
	}

	// With the signatures filled in (with bytes that verify under no key),
	// it parses.
	sig := func(b byte) string { return b64(bytes.Repeat([]byte{b}, 4+64)) }
	doc := strings.NewReplacer(
		"hI2DJw[...]1roloI=", sig(1),
		"mJirIklj[...]qY9v2B/5bg==", sig(2),
		"TnKKVHLX[...]xwYwrSjgow==", sig(3),
		"S4X82uH5[...]3oEcROGLFQ==", sig(4),
	).Replace(specExample)
	r, err := receipt.Parse([]byte(doc))
	if err != nil {
		t.Fatalf("Parse(spec example with signatures): %v", err)
	}
	wantExtra, _ := base64.StdEncoding.DecodeString("YWdlLXYxLjIuMS1kYXJ3aW4tYXJtNjQudGFyLmd6kYXJ3aW4tYXJ")
	if !bytes.HasPrefix(r.Extra, []byte("age-v1.2.1-darwin-arm64.tar.gz")) || !bytes.Equal(r.Extra, wantExtra) {
		t.Errorf("Extra = %q", r.Extra)
	}
	if r.Index != 73894 {
		t.Errorf("Index = %d, want 73894", r.Index)
	}
	lines := strings.Split(doc, "\n")
	if len(r.Proof) != 5 {
		t.Fatalf("Proof has %d hashes, want 5", len(r.Proof))
	}
	for i, h := range r.Proof {
		if b64(h) != lines[3+i] {
			t.Errorf("Proof[%d] = %s, want %s", i, b64(h), lines[3+i])
		}
	}
	if want := doc[strings.Index(doc, "\n\n")+2:]; string(r.Checkpoint) != want {
		t.Errorf("Checkpoint = %q, want %q", r.Checkpoint, want)
	}
	if m := r.Marshal(); string(m) != doc {
		t.Errorf("Marshal(Parse(doc)) =\n%s\nwant\n%s", m, doc)
	}

	// Verify reads it but finds no signature by the log's key.
	_, v := newKey(t, "example.com/fancylog", rand.Reader)
	if _, _, err := receipt.Verify(r, [32]byte{}, v); !errors.Is(err, checkpoint.ErrSignature) {
		t.Errorf("Verify error = %v, want ErrSignature", err)
	}
}

// TestSpecShape builds a real receipt with the example's numbers (index 73894
// in a tree of 109482 leaves, extra data, three witnesses), checks that it
// has the example's shape, and verifies it.
func TestSpecShape(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a tree of 109482 leaves")
	}
	l := newLog(t, "example.com/fancylog")
	l.growTo(t, 109482)
	var ws []note.Signer
	var wvs []note.Verifier
	for i := 1; i <= 3; i++ {
		s, v := newWitness(t, fmt.Sprintf("witness%d.example", i))
		ws, wvs = append(ws, s), append(wvs, v)
	}
	r := l.receipt(t, 73894, []byte("age-v1.2.1-darwin-arm64.tar.gz"), ws...)
	doc := string(r.Marshal())
	t.Logf("receipt:\n%s", doc)

	lines := strings.Split(strings.TrimSuffix(doc, "\n"), "\n")
	p := len(r.Proof)
	if p != 17 { // 73894 ^ 109481 has 17 bits; 73894 >> 17 == 0
		t.Errorf("proof has %d hashes, want 17", p)
	}
	want := []string{
		"c2sp.org/tlog-proof@v1",
		"extra YWdlLXYxLjIuMS1kYXJ3aW4tYXJtNjQudGFyLmd6",
		"index 73894",
	}
	for i := range p {
		want = append(want, b64(r.Proof[i]))
	}
	root := l.edge.Root()
	want = append(want, "", "example.com/fancylog", "109482", b64(root[:]), "")
	if len(lines) != len(want)+4 {
		t.Fatalf("document has %d lines, want %d", len(lines), len(want)+4)
	}
	for i, w := range want {
		if lines[i] != w {
			t.Errorf("line %d = %q, want %q", i+1, lines[i], w)
		}
	}
	for i, name := range []string{"example.com/fancylog", "witness1.example", "witness2.example", "witness3.example"} {
		if l := lines[len(want)+i]; !strings.HasPrefix(l, "— "+name+" ") {
			t.Errorf("line %d = %q, want a signature by %s", len(want)+i+1, l, name)
		}
	}

	parsed, err := receipt.Parse([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	c, n, err := receipt.Verify(parsed, tree.LeafHash(entry(73894)), l.v, wvs...)
	if err != nil {
		t.Fatal(err)
	}
	if c.Size != 109482 || c.Hash != root || len(n.Sigs) != 4 {
		t.Errorf("Verify = %+v with %d verified signatures, want size 109482 and 4", c, len(n.Sigs))
	}
	checkSumdb(t, parsed, root, tree.LeafHash(entry(73894)))
}

// checkSumdb checks r's proof with golang.org/x/mod/sumdb/tlog.
func checkSumdb(t testing.TB, r receipt.Receipt, root, leaf tree.Hash) {
	t.Helper()
	body := r.Checkpoint[:bytes.LastIndex(r.Checkpoint, []byte("\n\n"))+1]
	c, err := checkpoint.Parse(body)
	if err != nil {
		t.Fatal(err)
	}
	if c.Hash != root {
		t.Fatalf("checkpoint root %x, want %x", c.Hash, root)
	}
	p := make(sumdb.RecordProof, len(r.Proof))
	for i, h := range r.Proof {
		p[i] = sumdb.Hash(h)
	}
	if err := sumdb.CheckRecord(p, int64(c.Size), sumdb.Hash(c.Hash), int64(r.Index), sumdb.Hash(leaf)); err != nil {
		t.Errorf("sumdb CheckRecord(index %d, size %d): %v", r.Index, c.Size, err)
	}
}

func TestVerify(t *testing.T) {
	l := newLog(t, "example.com/log")
	var sizes []uint64
	for s := uint64(1); s <= 33; s++ {
		sizes = append(sizes, s)
	}
	sizes = append(sizes, 255, 256, 257, 1000, 65536, 65537, 70000)
	for _, size := range sizes {
		l.growTo(t, size)
		c, signed := l.checkpoint(t)
		indexes := []uint64{0, 1, size / 3, size / 2, size - 2, size - 1}
		if size <= 257 {
			indexes = indexes[:0]
			for i := range size {
				indexes = append(indexes, i)
			}
		}
		for _, i := range indexes {
			if i >= size {
				continue
			}
			p, err := tree.InclusionProof(l.tiles, i, size)
			if err != nil {
				t.Fatal(err)
			}
			r := receipt.Receipt{Index: i, Proof: p, Checkpoint: signed}
			r, err = receipt.Parse(r.Marshal())
			if err != nil {
				t.Fatalf("size %d, index %d: Parse(Marshal): %v", size, i, err)
			}
			leaf := tree.LeafHash(entry(i))
			got, n, err := receipt.Verify(r, leaf, l.v)
			if err != nil {
				t.Fatalf("size %d, index %d: Verify: %v", size, i, err)
			}
			if got.Size != c.Size || got.Hash != c.Hash || got.Origin != c.Origin {
				t.Errorf("size %d, index %d: Verify returned %+v, want %+v", size, i, got, c)
			}
			if len(n.Sigs) != 1 || n.Sigs[0].Name != l.origin || n.Sigs[0].Hash != l.v.KeyHash() {
				t.Errorf("size %d, index %d: note Sigs = %+v, want the log's", size, i, n.Sigs)
			}
			checkSumdb(t, r, c.Hash, leaf)
		}
	}
}

func TestVerifyFailures(t *testing.T) {
	l := newLog(t, "example.com/log")
	l.growTo(t, 13)
	good := l.receipt(t, 6, nil)
	leaf := tree.LeafHash(entry(6))
	if _, _, err := receipt.Verify(good, leaf, l.v); err != nil {
		t.Fatalf("good receipt: %v", err)
	}

	otherS, otherV := newKey(t, "example.com/log", rand.Reader) // same origin, another key
	_, elsewhereV := newKey(t, "example.com/other", rand.Reader)
	c, _ := l.checkpoint(t)

	with := func(f func(r *receipt.Receipt)) receipt.Receipt {
		r := good
		r.Proof = make([][]byte, len(good.Proof))
		for i, h := range good.Proof {
			r.Proof[i] = bytes.Clone(h)
		}
		f(&r)
		return r
	}
	sign := func(c checkpoint.Checkpoint, s note.Signer) []byte {
		signed, err := checkpoint.Sign(c, s)
		if err != nil {
			t.Fatal(err)
		}
		return signed
	}
	// A checkpoint of the next tree, whose proof for index 6 has the same
	// length.
	var leaves []tree.Hash
	for i := range uint64(14) {
		leaves = append(leaves, tree.LeafHash(entry(i)))
	}
	next, _, err := tree.EmptyEdge().Append(leaves)
	if err != nil {
		t.Fatal(err)
	}
	bigger := checkpoint.Checkpoint{Origin: l.origin, Size: 14, Hash: next.Root()}

	type tc struct {
		name string
		r    receipt.Receipt
		leaf tree.Hash
		v    note.Verifier
		is   error  // the error must wrap this
		want string // and contain this
	}
	tests := []tc{
		{"wrong leaf", good, tree.LeafHash(entry(7)), l.v, receipt.ErrInvalid, "leads to root hash"},
		{"leaf not hashed", good, sha256.Sum256(entry(6)), l.v, receipt.ErrInvalid, "leads to root hash"},
		{"index + 1", with(func(r *receipt.Receipt) { r.Index++ }), leaf, l.v, receipt.ErrInvalid, "leads to root hash"},
		{"index - 1", with(func(r *receipt.Receipt) { r.Index-- }), leaf, l.v, receipt.ErrInvalid, "leads to root hash"},
		{"index of other length", with(func(r *receipt.Receipt) { r.Index = 12 }), leaf, l.v, receipt.ErrInvalid, "proof has 4 hashes, want 2 for index 12 in a tree of size 13"},
		{"index = size", with(func(r *receipt.Receipt) { r.Index = 13 }), leaf, l.v, receipt.ErrInvalid, "index 13 is not in the tree of size 13"},
		{"index max", with(func(r *receipt.Receipt) { r.Index = math.MaxUint64 }), leaf, l.v, receipt.ErrInvalid, "is not in the tree of size 13"},
		{"proof too short", with(func(r *receipt.Receipt) { r.Proof = r.Proof[1:] }), leaf, l.v, receipt.ErrInvalid, "proof has 3 hashes, want 4"},
		{"proof too long", with(func(r *receipt.Receipt) { r.Proof = append(r.Proof, r.Proof[0]) }), leaf, l.v, receipt.ErrInvalid, "proof has 5 hashes, want 4"},
		{"no proof", with(func(r *receipt.Receipt) { r.Proof = nil }), leaf, l.v, receipt.ErrInvalid, "proof has 0 hashes, want 4"},
		{"proof reversed", with(func(r *receipt.Receipt) {
			for i, j := 0, len(r.Proof)-1; i < j; i, j = i+1, j-1 {
				r.Proof[i], r.Proof[j] = r.Proof[j], r.Proof[i]
			}
		}), leaf, l.v, receipt.ErrInvalid, "leads to root hash"},
		{"short proof hash", with(func(r *receipt.Receipt) { r.Proof[2] = r.Proof[2][:31] }), leaf, l.v, receipt.ErrMalformed, "proof hash 2 is 31 bytes, want 32"},
		{"long proof hash", with(func(r *receipt.Receipt) { r.Proof[0] = append(r.Proof[0], 0) }), leaf, l.v, receipt.ErrMalformed, "proof hash 0 is 33 bytes, want 32"},
		{"checkpoint of a bigger tree", with(func(r *receipt.Receipt) { r.Checkpoint = sign(bigger, l.s) }), leaf, l.v, receipt.ErrInvalid, "leads to root hash"},
		{"signed by another key", with(func(r *receipt.Receipt) { r.Checkpoint = sign(c, otherS) }), leaf, l.v, checkpoint.ErrSignature, "no signature by log key"},
		{"verified with another key", good, leaf, otherV, checkpoint.ErrSignature, "no signature by log key"},
		{"another log's verifier", good, leaf, elsewhereV, checkpoint.ErrSignature, "no signature by log key"},
		{"checkpoint size changed after signing", with(func(r *receipt.Receipt) {
			r.Checkpoint = bytes.Replace(r.Checkpoint, []byte("\n13\n"), []byte("\n14\n"), 1)
		}), leaf, l.v, checkpoint.ErrSignature, "invalid signature"},
		{"checkpoint not a note", with(func(r *receipt.Receipt) { r.Checkpoint = c.Marshal() }), leaf, l.v, checkpoint.ErrSignature, "no signature lines"},
		{"empty checkpoint", with(func(r *receipt.Receipt) { r.Checkpoint = nil }), leaf, l.v, checkpoint.ErrSignature, ""},
		{"nil verifier", good, leaf, nil, nil, "nil verifier"},
	}
	for i := range good.Proof {
		for _, bit := range []byte{0x01, 0x80} {
			tests = append(tests, tc{
				fmt.Sprintf("flipped bit %#x of proof hash %d", bit, i),
				with(func(r *receipt.Receipt) { r.Proof[i][i*7%32] ^= bit }),
				leaf, l.v, receipt.ErrInvalid, "leads to root hash",
			})
		}
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, n, err := receipt.Verify(tt.r, tt.leaf, tt.v)
			if err == nil {
				t.Fatal("Verify succeeded")
			}
			t.Log(err)
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("error %v does not wrap %v", err, tt.is)
			}
			if errors.Is(tt.is, checkpoint.ErrSignature) && errors.Is(err, receipt.ErrInvalid) {
				t.Errorf("signature error %v wraps ErrInvalid", err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not contain %q", err, tt.want)
			}
			if c.Origin != "" || c.Size != 0 || c.Hash != [32]byte{} || n != nil {
				t.Errorf("Verify returned %+v, %v with an error", c, n)
			}
		})
	}
}

func TestVerifyWitnesses(t *testing.T) {
	l := newLog(t, "example.com/log")
	l.growTo(t, 10)
	w1S, w1V := newWitness(t, "witness.example/w1")
	w2S, w2V := newWitness(t, "witness.example/w2")
	_, w3V := newWitness(t, "witness.example/w3") // did not cosign
	r := l.receipt(t, 3, nil, w1S, w2S)
	leaf := tree.LeafHash(entry(3))

	_, n, err := receipt.Verify(r, leaf, l.v, w1V, w3V)
	if err != nil {
		t.Fatal(err)
	}
	var verified []string
	for _, s := range n.Sigs {
		verified = append(verified, s.Name)
	}
	if got, want := strings.Join(verified, ","), "example.com/log,witness.example/w1"; got != want {
		t.Errorf("verified signatures %s, want %s", got, want)
	}
	if len(n.UnverifiedSigs) != 1 || n.UnverifiedSigs[0].Name != "witness.example/w2" {
		t.Errorf("unverified signatures %+v, want w2's", n.UnverifiedSigs)
	}

	_, n, err = receipt.Verify(r, leaf, l.v, w1V, w2V)
	if err != nil || len(n.Sigs) != 3 {
		t.Errorf("Verify with both witnesses: %v, %d verified signatures, want 3", err, len(n.Sigs))
	}

	// A cosignature by a known witness that does not verify rejects the
	// receipt, even though the log's signature and the proof are good.
	bad := r
	bad.Checkpoint = bytes.Clone(r.Checkpoint)
	sigLine := bytes.LastIndex(bad.Checkpoint, []byte("— witness.example/w1 "))
	sigStart := sigLine + len("— witness.example/w1 ")
	sig, err := base64.StdEncoding.DecodeString(string(bad.Checkpoint[sigStart : sigStart+bytes.IndexByte(bad.Checkpoint[sigStart:], '\n')]))
	if err != nil {
		t.Fatal(err)
	}
	sig[len(sig)-1] ^= 1
	copy(bad.Checkpoint[sigStart:], b64(sig))
	if _, err := receipt.Parse(bad.Marshal()); err != nil {
		t.Fatalf("tampered receipt does not parse: %v", err)
	}
	_, _, err = receipt.Verify(bad, leaf, l.v, w1V)
	if !errors.Is(err, checkpoint.ErrSignature) || errors.Is(err, receipt.ErrInvalid) {
		t.Errorf("bad cosignature: error %v, want ErrSignature", err)
	}
	var invalid *note.InvalidSignatureError
	if !errors.As(err, &invalid) || invalid.Name != "witness.example/w1" {
		t.Errorf("bad cosignature: error %v does not wrap w1's *note.InvalidSignatureError", err)
	}
	// Without w1's verifier, its signature is just unknown.
	if _, _, err := receipt.Verify(bad, leaf, l.v); err != nil {
		t.Errorf("bad cosignature by an unknown witness: %v", err)
	}
}

// TestMaxProofHashes checks the bound on proof lines: a tree of 2^64-1
// leaves has proofs of 64 hashes.
func TestMaxProofHashes(t *testing.T) {
	nodes, err := proof.Inclusion(0, math.MaxUint64)
	if err != nil {
		t.Fatal(err)
	}
	hashes, err := nodes.Rehash(make([][]byte, len(nodes.IDs)), func(_, _ []byte) []byte { return nil })
	if err != nil {
		t.Fatal(err)
	}
	if len(hashes) != receipt.MaxProofHashes {
		t.Fatalf("proof.Inclusion(0, 2^64-1) has %d hashes, want MaxProofHashes = %d", len(hashes), receipt.MaxProofHashes)
	}

	s, v := newKey(t, "example.com/huge", rand.Reader)
	signed, err := checkpoint.Sign(checkpoint.Checkpoint{Origin: "example.com/huge", Size: math.MaxUint64}, s)
	if err != nil {
		t.Fatal(err)
	}
	r := receipt.Receipt{Index: 0, Checkpoint: signed}
	for range receipt.MaxProofHashes {
		r.Proof = append(r.Proof, make([]byte, 32))
	}
	r, err = receipt.Parse(r.Marshal())
	if err != nil {
		t.Fatalf("Parse with %d hashes: %v", receipt.MaxProofHashes, err)
	}
	// The length is right, so Verify gets to compute the root.
	if _, _, err := receipt.Verify(r, [32]byte{}, v); !errors.Is(err, receipt.ErrInvalid) || !strings.Contains(err.Error(), "leads to root hash") {
		t.Errorf("Verify with %d hashes: %v, want a root mismatch", receipt.MaxProofHashes, err)
	}

	r.Proof = append(r.Proof, make([]byte, 32))
	_, err = receipt.Parse(r.Marshal())
	if want := "line 67: more than 64 proof hashes"; !errors.Is(err, receipt.ErrMalformed) || !strings.Contains(err.Error(), want) {
		t.Errorf("Parse with %d hashes: %v, want %q", len(r.Proof), err, want)
	}
}

func TestParseMalformed(t *testing.T) {
	l := newLog(t, "example.com/log")
	l.growTo(t, 5)
	good := l.receipt(t, 2, []byte("hi"))
	cp := string(good.Checkpoint)
	h0, h1, h2 := b64(good.Proof[0]), b64(good.Proof[1]), b64(good.Proof[2])
	proofLines := h0 + "\n" + h1 + "\n" + h2 + "\n"
	doc := header + "extra aGk=\nindex 2\n" + proofLines + "\n" + cp
	if string(good.Marshal()) != doc {
		t.Fatalf("Marshal =\n%s\nwant\n%s", good.Marshal(), doc)
	}
	if _, err := receipt.Parse([]byte(doc)); err != nil {
		t.Fatalf("good document: %v", err)
	}
	c, _ := l.checkpoint(t)
	body := string(c.Marshal())
	sigs := cp[len(body)+1:]
	pre := header + "index 2\n" + proofLines + "\n" // a preamble for checkpoint cases; the checkpoint starts on line 7

	tests := []struct {
		name string
		doc  string
		want string // fragment of the error message
	}{
		{"empty", "", "malformed tlog-proof: empty document"},
		{"newline", "\n", "line 1: \"\" is not the header line"},
		{"wrong version", strings.Replace(doc, "@v1", "@v2", 1), `line 1: "c2sp.org/tlog-proof@v2" is not the header line "c2sp.org/tlog-proof@v1"`},
		{"header trailing space", strings.Replace(doc, "@v1", "@v1 ", 1), "line 1: \"c2sp.org/tlog-proof@v1 \" is not the header line"},
		{"header only, no newline", "c2sp.org/tlog-proof@v1", "line 1: document ends without a newline"},
		{"header only", header, `document ends after line 1, want the "index" line`},
		{"checkpoint first", cp, "line 1: \"example.com/log\" is not the header line"},
		{"CRLF", strings.ReplaceAll(doc, "\n", "\r\n"), "line 1: contains a carriage return (U+000D)"},
		{"CR in checkpoint", strings.Replace(doc, "example.com/log\n", "example.com/log\r\n", 1), "line 8: contains a carriage return"},
		{"tab", strings.Replace(doc, "index 2", "index\t2", 1), "line 3: contains control character U+0009"},
		{"NUL", doc + "\x00", "line 13: contains control character U+0000"},
		{"invalid UTF-8", strings.Replace(doc, "extra aGk=", "extra \xff", 1), "line 2: invalid UTF-8"},

		{"no index", header + proofLines + "\n" + cp, `line 2: "` + h0 + `" is not the index line`},
		{"index, no number", strings.Replace(doc, "index 2", "index", 1), `line 3: "index" is not the index line ("index " and a decimal number)`},
		{"index empty", strings.Replace(doc, "index 2", "index ", 1), "line 3: index is empty"},
		{"index capitalized", strings.Replace(doc, "index 2", "Index 2", 1), `line 3: "Index 2" is not the index line`},
		{"index two spaces", strings.Replace(doc, "index 2", "index  2", 1), `line 3: index " 2" is not a decimal number`},
		{"index trailing space", strings.Replace(doc, "index 2", "index 2 ", 1), `line 3: index "2 " is not a decimal number`},
		{"index plus", strings.Replace(doc, "index 2", "index +2", 1), `line 3: index "+2" is not a decimal number`},
		{"index negative", strings.Replace(doc, "index 2", "index -2", 1), `line 3: index "-2" is not a decimal number`},
		{"index hex", strings.Replace(doc, "index 2", "index 0x2", 1), `line 3: index "0x2" is not a decimal number`},
		{"index leading zero", strings.Replace(doc, "index 2", "index 02", 1), `line 3: index "02" has a leading zero`},
		{"index 00", strings.Replace(doc, "index 2", "index 00", 1), `line 3: index "00" has a leading zero`},
		{"index overflow", strings.Replace(doc, "index 2", "index 18446744073709551616", 1), `line 3: index "18446744073709551616" does not fit in 64 bits`},
		{"index Arabic-Indic digit", strings.Replace(doc, "index 2", "index ٢", 1), `line 3: index "٢" is not a decimal number`},

		{"extra empty", strings.Replace(doc, "extra aGk=", "extra ", 1), "line 2: extra data is empty (omit the extra line when there is none)"},
		{"extra no space", strings.Replace(doc, "extra aGk=", "extra", 1), `line 2: "extra" is not the index line`},
		{"extra unpadded", strings.Replace(doc, "extra aGk=", "extra aGk", 1), `line 2: extra data "aGk" is not canonical standard base64`},
		{"extra non-canonical", strings.Replace(doc, "extra aGk=", "extra aGl=", 1), `line 2: extra data "aGl=" is not canonical standard base64`},
		{"extra URL alphabet", strings.Replace(doc, "extra aGk=", "extra -_8=", 1), `line 2: extra data "-_8=" is not canonical standard base64`},
		{"extra twice", strings.Replace(doc, "extra aGk=\n", "extra aGk=\nextra aGk=\n", 1), `line 3: "extra aGk=" is not the index line`},
		{"extra after index", header + "index 2\nextra aGk=\n" + proofLines + "\n" + cp, `line 3: proof hash "extra aGk=" is 10 characters, want 44`},
		{"extra too big", strings.Replace(doc, "extra aGk=", "extra "+b64(make([]byte, receipt.MaxExtraSize+3)), 1), "line 2: extra data is 87388 base64 characters, more than the limit of 87384 (65536 bytes)"},
		{"extra one byte too big", strings.Replace(doc, "extra aGk=", "extra "+b64(make([]byte, receipt.MaxExtraSize+1)), 1), "line 2: extra data is 65537 bytes, more than the limit of 65536"},
		{"extra too big, unpadded", strings.Replace(doc, "extra aGk=", "extra "+strings.Repeat("AAAA", receipt.MaxExtraSize/3+1), 1), "line 2: extra data is 65538 bytes, more than the limit of 65536"},

		{"proof hash unpadded", strings.Replace(doc, h1, strings.TrimRight(h1, "="), 1), "line 5: proof hash \"" + strings.TrimRight(h1, "=") + "\" is 43 characters, want 44 (base64 of 32 bytes)"},
		{"proof hash trailing space", strings.Replace(doc, h1, h1+" ", 1), "line 5: proof hash \"" + h1 + " \" is 45 characters, want 44"},
		{"proof hash of 33 bytes", strings.Replace(doc, h1, b64(make([]byte, 33)), 1), "line 5: proof hash \"" + b64(make([]byte, 33)) + "\" decodes to 33 bytes, want 32"},
		{"proof hash non-canonical", strings.Replace(doc, h1, h1[:42]+"B=", 1), "is not canonical standard base64"},
		{"proof hash URL alphabet", strings.Replace(doc, h1, "_"+h1[1:], 1), "line 5: proof hash \"_"},
		{"proof hash of 31 bytes", strings.Replace(doc, h1, b64(make([]byte, 31)), 1), "line 5: proof hash \"" + b64(make([]byte, 31)) + "\" decodes to 31 bytes, want 32"},
		{"too many proof hashes", header + "index 0\n" + strings.Repeat(h0+"\n", 65) + "\n" + cp, "line 67: more than 64 proof hashes"},

		{"no empty line, document ends", header + "index 2\n" + proofLines, "document ends after line 5, want the empty line before the checkpoint"},
		{"no empty line, checkpoint follows", header + "index 2\n" + proofLines + cp, `line 6: proof hash "example.com/log" is 15 characters, want 44 (base64 of 32 bytes); is the empty line before the checkpoint missing?`},
		{"no checkpoint", pre, "document ends after the empty line on line 6, want the checkpoint"},
		{"two empty lines", pre + "\n" + cp, "malformed checkpoint: line 1: origin is empty"},
		{"checkpoint without final newline", strings.TrimSuffix(doc, "\n"), "line 12: document does not end with a newline"},
		{"checkpoint without signatures", pre + body, "checkpoint (from line 7) has no signatures"},
		{"checkpoint with empty signature block", pre + body + "\n", "line 10: checkpoint has no signature lines after its last empty line"},
		{"checkpoint with hyphen", pre + body + "\n" + strings.Replace(sigs, "—", "-", 1), `line 11: checkpoint signature line "- example.com/log`},
		{"checkpoint signature not base64", pre + body + "\n" + "— example.com/log %%%%\n", `line 11: checkpoint signature by "example.com/log" is not base64 of a key ID and a signature`},
		{"checkpoint signature too short", pre + body + "\n" + "— example.com/log AAAAAA==\n", `line 11: checkpoint signature by "example.com/log" is not base64`},
		{"checkpoint signature no name", pre + body + "\n" + "—  AAAAAAAA\n", `line 11: checkpoint signature line has invalid key name ""`},
		{"checkpoint signature name with plus", pre + body + "\n" + "— a+b AAAAAAAA\n", `line 11: checkpoint signature line has invalid key name "a+b"`},
		{"checkpoint with trailing empty line", doc + "\n", "line 13: checkpoint has no signature lines after its last empty line"},
		{"checkpoint with too many signatures", pre + body + "\n" + strings.Repeat(sigs, 101), "line 111: checkpoint has more than 100 signatures"},
		{"checkpoint size leading zero", strings.Replace(doc, "\n5\n", "\n05\n", 1), `checkpoint (from line 8): malformed checkpoint: line 2: size "05" has a leading zero`},
		{"checkpoint missing hash", pre + "example.com/log\n5\n\n" + sigs, "checkpoint (from line 7): malformed checkpoint: body has only 2 line(s)"},
		{"checkpoint too big", pre + strings.Repeat("x", checkpoint.MaxNoteSize-len(sigs)) + "\n\n" + sigs, "checkpoint (from line 7) is 1048578 bytes, more than the limit of 1048576"},
		{"document too big", doc + strings.Repeat("x", receipt.MaxSize), "document is "},
		{"spec example", specExample, "line 14: checkpoint signature by \"example.com/fancylog\" is not base64"},
	}
	seen := map[string]bool{}
	for _, tt := range tests {
		if seen[tt.name] {
			t.Fatalf("duplicate test name %q", tt.name)
		}
		seen[tt.name] = true
		t.Run(tt.name, func(t *testing.T) {
			r, err := receipt.Parse([]byte(tt.doc))
			if err == nil {
				t.Fatalf("Parse succeeded: %+v", r)
			}
			if !errors.Is(err, receipt.ErrMalformed) {
				t.Errorf("error %v does not wrap ErrMalformed", err)
			}
			if errors.Is(err, receipt.ErrInvalid) {
				t.Errorf("error %v wraps ErrInvalid", err)
			}
			if !strings.HasPrefix(err.Error(), "malformed tlog-proof: ") || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error\n\t%s\ndoes not contain\n\t%s", err, tt.want)
			}
			if len(err.Error()) > 400 {
				t.Errorf("error is %d bytes long, want a short message", len(err.Error()))
			}
			if r.Index != 0 || r.Extra != nil || r.Proof != nil || r.Checkpoint != nil {
				t.Errorf("Parse returned %+v with an error", r)
			}
		})
	}

	// Errors about the checkpoint's text are also checkpoint errors.
	_, err := receipt.Parse([]byte(strings.Replace(doc, "\n5\n", "\n05\n", 1)))
	if !errors.Is(err, checkpoint.ErrMalformed) {
		t.Errorf("error %v does not wrap checkpoint.ErrMalformed", err)
	}
}

func FuzzParse(f *testing.F) {
	// A fixed key and fixed witness, so that the corpus stays meaningful
	// across runs.
	const origin = "example.com/log"
	zero := bytes.NewReader(make([]byte, 64))
	s, v := newKey(f, origin, zero)
	wskey, _, err := note.GenerateKey(bytes.NewReader(make([]byte, 32)), "witness.example")
	if err != nil {
		f.Fatal(err)
	}
	ws, err := fmtnote.NewSignerForCosignatureV1(wskey)
	if err != nil {
		f.Fatal(err)
	}
	wv := ws.Verifier()

	l := &testLog{origin: origin, s: s, v: v, tiles: memTiles{}, edge: tree.EmptyEdge()}
	l.growTo(f, 1)
	one := l.receipt(f, 0, nil)
	l.growTo(f, 7)
	seven := l.receipt(f, 5, []byte("extra"))
	cosigned := l.receipt(f, 6, []byte{0, 1, 2}, ws)
	for _, d := range []string{
		string(one.Marshal()),
		string(seven.Marshal()),
		string(cosigned.Marshal()),
		strings.Replace(string(seven.Marshal()), "index 5", "index 05", 1),
		strings.Replace(string(seven.Marshal()), "extra ZXh0cmE=\n", "", 1),
		strings.Replace(string(seven.Marshal()), "\n\n", "\n", 1),
		strings.ReplaceAll(string(seven.Marshal()), "\n", "\r\n"),
		specExample,
		header + "index 0\n\nx\n\n— x AAAAAAAA\n",
		header + "index 18446744073709551615\n\n",
		header,
		"",
		"\n",
		"\n\n\n",
	} {
		f.Add([]byte(d))
	}
	f.Fuzz(func(t *testing.T, doc []byte) {
		r, err := receipt.Parse(doc)
		if err != nil {
			if !errors.Is(err, receipt.ErrMalformed) {
				t.Fatalf("Parse error %v does not wrap ErrMalformed", err)
			}
			return
		}
		if m := r.Marshal(); !bytes.Equal(m, doc) {
			t.Fatalf("Parse(%q) = %+v, which marshals to %q", doc, r, m)
		}
		if r.Extra != nil && len(r.Extra) == 0 {
			t.Fatalf("Parse(%q) returned empty non-nil Extra", doc)
		}
		if len(r.Proof) > receipt.MaxProofHashes {
			t.Fatalf("Parse(%q) returned %d proof hashes", doc, len(r.Proof))
		}
		for i, h := range r.Proof {
			if len(h) != 32 {
				t.Fatalf("Parse(%q) returned proof hash %d of %d bytes", doc, i, len(h))
			}
		}
		// Verify does not panic, and fails only in documented ways.
		for i := range uint64(7) {
			_, _, err := receipt.Verify(r, tree.LeafHash(entry(i)), v, wv)
			if err != nil && !errors.Is(err, receipt.ErrInvalid) && !errors.Is(err, checkpoint.ErrSignature) &&
				!errors.Is(err, checkpoint.ErrOrigin) && !errors.Is(err, checkpoint.ErrMalformed) {
				t.Fatalf("Verify(%q): undocumented error %v", doc, err)
			}
		}
	})
}
