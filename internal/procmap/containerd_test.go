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
	"testing"
	"time"

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

// containerd is a private containerd with its CRI plugin, its own root, state and socket under a temporary
// directory: nothing of the host's containerd (or Docker's) is touched.
type containerd struct {
	sock string
	rt   runtimeapi.RuntimeServiceClient
}

// startContainerd starts the daemon, imports criImage into its k8s.io namespace and returns a CRI client. The
// daemon and every pod the test made are gone after the test.
func startContainerd(t *testing.T) *containerd {
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
	cfg := fmt.Sprintf(`version = 2
root = %[1]q
state = %[2]q
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs", "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing"]
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
		criImage, filepath.Join(dir, "cni"))
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
	c := &containerd{sock: sock, rt: runtimeapi.NewRuntimeServiceClient(conn)}
	// Ready once the CRI answers; WaitForReady rides out the socket not being there yet.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, err = c.rt.Version(ctx, &runtimeapi.VersionRequest{}, grpc.WaitForReady(true))
	require.NoError(t, err, "containerd's CRI did not answer")

	tarball := filepath.Join(dir, "image.tar")
	writeImage(t, tarball)
	out, err := exec.Command(ctr, "--address", sock, "-n", "k8s.io", "images", "import", "--snapshotter", "native",
		tarball).CombinedOutput()
	require.NoError(t, err, "ctr images import: %s", out)
	return c
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

// writeImage writes criImage as an OCI image archive: one layer holding the static sleeper binary.
func writeImage(t *testing.T, path string) {
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

	f, err := os.Create(path)
	require.NoError(t, err)
	defer f.Close()
	tw := tar.NewWriter(f)
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
	return info.PID
}
