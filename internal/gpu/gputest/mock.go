// Package gputest builds go-nvml mocks for fault-injection tests (GPU lost, not supported).
package gputest

import (
	"encoding/binary"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock"
)

// Fault says what a mocked GPU does wrong, and which processes share it.
type Fault struct {
	NoEnergy  bool  // energy counter NOT_SUPPORTED (pre-Volta)
	LostAfter int32 // calls to GetSamples after which the GPU is lost (0: never)
	// DuringEnergyRead, when set, runs inside every energy-counter read (to time reads or count overlaps).
	DuringEnergyRead func()
	// Processes run on the GPU (nil: one process, PID DefaultPID, with 1 MiB and no utilization samples).
	Processes []Load
	// MIG puts the GPU in MIG mode: processes carry their instances, and per-process utilization is not supported.
	MIG   bool
	calls atomic.Int32
}

// DefaultPID is the mock's process when a Fault names none. PIDs above 2^22 (the kernel's largest pid_max) are
// never a host process, so no host process's identity leaks into a test.
const DefaultPID = 1<<22 + 42

// SamplePeriod is the mock driver's per-process sample period, as measured on H200 (driver 580).
const SamplePeriod = time.Second

// Load is a process on a mocked GPU and how busy it keeps it: every SamplePeriod, on a grid from the Unix epoch,
// the driver has a sample of it (if any share is above 0) and keeps the latest only.
type Load struct {
	PID         uint32
	SM, Mem     uint32 // percent
	MemoryBytes uint64
	GPUInstance uint32 // with MIG
}

func mockDevice(i int, f *Fault) *mock.Device {
	ok := nvml.SUCCESS
	start := uint64(time.Now().Add(-2 * time.Second).UnixMicro())
	lost := func() bool { return f.LostAfter > 0 && f.calls.Load() > f.LostAfter }
	return &mock.Device{
		GetUUIDFunc:                            func() (string, nvml.Return) { return fmt.Sprintf("GPU-%c%c%c%c", 'a'+i, 'a'+i, 'a'+i, 'a'+i), ok },
		GetNameFunc:                            func() (string, nvml.Return) { return "NVIDIA H100 80GB HBM3", ok },
		GetPciInfoFunc:                         func() (nvml.PciInfo, nvml.Return) { return nvml.PciInfo{}, ok },
		GetCudaComputeCapabilityFunc:           func() (int, int, nvml.Return) { return 9, 0, ok },
		GetPowerManagementLimitFunc:            func() (uint32, nvml.Return) { return 700000, ok },
		GetPowerManagementDefaultLimitFunc:     func() (uint32, nvml.Return) { return 700000, ok },
		GetEnforcedPowerLimitFunc:              func() (uint32, nvml.Return) { return 700000, ok },
		GetPowerManagementLimitConstraintsFunc: func() (uint32, uint32, nvml.Return) { return 200000, 700000, ok },
		GetPersistenceModeFunc:                 func() (nvml.EnableState, nvml.Return) { return nvml.FEATURE_ENABLED, ok },
		GetMigModeFunc: func() (int, int, nvml.Return) {
			if f.MIG {
				return nvml.DEVICE_MIG_ENABLE, nvml.DEVICE_MIG_ENABLE, ok
			}
			return 0, 0, nvml.ERROR_NOT_SUPPORTED
		},
		GetMaxClockInfoFunc:              func(nvml.ClockType) (uint32, nvml.Return) { return 1980, ok },
		GetMemoryInfoFunc:                func() (nvml.Memory, nvml.Return) { return nvml.Memory{Total: 80 << 30, Used: 1 << 30}, ok },
		GetCurrentClocksEventReasonsFunc: func() (uint64, nvml.Return) { return 1, ok },
		GetPowerUsageFunc:                func() (uint32, nvml.Return) { return 90000, ok },
		GetTemperatureFunc:               func(nvml.TemperatureSensors) (uint32, nvml.Return) { return 40, ok },
		GetClockInfoFunc:                 func(nvml.ClockType) (uint32, nvml.Return) { return 1200, ok },
		GetPerformanceStateFunc:          func() (nvml.Pstates, nvml.Return) { return nvml.PSTATE_0, ok },
		GetUtilizationRatesFunc:          func() (nvml.Utilization, nvml.Return) { return nvml.Utilization{Gpu: 50, Memory: 10}, ok },
		GetComputeRunningProcessesFunc: func() ([]nvml.ProcessInfo, nvml.Return) {
			if f.Processes == nil {
				return []nvml.ProcessInfo{{Pid: DefaultPID, UsedGpuMemory: 1 << 20, GpuInstanceId: 0xFFFFFFFF, ComputeInstanceId: 0xFFFFFFFF}}, ok
			}
			out := make([]nvml.ProcessInfo, len(f.Processes))
			for i, p := range f.Processes {
				out[i] = nvml.ProcessInfo{Pid: p.PID, UsedGpuMemory: p.MemoryBytes, GpuInstanceId: 0xFFFFFFFF, ComputeInstanceId: 0xFFFFFFFF}
				if f.MIG {
					out[i].GpuInstanceId, out[i].ComputeInstanceId = p.GPUInstance, 0
				}
			}
			return out, ok
		},
		GetProcessUtilizationFunc: func(last uint64) ([]nvml.ProcessUtilizationSample, nvml.Return) {
			if f.MIG {
				return nil, nvml.ERROR_NOT_SUPPORTED
			}
			period := uint64(SamplePeriod.Microseconds())
			now := uint64(time.Now().UnixMicro())
			ts := now / period * period // the latest sample
			var out []nvml.ProcessUtilizationSample
			for _, p := range f.Processes {
				if ts > last && (p.SM > 0 || p.Mem > 0) {
					out = append(out, nvml.ProcessUtilizationSample{Pid: p.PID, TimeStamp: ts, SmUtil: p.SM, MemUtil: p.Mem})
				}
			}
			if len(out) == 0 {
				return nil, nvml.ERROR_NOT_FOUND
			}
			return out, ok
		},
		GetFieldValuesFunc: func(fv []nvml.FieldValue) nvml.Return {
			for i := range fv {
				fv[i].ValueType = uint32(nvml.VALUE_TYPE_UNSIGNED_INT)
				binary.LittleEndian.PutUint32(fv[i].Value[:], 95000)
			}
			return ok
		},
		GetTotalEnergyConsumptionFunc: func() (uint64, nvml.Return) {
			switch {
			case f.NoEnergy:
				return 0, nvml.ERROR_NOT_SUPPORTED
			case lost():
				return 0, nvml.ERROR_GPU_IS_LOST
			}
			if f.DuringEnergyRead != nil {
				f.DuringEnergyRead()
			}
			return uint64(time.Now().UnixMicro()) / 10, ok // 100 W: 100,000 mJ a second
		},
		GetSamplesFunc: func(_ nvml.SamplingType, last uint64) (nvml.ValueType, []nvml.Sample, nvml.Return) {
			f.calls.Add(1)
			if lost() {
				return 0, nil, nvml.ERROR_GPU_IS_LOST
			}
			var out []nvml.Sample
			now := uint64(time.Now().UnixMicro())
			for ts := start; ts <= now; ts += 20000 {
				if ts > last && ts+2_400_000 > now {
					var v [8]byte
					binary.LittleEndian.PutUint32(v[:], 100000)
					out = append(out, nvml.Sample{TimeStamp: ts, SampleValue: v})
				}
			}
			if len(out) == 0 {
				return nvml.VALUE_TYPE_UNSIGNED_INT, nil, nvml.ERROR_NOT_FOUND
			}
			return nvml.VALUE_TYPE_UNSIGNED_INT, out, ok
		},
	}
}

// MockNVML is a go-nvml mock library with one GPU per fault, each producing 100 W samples every 20 ms and a
// counter that rises at 100 W, and failing as its Fault says.
func MockNVML(faults ...*Fault) *mock.Interface {
	devs := make([]*mock.Device, len(faults))
	for i, f := range faults {
		devs[i] = mockDevice(i, f)
	}
	return &mock.Interface{
		InitFunc:                       func() nvml.Return { return nvml.SUCCESS },
		ShutdownFunc:                   func() nvml.Return { return nvml.SUCCESS },
		SystemGetDriverVersionFunc:     func() (string, nvml.Return) { return "580.159.04", nvml.SUCCESS },
		SystemGetNVMLVersionFunc:       func() (string, nvml.Return) { return "13.580.159.04", nvml.SUCCESS },
		SystemGetCudaDriverVersionFunc: func() (int, nvml.Return) { return 13000, nvml.SUCCESS },
		DeviceGetCountFunc:             func() (int, nvml.Return) { return len(devs), nvml.SUCCESS },
		DeviceGetHandleByIndexFunc:     func(i int) (nvml.Device, nvml.Return) { return devs[i], nvml.SUCCESS },
	}
}
