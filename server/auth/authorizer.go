package auth

import (
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
)

// Config configures an Authorizer.
type Config struct {
	// TokensFile is the path of the tokens file (see the package comment),
	// read by New and by every Reload.
	TokensFile string
	// Tokens are the tokens when TokensFile is empty (for tests and
	// embedders). With neither, New returns nil: a nil *Authorizer allows
	// everything to everyone.
	Tokens *Tokens
	// PublicReads lets anyone, without credentials, read every log:
	// checkpoints, tiles, entries, proofs, GetLog and ListLogs. When false,
	// reads need a read grant on the log (or admin), and ListLogs lists only
	// the logs the caller may read.
	PublicReads bool
	// Logger receives reload reports (default slog.Default()).
	Logger *slog.Logger
}

// Authorizer authenticates callers and authorizes their operations. A nil
// *Authorizer has authentication disabled: every caller is anonymous and
// may do everything. It is safe for concurrent use.
type Authorizer struct {
	cfg    Config
	tokens atomic.Pointer[Tokens]
}

// New returns an Authorizer with the tokens of cfg, or nil (authentication
// disabled) if cfg names no tokens and reads are public. Private reads
// without tokens are an error: nobody could read.
func New(cfg Config) (*Authorizer, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	t := cfg.Tokens
	if cfg.TokensFile != "" {
		var err error
		if t, err = ReadTokensFile(cfg.TokensFile); err != nil {
			return nil, err
		}
	}
	if t == nil {
		if !cfg.PublicReads {
			return nil, errors.New("private reads need a tokens file: without one nobody could read")
		}
		return nil, nil
	}
	a := &Authorizer{cfg: cfg}
	a.tokens.Store(t)
	return a, nil
}

// Enabled reports whether a authenticates callers (it is not nil).
func (a *Authorizer) Enabled() bool { return a != nil }

// PublicReads reports whether anyone may read every log.
func (a *Authorizer) PublicReads() bool { return a == nil || a.cfg.PublicReads }

// Reload re-reads the tokens file. On error the tokens in force stay.
func (a *Authorizer) Reload() error {
	if a == nil || a.cfg.TokensFile == "" {
		return nil
	}
	t, err := ReadTokensFile(a.cfg.TokensFile)
	if err != nil {
		a.cfg.Logger.Error("tokens file not reloaded; the previous tokens stay in force", "path", a.cfg.TokensFile, "err", err)
		return err
	}
	a.tokens.Store(t)
	a.cfg.Logger.Info("tokens file reloaded", "path", a.cfg.TokensFile, "identities", t.Len())
	return nil
}

// Authenticate returns the caller's identity from the values of its
// Authorization header (or "authorization" gRPC metadata) and its verified
// TLS client certificate (nil if none). A bearer token takes precedence
// over the certificate. It returns nil for an anonymous caller: no
// Authorization and no certificate whose names are in the tokens file. An
// Authorization that is malformed or holds an unknown token is
// ErrUnauthenticated.
func (a *Authorizer) Authenticate(authorization []string, cert *x509.Certificate) (*Identity, error) {
	if a == nil {
		return nil, nil
	}
	t := a.tokens.Load()
	switch len(authorization) {
	case 0:
	case 1:
		token, err := bearer(authorization[0])
		if err != nil {
			return nil, err
		}
		if id := t.lookupToken(token); id != nil {
			return id, nil
		}
		return nil, fmt.Errorf("%w: unknown bearer token", ErrUnauthenticated)
	default:
		return nil, fmt.Errorf("%w: %d authorization headers, want one", ErrUnauthenticated, len(authorization))
	}
	if cert == nil {
		return nil, nil
	}
	for _, name := range CertNames(cert) {
		if id := t.lookupName(name); id != nil {
			c := *id
			c.ByCertificate = true
			return &c, nil
		}
	}
	return nil, nil
}

// bearer returns the token of "Bearer <token>".
func bearer(authorization string) (string, error) {
	scheme, token, ok := strings.Cut(strings.TrimSpace(authorization), " ")
	token = strings.TrimSpace(token)
	if !ok || !strings.EqualFold(scheme, "Bearer") || token == "" || strings.ContainsAny(token, " \t") {
		return "", fmt.Errorf(`%w: authorization is not "Bearer <token>"`, ErrUnauthenticated)
	}
	return token, nil
}

// Authorize reports whether id (nil: anonymous) may use scope on log
// (AllLogs: on every log, as creating a log needs): nil if it may,
// ErrUnauthenticated if id is anonymous, ErrPermissionDenied otherwise. Read
// is allowed to everyone when reads are public.
func (a *Authorizer) Authorize(id *Identity, scope Scope, log string) error {
	if a == nil || scope == Read && a.cfg.PublicReads || id.Can(scope, log) {
		return nil
	}
	what := fmt.Sprintf("log %q", log)
	if log == AllLogs {
		what = "every log"
	}
	if id == nil {
		return fmt.Errorf(`%w: %s on %s needs credentials: send "Authorization: Bearer <token>" or a client certificate`, ErrUnauthenticated, scope, what)
	}
	return fmt.Errorf("%w: %s has no %s grant on %s", ErrPermissionDenied, id.Name, scope, what)
}

// ListFilter returns the filter of the logs id may see in a listing (nil:
// every log), or ErrUnauthenticated if reads are private and id is
// anonymous.
func (a *Authorizer) ListFilter(id *Identity) (func(log string) bool, error) {
	if a.PublicReads() || id.Can(Read, AllLogs) {
		return nil, nil
	}
	if id == nil {
		return nil, fmt.Errorf(`%w: listing logs needs credentials: send "Authorization: Bearer <token>" or a client certificate`, ErrUnauthenticated)
	}
	return func(log string) bool { return id.Can(Read, log) }, nil
}
