package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/mod/sumdb/note"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"

	"github.com/tlog-dev/tlog/pkg/checkpoint"
	tlogv1 "github.com/tlog-dev/tlog/proto/tlog/v1"
)

// maxRecvMsgSize bounds one message from the server. A GetEntries message
// holds up to a server-chosen number of entries of up to 64 KiB each, more
// than gRPC's default of 4 MiB.
const maxRecvMsgSize = 128 << 20

// cli is one run of tlogctl: its global flags, its standard streams and its
// connection to the server.
type cli struct {
	stdin          io.Reader
	stdout, stderr io.Writer

	// Global flags.
	addr    string
	log     string
	vkey    string
	json    bool
	timeout time.Duration
	tlsOpts transportFlags // --token, --tls, --tls-ca, --tls-cert, --tls-key, --insecure (creds.go)

	conn *grpc.ClientConn
}

// globals are the global flags, their environment variables and usage.
var globals = []struct{ name, env, def, usage string }{
	{"addr", "TLOG_ADDR", "127.0.0.1:7600", "gRPC address of the tlogd server"},
	{"log", "TLOG_LOG", "default", "name of the log"},
	{"vkey", "TLOG_VKEY", "", "the log's verifier key (`KEY`: \"<origin>+<key id>+<base64 key>\", or @FILE to read it from FILE);\nwithout it the key the server reports is trusted on first use"},
	{"json", "TLOG_JSON", "false", "print JSON (one object, or one object per line for lists) instead of text"},
	{"timeout", "TLOG_TIMEOUT", "30s", "deadline of each request to the server (0: none)"},
	{"token", "TLOG_TOKEN", "", "bearer `TOKEN` sent with every request (see 'tlogd token new'), or @FILE to read it from FILE;\nonly over TLS, or to a loopback address (prefer TLOG_TOKEN or @FILE: arguments are visible to other users)"},
	{"tls", "TLOG_TLS", "false", "connect over TLS, verifying the server with the system's CAs"},
	{"tls-ca", "TLOG_TLS_CA", "", "connect over TLS, verifying the server with the PEM CA certificates in `FILE`"},
	{"tls-cert", "TLOG_TLS_CERT", "", "PEM client certificate `FILE` for servers that require one (with --tls-key)"},
	{"tls-key", "TLOG_TLS_KEY", "", "PEM private key `FILE` of --tls-cert"},
	{"insecure", "TLOG_INSECURE", "false", "connect over TLS without verifying the server's certificate (for tests only)"},
}

// setGlobals sets the global flags to their defaults, taken from the
// environment variables where lookup (os.LookupEnv, or nil for none) finds
// them set and not empty.
func (c *cli) setGlobals(lookup func(string) (string, bool)) error {
	fs := flag.NewFlagSet("", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	c.defineGlobals(fs)
	for _, g := range globals {
		v, ok := "", false
		if lookup != nil {
			v, ok = lookup(g.env)
		}
		if !ok || v == "" {
			v = g.def
		}
		if err := fs.Set(g.name, v); err != nil {
			return fmt.Errorf("%s=%q: %w", g.env, v, err)
		}
	}
	return nil
}

// defineGlobals defines the global flags on fs, with their current values as
// defaults, so that they can be given before or after the command name.
func (c *cli) defineGlobals(fs *flag.FlagSet) {
	for _, g := range globals {
		usage := fmt.Sprintf("%s (env %s)", g.usage, g.env)
		switch g.name {
		case "addr":
			fs.StringVar(&c.addr, g.name, c.addr, usage)
		case "log":
			fs.StringVar(&c.log, g.name, c.log, usage)
		case "vkey":
			fs.StringVar(&c.vkey, g.name, c.vkey, usage)
		case "json":
			fs.BoolVar(&c.json, g.name, c.json, usage)
		case "timeout":
			fs.DurationVar(&c.timeout, g.name, c.timeout, usage)
		default:
			c.tlsOpts.define(fs, g.name, usage)
		}
	}
}

func isGlobal(name string) bool {
	for _, g := range globals {
		if g.name == name {
			return true
		}
	}
	return false
}

// flagSet returns a new flag set with the global flags defined. The caller
// defines a command's own flags on it; parseFlags parses it.
func (c *cli) flagSet() *flag.FlagSet {
	fs := flag.NewFlagSet("tlogctl", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	c.defineGlobals(fs)
	return fs
}

// parseFlags parses args with fs, allowing flags after positional
// arguments (until "--"), and returns the positional arguments. For the
// global flags (cmd nil) it stops at the first positional argument, the
// command name. -h and --help print the usage of cmd and return
// flag.ErrHelp.
func parseFlags(fs *flag.FlagSet, cmd *command, args []string, stdout io.Writer) ([]string, error) {
	var pos []string
	for {
		err := fs.Parse(args)
		switch {
		case errors.Is(err, flag.ErrHelp):
			if cmd == nil {
				printUsage(stdout)
			} else {
				printCommandUsage(stdout, cmd)
			}
			return nil, flag.ErrHelp
		case err != nil:
			name := ""
			if cmd != nil {
				name = cmd.name
			}
			return nil, &usageError{cmd: name, err: err}
		}
		rest := fs.Args()
		if cmd == nil || len(rest) == 0 {
			return append(pos, rest...), nil
		}
		if consumed := len(args) - len(rest); consumed > 0 && args[consumed-1] == "--" {
			return append(pos, rest...), nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// usageError is a mistake on the command line.
type usageError struct {
	cmd string // the command whose usage to point to; empty: tlogctl's
	err error
}

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

// usagef returns a usageError; c.main fills in the command.
func usagef(format string, args ...any) error {
	return &usageError{err: fmt.Errorf(format, args...)}
}

// verifyError is a failed verification: the log answered something that
// its signatures or proofs do not back, or the data or receipt at hand is
// not what the log holds.
type verifyError struct{ err error }

func (e *verifyError) Error() string { return e.err.Error() }
func (e *verifyError) Unwrap() error { return e.err }

func failf(format string, args ...any) error {
	return &verifyError{err: fmt.Errorf(format, args...)}
}

// rpcError describes a failed call of method, with its gRPC code.
func rpcError(method string, err error) error {
	if s, ok := status.FromError(err); ok {
		return fmt.Errorf("%s: server answered %s: %s", method, s.Code(), s.Message())
	}
	return fmt.Errorf("%s: %w", method, err)
}

// dial connects to the server (lazily: the first call opens the
// connection).
func (c *cli) dial() (*grpc.ClientConn, error) {
	if c.conn != nil {
		return c.conn, nil
	}
	transport, err := c.tlsOpts.dialOptions(c.addr)
	if err != nil {
		return nil, err
	}
	conn, err := grpc.NewClient(c.addr, append(transport,
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxRecvMsgSize)),
		grpc.WithUnaryInterceptor(c.deadline))...)
	if err != nil {
		return nil, fmt.Errorf("--addr %q: %w", c.addr, err)
	}
	c.conn = conn
	return conn, nil
}

// deadline gives each unary call the --timeout deadline.
func (c *cli) deadline(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	if c.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.timeout)
		defer cancel()
	}
	return invoker(ctx, method, req, reply, cc, opts...)
}

// streamContext returns the context for a streaming call, with the
// --timeout deadline for the whole stream.
func (c *cli) streamContext(ctx context.Context) (context.Context, context.CancelFunc) {
	if c.timeout > 0 {
		return context.WithTimeout(ctx, c.timeout)
	}
	return context.WithCancel(ctx)
}

func (c *cli) close() {
	if c.conn != nil {
		c.conn.Close()
	}
}

func (c *cli) logClient() (tlogv1.LogServiceClient, error) {
	conn, err := c.dial()
	if err != nil {
		return nil, err
	}
	return tlogv1.NewLogServiceClient(conn), nil
}

func (c *cli) adminClient() (tlogv1.AdminServiceClient, error) {
	conn, err := c.dial()
	if err != nil {
		return nil, err
	}
	return tlogv1.NewAdminServiceClient(conn), nil
}

// givenVerifier returns the verifier of --vkey, or nil if it is not given.
func (c *cli) givenVerifier() (note.Verifier, error) {
	if c.vkey == "" {
		return nil, nil
	}
	vkey := c.vkey
	if name, ok := strings.CutPrefix(vkey, "@"); ok {
		b, err := os.ReadFile(name)
		if err != nil {
			return nil, &usageError{err: fmt.Errorf("--vkey: %w", err)}
		}
		vkey = strings.TrimSpace(string(b))
	}
	v, err := checkpoint.NewVerifier(vkey)
	if err != nil {
		return nil, &usageError{err: fmt.Errorf("--vkey: %w", err)}
	}
	return v, nil
}

// verifier returns the log's verifier: that of --vkey or, without it, the
// one of the key the server reports for the log, trusted on first use with
// a warning.
func (c *cli) verifier(ctx context.Context) (note.Verifier, error) {
	if v, err := c.givenVerifier(); v != nil || err != nil {
		return v, err
	}
	admin, err := c.adminClient()
	if err != nil {
		return nil, err
	}
	resp, err := admin.GetLog(ctx, &tlogv1.GetLogRequest{Name: c.log})
	if err != nil {
		return nil, rpcError("GetLog", err)
	}
	vkey := resp.GetLog().GetVerifierKey()
	v, err := checkpoint.NewVerifier(vkey)
	if err != nil {
		return nil, fmt.Errorf("the server's verifier key for log %q: %w", c.log, err)
	}
	fmt.Fprintf(c.stderr, "tlogctl: warning: no --vkey given; trusting the key the server reports for log %q (trust on first use):\n"+
		"    %s\n"+
		"  A lying server would go unnoticed this way. Check this key out of band and pass it with --vkey (or TLOG_VKEY).\n", c.log, vkey)
	return v, nil
}

// openCheckpoint verifies a signed checkpoint note from the server with v.
func openCheckpoint(signed []byte, v note.Verifier) (checkpoint.Checkpoint, error) {
	cp, _, err := checkpoint.Open(signed, v)
	if err != nil {
		return checkpoint.Checkpoint{}, failf("checkpoint from the server: %w", err)
	}
	return cp, nil
}

// emit writes v as one line of JSON.
func (c *cli) emit(v any) error {
	enc := json.NewEncoder(c.stdout)
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}

// parseUint parses a decimal index or size argument.
func parseUint(what, s string) (uint64, error) {
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%s %q is not a non-negative decimal number", what, s)
	}
	return n, nil
}
