package migrations

import (
	"strings"
	"testing"
)

func TestAll(t *testing.T) {
	ms, err := All()
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) == 0 || ms[0].Name != "0001_init.sql" {
		t.Fatalf("All() = %d migrations, want 0001_init.sql first", len(ms))
	}
	for i, m := range ms {
		if m.Version != i+1 || strings.TrimSpace(m.SQL) == "" {
			t.Errorf("migration %d: version %d, %d bytes of SQL", i, m.Version, len(m.SQL))
		}
		// Migrations run inside the driver's transaction.
		for _, stmt := range []string{"BEGIN;", "COMMIT;", "CONCURRENTLY"} {
			if strings.Contains(strings.ToUpper(m.SQL), stmt) {
				t.Errorf("%s contains %q, which cannot run in the migration's transaction", m.Name, stmt)
			}
		}
	}
}
