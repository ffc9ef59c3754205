// Package exporter is lem-exporter: a Prometheus collector over the sampler's state, the experiment-marker and
// raw-sample HTTP APIs, health endpoints, a rotating Parquet recorder and a remote-write stream of the full-rate
// data.
package exporter

import (
	"math"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/lem-energy/lem/internal/gpu"
	"github.com/lem-energy/lem/internal/meta"
	"github.com/lem-energy/lem/internal/sampler"
)

var gpuLabels = []string{"gpu", "uuid"}

func desc(name, help string, extra ...string) *prometheus.Desc {
	return prometheus.NewDesc(name, help, append(append([]string{}, gpuLabels...), extra...), nil)
}

// Collector turns sampler state and markers into metrics at scrape time. It makes no NVML call: scrapes only read
// what the sampler's goroutines already have, so a scrape never waits on a GPU and never disturbs sampling.
type Collector struct {
	s    samplerState
	env  meta.Environment
	runs runLister

	energy, sampled, power, temp, smClock, memClock, util, memUtil, memUsed, memTotal, powerLimit *prometheus.Desc
	reasonActive, reasonSeconds, info, up                                                         *prometheus.Desc
	samples, gaps, missed, overruns, counterReads, counterResets, calls, callErrors, callSeconds  *prometheus.Desc
	callMax, lag, drops, lastSample                                                               *prometheus.Desc
	runActive, runStart, runEnd, phaseActive, phaseStart, runResult                               *prometheus.Desc
}

var _ prometheus.Collector = (*Collector)(nil)

// samplerState is the part of the sampler a scrape reads.
type samplerState interface {
	Environment() meta.Environment
	Stats(gpu int) (sampler.Stats, bool)
	Subscriptions() map[string]uint64
}

// runLister lists the runs to expose.
type runLister interface{ Snapshot() []Run }

var (
	_ samplerState = (*sampler.Sampler)(nil)
	_ runLister    = (*Runs)(nil)
)

// NewCollector builds the descriptors once.
func NewCollector(s samplerState, runs runLister) *Collector {
	run := []string{"run_id", "experiment"}
	return &Collector{
		s: s, env: s.Environment(), runs: runs,
		energy:        desc("lem_gpu_energy_joules_total", "GPU total-energy counter (NVML), joules since driver load."),
		sampled:       desc("lem_gpu_sampled_energy_joules_total", "Integral of the driver's 50 Hz power samples since the exporter started, joules."),
		power:         desc("lem_gpu_power_watts", "GPU power in watts: source=sample (latest 50 Hz driver sample), instant (field 186), average (1 s moving average).", "source"),
		temp:          desc("lem_gpu_temperature_celsius", "GPU temperature in degrees Celsius."),
		smClock:       desc("lem_gpu_sm_clock_hertz", "Current SM clock in hertz."),
		memClock:      desc("lem_gpu_memory_clock_hertz", "Current memory clock in hertz."),
		util:          desc("lem_gpu_utilization_ratio", "GPU utilization, 0 to 1."),
		memUtil:       desc("lem_gpu_memory_utilization_ratio", "Memory controller utilization, 0 to 1."),
		memUsed:       desc("lem_gpu_memory_used_bytes", "Framebuffer memory used in bytes."),
		memTotal:      desc("lem_gpu_memory_total_bytes", "Framebuffer memory in bytes."),
		powerLimit:    desc("lem_gpu_power_limit_watts", "Power limit in watts by kind (enforced, current, default, min, max).", "kind"),
		reasonActive:  desc("lem_gpu_clock_event_reason_active", "1 while the clock-event (throttle) reason is active.", "reason"),
		reasonSeconds: desc("lem_gpu_clock_event_reason_seconds_total", "Seconds the clock-event (throttle) reason was active.", "reason"),
		info: prometheus.NewDesc("lem_gpu_info", "GPU identity; always 1.",
			append(append([]string{}, gpuLabels...), "name", "pci_bus_id", "compute_capability", "mig_mode", "driver_version", "nvml_version", "cuda_driver_version", "source"), nil),
		up:            desc("lem_gpu_up", "1 while the GPU answers, 0 when it is lost."),
		samples:       desc("lem_exporter_samples_captured_total", "Driver power samples captured."),
		gaps:          desc("lem_exporter_sample_gaps_total", "Intervals between captured samples over twice the sample period, by where they fell (in_batch: the driver's own; at_drain: possibly lost by the exporter).", "where"),
		missed:        desc("lem_exporter_samples_missed_total", "Samples the gaps should have held."),
		overruns:      desc("lem_exporter_sample_buffer_overruns_total", "Drains that came too late and lost samples from the driver buffer."),
		counterReads:  desc("lem_exporter_energy_reads_total", "Reads of the GPU total-energy counter."),
		counterResets: desc("lem_exporter_energy_resets_total", "Resets of the GPU total-energy counter seen (driver reload)."),
		calls:         desc("lem_exporter_nvml_calls_total", "Device calls by kind.", "call"),
		callErrors:    desc("lem_exporter_nvml_errors_total", "Failed device calls by kind (not-supported answers excluded).", "call"),
		callSeconds:   desc("lem_exporter_nvml_call_seconds_total", "Time spent in device calls by kind.", "call"),
		callMax:       desc("lem_exporter_nvml_call_max_seconds", "Longest device call by kind.", "call"),
		lag:           desc("lem_exporter_sampler_lag_seconds", "How late the last iteration of each sampler loop ran.", "loop"),
		lastSample:    desc("lem_exporter_last_sample_timestamp_seconds", "Driver timestamp of the newest captured power sample."),
		drops:         prometheus.NewDesc("lem_exporter_consumer_dropped_total", "Records dropped because a consumer's queue was full.", []string{"consumer"}, nil),
		runActive:     prometheus.NewDesc("lem_run_active", "1 while the experiment run is active; 0 for a grace period after it ended.", run, nil),
		runStart:      prometheus.NewDesc("lem_run_start_timestamp_seconds", "Start time of the run.", run, nil),
		phaseActive:   prometheus.NewDesc("lem_run_phase_active", "1 while the phase is active; 0 for a grace period after it ended.", append(append([]string{}, run...), "phase"), nil),
		phaseStart:    prometheus.NewDesc("lem_run_phase_start_timestamp_seconds", "Start time of the phase.", append(append([]string{}, run...), "phase"), nil),
		runEnd:        prometheus.NewDesc("lem_run_end_timestamp_seconds", "End time of a run that ended (shown for the grace period).", run, nil),
		runResult:     prometheus.NewDesc("lem_run_result", "Numeric results the run reported (output_tokens, requests, ...), by key.", append(append([]string{}, run...), "key"), nil),
	}
}

// Describe sends every descriptor.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.energy, c.sampled, c.power, c.temp, c.smClock, c.memClock, c.util, c.memUtil,
		c.memUsed, c.memTotal, c.powerLimit, c.reasonActive, c.reasonSeconds, c.info, c.up, c.samples, c.gaps, c.missed,
		c.overruns, c.counterReads, c.counterResets, c.calls, c.callErrors, c.callSeconds, c.callMax, c.lag, c.lastSample,
		c.drops, c.runActive, c.runStart, c.phaseActive, c.phaseStart, c.runResult, c.runEnd} {
		ch <- d
	}
}

func boolLabel(b *bool) string {
	if b == nil {
		return "unknown"
	}
	return strconv.FormatBool(*b)
}

// Collect reads the sampler's state. A GPU without data simply has fewer series; nothing here can fail a scrape.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	gauge := func(d *prometheus.Desc, v float64, lv ...string) {
		if !math.IsNaN(v) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, lv...)
		}
	}
	counter := func(d *prometheus.Desc, v float64, lv ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, lv...)
	}
	for _, dev := range c.env.Devices {
		st, ok := c.s.Stats(dev.Index)
		if !ok {
			continue
		}
		g, u := strconv.Itoa(dev.Index), dev.UUID
		gauge(c.info, 1, g, u, dev.Name, dev.PCIBusID, dev.ComputeCapability, boolLabel(dev.MIGMode),
			c.env.Driver.DriverVersion, c.env.Driver.NVMLVersion, c.env.Driver.CUDADriverVersion, c.env.Source.Kind)
		up := 1.0
		if st.Lost {
			up = 0
		}
		gauge(c.up, up, g, u)
		// The two energy counters carry the instant their value belongs to (the counter read, the newest sample):
		// a scrape can come up to a read interval later, and stamping it with the scrape time would shift energy
		// by up to that interval. Prometheus stores the reading at its true time; repeated scrapes of the same
		// reading are identical samples and are not stored twice.
		if st.HasCounter {
			ch <- prometheus.NewMetricWithTimestamp(st.LatestCounter.Time,
				prometheus.MustNewConstMetric(c.energy, prometheus.CounterValue, st.LatestCounter.Joules(), g, u))
		}
		if st.SamplesCaptured > 0 {
			ch <- prometheus.NewMetricWithTimestamp(st.LatestSample.Time,
				prometheus.MustNewConstMetric(c.sampled, prometheus.CounterValue, st.SampledEnergyJ, g, u))
			gauge(c.power, st.LatestSample.PowerW, g, u, "sample")
			gauge(c.lastSample, float64(st.LatestSample.Time.UnixNano())/1e9, g, u)
		}
		if st.HasTelemetry {
			t := st.LatestTelem
			gauge(c.power, t.InstantPowerW, g, u, "instant")
			gauge(c.power, t.AveragePowerW, g, u, "average")
			gauge(c.temp, t.TemperatureC, g, u)
			gauge(c.smClock, t.SMClockHz, g, u)
			gauge(c.memClock, t.MemClockHz, g, u)
			gauge(c.util, t.UtilGPU, g, u)
			gauge(c.memUtil, t.UtilMem, g, u)
			gauge(c.memUsed, t.MemUsedBytes, g, u)
			gauge(c.powerLimit, t.PowerLimitW, g, u, "enforced")
			if t.ClockReasonsValid {
				for _, r := range gpu.ClockReasons {
					v := 0.0
					if t.ClockReasons&r.Bit != 0 {
						v = 1
					}
					gauge(c.reasonActive, v, g, u, r.Name)
					counter(c.reasonSeconds, st.ClockReasonSeconds[r.Bit], g, u, r.Name)
				}
			}
		}
		if dev.MemoryTotalBytes > 0 {
			gauge(c.memTotal, float64(dev.MemoryTotalBytes), g, u)
		}
		for kind, w := range map[string]float64{"current": dev.PowerLimits.CurrentW, "default": dev.PowerLimits.DefaultW,
			"min": dev.PowerLimits.MinW, "max": dev.PowerLimits.MaxW} {
			if w > 0 {
				gauge(c.powerLimit, w, g, u, kind)
			}
		}
		counter(c.samples, float64(st.SamplesCaptured), g, u)
		counter(c.gaps, float64(st.Gaps-st.DrainGaps), g, u, sampler.GapInBatch)
		counter(c.gaps, float64(st.DrainGaps), g, u, sampler.GapAtDrain)
		counter(c.missed, float64(st.MissedSamples), g, u)
		counter(c.overruns, float64(st.Overruns), g, u)
		counter(c.counterReads, float64(st.CounterReads), g, u)
		counter(c.counterResets, float64(st.CounterResets), g, u)
		for _, name := range []string{sampler.CallEnergy, sampler.CallSamples, sampler.CallTelemetry} {
			cs := st.Calls[name]
			counter(c.calls, float64(cs.Count), g, u, name)
			counter(c.callErrors, float64(cs.Errors), g, u, name)
			counter(c.callSeconds, cs.Total.Seconds(), g, u, name)
			gauge(c.callMax, cs.Max.Seconds(), g, u, name)
		}
		for _, loop := range []string{"counter", "drain", "telemetry"} {
			if l, ok := st.Lag[loop]; ok {
				gauge(c.lag, l.Seconds(), g, u, loop)
			}
		}
	}
	for name, n := range c.s.Subscriptions() {
		counter(c.drops, float64(n), name)
	}
	if c.runs != nil {
		for _, r := range c.runs.Snapshot() {
			active := 1.0
			if !r.End.IsZero() {
				active = 0
				gauge(c.runEnd, float64(r.End.UnixNano())/1e9, r.ID, r.Experiment)
			}
			gauge(c.runActive, active, r.ID, r.Experiment)
			gauge(c.runStart, float64(r.Start.UnixNano())/1e9, r.ID, r.Experiment)
			for k, v := range r.Results {
				if f, err := strconv.ParseFloat(v, 64); err == nil {
					gauge(c.runResult, f, r.ID, r.Experiment, k)
				}
			}
			for _, p := range r.Phases {
				pa := 1.0
				if !p.End.IsZero() {
					pa = 0
				}
				gauge(c.phaseActive, pa, r.ID, r.Experiment, p.Name)
				gauge(c.phaseStart, float64(p.Start.UnixNano())/1e9, r.ID, r.Experiment, p.Name)
			}
		}
	}
}
