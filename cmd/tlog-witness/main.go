// Command tlog-witness runs a C2SP tlog-witness server
// (https://c2sp.org/tlog-witness): it cosigns the checkpoints of the logs it
// is configured for, after checking each against the last one it cosigned.
//
//	tlog-witness --name witness.example.com/w1 --key-file witness.key \
//	    --state witness.db --log example.com/log=example.com/log+1234abcd+AQ...
//	tlog-witness vkey --key-file witness.key
//
// The key file holds an Ed25519 note private key; it is created (mode 0600)
// if missing. The witness signs Ed25519 cosignature/v1 cosignatures
// (c2sp.org/tlog-cosignature); their verifier key, which logs and clients
// configure, is printed at start and by the vkey subcommand. --state is a
// file (bbolt) or a postgres:// URL.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/tlog-dev/tlog/server/witness"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "tlog-witness:", err)
		os.Exit(1)
	}
}

// logFlags collects repeated --log ORIGIN=VKEY flags.
type logFlags []witness.Log

func (l *logFlags) String() string { return "" }

func (l *logFlags) Set(s string) error {
	// Split at the first '=': a vkey's base64 may end in '='.
	origin, vkey, ok := strings.Cut(s, "=")
	if !ok || origin == "" || vkey == "" {
		return errors.New("want ORIGIN=VKEY")
	}
	*l = append(*l, witness.Log{Origin: origin, VerifierKeys: []string{vkey}})
	return nil
}

func run(args []string) error {
	if len(args) > 0 && args[0] == "vkey" {
		return runVKey(args[1:])
	}
	fs := flag.NewFlagSet("tlog-witness", flag.ExitOnError)
	var (
		listen   = fs.String("listen", "127.0.0.1:7380", "HTTP listen address")
		name     = fs.String("name", "", "witness key name, a schema-less URL such as witness.example.com/w1 (needed only to create the key file)")
		keyFile  = fs.String("key-file", "", "Ed25519 note private key of the witness; created if missing (required)")
		state    = fs.String("state", "", "state store: a file path (bbolt) or a postgres:// URL (required)")
		logsFile = fs.String("logs-file", "", "file of logs to witness, one per line: ORIGIN VKEY ('#' starts a comment)")
		prefix   = fs.String("prefix", "", "URL path prefix of the endpoints, such as /witness")
		logLevel = fs.String("log-level", "info", "log level: debug, info, warn, error")
		logs     logFlags
	)
	fs.Var(&logs, "log", "a log to witness, as ORIGIN=VKEY (VKEY: the log's Ed25519 note verifier key; split at the first '=', use --logs-file for origins holding '='); repeatable")
	fs.Parse(args)
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	if *keyFile == "" || *state == "" {
		return errors.New("--key-file and --state are required")
	}
	if *logsFile != "" {
		b, err := os.ReadFile(*logsFile)
		if err != nil {
			return err
		}
		fileLogs, err := witness.ParseLogList(string(b))
		if err != nil {
			return fmt.Errorf("%s: %w", *logsFile, err)
		}
		logs = append(logs, fileLogs...)
	}
	if len(logs) == 0 {
		logger.Warn("no logs configured (--log, --logs-file): every add-checkpoint request will get 404")
	}
	for _, l := range logs {
		for _, k := range l.VerifierKeys {
			v, err := note.NewVerifier(k)
			if err != nil {
				return fmt.Errorf("log %q: verifier key %q: %w", l.Origin, k, err)
			}
			if v.Name() != l.Origin {
				// c2sp.org/tlog-checkpoint: the key name SHOULD match the origin.
				logger.Warn("log key name differs from its origin", "origin", l.Origin, "key_name", v.Name())
			}
		}
	}

	cosigner, created, err := witness.OpenKeyFile(*keyFile, *name)
	if err != nil {
		return err
	}
	if created {
		logger.Info("created witness key", "file", *keyFile, "name", cosigner.Name())
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	st, err := witness.OpenState(ctx, *state, logger)
	if err != nil {
		return err
	}
	defer st.Close()

	w, err := witness.New(witness.Config{
		Cosigner: cosigner,
		Logs:     logs,
		State:    st,
		Prefix:   *prefix,
		Logger:   logger,
	})
	if err != nil {
		return err
	}
	lis, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	srv := &http.Server{
		Handler:           w,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
	}
	fmt.Printf("tlog-witness %s\n  verifier key: %s\n", cosigner.Name(), cosigner.VerifierKey())
	for _, l := range logs {
		logger.Info("witnessing log", "origin", l.Origin, "verifier_keys", l.VerifierKeys)
	}
	logger.Info("tlog-witness serving", "addr", "http://"+lis.Addr().String()+*prefix,
		"name", cosigner.Name(), "verifier_key", cosigner.VerifierKey(), "logs", len(logs))

	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(lis) }()
	var serveErr error
	select {
	case <-ctx.Done():
		logger.Info("shutting down")
	case serveErr = <-errc:
		logger.Error("server failed", "err", serveErr)
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		logger.Warn("HTTP shutdown", "err", err)
	}
	logger.Info("stopped")
	return serveErr
}

// runVKey prints the cosignature verifier key of an existing key file.
func runVKey(args []string) error {
	fs := flag.NewFlagSet("tlog-witness vkey", flag.ExitOnError)
	keyFile := fs.String("key-file", "", "Ed25519 note private key of the witness (required)")
	fs.Parse(args)
	if *keyFile == "" || fs.NArg() > 0 {
		return errors.New("usage: tlog-witness vkey --key-file FILE")
	}
	b, err := os.ReadFile(*keyFile)
	if err != nil {
		return err
	}
	c, err := witness.NewCosigner(strings.TrimSpace(string(b)))
	if err != nil {
		return fmt.Errorf("%s: %w", *keyFile, err)
	}
	fmt.Println(c.VerifierKey())
	return nil
}
