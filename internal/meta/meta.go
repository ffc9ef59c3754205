// Package meta holds the identity of the machine, driver and GPUs a measurement was taken on.
// The types are part of the trace and manifest contracts, so they live apart from the code that fills them.
package meta

// Driver describes the NVIDIA driver stack (or the replayed recording's).
type Driver struct {
	DriverVersion     string `json:"driver_version,omitempty"`
	NVMLVersion       string `json:"nvml_version,omitempty"`
	CUDADriverVersion string `json:"cuda_driver_version,omitempty"`
}

// PowerLimits are the board power limits in watts; zero means unknown.
type PowerLimits struct {
	CurrentW  float64 `json:"current_w,omitempty"`
	DefaultW  float64 `json:"default_w,omitempty"`
	MinW      float64 `json:"min_w,omitempty"`
	MaxW      float64 `json:"max_w,omitempty"`
	EnforcedW float64 `json:"enforced_w,omitempty"`
}

// Device describes one physical GPU.
type Device struct {
	Index             int         `json:"index"`
	UUID              string      `json:"uuid"`
	Name              string      `json:"name"`
	PCIBusID          string      `json:"pci_bus_id,omitempty"`
	ComputeCapability string      `json:"compute_capability,omitempty"`
	PowerLimits       PowerLimits `json:"power_limits"`
	PersistenceMode   *bool       `json:"persistence_mode,omitempty"`
	// MIGMode is true when MIG is enabled: power and energy then belong to the whole physical GPU,
	// not to any one instance.
	MIGMode          *bool   `json:"mig_mode,omitempty"`
	MaxSMClockHz     float64 `json:"max_sm_clock_hz,omitempty"`
	MaxMemClockHz    float64 `json:"max_mem_clock_hz,omitempty"`
	MemoryTotalBytes uint64  `json:"memory_total_bytes,omitempty"`
	// EnergyCounter is false on GPUs without a total-energy counter (before Volta): energy then comes from
	// integrating power samples, and results say so.
	EnergyCounter bool `json:"energy_counter"`
	// PowerSamples is false where the driver keeps no power-sample buffer.
	PowerSamples bool `json:"power_samples"`
	// ProcessUtilization is true where the driver reports per-process utilization (not on MIG): a process
	// without samples then did nothing.
	ProcessUtilization bool `json:"process_utilization,omitempty"`
}

// Host describes the machine the GPUs are in.
type Host struct {
	Hostname    string `json:"hostname,omitempty"`
	OS          string `json:"os,omitempty"`
	Kernel      string `json:"kernel,omitempty"`
	Arch        string `json:"arch,omitempty"`
	CPUModel    string `json:"cpu_model,omitempty"`
	CPUCores    int    `json:"cpu_cores,omitempty"`
	MemoryBytes uint64 `json:"memory_bytes,omitempty"`
	Container   string `json:"container,omitempty"` // "docker", "kubernetes", "podman", … or empty
	LemVersion  string `json:"lem_version,omitempty"`
	GoVersion   string `json:"go_version,omitempty"`
}

// Source says where the data came from: a live GPU or a replayed recording.
type Source struct {
	Kind string `json:"kind"`           // "nvml" or "replay"
	Path string `json:"path,omitempty"` // the replayed file
	// ReplayOffsetNS is what replay added to the recording's timestamps (replay time = recording time + offset),
	// so results can be checked against the recording.
	ReplayOffsetNS int64 `json:"replay_offset_ns,omitempty"`
}

// Environment is everything known about where a trace was measured.
type Environment struct {
	Source  Source   `json:"source"`
	Driver  Driver   `json:"driver"`
	Devices []Device `json:"devices"`
	Host    Host     `json:"host"`
}

// Device returns the device with the given index.
func (e Environment) Device(index int) (Device, bool) {
	for _, d := range e.Devices {
		if d.Index == index {
			return d, true
		}
	}
	return Device{}, false
}
