package trace

import "time"

// ProcessSample is one per-process utilization sample from the driver (NVML GetProcessUtilization): for the
// driver's last sample period before Time (1 s on H200, driver 580), the share of the period during which the
// process's kernels ran on the SMs, its memory traffic kept the memory busy, and its encoder and decoder work ran.
// The driver keeps only each process's latest sample and reports none for a period in which the process did
// nothing: a period without a sample is a period of zero utilization.
type ProcessSample struct {
	Time time.Time // the driver's stamp, µs resolution
	PID  uint32
	SM   float64 // 0..1
	Mem  float64 // 0..1
	Enc  float64 // 0..1
	Dec  float64 // 0..1
}

// Busy is the share of the sample period in which the process kept at least one engine busy, as far as the
// driver tells: the largest of its engine shares. SM time already counts memory-bound kernels (a kernel waiting on
// memory is running), so memory traffic adds only what ran without a kernel (copies).
func (p ProcessSample) Busy() float64 { return max(p.SM, p.Mem, p.Enc, p.Dec) }

// NoInstance marks a process outside MIG (no GPU or compute instance).
const NoInstance = -1

// Process is a compute process holding a context on the GPU when the sampler polled it (NVML
// GetComputeRunningProcesses), with who it belongs to.
type Process struct {
	Time        time.Time // host time of the poll
	PID         uint32
	MemoryBytes uint64 // GPU memory the process uses
	// GPUInstance and ComputeInstance are the MIG instance the process runs in, NoInstance without MIG.
	GPUInstance     int
	ComputeInstance int
	Identity        ProcessIdentity
}

// ProcessIdentity says whose a process is: its command, and the container and Kubernetes pod it runs in, as far
// as the host tells (procmap resolves them from /proc/PID/cgroup, the Docker Engine, the CRI runtime, containerd's
// own API and the kubelet's log directories). Empty fields are unknown; a process with no container ID ran on the
// host.
type ProcessIdentity struct {
	Command       string `json:"command,omitempty"` // /proc/PID/comm
	Runtime       string `json:"runtime,omitempty"` // docker, containerd, cri-o, podman
	ContainerID   string `json:"container_id,omitempty"`
	ContainerName string `json:"container_name,omitempty"`
	PodUID        string `json:"pod_uid,omitempty"`
	PodNamespace  string `json:"pod_namespace,omitempty"`
	PodName       string `json:"pod_name,omitempty"`
}

// Container is the container's name, or its short ID where the name is unknown, or "" for a host process.
func (id ProcessIdentity) Container() string {
	switch {
	case id.ContainerName != "":
		return id.ContainerName
	case len(id.ContainerID) > 12:
		return id.ContainerID[:12]
	}
	return id.ContainerID
}
