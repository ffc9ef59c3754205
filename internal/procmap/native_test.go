package procmap_test

import (
	"log/slog"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/lem-energy/lem/internal/procmap"
	"github.com/lem-energy/lem/internal/testutil"
	"github.com/lem-energy/lem/internal/trace"
)

// Containers a real containerd runs outside the CRI, as nerdctl and ctr run them, in namespaces other than the
// CRI's: the resolver names them from containerd's own API (nerdctl's label, else the kubelet's labels, else no
// name), in a namespace made after it last listed them too, while a pod's container on the same daemon keeps the
// names the CRI gives it.
func TestResolverContainerdOutsideCRI(t *testing.T) {
	c := startContainerd(t, true)
	c.importImage(t, "default")
	named, bare := randomHex(32), randomHex(32)
	namedPID := c.runCtr(t, "default", named, map[string]string{"nerdctl/name": "bench-llama", "other": "x"})
	barePID := c.runCtr(t, "default", bare, nil)

	empty := t.TempDir()
	var buf testutil.LogBuffer
	r := procmap.New(procmap.Options{DockerHost: "none", CRISocket: c.sock, PodLogDir: empty, ContainerLogDir: empty,
		Log: slog.New(slog.NewTextHandler(&buf, nil))})
	defer r.Close()
	assert.Equal(t, trace.ProcessIdentity{Command: "sleeper", Runtime: "containerd", ContainerID: named,
		ContainerName: "bench-llama"}, r.Identify(namedPID))
	assert.Equal(t, trace.ProcessIdentity{Command: "sleeper", Runtime: "containerd", ContainerID: bare},
		r.Identify(barePID), "an ID alone is no name")

	// A namespace made after the resolver listed them; the container carries the kubelet's labels only.
	c.importImage(t, "lab")
	kube, uid := randomHex(32), randomUUID()
	kubePID := c.runCtr(t, "lab", kube, map[string]string{"io.kubernetes.container.name": "server",
		"io.kubernetes.pod.name": "vllm-0", "io.kubernetes.pod.namespace": "llm", "io.kubernetes.pod.uid": uid})
	assert.Equal(t, trace.ProcessIdentity{Command: "sleeper", Runtime: "containerd", ContainerID: kube,
		ContainerName: "server", PodUID: uid, PodNamespace: "llm", PodName: "vllm-0"}, r.Identify(kubePID))

	// nerdctl's name wins over the kubelet's labels, cleaned of control characters and cut to 253 bytes.
	long := strings.Repeat("y", 300)
	hostile := randomHex(32)
	hostilePID := c.runCtr(t, "lab", hostile, map[string]string{"nerdctl/name": "a\x1bb" + long,
		"io.kubernetes.container.name": "server", "io.kubernetes.pod.name": "vllm-1"})
	assert.Equal(t, trace.ProcessIdentity{Command: "sleeper", Runtime: "containerd", ContainerID: hostile,
		ContainerName: "ab" + long[:251]}, r.Identify(hostilePID))

	// A pod's container on the same daemon: the CRI's names.
	p := &pod{name: "vllm-" + randomHex(3), namespace: "llm", uid: randomUUID(), container: "server"}
	c.runPod(t, p)
	assert.Equal(t, trace.ProcessIdentity{Command: "sleeper", Runtime: "containerd", ContainerID: p.containerID,
		ContainerName: "server", PodUID: p.uid, PodNamespace: "llm", PodName: p.name}, r.Identify(c.pid(t, p.containerID)))
	assert.Empty(t, buf.String(), "nothing to complain of")
}

// A containerd that does not serve the CRI (its CRI plugin off, as on a host with nerdctl and no Kubernetes): its
// own API names its containers; one it does not know keeps its ID, and nothing is logged.
func TestResolverContainerdWithoutCRI(t *testing.T) {
	c := startContainerd(t, false)
	c.importImage(t, "default")
	id := randomHex(32)
	pid := c.runCtr(t, "default", id, map[string]string{"nerdctl/name": "train-7"})

	proc := filepath.Join(t.TempDir(), "proc")
	fakeProc(t, proc, 4242, 1000, "python3", "0::/default/"+idC+"\n")
	empty := t.TempDir()
	var buf testutil.LogBuffer
	log := slog.New(slog.NewTextHandler(&buf, nil))
	r := procmap.New(procmap.Options{DockerHost: "none", CRISocket: "unix://" + c.sock, PodLogDir: empty,
		ContainerLogDir: empty, Log: log})
	defer r.Close()
	assert.Equal(t, trace.ProcessIdentity{Command: "sleeper", Runtime: "containerd", ContainerID: id,
		ContainerName: "train-7"}, r.Identify(pid))
	unknown := procmap.New(procmap.Options{ProcRoot: proc, DockerHost: "none", CRISocket: c.sock, PodLogDir: empty,
		ContainerLogDir: empty, Log: log})
	defer unknown.Close()
	assert.Equal(t, trace.ProcessIdentity{Command: "python3", ContainerID: idC}, unknown.Identify(4242))
	assert.Empty(t, buf.String(), "nothing to complain of")
}
