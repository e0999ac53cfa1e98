package tlogv1_test

import (
	"slices"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	tlogv1 "github.com/tlog-dev/tlog/proto/tlog/v1"
)

func TestRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		msg  proto.Message
		new  func() proto.Message
	}{
		{
			name: "AppendRequest",
			msg: &tlogv1.AppendRequest{
				Log: "audit",
				Entries: []*tlogv1.AppendEntry{
					{Data: []byte("event one")},
					{Data: []byte{0, 1, 2, 0xff}, IdempotencyKey: "req-42"},
					{},
				},
			},
			new: func() proto.Message { return new(tlogv1.AppendRequest) },
		},
		{
			name: "GetInclusionProofRequest/leaf_hash",
			msg: &tlogv1.GetInclusionProofRequest{
				Log:      "audit",
				Leaf:     &tlogv1.GetInclusionProofRequest_LeafHash{LeafHash: make([]byte, 32)},
				TreeSize: 7,
			},
			new: func() proto.Message { return new(tlogv1.GetInclusionProofRequest) },
		},
		{
			name: "GetReceiptRequest/index",
			msg: &tlogv1.GetReceiptRequest{
				Log:  "audit",
				Leaf: &tlogv1.GetReceiptRequest_Index{Index: 0},
			},
			new: func() proto.Message { return new(tlogv1.GetReceiptRequest) },
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := proto.Marshal(tt.msg)
			if err != nil {
				t.Fatalf("Marshal: %v", err)
			}
			got := tt.new()
			if err := proto.Unmarshal(b, got); err != nil {
				t.Fatalf("Unmarshal: %v", err)
			}
			if !proto.Equal(got, tt.msg) {
				t.Errorf("round trip changed the message:\n got %v\nwant %v", got, tt.msg)
			}
		})
	}
}

func TestServices(t *testing.T) {
	tests := []struct {
		file    protoreflect.FileDescriptor
		service protoreflect.Name
		desc    grpc.ServiceDesc
		methods []string
		streams []string // server-streaming methods
	}{
		{
			file:    tlogv1.File_tlog_v1_log_proto,
			service: "LogService",
			desc:    tlogv1.LogService_ServiceDesc,
			methods: []string{
				"Append",
				"GetCheckpoint",
				"GetInclusionProof",
				"GetConsistencyProof",
				"GetEntries",
				"GetEntryAndProof",
				"GetReceipt",
			},
			streams: []string{"GetEntries"},
		},
		{
			file:    tlogv1.File_tlog_v1_admin_proto,
			service: "AdminService",
			desc:    tlogv1.AdminService_ServiceDesc,
			methods: []string{"CreateLog", "GetLog", "ListLogs", "SetWitnessPolicy"},
		},
	}
	for _, tt := range tests {
		t.Run(string(tt.service), func(t *testing.T) {
			sd := tt.file.Services().ByName(tt.service)
			if sd == nil {
				t.Fatalf("service %s not in %s", tt.service, tt.file.Path())
			}
			if got, want := string(sd.FullName()), "tlog.v1."+string(tt.service); got != want {
				t.Errorf("full name = %q, want %q", got, want)
			}
			var got, streams []string
			for i := range sd.Methods().Len() {
				m := sd.Methods().Get(i)
				got = append(got, string(m.Name()))
				if m.IsStreamingServer() {
					streams = append(streams, string(m.Name()))
				}
				if m.IsStreamingClient() {
					t.Errorf("%s is client-streaming", m.Name())
				}
			}
			if !slices.Equal(got, tt.methods) {
				t.Errorf("methods = %q, want %q", got, tt.methods)
			}
			if !slices.Equal(streams, tt.streams) {
				t.Errorf("server-streaming methods = %q, want %q", streams, tt.streams)
			}

			// The gRPC service description must agree with the descriptor.
			if tt.desc.ServiceName != string(sd.FullName()) {
				t.Errorf("ServiceDesc.ServiceName = %q, want %q", tt.desc.ServiceName, sd.FullName())
			}
			var grpcMethods []string
			for _, m := range tt.desc.Methods {
				grpcMethods = append(grpcMethods, m.MethodName)
			}
			for _, s := range tt.desc.Streams {
				grpcMethods = append(grpcMethods, s.StreamName)
			}
			slices.Sort(grpcMethods)
			want := slices.Sorted(slices.Values(tt.methods))
			if !slices.Equal(grpcMethods, want) {
				t.Errorf("ServiceDesc methods = %q, want %q", grpcMethods, want)
			}
		})
	}
}
