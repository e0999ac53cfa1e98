package main

import (
	"flag"
	"fmt"
	"os"
)

// witnessFlags are the flags of the witness client.
type witnessFlags struct {
	policyFile *string
}

func defineWitnessFlags(fs *flag.FlagSet) *witnessFlags {
	return &witnessFlags{
		policyFile: fs.String("witness-policy", "", "file of the default witness policy (C2SP tlog-policy: witness NAME VKEY URL lines, group and quorum lines) for every log without its own; empty: none"),
	}
}

// policy returns the text of the default witness policy ("" for none). The
// server parses and checks it.
func (f *witnessFlags) policy() (string, error) {
	if *f.policyFile == "" {
		return "", nil
	}
	b, err := os.ReadFile(*f.policyFile)
	if err != nil {
		return "", fmt.Errorf("--witness-policy: %w", err)
	}
	return string(b), nil
}
