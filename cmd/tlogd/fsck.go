package main

// tlogd fsck: check every stored log against what its key signed.

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/mod/sumdb/note"

	logaudit "github.com/tlog-dev/tlog/pkg/audit"
	"github.com/tlog-dev/tlog/pkg/checkpoint"
	"github.com/tlog-dev/tlog/pkg/tile"
	"github.com/tlog-dev/tlog/pkg/tree"
	"github.com/tlog-dev/tlog/server/keyfile"
	"github.com/tlog-dev/tlog/storage"
	"github.com/tlog-dev/tlog/storage/embedded"
	"github.com/tlog-dev/tlog/storage/postgres"
)

// Exit codes of tlogd fsck, the same as tlogctl's.
const (
	fsckOK       = 0
	fsckError    = 1 // usage, or storage could not be read
	fsckTampered = 3 // the stored logs disagree with what their keys signed
)

const fsckUsage = `Usage: tlogd fsck [flags]

Checks the logs in storage: recomputes each log's Merkle tree from its stored
entries, compares it with every stored hash tile and with every stored
checkpoint (whose signatures it checks), and looks for data of a larger tree
than the stored tree head (what rolling the head back leaves behind). It reads
in a streaming fashion, with bounded memory.

The database is not trusted, so neither is the verifier key it stores: fsck
checks signatures with the key given by --vkey, else with the one derived
from the log's signing key file (--key-dir), and only as a last resort with
the stored one (and says so). A stored key that differs from the trusted one
is itself a finding. Storage must also hold the tree of the checkpoint tlogd
signed last, recorded beside the key (--key-dir/<log>.signed), and of each
--checkpoint: a store restored from an older backup is sound in itself, but
behind them.

The embedded store can be checked only while no tlogd has it open;
PostgreSQL can be checked while tlogd runs.

Exit status: 0 every log is intact, 1 usage error or storage could not be
read, 3 a log was tampered with (the report names the first problem).

Flags:
`

// stringList is a repeatable string flag.
type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, ",") }
func (l *stringList) Set(v string) error { *l = append(*l, v); return nil }

// fsckReport is what fsck found in one log; with --json it is printed as one
// line of JSON.
type fsckReport struct {
	Log    string `json:"log"`
	Origin string `json:"origin,omitempty"`
	// Status is "ok", "tampered" or "error" (storage could not be read).
	Status string `json:"status"`
	// KeySource says where the verifier key came from: "--vkey", "key file
	// <path>" or "database (untrusted)".
	KeySource   string `json:"key_source,omitempty"`
	VerifierKey string `json:"verifier_key,omitempty"`
	// Size, Entries, Checkpoints and Tiles say what was verified (before
	// the first problem, if any).
	Size        uint64 `json:"size"`
	Entries     uint64 `json:"entries"`
	Checkpoints int    `json:"checkpoints"`
	Tiles       int    `json:"tiles"`
	// Problems are the findings, the first one first. Empty when Status is
	// "ok".
	Problems []string `json:"problems,omitempty"`
	Warnings []string `json:"warnings,omitempty"`
}

func (r *fsckReport) tampered(format string, args ...any) {
	r.Status = "tampered"
	r.Problems = append(r.Problems, fmt.Sprintf(format, args...))
}

func (r *fsckReport) failed(err error) {
	if r.Status != "tampered" {
		r.Status = "error"
	}
	r.Problems = append(r.Problems, err.Error())
}

type fsckCmd struct {
	dataDir, keyDir, databaseURL string
	logs                         stringList
	vkeys                        map[string]string // log name -> verifier key
	known                        [][]byte          // --checkpoint files
	knownFiles                   []string
	json                         bool
	stdout, stderr               io.Writer
}

// fsckMain runs `tlogd fsck` with the arguments after "fsck" and returns the
// exit code.
func fsckMain(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	f := &fsckCmd{stdout: stdout, stderr: stderr, vkeys: map[string]string{}}
	fs := flag.NewFlagSet("tlogd fsck", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, fsckUsage)
		fs.PrintDefaults()
	}
	var vkeys, known stringList
	fs.StringVar(&f.dataDir, "data-dir", "tlog-data", "directory of the embedded store and, by default, the signing keys")
	fs.StringVar(&f.keyDir, "key-dir", "", "directory of the logs' signing keys (default <data-dir>/keys)")
	fs.StringVar(&f.databaseURL, "database-url", "", "PostgreSQL URL; empty checks the embedded store in --data-dir")
	fs.Var(&f.logs, "log", "check only the log `NAME` (repeatable; default: every log)")
	fs.Var(&vkeys, "vkey", "the verifier key of a log, `NAME=KEY` (repeatable); it takes precedence over the key file")
	fs.Var(&known, "checkpoint", "a signed checkpoint `FILE` of one of the logs, obtained elsewhere (a witness, or the state directory\nof tlogctl audit): storage must still hold its tree (repeatable)")
	fs.BoolVar(&f.json, "json", false, "print one JSON object per log instead of text")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return fsckOK
		}
		return fsckError
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "tlogd fsck: unexpected arguments %q\n", fs.Args())
		return fsckError
	}
	if err := storageFlagsFromEnv(fs); err != nil {
		fmt.Fprintln(stderr, "tlogd fsck:", err)
		return fsckError
	}
	for _, kv := range vkeys {
		name, key, ok := strings.Cut(kv, "=")
		if !ok || name == "" {
			fmt.Fprintf(stderr, "tlogd fsck: --vkey %q: want NAME=KEY\n", kv)
			return fsckError
		}
		if _, err := checkpoint.NewVerifier(key); err != nil {
			fmt.Fprintf(stderr, "tlogd fsck: --vkey %s: %v\n", name, err)
			return fsckError
		}
		f.vkeys[name] = key
	}
	for _, file := range known {
		b, err := os.ReadFile(file)
		if err != nil {
			fmt.Fprintln(stderr, "tlogd fsck: --checkpoint:", err)
			return fsckError
		}
		f.known = append(f.known, b)
		f.knownFiles = append(f.knownFiles, file)
	}
	if f.keyDir == "" {
		f.keyDir = filepath.Join(f.dataDir, "keys")
	}
	return f.run(ctx)
}

// storageFlagsFromEnv sets the storage flags not given on the command line
// from their TLOG_* variables, as tlogd does. The other flags of fsck have
// no variables: TLOG_LOG and TLOG_VKEY mean something else to tlogctl.
func storageFlagsFromEnv(fs *flag.FlagSet) error {
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	for _, name := range []string{"data-dir", "key-dir", "database-url"} {
		env := "TLOG_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
		if v, ok := os.LookupEnv(env); ok && !set[name] {
			if err := fs.Set(name, v); err != nil {
				return fmt.Errorf("%s=%q: %w", env, v, err)
			}
		}
	}
	return nil
}

// openForFsck opens the store without creating or changing anything: an
// embedded file must exist, and one that a running tlogd holds is refused at
// once; a PostgreSQL schema must be current (fsck does not migrate it, so a
// role that may only read can run it).
func (f *fsckCmd) open(ctx context.Context) (storage.Store, error) {
	logger := slog.New(slog.DiscardHandler)
	if f.databaseURL != "" {
		s, err := postgres.Open(ctx, f.databaseURL, postgres.Config{Logger: logger, MaxConns: 4, NoMigrate: true})
		if err != nil {
			return nil, fmt.Errorf("opening PostgreSQL: %w", err)
		}
		return s, nil
	}
	path := filepath.Join(f.dataDir, "tlog.db")
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("no embedded store to check: %w (use --data-dir, or --database-url for PostgreSQL)", err)
	}
	s, err := embedded.Open(path, embedded.Config{Logger: logger, LockTimeout: -1, ReadOnly: true})
	if errors.Is(err, storage.ErrLocked) {
		return nil, fmt.Errorf("%s is in use, most likely by a running tlogd: stop it first; fsck needs the file to itself (%w)", path, err)
	}
	return s, err
}

func (f *fsckCmd) run(ctx context.Context) int {
	store, err := f.open(ctx)
	if err != nil {
		fmt.Fprintln(f.stderr, "tlogd fsck:", err)
		return fsckError
	}
	defer store.Close()

	var logs []storage.Log
	if len(f.logs) == 0 {
		if logs, err = store.ListLogs(ctx); err != nil {
			fmt.Fprintln(f.stderr, "tlogd fsck: listing the logs:", err)
			return fsckError
		}
		if len(logs) == 0 {
			fmt.Fprintln(f.stderr, "tlogd fsck: the store has no logs")
		}
	} else {
		for _, name := range f.logs {
			l, err := store.GetLog(ctx, name)
			if err != nil {
				fmt.Fprintf(f.stderr, "tlogd fsck: log %q: %v\n", name, err)
				return fsckError
			}
			logs = append(logs, l)
		}
	}
	for name := range f.vkeys {
		if !containsLog(logs, name) {
			fmt.Fprintf(f.stderr, "tlogd fsck: --vkey for log %q, which is not checked\n", name)
			return fsckError
		}
	}

	code := fsckOK
	matched := make([]bool, len(f.known))
	counts := map[string]int{}
	for _, l := range logs {
		r := f.check(ctx, store, l, matched)
		counts[r.Status]++
		switch {
		case r.Status == "tampered":
			code = fsckTampered
		case r.Status == "error" && code == fsckOK:
			code = fsckError
		}
		f.print(r)
	}
	for i, ok := range matched {
		if !ok {
			fmt.Fprintf(f.stderr, "tlogd fsck: --checkpoint %s: not a checkpoint of any checked log (no signature by a checked log's key)\n", f.knownFiles[i])
			if code == fsckOK {
				code = fsckError
			}
		}
	}
	if !f.json {
		fmt.Fprintf(f.stdout, "fsck: logs checked: %d: %d ok, %d tampered, %d unreadable\n", len(logs), counts["ok"], counts["tampered"], counts["error"])
	}
	return code
}

func containsLog(logs []storage.Log, name string) bool {
	for _, l := range logs {
		if l.Name == name {
			return true
		}
	}
	return false
}

func (f *fsckCmd) print(r *fsckReport) {
	if f.json {
		enc := json.NewEncoder(f.stdout)
		enc.SetEscapeHTML(false)
		enc.Encode(r)
		return
	}
	w := f.stdout
	fmt.Fprintf(w, "log %q (origin %s)\n", r.Log, r.Origin)
	if r.KeySource != "" {
		fmt.Fprintf(w, "  key:      %s, from %s\n", r.VerifierKey, r.KeySource)
	}
	for _, warn := range r.Warnings {
		fmt.Fprintf(w, "  warning:  %s\n", warn)
	}
	verified := fmt.Sprintf("tree size %d, %d entries, %d checkpoints, %d tiles", r.Size, r.Entries, r.Checkpoints, r.Tiles)
	switch r.Status {
	case "ok":
		fmt.Fprintf(w, "  OK:       %s verified\n", verified)
	case "tampered":
		fmt.Fprintf(w, "  TAMPERED: %s\n", r.Problems[0])
	default:
		fmt.Fprintf(w, "  ERROR:    %s\n", r.Problems[0])
	}
	for _, p := range r.Problems[min(1, len(r.Problems)):] {
		fmt.Fprintf(w, "  also:     %s\n", p)
	}
	if r.Status != "ok" {
		fmt.Fprintf(w, "  verified before the first problem: %s\n", verified)
	}
}

// check checks one log. matched records which --checkpoint files belong to
// it.
func (f *fsckCmd) check(ctx context.Context, store storage.Store, l storage.Log, matched []bool) *fsckReport {
	r := &fsckReport{Log: l.Name, Origin: l.Origin, Status: "ok"}
	v, err := f.verifier(l, r)
	if err != nil {
		r.failed(err)
		return r
	}
	report, err := storage.VerifyLog(ctx, store, l.Name, v)
	r.Size, r.Entries, r.Checkpoints, r.Tiles = report.Size, report.Entries, report.Checkpoints, report.Tiles
	switch {
	case errors.Is(err, logaudit.ErrTampered):
		r.tampered("%s", strings.TrimPrefix(err.Error(), logaudit.ErrTampered.Error()+": "))
		return r
	case err != nil:
		r.failed(fmt.Errorf("reading the log: %w", err))
		return r
	}
	if err := checkBeyondHead(ctx, store, l.Name, r); err != nil {
		r.failed(err)
	}
	for i, signed := range f.known {
		c, _, err := checkpoint.Open(signed, v)
		if err != nil {
			continue // another log's
		}
		matched[i] = true
		if err := checkKnown(ctx, store, l.Name, c, f.knownFiles[i], r); err != nil {
			r.failed(err)
		}
	}
	// The checkpoint tlogd signed last, recorded beside the key: storage
	// restored from an older backup is consistent in itself, but behind it.
	path := keyfile.SignedPath(f.keyDir, l.Name)
	switch signed, err := keyfile.LoadSigned(f.keyDir, l.Name); {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		r.failed(fmt.Errorf("the log's last signed checkpoint: %w", err))
	default:
		c, _, err := checkpoint.Open(signed, v)
		if err != nil {
			r.tampered("%s, the checkpoint tlogd signed last, does not verify with the log's key: %v", path, err)
			break
		}
		if err := checkKnown(ctx, store, l.Name, c, path, r); err != nil {
			r.failed(err)
		}
	}
	return r
}

// verifier chooses the key that checks the log's signatures: --vkey, else
// the key file, else (untrusted) the stored key. Disagreeing keys are a
// finding.
func (f *fsckCmd) verifier(l storage.Log, r *fsckReport) (note.Verifier, error) {
	var fileKey string
	path := keyfile.Path(f.keyDir, l.Name)
	skey, err := keyfile.Load(f.keyDir, l.Name)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("signing key file: %w", err)
	default:
		if fileKey, err = checkpoint.VerifierKey(skey); err != nil {
			return nil, fmt.Errorf("signing key file %s: %w", path, err)
		}
	}
	flagKey := f.vkeys[l.Name]
	switch {
	case flagKey != "":
		r.KeySource, r.VerifierKey = "--vkey", flagKey
		if fileKey != "" && fileKey != flagKey {
			r.tampered("the signing key file %s is not the key of --vkey: its verifier key is %s", path, fileKey)
		}
	case fileKey != "":
		r.KeySource, r.VerifierKey = "key file "+path, fileKey
	default:
		r.KeySource, r.VerifierKey = "database (untrusted)", l.VerifierKey
		r.Warnings = append(r.Warnings, fmt.Sprintf("no --vkey for this log and no key file %s: checking with the verifier key stored in the database, which whoever can write to it could have replaced", path))
	}
	if r.VerifierKey != l.VerifierKey {
		r.tampered("the database holds verifier key %s for the log, not the trusted key (from %s)", l.VerifierKey, r.KeySource)
	}
	v, err := checkpoint.NewVerifier(r.VerifierKey)
	if err != nil {
		return nil, fmt.Errorf("verifier key from %s: %w", r.KeySource, err)
	}
	if v.Name() != l.Origin {
		r.tampered("the database holds origin %q for the log, but its key is named %q", l.Origin, v.Name())
	}
	return v, nil
}

// checkBeyondHead looks for stored data of a tree larger than the latest
// checkpoint, which storage.VerifyLog does not see: rolling the tree head
// back (and deleting the newer entries and checkpoints) leaves the tiles
// that grew past it, since tiles only ever grow. If the head moves meanwhile
// (a tlogd appends), it tries again.
func checkBeyondHead(ctx context.Context, r storage.Reader, log string, rep *fsckReport) error {
	for range 5 {
		head, err := r.LatestCheckpoint(ctx, log)
		if err != nil {
			return err
		}
		found, err := beyondHead(ctx, r, log, head.Size)
		if err != nil {
			return err
		}
		now, err := r.LatestCheckpoint(ctx, log)
		if err != nil {
			return err
		}
		if now.TreeHead != head.TreeHead {
			continue // the log grew while we looked
		}
		if found != "" {
			rep.tampered("%s: storage holds part of a larger tree than its latest checkpoint (size %d); the tree head was moved back (a rollback), or written without its tiles", found, head.Size)
		}
		return nil
	}
	rep.Warnings = append(rep.Warnings, "the log kept growing: the check for data beyond the tree head was skipped")
	return nil
}

// beyondHead returns the first stored tile or entry that a tree of the
// given size does not have, or "".
func beyondHead(ctx context.Context, r storage.Reader, log string, size uint64) (string, error) {
	for l := 0; l <= tile.MaxLevel; l++ {
		n := size >> (tile.Height * uint(l)) // hashes at this level
		// The next hash at this level would be in this tile.
		t := tile.Tile{Level: l, Index: n / tile.Width, Width: int(n%tile.Width) + 1}
		_, err := r.ReadTiles(ctx, log, []tile.Tile{t})
		switch {
		case errors.Is(err, storage.ErrNotFound):
		case err != nil:
			return "", err
		case t.Width == 1:
			return fmt.Sprintf("%s exists", tile.Tile{Level: l, Index: t.Index, Width: tile.Width}.Path()), nil
		default:
			return fmt.Sprintf("%s holds at least %d hashes, not %d", tile.Tile{Level: l, Index: t.Index, Width: tile.Width}.Path(), t.Width, t.Width-1), nil
		}
		if n == 0 {
			break
		}
	}
	_, err := r.ReadEntries(ctx, log, size, size+1)
	switch {
	case errors.Is(err, storage.ErrNotFound):
		return "", nil
	case err != nil:
		return "", err
	}
	return fmt.Sprintf("entry %d exists", size), nil
}

// checkKnown checks that storage holds the tree of a checkpoint the log
// signed, obtained from elsewhere.
func checkKnown(ctx context.Context, r storage.Reader, log string, c checkpoint.Checkpoint, file string, rep *fsckReport) error {
	head, err := r.LatestCheckpoint(ctx, log)
	if err != nil {
		return err
	}
	if c.Size > head.Size {
		rep.tampered("the log signed a checkpoint at size %d (%s), but storage's latest checkpoint is at size %d: the log was rolled back", c.Size, file, head.Size)
		return nil
	}
	// The tiles up to the latest size were verified.
	root, err := tree.RootHash(tree.TileReaderFunc(func(ts []tile.Tile) ([][]byte, error) {
		return r.ReadTiles(ctx, log, ts)
	}), c.Size)
	if err != nil {
		return fmt.Errorf("recomputing the root at size %d: %w", c.Size, err)
	}
	if root != c.Hash {
		rep.tampered("the log signed root %s at size %d (%s), but the stored tree has root %s there: storage holds a fork", b64(c.Hash[:]), c.Size, file, b64(root[:]))
	}
	return nil
}

func b64(h []byte) string { return base64.StdEncoding.EncodeToString(h) }
