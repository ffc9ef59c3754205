package testutil

import (
	"strings"
	"sync"
	"testing"
	"time"
)

// Watcher is an output (a process's stdout or stderr) that tests can wait on for a string, without sleeping.
// Safe for concurrent use; the zero value is ready.
type Watcher struct {
	mu      sync.Mutex
	buf     strings.Builder
	changed chan struct{}
}

// NewWatcher returns an empty Watcher.
func NewWatcher() *Watcher { return &Watcher{changed: make(chan struct{})} }

func (w *Watcher) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(b)
	if w.changed != nil {
		close(w.changed)
	}
	w.changed = make(chan struct{})
	return len(b), nil
}

func (w *Watcher) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

// WaitFor waits until the output holds s, failing the test after within.
func (w *Watcher) WaitFor(t testing.TB, s string, within time.Duration) {
	t.Helper()
	deadline := time.After(within)
	for {
		w.mu.Lock()
		if w.changed == nil {
			w.changed = make(chan struct{})
		}
		ok, ch := strings.Contains(w.buf.String(), s), w.changed
		w.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-ch:
		case <-deadline:
			t.Fatalf("%q not written within %s; output:\n%s", s, within, w.String())
		}
	}
}
