// Package migrations holds tlog's versioned PostgreSQL schema: SQL files named
// NNNN_name.sql (NNNN the version, counting from 0001 without gaps), embedded
// in the binary. storage/postgres applies the missing ones at start-up, each
// in its own transaction together with the bump of schema_version, and
// refuses to run on a database whose version is newer than the newest file
// here.
//
// A migration, once released, is never edited: change the schema by adding
// the next file.
package migrations

import (
	"embed"
	"fmt"
	"io/fs"
	"strconv"
	"strings"
)

// FS holds the migration files.
//
//go:embed *.sql
var FS embed.FS

// Migration is one schema version.
type Migration struct {
	// Version is the schema version this migration brings the database to.
	Version int
	// Name is the file name, such as "0001_init.sql".
	Name string
	// SQL is the file's content: one or more statements.
	SQL string
}

// All returns every migration in FS in version order. It returns an error if
// a file name is not NNNN_name.sql or the versions do not run 1, 2, 3, ...
func All() ([]Migration, error) {
	names, err := fs.Glob(FS, "*.sql")
	if err != nil {
		return nil, err
	}
	// fs.Glob returns names sorted; four-digit versions sort numerically.
	ms := make([]Migration, 0, len(names))
	for _, name := range names {
		num, rest, ok := strings.Cut(name, "_")
		if !ok || len(num) != 4 || rest == ".sql" {
			return nil, fmt.Errorf("migrations: %q is not named NNNN_name.sql", name)
		}
		v, err := strconv.Atoi(num)
		if err != nil || v < 1 {
			return nil, fmt.Errorf("migrations: %q is not named NNNN_name.sql", name)
		}
		if want := len(ms) + 1; v != want {
			return nil, fmt.Errorf("migrations: %q has version %d, want %d (versions run 1, 2, 3, ... without gaps or repeats)", name, v, want)
		}
		b, err := FS.ReadFile(name)
		if err != nil {
			return nil, err
		}
		ms = append(ms, Migration{Version: v, Name: name, SQL: string(b)})
	}
	return ms, nil
}
