package backend

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/creack/pty"
	"github.com/lem-energy/lem/internal/gpu"
	"github.com/lem-energy/lem/internal/manifest"
)

// Process runs the workload as a child process in its own process group (HPC hosts without Docker).
type Process struct {
	Clock gpu.Clock
	// Watchdog stops the workload's whole process group if lem-run dies (see Watchdog).
	Watchdog Watchdog
	// PTY gives the workload a pseudo-terminal as its standard output, so programs that buffer output written to
	// a pipe (C stdio, most runtimes) write each line as it is printed: marker lines then arrive when they happen.
	PTY bool
}

var _ Backend = (*Process)(nil)

// Name is "process".
func (p *Process) Name() string { return "process" }

// Preflight checks nothing: the command is checked by Check before anything is measured.
func (p *Process) Preflight(context.Context) error { return nil }

// Check says whether the command can be started: it names a program on PATH (or a path to one).
func (p *Process) Check(command []string) error {
	if len(command) == 0 {
		return errors.New("no command to run")
	}
	if _, err := exec.LookPath(command[0]); err != nil {
		return fmt.Errorf("command %q: %w", command[0], err)
	}
	return nil
}

// Start starts the command with CUDA_VISIBLE_DEVICES set to the selected GPUs.
func (p *Process) Start(_ context.Context, spec Spec) (Workload, error) {
	if err := p.Check(spec.Command); err != nil {
		return nil, err
	}
	path, _ := exec.LookPath(spec.Command[0])
	cmd := exec.Command(path, spec.Command[1:]...)
	idx := make([]string, len(spec.GPUIndices))
	for i, g := range spec.GPUIndices {
		idx[i] = strconv.Itoa(g)
	}
	cmd.Env = append(os.Environ(), spec.Env...)
	cmd.Env = append(cmd.Env, "CUDA_VISIBLE_DEVICES="+strings.Join(idx, ","), "LEM_RESULTS_DIR="+spec.ResultsDir)
	cmd.Env = Unbuffered(cmd.Env)
	// Its own process group, so a stop reaches every process the command started; and killed if lem-run dies.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	stdout, tty, err := p.stdout(cmd)
	if err != nil {
		return nil, err
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	w := &procWorkload{cmd: cmd, clock: p.Clock, lines: make(chan Line, 1024), pty: p.PTY}
	err = cmd.Start()
	if tty != nil {
		tty.Close() // the child holds it now; the reader sees the end when the child's side closes
	}
	if err != nil {
		stdout.Close()
		return nil, fmt.Errorf("starting %q: %w", spec.Command[0], err)
	}
	w.started = p.Clock.Now()
	if w.guard, err = p.Watchdog.watch(spec.RunDir, pgidArgs(cmd.Process.Pid)...); err != nil {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		cmd.Wait()
		return nil, err
	}
	w.wg.Add(2)
	go w.read(stdout, false)
	go w.read(stderr, true)
	go func() { w.wg.Wait(); close(w.lines) }()
	return w, nil
}

type procWorkload struct {
	cmd     *exec.Cmd
	clock   gpu.Clock
	lines   chan Line
	wg      sync.WaitGroup
	started time.Time
	guard   *guard
	pty     bool // stdout is a pseudo-terminal: lines end in \r\n
}

func (w *procWorkload) read(r io.Reader, stderr bool) {
	defer w.wg.Done()
	splitLines(r, func(text []byte, partial bool) {
		if w.pty && !stderr && !partial && len(text) > 0 && text[len(text)-1] == '\r' {
			text = text[:len(text)-1] // the terminal's line discipline turned \n into \r\n
		}
		w.lines <- Line{Time: w.clock.Now(), Stderr: stderr, Text: string(text), Partial: partial}
	})
}

func (w *procWorkload) Lines() <-chan Line { return w.lines }

// PGID is the workload's process group.
func (w *procWorkload) PGID() int { return w.cmd.Process.Pid }

func (w *procWorkload) Wait(ctx context.Context) (Exit, error) {
	w.wg.Wait() // output first: Wait closes the pipes
	err := w.cmd.Wait()
	w.guard.release()
	ex := Exit{StartedAt: w.started, FinishedAt: w.clock.Now()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		ex.Code = ee.ExitCode()
		if st, ok := ee.Sys().(syscall.WaitStatus); ok && st.Signaled() {
			ex.Code = 128 + int(st.Signal())
		}
	default:
		return ex, fmt.Errorf("waiting for %s: %w", w.cmd.Path, err)
	}
	return ex, nil
}

// Stop sends SIGTERM to the process group, then SIGKILL after grace.
func (w *procWorkload) Stop(grace time.Duration) error {
	pgid := -w.cmd.Process.Pid
	if err := syscall.Kill(pgid, syscall.SIGTERM); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("stopping workload: %w", err)
	}
	go func() {
		time.Sleep(grace)
		syscall.Kill(pgid, syscall.SIGKILL)
	}()
	return nil
}

func (w *procWorkload) Cleanup(*manifest.Manifest) error { return nil }

// stdout connects the command's standard output: a pipe, or with PTY a pseudo-terminal (tty is the child's side,
// to close once the child has started).
func (p *Process) stdout(cmd *exec.Cmd) (r io.ReadCloser, tty *os.File, err error) {
	if !p.PTY {
		r, err = cmd.StdoutPipe()
		return r, nil, err
	}
	ptmx, tty, err := pty.Open()
	if err != nil {
		return nil, nil, fmt.Errorf("pseudo-terminal for the workload: %w", err)
	}
	cmd.Stdout = tty
	return ptyReader{ptmx}, tty, nil
}

// ptyReader reads a pseudo-terminal's master side: once the child's side is closed the kernel answers EIO,
// which means the end of the output.
type ptyReader struct{ f *os.File }

func (r ptyReader) Read(b []byte) (int, error) {
	n, err := r.f.Read(b)
	if errors.Is(err, syscall.EIO) {
		err = io.EOF
	}
	return n, err
}

func (r ptyReader) Close() error { return r.f.Close() }

// Unbuffered adds PYTHONUNBUFFERED=1 to an environment that does not set it, so Python workloads (most LLM
// benchmarks) print marker lines when they happen rather than in blocks when their pipe buffer fills or at exit.
// A workload that sets PYTHONUNBUFFERED itself keeps its value.
func Unbuffered(env []string) []string {
	if setsEnv(env, "PYTHONUNBUFFERED") {
		return env
	}
	return append(env, "PYTHONUNBUFFERED=1")
}

// setsEnv says whether env (KEY=VALUE entries) sets key.
func setsEnv(env []string, key string) bool {
	for _, kv := range env {
		if strings.HasPrefix(kv, key+"=") {
			return true
		}
	}
	return false
}
