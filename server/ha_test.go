package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/tlog-dev/tlog/internal/pgtest"
	tlogv1 "github.com/tlog-dev/tlog/proto/tlog/v1"
	"github.com/tlog-dev/tlog/server"
	"github.com/tlog-dev/tlog/server/keyfile"
	"github.com/tlog-dev/tlog/server/sequencer"
	"github.com/tlog-dev/tlog/storage/postgres"
)

// haNode is one Service of several sharing a PostgreSQL database, served
// on a real TCP gRPC address (the one it advertises) and over HTTP.
type haNode struct {
	addr   string
	svc    *server.Service
	log    tlogv1.LogServiceClient
	http   *httptest.Server
	cancel context.CancelFunc
	done   chan error
}

func startHANode(t *testing.T, url, keys string, create bool, noForwarding bool) *haNode {
	t.Helper()
	ctx := context.Background()
	store, err := postgres.Open(ctx, url, postgres.Config{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	n := &haNode{addr: lis.Addr().String(), done: make(chan error, 1)}
	n.svc, err = server.New(ctx, server.Config{
		Store:            store,
		KeyDir:           keys,
		Sequencer:        sequencer.Config{MaxBatchAge: 2 * time.Millisecond},
		Logger:           testLogger(t),
		AdvertiseAddr:    n.addr,
		NoForwarding:     noForwarding,
		ElectionInterval: 100 * time.Millisecond,
		LogScanInterval:  100 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	if create {
		if _, err := n.svc.CreateLog(ctx, "ha", ""); err != nil {
			t.Fatal(err)
		}
	}
	runCtx, cancel := context.WithCancel(ctx)
	n.cancel = cancel
	go func() { n.done <- n.svc.Run(runCtx) }()
	gs := grpc.NewServer()
	server.RegisterGRPC(gs, n.svc)
	go gs.Serve(lis)
	t.Cleanup(gs.Stop)
	t.Cleanup(n.stop)
	conn, err := grpc.NewClient(n.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	n.log = tlogv1.NewLogServiceClient(conn)
	n.http = httptest.NewServer(server.HTTPHandler(n.svc))
	t.Cleanup(n.http.Close)
	return n
}

func (n *haNode) stop() {
	if n.cancel != nil {
		n.cancel()
		<-n.done
		n.cancel = nil
	}
}

type haLog struct {
	Name       string `json:"name"`
	Size       uint64 `json:"size"`
	Leader     bool   `json:"leader"`
	LeaderAddr string `json:"leader_addr"`
	Sequencing bool   `json:"sequencing"`
}

func (n *haNode) logs(t *testing.T) haLog {
	t.Helper()
	resp, err := http.Get(n.http.URL + "/logs")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct{ Logs []haLog }
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || len(out.Logs) != 1 {
		t.Fatalf("GET /logs: %v, %+v", err, out)
	}
	return out.Logs[0]
}

// waitLeader waits until exactly one of nodes leads and sequences the log,
// and every node names it.
func waitLeader(t *testing.T, nodes ...*haNode) *haNode {
	t.Helper()
	var last []haLog
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		last = last[:0]
		var leader *haNode
		leaders := 0
		for _, n := range nodes {
			l := n.logs(t)
			last = append(last, l)
			if l.Leader && l.Sequencing {
				leader = n
				leaders++
			}
		}
		if leaders != 1 {
			continue
		}
		agree := true
		for _, l := range last {
			agree = agree && l.LeaderAddr == leader.addr
		}
		if agree {
			return leader
		}
	}
	t.Fatalf("no single leader that every node names: %+v", last)
	return nil
}

// TestHAForwarding: two Services on one PostgreSQL database. One leads the
// log; appends to either (gRPC or HTTP) succeed, the follower forwarding
// them; when the leader stops, the other takes over; with forwarding off,
// the follower answers UNAVAILABLE naming the leader.
func TestHAForwarding(t *testing.T) {
	t.Parallel()
	url := pgtest.NewDatabase(t)
	keys := filepath.Join(t.TempDir(), "keys")
	a := startHANode(t, url, keys, true, false)
	b := startHANode(t, url, keys, false, false)
	leader := waitLeader(t, a, b)
	follower := map[*haNode]*haNode{a: b, b: a}[leader]
	if l := follower.logs(t); l.Leader || l.Sequencing {
		t.Errorf("follower's GET /logs: %+v", l)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	seen := map[uint64]string{}
	add := func(n *haNode, data string) {
		t.Helper()
		resp, err := n.log.Append(ctx, &tlogv1.AppendRequest{Log: "ha", Entries: []*tlogv1.AppendEntry{{Data: []byte(data)}}})
		if err != nil {
			t.Fatalf("Append %q: %v", data, err)
		}
		idx := resp.GetResults()[0].GetIndex()
		if prev, ok := seen[idx]; ok {
			t.Fatalf("%q and %q both at index %d", prev, data, idx)
		}
		seen[idx] = data
		hr, err := http.Post(n.http.URL+"/logs/ha/add", "text/plain", strings.NewReader(data+" over HTTP"))
		if err != nil {
			t.Fatal(err)
		}
		hr.Body.Close()
		if hr.StatusCode != http.StatusOK {
			t.Fatalf("POST add %q: %s", data, hr.Status)
		}
	}
	for i := range 5 {
		add(leader, fmt.Sprintf("to the leader %d", i))
		add(follower, fmt.Sprintf("to the follower %d", i))
	}
	// Reads on the follower see what the leader appended.
	cp, err := follower.log.GetCheckpoint(ctx, &tlogv1.GetCheckpointRequest{Log: "ha"})
	if err != nil || cp.GetTreeSize() != 20 {
		t.Fatalf("follower GetCheckpoint: size %d, %v; want 20", cp.GetTreeSize(), err)
	}

	// The leader goes away; the other takes over and appends.
	leader.stop()
	if got := waitLeader(t, follower); got != follower {
		t.Fatal("no takeover")
	}
	add(follower, "after the takeover")
	cp, err = follower.log.GetCheckpoint(ctx, &tlogv1.GetCheckpointRequest{Log: "ha"})
	if err != nil || cp.GetTreeSize() != 22 {
		t.Fatalf("GetCheckpoint after the takeover: size %d, %v; want 22", cp.GetTreeSize(), err)
	}

	// Forwarding off: the follower names the leader.
	c := startHANode(t, url, keys, false, true)
	waitLeader(t, follower, c)
	_, err = c.log.Append(ctx, &tlogv1.AppendRequest{Log: "ha", Entries: []*tlogv1.AppendEntry{{Data: []byte("not forwarded")}}})
	if code(err) != codes.Unavailable || !strings.Contains(err.Error(), follower.addr) {
		t.Errorf("Append to a follower that does not forward: %v, want UNAVAILABLE naming %s", err, follower.addr)
	}
}

// waitLogs waits until n lists want logs.
func (n *haNode) waitLogs(t *testing.T, want int) {
	t.Helper()
	var got int
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		resp, err := http.Get(n.http.URL + "/logs")
		if err != nil {
			t.Fatal(err)
		}
		var out struct{ Logs []haLog }
		err = json.NewDecoder(resp.Body).Decode(&out)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		if got = len(out.Logs); got == want {
			return
		}
	}
	t.Fatalf("%s lists %d logs, want %d", n.addr, got, want)
}

// TestHALogCreatedElsewhere: a log created by one process while others run
// is served by them within a few scans, and survives its creator; a process
// without the log's key does not serve it until the key is copied to it.
func TestHALogCreatedElsewhere(t *testing.T) {
	t.Parallel()
	url := pgtest.NewDatabase(t)
	keys := filepath.Join(t.TempDir(), "keys")
	keysC := filepath.Join(t.TempDir(), "keys-c")
	a := startHANode(t, url, keys, false, false)
	b := startHANode(t, url, keys, false, false)
	c := startHANode(t, url, keysC, false, false)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := a.svc.CreateLog(ctx, "ha", ""); err != nil {
		t.Fatal(err)
	}
	b.waitLogs(t, 1)
	leader := waitLeader(t, a, b)
	follower := map[*haNode]*haNode{a: b, b: a}[leader]
	add := func(n *haNode, data string) uint64 {
		t.Helper()
		resp, err := n.log.Append(ctx, &tlogv1.AppendRequest{Log: "ha", Entries: []*tlogv1.AppendEntry{{Data: []byte(data)}}})
		if err != nil {
			t.Fatalf("Append %q to %s: %v", data, n.addr, err)
		}
		return resp.GetResults()[0].GetIndex()
	}
	for i := range 3 {
		if idx := add(follower, fmt.Sprintf("entry %d", i)); idx != uint64(i) {
			t.Fatalf("entry %d appended at %d", i, idx)
		}
	}

	// c lacks the key: it does not serve the log.
	time.Sleep(500 * time.Millisecond) // five scans
	c.waitLogs(t, 0)
	if _, err := c.log.GetCheckpoint(ctx, &tlogv1.GetCheckpointRequest{Log: "ha"}); code(err) != codes.NotFound {
		t.Fatalf("GetCheckpoint on a process without the key: %v, want NOT_FOUND", err)
	}
	key, err := os.ReadFile(keyfile.Path(keys, "ha"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(keysC, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyfile.Path(keysC, "ha"), key, 0o600); err != nil {
		t.Fatal(err)
	}
	c.waitLogs(t, 1)

	// The creator and the other go away: c takes over, after what they
	// appended.
	a.stop()
	b.stop()
	if got := waitLeader(t, c); got != c {
		t.Fatal("no takeover")
	}
	if idx := add(c, "after the takeover"); idx != 3 {
		t.Fatalf("appended at %d after the takeover, want 3", idx)
	}
	cp, err := c.log.GetCheckpoint(ctx, &tlogv1.GetCheckpointRequest{Log: "ha"})
	if err != nil || cp.GetTreeSize() != 4 {
		t.Fatalf("GetCheckpoint after the takeover: size %d, %v; want 4", cp.GetTreeSize(), err)
	}
}
