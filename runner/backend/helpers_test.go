package backend_test

import (
	"bufio"
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/moby/moby/client"
	"github.com/stretchr/testify/require"

	"github.com/lem-energy/lem/internal/testutil"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testutil.RemoveCommands()
	os.Exit(code)
}

// lemRunBinary is the built lem-run, for what a user sees (its one-line errors) and for kill -9.
func lemRunBinary(t *testing.T) string { return testutil.Command(t, "lem-run") }

// errorLines are the lines lem-run itself ends with ("lem-run: …"), as opposed to its log.
func errorLines(stderr string) []string {
	var out []string
	for _, l := range strings.Split(stderr, "\n") {
		if strings.HasPrefix(l, "lem-run: ") {
			out = append(out, l)
		}
	}
	return out
}

// engine is a second Docker Engine of the test's own (socket, data root, exec root, bridge), which a test may stop
// or kill without harming the Engine other tests use.
type engine struct {
	t      *testing.T
	dir    string
	bridge string
	host   string // for DOCKER_HOST
	cmd    *exec.Cmd
	exited chan struct{}
}

// newEngine starts an Engine with the test workload's image loaded; it is removed (processes, mounts, files,
// bridge) when the test ends.
func newEngine(t *testing.T) *engine {
	t.Helper()
	testutil.Workload(t, true)
	if os.Geteuid() != 0 {
		testutil.SkipOrFail(t, "a Docker Engine of the test's own needs root")
	}
	for _, bin := range []string{"dockerd", "ip", "docker"} {
		if _, err := exec.LookPath(bin); err != nil {
			testutil.SkipOrFail(t, bin+" not installed (Debian packages docker.io, iproute2)")
		}
	}
	dir, err := os.MkdirTemp("", "lemd") // short: the runtime's socket paths under it must fit 108 bytes
	require.NoError(t, err)
	var r [2]byte
	rand.Read(r[:])
	e := &engine{t: t, dir: dir, bridge: fmt.Sprintf("lemd%02x%02x", r[0], r[1]),
		host: "unix://" + filepath.Join(dir, "docker.sock")}
	t.Cleanup(e.cleanup)
	// Its own bridge (the default one is the other Engine's), without NAT rules: containers reach the host only.
	for _, args := range [][]string{{"link", "add", e.bridge, "type", "bridge"},
		{"addr", "add", fmt.Sprintf("10.213.%d.1/24", r[0]), "dev", e.bridge}, {"link", "set", e.bridge, "up"}} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	e.start()
	load := exec.Command("sh", "-c", fmt.Sprintf("docker save %s | docker -H %s load -q", testutil.WorkloadImage, e.host))
	if out, err := load.CombinedOutput(); err != nil {
		t.Fatalf("loading %s into the test's Engine: %v\n%s", testutil.WorkloadImage, err, out)
	}
	return e
}

func (e *engine) start() {
	t := e.t
	t.Helper()
	log, err := os.OpenFile(filepath.Join(e.dir, "dockerd.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	require.NoError(t, err)
	defer log.Close()
	e.cmd = exec.Command("dockerd", "-H", e.host, "--data-root", filepath.Join(e.dir, "data"),
		"--exec-root", filepath.Join(e.dir, "exec"), "--pidfile", filepath.Join(e.dir, "docker.pid"),
		"--bridge", e.bridge, "--iptables=false", "--ip6tables=false", "--ip-masq=false")
	e.cmd.Stdout, e.cmd.Stderr = log, log
	e.cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	require.NoError(t, e.cmd.Start())
	e.exited = make(chan struct{})
	go func() { e.cmd.Wait(); close(e.exited) }()
	cli, err := client.New(client.WithHost(e.host))
	require.NoError(t, err)
	defer cli.Close()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := cli.Ping(context.Background(), client.PingOptions{NegotiateAPIVersion: true}); err == nil {
			return
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(filepath.Join(e.dir, "dockerd.log"))
			t.Fatalf("the test's Docker Engine did not start:\n%s", b)
		}
		time.Sleep(100 * time.Millisecond) // the Engine says nothing when it is ready but its socket answering
	}
}

// stop sends the Engine sig (SIGTERM: a graceful stop; SIGKILL: lost) and waits for it to exit.
func (e *engine) stop(sig syscall.Signal) {
	e.t.Helper()
	e.cmd.Process.Signal(sig)
	select {
	case <-e.exited:
	case <-time.After(60 * time.Second):
		e.t.Fatalf("the test's Docker Engine did not stop on %v", sig)
	}
}

func (e *engine) running() bool {
	if e.exited == nil {
		return false
	}
	select {
	case <-e.exited:
		return false
	default:
		return true
	}
}

// cleanup stops the Engine and removes what it leaves when killed: its runtime's shims, its mounts, its files.
func (e *engine) cleanup() {
	if e.running() {
		e.stop(syscall.SIGTERM)
	}
	if e.t.Failed() {
		b, _ := os.ReadFile(filepath.Join(e.dir, "dockerd.log"))
		e.t.Logf("dockerd log:\n%s", b)
	}
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil || !strings.Contains(string(b), e.dir+"/") {
			continue
		}
		var pid int
		if _, err := fmt.Sscanf(p, "/proc/%d/cmdline", &pid); err == nil && pid != os.Getpid() {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	var mounts []string
	if f, err := os.Open("/proc/self/mounts"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if fields := strings.Fields(sc.Text()); len(fields) > 1 && (fields[1] == e.dir || strings.HasPrefix(fields[1], e.dir+"/")) {
				mounts = append(mounts, fields[1])
			}
		}
		f.Close()
	}
	slices.Reverse(mounts)
	for _, m := range mounts {
		syscall.Unmount(m, syscall.MNT_DETACH)
	}
	os.RemoveAll(e.dir)
	exec.Command("ip", "link", "del", e.bridge).Run()
}

// runningProcess says whether pid is a live process (not gone, not a zombie).
func runningProcess(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i >= 0 && i+2 < len(s) && s[i+2] != 'Z'
}
