package client

import "context"

// BearerToken is gRPC per-RPC credentials that send a tlog token (see
// `tlogd token new`) as "authorization: Bearer <token>" with every call:
//
//	conn, err := grpc.NewClient(addr,
//		grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{})),
//		grpc.WithPerRPCCredentials(client.BearerToken(token)))
//
// It requires transport security: gRPC refuses to send it over a plaintext
// connection, so a token never crosses the network in the clear.
type BearerToken string

// GetRequestMetadata implements credentials.PerRPCCredentials.
func (t BearerToken) GetRequestMetadata(ctx context.Context, uri ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(t)}, nil
}

// RequireTransportSecurity implements credentials.PerRPCCredentials: true.
func (t BearerToken) RequireTransportSecurity() bool { return true }

// String hides the token, so that printing the credentials does not leak
// it.
func (t BearerToken) String() string { return "BearerToken(redacted)" }

// GoString hides the token from %#v too.
func (t BearerToken) GoString() string { return t.String() }
