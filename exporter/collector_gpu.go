package exporter

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/lem-energy/lem/internal/gpu"
	"github.com/lem-energy/lem/internal/meta"
	"github.com/lem-energy/lem/internal/trace"
)

// GPUCollector exposes each sampled GPU's identity, energy, power and telemetry.
type GPUCollector struct {
	s     sampledGPUs
	env   meta.Environment
	table table[*gpuView]
}

var _ prometheus.Collector = (*GPUCollector)(nil)

// NewGPUCollector builds the GPU metrics' descriptors once, over s's sampled GPUs.
func NewGPUCollector(s sampledGPUs) *GPUCollector {
	return &GPUCollector{s: s, env: s.Environment(), table: newTable(gpuLabels, gpuMetrics)}
}

// Describe sends every descriptor of the table.
func (c *GPUCollector) Describe(ch chan<- *prometheus.Desc) { c.table.describe(ch) }

// Collect reads each GPU's state. A GPU without data simply has fewer series; nothing here fails a scrape.
func (c *GPUCollector) Collect(ch chan<- prometheus.Metric) { eachGPU(ch, c.s, &c.env, c.table) }

// gpuMetrics is the GPU collector's table, one entry per metric.
var gpuMetrics = []metric[*gpuView]{
	{name: "lem_gpu_info", typ: prometheus.GaugeValue,
		labels: []string{"name", "pci_bus_id", "compute_capability", "mig_mode", "driver_version", "nvml_version",
			"cuda_driver_version", "source"},
		help: "GPU identity; always 1.",
		values: func(g *gpuView) []value {
			d, drv := g.dev, g.env.Driver
			return one(1, d.Name, d.PCIBusID, d.ComputeCapability, boolLabel(d.MIGMode), drv.DriverVersion, drv.NVMLVersion,
				drv.CUDADriverVersion, g.env.Source.Kind)
		}},
	{name: "lem_gpu_up", typ: prometheus.GaugeValue,
		help: "1 while the GPU answers, 0 when it is lost.",
		values: func(g *gpuView) []value {
			if g.st.Lost {
				return one(0)
			}
			return one(1)
		}},
	// The two energy counters carry the instant their value belongs to (the counter read, the newest sample): a
	// scrape can come up to a read interval later, and stamping it with the scrape time would shift energy by up
	// to that interval. Prometheus stores the reading at its true time; repeated scrapes of the same reading are
	// identical samples and are not stored twice.
	{name: "lem_gpu_energy_joules_total", typ: prometheus.CounterValue,
		help: "GPU total-energy counter (NVML), joules since driver load.",
		values: func(g *gpuView) []value {
			if !g.st.HasCounter {
				return nil
			}
			return []value{{v: g.st.LatestCounter.Joules(), at: g.st.LatestCounter.Time.Time()}}
		}},
	{name: "lem_gpu_sampled_energy_joules_total", typ: prometheus.CounterValue,
		help: "Integral of the driver's 50 Hz power samples since the exporter started, joules.",
		values: func(g *gpuView) []value {
			if g.st.SamplesCaptured == 0 {
				return nil
			}
			return []value{{v: g.st.SampledEnergyJ, at: g.st.LatestSample.Time.Time()}}
		}},
	{name: "lem_gpu_power_watts", typ: prometheus.GaugeValue, labels: []string{"source"},
		help: "GPU power in watts: source=sample (latest 50 Hz driver sample), instant (field 186), average (1 s moving average).",
		values: func(g *gpuView) []value {
			var out []value
			if g.st.SamplesCaptured > 0 {
				out = append(out, value{v: g.st.LatestSample.PowerW, labels: []string{"sample"}})
			}
			if g.st.HasTelemetry {
				out = append(out, value{v: g.st.LatestTelem.InstantPowerW, labels: []string{"instant"}},
					value{v: g.st.LatestTelem.AveragePowerW, labels: []string{"average"}})
			}
			return out
		}},
	{name: "lem_gpu_temperature_celsius", typ: prometheus.GaugeValue,
		help:   "GPU temperature in degrees Celsius.",
		values: telemetry(func(t trace.Telemetry) float64 { return t.TemperatureC })},
	{name: "lem_gpu_sm_clock_hertz", typ: prometheus.GaugeValue,
		help:   "Current SM clock in hertz.",
		values: telemetry(func(t trace.Telemetry) float64 { return t.SMClockHz })},
	{name: "lem_gpu_performance_state", typ: prometheus.GaugeValue,
		help:   "Current performance state: 0 (P0, fastest) to 15.",
		values: telemetry(func(t trace.Telemetry) float64 { return t.PState })},
	{name: "lem_gpu_memory_clock_hertz", typ: prometheus.GaugeValue,
		help:   "Current memory clock in hertz.",
		values: telemetry(func(t trace.Telemetry) float64 { return t.MemClockHz })},
	{name: "lem_gpu_utilization_ratio", typ: prometheus.GaugeValue,
		help:   "GPU utilization, 0 to 1.",
		values: telemetry(func(t trace.Telemetry) float64 { return t.UtilGPU })},
	{name: "lem_gpu_memory_utilization_ratio", typ: prometheus.GaugeValue,
		help:   "Memory controller utilization, 0 to 1.",
		values: telemetry(func(t trace.Telemetry) float64 { return t.UtilMem })},
	{name: "lem_gpu_memory_used_bytes", typ: prometheus.GaugeValue,
		help:   "Framebuffer memory used in bytes.",
		values: telemetry(func(t trace.Telemetry) float64 { return t.MemUsedBytes })},
	{name: "lem_gpu_memory_total_bytes", typ: prometheus.GaugeValue,
		help: "Framebuffer memory in bytes.",
		values: func(g *gpuView) []value {
			if g.dev.MemoryTotalBytes == 0 {
				return nil
			}
			return one(float64(g.dev.MemoryTotalBytes))
		}},
	// The enforced limit is polled (it can change at run time); the others are the board's, read at start, and
	// zero where unknown.
	{name: "lem_gpu_power_limit_watts", typ: prometheus.GaugeValue, labels: []string{"kind"},
		help: "Power limit in watts by kind (enforced, current, default, min, max).",
		values: func(g *gpuView) []value {
			var out []value
			if g.st.HasTelemetry {
				out = append(out, value{v: g.st.LatestTelem.PowerLimitW, labels: []string{"enforced"}})
			}
			pl := g.dev.PowerLimits
			for _, l := range []struct {
				kind string
				w    float64
			}{{"current", pl.CurrentW}, {"default", pl.DefaultW}, {"min", pl.MinW}, {"max", pl.MaxW}} {
				if l.w > 0 {
					out = append(out, value{v: l.w, labels: []string{l.kind}})
				}
			}
			return out
		}},
	{name: "lem_gpu_clock_event_reason_active", typ: prometheus.GaugeValue, labels: []string{"reason"},
		help: "1 while the clock-event (throttle) reason is active.",
		values: clockReasons(func(g *gpuView, bit uint64) float64 {
			if g.st.LatestTelem.ClockReasons&bit != 0 {
				return 1
			}
			return 0
		})},
	{name: "lem_gpu_clock_event_reason_seconds_total", typ: prometheus.CounterValue, labels: []string{"reason"},
		help:   "Seconds the clock-event (throttle) reason was active.",
		values: clockReasons(func(g *gpuView, bit uint64) float64 { return g.st.ClockReasonSeconds[bit] })},
}

// telemetry is a gauge of the latest telemetry snapshot, absent until the first one.
func telemetry(field func(trace.Telemetry) float64) func(*gpuView) []value {
	return func(g *gpuView) []value {
		if !g.st.HasTelemetry {
			return nil
		}
		return one(field(g.st.LatestTelem))
	}
}

// clockReasons is one sample per clock-event reason, while the GPU reports the reasons.
func clockReasons(of func(g *gpuView, bit uint64) float64) func(*gpuView) []value {
	return func(g *gpuView) []value {
		if !g.st.HasTelemetry || !g.st.LatestTelem.ClockReasonsValid {
			return nil
		}
		out := make([]value, len(gpu.ClockReasons))
		for i, r := range gpu.ClockReasons {
			out[i] = value{v: of(g, r.Bit), labels: []string{r.Name}}
		}
		return out
	}
}

func boolLabel(b *bool) string {
	if b == nil {
		return "unknown"
	}
	return strconv.FormatBool(*b)
}
