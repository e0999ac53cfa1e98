package main

import (
	"context"
	"encoding/base64"
	"flag"
	"fmt"

	tlogv1 "github.com/tlog-dev/tlog/proto/tlog/v1"
)

var checkpointCmd = &command{
	name:     "checkpoint",
	synopsis: "[--size N]",
	summary:  "fetch and verify a signed checkpoint",
	help: `Fetches the latest signed checkpoint of the log, or the one it signed at tree
size N, verifies its signature and prints the signed note as it is. With --json
it prints {"origin","size","root_hash","note"}, root_hash in base64 as in the
note.`,
	setup: func(fs *flag.FlagSet) runFunc {
		size := fs.Uint64("size", 0, "the checkpoint of tree size `N` (default: the latest)")
		return func(ctx context.Context, c *cli, args []string) error {
			if len(args) > 0 {
				return usagef("unexpected arguments %q", args)
			}
			return c.checkpoint(ctx, *size)
		}
	},
}

// checkpointJSON is the JSON output of a checkpoint.
type checkpointJSON struct {
	Origin   string `json:"origin"`
	Size     uint64 `json:"size"`
	RootHash string `json:"root_hash"`
	Note     string `json:"note"`
}

func (c *cli) checkpoint(ctx context.Context, size uint64) error {
	v, err := c.verifier(ctx)
	if err != nil {
		return err
	}
	lc, err := c.logClient()
	if err != nil {
		return err
	}
	resp, err := lc.GetCheckpoint(ctx, &tlogv1.GetCheckpointRequest{Log: c.log, TreeSize: size})
	if err != nil {
		return rpcError("GetCheckpoint", err)
	}
	cp, err := openCheckpoint(resp.GetCheckpoint(), v)
	if err != nil {
		return err
	}
	switch {
	case size != 0 && cp.Size != size:
		return failf("asked for the checkpoint of size %d, the server answered one of size %d", size, cp.Size)
	case resp.GetTreeSize() != cp.Size || string(resp.GetRootHash()) != string(cp.Hash[:]):
		return failf("the server's tree_size and root_hash fields (%d, %x) differ from its signed checkpoint (%d, %x)",
			resp.GetTreeSize(), resp.GetRootHash(), cp.Size, cp.Hash)
	}
	if c.json {
		return c.emit(checkpointJSON{Origin: cp.Origin, Size: cp.Size, RootHash: base64.StdEncoding.EncodeToString(cp.Hash[:]), Note: string(resp.GetCheckpoint())})
	}
	_, err = fmt.Fprintf(c.stdout, "%s", resp.GetCheckpoint())
	return err
}
