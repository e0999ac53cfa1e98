// Package redact removes secrets from text meant for logs and error
// messages: the password of a database URL or connection string, and any
// other secret a caller names.
package redact

import (
	"net/url"
	"regexp"
	"strings"
)

// Mask replaces a secret.
const Mask = "xxxxx"

// kvPassword matches the password of a key=value connection string
// ("host=db password=s3cret user=tlog", with the value optionally quoted).
var kvPassword = regexp.MustCompile(`(?i)(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s&]+)`)

// urlPassword matches the password of a URL's user information.
var urlPassword = regexp.MustCompile(`(://[^/:@\s]*:)[^/@\s]*@`)

// URL returns a database URL (postgres://user:password@host/db?...) or a
// key=value connection string with its password replaced by Mask, also one
// given as a "password" query parameter. Text that is neither is returned
// unchanged.
func URL(s string) string {
	if u, err := url.Parse(s); err == nil && u.Scheme != "" && (u.Host != "" || u.User != nil) {
		if _, has := u.User.Password(); has {
			u.User = url.UserPassword(u.User.Username(), Mask)
		}
		if q := u.Query(); q.Has("password") {
			q.Set("password", Mask)
			u.RawQuery = q.Encode()
		}
		return u.String()
	}
	// Not a URL that parses (a password with a stray '%', say), or a
	// key=value string: mask what looks like a password.
	s = urlPassword.ReplaceAllString(s, "${1}"+Mask+"@")
	return kvPassword.ReplaceAllString(s, "${1}"+Mask)
}

// Secrets returns the secrets of a database URL or connection string that
// must not appear in logs: its password, raw and as it may appear escaped.
func Secrets(dbURL string) []string {
	var out []string
	if u, err := url.Parse(dbURL); err == nil {
		if p, has := u.User.Password(); has && p != "" {
			out = append(out, p, url.PathEscape(p), url.QueryEscape(p))
		}
		if p := u.Query().Get("password"); p != "" {
			out = append(out, p, url.QueryEscape(p))
		}
	}
	for _, m := range kvPassword.FindAllStringSubmatch(dbURL, -1) {
		if p := strings.Trim(m[2], "'"); p != "" {
			out = append(out, m[2], p)
		}
	}
	return out
}

// String returns s with every secret replaced by Mask.
func String(s string, secrets ...string) string {
	for _, sec := range secrets {
		if sec != "" {
			s = strings.ReplaceAll(s, sec, Mask)
		}
	}
	return s
}

// Error returns err with every secret in its message replaced by Mask. The
// result still wraps err (errors.Is and errors.As see through it), but its
// Error() never shows the secrets. It returns err itself when the message
// holds none.
func Error(err error, secrets ...string) error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	if red := String(msg, secrets...); red != msg {
		return &redacted{msg: red, err: err}
	}
	return err
}

type redacted struct {
	msg string
	err error
}

func (r *redacted) Error() string { return r.msg }
func (r *redacted) Unwrap() error { return r.err }
