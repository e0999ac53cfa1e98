package server

import (
	"context"
	"crypto/x509"
	"errors"
	"log/slog"
	"net/http"
	"net/url"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"

	tlogv1 "github.com/tlog-dev/tlog/proto/tlog/v1"
	"github.com/tlog-dev/tlog/server/auth"
)

// AccessControl authenticates and authorizes the calls of the gRPC and HTTP
// front ends (see package auth for the rules). What each call needs:
//
//	Append, POST /logs/{log}/add                       append on the log
//	CreateLog                                          admin on every log (admin:*)
//	other AdminService methods, except the two below   admin on the request's log (or every log)
//	GetLog, and every other LogService method          read on the request's log
//	GET /logs/{log}/... (checkpoint, tiles, bundles)   read on the log
//	ListLogs, GET /logs                                lists the logs the caller may read
//	other HTTP methods on /logs/{log}/...              admin on the log
//	gRPC health and reflection, GET /healthz, /readyz  nothing
//
// The log of a gRPC call is its request's log field (GetLog()), else its
// name field (GetName()); of an HTTP request, the path segment after /logs/.
// The caller's identity is put in the context (auth.FromContext), where the
// append rate limit finds it.
type AccessControl struct {
	// Authorizer decides; nil allows every call to everyone.
	Authorizer *auth.Authorizer
	// Logger receives refusals, at level Info for known callers and Debug
	// for anonymous or unknown ones (default slog.Default()). They name the
	// caller, never its token.
	Logger *slog.Logger
}

// rule is what a call needs.
type rule struct {
	public bool       // nothing: health checks
	list   bool       // a listing of logs, filtered to those the caller may read
	scope  auth.Scope // else: this scope on the call's log
	all    bool       // ... on every log
}

// grpcRule returns the rule of a gRPC method.
func grpcRule(method string) rule {
	switch method {
	case tlogv1.LogService_Append_FullMethodName:
		return rule{scope: auth.Append}
	case tlogv1.AdminService_CreateLog_FullMethodName:
		return rule{scope: auth.Admin, all: true}
	case tlogv1.AdminService_GetLog_FullMethodName:
		return rule{scope: auth.Read}
	case tlogv1.AdminService_ListLogs_FullMethodName:
		return rule{list: true}
	}
	switch {
	case strings.HasPrefix(method, "/grpc.health.v1.Health/"), strings.HasPrefix(method, "/grpc.reflection."):
		return rule{public: true}
	case strings.HasPrefix(method, "/tlog.v1.AdminService/"):
		return rule{scope: auth.Admin}
	}
	return rule{scope: auth.Read}
}

// requestLog returns the log a gRPC request names, or auth.AllLogs if it
// names none.
func requestLog(req any) string {
	switch r := req.(type) {
	case interface{ GetLog() string }:
		return r.GetLog()
	case interface{ GetName() string }:
		return r.GetName()
	}
	return auth.AllLogs
}

// ServerOptions returns the gRPC server options that install the
// interceptors of ac.
func (ac *AccessControl) ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(ac.UnaryInterceptor),
		grpc.ChainStreamInterceptor(ac.StreamInterceptor),
	}
}

// UnaryInterceptor checks a unary call before its handler runs.
func (ac *AccessControl) UnaryInterceptor(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	r := grpcRule(info.FullMethod)
	ctx, id, err := ac.authenticateGRPC(ctx, info.FullMethod, r)
	if err == nil {
		err = ac.authorize(ctx, info.FullMethod, r, id, req)
	}
	if err != nil {
		return nil, GRPCError(err)
	}
	return handler(ctx, req)
}

// StreamInterceptor checks a streaming call: the credentials before the
// handler runs, the grant on each message's log as it is received.
func (ac *AccessControl) StreamInterceptor(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	r := grpcRule(info.FullMethod)
	ctx, id, err := ac.authenticateGRPC(ss.Context(), info.FullMethod, r)
	if err != nil {
		return GRPCError(err)
	}
	return handler(srv, &checkedStream{ServerStream: ss, ctx: ctx, ac: ac, method: info.FullMethod, rule: r, id: id})
}

type checkedStream struct {
	grpc.ServerStream
	ctx    context.Context
	ac     *AccessControl
	method string
	rule   rule
	id     *auth.Identity
}

func (s *checkedStream) Context() context.Context { return s.ctx }

func (s *checkedStream) RecvMsg(m any) error {
	if err := s.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	return GRPCError(s.ac.authorize(s.ctx, s.method, s.rule, s.id, m))
}

// authenticateGRPC finds the caller of a gRPC call and returns the context
// with its identity (and, for listings, the filter of the logs it may see).
func (ac *AccessControl) authenticateGRPC(ctx context.Context, method string, r rule) (context.Context, *auth.Identity, error) {
	if r.public || !ac.Authorizer.Enabled() {
		return ctx, nil, nil
	}
	md, _ := metadata.FromIncomingContext(ctx)
	id, err := ac.Authorizer.Authenticate(md.Get("authorization"), grpcPeerCert(ctx))
	if err != nil {
		ac.refused(ctx, method, nil, "", err)
		return nil, nil, err
	}
	return ac.withIdentity(ctx, method, r, id)
}

// withIdentity returns ctx with the caller's identity, and with the log
// filter of a listing.
func (ac *AccessControl) withIdentity(ctx context.Context, method string, r rule, id *auth.Identity) (context.Context, *auth.Identity, error) {
	ctx = auth.NewContext(ctx, id)
	if r.list {
		keep, err := ac.Authorizer.ListFilter(id)
		if err != nil {
			ac.refused(ctx, method, id, "", err)
			return nil, nil, err
		}
		if keep != nil {
			ctx = auth.WithLogFilter(ctx, keep)
		}
	}
	return ctx, id, nil
}

// authorize checks that id has the grant rule r needs for req's log.
func (ac *AccessControl) authorize(ctx context.Context, method string, r rule, id *auth.Identity, req any) error {
	if r.public || r.list || !ac.Authorizer.Enabled() {
		return nil
	}
	log := auth.AllLogs
	if !r.all {
		log = requestLog(req)
	}
	return ac.decide(ctx, method, r, id, log)
}

func (ac *AccessControl) decide(ctx context.Context, method string, r rule, id *auth.Identity, log string) error {
	if err := ac.Authorizer.Authorize(id, r.scope, log); err != nil {
		ac.refused(ctx, method, id, log, err)
		return err
	}
	return nil
}

// refused logs a refusal, by the caller's name.
func (ac *AccessControl) refused(ctx context.Context, method string, id *auth.Identity, log string, err error) {
	logger := ac.Logger
	if logger == nil {
		logger = slog.Default()
	}
	level, caller := slog.LevelDebug, ""
	if id != nil {
		level, caller = slog.LevelInfo, id.Name
	}
	attrs := []any{"method", method, "err", err}
	if caller != "" {
		attrs = append(attrs, "caller", caller)
	}
	if log != "" {
		attrs = append(attrs, "log", log)
	}
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		attrs = append(attrs, "peer", p.Addr.String())
	}
	logger.Log(ctx, level, "refused", attrs...)
}

// grpcPeerCert returns the verified client certificate of a gRPC call's
// connection, or nil.
func grpcPeerCert(ctx context.Context) *x509.Certificate {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return nil
	}
	ti, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok {
		return nil
	}
	return auth.VerifiedCert(&ti.State)
}

// Handler returns h (such as HTTPHandler's) behind ac's checks. Refusals
// are answered 401 with "WWW-Authenticate: Bearer" or 403, with the reason
// on one line.
func (ac *AccessControl) Handler(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		method := r.Method + " " + r.URL.Path
		rl, log := httpRule(r)
		if rl.public || !ac.Authorizer.Enabled() {
			h.ServeHTTP(w, r)
			return
		}
		ctx := r.Context()
		id, err := ac.Authorizer.Authenticate(r.Header.Values("Authorization"), auth.VerifiedCert(r.TLS))
		if err != nil {
			ac.refused(ctx, method, nil, "", err)
		} else if ctx, id, err = ac.withIdentity(ctx, method, rl, id); err == nil && !rl.list {
			err = ac.decide(ctx, method, rl, id, log)
		}
		if err != nil {
			if errors.Is(err, auth.ErrUnauthenticated) {
				w.Header().Set("WWW-Authenticate", `Bearer realm="tlog"`)
			}
			httpError(w, err)
			return
		}
		h.ServeHTTP(w, r.WithContext(ctx))
	})
}

// httpRule returns the rule of an HTTP request and the log it names. It
// splits the escaped path as http.ServeMux does, so the log it checks is
// the log the handler serves.
func httpRule(r *http.Request) (rule, string) {
	read := r.Method == http.MethodGet || r.Method == http.MethodHead
	segs := strings.Split(strings.TrimPrefix(r.URL.EscapedPath(), "/"), "/")
	if segs[0] != "logs" {
		if read {
			return rule{public: true}, ""
		}
		return rule{scope: auth.Admin, all: true}, auth.AllLogs
	}
	if len(segs) == 1 || len(segs) == 2 && segs[1] == "" {
		if read {
			return rule{list: true}, ""
		}
		return rule{scope: auth.Admin, all: true}, auth.AllLogs
	}
	log, err := url.PathUnescape(segs[1])
	if err != nil {
		log = segs[1]
	}
	switch {
	case read:
		return rule{scope: auth.Read}, log
	case r.Method == http.MethodPost && len(segs) == 3 && segs[2] == "add":
		return rule{scope: auth.Append}, log
	}
	return rule{scope: auth.Admin}, log
}
