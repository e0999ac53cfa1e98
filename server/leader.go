package server

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/tlog-dev/tlog/server/sequencer"
	"github.com/tlog-dev/tlog/storage"
)

// ErrNotLeader: an append reached a process that does not sequence the log
// and could not forward it (no leader known, forwarding off, or a forwarded
// append that reached a non-leader while the leadership moves). Retry,
// possibly at the leader's address that the message names.
var ErrNotLeader = errors.New("this process does not sequence the log")

// readCacheTTL is how long a process that does not sequence a log serves
// the latest checkpoint it read from storage before reading it again.
const readCacheTTL = 150 * time.Millisecond

func (ls *logState) setElected() { ls.electedOne.Do(func() { close(ls.elected) }) }

// follow records that another process (at addr, "" if unknown) leads the
// log.
func (ls *logState) follow(addr string) {
	ls.mu.Lock()
	ls.leader, ls.leaderAddr = false, addr
	ls.mu.Unlock()
}

// campaign runs while ctx lasts: it tries to take the leadership of the log
// every ElectionInterval and, while it has it, sequences the log.
func (s *Service) campaign(ctx context.Context, ls *logState) {
	name := ls.info.Name
	var lastErr string
	for ctx.Err() == nil {
		lead, err := s.elector.TryLead(ctx, name, s.cfg.AdvertiseAddr)
		if err == nil && lead == nil {
			var addr string
			if addr, err = s.elector.Leader(ctx, name); err == nil {
				ls.follow(addr)
			}
		}
		switch {
		case ctx.Err() != nil:
			if lead != nil {
				lead.Resign()
			}
			return
		case err != nil:
			if msg := err.Error(); msg != lastErr {
				s.log.Warn("log leader election failed; retrying", "log", name, "err", err)
				lastErr = msg
			}
		case lead != nil:
			lastErr = ""
			s.lead(ctx, ls, lead)
		}
		ls.setElected()
		select {
		case <-ctx.Done():
		case <-time.After(s.cfg.ElectionInterval):
		}
	}
}

// lead sequences the log while this process holds its leadership, and
// resigns it when the leadership is lost or ctx is done.
func (s *Service) lead(ctx context.Context, ls *logState, lead storage.Leadership) {
	defer lead.Resign()
	name := ls.info.Name
	seq, err := s.newSequencer(ctx, ls)
	if err != nil && !errors.Is(err, sequencer.ErrFatal) {
		s.log.Warn("won the leadership of log but cannot load its state; resigning", "log", name, "err", err)
		ls.follow("")
		return
	}
	if err != nil {
		// Hold the leadership (so that no other process tries and fails in
		// turn) with the log stopped, until this process goes away.
		s.log.Error("log stopped sequencing: its stored state does not verify; investigate with fsck", "log", name, "err", err)
		ls.mu.Lock()
		ls.leader, ls.leaderAddr, ls.stopped = true, s.cfg.AdvertiseAddr, err
		ls.mu.Unlock()
		ls.setElected()
		select {
		case <-lead.Lost():
		case <-ctx.Done():
		}
		ls.mu.Lock()
		ls.leader, ls.stopped = false, nil
		ls.mu.Unlock()
		return
	}
	s.log.Info("leading log: this process sequences it", "log", name, "size", seq.Latest().Size, "addr", s.cfg.AdvertiseAddr)
	ls.mu.Lock()
	ls.seq, ls.leader, ls.leaderAddr, ls.stopped = seq, true, s.cfg.AdvertiseAddr, nil
	ls.mu.Unlock()
	ls.setElected()
	s.wit.Notify(name)

	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- s.runSequencer(runCtx, ls, seq) }()
	select {
	case <-lead.Lost():
		// Another process may lead already: stop now. What is pooled is
		// still flushed, and fails (retriably) if the other moved the head.
		s.log.Warn("lost the leadership of log (the database connection holding its lock failed); stopped sequencing it", "log", name)
		cancel()
		<-done
	case <-ctx.Done():
		<-done
	case <-done:
		// Stopped on a fatal error: hold the leadership, stopped.
		select {
		case <-lead.Lost():
		case <-ctx.Done():
		}
	}
	ls.mu.Lock()
	ls.seq, ls.leader, ls.stopped = nil, false, nil
	ls.stored, ls.storedAt = seq.Latest(), time.Now()
	ls.mu.Unlock()
}

// latest returns the log's latest checkpoint: the sequencer's while this
// process sequences the log, else the one read from storage at most
// readCacheTTL ago (read again if it is older, or smaller than atLeast).
func (s *Service) latest(ctx context.Context, ls *logState, atLeast uint64) (storage.Checkpoint, error) {
	ls.mu.Lock()
	seq, cp, fresh := ls.seq, ls.stored, time.Since(ls.storedAt) < readCacheTTL
	ls.mu.Unlock()
	switch {
	case seq != nil:
		return seq.Latest(), nil
	case cp.Note != nil && fresh && cp.Size >= atLeast:
		return cp, nil
	}
	cp, err := s.cfg.Store.LatestCheckpoint(ctx, ls.info.Name)
	if err != nil {
		return storage.Checkpoint{}, err
	}
	ls.mu.Lock()
	ls.stored, ls.storedAt = cp, time.Now()
	ls.mu.Unlock()
	return cp, nil
}

// cachedLatest is latest without a context, for the witness client: it
// reads storage only when nothing was read yet.
func (s *Service) cachedLatest(ls *logState) storage.Checkpoint {
	ls.mu.Lock()
	seq, cp := ls.seq, ls.stored
	ls.mu.Unlock()
	if seq != nil {
		return seq.Latest()
	}
	if cp.Note == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		cp, _ = s.latest(ctx, ls, 0)
	}
	return cp
}

// size is the size of latest, or of the cached checkpoint if storage
// fails.
func (s *Service) size(ctx context.Context, ls *logState) uint64 {
	cp, err := s.latest(ctx, ls, 0)
	if err != nil {
		ls.mu.Lock()
		defer ls.mu.Unlock()
		return ls.stored.Size
	}
	return cp.Size
}

// leadership describes the log's leadership as this process sees it.
func (ls *logState) leadership() (leader bool, addr string, sequencing bool, stopped error) {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	return ls.leader, ls.leaderAddr, ls.seq != nil && ls.stopped == nil, ls.stopped
}

// notReady lists, one a line, the logs that keep this process from being
// ready: stopped on a fatal error, or not through their first election.
// Empty: ready.
func (s *Service) notReady() string {
	s.mu.RLock()
	states := make([]*logState, 0, len(s.logs))
	for _, ls := range s.logs {
		states = append(states, ls)
	}
	s.mu.RUnlock()
	sort.Slice(states, func(i, j int) bool { return states[i].info.Name < states[j].info.Name })
	var b strings.Builder
	for _, ls := range states {
		select {
		case <-ls.elected:
		default:
			fmt.Fprintf(&b, "log %q: electing its leader\n", ls.info.Name)
			continue
		}
		if _, _, _, stopped := ls.leadership(); stopped != nil {
			fmt.Fprintf(&b, "log %q: stopped sequencing: %s\n", ls.info.Name, strings.ReplaceAll(stopped.Error(), "\n", " "))
		}
	}
	return b.String()
}

// scanLogs runs while ctx lasts, on a store shared with other processes:
// every LogScanInterval it opens the logs that another process created
// since this one listed them, so that it serves them and, if their leader
// goes away, can take over.
func (s *Service) scanLogs(ctx context.Context) {
	t := time.NewTicker(s.cfg.LogScanInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		logs, err := s.cfg.Store.ListLogs(ctx)
		if err != nil {
			if ctx.Err() == nil {
				s.log.Warn("looking for logs created by other processes", "err", err)
			}
			continue
		}
		for _, l := range logs {
			if _, err := s.state(l.Name); err != nil {
				s.adopt(ctx, l)
			}
		}
	}
}

// adopt opens a log that another process created and starts campaigning
// for its leadership. A log this process cannot open (its signing key is not
// in the key directory, say) is warned about once and tried again at the
// next scan.
func (s *Service) adopt(ctx context.Context, l storage.Log) {
	s.createMu.Lock()
	defer s.createMu.Unlock()
	if _, err := s.state(l.Name); err == nil {
		return // created or adopted meanwhile
	}
	ls, err := s.openStored(ctx, l)
	if err != nil {
		if ctx.Err() == nil && !s.unopened[l.Name] {
			s.log.Warn("another process created a log that this one cannot serve yet (a missing key belongs in --key-dir); retrying at every scan", "log", l.Name, "err", err)
			if s.unopened == nil {
				s.unopened = make(map[string]bool)
			}
			s.unopened[l.Name] = true
		}
		return
	}
	s.witness(ls)
	s.mu.Lock()
	defer s.mu.Unlock()
	if ctx.Err() != nil {
		return
	}
	s.logs[l.Name] = ls
	s.start(ctx, ls)
	delete(s.unopened, l.Name)
	s.log.Info("serving a log created by another process", "log", l.Name, "origin", l.Origin)
}
