package procmap_test

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	namespaces "github.com/containerd/containerd/api/services/namespaces/v1"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/lem-energy/lem/internal/testenv"
	"github.com/lem-energy/lem/internal/testutil"
)

// criImage is the FROM-scratch image around testdata/sleeper that the private containerd runs, as pod sandbox
// ("pause") and as container: no image can be pulled here.
const criImage = "lem.test/procmap-sleeper:1"

// containerd is a private containerd, with its CRI plugin or without, its own root, state and socket under a
// temporary directory: nothing of the host's containerd (or Docker's) is touched.
type containerd struct {
	sock  string
	ctr   string                          // the ctr command
	image string                          // criImage as an OCI archive, for ctr images import
	rt    runtimeapi.RuntimeServiceClient // nil without the CRI
}

// startContainerd starts the daemon (serving the CRI where cri is set: then criImage is imported into its k8s.io
// namespace) and returns a client. The daemon and every pod and container the test made are gone after the test.
func startContainerd(t *testing.T, cri bool) *containerd {
	t.Helper()
	bin := testenv.Tool(t, "containerd", "containerd")
	ctr := testenv.Tool(t, "ctr", "containerd")
	testenv.Tool(t, "runc", "runc")
	testenv.Tool(t, "containerd-shim-runc-v2", "containerd")
	if os.Geteuid() != 0 {
		testutil.SkipOrFail(t, "containerd needs root")
	}
	// A short directory: a unix socket's path has at most 108 bytes.
	dir, err := os.MkdirTemp("", "lem-ctrd-")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "containerd.sock")
	disabled := ""
	if !cri {
		disabled = `, "io.containerd.grpc.v1.cri"`
	}
	cfg := fmt.Sprintf(`version = 2
root = %[1]q
state = %[2]q
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs", "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing"%[8]s]
[grpc]
  address = %[3]q
[ttrpc]
  address = %[4]q
[plugins."io.containerd.internal.v1.opt"]
  path = %[5]q
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %[6]q
  enable_selinux = false
  disable_apparmor = true
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "native"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = %[7]q
    conf_dir = %[7]q
`, filepath.Join(dir, "root"), filepath.Join(dir, "state"), sock, sock+".ttrpc", filepath.Join(dir, "opt"),
		criImage, filepath.Join(dir, "cni"), disabled)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "config.toml"), []byte(cfg), 0o644))
	logf, err := os.Create(filepath.Join(dir, "containerd.log"))
	require.NoError(t, err)
	cmd := exec.Command(bin, "--config", filepath.Join(dir, "config.toml"))
	cmd.Stdout, cmd.Stderr = logf, logf
	require.NoError(t, cmd.Start())
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait(); logf.Close() }()
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(dir, "containerd.log"))
			t.Logf("containerd log:\n%s", tail(b, 4000))
		}
	})

	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	c := &containerd{sock: sock, ctr: ctr, image: filepath.Join(dir, "image.tar")}
	// Ready once it answers; WaitForReady rides out the socket not being there yet.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, err = namespaces.NewNamespacesClient(conn).List(ctx, &namespaces.ListNamespacesRequest{}, grpc.WaitForReady(true))
	require.NoError(t, err, "containerd did not answer")
	require.NoError(t, os.WriteFile(c.image, imageArchive(t), 0o644))
	if cri {
		c.rt = runtimeapi.NewRuntimeServiceClient(conn)
		_, err = c.rt.Version(ctx, &runtimeapi.VersionRequest{})
		require.NoError(t, err, "containerd's CRI did not answer")
		c.importImage(t, "k8s.io")
	}
	return c
}

// importImage imports criImage into a containerd namespace.
func (c *containerd) importImage(t *testing.T, ns string) {
	t.Helper()
	c.run(t, "-n", ns, "images", "import", "--snapshotter", "native", c.image)
}

// run runs ctr against the daemon and returns its output.
func (c *containerd) run(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command(c.ctr, append([]string{"--address", c.sock}, args...)...).CombinedOutput()
	require.NoError(t, err, "ctr %v: %s", args, out)
	return string(out)
}

// runCtr runs criImage as container id in namespace ns, as `ctr run` (or nerdctl) does, outside the CRI, with the
// labels given; it returns the host PID of the container's process. The container is removed after the test.
func (c *containerd) runCtr(t *testing.T, ns, id string, labels map[string]string) uint32 {
	t.Helper()
	args := []string{"-n", ns, "run", "-d", "--snapshotter", "native"}
	for k, v := range labels {
		args = append(args, "--label", k+"="+v)
	}
	c.run(t, append(args, criImage, id)...)
	t.Cleanup(func() {
		for _, args := range [][]string{{"task", "delete", "--force", id}, {"containers", "delete", id}} {
			if out, err := exec.Command(c.ctr, append([]string{"--address", c.sock, "-n", ns}, args...)...).CombinedOutput(); err != nil {
				t.Errorf("ctr %v: %v: %s", args, err, out)
			}
		}
	})
	// "TASK PID STATUS" rows.
	for _, line := range strings.Split(c.run(t, "-n", ns, "tasks", "list"), "\n") {
		if f := strings.Fields(line); len(f) == 3 && f[0] == id {
			pid, err := strconv.ParseUint(f[1], 10, 32)
			require.NoError(t, err, "ctr tasks list: %q", line)
			require.NotZero(t, pid, "the container's process runs")
			waitExec(t, uint32(pid))
			return uint32(pid)
		}
	}
	t.Fatalf("container %s has no task", id)
	return 0
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

// image is criImage's archive, built once per test binary (building the sleeper costs a second or more).
var image struct {
	sync.Mutex
	archive []byte
}

// imageArchive returns criImage as an OCI image archive: one layer holding the static sleeper binary.
func imageArchive(t *testing.T) []byte {
	t.Helper()
	image.Lock()
	defer image.Unlock()
	if image.archive == nil {
		image.archive = buildImage(t)
	}
	return image.archive
}

func buildImage(t *testing.T) []byte {
	t.Helper()
	dir := t.TempDir()
	build := exec.Command("go", "build", "-o", filepath.Join(dir, "sleeper"), "./testdata/sleeper")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	out, err := build.CombinedOutput()
	require.NoError(t, err, "%s", out)
	bin, err := os.ReadFile(filepath.Join(dir, "sleeper"))
	require.NoError(t, err)

	var layer bytes.Buffer
	lw := tar.NewWriter(&layer)
	require.NoError(t, lw.WriteHeader(&tar.Header{Name: "sleeper", Mode: 0o755, Size: int64(len(bin)), Typeflag: tar.TypeReg}))
	_, err = lw.Write(bin)
	require.NoError(t, err)
	require.NoError(t, lw.Close())

	blobs := map[string][]byte{}
	desc := func(mediaType string, b []byte) map[string]any {
		sum := sha256.Sum256(b)
		d := "sha256:" + hex.EncodeToString(sum[:])
		blobs[hex.EncodeToString(sum[:])] = b
		return map[string]any{"mediaType": mediaType, "digest": d, "size": len(b)}
	}
	js := func(v any) []byte {
		b, err := json.Marshal(v)
		require.NoError(t, err)
		return b
	}
	layerSum := sha256.Sum256(layer.Bytes())
	config := js(map[string]any{
		"architecture": runtime.GOARCH, "os": "linux",
		"config": map[string]any{"Entrypoint": []string{"/sleeper"}},
		"rootfs": map[string]any{"type": "layers", "diff_ids": []string{"sha256:" + hex.EncodeToString(layerSum[:])}},
	})
	manifest := js(map[string]any{
		"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
		"config": desc("application/vnd.oci.image.config.v1+json", config),
		"layers": []any{desc("application/vnd.oci.image.layer.v1.tar", layer.Bytes())},
	})
	md := desc("application/vnd.oci.image.manifest.v1+json", manifest)
	md["platform"] = map[string]string{"architecture": runtime.GOARCH, "os": "linux"}
	md["annotations"] = map[string]string{"io.containerd.image.name": criImage}
	index := js(map[string]any{"schemaVersion": 2, "manifests": []any{md}})

	var f bytes.Buffer
	tw := tar.NewWriter(&f)
	add := func(name string, b []byte) {
		require.NoError(t, tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(b)), Typeflag: tar.TypeReg}))
		_, err := tw.Write(b)
		require.NoError(t, err)
	}
	add("oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`))
	add("index.json", index)
	for sum, b := range blobs {
		add("blobs/sha256/"+sum, b)
	}
	require.NoError(t, tw.Close())
	return f.Bytes()
}

// waitExec waits until the container's process is the sleeper: ctr and the CRI return once the task started, which
// may be before runc's init has exec'd it (seen on a loaded host), and the resolver reads the command once per
// process. Nothing signals the exec:
// /proc is polled.
func waitExec(t *testing.T, pid uint32) {
	t.Helper()
	comm := filepath.Join("/proc", strconv.FormatUint(uint64(pid), 10), "comm")
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, err := os.ReadFile(comm)
		require.NoError(t, err, "the container's process is gone")
		if strings.TrimSpace(string(b)) == "sleeper" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("process %d is still %q", pid, strings.TrimSpace(string(b)))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// pod is a CRI pod sandbox with one running container, made as the kubelet makes them (its labels included).
type pod struct {
	name, namespace, uid, container string
	sandboxID, containerID          string
}

// runPod makes the sandbox (host network: no CNI needed) under the kubelet's cgroupfs parent for its UID, and
// starts its container; both are removed after the test.
func (c *containerd) runPod(t *testing.T, p *pod) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sbCfg := &runtimeapi.PodSandboxConfig{
		Metadata: &runtimeapi.PodSandboxMetadata{Name: p.name, Namespace: p.namespace, Uid: p.uid},
		Labels: map[string]string{"io.kubernetes.pod.name": p.name, "io.kubernetes.pod.namespace": p.namespace,
			"io.kubernetes.pod.uid": p.uid},
		Linux: &runtimeapi.LinuxPodSandboxConfig{
			CgroupParent: "/kubepods/besteffort/pod" + p.uid,
			SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{
				NamespaceOptions: &runtimeapi.NamespaceOption{Network: runtimeapi.NamespaceMode_NODE},
			},
		},
	}
	sb, err := c.rt.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: sbCfg})
	require.NoError(t, err, "RunPodSandbox")
	p.sandboxID = sb.PodSandboxId
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		_, err := c.rt.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: p.sandboxID})
		if err == nil {
			_, err = c.rt.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: p.sandboxID})
		}
		if err != nil {
			t.Errorf("removing pod %s: %v", p.name, err)
		}
		// The kubelet removes a pod's cgroup, not the runtime: so does the test (empty now, on v1 or v2).
		dirs, _ := filepath.Glob("/sys/fs/cgroup/*/kubepods/besteffort/pod" + p.uid)
		for _, d := range append(dirs, "/sys/fs/cgroup/kubepods/besteffort/pod"+p.uid) {
			os.Remove(d)
		}
	})
	ct, err := c.rt.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{
		PodSandboxId: p.sandboxID,
		Config: &runtimeapi.ContainerConfig{
			Metadata: &runtimeapi.ContainerMetadata{Name: p.container},
			Image:    &runtimeapi.ImageSpec{Image: criImage},
			Labels: map[string]string{"io.kubernetes.pod.name": p.name, "io.kubernetes.pod.namespace": p.namespace,
				"io.kubernetes.pod.uid": p.uid, "io.kubernetes.container.name": p.container},
		},
		SandboxConfig: sbCfg,
	})
	require.NoError(t, err, "CreateContainer")
	p.containerID = ct.ContainerId
	_, err = c.rt.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: p.containerID})
	require.NoError(t, err, "StartContainer")
}

// pid is the host PID of a running container's process, from the runtime's verbose status.
func (c *containerd) pid(t *testing.T, containerID string) uint32 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := c.rt.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: containerID, Verbose: true})
	require.NoError(t, err)
	var info struct {
		PID uint32 `json:"pid"`
	}
	require.NoError(t, json.Unmarshal([]byte(st.Info["info"]), &info), "verbose info: %v", st.Info)
	require.NotZero(t, info.PID, "the container's process runs")
	waitExec(t, info.PID)
	return info.PID
}
