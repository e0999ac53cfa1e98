package witnessing

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/tlog-dev/tlog/pkg/policy"
	"github.com/tlog-dev/tlog/storage"
)

// maxKnownSizes bounds the checkpoints whose cosignatures a log keeps in
// memory.
const maxKnownSizes = 32

// logWitnessing is the witnessing of one log under one policy.
type logWitnessing struct {
	w       *Witnesser
	l       Log
	log     *slog.Logger
	cancel  context.CancelFunc // set by start
	notify  chan struct{}
	workers []*worker
	// byKey maps "<key name>+<key ID>" to the policy's witness name.
	byKey     map[string]string
	verifiers []note.Verifier // the policy's, for stored cosignatures

	mu        sync.Mutex
	startSize uint64               // the latest size when witnessing started
	seeded    bool                 // startSize is set
	known     map[uint64]*cosigSet // verified cosignatures per checkpoint size
	pruned    uint64               // the largest size dropped from known
	best      uint64               // the newest size whose cosignatures satisfy the policy
	hasBest   bool
}

// cosigSet is the verified cosignatures on one checkpoint.
type cosigSet struct {
	byKey map[string]storage.Cosignature
	names map[string]bool // policy witness names
}

func newCosigSet() *cosigSet {
	return &cosigSet{byKey: map[string]storage.Cosignature{}, names: map[string]bool{}}
}

func (s *cosigSet) list() []storage.Cosignature {
	out := make([]storage.Cosignature, 0, len(s.byKey))
	for _, c := range s.byKey {
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].KeyID < out[j].KeyID })
	return out
}

func (s *cosigSet) witnesses() map[string]bool {
	out := make(map[string]bool, len(s.names))
	for n := range s.names {
		out[n] = true
	}
	return out
}

func keyID(name string, hash uint32) string { return fmt.Sprintf("%s+%08x", name, hash) }

func newLogWitnessing(w *Witnesser, l Log) *logWitnessing {
	lw := &logWitnessing{
		w:      w,
		l:      l,
		log:    w.log.With("log", l.Name),
		notify: make(chan struct{}, 1),
		byKey:  map[string]string{},
		known:  map[uint64]*cosigSet{},
	}
	for _, wt := range l.Policy.Witnesses {
		lw.byKey[keyID(wt.Key.Name, wt.Key.ID)] = wt.Name
		if wt.Key.Name == l.Verifier.Name() && wt.Key.ID == l.Verifier.KeyHash() {
			continue // cannot be told apart from the log's own signature
		}
		lw.verifiers = append(lw.verifiers, wt.Verifier)
		if wt.URL == "" {
			continue
		}
		u, err := endpoint(wt.URL)
		if err != nil {
			lw.log.Error("witness URL is unusable; not asking it", "witness", wt.Name, "err", err)
			continue
		}
		lw.workers = append(lw.workers, newWorker(lw, wt, u))
	}
	return lw
}

// seed loads the cosignatures stored on the latest checkpoint, so that a
// restarted log knows at once whether it satisfies the policy.
func (lw *logWitnessing) seed(ctx context.Context) {
	cp := lw.l.Latest()
	lw.mu.Lock()
	lw.startSize, lw.seeded = cp.Size, true
	lw.mu.Unlock()
	if _, err := lw.lookup(ctx, cp); err != nil && ctx.Err() == nil {
		lw.log.Warn("reading stored cosignatures", "size", cp.Size, "err", err)
	}
}

// dispatch offers the latest checkpoint to every worker after a commit (at
// most once per MinInterval) and when the log has been idle for
// IdleInterval.
func (lw *logWitnessing) dispatch(ctx context.Context) {
	cfg := &lw.w.cfg
	idle := time.NewTimer(0) // offer the latest checkpoint at once
	defer idle.Stop()
	var (
		last    time.Time
		offered uint64
		any     bool
	)
	for {
		force := false
		select {
		case <-ctx.Done():
			return
		case <-lw.notify:
		case <-idle.C:
			force = true
		}
		if wait := last.Add(cfg.MinInterval).Sub(cfg.Now()); wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
		}
		cp := lw.l.Latest()
		if cp.Size == 0 {
			// Nothing to witness in an empty log.
			idle.Reset(cfg.IdleInterval)
			continue
		}
		if any && cp.Size == offered && !force {
			continue
		}
		offered, any, last = cp.Size, true, cfg.Now()
		for _, wk := range lw.workers {
			wk.offer(cp)
		}
		idle.Reset(cfg.IdleInterval)
	}
}

// lookup returns the verified cosignatures on cp: from memory, or, for a
// checkpoint that may have been cosigned before witnessing started (or that
// memory dropped), from storage, verified again.
func (lw *logWitnessing) lookup(ctx context.Context, cp storage.Checkpoint) (*cosigSet, error) {
	lw.mu.Lock()
	if s, ok := lw.known[cp.Size]; ok {
		c := s.copy()
		lw.mu.Unlock()
		return c, nil
	}
	if lw.seeded && cp.Size > lw.startSize && cp.Size > lw.pruned {
		// Cosignatures on it would have been stored by this process,
		// and so be known. (Until seed has run, every size may have
		// cosignatures from before a restart.)
		lw.mu.Unlock()
		return newCosigSet(), nil
	}
	lw.mu.Unlock()
	cs, err := lw.w.cfg.Store.CosignaturesAt(ctx, lw.l.Name, cp.Size)
	if err != nil {
		return nil, err
	}
	set := newCosigSet()
	if len(cs) > 0 {
		if len(cp.Note) == 0 {
			if cp, err = lw.w.cfg.Store.CheckpointAt(ctx, lw.l.Name, cp.Size); err != nil {
				return nil, err
			}
		}
		lw.verifyStored(cp, cs, set)
	}
	lw.record(cp.Size, set)
	return set, nil
}

func (s *cosigSet) copy() *cosigSet {
	c := newCosigSet()
	for k, v := range s.byKey {
		c.byKey[k] = v
	}
	for n := range s.names {
		c.names[n] = true
	}
	return c
}

// verifyStored adds to set the stored cosignatures on cp that verify with
// the policy's keys, each on its own (one bad line does not hide others).
func (lw *logWitnessing) verifyStored(cp storage.Checkpoint, cs []storage.Cosignature, set *cosigSet) {
	if len(lw.verifiers) == 0 {
		return
	}
	known := note.VerifierList(lw.verifiers...)
	for _, c := range cs {
		n, err := note.Open(AppendCosignatures(cp.Note, []storage.Cosignature{c}), known)
		var unverified *note.UnverifiedNoteError
		switch {
		case errors.As(err, &unverified):
			continue // not a key of this policy
		case err != nil:
			lw.log.Error("a stored cosignature does not verify; not serving it (was storage altered?)", "size", cp.Size, "key", c.KeyID, "err", err)
			continue
		}
		for _, sig := range n.Sigs {
			id := keyID(sig.Name, sig.Hash)
			if name, ok := lw.byKey[id]; ok {
				set.byKey[id] = storage.Cosignature{KeyID: id, Signature: []byte("— " + sig.Name + " " + sig.Base64)}
				set.names[name] = true
			}
		}
	}
}

// record adds verified cosignatures on the checkpoint at size to memory,
// and moves the newest policy-satisfying size forward if they complete a
// quorum.
func (lw *logWitnessing) record(size uint64, add *cosigSet) {
	lw.mu.Lock()
	defer lw.mu.Unlock()
	set := lw.known[size]
	if set == nil {
		set = newCosigSet()
		lw.known[size] = set
	}
	for k, v := range add.byKey {
		set.byKey[k] = v
	}
	for n := range add.names {
		set.names[n] = true
	}
	if lw.l.Policy.Quorum != policy.None && len(set.names) > 0 && (!lw.hasBest || size > lw.best) && lw.l.Policy.Satisfied(set.names) {
		lw.log.Debug("checkpoint satisfies the witness policy", "size", size, "witnesses", len(set.names))
		lw.best, lw.hasBest = size, true
	}
	for len(lw.known) > maxKnownSizes {
		min := uint64(0)
		first := true
		for s := range lw.known {
			if (first || s < min) && !(lw.hasBest && s == lw.best) {
				min, first = s, false
			}
		}
		delete(lw.known, min)
		lw.pruned = max(lw.pruned, min)
	}
}
