package server

import (
	"context"
	"fmt"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/tlog-dev/tlog/pkg/checkpoint"
	tlogv1 "github.com/tlog-dev/tlog/proto/tlog/v1"
	"github.com/tlog-dev/tlog/server/sequencer"
	"github.com/tlog-dev/tlog/storage"
)

// forwardedKey marks an append forwarded by a process that does not lead
// the log; a process that does not lead it either answers it with
// ErrNotLeader instead of forwarding it again (no loops while the
// leadership moves).
const forwardedKey = "tlog-forwarded"

// forwarder keeps one gRPC connection per leader address.
type forwarder struct {
	opts []grpc.DialOption

	mu    sync.Mutex
	conns map[string]*grpc.ClientConn
}

func newForwarder(opts []grpc.DialOption) *forwarder {
	if len(opts) == 0 {
		opts = []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	}
	return &forwarder{opts: opts, conns: make(map[string]*grpc.ClientConn)}
}

func (f *forwarder) client(addr string) (tlogv1.LogServiceClient, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, ok := f.conns[addr]
	if !ok {
		var err error
		if c, err = grpc.NewClient(addr, f.opts...); err != nil {
			return nil, err
		}
		f.conns[addr] = c
	}
	return tlogv1.NewLogServiceClient(c), nil
}

func (f *forwarder) close() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for addr, c := range f.conns {
		c.Close()
		delete(f.conns, addr)
	}
}

type httpAuthKey struct{}

// withHTTPAuthorization keeps the Authorization headers of an HTTP append,
// so that a forwarded append carries the caller's credentials.
func withHTTPAuthorization(ctx context.Context, values []string) context.Context {
	return context.WithValue(ctx, httpAuthKey{}, values)
}

// forward sends an append to the log's leader at addr, with the caller's
// authorization, and checks the checkpoint it answers with.
func (s *Service) forward(ctx context.Context, ls *logState, addr string, entries []sequencer.Entry) ([]sequencer.Result, error) {
	name := ls.info.Name
	in, _ := metadata.FromIncomingContext(ctx)
	switch {
	case len(in.Get(forwardedKey)) > 0:
		return nil, fmt.Errorf("%w: an append to log %q forwarded by another process reached this one, which does not lead the log (the leadership is moving); retry", ErrNotLeader, name)
	case addr == "" || addr == s.cfg.AdvertiseAddr:
		return nil, fmt.Errorf("%w: log %q has no known leader at the moment; retry", ErrNotLeader, name)
	case s.cfg.NoForwarding:
		return nil, fmt.Errorf("%w: log %q is sequenced by %s; send appends there", ErrNotLeader, name, addr)
	}
	c, err := s.fwd.client(addr)
	if err != nil {
		return nil, fmt.Errorf("%w: log %q: connecting to its leader %s: %v", ErrNotLeader, name, addr, err)
	}
	md := metadata.Pairs(forwardedKey, "1")
	for _, v := range in.Get("authorization") {
		md.Append("authorization", v)
	}
	if vs, ok := ctx.Value(httpAuthKey{}).([]string); ok {
		for _, v := range vs {
			md.Append("authorization", v)
		}
	}
	req := &tlogv1.AppendRequest{Log: name, Entries: make([]*tlogv1.AppendEntry, len(entries))}
	for i, e := range entries {
		req.Entries[i] = &tlogv1.AppendEntry{Data: e.Data, IdempotencyKey: e.IdempotencyKey}
	}
	resp, err := c.Append(metadata.NewOutgoingContext(ctx, md), req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		st := status.Convert(err).Proto()
		st.Message = fmt.Sprintf("forwarded to the leader %s: %s", addr, st.Message)
		return nil, status.FromProto(st).Err()
	}
	cp, _, err := checkpoint.Open(resp.GetCheckpoint(), ls.verifier)
	if err != nil {
		return nil, fmt.Errorf("%w: log %q: the leader %s answered with a checkpoint that does not verify: %v", ErrNotLeader, name, addr, err)
	}
	if len(resp.GetResults()) != len(entries) {
		return nil, fmt.Errorf("%w: log %q: the leader %s answered %d results for %d entries", ErrNotLeader, name, addr, len(resp.GetResults()), len(entries))
	}
	// Reads through this process see at least what it acknowledged.
	stored := storage.Checkpoint{TreeHead: storage.TreeHead{Size: cp.Size, Root: cp.Hash}, Note: resp.GetCheckpoint()}
	ls.mu.Lock()
	if ls.seq == nil && cp.Size > ls.stored.Size {
		ls.stored, ls.storedAt = stored, time.Now()
	}
	ls.mu.Unlock()
	out := make([]sequencer.Result, len(entries))
	for i, r := range resp.GetResults() {
		out[i] = sequencer.Result{Index: r.GetIndex(), Duplicate: r.GetDuplicate(),
			Checkpoint: stored}
		copy(out[i].LeafHash[:], r.GetLeafHash())
	}
	return out, nil
}
