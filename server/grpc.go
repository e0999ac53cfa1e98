package server

import (
	"context"
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/timestamppb"

	tlogv1 "github.com/tlog-dev/tlog/proto/tlog/v1"
	"github.com/tlog-dev/tlog/server/sequencer"
	"github.com/tlog-dev/tlog/storage"
)

// RegisterGRPC registers the LogService and AdminService of s on g.
func RegisterGRPC(g grpc.ServiceRegistrar, s *Service) {
	h := &grpcHandler{s: s}
	tlogv1.RegisterLogServiceServer(g, h)
	tlogv1.RegisterAdminServiceServer(g, h)
}

type grpcHandler struct {
	tlogv1.UnimplementedLogServiceServer
	tlogv1.UnimplementedAdminServiceServer
	s *Service
}

func (h *grpcHandler) Append(ctx context.Context, req *tlogv1.AppendRequest) (*tlogv1.AppendResponse, error) {
	entries := make([]sequencer.Entry, len(req.GetEntries()))
	for i, e := range req.GetEntries() {
		entries[i] = sequencer.Entry{Data: e.GetData(), IdempotencyKey: e.GetIdempotencyKey()}
	}
	res, err := h.s.Append(ctx, req.GetLog(), entries)
	if err != nil {
		return nil, GRPCError(err)
	}
	out := &tlogv1.AppendResponse{Results: make([]*tlogv1.AppendResult, len(res))}
	for i, r := range res {
		out.Results[i] = &tlogv1.AppendResult{Index: r.Index, LeafHash: r.LeafHash[:], Duplicate: r.Duplicate}
		out.Checkpoint = r.Checkpoint.Note
	}
	return out, nil
}

func (h *grpcHandler) GetCheckpoint(ctx context.Context, req *tlogv1.GetCheckpointRequest) (*tlogv1.GetCheckpointResponse, error) {
	get := h.s.CosignedCheckpoint
	if req.GetRequireWitnessPolicy() {
		get = h.s.WitnessedCheckpoint
	}
	cp, err := get(ctx, req.GetLog(), req.GetTreeSize())
	if err != nil {
		return nil, GRPCError(err)
	}
	return &tlogv1.GetCheckpointResponse{Checkpoint: cp.Note, TreeSize: cp.Size, RootHash: cp.Root[:]}, nil
}

// leafIndex resolves the leaf oneof of proof and receipt requests.
func (h *grpcHandler) leafIndex(ctx context.Context, log string, byIndex *uint64, byHash []byte) (uint64, error) {
	switch {
	case byIndex != nil:
		return *byIndex, nil
	case byHash != nil:
		return h.s.FindLeaf(ctx, log, byHash)
	default:
		return 0, fmt.Errorf("%w: give the leaf's index or its leaf hash", ErrInvalidArgument)
	}
}

func (h *grpcHandler) GetInclusionProof(ctx context.Context, req *tlogv1.GetInclusionProofRequest) (*tlogv1.GetInclusionProofResponse, error) {
	idx, err := h.leafIndex(ctx, req.GetLog(), indexOf(req.GetLeaf()), req.GetLeafHash())
	if err != nil {
		return nil, GRPCError(err)
	}
	p, cp, err := h.s.InclusionProof(ctx, req.GetLog(), idx, req.GetTreeSize())
	if err != nil {
		return nil, GRPCError(err)
	}
	return &tlogv1.GetInclusionProofResponse{Index: idx, TreeSize: cp.Size, Hashes: p, Checkpoint: cp.Note}, nil
}

// indexOf returns the index of a leaf oneof, or nil if it is not by index.
func indexOf(leaf any) *uint64 {
	switch l := leaf.(type) {
	case *tlogv1.GetInclusionProofRequest_Index:
		return &l.Index
	case *tlogv1.GetReceiptRequest_Index:
		return &l.Index
	}
	return nil
}

func (h *grpcHandler) GetConsistencyProof(ctx context.Context, req *tlogv1.GetConsistencyProofRequest) (*tlogv1.GetConsistencyProofResponse, error) {
	p, cp, err := h.s.ConsistencyProof(ctx, req.GetLog(), req.GetFromSize(), req.GetToSize())
	if err != nil {
		return nil, GRPCError(err)
	}
	return &tlogv1.GetConsistencyProofResponse{FromSize: req.GetFromSize(), ToSize: cp.Size, Hashes: p, Checkpoint: cp.Note}, nil
}

func (h *grpcHandler) GetEntries(req *tlogv1.GetEntriesRequest, stream grpc.ServerStreamingServer[tlogv1.GetEntriesResponse]) error {
	ctx := stream.Context()
	info, err := h.s.GetLog(ctx, req.GetLog())
	if err != nil {
		return GRPCError(err)
	}
	start, end := req.GetStart(), req.GetEnd()
	if end == 0 || end > info.Size {
		end = info.Size
	}
	if start >= end {
		return GRPCError(fmt.Errorf("%w: start %d is not below the end %d (log size %d)", ErrOutOfRange, start, end, info.Size))
	}
	for start < end {
		es, err := h.s.Entries(ctx, req.GetLog(), start, end)
		if err != nil {
			return GRPCError(err)
		}
		// Split the entries so that no message nears gRPC's default 4 MiB
		// limit: MaxEntriesPerRead entries of up to 64 KiB would.
		for len(es) > 0 {
			msg := &tlogv1.GetEntriesResponse{}
			for n := 0; len(es) > 0 && (n == 0 || n+len(es[0].Data)+entryOverhead <= maxEntriesMessageSize); es = es[1:] {
				msg.Entries = append(msg.Entries, entryProto(es[0]))
				n += len(es[0].Data) + entryOverhead
			}
			if err := stream.Send(msg); err != nil {
				return err
			}
			start += uint64(len(msg.Entries))
		}
	}
	return nil
}

const (
	// maxEntriesMessageSize bounds the entries of one GetEntries message.
	maxEntriesMessageSize = 1 << 20
	// entryOverhead bounds the encoding of an Entry beside its data.
	entryOverhead = 64
)

func entryProto(e storage.Entry) *tlogv1.Entry {
	return &tlogv1.Entry{Index: e.Index, Data: e.Data, LeafHash: e.LeafHash[:]}
}

func (h *grpcHandler) GetEntryAndProof(ctx context.Context, req *tlogv1.GetEntryAndProofRequest) (*tlogv1.GetEntryAndProofResponse, error) {
	p, cp, err := h.s.InclusionProof(ctx, req.GetLog(), req.GetIndex(), req.GetTreeSize())
	if err != nil {
		return nil, GRPCError(err)
	}
	es, err := h.s.Entries(ctx, req.GetLog(), req.GetIndex(), req.GetIndex()+1)
	if err != nil {
		return nil, GRPCError(err)
	}
	return &tlogv1.GetEntryAndProofResponse{Entry: entryProto(es[0]), InclusionProof: p, Checkpoint: cp.Note}, nil
}

func (h *grpcHandler) GetReceipt(ctx context.Context, req *tlogv1.GetReceiptRequest) (*tlogv1.GetReceiptResponse, error) {
	idx, err := h.leafIndex(ctx, req.GetLog(), indexOf(req.GetLeaf()), req.GetLeafHash())
	if err != nil {
		return nil, GRPCError(err)
	}
	r, err := h.s.ReceiptWith(ctx, req.GetLog(), idx, req.GetTreeSize(), ReceiptOptions{
		IncludeCosignatures:  req.GetIncludeCosignatures(),
		RequireWitnessPolicy: req.GetRequireWitnessPolicy(),
	})
	if err != nil {
		return nil, GRPCError(err)
	}
	return &tlogv1.GetReceiptResponse{Receipt: r, Index: idx}, nil
}

func logProto(l LogInfo) *tlogv1.Log {
	return &tlogv1.Log{Name: l.Name, Origin: l.Origin, VerifierKey: l.VerifierKey, Size: l.Size, CreateTime: timestamppb.New(l.CreatedAt), WitnessPolicy: l.WitnessPolicy}
}

func (h *grpcHandler) SetWitnessPolicy(ctx context.Context, req *tlogv1.SetWitnessPolicyRequest) (*tlogv1.SetWitnessPolicyResponse, error) {
	l, err := h.s.SetWitnessPolicy(ctx, req.GetLog(), req.GetWitnessPolicy())
	if err != nil {
		return nil, GRPCError(err)
	}
	return &tlogv1.SetWitnessPolicyResponse{Log: logProto(l)}, nil
}

func (h *grpcHandler) CreateLog(ctx context.Context, req *tlogv1.CreateLogRequest) (*tlogv1.CreateLogResponse, error) {
	l, err := h.s.CreateLogWithPolicy(ctx, req.GetName(), req.GetOrigin(), req.GetWitnessPolicy())
	if err != nil {
		return nil, GRPCError(err)
	}
	return &tlogv1.CreateLogResponse{Log: logProto(LogInfo{Log: l})}, nil
}

func (h *grpcHandler) GetLog(ctx context.Context, req *tlogv1.GetLogRequest) (*tlogv1.GetLogResponse, error) {
	l, err := h.s.GetLog(ctx, req.GetName())
	if err != nil {
		return nil, GRPCError(err)
	}
	return &tlogv1.GetLogResponse{Log: logProto(l)}, nil
}

func (h *grpcHandler) ListLogs(ctx context.Context, req *tlogv1.ListLogsRequest) (*tlogv1.ListLogsResponse, error) {
	size := int(req.GetPageSize())
	switch {
	case size < 0:
		return nil, GRPCError(fmt.Errorf("%w: negative page size %d", ErrInvalidArgument, size))
	case size == 0:
		size = 100
	}
	size = min(size, 1000)
	out := &tlogv1.ListLogsResponse{}
	// The page token is the name of the last log of the previous page.
	for _, l := range h.s.ListLogs(ctx) {
		if l.Name <= req.GetPageToken() {
			continue
		}
		if len(out.Logs) == size {
			out.NextPageToken = out.Logs[size-1].Name
			break
		}
		out.Logs = append(out.Logs, logProto(l))
	}
	return out, nil
}
