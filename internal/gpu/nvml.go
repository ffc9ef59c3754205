package gpu

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"

	"github.com/lem-energy/lem/internal/meta"
	"github.com/lem-energy/lem/internal/procmap"
	"github.com/lem-energy/lem/internal/trace"
)

// nvmlErr maps an NVML return code to lem's sentinels, keeping the NVML text.
func nvmlErr(call string, r nvml.Return) error {
	switch r {
	case nvml.SUCCESS:
		return nil
	case nvml.ERROR_NOT_SUPPORTED, nvml.ERROR_FUNCTION_NOT_FOUND:
		return fmt.Errorf("%s: %w", call, ErrNotSupported)
	case nvml.ERROR_GPU_IS_LOST:
		return fmt.Errorf("%s: %w", call, ErrGPULost)
	default:
		return fmt.Errorf("%s: %s", call, nvml.ErrorString(r))
	}
}

// nvmlSource is the Source over a live NVML library.
type nvmlSource struct {
	lib   nvml.Interface
	env   meta.Environment
	devs  []Device
	ident *procmap.Resolver
}

var _ Source = (*nvmlSource)(nil)

// OpenNVML initialises NVML and opens every GPU. lib nil means the system's libnvidia-ml.so.1; tests pass
// go-nvml's mock to inject faults.
func OpenNVML(lib nvml.Interface, log *slog.Logger) (Source, error) {
	if lib == nil {
		lib = nvml.New()
	}
	if log == nil {
		log = slog.Default()
	}
	switch r := lib.Init(); r {
	case nvml.SUCCESS:
	case nvml.ERROR_LIBRARY_NOT_FOUND:
		return nil, errors.New("NVIDIA driver library libnvidia-ml.so.1 not found: install the NVIDIA driver " +
			"(in a container, run with --gpus all or the NVIDIA runtime), or use a recorded trace with --replay FILE")
	case nvml.ERROR_DRIVER_NOT_LOADED:
		return nil, errors.New("NVIDIA kernel driver is not loaded (nvidia-smi fails too): load it, " +
			"or use a recorded trace with --replay FILE")
	default:
		return nil, fmt.Errorf("initialising NVML: %s", nvml.ErrorString(r))
	}
	// The driver reports host PIDs; the host's /proc says whose they are.
	s := &nvmlSource{lib: lib, ident: procmap.New(procmap.Options{Log: log})}
	s.env.Source = meta.Source{Kind: "nvml"}
	s.env.Host = meta.CollectHost()
	if v, r := lib.SystemGetDriverVersion(); r == nvml.SUCCESS {
		s.env.Driver.DriverVersion = v
	}
	if v, r := lib.SystemGetNVMLVersion(); r == nvml.SUCCESS {
		s.env.Driver.NVMLVersion = v
	}
	if v, r := lib.SystemGetCudaDriverVersion(); r == nvml.SUCCESS {
		s.env.Driver.CUDADriverVersion = fmt.Sprintf("%d.%d", v/1000, v%1000/10)
	}
	n, r := lib.DeviceGetCount()
	if r != nvml.SUCCESS {
		lib.Shutdown()
		return nil, fmt.Errorf("counting GPUs: %w", nvmlErr("DeviceGetCount", r))
	}
	for i := 0; i < n; i++ {
		h, r := lib.DeviceGetHandleByIndex(i)
		if r != nvml.SUCCESS {
			// One broken GPU must not hide the others.
			log.Error("GPU skipped", "gpu", i, "err", nvmlErr("DeviceGetHandleByIndex", r))
			continue
		}
		d := &nvmlDevice{h: h, ident: s.ident}
		d.info = deviceInfo(i, h)
		s.devs = append(s.devs, d)
		s.env.Devices = append(s.env.Devices, d.info)
	}
	if len(s.devs) == 0 {
		lib.Shutdown()
		return nil, errors.New("NVML found no usable GPU")
	}
	return s, nil
}

func (s *nvmlSource) Environment() meta.Environment { return s.env }
func (s *nvmlSource) Devices() []Device             { return s.devs }
func (s *nvmlSource) Clock() Clock                  { return WallClock{} }

func (s *nvmlSource) Close() error {
	s.ident.Close()
	if r := s.lib.Shutdown(); r != nvml.SUCCESS {
		return fmt.Errorf("shutting NVML down: %s", nvml.ErrorString(r))
	}
	return nil
}

func cstr(b []int8) string {
	out := make([]byte, 0, len(b))
	for _, c := range b {
		if c == 0 {
			break
		}
		out = append(out, byte(c))
	}
	return string(out)
}

func deviceInfo(index int, h nvml.Device) meta.Device {
	in := meta.Device{Index: index}
	in.UUID, _ = h.GetUUID()
	in.Name, _ = h.GetName()
	if p, r := h.GetPciInfo(); r == nvml.SUCCESS {
		in.PCIBusID = cstr(p.BusId[:])
	}
	if ma, mi, r := h.GetCudaComputeCapability(); r == nvml.SUCCESS {
		in.ComputeCapability = fmt.Sprintf("%d.%d", ma, mi)
	}
	mw := func(v uint32, r nvml.Return) float64 {
		if r != nvml.SUCCESS {
			return 0
		}
		return float64(v) / 1000
	}
	in.PowerLimits.CurrentW = mw(h.GetPowerManagementLimit())
	in.PowerLimits.DefaultW = mw(h.GetPowerManagementDefaultLimit())
	in.PowerLimits.EnforcedW = mw(h.GetEnforcedPowerLimit())
	if lo, hi, r := h.GetPowerManagementLimitConstraints(); r == nvml.SUCCESS {
		in.PowerLimits.MinW, in.PowerLimits.MaxW = float64(lo)/1000, float64(hi)/1000
	}
	if m, r := h.GetPersistenceMode(); r == nvml.SUCCESS {
		on := m == nvml.FEATURE_ENABLED
		in.PersistenceMode = &on
	}
	if cur, _, r := h.GetMigMode(); r == nvml.SUCCESS {
		on := cur == nvml.DEVICE_MIG_ENABLE
		in.MIGMode = &on
	}
	if v, r := h.GetMaxClockInfo(nvml.CLOCK_SM); r == nvml.SUCCESS {
		in.MaxSMClockHz = float64(v) * 1e6
	}
	if v, r := h.GetMaxClockInfo(nvml.CLOCK_MEM); r == nvml.SUCCESS {
		in.MaxMemClockHz = float64(v) * 1e6
	}
	if m, r := h.GetMemoryInfo(); r == nvml.SUCCESS {
		in.MemoryTotalBytes = m.Total
	}
	_, r := h.GetTotalEnergyConsumption()
	in.EnergyCounter = r == nvml.SUCCESS
	_, _, r = h.GetSamples(nvml.TOTAL_POWER_SAMPLES, 0)
	in.PowerSamples = r == nvml.SUCCESS || r == nvml.ERROR_NOT_FOUND
	_, r = h.GetProcessUtilization(uint64(time.Now().UnixMicro()))
	in.ProcessUtilization = r == nvml.SUCCESS || r == nvml.ERROR_NOT_FOUND
	return in
}

// nvmlDevice is one GPU over NVML. NVML handles are safe for concurrent use.
type nvmlDevice struct {
	h     nvml.Device
	info  meta.Device
	ident Identifier
}

var (
	_ Device          = (*nvmlDevice)(nil)
	_ ProcessUtilizer = (*nvmlDevice)(nil)
)

func (d *nvmlDevice) Info() meta.Device { return d.info }

func (d *nvmlDevice) ReadEnergy() (trace.CounterReading, error) {
	t0 := time.Now()
	e, r := d.h.GetTotalEnergyConsumption()
	c := trace.CounterReading{Time: trace.StampOf(t0), EnergyMJ: e, ReadDuration: time.Since(t0)}
	return c, nvmlErr("GetTotalEnergyConsumption", r)
}

// sampleValue decodes an NVML sample value of type vt.
func sampleValue(vt nvml.ValueType, b [8]byte) float64 {
	switch vt {
	case nvml.VALUE_TYPE_DOUBLE:
		return math.Float64frombits(binary.LittleEndian.Uint64(b[:]))
	case nvml.VALUE_TYPE_UNSIGNED_INT:
		return float64(binary.LittleEndian.Uint32(b[:]))
	case nvml.VALUE_TYPE_SIGNED_INT:
		return float64(int32(binary.LittleEndian.Uint32(b[:])))
	case nvml.VALUE_TYPE_SIGNED_LONG_LONG:
		return float64(int64(binary.LittleEndian.Uint64(b[:])))
	case nvml.VALUE_TYPE_UNSIGNED_SHORT:
		return float64(binary.LittleEndian.Uint16(b[:]))
	default: // unsigned long / long long
		return float64(binary.LittleEndian.Uint64(b[:]))
	}
}

func (d *nvmlDevice) PowerSamples(since time.Time) ([]trace.PowerSample, error) {
	var last uint64
	if !since.IsZero() {
		last = uint64(since.UnixMicro())
	}
	vt, ss, r := d.h.GetSamples(nvml.TOTAL_POWER_SAMPLES, last)
	if r == nvml.ERROR_NOT_FOUND { // nothing newer than last
		return nil, nil
	}
	if err := nvmlErr("GetSamples(TOTAL_POWER_SAMPLES)", r); err != nil {
		return nil, err
	}
	out := make([]trace.PowerSample, 0, len(ss))
	for _, s := range ss {
		if s.TimeStamp <= last {
			continue
		}
		out = append(out, trace.PowerSample{
			Time:   trace.StampOfMicros(int64(min(s.TimeStamp, math.MaxInt64))),
			PowerW: sampleValue(vt, s.SampleValue) / 1000,
		})
	}
	return out, nil
}

func (d *nvmlDevice) Telemetry() (trace.Telemetry, error) {
	t := trace.NewTelemetry(trace.StampOf(time.Now()))
	var errs []error
	ok := 0
	note := func(call string, r nvml.Return) bool {
		if r == nvml.SUCCESS {
			ok++
			return true
		}
		if err := nvmlErr(call, r); !errors.Is(err, ErrNotSupported) {
			errs = append(errs, err)
		}
		return false
	}
	fv := []nvml.FieldValue{{FieldId: nvml.FI_DEV_POWER_INSTANT}, {FieldId: nvml.FI_DEV_POWER_AVERAGE}}
	if note("GetFieldValues", d.h.GetFieldValues(fv)) {
		for _, f := range fv {
			if f.NvmlReturn != uint32(nvml.SUCCESS) {
				continue
			}
			w := sampleValue(nvml.ValueType(f.ValueType), f.Value) / 1000
			switch f.FieldId {
			case nvml.FI_DEV_POWER_INSTANT:
				t.InstantPowerW = w
			case nvml.FI_DEV_POWER_AVERAGE:
				t.AveragePowerW = w
			}
		}
	}
	if math.IsNaN(t.AveragePowerW) { // older drivers: GetPowerUsage is the averaged reading
		if v, r := d.h.GetPowerUsage(); note("GetPowerUsage", r) {
			t.AveragePowerW = float64(v) / 1000
		}
	}
	if v, r := d.h.GetTemperature(nvml.TEMPERATURE_GPU); note("GetTemperature", r) {
		t.TemperatureC = float64(v)
	}
	if v, r := d.h.GetClockInfo(nvml.CLOCK_SM); note("GetClockInfo(SM)", r) {
		t.SMClockHz = float64(v) * 1e6
	}
	if v, r := d.h.GetClockInfo(nvml.CLOCK_MEM); note("GetClockInfo(MEM)", r) {
		t.MemClockHz = float64(v) * 1e6
	}
	if u, r := d.h.GetUtilizationRates(); note("GetUtilizationRates", r) {
		t.UtilGPU, t.UtilMem = float64(u.Gpu)/100, float64(u.Memory)/100
	}
	if m, r := d.h.GetMemoryInfo(); note("GetMemoryInfo", r) {
		t.MemUsedBytes = float64(m.Used)
	}
	if v, r := d.h.GetEnforcedPowerLimit(); note("GetEnforcedPowerLimit", r) {
		t.PowerLimitW = float64(v) / 1000
	}
	if v, r := d.h.GetPerformanceState(); note("GetPerformanceState", r) && v <= nvml.PSTATE_15 {
		t.PState = float64(v)
	}
	if v, r := d.h.GetCurrentClocksEventReasons(); note("GetCurrentClocksEventReasons", r) {
		t.ClockReasons, t.ClockReasonsValid = v, true
	}
	if ok == 0 {
		if len(errs) == 0 {
			return t, fmt.Errorf("telemetry: %w", ErrNotSupported)
		}
		return t, fmt.Errorf("telemetry: %w", errors.Join(errs...))
	}
	for _, e := range errs {
		if errors.Is(e, ErrGPULost) {
			return t, fmt.Errorf("telemetry: %w", e)
		}
	}
	return t, nil
}

// NVML's markers of a value it does not have: a process outside MIG (instance IDs) and memory it cannot tell.
const (
	noInstanceID      = 0xFFFFFFFF
	valueNotAvailable = 0xFFFFFFFFFFFFFFFF
)

func (d *nvmlDevice) Processes() ([]Process, error) {
	ps, r := d.h.GetComputeRunningProcesses()
	if err := nvmlErr("GetComputeRunningProcesses", r); err != nil {
		return nil, err
	}
	out := make([]Process, len(ps))
	for i, p := range ps {
		out[i] = Process{PID: p.Pid, UsedMemoryBytes: p.UsedGpuMemory, GPUInstance: trace.NoInstance,
			ComputeInstance: trace.NoInstance, Identity: d.ident.Identify(p.Pid)}
		if p.UsedGpuMemory == valueNotAvailable {
			out[i].UsedMemoryBytes = 0
		}
		// Outside MIG the driver leaves the IDs at 0xFFFFFFFF (or, on older drivers, 0).
		if mig := d.info.MIGMode; mig != nil && *mig && p.GpuInstanceId != noInstanceID {
			out[i].GPUInstance, out[i].ComputeInstance = int(p.GpuInstanceId), int(p.ComputeInstanceId)
		}
	}
	return out, nil
}

// ProcessUtilization reads the driver's per-process samples newer than since. The driver answers NOT_FOUND when
// no process did anything since then, and NOT_SUPPORTED on MIG GPUs.
func (d *nvmlDevice) ProcessUtilization(since time.Time) ([]trace.ProcessSample, error) {
	var last uint64
	if !since.IsZero() {
		last = uint64(since.UnixMicro())
	}
	us, r := d.h.GetProcessUtilization(last)
	if r == nvml.ERROR_NOT_FOUND {
		return nil, nil
	}
	if err := nvmlErr("GetProcessUtilization", r); err != nil {
		return nil, err
	}
	out := make([]trace.ProcessSample, 0, len(us))
	for _, u := range us {
		if u.TimeStamp <= last {
			continue
		}
		out = append(out, trace.ProcessSample{Time: time.UnixMicro(int64(u.TimeStamp)), PID: u.Pid,
			SM: float64(u.SmUtil) / 100, Mem: float64(u.MemUtil) / 100, Enc: float64(u.EncUtil) / 100, Dec: float64(u.DecUtil) / 100})
	}
	return out, nil
}
