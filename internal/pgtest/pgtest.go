// Package pgtest gives tests their own fresh PostgreSQL database.
//
// Tests run against a real PostgreSQL server, never a mock. The server is
// named by the environment variable TLOG_TEST_DATABASE_URL (default
// DefaultURL); NewDatabase creates a database with a random name on it and
// drops it when the test ends. scripts/test starts a throwaway server when
// none is configured and the default one does not answer.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// EnvURL is the environment variable that names the admin URL of the test server.
const EnvURL = "TLOG_TEST_DATABASE_URL"

// DefaultURL is the admin URL used when EnvURL is unset or empty.
const DefaultURL = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"

// connectTimeout bounds every connection attempt, so a missing server fails fast.
const connectTimeout = 5 * time.Second

// URL returns the admin URL for tests (TLOG_TEST_DATABASE_URL or the default).
func URL() string {
	if u := os.Getenv(EnvURL); u != "" {
		return u
	}
	return DefaultURL
}

// NewDatabase creates a fresh, empty database with a random name
// (tlogtest_<hex>) on the test server and returns its URL, which keeps the
// admin URL's user, host and query parameters (sslmode etc.) with only the
// database name replaced. t.Cleanup drops the database
// (DROP DATABASE ... WITH (FORCE)).
//
// If the server cannot be reached, NewDatabase calls t.Fatalf with the URL
// tried, the error, and how to provide a server. It never skips the test.
func NewDatabase(t testing.TB) string {
	t.Helper()
	admin := URL()
	u, err := url.Parse(admin)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		t.Fatalf("pgtest: %s=%q is not a postgres:// URL (err: %v)", EnvURL, admin, err)
	}

	conn := connect(t, admin)
	defer conn.Close(context.Background())

	name := "tlogtest_" + randomHex(8)
	ident := pgx.Identifier{name}.Sanitize()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+ident); err != nil {
		t.Fatalf("pgtest: create database %s on %s: %v", name, u.Redacted(), err)
	}
	t.Cleanup(func() { drop(t, admin, ident) })

	u.Path = "/" + name
	u.RawPath = ""
	return u.String()
}

// connect opens an admin connection or fails the test with advice.
func connect(t testing.TB, admin string) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), connectTimeout)
	defer cancel()
	conn, err := pgx.Connect(ctx, admin)
	if err != nil {
		shown := admin
		if u, err := url.Parse(admin); err == nil {
			shown = u.Redacted()
		}
		t.Fatalf("pgtest: cannot reach the test PostgreSQL server at %s: %v\n"+
			"These tests need a real PostgreSQL server (they are never skipped). Either set\n"+
			"%s to the URL of a server where the user may CREATE DATABASE, or run\n"+
			"scripts/test, which starts a throwaway server from the local PostgreSQL binaries\n"+
			"when %s is unset and the default server does not answer.",
			shown, err, EnvURL, EnvURL)
	}
	return conn
}

// drop removes the test database, disconnecting anyone still using it.
func drop(t testing.TB, admin, ident string) {
	t.Helper()
	conn := connect(t, admin)
	defer conn.Close(context.Background())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+ident+" WITH (FORCE)"); err != nil {
		t.Errorf("pgtest: drop database %s: %v", ident, err)
	}
}

// randomHex returns n random bytes as 2n hex digits.
func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b) // never fails since Go 1.24
	return hex.EncodeToString(b)
}
