package pgtest

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

func TestNewDatabase(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var (
		dbURL string
		conn  *pgx.Conn
	)
	ok := t.Run("create", func(t *testing.T) {
		dbURL = NewDatabase(t)
		var err error
		conn, err = pgx.Connect(ctx, dbURL)
		if err != nil {
			t.Fatalf("connect to new database: %v", err)
		}
		if _, err := conn.Exec(ctx, "CREATE TABLE t (id bigint PRIMARY KEY)"); err != nil {
			t.Fatalf("create table: %v", err)
		}
		if _, err := conn.Exec(ctx, "INSERT INTO t VALUES (1)"); err != nil {
			t.Fatalf("insert: %v", err)
		}
	})
	if conn != nil {
		// Still open when the subtest's cleanup ran: the drop must force it out.
		defer conn.Close(ctx)
	}
	if !ok {
		return
	}

	name := dbName(t, dbURL)
	if !strings.HasPrefix(name, "tlogtest_") {
		t.Errorf("database name %q, want prefix tlogtest_", name)
	}
	if exists(t, name) {
		t.Errorf("database %s still exists after the subtest's cleanup", name)
	}
}

// fatalTB records Fatalf and Skip calls instead of ending the test.
type fatalTB struct {
	testing.TB
	msg     string
	skipped bool
}

type stopped struct{}

func (f *fatalTB) Fatalf(format string, args ...any) {
	f.msg = fmt.Sprintf(format, args...)
	panic(stopped{})
}
func (f *fatalTB) Skip(...any)          { f.skipped = true; panic(stopped{}) }
func (f *fatalTB) Skipf(string, ...any) { f.skipped = true; panic(stopped{}) }
func (f *fatalTB) SkipNow()             { f.skipped = true; panic(stopped{}) }

func TestNewDatabaseUnreachable(t *testing.T) {
	dead := "postgres://postgres@127.0.0.1:1/test?sslmode=disable"
	t.Setenv(EnvURL, dead)
	f := &fatalTB{TB: t}
	func() {
		defer func() {
			if r := recover(); r != nil {
				if _, ok := r.(stopped); !ok {
					panic(r)
				}
			}
		}()
		NewDatabase(f)
	}()
	if f.skipped {
		t.Fatal("NewDatabase skipped the test; it must fail")
	}
	for _, want := range []string{"127.0.0.1:1", EnvURL, "scripts/test"} {
		if !strings.Contains(f.msg, want) {
			t.Errorf("Fatalf message %q does not mention %q", f.msg, want)
		}
	}
}

func TestNewDatabaseKeepsQuery(t *testing.T) {
	admin, err := url.Parse(URL())
	if err != nil {
		t.Fatal(err)
	}
	got, err := url.Parse(NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	if got.RawQuery != admin.RawQuery || got.Host != admin.Host || got.User.String() != admin.User.String() {
		t.Errorf("NewDatabase URL = %s, want %s with only the database name replaced", got.Redacted(), admin.Redacted())
	}
	if got.Path == admin.Path {
		t.Errorf("NewDatabase URL kept the admin database %s", admin.Path)
	}
}

func TestNewDatabaseNamesDiffer(t *testing.T) {
	a, b := dbName(t, NewDatabase(t)), dbName(t, NewDatabase(t))
	if a == b {
		t.Errorf("two calls gave the same database %s", a)
	}
	for _, n := range []string{a, b} {
		if !exists(t, n) {
			t.Errorf("database %s does not exist", n)
		}
	}
}

func dbName(t *testing.T, s string) string {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatalf("parse %q: %v", s, err)
	}
	return strings.TrimPrefix(u.Path, "/")
}

func exists(t *testing.T, name string) bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, URL())
	if err != nil {
		t.Fatalf("connect to admin database: %v", err)
	}
	defer conn.Close(ctx)
	var n int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM pg_database WHERE datname = $1", name).Scan(&n); err != nil {
		t.Fatalf("query pg_database: %v", err)
	}
	return n > 0
}
