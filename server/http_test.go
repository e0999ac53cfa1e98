package server_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	sumdb "golang.org/x/mod/sumdb/tlog"

	"github.com/tlog-dev/tlog/pkg/checkpoint"
	tlogv1 "github.com/tlog-dev/tlog/proto/tlog/v1"
	"github.com/tlog-dev/tlog/server"
	"github.com/tlog-dev/tlog/storage"
)

// TestHTTPAdd appends over HTTP and checks the answer: the index alone on
// the first line, then the checkpoint that contains it.
func TestHTTPAdd(t *testing.T) {
	forEachDriver(t, func(t *testing.T, open func(testing.TB) storage.Store) {
		e := start(t, open(t), []string{"audit"})
		for i, c := range []struct {
			body  string
			index uint64
			dup   bool
		}{
			{"first", 0, false},
			{"second", 1, false},
			{"first", 0, true},
			{strings.Repeat("x", 65535), 2, false}, // the largest entry
			{"third", 3, false},
		} {
			resp, body := e.do(http.MethodPost, "/logs/audit/add", []byte(c.body))
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("add %d: %s: %s", i, resp.Status, body)
			}
			if ct := resp.Header.Get("Content-Type"); ct != "text/plain; charset=utf-8" {
				t.Errorf("add %d: Content-Type %q", i, ct)
			}
			first, rest, _ := bytes.Cut(body, []byte("\n"))
			if string(first) != strconv.FormatUint(c.index, 10) {
				t.Fatalf("add %d: first line %q, want %d", i, first, c.index)
			}
			lh := sumdb.RecordHash([]byte(c.body))
			if got := resp.Header.Get("X-Tlog-Leaf-Hash"); got != hex.EncodeToString(lh[:]) {
				t.Errorf("add %d: leaf hash header %q", i, got)
			}
			if got := resp.Header.Get("X-Tlog-Duplicate"); got != strconv.FormatBool(c.dup) {
				t.Errorf("add %d: duplicate header %q, want %v", i, got, c.dup)
			}
			cp, ok := bytes.CutPrefix(rest, []byte("\n"))
			if !ok {
				t.Fatalf("add %d: no empty line after the index: %q", i, body)
			}
			cpt := e.open("audit", cp)
			if c.index >= cpt.Size {
				t.Fatalf("add %d: index %d not in checkpoint of size %d", i, c.index, cpt.Size)
			}
			p, err := e.log.GetInclusionProof(context.Background(), &tlogv1.GetInclusionProofRequest{Log: "audit", Leaf: &tlogv1.GetInclusionProofRequest_Index{Index: c.index}, TreeSize: cpt.Size})
			if err != nil {
				t.Fatal(err)
			}
			checkRecord(t, p.GetHashes(), cpt, c.index, []byte(c.body))
		}
		if got := e.verifyLog("audit"); got != 4 {
			t.Fatalf("verified size %d, want 4", got)
		}
	})
}

// TestHTTPTiles grows a log past two full level-0 tiles, fetches every tile
// and entry bundle of it over HTTP as a tlog-tiles client would, and
// recomputes the root hash independently.
func TestHTTPTiles(t *testing.T) {
	forEachDriver(t, func(t *testing.T, open func(testing.TB) storage.Store) {
		e := start(t, open(t), []string{"audit"})
		const size = 600 // level 0: two full tiles and one of 88; level 1: one of 2.
		var data [][]byte
		for i := range size {
			d := fmt.Appendf(nil, "entry %d", i)
			if i == 300 {
				d = bytes.Repeat([]byte{'L'}, 65535)
			}
			data = append(data, d)
		}
		// A few entries over HTTP, the rest in concurrent gRPC requests of
		// various sizes, so that several batches and checkpoints are made.
		for i := range 3 {
			resp, body := e.do(http.MethodPost, "/logs/audit/add", data[i])
			if resp.StatusCode != http.StatusOK || !bytes.HasPrefix(body, fmt.Appendf(nil, "%d\n", i)) {
				t.Fatalf("add %d: %s %q", i, resp.Status, body)
			}
		}
		var wg sync.WaitGroup
		for lo := 3; lo < size; {
			hi := min(lo+1+(lo%41), size)
			wg.Add(1)
			go func(lo, hi int) {
				defer wg.Done()
				req := &tlogv1.AppendRequest{Log: "audit"}
				for _, d := range data[lo:hi] {
					req.Entries = append(req.Entries, &tlogv1.AppendEntry{Data: d})
				}
				if _, err := e.log.Append(context.Background(), req); err != nil {
					t.Errorf("Append: %v", err)
				}
			}(lo, hi)
			// Keep the order of the data within requests, not across them.
			lo = hi
		}
		wg.Wait()
		if t.Failed() {
			return
		}

		resp, body := e.get("/logs/audit/checkpoint")
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("checkpoint: %s", resp.Status)
		}
		if ct := resp.Header.Get("Content-Type"); ct != "text/plain; charset=utf-8" {
			t.Errorf("checkpoint Content-Type %q", ct)
		}
		if cc := resp.Header.Get("Cache-Control"); !strings.Contains(cc, "no-cache") && !strings.Contains(cc, "no-store") {
			t.Errorf("checkpoint is cacheable: Cache-Control %q", cc)
		}
		c := e.open("audit", body)
		if c.Size != size {
			t.Fatalf("checkpoint size %d, want %d", c.Size, size)
		}

		// Entry bundles: the entries in log order, whatever the order of
		// the requests was. Recompute every leaf hash and the root.
		var entries [][]byte
		for n := uint64(0); n*256 < size; n++ {
			w := min(size-n*256, 256)
			path := tilePath(-1, n, int(w))
			resp, body := e.get("/logs/audit/" + path)
			checkTileResponse(t, path, resp, w == 256)
			es := parseBundle(t, body)
			if len(es) != int(w) {
				t.Fatalf("%s: %d entries, want %d", path, len(es), w)
			}
			entries = append(entries, es...)
		}
		leaves := make([]sumdb.Hash, len(entries))
		seen := map[string]bool{}
		for i, en := range entries {
			leaves[i] = sumdb.RecordHash(en)
			seen[string(en)] = true
		}
		for i, d := range data {
			if !seen[string(d)] {
				t.Fatalf("entry %d (%.20q) is in no bundle", i, d)
			}
		}
		if root := rfc6962Root(leaves); root != sumdb.Hash(c.Hash) {
			t.Fatalf("root recomputed from the entry bundles %x, checkpoint %x", root, c.Hash)
		}

		// Hash tiles, read through sumdb/tlog's verifying tile reader: it
		// checks every tile it reads against the checkpoint's root.
		tr := &httpTileReader{t: t, e: e, log: "audit"}
		hr := sumdb.TileHashReader(sumdb.Tree{N: int64(c.Size), Hash: sumdb.Hash(c.Hash)}, tr)
		root, err := sumdb.TreeHash(int64(c.Size), hr)
		if err != nil {
			t.Fatalf("sumdb TreeHash from the served tiles: %v", err)
		}
		if root != sumdb.Hash(c.Hash) {
			t.Fatalf("root from tiles %x, checkpoint %x", root, c.Hash)
		}
		// Every leaf hash in the level-0 tiles is the hash of its entry.
		idx := make([]int64, size)
		for i := range idx {
			idx[i] = sumdb.StoredHashIndex(0, int64(i))
		}
		hs, err := hr.ReadHashes(idx)
		if err != nil {
			t.Fatal(err)
		}
		for i, h := range hs {
			if h != leaves[i] {
				t.Fatalf("level-0 tile hash %d is not the hash of entry %d", i, i)
			}
		}
		// Every tile, full and partial, at every level, as tlog-tiles names
		// them, with the caching headers each deserves.
		want := map[string]bool{ // path: full
			"tile/0/000": true, "tile/0/001": true, "tile/0/002.p/88": false,
			"tile/1/000.p/2":   false,
			"tile/entries/000": true, "tile/entries/001": true, "tile/entries/002.p/88": false,
		}
		for path, full := range want {
			resp, body := e.get("/logs/audit/" + path)
			checkTileResponse(t, path, resp, full)
			if !strings.HasPrefix(path, "tile/entries/") {
				w := 256
				if !full {
					w, _ = strconv.Atoi(path[strings.LastIndex(path, "/")+1:])
				}
				if len(body) != 32*w {
					t.Errorf("%s: %d bytes, want %d", path, len(body), 32*w)
				}
			}
		}
		if tr.reads == 0 {
			t.Fatal("no hash tile was read")
		}

		// The older, smaller partial tiles of earlier checkpoints are
		// prefixes of the current ones.
		_, full0 := e.get("/logs/audit/tile/0/000")
		_, part := e.get("/logs/audit/tile/0/000.p/5")
		if !bytes.Equal(part, full0[:5*32]) {
			t.Errorf("tile/0/000.p/5 is not a prefix of tile/0/000")
		}

		if got := e.verifyLog("audit"); got != size {
			t.Fatalf("verified size %d, want %d", got, size)
		}
	})
}

// checkTileResponse checks the status and headers of a served tile.
func checkTileResponse(t *testing.T, path string, resp *http.Response, full bool) {
	t.Helper()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("%s: %s", path, resp.Status)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/octet-stream" {
		t.Errorf("%s: Content-Type %q", path, ct)
	}
	cc := resp.Header.Get("Cache-Control")
	if full {
		if !strings.Contains(cc, "immutable") || maxAge(cc) < 24*time.Hour {
			t.Errorf("full tile %s: Cache-Control %q, want long-lived and immutable", path, cc)
		}
		return
	}
	if strings.Contains(cc, "immutable") || maxAge(cc) <= 0 || maxAge(cc) > 5*time.Minute {
		t.Errorf("partial tile %s: Cache-Control %q, want a short max-age", path, cc)
	}
}

// maxAge returns the max-age of a Cache-Control header, or -1.
func maxAge(cc string) time.Duration {
	for _, d := range strings.Split(cc, ",") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(d), "max-age="); ok {
			n, err := strconv.Atoi(v)
			if err == nil {
				return time.Duration(n) * time.Second
			}
		}
	}
	return -1
}

// tilePath names a tile (level -1: an entry bundle) as tlog-tiles does,
// written here from the spec rather than with the server's own code:
// golang.org/x/mod/sumdb/tlog's path without its height element.
func tilePath(level int, n uint64, w int) string {
	if level < 0 {
		p := sumdb.Tile{H: 8, L: -1, N: int64(n), W: w}.Path() // tile/8/data/...
		return "tile/entries/" + strings.TrimPrefix(p, "tile/8/data/")
	}
	p := sumdb.Tile{H: 8, L: level, N: int64(n), W: w}.Path()
	return "tile/" + strings.TrimPrefix(p, "tile/8/")
}

// parseBundle splits a tlog-tiles entry bundle: big-endian uint16 lengths.
func parseBundle(t *testing.T, b []byte) [][]byte {
	t.Helper()
	var es [][]byte
	for len(b) > 0 {
		if len(b) < 2 {
			t.Fatalf("bundle: truncated length")
		}
		n := int(binary.BigEndian.Uint16(b))
		if len(b) < 2+n {
			t.Fatalf("bundle: truncated entry")
		}
		es = append(es, b[2:2+n])
		b = b[2+n:]
	}
	return es
}

// rfc6962Root is the Merkle tree hash of RFC 6962 section 2.1, written out.
func rfc6962Root(leaves []sumdb.Hash) sumdb.Hash {
	switch len(leaves) {
	case 0:
		return sha256.Sum256(nil)
	case 1:
		return leaves[0]
	}
	k := 1
	for k*2 < len(leaves) {
		k *= 2
	}
	l, r := rfc6962Root(leaves[:k]), rfc6962Root(leaves[k:])
	return sha256.Sum256(append(append([]byte{1}, l[:]...), r[:]...))
}

// httpTileReader is a sumdb/tlog TileReader over the HTTP front end.
type httpTileReader struct {
	t     *testing.T
	e     *env
	log   string
	reads int
}

func (r *httpTileReader) Height() int { return 8 }

func (r *httpTileReader) ReadTiles(tiles []sumdb.Tile) ([][]byte, error) {
	out := make([][]byte, len(tiles))
	for i, tl := range tiles {
		path := tilePath(tl.L, uint64(tl.N), tl.W)
		resp, body := r.e.get("/logs/" + r.log + "/" + path)
		if resp.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("%s: %s: %s", path, resp.Status, body)
		}
		checkTileResponse(r.t, path, resp, tl.W == 256)
		out[i] = body
		r.reads++
	}
	return out, nil
}

func (r *httpTileReader) SaveTiles([]sumdb.Tile, [][]byte) {}

// TestHTTPMisc checks /logs, /healthz and /readyz.
func TestHTTPMisc(t *testing.T) {
	forEachDriver(t, func(t *testing.T, open func(testing.TB) storage.Store) {
		e := start(t, open(t), []string{"beta", "alpha"})
		if _, err := e.admin.CreateLog(context.Background(), &tlogv1.CreateLogRequest{Name: "gamma", Origin: "example.com/gamma"}); err != nil {
			t.Fatal(err)
		}
		e.appendData("beta", []byte("1"), []byte("2"), []byte("3"))
		before := time.Now()

		resp, body := e.get("/logs")
		if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/json" {
			t.Fatalf("/logs: %s, Content-Type %q", resp.Status, resp.Header.Get("Content-Type"))
		}
		var out struct {
			Logs []map[string]any `json:"logs"`
		}
		if err := json.Unmarshal(body, &out); err != nil {
			t.Fatalf("/logs: %v\n%s", err, body)
		}
		wantNames := []string{"alpha", "beta", "gamma"}
		wantSizes := []float64{0, 3, 0}
		if len(out.Logs) != len(wantNames) {
			t.Fatalf("/logs: %s", body)
		}
		for i, l := range out.Logs {
			for _, f := range []string{"name", "origin", "verifier_key", "size", "create_time"} {
				if _, ok := l[f]; !ok {
					t.Errorf("/logs: log %d has no %q: %v", i, f, l)
				}
			}
			name, _ := l["name"].(string)
			origin, _ := l["origin"].(string)
			vkey, _ := l["verifier_key"].(string)
			created, _ := l["create_time"].(string)
			wantOrigin := server.DefaultOrigin(name)
			if name == "gamma" {
				wantOrigin = "example.com/gamma"
			}
			if name != wantNames[i] || l["size"] != wantSizes[i] || origin != wantOrigin {
				t.Errorf("/logs: log %d: %v", i, l)
			}
			if v, err := checkpoint.NewVerifier(vkey); err != nil || v.Name() != origin {
				t.Errorf("/logs: %s: verifier key %q: %v", name, vkey, err)
			}
			ct, err := time.Parse(time.RFC3339Nano, created)
			if err != nil || ct.After(before) || before.Sub(ct) > time.Minute {
				t.Errorf("/logs: %s: create_time %q (%v)", name, created, err)
			}
		}

		if resp, body := e.get("/healthz"); resp.StatusCode != http.StatusOK {
			t.Errorf("/healthz: %s %s", resp.Status, body)
		}
		// A log just created is not ready until it has elected its leader
		// (PostgreSQL), which takes a moment on a busy machine.
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			resp, body := e.get("/readyz")
			if resp.StatusCode == http.StatusOK {
				break
			}
			if time.Now().After(deadline) {
				t.Errorf("/readyz: %s %s", resp.Status, body)
				break
			}
		}
		for _, name := range wantNames {
			e.verifyLog(name)
		}
	})
}
