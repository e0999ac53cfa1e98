package server_test

import (
	"context"
	"crypto/tls"
	"net/http"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/tlog-dev/tlog/internal/testcert"
	"github.com/tlog-dev/tlog/pkg/client"
	tlogv1 "github.com/tlog-dev/tlog/proto/tlog/v1"
	"github.com/tlog-dev/tlog/server/auth"
)

// TestAccessTLS serves gRPC and HTTP over TLS from certificate files, with
// bearer tokens sent by client.BearerToken.
func TestAccessTLS(t *testing.T) {
	t.Parallel()
	ca := testcert.NewCA(t, t.TempDir(), "test")
	srv := ca.Server(t, "server")
	e := startAccess(t, accOptions{
		callers:     map[string][]string{"writer": {"append:A"}},
		publicReads: true,
		tls:         &auth.TLSConfig{CertFile: srv.CertFile, KeyFile: srv.KeyFile},
	})
	e.secrets = append(e.secrets, strings.TrimSpace(string(srv.KeyPEM)))
	ctx := context.Background()
	tlsCfg := &tls.Config{RootCAs: ca.Pool()}

	conn := e.dial(grpc.WithTransportCredentials(credentials.NewTLS(tlsCfg)), grpc.WithPerRPCCredentials(client.BearerToken(e.tokens["writer"])))
	lc := tlogv1.NewLogServiceClient(conn)
	if _, err := lc.Append(ctx, &tlogv1.AppendRequest{Log: "A", Entries: []*tlogv1.AppendEntry{{Data: []byte("over TLS")}}}); err != nil {
		t.Fatalf("Append over TLS: %v", err)
	}
	if _, err := lc.Append(ctx, &tlogv1.AppendRequest{Log: "B", Entries: []*tlogv1.AppendEntry{{Data: []byte("over TLS")}}}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("Append to B over TLS: %v, want PermissionDenied", err)
	}
	if _, err := lc.GetCheckpoint(ctx, &tlogv1.GetCheckpointRequest{Log: "B"}); err != nil {
		t.Errorf("GetCheckpoint over TLS: %v", err)
	}

	// Without TLS, the client does not connect; client.BearerToken refuses
	// to go in the clear.
	plain := tlogv1.NewLogServiceClient(e.dial(grpc.WithTransportCredentials(insecure.NewCredentials())))
	if _, err := plain.GetCheckpoint(ctx, &tlogv1.GetCheckpointRequest{Log: "A"}); status.Code(err) != codes.Unavailable {
		t.Errorf("plaintext call to a TLS server: %v, want Unavailable", err)
	}
	if c, err := grpc.NewClient(e.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithPerRPCCredentials(client.BearerToken("x"))); err == nil {
		_, err = tlogv1.NewLogServiceClient(c).GetCheckpoint(ctx, &tlogv1.GetCheckpointRequest{Log: "A"})
		c.Close()
		if err == nil {
			t.Error("client.BearerToken was sent over a plaintext connection")
		}
	}

	hc := tlsClient(tlsCfg)
	if resp, body := e.httpDo(hc, "POST", "/logs/A/add", "Bearer "+e.tokens["writer"], []byte("over HTTPS")); resp.StatusCode != http.StatusOK {
		t.Errorf("POST add over HTTPS: %s %s", resp.Status, body)
	}
	if resp, body := e.httpDo(hc, "POST", "/logs/A/add", "", []byte("no token")); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("POST add over HTTPS without a token: %s %s", resp.Status, body)
	}
	if resp, body := e.httpDo(hc, "GET", "/logs/A/checkpoint", "", nil); resp.StatusCode != http.StatusOK || resp.TLS == nil {
		t.Errorf("GET checkpoint over HTTPS: %s %s", resp.Status, body)
	}
	if e.verify("A") != 2 {
		t.Errorf("log A has %d entries, want 2", e.size("A"))
	}
}

// TestAccessClientCert maps verified client certificates (Common Name or
// URI SAN) to lines of the tokens file, and refuses clients without one.
func TestAccessClientCert(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca := testcert.NewCA(t, dir, "test")
	other := testcert.NewCA(t, t.TempDir(), "other")
	srv := ca.Server(t, "server")
	writer := ca.Client(t, "writer", "cert-writer")
	reader := ca.Client(t, "reader", "", "spiffe://tlog.test/reader")
	stranger := ca.Client(t, "stranger", "nobody-we-know")
	forged := other.Client(t, "forged", "cert-writer")
	callers := map[string][]string{
		"cert-writer":               {"-", "append:A"},
		"spiffe://tlog.test/reader": {"-", "read:*"},
		"admin":                     {"admin:*"},
	}

	for _, optional := range []bool{false, true} {
		name := "required"
		if optional {
			name = "optional"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			e := startAccess(t, accOptions{
				callers:     callers,
				publicReads: false,
				tls:         &auth.TLSConfig{CertFile: srv.CertFile, KeyFile: srv.KeyFile, ClientCAFile: ca.CertFile, ClientCertOptional: optional},
			})
			ctx := context.Background()
			with := func(p *testcert.Pair, token string) (tlogv1.LogServiceClient, tlogv1.AdminServiceClient, *http.Client) {
				cfg := &tls.Config{RootCAs: ca.Pool()}
				if p != nil {
					// Send the certificate even if the server does not
					// name its CA as acceptable, so that the server must
					// refuse a forged one itself.
					c := p.TLS(t)
					cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &c, nil }
				}
				opts := []grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(cfg))}
				if token != "" {
					opts = append(opts, grpc.WithPerRPCCredentials(client.BearerToken(token)))
				}
				conn := e.dial(opts...)
				return tlogv1.NewLogServiceClient(conn), tlogv1.NewAdminServiceClient(conn), tlsClient(cfg)
			}
			appendTo := func(lc tlogv1.LogServiceClient, log string) error {
				_, err := lc.Append(ctx, &tlogv1.AppendRequest{Log: log, Entries: []*tlogv1.AppendEntry{{Data: []byte("by certificate")}}})
				return err
			}
			checkpoint := func(lc tlogv1.LogServiceClient, log string) error {
				_, err := lc.GetCheckpoint(ctx, &tlogv1.GetCheckpointRequest{Log: log})
				return err
			}
			want := func(what string, err error, code codes.Code) {
				t.Helper()
				if status.Code(err) != code {
					t.Errorf("%s: %v, want %v", what, err, code)
				}
			}

			wl, _, wh := with(&writer, "")
			want("writer appends to A", appendTo(wl, "A"), codes.OK)
			want("writer appends to B", appendTo(wl, "B"), codes.PermissionDenied)
			want("writer reads A", checkpoint(wl, "A"), codes.PermissionDenied)
			if resp, body := e.httpDo(wh, "POST", "/logs/A/add", "", []byte("by certificate over HTTPS")); resp.StatusCode != http.StatusOK {
				t.Errorf("writer POST add to A: %s %s", resp.Status, body)
			}
			if resp, body := e.httpDo(wh, "POST", "/logs/B/add", "", []byte("by certificate over HTTPS")); resp.StatusCode != http.StatusForbidden {
				t.Errorf("writer POST add to B: %s %s, want 403", resp.Status, body)
			}

			rl, _, rh := with(&reader, "")
			want("reader (URI SAN) reads B", checkpoint(rl, "B"), codes.OK)
			want("reader appends to A", appendTo(rl, "A"), codes.PermissionDenied)
			if resp, body := e.httpDo(rh, "GET", "/logs/A/tile/0/000.p/1", "", nil); resp.StatusCode != http.StatusOK {
				t.Errorf("reader GET tile: %s %s", resp.Status, body)
			}

			// A certificate of the right CA that names nobody: anonymous.
			sl, _, sh := with(&stranger, "")
			want("stranger reads A", checkpoint(sl, "A"), codes.Unauthenticated)
			if resp, body := e.httpDo(sh, "GET", "/logs/A/checkpoint", "", nil); resp.StatusCode != http.StatusUnauthorized {
				t.Errorf("stranger GET checkpoint: %s %s, want 401", resp.Status, body)
			}

			// A token takes precedence over the certificate.
			_, wa, _ := with(&writer, e.tokens["admin"])
			if _, err := wa.CreateLog(ctx, &tlogv1.CreateLogRequest{Name: "C"}); err != nil {
				t.Errorf("CreateLog with the admin token beside the writer's certificate: %v", err)
			}

			// A certificate of another CA never gets through the handshake.
			fl, _, fh := with(&forged, "")
			want("certificate of another CA", checkpoint(fl, "A"), codes.Unavailable)
			if _, err := fh.Get(e.httpURL + "/logs/A/checkpoint"); err == nil {
				t.Error("HTTPS with a certificate of another CA: no error")
			}

			// No certificate: refused when required; else a token works.
			nl, _, nh := with(nil, "")
			tl, _, _ := with(nil, e.tokens["admin"])
			if !optional {
				want("no certificate", checkpoint(nl, "A"), codes.Unavailable)
				if _, err := nh.Get(e.httpURL + "/logs/A/checkpoint"); err == nil {
					t.Error("HTTPS without a client certificate: no error")
				}
				want("no certificate, with a token", checkpoint(tl, "A"), codes.Unavailable)
			} else {
				want("no certificate", checkpoint(nl, "A"), codes.Unauthenticated)
				want("no certificate, with a token", checkpoint(tl, "A"), codes.OK)
			}

			if got := e.verify("A"); got != 2 {
				t.Errorf("log A has %d entries, want 2", got)
			}
			if got := e.verify("B"); got != 0 {
				t.Errorf("log B has %d entries, want 0", got)
			}
		})
	}
}
