package report

import (
	"path/filepath"
	"testing"
)

// FuzzParseAttempt feeds directory names to the reader of earlier attempts: a name it accepts is exactly the
// directory the campaign would keep that attempt in.
func FuzzParseAttempt(f *testing.F) {
	f.Add("run-c1.1")
	f.Fuzz(func(t *testing.T, name string) {
		id, n, ok := parseAttempt(name)
		if !ok {
			return
		}
		if id == "" || n < 1 {
			t.Fatalf("%q: run id %q, attempt %d", name, id, n)
		}
		if got := filepath.Base(EarlierAttemptDir("c", id, n)); got != name {
			t.Fatalf("%q read as attempt %d of %q, kept as %q", name, n, id, got)
		}
	})
}
