package main

// tlogd's flags for authentication, TLS and limits, and what they build.

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/tlog-dev/tlog/internal/redact"
	"github.com/tlog-dev/tlog/server"
	"github.com/tlog-dev/tlog/server/auth"
)

// securityFlags are the flags of authentication, TLS and limits.
type securityFlags struct {
	tokensFile     string
	publicReads    bool
	tlsCert        string
	tlsKey         string
	tlsClientCA    string
	clientCertOpt  bool
	limits         server.Limits
	reloadInterval time.Duration
}

// defineSecurityFlags defines the flags on fs.
func defineSecurityFlags(fs *flag.FlagSet) *securityFlags {
	f := &securityFlags{}
	fs.StringVar(&f.tokensFile, "tokens-file", "", "file of bearer tokens (one `FILE` line per caller: NAME sha256:HEX GRANT..., see 'tlogd token new');\nempty: no authentication, anyone may do anything")
	fs.BoolVar(&f.publicReads, "public-reads", true, "let anyone read checkpoints, tiles, entries and proofs without a token; false: reads need read:LOG")
	fs.StringVar(&f.tlsCert, "tls-cert", "", "PEM certificate `FILE` of the server: serve gRPC and HTTP over TLS (with --tls-key)")
	fs.StringVar(&f.tlsKey, "tls-key", "", "PEM private key `FILE` of --tls-cert")
	fs.StringVar(&f.tlsClientCA, "tls-client-ca", "", "PEM `FILE` of the CAs of client certificates: require and verify them; a certificate's\nCommon Name or URI SAN names a line of the tokens file")
	fs.BoolVar(&f.clientCertOpt, "tls-client-cert-optional", false, "with --tls-client-ca, also accept clients without a certificate (they need a token)")
	fs.IntVar(&f.limits.MaxEntrySize, "max-entry-size", 65535, "largest entry in bytes (at most 65535)")
	fs.IntVar(&f.limits.MaxEntriesPerRequest, "max-entries-per-request", server.DefaultMaxEntriesPerRequest, "most entries in one Append request")
	fs.IntVar(&f.limits.MaxRequestBytes, "max-request-bytes", server.DefaultMaxRequestBytes, "largest gRPC request message in bytes")
	fs.IntVar(&f.limits.MaxConcurrentStreams, "max-concurrent-streams", server.DefaultMaxConcurrentStreams, "most concurrent calls on one gRPC or HTTP/2 connection")
	fs.Float64Var(&f.limits.AppendRate, "append-rate", 0, "most entries per second each token may append, sustained (0: unlimited)")
	fs.IntVar(&f.limits.AppendBurst, "append-burst", 0, "entries a token may append at once above --append-rate (default: one second's worth)")
	f.reloadInterval = 5 * time.Second
	return f
}

// security is what the flags built: the access control of both front ends
// and the TLS configuration, reloaded on SIGHUP and when their files change.
type security struct {
	f      *securityFlags
	log    *slog.Logger
	authz  *auth.Authorizer // nil: authentication disabled
	tls    *auth.ServerTLS  // nil: plaintext
	access *server.AccessControl
}

// setupSecurity loads the tokens and TLS files and starts reloading them.
func (f *securityFlags) setup(ctx context.Context, logger *slog.Logger) (*security, error) {
	s := &security{f: f, log: logger}
	var err error
	s.authz, err = auth.New(auth.Config{TokensFile: f.tokensFile, PublicReads: f.publicReads, Logger: logger})
	if err != nil {
		return nil, fmt.Errorf("--tokens-file: %w", err)
	}
	switch {
	case f.tlsCert != "" || f.tlsKey != "":
		s.tls, err = auth.NewServerTLS(auth.TLSConfig{CertFile: f.tlsCert, KeyFile: f.tlsKey, ClientCAFile: f.tlsClientCA, ClientCertOptional: f.clientCertOpt})
		if err != nil {
			return nil, fmt.Errorf("--tls-cert/--tls-key: %w", err)
		}
	case f.tlsClientCA != "":
		return nil, errors.New("--tls-client-ca needs --tls-cert and --tls-key")
	}
	s.access = &server.AccessControl{Authorizer: s.authz, Logger: logger}
	if s.authz != nil || s.tls != nil {
		go s.reload(ctx)
	}
	return s, nil
}

// reload reloads the tokens and the TLS certificate on SIGHUP, and when one
// of their files changes.
func (s *security) reload(ctx context.Context) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	tick := time.NewTicker(s.f.reloadInterval)
	defer tick.Stop()
	tokens, certs := s.stamp(s.f.tokensFile), s.stamp(s.f.tlsCert)+s.stamp(s.f.tlsKey)
	for {
		force := false
		select {
		case <-ctx.Done():
			return
		case <-hup:
			force = true
			s.log.Info("SIGHUP: reloading the tokens file and TLS certificate")
		case <-tick.C:
		}
		if t := s.stamp(s.f.tokensFile); s.authz != nil && (force || t != tokens) {
			tokens = t
			s.authz.Reload() // logs its outcome
		}
		if c := s.stamp(s.f.tlsCert) + s.stamp(s.f.tlsKey); s.tls != nil && (force || c != certs) {
			certs = c
			if err := s.tls.Reload(); err != nil {
				s.log.Error("TLS certificate not reloaded; the previous one stays in force", "err", err)
			} else {
				s.log.Info("TLS certificate reloaded", "cert", s.f.tlsCert)
			}
		}
	}
}

// stamp identifies a version of a file: its size and modification time.
func (s *security) stamp(path string) string {
	if path == "" {
		return ""
	}
	fi, err := os.Stat(path)
	if err != nil {
		return "missing"
	}
	return fmt.Sprint(fi.Size(), fi.ModTime().UnixNano())
}

// grpcOptions returns the options of the gRPC server: TLS, access control
// and limits.
func (s *security) grpcOptions() []grpc.ServerOption {
	opts := append(s.access.ServerOptions(), s.f.limits.GRPCServerOptions()...)
	if s.tls != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(s.tls.Config())))
	}
	return opts
}

// forwardDialOptions returns the dial options of appends forwarded to a
// log's leader: TLS verified with the system's roots when this process
// serves TLS (the processes of one deployment share its setup), else
// plaintext. A deployment whose peers cannot verify each other's
// certificates runs with --forward=false.
func (s *security) forwardDialOptions() []grpc.DialOption {
	if s.tls != nil {
		return []grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{MinVersion: tls.VersionTLS12}))}
	}
	return nil
}

// httpServer returns the HTTP server of h, behind the access control.
func (s *security) httpServer(h http.Handler) *http.Server {
	srv := &http.Server{
		Handler:           s.access.Handler(h),
		ReadHeaderTimeout: 10 * time.Second,
		// A client that trickles a body (at most 64 KiB for an add) must
		// not hold a connection for ever; idle keep-alives are closed too.
		ReadTimeout: 60 * time.Second,
		IdleTimeout: 2 * time.Minute,
		HTTP2:       &http.HTTP2Config{MaxConcurrentStreams: s.f.limits.MaxConcurrentStreams},
	}
	if s.tls != nil {
		srv.TLSConfig = s.tls.Config()
	}
	return srv
}

// serveHTTP serves srv on l, over TLS if configured.
func (s *security) serveHTTP(srv *http.Server, l net.Listener) error {
	if s.tls != nil {
		return srv.ServeTLS(l, "", "")
	}
	return srv.Serve(l)
}

// httpScheme is the scheme of the HTTP API's URLs.
func (s *security) httpScheme() string {
	if s.tls != nil {
		return "https"
	}
	return "http"
}

// warnIfOpen warns loudly when anyone who can reach a non-loopback address
// may append and create logs.
func (s *security) warnIfOpen(addrs ...net.Addr) {
	if s.authz != nil {
		s.log.Info("authentication on", "tokens_file", s.f.tokensFile, "public_reads", s.f.publicReads, "tls", s.tls != nil, "client_certs", s.f.tlsClientCA != "")
		return
	}
	for _, a := range addrs {
		if ta, ok := a.(*net.TCPAddr); ok && !ta.IP.IsLoopback() {
			s.log.Warn("AUTHENTICATION IS OFF on a non-loopback address: anyone who can reach it may append to every log and create logs; give --tokens-file (see 'tlogd token new')", "addr", a.String())
		}
	}
}

// redactDB removes the password of the database URL from err.
func redactDB(err error, url string) error {
	return redact.Error(err, redact.Secrets(url)...)
}
