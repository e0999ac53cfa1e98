package server

import (
	"context"
	"errors"
	"fmt"

	"github.com/tlog-dev/tlog/pkg/policy"
	"github.com/tlog-dev/tlog/pkg/receipt"
	"github.com/tlog-dev/tlog/pkg/tree"
	"github.com/tlog-dev/tlog/server/witnessing"
	"github.com/tlog-dev/tlog/storage"
)

// Witnessing errors.
var (
	// ErrNoWitnessPolicy: a request that needs the log's witness policy, on
	// a log that has none (neither its own nor the server's default).
	ErrNoWitnessPolicy = errors.New("log has no witness policy")
	// ErrNotWitnessed: no checkpoint (or not the one asked for) carries
	// cosignatures that satisfy the log's witness policy yet. It wraps
	// storage.ErrNotFound.
	ErrNotWitnessed = fmt.Errorf("%w: witness policy not satisfied", storage.ErrNotFound)
)

// describe returns the log's description, with its current own witness
// policy.
func (ls *logState) describe() storage.Log {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	l := ls.info
	l.WitnessPolicy = ls.ownPolicy
	return l
}

// parseDefaultPolicy parses Config.WitnessPolicy.
func parseDefaultPolicy(text string) (*policy.Policy, error) {
	if text == "" {
		return nil, nil
	}
	p, err := policy.Parse([]byte(text))
	if err != nil {
		return nil, fmt.Errorf("server: default witness policy: %w", err)
	}
	return p, nil
}

// checkPolicy parses a log's own witness policy and checks that it can be
// used for the log whose verifier key is vkey. Empty is no policy.
func checkPolicy(text, vkey string) (*policy.Policy, []string, error) {
	if text == "" {
		return nil, nil, nil
	}
	p, err := policy.Parse([]byte(text))
	if err != nil {
		return nil, nil, fmt.Errorf("%w: witness policy: %w", ErrInvalidArgument, err)
	}
	warnings, err := witnessing.Validate(p, vkey, false)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: witness policy: %w", ErrInvalidArgument, err)
	}
	return p, warnings, nil
}

// checkPolicySyntax checks a witness policy before the log's key is known:
// everything but its log lines.
func checkPolicySyntax(text string) error {
	if text == "" {
		return nil
	}
	p, err := policy.Parse([]byte(text))
	if err != nil {
		return fmt.Errorf("%w: witness policy: %w", ErrInvalidArgument, err)
	}
	if _, err := witnessing.Validate(p, "", true); err != nil {
		return fmt.Errorf("%w: witness policy: %w", ErrInvalidArgument, err)
	}
	return nil
}

// witness (re)starts the witnessing of a log under its effective policy:
// its own, else the server's default, else none. Problems are logged: a
// log whose stored policy became unusable still sequences.
func (s *Service) witness(ls *logState) {
	name, vkey := ls.info.Name, ls.info.VerifierKey
	ls.mu.Lock()
	own := ls.ownPolicy
	ls.mu.Unlock()
	var (
		p        *policy.Policy
		warnings []string
		err      error
		source   = "log"
	)
	if own != "" {
		p, warnings, err = checkPolicy(own, vkey)
	} else if s.defaultPolicy != nil {
		p, source = s.defaultPolicy, "default"
		warnings, err = witnessing.Validate(p, vkey, true)
	}
	if err != nil {
		s.log.Error("witness policy is unusable; the log is not witnessed", "log", name, "policy", source, "err", err)
		p = nil
	}
	for _, w := range warnings {
		s.log.Warn("witness policy", "log", name, "policy", source, "warning", w)
	}
	if p != nil {
		s.log.Info("witnessing log", "log", name, "policy", source, "witnesses", len(p.Witnesses), "quorum", p.Quorum)
	}
	s.wit.SetLog(witnessing.Log{
		Name:     name,
		Verifier: ls.verifier,
		Policy:   p,
		Latest:   func() storage.Checkpoint { return s.cachedLatest(ls) },
		Tiles:    func(ctx context.Context) tree.TileReader { return s.tiles(ctx, name) },
	})
}

// SetWitnessPolicy sets a log's own witness policy (a C2SP tlog-policy text;
// empty clears it, so that the server's default applies) and starts asking
// its witnesses at once.
func (s *Service) SetWitnessPolicy(ctx context.Context, log, text string) (LogInfo, error) {
	ls, err := s.state(log)
	if err != nil {
		return LogInfo{}, err
	}
	if _, _, err := checkPolicy(text, ls.info.VerifierKey); err != nil {
		return LogInfo{}, err
	}
	s.createMu.Lock() // serializes policy changes, so storage and memory agree
	defer s.createMu.Unlock()
	if err := s.cfg.Store.SetWitnessPolicy(ctx, log, text); err != nil {
		return LogInfo{}, err
	}
	ls.mu.Lock()
	ls.ownPolicy = text
	ls.mu.Unlock()
	s.witness(ls)
	s.log.Info("set witness policy", "log", log, "own_policy", text != "")
	return s.info(ctx, ls), nil
}

// CosignedCheckpoint returns the latest checkpoint (size 0) or the one
// signed at size, followed by the verified witness cosignatures the log
// holds for it.
func (s *Service) CosignedCheckpoint(ctx context.Context, log string, size uint64) (storage.Checkpoint, error) {
	cp, err := s.Checkpoint(ctx, log, size)
	if err != nil || s.wit.Policy(log) == nil {
		return cp, err
	}
	cs, _, err := s.wit.Cosignatures(ctx, log, cp)
	if err != nil {
		return storage.Checkpoint{}, fmt.Errorf("reading cosignatures: %w", err)
	}
	cp.Note = witnessing.AppendCosignatures(cp.Note, cs)
	return cp, nil
}

// WitnessedCheckpoint returns a checkpoint whose witness cosignatures
// satisfy the log's witness policy, with them: the newest one (size 0), or
// the one signed at size. It fails with ErrNoWitnessPolicy or
// ErrNotWitnessed.
func (s *Service) WitnessedCheckpoint(ctx context.Context, log string, size uint64) (storage.Checkpoint, error) {
	if _, err := s.state(log); err != nil {
		return storage.Checkpoint{}, err
	}
	p := s.wit.Policy(log)
	if p == nil {
		return storage.Checkpoint{}, fmt.Errorf("%w: log %q (set one with SetWitnessPolicy or tlogd --witness-policy)", ErrNoWitnessPolicy, log)
	}
	if size == 0 {
		n, ok := s.wit.Newest(log)
		if !ok {
			return storage.Checkpoint{}, fmt.Errorf("%w: no checkpoint of log %q carries cosignatures satisfying quorum %q yet", ErrNotWitnessed, log, p.Quorum)
		}
		size = n
	}
	cp, err := s.Checkpoint(ctx, log, size)
	if err != nil {
		return storage.Checkpoint{}, err
	}
	cs, names, err := s.wit.Cosignatures(ctx, log, cp)
	if err != nil {
		return storage.Checkpoint{}, fmt.Errorf("reading cosignatures: %w", err)
	}
	if !p.Satisfied(names) {
		return storage.Checkpoint{}, fmt.Errorf("%w: the checkpoint of log %q at size %d has %d verified cosignature(s), not enough for quorum %q", ErrNotWitnessed, log, cp.Size, len(cs), p.Quorum)
	}
	cp.Note = witnessing.AppendCosignatures(cp.Note, cs)
	return cp, nil
}

// ReceiptOptions selects the checkpoint of a receipt.
type ReceiptOptions struct {
	// IncludeCosignatures puts the witness cosignatures the log holds for
	// the checkpoint into the receipt.
	IncludeCosignatures bool
	// RequireWitnessPolicy proves inclusion in a checkpoint that satisfies
	// the log's witness policy (see WitnessedCheckpoint), with its
	// cosignatures.
	RequireWitnessPolicy bool
}

// ReceiptWith returns a C2SP tlog-proof for leaf index in the tree of the
// given size (0: latest, or with RequireWitnessPolicy the newest checkpoint
// that satisfies the witness policy, which must contain the entry).
func (s *Service) ReceiptWith(ctx context.Context, log string, index, size uint64, o ReceiptOptions) ([]byte, error) {
	var cp storage.Checkpoint
	var err error
	switch {
	case o.RequireWitnessPolicy:
		cp, err = s.WitnessedCheckpoint(ctx, log, size)
	case o.IncludeCosignatures:
		cp, err = s.CosignedCheckpoint(ctx, log, size)
	default:
		cp, err = s.Checkpoint(ctx, log, size)
	}
	if err != nil {
		return nil, err
	}
	if index >= cp.Size {
		if o.RequireWitnessPolicy && size == 0 {
			return nil, fmt.Errorf("%w: entry %d is not yet in a checkpoint that satisfies the witness policy (the newest is of size %d)", ErrOutOfRange, index, cp.Size)
		}
		return nil, fmt.Errorf("%w: index %d is not in the tree of size %d", ErrOutOfRange, index, cp.Size)
	}
	p, err := tree.InclusionProof(s.tiles(ctx, log), index, cp.Size)
	if err != nil {
		return nil, err
	}
	return receipt.Receipt{Index: index, Proof: p, Checkpoint: cp.Note}.Marshal(), nil
}

// WitnessStats describes the witnessing of every log by each of its
// witnesses.
func (s *Service) WitnessStats() []witnessing.Stats { return s.wit.Stats() }
