package procmap_test

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lem-energy/lem/internal/procmap"
	"github.com/lem-energy/lem/internal/trace"
)

const (
	idA    = "8054a716919473fbde6a1329bf20ac6a0317c6dd1c214c54df94f75f85051c90"
	idB    = "3f5c2a9e1d8b7c6f4e2a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d9e"
	idC    = "c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00"
	podUID = "1b6fd1d8-7c9e-4bde-9f43-2a14d0f5e3a1"
	static = "6a3b1c2d4e5f60718293a4b5c6d7e8f9"
)

// The cgroup files of the layouts lem meets (testdata/cgroup, written from the runtimes' documented paths and, for
// Docker cgroupfs v1 and ctr's cgroupfs v1, copied from this host), and what each says.
func TestParseCgroupLayouts(t *testing.T) {
	for _, c := range []struct {
		file string
		want procmap.Cgroup
	}{
		{"docker-cgroupfs-v1", procmap.Cgroup{Path: "/docker/" + idA, Runtime: "docker", ContainerID: idA}},
		{"docker-cgroupfs-v2", procmap.Cgroup{Path: "/docker/" + idA, Runtime: "docker", ContainerID: idA}},
		{"docker-systemd-v2", procmap.Cgroup{Path: "/system.slice/docker-" + idA + ".scope", Runtime: "docker", ContainerID: idA}},
		{"docker-in-docker-v1", procmap.Cgroup{Path: "/docker/" + idB + "/docker/" + idA, Runtime: "docker", ContainerID: idA}},
		{"containerd-k8s-systemd-v2", procmap.Cgroup{Path: "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" +
			"1b6fd1d8_7c9e_4bde_9f43_2a14d0f5e3a1.slice/cri-containerd-" + idB + ".scope", Runtime: "containerd", ContainerID: idB, PodUID: podUID}},
		{"containerd-k8s-cgroupfs-v1", procmap.Cgroup{Path: "/kubepods/burstable/pod" + podUID + "/" + idB, ContainerID: idB, PodUID: podUID}},
		{"containerd-k8s-guaranteed-v2", procmap.Cgroup{Path: "/kubepods.slice/kubepods-pod1b6fd1d8_7c9e_4bde_9f43_2a14d0f5e3a1.slice/cri-containerd-" +
			idB + ".scope", Runtime: "containerd", ContainerID: idB, PodUID: podUID}},
		{"containerd-ctr-cgroupfs-v1", procmap.Cgroup{Path: "/default/" + idB, ContainerID: idB}},
		{"containerd-k8s-static-pod-v2", procmap.Cgroup{Path: "/kubepods/burstable/pod" + static + "/" + idB, ContainerID: idB, PodUID: static}},
		{"crio-k8s-systemd-v2", procmap.Cgroup{Path: "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" +
			"1b6fd1d8_7c9e_4bde_9f43_2a14d0f5e3a1.slice/crio-" + idC + ".scope", Runtime: "cri-o", ContainerID: idC, PodUID: podUID}},
		{"crio-k8s-cgroupfs-v1", procmap.Cgroup{Path: "/kubepods/besteffort/pod" + podUID + "/crio-" + idC, Runtime: "cri-o", ContainerID: idC, PodUID: podUID}},
		{"crio-conmon-v2", procmap.Cgroup{Path: "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" +
			"1b6fd1d8_7c9e_4bde_9f43_2a14d0f5e3a1.slice/crio-conmon-" + idC + ".scope", PodUID: podUID}},
		{"podman-v2", procmap.Cgroup{Path: "/machine.slice/libpod-" + idC + ".scope/container", Runtime: "podman", ContainerID: idC}},
		{"host-v2", procmap.Cgroup{}},
		{"host-v1", procmap.Cgroup{}},
		{"slurm-v2", procmap.Cgroup{}},
		{"garbage", procmap.Cgroup{Path: "/docker/" + idB, Runtime: "docker", ContainerID: idB}},
	} {
		t.Run(c.file, func(t *testing.T) {
			b, err := os.ReadFile(filepath.Join("testdata", "cgroup", c.file))
			require.NoError(t, err)
			assert.Equal(t, c.want, procmap.ParseCgroup(b))
		})
	}
}

func TestParseStartTime(t *testing.T) {
	// A command with spaces and a parenthesis, as the kernel writes it unescaped.
	stat := "4242 (python3 (x) y) S 1 4242 4242 0 -1 4194560 24 0 0 0 0 0 0 0 20 0 1 0 98765 12345 67 0\n"
	v, ok := procmap.ParseStartTime([]byte(stat))
	require.True(t, ok)
	assert.Equal(t, uint64(98765), v)
	_, ok = procmap.ParseStartTime([]byte("4242 (short) S 1 2 3"))
	assert.False(t, ok)
}

func TestKubeletLogNames(t *testing.T) {
	ns, pod, uid, ok := procmap.ParsePodLogDir("llm_vllm-0_" + podUID)
	require.True(t, ok)
	assert.Equal(t, []string{"llm", "vllm-0", podUID}, []string{ns, pod, uid})
	_, _, _, ok = procmap.ParsePodLogDir("llm_vllm-0_not-a-uid")
	assert.False(t, ok)

	pod, ns, ctr, id, ok := procmap.ParseContainerLog("vllm-0_llm_server-" + idB + ".log")
	require.True(t, ok)
	assert.Equal(t, []string{"vllm-0", "llm", "server", idB}, []string{pod, ns, ctr, id})
	for _, bad := range []string{"vllm-0_llm_server-" + idB, "vllm-0_llm-" + idB + ".log", "x_y_z-" + idB[1:] + ".log"} {
		_, _, _, _, ok = procmap.ParseContainerLog(bad)
		assert.False(t, ok, bad)
	}
}

// fakeProc writes a process into a proc tree: stat (with its start time), comm and cgroup.
func fakeProc(t *testing.T, root string, pid int, start uint64, comm, cgroup string) {
	t.Helper()
	dir := filepath.Join(root, fmt.Sprint(pid))
	require.NoError(t, os.MkdirAll(dir, 0o755))
	stat := fmt.Sprintf("%d (%s) S 1 %d %d 0 -1 4194560 24 0 0 0 0 0 0 0 20 0 1 0 %d 12345 67 0\n", pid, comm, pid, pid, start)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "stat"), []byte(stat), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "comm"), []byte(comm+"\n"), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "cgroup"), []byte(cgroup), 0o644))
}

// A Kubernetes node as the exporter's DaemonSet sees it: the host's /proc and the kubelet's log directories.
func TestResolverKubernetesFromLogDirectories(t *testing.T) {
	root := t.TempDir()
	proc, pods, ctrs := filepath.Join(root, "proc"), filepath.Join(root, "pods"), filepath.Join(root, "containers")
	for _, d := range []string{pods, ctrs} {
		require.NoError(t, os.MkdirAll(d, 0o755))
	}
	cg, err := os.ReadFile(filepath.Join("testdata", "cgroup", "containerd-k8s-systemd-v2"))
	require.NoError(t, err)
	fakeProc(t, proc, 4242, 1000, "python3", string(cg))
	crio, err := os.ReadFile(filepath.Join("testdata", "cgroup", "crio-k8s-cgroupfs-v1"))
	require.NoError(t, err)
	fakeProc(t, proc, 4343, 2000, "vllm", string(crio))
	fakeProc(t, proc, 7, 5, "bench", "0::/user.slice/user-1000.slice/session-3.scope\n")
	require.NoError(t, os.MkdirAll(filepath.Join(pods, "llm_vllm-0_"+podUID), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(ctrs, "vllm-0_llm_server-"+idB+".log"), nil, 0o644))

	r := procmap.New(procmap.Options{ProcRoot: proc, PodLogDir: pods, ContainerLogDir: ctrs, DockerHost: "none", CRISocket: "none"})
	defer r.Close()
	assert.Equal(t, trace.ProcessIdentity{Command: "python3", Runtime: "containerd", ContainerID: idB, ContainerName: "server",
		PodUID: podUID, PodNamespace: "llm", PodName: "vllm-0"}, r.Identify(4242))
	// Same pod, a container whose log link is missing: the pod is still named, the container by its ID only.
	assert.Equal(t, trace.ProcessIdentity{Command: "vllm", Runtime: "cri-o", ContainerID: idC, PodUID: podUID,
		PodNamespace: "llm", PodName: "vllm-0"}, r.Identify(4343))
	assert.Equal(t, trace.ProcessIdentity{Command: "bench"}, r.Identify(7), "a host process")
	assert.Equal(t, trace.ProcessIdentity{}, r.Identify(99), "gone")

	// PID 4242 recycled by a host process: a new start time, so looked up afresh rather than from the cache.
	fakeProc(t, proc, 4242, 3000, "sleep", "0::/user.slice\n")
	assert.Equal(t, trace.ProcessIdentity{Command: "sleep"}, r.Identify(4242))
}
