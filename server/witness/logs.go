package witness

import (
	"fmt"
	"strings"
)

// ParseLogList parses a list of logs, one per line: the origin, spaces or
// tabs, and the log's Ed25519 note verifier key. The key is the last field
// (a vkey holds no spaces), so an origin may contain spaces. Blank lines and
// lines whose first non-blank character is '#' are skipped. An origin on
// several lines gets all their keys. Keys are checked by New.
func ParseLogList(text string) ([]Log, error) {
	var logs []Log
	for i, line := range strings.Split(text, "\n") {
		line = strings.TrimRight(line, " \t\r")
		trimmed := strings.TrimLeft(line, " \t")
		if trimmed == "" || strings.HasPrefix(trimmed, "#") {
			continue
		}
		cut := strings.LastIndexAny(trimmed, " \t")
		if cut < 0 {
			return nil, fmt.Errorf("line %d: want \"<origin> <verifier key>\"", i+1)
		}
		origin := strings.TrimRight(trimmed[:cut], " \t")
		vkey := trimmed[cut+1:]
		if !validOrigin(origin) {
			return nil, fmt.Errorf("line %d: invalid origin %q", i+1, origin)
		}
		logs = append(logs, Log{Origin: origin, VerifierKeys: []string{vkey}})
	}
	return logs, nil
}
