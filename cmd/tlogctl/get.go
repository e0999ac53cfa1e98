package main

import (
	"context"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/tlog-dev/tlog/pkg/tree"
	tlogv1 "github.com/tlog-dev/tlog/proto/tlog/v1"
)

var getCmd = &command{
	name:     "get",
	synopsis: "INDEX [END]",
	summary:  "print entries, checking each against its leaf hash",
	help: `Prints the entry at INDEX or, with END, the entries INDEX, INDEX+1, ..., END-1
(END is exclusive, as in the API: "get 0 3" prints entries 0, 1 and 2; an END
beyond the log's size means up to its end).

Each entry's data is checked against the leaf hash the server sends with it.
That does not prove that the entry is in the log; "prove inclusion --index N"
does.

Each entry is printed as "INDEX <TAB> DATA": the data as is if it is printable
UTF-8 on one line, else as "(base64) " and its base64. With --json, each line
is {"index","data","leaf_hash"}, data always in base64 and leaf_hash in hex.`,
	setup: func(fs *flag.FlagSet) runFunc {
		return func(ctx context.Context, c *cli, args []string) error {
			if len(args) < 1 || len(args) > 2 {
				return usagef("want INDEX [END], got %d arguments", len(args))
			}
			start, err := parseUint("INDEX", args[0])
			if err != nil {
				return usagef("%v", err)
			}
			end := start + 1
			if len(args) == 2 {
				if end, err = parseUint("END", args[1]); err != nil {
					return usagef("%v", err)
				}
				if end <= start {
					return usagef("END %d is not after INDEX %d (END is exclusive)", end, start)
				}
			}
			return c.get(ctx, start, end)
		}
	},
}

// entryJSON is the JSON output of an entry.
type entryJSON struct {
	Index    uint64 `json:"index"`
	Data     []byte `json:"data"` // base64
	LeafHash string `json:"leaf_hash"`
}

func (c *cli) get(ctx context.Context, start, end uint64) error {
	lc, err := c.logClient()
	if err != nil {
		return err
	}
	ctx, cancel := c.streamContext(ctx)
	defer cancel()
	stream, err := lc.GetEntries(ctx, &tlogv1.GetEntriesRequest{Log: c.log, Start: start, End: end})
	if err != nil {
		return rpcError("GetEntries", err)
	}
	next := start
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return rpcError("GetEntries", err)
		}
		for _, e := range msg.GetEntries() {
			if err := checkEntry(e, next, end); err != nil {
				return err
			}
			next++
			if err := c.printEntry(e); err != nil {
				return err
			}
		}
	}
	switch {
	case next == start:
		return failf("the server answered no entries from index %d, and no error", start)
	case next < end && end-start > 1:
		fmt.Fprintf(c.stderr, "tlogctl: the log has entries up to index %d only\n", next-1)
	}
	return nil
}

// checkEntry checks that an entry from the server is the expected one of
// [want, end) and that its data hashes to its leaf hash.
func checkEntry(e *tlogv1.Entry, want, end uint64) error {
	if e.GetIndex() != want || want >= end {
		return failf("expected entry %d (of up to %d), the server answered entry %d", want, end, e.GetIndex())
	}
	if h := tree.LeafHash(e.GetData()); string(h[:]) != string(e.GetLeafHash()) {
		return failf("entry %d: its data hashes to %x, not to the leaf hash %x the server sent", want, h, e.GetLeafHash())
	}
	return nil
}

func (c *cli) printEntry(e *tlogv1.Entry) error {
	if c.json {
		return c.emit(entryJSON{Index: e.GetIndex(), Data: e.GetData(), LeafHash: fmt.Sprintf("%x", e.GetLeafHash())})
	}
	_, err := fmt.Fprintf(c.stdout, "%d\t%s\n", e.GetIndex(), displayData(e.GetData()))
	return err
}

// base64Marker starts the human display of data that is not printable text.
const base64Marker = "(base64) "

// displayData returns data as text if it is printable UTF-8 on one line
// (tabs allowed), else as base64 after base64Marker.
func displayData(data []byte) string {
	printable := utf8.Valid(data) && !strings.HasPrefix(string(data), base64Marker) &&
		strings.IndexFunc(string(data), func(r rune) bool { return r != '\t' && !unicode.IsPrint(r) }) < 0
	if printable {
		return string(data)
	}
	return base64Marker + base64.StdEncoding.EncodeToString(data)
}
