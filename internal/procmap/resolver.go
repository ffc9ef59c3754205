package procmap

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/client"
	"google.golang.org/grpc"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/lem-energy/lem/internal/trace"
)

// Options say where the host's facts are. Zero values are the usual places.
type Options struct {
	// ProcRoot is the proc filesystem holding the GPU's processes (default /proc). The driver reports PIDs as the
	// host sees them: an exporter in a container needs the host's PID namespace (hostPID in Kubernetes).
	ProcRoot string
	// DockerHost is the Engine to ask for container names: "" for the environment's (DOCKER_HOST, else the local
	// socket) where that socket exists, "none" never to ask.
	DockerHost string
	// CRISocket is the CRI runtime (containerd's CRI plugin, CRI-O) to ask for container and pod names, a path or
	// a unix:// URL; on containerd's, its own API is asked too, for containers made outside the CRI: "" for the environment's (CONTAINER_RUNTIME_ENDPOINT, else the first of DefaultCRISockets this
	// process may connect to), "none" never to ask. Reading it is privileged.
	CRISocket string
	// PodLogDir and ContainerLogDir are the kubelet's log directories (default /var/log/pods and
	// /var/log/containers): their entries name each pod's namespace, name and UID, and each container's name and ID.
	PodLogDir       string
	ContainerLogDir string
	// Timeout bounds one Docker Engine or CRI request, and how long one Identify waits for a container's names
	// (default 500 ms): a lookup runs on the GPU's process poll. Names that take longer come with a later poll.
	Timeout time.Duration
	Log     *slog.Logger
}

// maxCached bounds each cache: past it the cache is dropped and refilled (PIDs are recycled; containers come and
// go).
const maxCached = 4096

// maxFlights bounds the lookups in flight (one per process): past it a process keeps its IDs until a later poll.
const maxFlights = 64

// retryAfter is how long an unreachable Docker Engine or CRI runtime is left alone; reread is how often the kubelet's log
// directories are read again while an ID is missing from them, and how often an identity with a name missing is
// resolved again.
const (
	retryAfter = time.Minute
	reread     = 2 * time.Second
)

// Resolver maps PIDs to identities, caching per process (PID and start time, so a recycled PID is looked up
// again) and per container. It is safe for concurrent use.
type Resolver struct {
	opts Options
	log  *slog.Logger
	// ctx is cancelled by Close: it ends every lookup in flight, and lookups wait for wg.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu         sync.Mutex
	closed     bool
	flights    map[procKey]*flight
	procs      map[procKey]cached
	names      map[string]string // Docker container ID → name ("" once asked and unknown)
	pods       map[string][2]string
	kube       map[string]kubeContainer
	logsReadAt time.Time
	docker     *client.Client
	dockerDown time.Time // when the Engine last failed to answer

	cri        map[string]criContainer // CRI container ID → names (zero once asked and unknown)
	criConn    *grpc.ClientConn
	criRT      runtimeapi.RuntimeServiceClient
	criSocket  string
	criRuntime string    // the CRI runtime's name, once it answered
	criDown    time.Time // when the CRI runtime last failed to answer, or none was found
	criWarned  bool      // its failure was logged, and not since it answered again
	ctrdNS     []string  // containerd's namespaces, when its own API was last asked for them
	ctrdNSAt   time.Time
}

type procKey struct {
	pid   uint32
	start uint64 // clock ticks after boot (/proc/PID/stat field 22)
}

// cached is an identity and whether every name it should have was found (else it is resolved again after reread).
type cached struct {
	id       trace.ProcessIdentity
	complete bool
	at       time.Time
}

type kubeContainer struct{ pod, namespace, name string }

// flight is one process's lookup, which those who ask about the process while it runs wait for.
type flight struct {
	done chan struct{}
	c    cached // set before done is closed
}

// New returns a resolver; nothing is read until the first Identify.
func New(opts Options) *Resolver {
	if opts.ProcRoot == "" {
		opts.ProcRoot = "/proc"
	}
	if opts.PodLogDir == "" {
		opts.PodLogDir = "/var/log/pods"
	}
	if opts.ContainerLogDir == "" {
		opts.ContainerLogDir = "/var/log/containers"
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 500 * time.Millisecond
	}
	log := opts.Log
	if log == nil {
		log = slog.Default()
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Resolver{opts: opts, log: log, ctx: ctx, cancel: cancel, flights: map[procKey]*flight{},
		procs: map[procKey]cached{}, names: map[string]string{}, pods: map[string][2]string{},
		kube: map[string]kubeContainer{}, cri: map[string]criContainer{}}
}

// Close ends the lookups in flight and releases the Docker and CRI clients; later Identify calls ask no runtime.
func (r *Resolver) Close() error {
	r.mu.Lock()
	r.closed = true
	r.mu.Unlock()
	r.cancel()
	r.wg.Wait()
	r.mu.Lock()
	defer r.mu.Unlock()
	var errs []error
	if r.docker != nil {
		errs = append(errs, r.docker.Close())
		r.docker = nil
	}
	if r.criConn != nil {
		errs = append(errs, r.criConn.Close())
		r.criConn, r.criRT = nil, nil
	}
	return errors.Join(errs...)
}

// Identify returns who process pid is. A process that is gone, or not visible in ProcRoot, has an empty identity.
// It waits at most Timeout for the container's names: where the runtimes are slower, the process has its IDs now
// and its names from a later call (the lookup goes on meanwhile), so the GPU's poll is never held up longer.
func (r *Resolver) Identify(pid uint32) trace.ProcessIdentity {
	dir := filepath.Join(r.opts.ProcRoot, strconv.FormatUint(uint64(pid), 10))
	start, ok := startTime(dir)
	if !ok {
		return trace.ProcessIdentity{}
	}
	key := procKey{pid, start}
	r.mu.Lock()
	c, ok := r.procs[key]
	f := r.flights[key]
	r.mu.Unlock()
	if ok && (c.complete || time.Since(c.at) < reread) {
		return c.id
	}
	id, cg, named := own(dir)
	if named {
		r.store(key, cached{id: id, complete: true, at: time.Now()})
		return id
	}
	if f == nil {
		r.mu.Lock()
		if f = r.flights[key]; f == nil {
			if r.closed || len(r.flights) >= maxFlights {
				r.mu.Unlock()
				return id
			}
			f = &flight{done: make(chan struct{})}
			r.flights[key] = f
			r.wg.Add(1)
			go r.lookUp(key, f, id, cg)
		}
		r.mu.Unlock()
	}
	wait := time.NewTimer(r.opts.Timeout)
	defer wait.Stop()
	select {
	case <-f.done:
		return f.c.id
	case <-wait.C:
		return id
	}
}

// lookUp names a process's container and pod and keeps the result, however long after Identify stopped waiting.
func (r *Resolver) lookUp(key procKey, f *flight, id trace.ProcessIdentity, cg Cgroup) {
	defer r.wg.Done()
	complete := r.identify(&id, cg)
	f.c = cached{id: id, complete: complete, at: time.Now()}
	r.mu.Lock()
	delete(r.flights, key)
	r.mu.Unlock()
	r.store(key, f.c)
	close(f.done)
}

// store keeps a process's identity unless the resolver is closed.
func (r *Resolver) store(key procKey, c cached) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return
	}
	if len(r.procs) >= maxCached {
		clear(r.procs)
	}
	r.procs[key] = c
}

// own reads what a process's own files say: its command, and its container and pod IDs from its cgroup. named
// says no name is to be looked up (no container, or one no runtime here names).
func own(dir string) (id trace.ProcessIdentity, cg Cgroup, named bool) {
	if b, err := os.ReadFile(filepath.Join(dir, "comm")); err == nil {
		// Any process may set its command to any 15 bytes: it reaches traces and labels only as valid text.
		id.Command = bound(strings.TrimSpace(string(b)))
	}
	b, err := os.ReadFile(filepath.Join(dir, "cgroup"))
	if err != nil {
		return id, cg, true
	}
	cg = ParseCgroup(b)
	id.Runtime, id.ContainerID, id.PodUID = cg.Runtime, cg.ContainerID, cg.PodUID
	return id, cg, cg.PodUID == "" && (cg.ContainerID == "" || cg.Runtime == RuntimePodman)
}

// identify looks a process's container and pod up; complete is false where a name that should be there was not
// found.
func (r *Resolver) identify(id *trace.ProcessIdentity, cg Cgroup) bool {
	switch {
	case cg.PodUID != "":
		complete := r.kubernetes(id)
		if id.ContainerID != "" && cg.Runtime != RuntimeDocker {
			known, _ := r.fillCRI(id)
			complete = complete || known
		}
		return complete
	case cg.Runtime == RuntimeDocker:
		name, complete := r.dockerName(cg.ContainerID)
		id.ContainerName = name
		return complete
	case cg.Runtime == "":
		// The path does not name the runtime: Docker's if the Engine knows it, else the CRI runtime's.
		name, dockerComplete := r.dockerName(cg.ContainerID)
		if name != "" {
			id.ContainerName = name
			return dockerComplete
		}
		known, complete := r.fillCRI(id)
		return known || complete && dockerComplete
	default: // containerd's or CRI-O's
		known, complete := r.fillCRI(id)
		return known || complete
	}
}

// startTime reads a process's start time, field 22 of /proc/PID/stat.
func startTime(dir string) (uint64, bool) {
	b, err := os.ReadFile(filepath.Join(dir, "stat"))
	if err != nil {
		return 0, false
	}
	return ParseStartTime(b)
}

// ParseStartTime reads the start time from the text of /proc/PID/stat (after the command, which may hold spaces
// and parentheses: the last ")" ends it).
func ParseStartTime(b []byte) (uint64, bool) {
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, false
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 20 { // the state is field 3, the start time field 22
		return 0, false
	}
	v, err := strconv.ParseUint(f[19], 10, 64)
	return v, err == nil
}

// kubernetes fills the pod's namespace and name, and the container's name, from the kubelet's log directories:
// /var/log/pods/<namespace>_<pod>_<uid>/ and /var/log/containers/<pod>_<namespace>_<container>-<id>.log (the
// kubelet makes both before it starts the container). They are read again, at most every reread, while an ID is
// missing. It says whether both were found.
func (r *Resolver) kubernetes(id *trace.ProcessIdentity) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fillKube(id) {
		return true
	}
	if !r.logsReadAt.IsZero() && time.Since(r.logsReadAt) < reread {
		return false
	}
	r.logsReadAt = time.Now()
	if ents, err := os.ReadDir(r.opts.PodLogDir); err == nil {
		if len(r.pods) >= maxCached {
			clear(r.pods)
		}
		for _, e := range ents {
			if ns, name, uid, ok := ParsePodLogDir(e.Name()); ok {
				r.pods[uid] = [2]string{ns, name}
			}
		}
	}
	if ents, err := os.ReadDir(r.opts.ContainerLogDir); err == nil {
		if len(r.kube) >= maxCached {
			clear(r.kube)
		}
		for _, e := range ents {
			if pod, ns, name, cid, ok := ParseContainerLog(e.Name()); ok {
				r.kube[cid] = kubeContainer{pod: pod, namespace: ns, name: name}
			}
		}
	}
	return r.fillKube(id)
}

// fillKube fills id from the caches; r.mu is held.
func (r *Resolver) fillKube(id *trace.ProcessIdentity) bool {
	found := true
	if p, ok := r.pods[id.PodUID]; ok {
		id.PodNamespace, id.PodName = bound(p[0]), bound(p[1])
	} else {
		found = false
	}
	if id.ContainerID != "" {
		if c, ok := r.kube[id.ContainerID]; ok {
			id.ContainerName = bound(c.name)
			if id.PodName == "" { // the pod's directory is not mounted, the container's link names it too
				id.PodNamespace, id.PodName = bound(c.namespace), bound(c.pod)
			}
		} else {
			found = false
		}
	}
	return found
}

// ParsePodLogDir reads a kubelet pod log directory's name: "<namespace>_<pod>_<uid>".
func ParsePodLogDir(name string) (ns, pod, uid string, ok bool) {
	f := strings.Split(name, "_")
	if len(f) != 3 || f[0] == "" || f[1] == "" || !(isUUID(f[2]) || isHex(f[2], 32)) {
		return "", "", "", false
	}
	return f[0], f[1], f[2], true
}

// ParseContainerLog reads a kubelet container log link's name: "<pod>_<namespace>_<container>-<id>.log".
func ParseContainerLog(name string) (pod, ns, container, id string, ok bool) {
	base, found := strings.CutSuffix(name, ".log")
	if !found || len(base) < 66 || base[len(base)-65] != '-' || !isHex(base[len(base)-64:], 64) {
		return "", "", "", "", false
	}
	f := strings.Split(base[:len(base)-65], "_")
	if len(f) != 3 || f[0] == "" || f[1] == "" || f[2] == "" {
		return "", "", "", "", false
	}
	return f[0], f[1], f[2], base[len(base)-64:], true
}

// dockerName asks the Docker Engine for a container's name, once per container; "" where there is no Engine or it
// does not know the container (then it is another runtime's). complete is false while the Engine is not answering.
func (r *Resolver) dockerName(cid string) (name string, complete bool) {
	r.mu.Lock()
	if name, ok := r.names[cid]; ok {
		r.mu.Unlock()
		return name, true
	}
	cli := r.client()
	r.mu.Unlock()
	if cli == nil {
		return "", r.opts.DockerHost == "none"
	}
	ctx, cancel := context.WithTimeout(r.ctx, r.opts.Timeout)
	defer cancel()
	ins, err := cli.ContainerInspect(ctx, cid, client.ContainerInspectOptions{})
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.names) >= maxCached {
		clear(r.names)
	}
	switch {
	case err == nil:
		name = bound(strings.TrimPrefix(ins.Container.Name, "/"))
	case cerrdefs.IsNotFound(err):
		// Another runtime's container, or gone: asked once.
	case r.closed:
		return "", false
	default:
		r.dockerDown = time.Now()
		r.log.Debug("Docker Engine not answering; container names left out for a minute", "err", err)
		return "", false
	}
	r.names[cid] = name
	return name, true
}

// client returns the Docker client, made on first use; nil where no Engine is configured or it recently failed.
// r.mu is held.
func (r *Resolver) client() *client.Client {
	if r.closed || r.opts.DockerHost == "none" || (!r.dockerDown.IsZero() && time.Since(r.dockerDown) < retryAfter) {
		return nil
	}
	if r.docker != nil {
		return r.docker
	}
	opts := []client.Opt{client.FromEnv}
	switch {
	case r.opts.DockerHost != "":
		opts = append(opts, client.WithHost(r.opts.DockerHost))
	case os.Getenv("DOCKER_HOST") == "":
		if _, err := os.Stat("/var/run/docker.sock"); err != nil {
			r.dockerDown = time.Now() // no Engine here: look again in a minute
			return nil
		}
	}
	cli, err := client.New(opts...)
	if err != nil {
		r.dockerDown = time.Now()
		r.log.Debug("no Docker client; container names left out", "err", err)
		return nil
	}
	r.docker = cli
	return cli
}
