// Package auth decides who may do what on a tlog server: it authenticates
// callers by bearer token or TLS client certificate and authorizes each
// operation against the caller's grants on the log it names.
//
// # Tokens
//
// A tokens file lists the callers, one a line:
//
//	# name                        hash of the token        grants...
//	ci-writer                     sha256:4f3c0b…(64 hex)   append:payments append:billing
//	auditor                       sha256:a81e77…(64 hex)   read:*
//	ops                           sha256:0d92c4…(64 hex)   admin:*
//	spiffe://example.org/billing  -                        append:billing
//
// The hash is the hex SHA-256 of the token; the token itself is never
// stored. "-" instead of a hash names an identity that only a TLS client
// certificate can take (see below). A grant is <scope>:<log>, with <log> a log
// name or "*" for every log, and scope one of:
//
//   - read: the log's checkpoints, tiles, entries and proofs (GetCheckpoint,
//     GetInclusionProof, GetConsistencyProof, GetEntries, GetEntryAndProof,
//     GetReceipt, GetLog, GET /logs/{log}/...), and seeing the log in ListLogs;
//     needed only when reads are private (Config.PublicReads false);
//   - append: Append and POST /logs/{log}/add;
//   - admin: everything on the log, read and append included; admin:* alone
//     may create logs (CreateLog).
//
// Tokens are random (NewToken: "tlog_" and 32 random bytes in unpadded
// base64url); `tlogd token new NAME GRANT...` makes one and prints the line
// for the file. Presented tokens are hashed and compared with every stored
// hash in constant time. Lines are separated by newlines; blank lines and
// lines starting with '#' are ignored. The file is re-read by
// Authorizer.Reload (tlogd calls it on SIGHUP and when the file changes); a
// file that does not parse leaves the previous tokens in force.
//
// # Certificates
//
// When the server verifies TLS client certificates, a verified certificate's
// Subject Common Name and each of its URI SANs are looked up as names in the
// tokens file: the first that names a line gives the caller that line's
// grants. A certificate that maps to no name makes an anonymous caller. A
// bearer token, when one is sent, takes precedence over the certificate.
//
// # Decisions
//
// Without credentials a caller is anonymous: it may read when reads are
// public, and nothing else (ErrUnauthenticated). Credentials that are
// present but unknown or malformed are refused with ErrUnauthenticated
// whatever the operation, so a misconfigured client fails loudly rather than
// silently reading as anonymous. A known caller without the grant an
// operation needs is refused with ErrPermissionDenied. The server maps these
// to gRPC Unauthenticated and PermissionDenied, and to HTTP 401 (with
// WWW-Authenticate: Bearer) and 403.
//
// Errors and logs name callers by their name in the tokens file, never by
// their token.
package auth

import (
	"context"
	"errors"
	"fmt"
	"strings"
)

var (
	// ErrUnauthenticated: the operation needs credentials and the caller
	// sent none, or sent credentials that are unknown or malformed.
	ErrUnauthenticated = errors.New("unauthenticated")
	// ErrPermissionDenied: the caller is known but has no grant for the
	// operation on the log.
	ErrPermissionDenied = errors.New("permission denied")
)

// Scope is what a grant allows on a log.
type Scope string

// The scopes, from least to most.
const (
	Read   Scope = "read"
	Append Scope = "append"
	Admin  Scope = "admin"
)

// AllLogs is the log of a grant that covers every log.
const AllLogs = "*"

// Grant allows one scope on one log (or on every log, AllLogs).
type Grant struct {
	Scope Scope
	Log   string
}

// String returns the grant as the tokens file writes it: "<scope>:<log>".
func (g Grant) String() string { return string(g.Scope) + ":" + g.Log }

// ParseGrant parses "<scope>:<log>".
func ParseGrant(s string) (Grant, error) {
	scope, log, ok := strings.Cut(s, ":")
	if !ok || log == "" {
		return Grant{}, fmt.Errorf("grant %q is not <scope>:<log>", s)
	}
	switch Scope(scope) {
	case Read, Append, Admin:
	default:
		return Grant{}, fmt.Errorf("grant %q: scope %q is not read, append or admin", s, scope)
	}
	if strings.ContainsAny(log, " \t\r\n:") {
		return Grant{}, fmt.Errorf("grant %q: log %q is not a log name or *", s, log)
	}
	return Grant{Scope: Scope(scope), Log: log}, nil
}

// allows reports whether g allows scope on log. Admin implies the other
// scopes.
func (g Grant) allows(scope Scope, log string) bool {
	if g.Log != AllLogs && g.Log != log {
		return false
	}
	return g.Scope == scope || g.Scope == Admin
}

// Identity is an authenticated caller.
type Identity struct {
	// Name is the caller's name in the tokens file. Logs and errors use it,
	// never the token.
	Name string
	// Grants are what the caller may do.
	Grants []Grant
	// ByCertificate reports that the caller was authenticated by its TLS
	// client certificate rather than a bearer token.
	ByCertificate bool
}

// Can reports whether id may use scope on log. A nil Identity (an
// anonymous caller) can do nothing. For log AllLogs it reports whether id
// may use scope on every log.
func (id *Identity) Can(scope Scope, log string) bool {
	if id == nil {
		return false
	}
	for _, g := range id.Grants {
		if g.allows(scope, log) {
			return true
		}
	}
	return false
}

type identityKey struct{}

// NewContext returns ctx carrying the caller's identity (nil: anonymous).
func NewContext(ctx context.Context, id *Identity) context.Context {
	return context.WithValue(ctx, identityKey{}, id)
}

// FromContext returns the identity NewContext put in ctx, or nil for an
// anonymous caller or a context without one.
func FromContext(ctx context.Context) *Identity {
	id, _ := ctx.Value(identityKey{}).(*Identity)
	return id
}

type filterKey struct{}

// WithLogFilter returns ctx carrying a filter of the logs the caller may
// see: listings of logs keep only the names for which keep returns true.
func WithLogFilter(ctx context.Context, keep func(log string) bool) context.Context {
	return context.WithValue(ctx, filterKey{}, keep)
}

// LogFilter returns the filter WithLogFilter put in ctx, or nil if every log
// may be listed.
func LogFilter(ctx context.Context) func(log string) bool {
	keep, _ := ctx.Value(filterKey{}).(func(string) bool)
	return keep
}
