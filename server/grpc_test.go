package server_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"testing"

	sumdb "golang.org/x/mod/sumdb/tlog"
	"google.golang.org/grpc/codes"

	"github.com/tlog-dev/tlog/pkg/checkpoint"
	"github.com/tlog-dev/tlog/pkg/receipt"
	tlogv1 "github.com/tlog-dev/tlog/proto/tlog/v1"
	"github.com/tlog-dev/tlog/server"
	"github.com/tlog-dev/tlog/storage"
)

// TestGRPC exercises every LogService RPC on a log grown in several
// batches, and checks every proof with golang.org/x/mod/sumdb/tlog.
func TestGRPC(t *testing.T) {
	forEachDriver(t, func(t *testing.T, open func(testing.TB) storage.Store) {
		e := start(t, open(t), []string{"audit"})
		ctx := context.Background()
		const log = "audit"

		// data[i] is the entry at index i.
		var data [][]byte

		// A batch with duplicates (by data and by idempotency key).
		resp, err := e.log.Append(ctx, &tlogv1.AppendRequest{Log: log, Entries: []*tlogv1.AppendEntry{
			{Data: []byte("a")},
			{Data: []byte("b")},
			{Data: []byte("a")},                        // duplicate of 0 by leaf hash
			{Data: []byte("c"), IdempotencyKey: "k1"},  // new
			{Data: []byte("d"), IdempotencyKey: "k1"},  // duplicate of 2 by key
			{Data: []byte("c")},                        // new: its identity is its leaf hash, not k1
			{Data: []byte("e"), IdempotencyKey: "k2"},  // new
			{Data: []byte("b"), IdempotencyKey: "k3"},  // new: keyed, so not a duplicate of 1
			{Data: []byte("zz"), IdempotencyKey: "k2"}, // duplicate of 4 by key
		}})
		if err != nil {
			t.Fatalf("Append: %v", err)
		}
		data = append(data, []byte("a"), []byte("b"), []byte("c"), []byte("c"), []byte("e"), []byte("b"))
		want := []struct {
			index uint64
			leaf  string
			dup   bool
		}{{0, "a", false}, {1, "b", false}, {0, "a", true}, {2, "c", false}, {2, "c", true}, {3, "c", false}, {4, "e", false}, {5, "b", false}, {4, "e", true}}
		if len(resp.GetResults()) != len(want) {
			t.Fatalf("%d results, want %d", len(resp.GetResults()), len(want))
		}
		c1 := e.open(log, resp.GetCheckpoint())
		if c1.Size != 6 {
			t.Fatalf("checkpoint size %d, want 6", c1.Size)
		}
		for i, r := range resp.GetResults() {
			w := want[i]
			lh := sumdb.RecordHash([]byte(w.leaf))
			if r.GetIndex() != w.index || r.GetDuplicate() != w.dup || !bytes.Equal(r.GetLeafHash(), lh[:]) {
				t.Errorf("result %d: index %d dup %v leaf %x, want %d %v %x", i, r.GetIndex(), r.GetDuplicate(), r.GetLeafHash(), w.index, w.dup, lh)
			}
			if r.GetIndex() >= c1.Size {
				t.Errorf("result %d: index %d is not in the checkpoint of size %d", i, r.GetIndex(), c1.Size)
			}
		}
		cp1 := resp.GetCheckpoint()

		// Retrying the same request appends nothing.
		again, err := e.log.Append(ctx, &tlogv1.AppendRequest{Log: log, Entries: []*tlogv1.AppendEntry{
			{Data: []byte("a")}, {Data: []byte("other"), IdempotencyKey: "k1"},
		}})
		if err != nil {
			t.Fatalf("Append retry: %v", err)
		}
		if r := again.GetResults(); r[0].GetIndex() != 0 || !r[0].GetDuplicate() || r[1].GetIndex() != 2 || !r[1].GetDuplicate() {
			t.Errorf("retry results: %v", r)
		}
		if c := e.open(log, again.GetCheckpoint()); c.Size != 6 || c.Hash != c1.Hash {
			t.Errorf("retry checkpoint: size %d, want 6 with the same root", c.Size)
		}

		// More batches, so that there are several signed sizes.
		sizes := []uint64{6}
		cps := map[uint64][]byte{6: cp1}
		for b := range 4 {
			var batch [][]byte
			for i := range 5 + 3*b {
				batch = append(batch, fmt.Appendf(nil, "batch %d entry %d", b, i))
			}
			resp := e.appendData(log, batch...)
			c := e.open(log, resp.GetCheckpoint())
			for i, r := range resp.GetResults() {
				if r.GetIndex() != uint64(len(data)+i) || r.GetDuplicate() {
					t.Fatalf("batch %d result %d: index %d dup %v", b, i, r.GetIndex(), r.GetDuplicate())
				}
				if r.GetIndex() >= c.Size {
					t.Fatalf("batch %d: index %d not in checkpoint of size %d", b, r.GetIndex(), c.Size)
				}
			}
			data = append(data, batch...)
			if c.Size != uint64(len(data)) {
				t.Fatalf("checkpoint size %d, want %d", c.Size, len(data))
			}
			sizes = append(sizes, c.Size)
			cps[c.Size] = resp.GetCheckpoint()
		}
		size := uint64(len(data))
		first := map[string]uint64{} // the lowest index of each data
		for i := len(data) - 1; i >= 0; i-- {
			first[string(data[i])] = uint64(i)
		}

		t.Run("GetCheckpoint", func(t *testing.T) {
			for _, ts := range append([]uint64{0}, sizes...) {
				resp, err := e.log.GetCheckpoint(ctx, &tlogv1.GetCheckpointRequest{Log: log, TreeSize: ts})
				if err != nil {
					t.Fatalf("GetCheckpoint(%d): %v", ts, err)
				}
				c := e.open(log, resp.GetCheckpoint())
				wantSize := ts
				if ts == 0 {
					wantSize = size
				}
				if c.Size != wantSize || resp.GetTreeSize() != wantSize || !bytes.Equal(resp.GetRootHash(), c.Hash[:]) {
					t.Errorf("GetCheckpoint(%d): note size %d, tree_size %d, root_hash %x (note %x)", ts, c.Size, resp.GetTreeSize(), resp.GetRootHash(), c.Hash)
				}
				if !bytes.Equal(resp.GetCheckpoint(), cps[wantSize]) {
					t.Errorf("GetCheckpoint(%d) is not the checkpoint Append returned:\n%s\nvs\n%s", ts, resp.GetCheckpoint(), cps[wantSize])
				}
			}
		})

		t.Run("GetInclusionProof", func(t *testing.T) {
			for _, ts := range []uint64{0, sizes[0], sizes[2], size} {
				limit := ts
				if ts == 0 {
					limit = size
				}
				for idx := range limit {
					byIndex, err := e.log.GetInclusionProof(ctx, &tlogv1.GetInclusionProofRequest{Log: log, Leaf: &tlogv1.GetInclusionProofRequest_Index{Index: idx}, TreeSize: ts})
					if err != nil {
						t.Fatalf("GetInclusionProof(index %d, size %d): %v", idx, ts, err)
					}
					c := e.open(log, byIndex.GetCheckpoint())
					if c.Size != limit || byIndex.GetTreeSize() != limit || byIndex.GetIndex() != idx {
						t.Fatalf("GetInclusionProof(index %d, size %d): index %d, tree_size %d, checkpoint size %d", idx, ts, byIndex.GetIndex(), byIndex.GetTreeSize(), c.Size)
					}
					checkRecord(t, byIndex.GetHashes(), c, idx, data[idx])

					lh := sumdb.RecordHash(data[idx])
					byHash, err := e.log.GetInclusionProof(ctx, &tlogv1.GetInclusionProofRequest{Log: log, Leaf: &tlogv1.GetInclusionProofRequest_LeafHash{LeafHash: lh[:]}, TreeSize: ts})
					if err != nil {
						t.Fatalf("GetInclusionProof(leaf hash of %d, size %d): %v", idx, ts, err)
					}
					// Entries 2 and 3 share data "c", 1 and 5 "b": the lowest
					// index wins.
					wantIdx := first[string(data[idx])]
					if byHash.GetIndex() != wantIdx {
						t.Fatalf("GetInclusionProof(leaf hash of %d): index %d, want %d", idx, byHash.GetIndex(), wantIdx)
					}
					checkRecord(t, byHash.GetHashes(), e.open(log, byHash.GetCheckpoint()), wantIdx, data[idx])
				}
			}
		})

		t.Run("GetConsistencyProof", func(t *testing.T) {
			for i, from := range sizes {
				for _, to := range append([]uint64{0}, sizes[i:]...) {
					resp, err := e.log.GetConsistencyProof(ctx, &tlogv1.GetConsistencyProofRequest{Log: log, FromSize: from, ToSize: to})
					if err != nil {
						t.Fatalf("GetConsistencyProof(%d, %d): %v", from, to, err)
					}
					wantTo := to
					if to == 0 {
						wantTo = size
					}
					newer := e.open(log, resp.GetCheckpoint())
					older := e.open(log, cps[from])
					if resp.GetFromSize() != from || resp.GetToSize() != wantTo || newer.Size != wantTo {
						t.Fatalf("GetConsistencyProof(%d, %d): from %d to %d, checkpoint size %d", from, to, resp.GetFromSize(), resp.GetToSize(), newer.Size)
					}
					if from == wantTo && len(resp.GetHashes()) != 0 {
						t.Errorf("GetConsistencyProof(%d, %d): %d hashes, want none", from, to, len(resp.GetHashes()))
					}
					if err := sumdb.CheckTree(treeProof(t, resp.GetHashes()), int64(newer.Size), sumdb.Hash(newer.Hash), int64(older.Size), sumdb.Hash(older.Hash)); err != nil {
						t.Fatalf("consistency proof %d -> %d: %v", from, wantTo, err)
					}
				}
			}
		})

		t.Run("GetEntries", func(t *testing.T) {
			for _, r := range []struct{ start, end uint64 }{{0, 0}, {0, size}, {0, size + 100}, {3, 17}, {size - 1, 0}, {5, 6}} {
				stream, err := e.log.GetEntries(ctx, &tlogv1.GetEntriesRequest{Log: log, Start: r.start, End: r.end})
				if err != nil {
					t.Fatal(err)
				}
				end := r.end
				if end == 0 || end > size {
					end = size
				}
				next, msgs := r.start, 0
				for {
					m, err := stream.Recv()
					if errors.Is(err, io.EOF) {
						break
					}
					if err != nil {
						t.Fatalf("GetEntries(%d, %d): %v", r.start, r.end, err)
					}
					msgs++
					if len(m.GetEntries()) == 0 || len(m.GetEntries()) > 7 {
						t.Errorf("GetEntries(%d, %d): a message of %d entries (MaxEntriesPerRead 7)", r.start, r.end, len(m.GetEntries()))
					}
					for _, en := range m.GetEntries() {
						lh := sumdb.RecordHash(data[next])
						if en.GetIndex() != next || !bytes.Equal(en.GetData(), data[next]) || !bytes.Equal(en.GetLeafHash(), lh[:]) {
							t.Fatalf("GetEntries(%d, %d): got entry %d %q, want %d %q", r.start, r.end, en.GetIndex(), en.GetData(), next, data[next])
						}
						next++
					}
				}
				if next != end {
					t.Errorf("GetEntries(%d, %d): stream ended at %d, want %d", r.start, r.end, next, end)
				}
				if wantMsgs := int((end - r.start + 6) / 7); msgs != wantMsgs {
					t.Errorf("GetEntries(%d, %d): %d messages, want %d", r.start, r.end, msgs, wantMsgs)
				}
			}
		})

		t.Run("GetEntryAndProof", func(t *testing.T) {
			for _, ts := range []uint64{0, sizes[1]} {
				limit := ts
				if ts == 0 {
					limit = size
				}
				for _, idx := range []uint64{0, 2, 5, limit - 1} {
					resp, err := e.log.GetEntryAndProof(ctx, &tlogv1.GetEntryAndProofRequest{Log: log, Index: idx, TreeSize: ts})
					if err != nil {
						t.Fatalf("GetEntryAndProof(%d, %d): %v", idx, ts, err)
					}
					c := e.open(log, resp.GetCheckpoint())
					en := resp.GetEntry()
					lh := sumdb.RecordHash(data[idx])
					if c.Size != limit || en.GetIndex() != idx || !bytes.Equal(en.GetData(), data[idx]) || !bytes.Equal(en.GetLeafHash(), lh[:]) {
						t.Fatalf("GetEntryAndProof(%d, %d): entry %d %q, checkpoint size %d", idx, ts, en.GetIndex(), en.GetData(), c.Size)
					}
					checkRecord(t, resp.GetInclusionProof(), c, idx, en.GetData())
				}
			}
		})

		t.Run("GetReceipt", func(t *testing.T) {
			v := e.verifier(log)
			for _, ts := range []uint64{0, sizes[0], sizes[3]} {
				limit := ts
				if ts == 0 {
					limit = size
				}
				for _, idx := range []uint64{0, 1, 3, 4, 5, limit - 1} {
					lh := sumdb.RecordHash(data[idx])
					for _, req := range []*tlogv1.GetReceiptRequest{
						{Log: log, Leaf: &tlogv1.GetReceiptRequest_Index{Index: idx}, TreeSize: ts},
						{Log: log, Leaf: &tlogv1.GetReceiptRequest_LeafHash{LeafHash: lh[:]}, TreeSize: ts},
					} {
						idx := idx
						if req.GetLeafHash() != nil {
							idx = first[string(data[idx])] // the lowest index with that data
						}
						resp, err := e.log.GetReceipt(ctx, req)
						if err != nil {
							t.Fatalf("GetReceipt(%v): %v", req, err)
						}
						r, err := receipt.Parse(resp.GetReceipt())
						if err != nil {
							t.Fatalf("GetReceipt(%v): receipt does not parse: %v\n%s", req, err, resp.GetReceipt())
						}
						if r.Index != idx || resp.GetIndex() != idx {
							t.Fatalf("GetReceipt(%v): receipt index %d, response index %d, want %d", req, r.Index, resp.GetIndex(), idx)
						}
						c, _, err := receipt.Verify(r, lh, v)
						if err != nil {
							t.Fatalf("GetReceipt(%v): receipt does not verify offline: %v", req, err)
						}
						if c.Size != limit {
							t.Fatalf("GetReceipt(%v): receipt for tree %d, want %d", req, c.Size, limit)
						}
						// And not for other data.
						other := sumdb.RecordHash([]byte("not in the log"))
						if _, _, err := receipt.Verify(r, other, v); !errors.Is(err, receipt.ErrInvalid) {
							t.Fatalf("receipt verifies for other data: %v", err)
						}
					}
				}
			}
		})

		if got := e.verifyLog(log); got != size {
			t.Fatalf("verified log size %d, want %d", got, size)
		}
	})
}

// TestAdmin creates, gets and lists logs over gRPC and HTTP, appends to a
// log created while the service runs, and checks that a restarted service
// loads every log again.
func TestAdmin(t *testing.T) {
	forEachDriver(t, func(t *testing.T, open func(testing.TB) storage.Store) {
		store := open(t)
		e := start(t, store, []string{"first"})
		ctx := context.Background()

		names := []string{"m-log", "b.log", "z_log", "a", "k9"}
		origins := map[string]string{"first": server.DefaultOrigin("first")}
		for i, name := range names {
			origin := ""
			if i%2 == 0 {
				origin = "example.com/custom/" + name
			}
			resp, err := e.admin.CreateLog(ctx, &tlogv1.CreateLogRequest{Name: name, Origin: origin})
			if err != nil {
				t.Fatalf("CreateLog(%q): %v", name, err)
			}
			if origin == "" {
				origin = server.DefaultOrigin(name)
			}
			origins[name] = origin
			l := resp.GetLog()
			if l.GetName() != name || l.GetOrigin() != origin || l.GetSize() != 0 || l.GetCreateTime() == nil {
				t.Errorf("CreateLog(%q): %v", name, l)
			}
			v, err := checkpoint.NewVerifier(l.GetVerifierKey())
			if err != nil || v.Name() != origin {
				t.Errorf("CreateLog(%q): verifier key %q: %v", name, l.GetVerifierKey(), err)
			}
		}

		// A log created while the service runs sequences at once.
		e.appendData("z_log", []byte("one"), []byte("two"))
		e.appendData("first", []byte("one"))

		all := []string{"a", "b.log", "first", "k9", "m-log", "z_log"}
		sizes := map[string]uint64{"z_log": 2, "first": 1}
		for _, name := range all {
			resp, err := e.admin.GetLog(ctx, &tlogv1.GetLogRequest{Name: name})
			if err != nil {
				t.Fatalf("GetLog(%q): %v", name, err)
			}
			l := resp.GetLog()
			if l.GetName() != name || l.GetOrigin() != origins[name] || l.GetSize() != sizes[name] || !l.GetCreateTime().IsValid() {
				t.Errorf("GetLog(%q): %v", name, l)
			}
		}

		for _, pageSize := range []int32{0, 1, 2, 4, 6, 7, 5000} {
			var got []string
			token := ""
			for pages := 0; ; pages++ {
				if pages > 10 {
					t.Fatalf("ListLogs(%d) does not end", pageSize)
				}
				resp, err := e.admin.ListLogs(ctx, &tlogv1.ListLogsRequest{PageSize: pageSize, PageToken: token})
				if err != nil {
					t.Fatalf("ListLogs(%d, %q): %v", pageSize, token, err)
				}
				if pageSize > 0 && len(resp.GetLogs()) > int(pageSize) {
					t.Fatalf("ListLogs(%d): a page of %d", pageSize, len(resp.GetLogs()))
				}
				for _, l := range resp.GetLogs() {
					got = append(got, l.GetName())
					if l.GetSize() != sizes[l.GetName()] || l.GetOrigin() != origins[l.GetName()] {
						t.Errorf("ListLogs: %v", l)
					}
				}
				token = resp.GetNextPageToken()
				if token == "" {
					break
				}
			}
			if fmt.Sprint(got) != fmt.Sprint(all) {
				t.Errorf("ListLogs(page size %d): %v, want %v", pageSize, got, all)
			}
		}

		for _, name := range all {
			e.verifyLog(name)
		}
	})
}

// TestRestart checks that a service started again on the same store and key
// directory serves the logs it had, and keeps appending to them.
func TestRestart(t *testing.T) {
	forEachDriver(t, func(t *testing.T, open func(testing.TB) storage.Store) {
		store := open(t)
		keys := t.TempDir()
		withKeys := func(c *server.Config) { c.KeyDir = keys }
		e1 := start(t, store, []string{"audit"}, withKeys)
		r1 := e1.appendData("audit", []byte("before restart"))
		e1.stop()

		e2 := start(t, store, nil, withKeys)
		ctx := context.Background()
		resp, err := e2.admin.GetLog(ctx, &tlogv1.GetLogRequest{Name: "audit"})
		if err != nil || resp.GetLog().GetSize() != 1 {
			t.Fatalf("GetLog after restart: %v, %v", resp, err)
		}
		cp, err := e2.log.GetCheckpoint(ctx, &tlogv1.GetCheckpointRequest{Log: "audit"})
		if err != nil || !bytes.Equal(cp.GetCheckpoint(), r1.GetCheckpoint()) {
			t.Fatalf("GetCheckpoint after restart: %v\n%s", err, cp.GetCheckpoint())
		}
		r2 := e2.appendData("audit", []byte("before restart"), []byte("after restart"))
		if r := r2.GetResults(); !r[0].GetDuplicate() || r[0].GetIndex() != 0 || r[1].GetIndex() != 1 {
			t.Fatalf("Append after restart: %v", r)
		}
		if got := e2.verifyLog("audit"); got != 2 {
			t.Fatalf("verified size %d, want 2", got)
		}
	})
}

// TestCreateLogRace creates one log name from many clients at once, with
// different origins: exactly one wins, the others are told ALREADY_EXISTS,
// and the log is the winner's.
func TestCreateLogRace(t *testing.T) {
	forEachDriver(t, func(t *testing.T, open func(testing.TB) storage.Store) {
		e := start(t, open(t), nil)
		const n = 8
		errs := make(chan error, n)
		origins := make(chan string, n)
		for i := range n {
			go func() {
				origin := fmt.Sprintf("example.com/race/%d", i)
				_, err := e.admin.CreateLog(context.Background(), &tlogv1.CreateLogRequest{Name: "race", Origin: origin})
				if err == nil {
					origins <- origin
				}
				errs <- err
			}()
		}
		won := 0
		for range n {
			switch err := <-errs; code(err) {
			case codes.OK:
				won++
			case codes.AlreadyExists:
			default:
				t.Errorf("CreateLog racing for one name: %v, want OK or AlreadyExists", err)
			}
		}
		if won != 1 {
			t.Fatalf("%d CreateLog calls won, want 1", won)
		}
		resp, err := e.admin.GetLog(context.Background(), &tlogv1.GetLogRequest{Name: "race"})
		if err != nil {
			t.Fatal(err)
		}
		if want := <-origins; resp.GetLog().GetOrigin() != want {
			t.Fatalf("log origin %q, want the winner's %q", resp.GetLog().GetOrigin(), want)
		}
		e.appendData("race", []byte("x"))
		e.verifyLog("race")
	})
}

// TestGetEntriesLarge streams entries of the largest size with the default
// MaxEntriesPerRead: no message may exceed gRPC's default 4 MiB limit.
func TestGetEntriesLarge(t *testing.T) {
	forEachDriver(t, func(t *testing.T, open func(testing.TB) storage.Store) {
		e := start(t, open(t), []string{"audit"}, func(c *server.Config) { c.MaxEntriesPerRead = 0 })
		const n = 80 // 5 MiB
		var data [][]byte
		for i := range n {
			data = append(data, bytes.Repeat([]byte{byte(i)}, 65535))
		}
		// Requests, too, are bounded by 4 MiB.
		e.appendData("audit", data[:n/2]...)
		e.appendData("audit", data[n/2:]...)

		stream, err := e.log.GetEntries(context.Background(), &tlogv1.GetEntriesRequest{Log: "audit"})
		if err != nil {
			t.Fatal(err)
		}
		next := 0
		for {
			m, err := stream.Recv()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("GetEntries after %d entries: %v", next, err)
			}
			for _, en := range m.GetEntries() {
				if en.GetIndex() != uint64(next) || !bytes.Equal(en.GetData(), data[next]) {
					t.Fatalf("entry %d: got index %d", next, en.GetIndex())
				}
				next++
			}
		}
		if next != n {
			t.Fatalf("GetEntries streamed %d entries, want %d", next, n)
		}
		e.verifyLog("audit")
	})
}
