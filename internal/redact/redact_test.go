package redact

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
)

func TestURL(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"postgres://tlog:s3cret@db:5432/tlog?sslmode=disable", "postgres://tlog:xxxxx@db:5432/tlog?sslmode=disable"},
		{"postgres://tlog@db/tlog", "postgres://tlog@db/tlog"},
		{"postgres://db/tlog?user=tlog&password=s3cret", "postgres://db/tlog?password=xxxxx&user=tlog"},
		{"postgres://tlog:s3%zzcret@db/tlog", "postgres://tlog:xxxxx@db/tlog"}, // does not parse
		{"host=db user=tlog password=s3cret dbname=tlog", "host=db user=tlog password=xxxxx dbname=tlog"},
		{"host=db password='s3 cret' dbname=tlog", "host=db password=xxxxx dbname=tlog"},
		{"", ""},
	} {
		if got := URL(c.in); got != c.want {
			t.Errorf("URL(%q) = %q, want %q", c.in, got, c.want)
		}
		if strings.Contains(URL(c.in), "s3") {
			t.Errorf("URL(%q) shows the password", c.in)
		}
	}
}

func TestError(t *testing.T) {
	url := "postgres://tlog:p%40ss@db/tlog"
	secrets := Secrets(url)
	inner := fmt.Errorf("connecting to %s (password p@ss): %w", url, context.DeadlineExceeded)
	err := Error(inner, secrets...)
	if strings.Contains(err.Error(), "p@ss") || strings.Contains(err.Error(), "p%40ss") {
		t.Errorf("Error = %q, shows the password", err)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Error("Error does not wrap the original error")
	}
	if plain := errors.New("nothing secret"); Error(plain, secrets...) != plain {
		t.Error("Error wrapped an error without secrets")
	}
	if Error(nil, "x") != nil {
		t.Error("Error(nil) != nil")
	}
	if got := Secrets("host=db password='a b'"); len(got) == 0 || got[len(got)-1] != "a b" {
		t.Errorf("Secrets of a key=value string = %q", got)
	}
}
