package main

import (
	"errors"
	"testing"
)

func TestIsLoopback(t *testing.T) {
	for target, want := range map[string]bool{
		"127.0.0.1:7600":          true,
		"[::1]:7600":              true,
		"localhost:7600":          true,
		"dns:///localhost:7600":   true,
		"unix:///run/tlog.sock":   true,
		"tlog.example.com:7600":   false,
		"192.0.2.1:7600":          false,
		"dns:///tlog.example.com": false,
		"127.0.0.1.example.com:1": false,
	} {
		if got := isLoopback(target); got != want {
			t.Errorf("isLoopback(%q) = %v, want %v", target, got, want)
		}
	}
}

func TestDialOptions(t *testing.T) {
	for _, c := range []struct {
		name string
		f    transportFlags
		addr string
		ok   bool
	}{
		{"plaintext, no token", transportFlags{}, "tlog.example.com:7600", true},
		{"plaintext token to loopback", transportFlags{token: "t"}, "127.0.0.1:7600", true},
		{"plaintext token to a remote address", transportFlags{token: "t"}, "tlog.example.com:7600", false},
		{"TLS token to a remote address", transportFlags{token: "t", tls: true}, "tlog.example.com:7600", true},
		{"insecure TLS", transportFlags{token: "t", insecure: true}, "tlog.example.com:7600", true},
		{"missing CA file", transportFlags{ca: "/nonexistent/ca.pem"}, "127.0.0.1:7600", false},
		{"key without certificate", transportFlags{key: "/nonexistent/key.pem"}, "127.0.0.1:7600", false},
		{"token from a missing file", transportFlags{token: "@/nonexistent/token"}, "127.0.0.1:7600", false},
	} {
		_, err := c.f.dialOptions(c.addr)
		if (err == nil) != c.ok {
			t.Errorf("%s: %v", c.name, err)
		}
		var uerr *usageError
		if c.name == "plaintext token to a remote address" && !errors.As(err, &uerr) {
			t.Errorf("%s: %v is not a usage error", c.name, err)
		}
	}
}
