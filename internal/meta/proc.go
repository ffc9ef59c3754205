package meta

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// Process identifies a running process across PID reuse: its PID and its start time in clock ticks since boot
// (/proc/PID/stat field 22), on a host.
type Process struct {
	Host  string `json:"host"`
	PID   int    `json:"pid"`
	Start uint64 `json:"start_ticks"`
}

// Self is this process.
func Self() Process {
	h, _ := os.Hostname()
	start, _ := processStart(os.Getpid())
	return Process{Host: h, PID: os.Getpid(), Start: start}
}

// String is host:pid:start, the form lem writes in container labels.
func (p Process) String() string { return fmt.Sprintf("%s:%d:%d", p.Host, p.PID, p.Start) }

// ParseProcess reads the host:pid:start form.
func ParseProcess(s string) (Process, error) {
	i := strings.LastIndex(s, ":")
	j := strings.LastIndex(s[:max(i, 0)], ":")
	if i < 0 || j < 0 {
		return Process{}, fmt.Errorf("process %q: want host:pid:start", s)
	}
	pid, err1 := strconv.Atoi(s[j+1 : i])
	start, err2 := strconv.ParseUint(s[i+1:], 10, 64)
	if err1 != nil || err2 != nil || pid <= 0 {
		return Process{}, fmt.Errorf("process %q: want host:pid:start", s)
	}
	return Process{Host: s[:j], PID: pid, Start: start}, nil
}

// Gone says whether p is known not to run any more: it is on this host and no process with its PID and start time
// exists. A process of another host is never said to be gone.
func (p Process) Gone() bool {
	if h, _ := os.Hostname(); p.Host != h || p.PID <= 0 {
		return false
	}
	start, err := processStart(p.PID)
	return err != nil || start != p.Start
}

// processStart reads a process's start time (clock ticks since boot) from /proc.
func processStart(pid int) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may hold spaces and parentheses: fields after it follow the last ')'.
	s := string(b)
	k := strings.LastIndexByte(s, ')')
	if k < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: no command field", pid)
	}
	f := strings.Fields(s[k+1:])
	if len(f) < 20 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	return strconv.ParseUint(f[19], 10, 64) // field 22 overall: the third after the command is field 3
}
