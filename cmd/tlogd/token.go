package main

// tlogd token: make bearer tokens for the tokens file.

import (
	"fmt"
	"io"

	"github.com/tlog-dev/tlog/server/auth"
)

const tokenUsage = `Usage: tlogd token new NAME GRANT...

Makes a new random bearer token for the caller NAME. It prints the token on
standard output, once: give it to the caller (tlogctl --token, TLOG_TOKEN, or
client.BearerToken in Go). It prints on standard error the line to add to the
tokens file (--tokens-file), which holds only the token's SHA-256; send tlogd
a SIGHUP (or wait a few seconds) for it to take effect.

A GRANT is SCOPE:LOG, with SCOPE read, append or admin and LOG a log name or
* for every log. admin implies read and append; admin:* may also create logs.

Example:

    tlogd token new ci-writer append:payments >ci-writer.token 2>>tokens.txt
`

// tokenMain runs `tlogd token ARGS...` and returns the exit code.
func tokenMain(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] != "new" {
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "help") {
			fmt.Fprint(stdout, tokenUsage)
			return 0
		}
		fmt.Fprint(stderr, tokenUsage)
		return 2
	}
	args = args[1:]
	if len(args) < 2 {
		fmt.Fprintf(stderr, "tlogd token new: want a NAME and at least one GRANT\n\n%s", tokenUsage)
		return 2
	}
	name := args[0]
	if err := auth.CheckName(name); err != nil {
		fmt.Fprintf(stderr, "tlogd token new: %v\n", err)
		return 2
	}
	var grants []auth.Grant
	for _, s := range args[1:] {
		g, err := auth.ParseGrant(s)
		if err != nil {
			fmt.Fprintf(stderr, "tlogd token new: %v\n", err)
			return 2
		}
		grants = append(grants, g)
	}
	token := auth.NewToken()
	fmt.Fprintln(stdout, token)
	fmt.Fprintln(stderr, auth.TokenLine(name, token, grants))
	return 0
}
