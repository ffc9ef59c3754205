package procmap_test

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"

	"github.com/lem-energy/lem/internal/procmap"
	"github.com/lem-energy/lem/internal/testutil"
	"github.com/lem-energy/lem/internal/trace"
)

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func randomUUID() string {
	h := randomHex(16)
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// A pod run by a real containerd through its CRI plugin, as the kubelet runs one: the resolver names the
// container, the pod, its namespace and UID from the runtime; where the kubelet's log directories say otherwise,
// the runtime wins; a label longer than any Kubernetes name is cut before it reaches a trace.
func TestResolverCRIContainerd(t *testing.T) {
	c := startContainerd(t, true)
	p := &pod{name: "vllm-" + randomHex(3), namespace: "llm", uid: randomUUID(), container: "server"}
	c.runPod(t, p)
	pid := c.pid(t, p.containerID)

	cg, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(int(pid)), "cgroup"))
	require.NoError(t, err)
	parsed := procmap.ParseCgroup(cg)
	require.Equal(t, p.containerID, parsed.ContainerID, "cgroup file:\n%s", cg)
	require.Equal(t, p.uid, parsed.PodUID, "cgroup file:\n%s", cg)

	want := trace.ProcessIdentity{Command: "sleeper", Runtime: "containerd", ContainerID: p.containerID,
		ContainerName: "server", PodUID: p.uid, PodNamespace: "llm", PodName: p.name}
	empty := t.TempDir()
	r := procmap.New(procmap.Options{DockerHost: "none", CRISocket: c.sock, PodLogDir: empty, ContainerLogDir: empty})
	defer r.Close()
	start := time.Now()
	assert.Equal(t, want, r.Identify(pid))
	t.Logf("first lookup (connect, Version, ContainerStatus): %s", time.Since(start))

	// The kubelet's log directories name the same container otherwise (a stale link): the runtime wins.
	pods, ctrs := filepath.Join(t.TempDir(), "pods"), filepath.Join(t.TempDir(), "containers")
	require.NoError(t, os.MkdirAll(filepath.Join(pods, "old_stale-0_"+p.uid), 0o755))
	require.NoError(t, os.MkdirAll(ctrs, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(ctrs, "stale-0_old_renamed-"+p.containerID+".log"), nil, 0o644))
	both := procmap.New(procmap.Options{DockerHost: "none", CRISocket: c.sock, PodLogDir: pods, ContainerLogDir: ctrs})
	defer both.Close()
	start = time.Now()
	assert.Equal(t, want, both.Identify(pid))
	t.Logf("lookup on a second client (connect, Version, ContainerStatus, log directories): %s", time.Since(start))
	// Without the runtime the log directories answer: so they were read, and overruled above.
	logs := procmap.New(procmap.Options{DockerHost: "none", CRISocket: "none", PodLogDir: pods, ContainerLogDir: ctrs})
	defer logs.Close()
	assert.Equal(t, trace.ProcessIdentity{Command: "sleeper", ContainerID: p.containerID, ContainerName: "renamed",
		PodUID: p.uid, PodNamespace: "old", PodName: "stale-0"}, logs.Identify(pid))

	// A container the runtime does not know (another runtime's, or gone): its ID, no name, and no complaint.
	proc := filepath.Join(t.TempDir(), "proc")
	cg, err = os.ReadFile(filepath.Join("testdata", "cgroup", "containerd-k8s-cgroupfs-v1"))
	require.NoError(t, err)
	fakeProc(t, proc, 4242, 1000, "python3", string(cg))
	var buf testutil.LogBuffer
	unknown := procmap.New(procmap.Options{ProcRoot: proc, DockerHost: "none", CRISocket: c.sock, PodLogDir: empty,
		ContainerLogDir: empty, Log: slog.New(slog.NewTextHandler(&buf, nil))})
	defer unknown.Close()
	assert.Equal(t, trace.ProcessIdentity{Command: "python3", ContainerID: idB, PodUID: podUID}, unknown.Identify(4242))
	assert.Empty(t, buf.String())

	// A second pod whose labels are hostile: control characters and a name past any Kubernetes limit.
	long := strings.Repeat("x", 300)
	q := &pod{name: "evil\n" + long, namespace: "llm", uid: randomUUID(), container: "c\x1bd"}
	c.runPod(t, q)
	got := r.Identify(c.pid(t, q.containerID))
	assert.Equal(t, "cd", got.ContainerName)
	assert.Equal(t, "evil"+long[:253-4], got.PodName, "cut to 253 bytes")
	assert.Equal(t, q.uid, got.PodUID)
}

// listenUnix listens on a fresh unix socket and returns its path.
func listenUnix(t *testing.T) (string, net.Listener) {
	t.Helper()
	dir, err := os.MkdirTemp("", "lem-sock-")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, "s.sock")
	l, err := net.Listen("unix", path)
	require.NoError(t, err)
	t.Cleanup(func() { l.Close() })
	return path, l
}

// A CRI socket that is missing, serves something else (HTTP; gRPC without the CRI or containerd's API), or
// accepts and never answers: the process poll is not
// held up (each lookup returns within the request timeout, then the runtime is left alone), the container keeps
// its ID, and the failure is logged once.
func TestResolverCRIUnreachable(t *testing.T) {
	httpSock, hl := listenUnix(t)
	srv := &http.Server{Handler: http.NotFoundHandler()}
	go srv.Serve(hl)
	t.Cleanup(func() { srv.Close() })
	hangSock, hang := listenUnix(t)
	var held []net.Conn
	var mu sync.Mutex
	go func() { // accepts, reads nothing, writes nothing
		for {
			c, err := hang.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			held = append(held, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range held {
			c.Close()
		}
	})

	// Accepts, reads the client's first bytes, and hangs up: a runtime dying mid-request.
	dropSock, drop := listenUnix(t)
	go func() {
		for {
			c, err := drop.Accept()
			if err != nil {
				return
			}
			c.Read(make([]byte, 64))
			c.Close()
		}
	}()
	file := filepath.Join(t.TempDir(), "file.sock")
	require.NoError(t, os.WriteFile(file, nil, 0o666))

	// A gRPC server with no services: neither the CRI nor containerd's own API.
	grpcSock, gl := listenUnix(t)
	gs := grpc.NewServer()
	go gs.Serve(gl)
	t.Cleanup(gs.Stop)

	pod, err := os.ReadFile(filepath.Join("testdata", "cgroup", "containerd-k8s-cgroupfs-v1"))
	require.NoError(t, err)
	for name, sock := range map[string]string{
		"missing":         filepath.Join(t.TempDir(), "no.sock"),
		"not CRI":         httpSock,
		"serves neither":  grpcSock,
		"hangs":           hangSock,
		"hangs up":        dropSock,
		"a regular file":  file,
		"not unix":        t.TempDir(), // a directory
		"the environment": "",          // CONTAINER_RUNTIME_ENDPOINT names the hung socket
	} {
		t.Run(name, func(t *testing.T) {
			opt := sock
			if sock == "" {
				sock = hangSock
				t.Setenv(procmap.EnvCRISocket, "unix://"+hangSock)
			}
			proc := filepath.Join(t.TempDir(), "proc")
			fakeProc(t, proc, 4242, 1000, "python3", string(pod))
			fakeProc(t, proc, 4343, 2000, "vllm", "0::/system.slice/cri-containerd-"+idC+".scope\n")
			var buf testutil.LogBuffer
			r := procmap.New(procmap.Options{ProcRoot: proc, DockerHost: "none", CRISocket: opt,
				PodLogDir: t.TempDir(), ContainerLogDir: t.TempDir(), Timeout: 300 * time.Millisecond,
				Log: slog.New(slog.NewTextHandler(&buf, nil))})
			defer r.Close()
			start := time.Now()
			assert.Equal(t, trace.ProcessIdentity{Command: "python3", ContainerID: idB, PodUID: podUID}, r.Identify(4242))
			assert.Equal(t, trace.ProcessIdentity{Command: "vllm", Runtime: "containerd", ContainerID: idC}, r.Identify(4343))
			assert.Equal(t, trace.ProcessIdentity{Command: "vllm", Runtime: "containerd", ContainerID: idC}, r.Identify(4343))
			took := time.Since(start)
			assert.Less(t, took, 2*time.Second)
			assert.Equal(t, 1, strings.Count(buf.String(), "CRI runtime not answering"), "%s", buf.String())
			assert.Contains(t, buf.String(), fmt.Sprintf("socket=%s", sock))
		})
	}
}
