package client_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"testing"

	"google.golang.org/grpc"

	"github.com/tlog-dev/tlog/pkg/checkpoint"
	"github.com/tlog-dev/tlog/pkg/client"
	"github.com/tlog-dev/tlog/pkg/receipt"
	"github.com/tlog-dev/tlog/pkg/tree"
	tlogv1 "github.com/tlog-dev/tlog/proto/tlog/v1"
)

// flip returns a copy of b with one bit changed.
func flip(b []byte) []byte {
	b = bytes.Clone(b)
	b[len(b)-1] ^= 1
	return b
}

// alterRoot returns the signed note with another root hash in its text (its
// signature no longer verifies).
func alterRoot(t *testing.T, signed []byte) []byte {
	t.Helper()
	lines := bytes.SplitN(signed, []byte("\n"), 4)
	if len(lines) < 4 {
		t.Fatalf("unexpected checkpoint %q", signed)
	}
	var h tree.Hash
	rand.Read(h[:])
	lines[2] = []byte(b64(h[:]))
	return bytes.Join(lines, []byte("\n"))
}

// TestLyingProxy puts a proxy that alters answers between AppendAndProve
// and an honest server: every alteration must fail verification.
func TestLyingProxy(t *testing.T) {
	t.Parallel()
	type lie = func(t *testing.T, l *testLog, old []byte) grpc.UnaryClientInterceptor
	for _, tc := range []struct {
		name string
		lie  lie
	}{
		{"proof hash altered", func(t *testing.T, l *testLog, old []byte) grpc.UnaryClientInterceptor {
			return onMethod(mInclusion, func(ctx context.Context, req, reply any, call func() error) error {
				err := call()
				r := reply.(*tlogv1.GetInclusionProofResponse)
				r.Hashes[0] = flip(r.Hashes[0])
				return err
			})
		}},
		{"proof truncated", func(t *testing.T, l *testLog, old []byte) grpc.UnaryClientInterceptor {
			return onMethod(mInclusion, func(ctx context.Context, req, reply any, call func() error) error {
				err := call()
				r := reply.(*tlogv1.GetInclusionProofResponse)
				r.Hashes = r.Hashes[1:]
				return err
			})
		}},
		{"proof hash too long", func(t *testing.T, l *testLog, old []byte) grpc.UnaryClientInterceptor {
			return onMethod(mInclusion, func(ctx context.Context, req, reply any, call func() error) error {
				err := call()
				r := reply.(*tlogv1.GetInclusionProofResponse)
				r.Hashes[0] = append(r.Hashes[0], 0)
				return err
			})
		}},
		{"proof for another index", func(t *testing.T, l *testLog, old []byte) grpc.UnaryClientInterceptor {
			return onMethod(mInclusion, func(ctx context.Context, req, reply any, call func() error) error {
				r := req.(*tlogv1.GetInclusionProofRequest)
				r.Leaf = &tlogv1.GetInclusionProofRequest_Index{Index: r.GetIndex() - 1}
				return call()
			})
		}},
		{"proof with an older checkpoint", func(t *testing.T, l *testLog, old []byte) grpc.UnaryClientInterceptor {
			return onMethod(mInclusion, func(ctx context.Context, req, reply any, call func() error) error {
				err := call()
				reply.(*tlogv1.GetInclusionProofResponse).Checkpoint = old
				return err
			})
		}},
		{"Append checkpoint root altered", func(t *testing.T, l *testLog, old []byte) grpc.UnaryClientInterceptor {
			return onMethod(mAppend, func(ctx context.Context, req, reply any, call func() error) error {
				err := call()
				r := reply.(*tlogv1.AppendResponse)
				r.Checkpoint = alterRoot(t, r.Checkpoint)
				return err
			})
		}},
		{"Append checkpoint signed by another key", func(t *testing.T, l *testLog, old []byte) grpc.UnaryClientInterceptor {
			skey, _, err := checkpoint.GenerateKey(logOrigin, rand.Reader)
			if err != nil {
				t.Fatal(err)
			}
			s, err := checkpoint.NewSigner(skey)
			if err != nil {
				t.Fatal(err)
			}
			return onMethod(mAppend, func(ctx context.Context, req, reply any, call func() error) error {
				err := call()
				r := reply.(*tlogv1.AppendResponse)
				c, _, _ := checkpoint.Open(r.Checkpoint, l.verifier())
				r.Checkpoint, _ = checkpoint.Sign(c, s)
				return err
			})
		}},
		{"Append with a genuine checkpoint that lacks the entry", func(t *testing.T, l *testLog, old []byte) grpc.UnaryClientInterceptor {
			return onMethod(mAppend, func(ctx context.Context, req, reply any, call func() error) error {
				err := call()
				reply.(*tlogv1.AppendResponse).Checkpoint = old
				return err
			})
		}},
		{"Append leaf hash altered", func(t *testing.T, l *testLog, old []byte) grpc.UnaryClientInterceptor {
			return onMethod(mAppend, func(ctx context.Context, req, reply any, call func() error) error {
				err := call()
				r := reply.(*tlogv1.AppendResponse)
				r.Results[0].LeafHash = flip(r.Results[0].LeafHash)
				return err
			})
		}},
		{"Append index beyond the checkpoint", func(t *testing.T, l *testLog, old []byte) grpc.UnaryClientInterceptor {
			return onMethod(mAppend, func(ctx context.Context, req, reply any, call func() error) error {
				err := call()
				reply.(*tlogv1.AppendResponse).Results[0].Index = 1 << 40
				return err
			})
		}},
		{"Append result missing", func(t *testing.T, l *testLog, old []byte) grpc.UnaryClientInterceptor {
			return onMethod(mAppend, func(ctx context.Context, req, reply any, call func() error) error {
				err := call()
				reply.(*tlogv1.AppendResponse).Results = nil
				return err
			})
		}},
		{"consistency proof altered", func(t *testing.T, l *testLog, old []byte) grpc.UnaryClientInterceptor {
			return onMethod(mConsistency, func(ctx context.Context, req, reply any, call func() error) error {
				err := call()
				r := reply.(*tlogv1.GetConsistencyProofResponse)
				if len(r.Hashes) > 0 {
					r.Hashes[len(r.Hashes)-1] = flip(r.Hashes[len(r.Hashes)-1])
				}
				return err
			})
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			l := startLog(t)
			l.appendRaw("a", "b")
			old := l.latestNote()
			l.appendRaw("c", "d", "e")
			// The trusted state starts at size 5, so that AppendAndProve
			// needs a consistency proof.
			c := l.client(client.Config{}, tc.lie(t, l, old))
			if _, err := c.Checkpoint(t.Context()); err != nil {
				t.Fatal(err)
			}
			_, err := c.AppendAndProve(t.Context(), []byte("f"))
			if !errors.Is(err, client.ErrVerification) {
				t.Fatalf("AppendAndProve through a lying proxy: %v, want ErrVerification", err)
			}
			t.Logf("%v", err)
			l.verify()
		})
	}
}

// tamperStream alters the GetEntries messages it receives.
type tamperStream struct {
	grpc.ClientStream
	f func(*tlogv1.GetEntriesResponse)
}

func (s *tamperStream) RecvMsg(m any) error {
	err := s.ClientStream.RecvMsg(m)
	if err == nil {
		s.f(m.(*tlogv1.GetEntriesResponse))
	}
	return err
}

func tamperEntries(f func(*tlogv1.GetEntriesResponse)) grpc.DialOption {
	return grpc.WithStreamInterceptor(func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
		cs, err := streamer(ctx, desc, cc, method, opts...)
		if err != nil {
			return nil, err
		}
		return &tamperStream{ClientStream: cs, f: f}, nil
	})
}

// setEntry replaces the data of entry index, with a matching leaf hash.
func setEntry(index uint64, data string) func(*tlogv1.GetEntriesResponse) {
	return func(m *tlogv1.GetEntriesResponse) {
		for _, e := range m.Entries {
			if e.Index == index {
				e.Data = []byte(data)
				h := tree.LeafHash(e.Data)
				e.LeafHash = h[:]
			}
		}
	}
}

// growLog appends n new entries in batches of various sizes, so that the
// log has checkpoints at several sizes, and returns their data.
func growLog(t *testing.T, l *testLog, n int) []string {
	t.Helper()
	var all []string
	for batch := 1; len(all) < n; batch++ {
		var data []string
		for range min(batch, n-len(all)) {
			data = append(data, fmt.Sprintf("entry %d", l.grown.Add(1)-1))
		}
		l.appendRaw(data...)
		all = append(all, data...)
	}
	return all
}

func TestEntries(t *testing.T) {
	t.Parallel()
	l := startLog(t)
	const n = 37
	want := growLog(t, l, n)
	for _, chunk := range []int{1, 3, 8, 4096} {
		var cs calls
		c := l.client(client.Config{}, cs.interceptor())
		client.SetEntriesChunk(c, chunk, 1<<20)
		ranges := [][2]uint64{{0, n}, {0, 1}, {5, 6}, {3, 17}, {16, 32}, {31, 33}, {36, 37}, {10, 1000}}
		for s := range uint64(n) {
			ranges = append(ranges, [2]uint64{s, s + 1}, [2]uint64{s, n})
		}
		for _, r := range ranges {
			next := r[0]
			for e, err := range c.Entries(t.Context(), r[0], r[1]) {
				if err != nil {
					t.Fatalf("chunk %d: Entries(%d, %d): %v", chunk, r[0], r[1], err)
				}
				if e.Index != next || string(e.Data) != want[next] || e.LeafHash != tree.LeafHash(e.Data) {
					t.Fatalf("chunk %d: Entries(%d, %d): entry %d %q, want %d %q", chunk, r[0], r[1], e.Index, e.Data, next, want[next])
				}
				next++
			}
			if end := min(r[1], n); next != end {
				t.Fatalf("chunk %d: Entries(%d, %d) stopped at %d, want %d", chunk, r[0], r[1], next, end)
			}
		}
		t.Logf("chunk %d: %d ranges, %d consistency proofs, %d inclusion proofs", chunk, len(ranges), cs.count(mConsistency), cs.count(mInclusion))
	}

	c := l.client(client.Config{})
	// Stopping early is fine.
	for e, err := range c.Entries(t.Context(), 0, n) {
		if err != nil || e.Index != 0 {
			t.Fatalf("%d %v", e.Index, err)
		}
		break
	}
	for _, r := range [][2]uint64{{n, n + 1}, {100, 200}, {5, 5}, {6, 5}} {
		for _, err := range c.Entries(t.Context(), r[0], r[1]) {
			if err == nil {
				t.Errorf("Entries(%d, %d): no error", r[0], r[1])
			}
			break
		}
	}
	l.verify()
}

func TestEntriesLying(t *testing.T) {
	t.Parallel()
	l := startLog(t)
	const n = 20
	growLog(t, l, n)
	for _, tc := range []struct {
		name       string
		start, end uint64
		opts       []grpc.DialOption
	}{
		{"data altered", 0, n, []grpc.DialOption{tamperEntries(setEntry(7, "forged"))}},
		{"first data altered", 7, 12, []grpc.DialOption{tamperEntries(setEntry(7, "forged"))}},
		{"last data altered", 3, 8, []grpc.DialOption{tamperEntries(setEntry(7, "forged"))}},
		{"last entry of the log altered", 15, n, []grpc.DialOption{tamperEntries(setEntry(n-1, "forged"))}},
		{"leaf hash field altered", 0, n, []grpc.DialOption{tamperEntries(func(m *tlogv1.GetEntriesResponse) {
			m.Entries[0].LeafHash = flip(m.Entries[0].LeafHash)
		})}},
		{"entries swapped", 2, 9, []grpc.DialOption{tamperEntries(func(m *tlogv1.GetEntriesResponse) {
			if len(m.Entries) > 1 {
				a, b := m.Entries[0], m.Entries[1]
				a.Data, b.Data = b.Data, a.Data
				a.LeafHash, b.LeafHash = b.LeafHash, a.LeafHash
			}
		})}},
		{"entry dropped", 0, n, []grpc.DialOption{tamperEntries(func(m *tlogv1.GetEntriesResponse) {
			m.Entries = m.Entries[1:]
		})}},
		{"stream cut short", 0, n, []grpc.DialOption{tamperEntries(func(m *tlogv1.GetEntriesResponse) {
			m.Entries = m.Entries[:0]
		})}},
		{"inclusion proof altered", 5, 9, []grpc.DialOption{grpc.WithUnaryInterceptor(onMethod(mInclusion, func(ctx context.Context, req, reply any, call func() error) error {
			err := call()
			r := reply.(*tlogv1.GetInclusionProofResponse)
			r.Hashes[0] = flip(r.Hashes[0])
			return err
		}))}},
		{"consistency proof altered", 5, 9, []grpc.DialOption{grpc.WithUnaryInterceptor(onMethod(mConsistency, func(ctx context.Context, req, reply any, call func() error) error {
			err := call()
			r := reply.(*tlogv1.GetConsistencyProofResponse)
			r.Hashes[0] = flip(r.Hashes[0])
			return err
		}))}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := l.client(client.Config{Conn: l.conn(tc.opts...)})
			client.SetEntriesChunk(c, 4, 1<<20)
			var got []uint64
			var err error
			for e, e2 := range c.Entries(t.Context(), tc.start, tc.end) {
				if e2 != nil {
					err = e2
					break
				}
				got = append(got, e.Index)
			}
			if !errors.Is(err, client.ErrVerification) {
				t.Fatalf("Entries(%d, %d) through a lying proxy: %v, want ErrVerification (got entries %v)", tc.start, tc.end, err, got)
			}
			t.Logf("%v (after entries %v)", err, got)
		})
	}
}

func TestReceipt(t *testing.T) {
	t.Parallel()
	l := startLog(t)
	data := growLog(t, l, 11)
	c := l.client(client.Config{})
	for i := range uint64(11) {
		doc, err := c.Receipt(t.Context(), i)
		if err != nil {
			t.Fatalf("Receipt(%d): %v", i, err)
		}
		r, err := receipt.Parse(doc)
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := receipt.Verify(r, tree.LeafHash([]byte(data[i])), l.verifier()); err != nil || r.Index != i {
			t.Errorf("receipt %d: index %d: %v", i, r.Index, err)
		}
	}
	if _, err := c.Receipt(t.Context(), 11); err == nil {
		t.Error("Receipt beyond the log: no error")
	}

	for _, tc := range []struct {
		name  string
		alter func(r *receipt.Receipt)
	}{
		{"proof altered", func(r *receipt.Receipt) { r.Proof[0] = flip(r.Proof[0]) }},
		{"another index", func(r *receipt.Receipt) { r.Index++ }},
		{"checkpoint altered", func(r *receipt.Receipt) { r.Checkpoint = alterRoot(t, r.Checkpoint) }},
	} {
		lie := onMethod(mReceipt, func(ctx context.Context, req, reply any, call func() error) error {
			err := call()
			resp := reply.(*tlogv1.GetReceiptResponse)
			r, perr := receipt.Parse(resp.Receipt)
			if perr != nil {
				t.Fatal(perr)
			}
			tc.alter(&r)
			resp.Receipt = r.Marshal()
			return err
		})
		c := l.client(client.Config{}, lie)
		if _, err := c.Receipt(t.Context(), 4); !errors.Is(err, client.ErrVerification) {
			t.Errorf("%s: Receipt: %v, want ErrVerification", tc.name, err)
		}
	}
	lie := tamperEntries(setEntry(4, "forged"))
	c = l.client(client.Config{Conn: l.conn(lie)})
	if _, err := c.Receipt(t.Context(), 4); !errors.Is(err, client.ErrVerification) {
		t.Errorf("entry altered: Receipt: %v, want ErrVerification", err)
	}
	l.verify()
}
