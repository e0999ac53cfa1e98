package main

import (
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"net"
	"os"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/tlog-dev/tlog/pkg/client"
)

// transportFlags are the global flags of the connection's security: TLS and
// the bearer token.
type transportFlags struct {
	token    string
	tls      bool
	ca       string
	cert     string
	key      string
	insecure bool
}

// define defines the global flag name on fs, if it is one of t's.
func (t *transportFlags) define(fs *flag.FlagSet, name, usage string) {
	switch name {
	case "token":
		fs.StringVar(&t.token, name, t.token, usage)
	case "tls":
		fs.BoolVar(&t.tls, name, t.tls, usage)
	case "tls-ca":
		fs.StringVar(&t.ca, name, t.ca, usage)
	case "tls-cert":
		fs.StringVar(&t.cert, name, t.cert, usage)
	case "tls-key":
		fs.StringVar(&t.key, name, t.key, usage)
	case "insecure":
		fs.BoolVar(&t.insecure, name, t.insecure, usage)
	}
}

// dialOptions returns the transport credentials, and the token's per-RPC
// credentials, for a connection to addr. Without any TLS flag the
// connection is plaintext, and then the token is sent only to a loopback
// address.
func (t *transportFlags) dialOptions(addr string) ([]grpc.DialOption, error) {
	if file, ok := strings.CutPrefix(t.token, "@"); ok {
		b, err := os.ReadFile(file)
		if err != nil {
			return nil, fmt.Errorf("--token: %w", err)
		}
		t.token = strings.TrimSpace(string(b))
		if t.token == "" {
			return nil, fmt.Errorf("--token: %s is empty", file)
		}
	}
	if !t.tls && t.ca == "" && t.cert == "" && t.key == "" && !t.insecure {
		opts := []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
		if t.token != "" {
			if !isLoopback(addr) {
				return nil, usagef("refusing to send --token in plaintext to %s: give --tls or --tls-ca (or connect to a loopback address)", addr)
			}
			opts = append(opts, grpc.WithPerRPCCredentials(plaintextToken{client.BearerToken(t.token)}))
		}
		return opts, nil
	}
	cfg := &tls.Config{InsecureSkipVerify: t.insecure}
	if t.ca != "" {
		pem, err := os.ReadFile(t.ca)
		if err != nil {
			return nil, fmt.Errorf("--tls-ca: %w", err)
		}
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--tls-ca %s holds no PEM certificate", t.ca)
		}
	}
	if t.cert != "" || t.key != "" {
		c, err := tls.LoadX509KeyPair(t.cert, t.key)
		if err != nil {
			return nil, fmt.Errorf("--tls-cert/--tls-key: %w", err)
		}
		cfg.Certificates = []tls.Certificate{c}
	}
	opts := []grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(cfg))}
	if t.token != "" {
		opts = append(opts, grpc.WithPerRPCCredentials(client.BearerToken(t.token)))
	}
	return opts, nil
}

// plaintextToken sends a token over a plaintext connection, which
// client.BearerToken refuses to do; dialOptions uses it only for loopback
// addresses.
type plaintextToken struct{ client.BearerToken }

func (plaintextToken) RequireTransportSecurity() bool { return false }

var _ credentials.PerRPCCredentials = plaintextToken{}

// isLoopback reports whether a gRPC target is a loopback address or a Unix
// socket.
func isLoopback(target string) bool {
	if strings.HasPrefix(target, "unix:") {
		return true
	}
	target = strings.TrimPrefix(target, "dns:///")
	host, _, err := net.SplitHostPort(target)
	if err != nil {
		host = target
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
