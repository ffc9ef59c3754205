package procmap

import (
	"context"
	"fmt"
	"os"
	"strings"
	"syscall"
	"time"
	"unicode/utf8"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/lem-energy/lem/internal/trace"
)

// EnvCRISocket is the environment variable naming the CRI runtime's socket where Options.CRISocket is empty (as
// DOCKER_HOST names the Docker Engine): crictl's, a path or a unix:// URL.
const EnvCRISocket = "CONTAINER_RUNTIME_ENDPOINT"

// DefaultCRISockets are the CRI runtimes' sockets tried in order where Options.CRISocket is empty: containerd's
// (its CRI plugin serves the CRI on its main socket), then CRI-O's.
var DefaultCRISockets = []string{"/run/containerd/containerd.sock", "/run/crio/crio.sock"}

// The labels the kubelet gives every container it asks a CRI runtime for.
const (
	labelPodName       = "io.kubernetes.pod.name"
	labelPodNamespace  = "io.kubernetes.pod.namespace"
	labelPodUID        = "io.kubernetes.pod.uid"
	labelContainerName = "io.kubernetes.container.name"
)

// maxName bounds a name taken from a runtime's answer before it reaches a trace or a metric label: the runtime
// hands back whatever labels the container's creator set. 253 is the longest Kubernetes object name.
const maxName = 253

// criContainer is what a CRI runtime, or containerd's own API, says of a container; the zero value once asked and
// unknown.
type criContainer struct {
	found                        bool // the runtime knows the container (it may still have no name)
	name, pod, namespace, podUID string
	runtime                      string // procmap's name of the runtime that answered
}

// criName asks the CRI runtime for a container's name and pod, once per container, and containerd's own API for
// a container its CRI does not know; the zero criContainer where there is no runtime or neither knows the
// container. complete is false while a runtime that may be there is not answering (then the container is asked
// about again later).
func (r *Resolver) criName(cid string) (c criContainer, complete bool) {
	r.mu.Lock()
	if c, found := r.cri[cid]; found {
		r.mu.Unlock()
		return c, true
	}
	rt, runtimeName := r.criClient()
	conn := r.criConn
	r.mu.Unlock()
	if rt == nil {
		return criContainer{}, r.opts.CRISocket == "none"
	}
	ctx, cancel := context.WithTimeout(r.ctx, r.opts.Timeout)
	defer cancel()
	if runtimeName == "" {
		v, err := again(ctx, func(o ...grpc.CallOption) (*runtimeapi.VersionResponse, error) {
			return rt.Version(ctx, &runtimeapi.VersionRequest{}, o...)
		})
		switch {
		case err == nil:
			runtimeName = runtimeOf(v.GetRuntimeName())
		case status.Code(err) == codes.Unimplemented:
			// No CRI here: containerd's own API may answer (below); a socket that serves neither is no runtime's.
			runtimeName = containerdOnly
		default:
			r.criFailed(err)
			return criContainer{}, false
		}
	}
	var err error
	if runtimeName != containerdOnly {
		var st *runtimeapi.ContainerStatusResponse
		st, err = again(ctx, func(o ...grpc.CallOption) (*runtimeapi.ContainerStatusResponse, error) {
			return rt.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: cid}, o...)
		})
		if err == nil {
			c = containerOf(st.GetStatus())
			c.runtime = runtimeName
		}
	}
	if runtimeName == containerdOnly || runtimeName == RuntimeContainerd && status.Code(err) == codes.NotFound {
		// nerdctl's and ctr's containers are containerd's but not the CRI's.
		c, err = r.containerdName(conn, cid)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case err == nil:
	case status.Code(err) == codes.NotFound:
		// Another runtime's container, one not made through the CRI, or gone: asked once.
	case r.closed:
		return criContainer{}, false
	default:
		r.criDownLocked(err)
		return criContainer{}, false
	}
	r.criRuntime = runtimeName
	if r.criWarned {
		r.criWarned = false
		r.log.Info("CRI runtime answering again", "socket", r.criSocket)
	}
	if len(r.cri) >= maxCached {
		clear(r.cri)
	}
	r.cri[cid] = c
	return c, true
}

// containerOf reads a CRI container status: the kubelet's labels where it made the container, else the
// container's own metadata name. Every value is bounded.
func containerOf(s *runtimeapi.ContainerStatus) criContainer {
	c := criContainer{found: true}
	c.name, c.pod, c.namespace, c.podUID = kubeLabels(s.GetLabels())
	if c.name == "" {
		c.name = bound(s.GetMetadata().GetName())
	}
	return c
}

// kubeLabels reads the labels the kubelet gives a container, each bounded; a pod UID of no known form is left
// out.
func kubeLabels(l map[string]string) (name, pod, namespace, podUID string) {
	if uid := l[labelPodUID]; isUUID(uid) || isHex(uid, 32) {
		podUID = uid
	}
	return bound(l[labelContainerName]), bound(l[labelPodName]), bound(l[labelPodNamespace]), podUID
}

// bound cuts s to maxName bytes on a rune boundary and replaces invalid UTF-8 and control characters.
func bound(s string) string {
	s = strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f {
			return -1
		}
		return r
	}, strings.ToValidUTF8(s, "\uFFFD"))
	if len(s) <= maxName {
		return s
	}
	i := maxName
	for i > 0 && !utf8.RuneStart(s[i]) {
		i--
	}
	return s[:i]
}

// runtimeOf maps the CRI's runtime name to procmap's.
func runtimeOf(name string) string {
	switch strings.ToLower(name) {
	case "containerd":
		return RuntimeContainerd
	case "cri-o":
		return RuntimeCRIO
	default:
		return bound(strings.ToLower(name))
	}
}

// again makes a request, and once more where the runtime's connection was gone (it restarted, its socket made
// anew): the second waits for gRPC to connect again, as long as ctx allows.
func again[T any](ctx context.Context, call func(...grpc.CallOption) (T, error)) (T, error) {
	v, err := call()
	if status.Code(err) == codes.Unavailable && ctx.Err() == nil {
		return call(grpc.WaitForReady(true))
	}
	return v, err
}

// criFailed records that the runtime did not answer.
func (r *Resolver) criFailed(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.closed {
		r.criDownLocked(err)
	}
}

// criDownLocked leaves the runtime alone for retryAfter, logging once until it answers again, and drops the
// connection: the next try dials afresh (no reconnection backoff grown over a long outage) and asks the runtime's
// name again (the socket may serve another runtime, or containerd with its CRI plugin turned on or off). r.mu is
// held.
func (r *Resolver) criDownLocked(err error) {
	r.criDown = time.Now()
	if r.criConn != nil {
		r.criConn.Close() // lookups still on it fail at once, as they would have
		r.criConn, r.criRT, r.criRuntime = nil, nil, ""
	}
	if !r.criWarned {
		r.criWarned = true
		r.log.Warn("CRI runtime not answering; container names from it left out, asked again in a minute",
			"socket", r.criSocket, "err", err)
	}
}

// criClient returns the CRI client, made on first use, and the runtime's name where known; nil where no runtime
// is configured or readable, or it recently failed. r.mu is held.
func (r *Resolver) criClient() (runtimeapi.RuntimeServiceClient, string) {
	if r.closed || r.opts.CRISocket == "none" || (!r.criDown.IsZero() && time.Since(r.criDown) < retryAfter) {
		return nil, ""
	}
	if r.criRT != nil {
		return r.criRT, r.criRuntime
	}
	path := r.opts.CRISocket
	if path == "" {
		path = os.Getenv(EnvCRISocket)
	}
	if path == "" {
		for _, p := range DefaultCRISockets {
			// Connecting to a unix socket needs write permission on it.
			if syscall.Access(p, 0o6) == nil {
				path = p
				break
			}
		}
		if path == "" {
			r.criDown = time.Now() // no runtime here: look again in a minute
			return nil, ""
		}
	}
	path = strings.TrimPrefix(path, "unix://")
	// Lazy: nothing is dialled until the first request, which the request timeout bounds.
	conn, err := grpc.NewClient("unix://"+path, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		r.criSocket = path
		r.criDownLocked(fmt.Errorf("CRI socket %s: %w", path, err))
		return nil, ""
	}
	r.criSocket, r.criConn, r.criRT = path, conn, runtimeapi.NewRuntimeServiceClient(conn)
	return r.criRT, r.criRuntime
}

// fillCRI sets the names a CRI runtime (or containerd's own API) knows of id's container: they win over the
// kubelet's log directories (the runtime holds the labels the kubelet gave the container; a log link may be
// stale). known says whether the runtime knew the container, named or not; complete is criName's.
func (r *Resolver) fillCRI(id *trace.ProcessIdentity) (known, complete bool) {
	c, complete := r.criName(id.ContainerID)
	if !c.found {
		return false, complete
	}
	if c.name != "" {
		id.ContainerName = c.name
	}
	if c.pod != "" {
		id.PodName, id.PodNamespace = c.pod, c.namespace
	}
	if id.PodUID == "" {
		id.PodUID = c.podUID
	}
	if id.Runtime == "" {
		id.Runtime = c.runtime
	}
	return true, complete
}
