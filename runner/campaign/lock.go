package campaign

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/lem-energy/lem/internal/meta"
)

// LockFile in a campaign directory is locked (flock) by the lem-run executing the campaign, and says who that is:
// two executions of one campaign directory would redo and move aside each other's runs. The kernel releases the
// lock when its holder dies, however it dies.
const LockFile = ".lock"

// ErrLocked is returned when another lem-run executes the campaign directory.
var ErrLocked = errors.New("campaign directory in use")

// holder is what the lock file says about the lem-run holding it.
type holder struct {
	Host  string    `json:"host"`
	PID   int       `json:"pid"`
	Since time.Time `json:"since"`
}

// lock takes the campaign directory's lock, or fails naming the lem-run (PID and host) that holds it; release
// gives it back.
func lock(dir string) (release func(), err error) {
	return lockFile(filepath.Join(dir, LockFile), dir+" is being executed", "use another --out")
}

// lockFile takes the lock file at path; what says what its holder does, and alternative what else to do.
func lockFile(path, what, alternative string) (release func(), err error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		defer f.Close()
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		var h holder
		b, _ := io.ReadAll(io.LimitReader(f, 4096))
		if json.Unmarshal(b, &h) != nil || h.PID == 0 {
			return nil, fmt.Errorf("%w: %s by another lem-run (%s names none yet): wait for it to end, or %s",
				ErrLocked, what, path, alternative)
		}
		return nil, fmt.Errorf("%w: %s by lem-run pid %d on host %s since %s: wait for it to end, or %s",
			ErrLocked, what, h.PID, h.Host, h.Since.Format(time.RFC3339), alternative)
	}
	self := meta.Self()
	b, _ := json.Marshal(holder{Host: self.Host, PID: self.PID, Since: time.Now().UTC().Truncate(time.Second)})
	if err := f.Truncate(0); err == nil {
		f.WriteAt(append(b, '\n'), 0)
	}
	return func() {
		f.Truncate(0) // a lock file naming nobody: the next lem-run takes it
		syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	}, nil
}
