package auth

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"sync/atomic"
)

// TLSConfig configures the TLS of a server.
type TLSConfig struct {
	// CertFile and KeyFile hold the server's PEM certificate chain and
	// private key. Required.
	CertFile, KeyFile string
	// ClientCAFile, if set, holds the PEM certificates of the CAs that sign
	// client certificates: the server verifies the certificates clients
	// present, and Authenticate maps them to identities.
	ClientCAFile string
	// ClientCertOptional accepts clients without a certificate (they then
	// need a bearer token for what is not public). By default, with a
	// ClientCAFile, a client certificate is required.
	ClientCertOptional bool
}

// ServerTLS is a server's TLS configuration whose certificate can be
// reloaded from its files.
type ServerTLS struct {
	cfg  TLSConfig
	cert atomic.Pointer[tls.Certificate]
	tls  *tls.Config
}

// NewServerTLS loads the certificate, key and client CAs of cfg.
func NewServerTLS(cfg TLSConfig) (*ServerTLS, error) {
	if cfg.CertFile == "" || cfg.KeyFile == "" {
		return nil, errors.New("TLS needs both a certificate file and a key file")
	}
	s := &ServerTLS{cfg: cfg}
	if err := s.Reload(); err != nil {
		return nil, err
	}
	s.tls = &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return s.cert.Load(), nil
		},
	}
	if cfg.ClientCAFile != "" {
		pem, err := os.ReadFile(cfg.ClientCAFile)
		if err != nil {
			return nil, fmt.Errorf("client CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("client CA file %s holds no PEM certificate", cfg.ClientCAFile)
		}
		s.tls.ClientCAs = pool
		s.tls.ClientAuth = tls.RequireAndVerifyClientCert
		if cfg.ClientCertOptional {
			s.tls.ClientAuth = tls.VerifyClientCertIfGiven
		}
	}
	return s, nil
}

// Reload re-reads the certificate and key files; on error the certificate
// in force stays. Errors never quote the key file's content.
func (s *ServerTLS) Reload() error {
	c, err := tls.LoadX509KeyPair(s.cfg.CertFile, s.cfg.KeyFile)
	if err != nil {
		// tls's errors describe the PEM blocks, not their bytes.
		return fmt.Errorf("TLS certificate %s and key %s: %w", s.cfg.CertFile, s.cfg.KeyFile, err)
	}
	s.cert.Store(&c)
	return nil
}

// Config returns the tls.Config to serve with. Its NextProtos are empty:
// gRPC's credentials and net/http add theirs to a clone.
func (s *ServerTLS) Config() *tls.Config { return s.tls.Clone() }

// VerifiedCert returns the leaf of the first verified chain of a TLS
// connection, or nil if the client presented no certificate that the server
// verified.
func VerifiedCert(st *tls.ConnectionState) *x509.Certificate {
	if st == nil || len(st.VerifiedChains) == 0 || len(st.VerifiedChains[0]) == 0 {
		return nil
	}
	return st.VerifiedChains[0][0]
}

// CertNames returns the names a client certificate may map to in the tokens
// file, in the order they are tried: its Subject Common Name, then its URI
// SANs.
func CertNames(cert *x509.Certificate) []string {
	var names []string
	if cert.Subject.CommonName != "" {
		names = append(names, cert.Subject.CommonName)
	}
	for _, u := range cert.URIs {
		names = append(names, u.String())
	}
	return names
}
