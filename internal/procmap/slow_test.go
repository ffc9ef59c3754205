package procmap_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	containers "github.com/containerd/containerd/api/services/containers/v1"
	namespaces "github.com/containerd/containerd/api/services/namespaces/v1"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/lem-energy/lem/internal/procmap"
	"github.com/lem-energy/lem/internal/testutil"
	"github.com/lem-energy/lem/internal/trace"
)

// slowRuntime serves the CRI and containerd's Namespaces and Containers services on a unix socket, as containerd
// does, each answer after a delay the test sets: a loaded or hung runtime, which a real containerd cannot be made
// into on demand. It knows the containers in names (ID → nerdctl name), all in the last of its namespaces, and
// only through containerd's own API (as nerdctl's).
type slowRuntime struct {
	delay    atomic.Int64 // nanoseconds before each answer
	nss      []string
	names    map[string]string
	requests atomic.Int64
	accepts  atomic.Int64
	arrived  chan struct{} // a request arrived (never blocks: dropped when full)
	srv      *grpc.Server
}

func (s *slowRuntime) wait(ctx context.Context) error {
	s.requests.Add(1)
	select {
	case s.arrived <- struct{}{}:
	default:
	}
	t := time.NewTimer(time.Duration(s.delay.Load()))
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return status.FromContextError(ctx.Err()).Err()
	}
}

// The three services, each over the runtime's state.
type (
	criService struct {
		runtimeapi.UnimplementedRuntimeServiceServer
		*slowRuntime
	}
	containersService struct {
		containers.UnimplementedContainersServer
		*slowRuntime
	}
	namespacesService struct {
		namespaces.UnimplementedNamespacesServer
		*slowRuntime
	}
)

func (s criService) Version(ctx context.Context, _ *runtimeapi.VersionRequest) (*runtimeapi.VersionResponse, error) {
	if err := s.wait(ctx); err != nil {
		return nil, err
	}
	return &runtimeapi.VersionResponse{RuntimeName: "containerd", RuntimeVersion: "v2.0.0"}, nil
}

func (s criService) ContainerStatus(ctx context.Context, req *runtimeapi.ContainerStatusRequest) (*runtimeapi.ContainerStatusResponse, error) {
	if err := s.wait(ctx); err != nil {
		return nil, err
	}
	return nil, status.Errorf(codes.NotFound, "container %q: not found", req.GetContainerId())
}

func (s namespacesService) List(ctx context.Context, _ *namespaces.ListNamespacesRequest) (*namespaces.ListNamespacesResponse, error) {
	if err := s.wait(ctx); err != nil {
		return nil, err
	}
	resp := &namespaces.ListNamespacesResponse{}
	for _, n := range s.nss {
		resp.Namespaces = append(resp.Namespaces, &namespaces.Namespace{Name: n})
	}
	return resp, nil
}

func (s containersService) Get(ctx context.Context, req *containers.GetContainerRequest) (*containers.GetContainerResponse, error) {
	if err := s.wait(ctx); err != nil {
		return nil, err
	}
	name, ok := s.names[req.GetID()]
	if ns := namespaceOf(ctx); !ok || ns != s.nss[len(s.nss)-1] {
		return nil, status.Errorf(codes.NotFound, "container %q in namespace %q: not found", req.GetID(), ns)
	}
	return &containers.GetContainerResponse{Container: &containers.Container{ID: req.GetID(),
		Labels: map[string]string{"nerdctl/name": name}}}, nil
}

func namespaceOf(ctx context.Context) string {
	if v := metadata.ValueFromIncomingContext(ctx, "containerd-namespace"); len(v) > 0 {
		return v[0]
	}
	return ""
}

// countingListener counts the connections a runtime accepted.
type countingListener struct {
	net.Listener
	n *atomic.Int64
}

func (l countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.n.Add(1)
	}
	return c, err
}

// startSlowRuntime serves a slowRuntime on sock (made if ""), with nss namespaces, until the test ends or stop.
func startSlowRuntime(t *testing.T, sock string, nss []string, names map[string]string) (*slowRuntime, string) {
	t.Helper()
	var l net.Listener
	if sock == "" {
		sock, l = listenUnix(t)
	} else {
		var err error
		l, err = net.Listen("unix", sock)
		require.NoError(t, err)
	}
	s := &slowRuntime{nss: nss, names: names, arrived: make(chan struct{}, 1)}
	s.srv = grpc.NewServer()
	runtimeapi.RegisterRuntimeServiceServer(s.srv, criService{slowRuntime: s})
	containers.RegisterContainersServer(s.srv, containersService{slowRuntime: s})
	namespaces.RegisterNamespacesServer(s.srv, namespacesService{slowRuntime: s})
	served := make(chan struct{})
	go func() { s.srv.Serve(countingListener{l, &s.accepts}); close(served) }()
	t.Cleanup(func() { s.srv.Stop(); <-served })
	return s, sock
}

// slowDocker is a Docker Engine API that knows no container and answers each request after delay.
func slowDocker(t *testing.T, delay time.Duration) string {
	return fakeDocker(t, delay, "")
}

// fakeDocker is a Docker Engine API that answers each request after delay: every container is named name, or
// unknown where name is "".
func fakeDocker(t *testing.T, delay time.Duration, name string) string {
	t.Helper()
	sock, l := listenUnix(t)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-time.After(delay):
		case <-r.Context().Done():
			return
		}
		w.Header().Set("Api-Version", "1.51")
		w.Header().Set("Content-Type", "application/json")
		if strings.HasSuffix(r.URL.Path, "/_ping") {
			fmt.Fprint(w, "OK")
			return
		}
		if name != "" {
			b, _ := json.Marshal(map[string]string{"Id": idA, "Name": name})
			w.Write(b)
			return
		}
		w.WriteHeader(http.StatusNotFound)
		fmt.Fprint(w, `{"message":"No such container"}`)
	})}
	served := make(chan struct{})
	go func() { srv.Serve(l); close(served) }()
	t.Cleanup(func() { srv.Close(); <-served })
	return "unix://" + sock
}

// noLeaks checks, after everything else the test made is stopped, that no goroutine it started is left.
func noLeaks(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, ignore) })
}

// namespaceNames returns n namespace names, "ns-0" …
func namespaceNames(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("ns-%d", i)
	}
	return out
}

// One Identify of a container no source knows, on a host where the Docker Engine, the CRI and containerd's own API
// each answer just inside the request timeout: the process poll (every 500 ms) is held up by at most about one
// timeout, not one per source; the names, when they come, are kept.
func TestIdentifyBoundedWhenEverySourceIsSlow(t *testing.T) {
	const timeout = 300 * time.Millisecond
	named := randomHex(32)
	rt, sock := startSlowRuntime(t, "", namespaceNames(3), map[string]string{named: "train-9"})
	// Each source's requests fit in its own timeout: Docker one request, the CRI two (Version, ContainerStatus),
	// containerd's API four (List, Get in three namespaces).
	rt.delay.Store(int64(timeout / 5))
	docker := slowDocker(t, timeout*4/5)

	proc := filepath.Join(t.TempDir(), "proc")
	unknown := randomHex(32)
	fakeProc(t, proc, 4242, 1000, "python3", "0::/default/"+unknown+"\n") // a path that names no runtime
	fakeProc(t, proc, 4343, 1000, "python3", "0::/default/"+named+"\n")
	empty := t.TempDir()
	var buf testutil.LogBuffer
	r := procmap.New(procmap.Options{ProcRoot: proc, DockerHost: docker, CRISocket: sock, PodLogDir: empty,
		ContainerLogDir: empty, Timeout: timeout, Log: slog.New(slog.NewTextHandler(&buf, nil))})
	defer r.Close()

	start := time.Now()
	got := r.Identify(4242)
	took := time.Since(start)
	t.Logf("one Identify with every source slow (timeout %s): %s", timeout, took)
	assert.Equal(t, trace.ProcessIdentity{Command: "python3", ContainerID: unknown}, got)
	assert.Less(t, took, timeout*3/2, "one Identify waits about one timeout, not one per source")

	// The named container: its lookup also outlasts the wait; the name arrives by a later poll.
	start = time.Now()
	got = r.Identify(4343)
	assert.Less(t, time.Since(start), timeout*3/2)
	assert.Equal(t, named, got.ContainerID)
	deadline := time.Now().Add(10 * timeout)
	for got.ContainerName == "" && time.Now().Before(deadline) {
		time.Sleep(timeout / 10) // the poll's cadence, scaled down
		got = r.Identify(4343)
	}
	assert.Equal(t, trace.ProcessIdentity{Command: "python3", Runtime: "containerd", ContainerID: named,
		ContainerName: "train-9"}, got)
	assert.NotContains(t, buf.String(), "not answering", "a slow runtime that answers is not a failed one")
}

// containerd with many namespaces, each request quick but not instant (a loaded daemon): looking a nerdctl
// container up in the last of them still fits one timeout, and no namespace is skipped.
func TestIdentifyManyNamespaces(t *testing.T) {
	const timeout = 300 * time.Millisecond
	named := randomHex(32)
	rt, sock := startSlowRuntime(t, "", namespaceNames(64), map[string]string{named: "bench-64"})
	rt.delay.Store(int64(15 * time.Millisecond)) // 64 in a row: about a second
	proc := filepath.Join(t.TempDir(), "proc")
	fakeProc(t, proc, 4242, 1000, "python3", "0::/default/"+named+"\n")
	empty := t.TempDir()
	var buf testutil.LogBuffer
	r := procmap.New(procmap.Options{ProcRoot: proc, DockerHost: "none", CRISocket: sock, PodLogDir: empty,
		ContainerLogDir: empty, Timeout: timeout, Log: slog.New(slog.NewTextHandler(&buf, nil))})
	defer r.Close()
	got := r.Identify(4242)
	deadline := time.Now().Add(10 * timeout)
	for got.ContainerName == "" && time.Now().Before(deadline) {
		time.Sleep(timeout / 10)
		got = r.Identify(4242)
	}
	assert.Equal(t, "bench-64", got.ContainerName)
	assert.NotContains(t, buf.String(), "not answering")
}

// Identify from several goroutines at once (one per GPU's poll), over many containers of one runtime: every
// container is named (names computed here, not by the resolver), each is asked about about once, and once the
// resolver is closed no goroutine or connection of it is left.
func TestIdentifyConcurrentAndClose(t *testing.T) {
	noLeaks(t)
	const n = 200
	names := map[string]string{}
	ids := make([]string, n)
	proc := filepath.Join(t.TempDir(), "proc")
	for i := range ids {
		ids[i] = randomHex(32)
		names[ids[i]] = fmt.Sprintf("c-%03d", i)
		fakeProc(t, proc, 1000+i, uint64(i), "worker", "0::/system.slice/nerdctl-"+ids[i]+".scope\n")
	}
	rt, sock := startSlowRuntime(t, "", []string{"default"}, names)
	rt.delay.Store(int64(time.Millisecond))
	empty := t.TempDir()
	r := procmap.New(procmap.Options{ProcRoot: proc, DockerHost: "none", CRISocket: sock, PodLogDir: empty,
		ContainerLogDir: empty, Timeout: 5 * time.Second})
	var wg sync.WaitGroup
	got := make([][]trace.ProcessIdentity, 4)
	for g := range got {
		got[g] = make([]trace.ProcessIdentity, n)
		wg.Go(func() {
			for i := range n {
				got[g][i] = r.Identify(uint32(1000 + i))
			}
		})
	}
	wg.Wait()
	for g := range got {
		for i := range n {
			assert.Equal(t, fmt.Sprintf("c-%03d", i), got[g][i].ContainerName, "goroutine %d, process %d", g, i)
		}
	}
	// Version once, then per container ContainerStatus and Get (and a List or two): about 3 per container, more
	// only where two goroutines asked at the same moment.
	t.Logf("requests for %d containers from 4 goroutines: %d", n, rt.requests.Load())
	assert.Less(t, rt.requests.Load(), int64(4*n))
	require.NoError(t, r.Close())
}

// Close while a lookup waits on a hung runtime: Close returns at once, the lookup ends, nothing is logged as the
// runtime's failure, and an Identify after Close asks no runtime (no connection is made again to leak).
func TestCloseDuringLookup(t *testing.T) {
	noLeaks(t)
	rt, sock := startSlowRuntime(t, "", []string{"default"}, nil)
	rt.delay.Store(int64(time.Hour))
	proc := filepath.Join(t.TempDir(), "proc")
	fakeProc(t, proc, 4242, 1000, "python3", "0::/default/"+idB+"\n")
	fakeProc(t, proc, 4343, 1000, "python3", "0::/default/"+idC+"\n")
	empty := t.TempDir()
	var buf testutil.LogBuffer
	r := procmap.New(procmap.Options{ProcRoot: proc, DockerHost: "none", CRISocket: sock, PodLogDir: empty,
		ContainerLogDir: empty, Timeout: 10 * time.Second, Log: slog.New(slog.NewTextHandler(&buf, nil))})
	done := make(chan trace.ProcessIdentity)
	go func() { done <- r.Identify(4242) }()
	<-rt.arrived // the lookup is in flight
	start := time.Now()
	require.NoError(t, r.Close())
	assert.Equal(t, trace.ProcessIdentity{Command: "python3", ContainerID: idB}, <-done)
	assert.Less(t, time.Since(start), time.Second, "Close ends the lookup in flight")
	accepts := rt.accepts.Load()
	assert.Equal(t, trace.ProcessIdentity{Command: "python3", ContainerID: idC}, r.Identify(4343))
	assert.Equal(t, accepts, rt.accepts.Load(), "no connection after Close")
	assert.NotContains(t, buf.String(), "not answering", "closing is no failure of the runtime")
}

// The runtime restarts: its socket file is removed and made again by a new process, which knows a container the
// old one did not. A container that appears after the restart is named; the runtime is asked again.
func TestRuntimeRestart(t *testing.T) {
	a, b := randomHex(32), randomHex(32)
	dir, err := os.MkdirTemp("", "lem-sock-")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "containerd.sock")
	old, _ := startSlowRuntime(t, sock, []string{"default"}, map[string]string{a: "before"})
	proc := filepath.Join(t.TempDir(), "proc")
	fakeProc(t, proc, 4242, 1000, "python3", "0::/default/"+a+"\n")
	fakeProc(t, proc, 4343, 1000, "python3", "0::/default/"+b+"\n")
	empty := t.TempDir()
	r := procmap.New(procmap.Options{ProcRoot: proc, DockerHost: "none", CRISocket: sock, PodLogDir: empty,
		ContainerLogDir: empty, Timeout: 2 * time.Second})
	defer r.Close()
	assert.Equal(t, "before", r.Identify(4242).ContainerName)
	old.srv.Stop()
	os.Remove(sock)
	startSlowRuntime(t, sock, []string{"default"}, map[string]string{a: "before", b: "after"})
	assert.Equal(t, "after", r.Identify(4343).ContainerName)
}

// Names reach traces and labels as valid text of bounded length, wherever they come from: a process's command
// (any process may set its own to any 15 bytes) and an Engine's container name (one DOCKER_HOST points at may
// answer anything).
func TestHostileNames(t *testing.T) {
	proc := filepath.Join(t.TempDir(), "proc")
	fakeProc(t, proc, 4242, 1000, "\xff\x1b[31mevil", "0::/docker/"+idA+"\n")
	long := strings.Repeat("z", 1<<20)
	docker := fakeDocker(t, 0, "/a\x07\xfeb"+long)
	r := procmap.New(procmap.Options{ProcRoot: proc, DockerHost: docker, CRISocket: "none", Timeout: 5 * time.Second})
	defer r.Close()
	got := r.Identify(4242)
	assert.Equal(t, "\uFFFD[31mevil", got.Command)
	assert.Equal(t, "a\uFFFDb"+long[:253-5], got.ContainerName, "cut to 253 bytes")
}
