// Package text holds the checks shared by tlog's strict parsers of
// line-oriented formats (checkpoints, tlog-proof receipts).
package text

import (
	"fmt"
	"strconv"
	"unicode/utf8"
)

// Check reports the first invalid UTF-8 sequence or control character
// other than newline in b, naming its line ("line 3: invalid UTF-8").
func Check(b []byte) error {
	line := 1
	for i := 0; i < len(b); {
		r, size := utf8.DecodeRune(b[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			return fmt.Errorf("line %d: invalid UTF-8", line)
		case r == '\n':
			line++
		case r == '\r':
			return fmt.Errorf("line %d: contains a carriage return (U+000D)", line)
		case r < 0x20:
			return fmt.Errorf("line %d: contains control character %U", line, r)
		}
		i += size
	}
	return nil
}

// Quote quotes b for an error message, cut short if long.
func Quote(b []byte) string {
	const max = 64
	if len(b) > max {
		return strconv.Quote(string(b[:max])) + "..."
	}
	return strconv.Quote(string(b))
}
