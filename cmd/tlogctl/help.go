package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"
)

var helpCmd = &command{
	name:     "help",
	synopsis: "[COMMAND]",
	summary:  "explain tlogctl or one of its commands",
	setup: func(fs *flag.FlagSet) runFunc {
		return func(ctx context.Context, c *cli, args []string) error {
			if len(args) == 0 {
				printUsage(c.stdout)
				return nil
			}
			name := strings.Join(args, " ")
			found := false
			for _, cmd := range commands {
				if cmd.name == name || strings.HasPrefix(cmd.name, name+" ") {
					printCommandUsage(c.stdout, cmd)
					found = true
				}
			}
			if !found {
				return &usageError{err: fmt.Errorf("unknown command %q", name)}
			}
			return nil
		}
	},
}

func printUsage(w io.Writer) {
	fmt.Fprint(w, `tlogctl is the command-line client of tlog, a tamper-evident audit log.
It verifies every checkpoint signature and proof the server answers.

Usage:

    tlogctl [global flags] COMMAND [flags] [arguments]

Commands:

`)
	for _, cmd := range commands {
		fmt.Fprintf(w, "    %-18s %s\n", cmd.name, cmd.summary)
	}
	fmt.Fprint(w, `
Global flags (also accepted after the command; each can be set by its
environment variable instead):

`)
	defaults := &cli{}
	defaults.setGlobals(nil) // the built-in defaults cannot fail to parse
	printFlags(w, defaults.flagSet(), true)
	fmt.Fprint(w, `
Without --vkey, commands that verify signatures fetch the log's key from the
server itself (AdminService.GetLog) and warn: that only protects against a log
that changes its story later, not against a server that lies from the start.

Output is text for people by default; --json prints one JSON object, or one
object per line for commands that print several things. Hashes of entries
(leaf hashes) are hexadecimal; root hashes, proofs and data are base64.

Exit codes:

    0  success
    1  usage error, unreadable input, or a network or server error (gRPC
       errors are printed with their code, e.g. "server answered NotFound: ...")
    3  verification failed: a signature, proof, leaf hash or receipt does not
       check out, so the log misbehaved or the data differs from what it holds

Run 'tlogctl help COMMAND' for the details of a command.
`)
}

func printCommandUsage(w io.Writer, cmd *command) {
	fmt.Fprintf(w, "Usage: tlogctl %s %s\n\n%s\n", cmd.name, cmd.synopsis, cmd.summary)
	if cmd.help != "" {
		fmt.Fprintf(w, "\n%s\n", cmd.help)
	}
	fs := flag.NewFlagSet(cmd.name, flag.ContinueOnError)
	cmd.setup(fs)
	if hasOwnFlags(fs) {
		fmt.Fprintf(w, "\nFlags:\n\n")
		printFlags(w, fs, false)
	}
	fmt.Fprintf(w, "\nGlobal flags (--addr, --log, --vkey, --json, --timeout): see 'tlogctl help'.\n\n")
}

func hasOwnFlags(fs *flag.FlagSet) bool {
	own := false
	fs.VisitAll(func(f *flag.Flag) { own = own || !isGlobal(f.Name) })
	return own
}

// printFlags prints the global flags of fs, or its other flags, in the
// manner of flag.PrintDefaults but with two dashes.
func printFlags(w io.Writer, fs *flag.FlagSet, global bool) {
	fs.VisitAll(func(f *flag.Flag) {
		if isGlobal(f.Name) != global {
			return
		}
		arg, usage := flag.UnquoteUsage(f)
		dashes := "--"
		if len(f.Name) == 1 {
			dashes = "-"
		}
		line := "  " + dashes + f.Name
		if arg != "" {
			line += " " + arg
		}
		fmt.Fprintf(w, "%s\n        %s", line, strings.ReplaceAll(usage, "\n", "\n        "))
		if f.DefValue != "" && f.DefValue != "0" && f.DefValue != "false" {
			fmt.Fprintf(w, " (default %q)", f.DefValue)
		}
		fmt.Fprintln(w)
	})
}
