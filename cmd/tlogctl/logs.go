package main

import (
	"context"
	"flag"
	"fmt"
	"text/tabwriter"
	"time"

	tlogv1 "github.com/tlog-dev/tlog/proto/tlog/v1"
)

var logsCmd = &command{
	name:     "logs",
	synopsis: "",
	summary:  "list the server's logs",
	help: `Lists the logs the server hosts: name, tree size, origin and verifier key.
With --json each line is {"name","origin","verifier_key","size","create_time"}.
The sizes are as the server reports them, not verified.`,
	setup: func(fs *flag.FlagSet) runFunc {
		return func(ctx context.Context, c *cli, args []string) error {
			if len(args) > 0 {
				return usagef("unexpected arguments %q", args)
			}
			return c.logs(ctx)
		}
	},
}

// logJSON is the JSON output of a log.
type logJSON struct {
	Name        string    `json:"name"`
	Origin      string    `json:"origin"`
	VerifierKey string    `json:"verifier_key"`
	Size        uint64    `json:"size"`
	CreateTime  time.Time `json:"create_time"`
}

func toLogJSON(l *tlogv1.Log) logJSON {
	return logJSON{Name: l.GetName(), Origin: l.GetOrigin(), VerifierKey: l.GetVerifierKey(), Size: l.GetSize(), CreateTime: l.GetCreateTime().AsTime()}
}

func (c *cli) logs(ctx context.Context) error {
	admin, err := c.adminClient()
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(c.stdout, 0, 8, 2, ' ', 0)
	if !c.json {
		fmt.Fprintln(tw, "NAME\tSIZE\tORIGIN\tVERIFIER KEY")
	}
	token := ""
	for {
		resp, err := admin.ListLogs(ctx, &tlogv1.ListLogsRequest{PageToken: token})
		if err != nil {
			return rpcError("ListLogs", err)
		}
		for _, l := range resp.GetLogs() {
			if c.json {
				if err := c.emit(toLogJSON(l)); err != nil {
					return err
				}
				continue
			}
			fmt.Fprintf(tw, "%s\t%d\t%s\t%s\n", l.GetName(), l.GetSize(), l.GetOrigin(), l.GetVerifierKey())
		}
		if resp.GetNextPageToken() == "" || resp.GetNextPageToken() == token {
			break
		}
		token = resp.GetNextPageToken()
	}
	return tw.Flush()
}

var createLogCmd = &command{
	name:     "create-log",
	synopsis: "NAME [--origin O]",
	summary:  "create a log",
	help: `Creates an empty log named NAME, with its own signing key, and prints its
origin and verifier key. Keep the verifier key: pass it with --vkey to check
what the server answers about the log.`,
	setup: func(fs *flag.FlagSet) runFunc {
		origin := fs.String("origin", "", "origin line of the log's checkpoints, such as \"tlog.example.com/audit\" (default: chosen by the server)")
		return func(ctx context.Context, c *cli, args []string) error {
			if len(args) != 1 {
				return usagef("want one NAME, got %d arguments", len(args))
			}
			return c.createLog(ctx, args[0], *origin)
		}
	},
}

func (c *cli) createLog(ctx context.Context, name, origin string) error {
	admin, err := c.adminClient()
	if err != nil {
		return err
	}
	resp, err := admin.CreateLog(ctx, &tlogv1.CreateLogRequest{Name: name, Origin: origin})
	if err != nil {
		return rpcError("CreateLog", err)
	}
	l := resp.GetLog()
	if c.json {
		return c.emit(toLogJSON(l))
	}
	_, err = fmt.Fprintf(c.stdout, "created log %q\n  origin:       %s\n  verifier key: %s\n", l.GetName(), l.GetOrigin(), l.GetVerifierKey())
	return err
}
