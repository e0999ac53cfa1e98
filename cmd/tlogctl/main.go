// Command tlogctl is the command-line client of tlog: it appends entries,
// reads them back, fetches checkpoints, proofs and receipts, and verifies
// everything the server answers against the log's public key.
//
// Run `tlogctl help` for the commands, their flags and the exit codes.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
)

// Exit codes.
const (
	exitOK = 0
	// exitError: a usage, input/output, network or server error.
	exitError = 1
	// exitVerify: a verification failed; the log misbehaved, or the data
	// or receipt differs from what the log holds.
	exitVerify = 3
)

// runFunc runs a command with its flags parsed and its positional arguments.
type runFunc func(ctx context.Context, c *cli, args []string) error

// command is one subcommand.
type command struct {
	name     string // one or two words: "append", "prove inclusion"
	synopsis string // what follows the name in a usage line
	summary  string // one line for the command list
	help     string // the description after the usage line
	// setup defines the command's own flags on fs and returns the function
	// that runs the command once fs is parsed.
	setup func(fs *flag.FlagSet) runFunc
}

// commands are the subcommands, in the order `tlogctl help` lists them.
var commands []*command

func init() {
	commands = []*command{
		appendCmd, checkpointCmd, getCmd, proveInclusionCmd, proveConsistencyCmd,
		receiptCmd, verifyReceiptCmd, auditCmd, logsCmd, createLogCmd, helpCmd,
	}
}

func main() {
	os.Exit(run(context.Background(), os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// run runs tlogctl with the command-line arguments args and returns the
// exit code.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	c := &cli{stdin: stdin, stdout: stdout, stderr: stderr}
	defer c.close()
	err := c.main(ctx, args)
	var verr *verifyError
	var uerr *usageError
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return exitOK
	case errors.As(err, &verr):
		fmt.Fprintf(stderr, "tlogctl: VERIFICATION FAILED: %v\n", verr.err)
		return exitVerify
	case errors.As(err, &uerr):
		fmt.Fprintf(stderr, "tlogctl: %v\n", uerr.err)
		if uerr.cmd != "" {
			fmt.Fprintf(stderr, "Run 'tlogctl help %s' for usage.\n", uerr.cmd)
		} else {
			fmt.Fprintln(stderr, "Run 'tlogctl help' for usage.")
		}
		return exitError
	default:
		fmt.Fprintf(stderr, "tlogctl: %v\n", err)
		return exitError
	}
}

func (c *cli) main(ctx context.Context, args []string) error {
	if err := c.setGlobals(os.LookupEnv); err != nil {
		return &usageError{err: err}
	}
	fs := c.flagSet()
	rest, err := parseFlags(fs, nil, args, c.stdout)
	if err != nil {
		return err
	}
	if len(rest) == 0 {
		printUsage(c.stderr)
		return &usageError{err: errors.New("no command given")}
	}
	cmd, rest, err := findCommand(rest)
	if err != nil {
		return err
	}
	fs = c.flagSet()
	runCmd := cmd.setup(fs)
	if rest, err = parseFlags(fs, cmd, rest, c.stdout); err != nil {
		return err
	}
	err = runCmd(ctx, c, rest)
	if uerr, ok := err.(*usageError); ok && uerr.cmd == "" && cmd != helpCmd {
		uerr.cmd = cmd.name
	}
	return err
}

// findCommand finds the command named by the first one or two words of
// args and returns it with the arguments after its name.
func findCommand(args []string) (*command, []string, error) {
	for _, cmd := range commands {
		words := strings.Fields(cmd.name)
		if len(args) >= len(words) && strings.Join(args[:len(words)], " ") == cmd.name {
			return cmd, args[len(words):], nil
		}
	}
	if args[0] == "prove" {
		return nil, nil, &usageError{cmd: "prove", err: errors.New(`"prove" needs "inclusion" or "consistency"`)}
	}
	return nil, nil, &usageError{err: fmt.Errorf("unknown command %q", args[0])}
}
