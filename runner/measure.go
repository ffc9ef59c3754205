package runner

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/lem-energy/lem/analyze/energy"
	"github.com/lem-energy/lem/internal/gpu"
	"github.com/lem-energy/lem/internal/manifest"
	"github.com/lem-energy/lem/internal/sampler"
	"github.com/lem-energy/lem/internal/trace"
)

// preflightGPUs warns about other processes and load on the selected GPUs.
func (r *run) preflightGPUs() {
	for _, d := range r.src.Devices() {
		in := d.Info()
		if !r.selected(in.Index) || !r.workload(in.Index) {
			continue
		}
		g := in.Index
		if ps, err := d.Processes(); err == nil && len(ps) > 0 {
			pids := make([]string, len(ps))
			for i, p := range ps {
				pids[i] = strconv.Itoa(int(p.PID))
			}
			r.warn("other_processes", &g, "GPU %d already runs compute processes (PIDs %s): they add to the measured energy",
				g, strings.Join(pids, ", "))
		}
		if in.MIGMode != nil && *in.MIGMode {
			r.warn("mig_whole_gpu", &g, "GPU %d is in MIG mode: power and energy are the whole physical GPU's", g)
		}
	}
}

func (r *run) selected(index int) bool {
	_, ok := r.m.Environment.Device(index)
	return ok
}

// cooldown waits until every GPU is at or below a temperature, or stable within ±1 °C over 10 s.
// ParseCooldown reads a cool-down gate: "stable", or a temperature such as 45, 45C or 45°C.
func ParseCooldown(s string) (*manifest.Cooldown, error) {
	s = strings.TrimSpace(s)
	if s == "stable" {
		return &manifest.Cooldown{Mode: "stable"}, nil
	}
	t, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSuffix(s, "C"), "°"), 64)
	if err != nil || t <= 0 || t > 110 {
		return nil, fmt.Errorf("cool-down %q: want \"stable\" or a temperature such as 45C", s)
	}
	return &manifest.Cooldown{Mode: "temperature", TargetC: t}, nil
}

func (r *run) cooldown(ctx context.Context) error {
	mode := strings.TrimSpace(r.opts.Cooldown)
	if mode == "" {
		return nil
	}
	cd, err := ParseCooldown(mode)
	if err != nil {
		return err
	}
	timeout := r.opts.CooldownTimeout
	if timeout <= 0 {
		timeout = 5 * time.Minute
	}
	r.m.Cooldown = cd
	begin := r.clock.Now()
	history := map[int][]trace.Telemetry{}
	for {
		ok := true
		for _, d := range r.smp.Devices() {
			st, _ := r.smp.Stats(d.Index)
			if !st.HasTelemetry || math.IsNaN(st.LatestTelem.TemperatureC) {
				ok = false
				continue
			}
			h := append(history[d.Index], st.LatestTelem)
			for len(h) > 0 && st.LatestTelem.Time.Sub(h[0].Time) > 10*time.Second {
				h = h[1:]
			}
			history[d.Index] = h
			if cd.Mode == "temperature" {
				ok = ok && st.LatestTelem.TemperatureC <= cd.TargetC
				continue
			}
			lo, hi := math.Inf(1), math.Inf(-1)
			for _, t := range h {
				lo, hi = math.Min(lo, t.TemperatureC), math.Max(hi, t.TemperatureC)
			}
			ok = ok && r.clock.Since(begin) >= 10*time.Second && hi-lo <= 2
		}
		cd.WaitedS = r.clock.Since(begin).Seconds()
		if ok {
			cd.Reached = true
			r.log.Info("cool-down reached", "mode", cd.Mode, "waited_s", math.Round(cd.WaitedS))
			return nil
		}
		if r.clock.Since(begin) > timeout {
			cd.Message = fmt.Sprintf("not reached within %s; measuring anyway", timeout)
			r.warn("cooldown_timeout", nil, "cool-down (%s) %s", mode, cd.Message)
			return nil
		}
		select {
		case <-ctx.Done():
			cd.Message = "interrupted"
			return nil
		case <-r.clock.After(time.Second):
		}
	}
}

// baseline measures (or reuses) every GPU's idle power.
func (r *run) baseline(ctx context.Context) (map[int]*manifest.Baseline, error) {
	out := map[int]*manifest.Baseline{}
	if r.opts.Baseline <= 0 {
		return out, nil
	}
	cache := loadBaselines(r.opts.BaselineCache)
	if r.opts.BaselineTTL > 0 {
		now := r.clock.Now()
		all := true
		for _, d := range r.smp.Devices() {
			b, ok := cache[d.UUID]
			if !ok || now.Sub(b.End) > r.opts.BaselineTTL {
				all = false
				break
			}
			c := b
			c.Reused, c.AgeS = true, now.Sub(b.End).Seconds()
			out[d.Index] = &c
		}
		if all {
			r.log.Info("reusing recent baselines", "ttl", r.opts.BaselineTTL)
			return out, nil
		}
		clear(out)
	}
	// The first drain holds the driver buffer's history: start the window after it so it is all idle time.
	sleepClock(r.clock, 200*time.Millisecond)
	t0 := r.clock.Now()
	r.countdown(ctx, r.opts.Baseline)
	t1 := r.clock.Now()
	if ctx.Err() != nil {
		return out, nil
	}
	r.m.Times.BaselineStart, r.m.Times.BaselineEnd = t0, t1
	sleepClock(r.clock, r.smp.Config().DrainInterval+100*time.Millisecond) // the window's samples drained
	for _, d := range r.smp.Devices() {
		g := d.Index
		win, err := r.smp.Window(g, t0, t1)
		if err != nil {
			return nil, err
		}
		b, err := energy.ComputeBaseline(win.Samples, win.Telemetry, t0, t1)
		if err != nil {
			r.warn("no_baseline", &g, "GPU %d: %v; energy is reported unadjusted", g, err)
			continue
		}
		mb := &manifest.Baseline{Start: t0, End: t1, MedianW: b.MedianW, P25W: b.P25W, P75W: b.P75W, IQRW: b.IQRW(),
			Samples: b.N, TempStartC: f64p(b.TempStartC), TempEndC: f64p(b.TempEndC)}
		out[g] = mb
		cache[d.UUID] = *mb
		var util, n float64
		for _, t := range win.Telemetry {
			if !math.IsNaN(t.UtilGPU) {
				util += t.UtilGPU
				n++
			}
		}
		if n > 0 && util/n > 0.05 {
			r.warn("gpu_busy_baseline", &g, "GPU %d was %.0f %% utilized during the baseline: it was not idle", g, 100*util/n)
		}
		if b.IQRW() > 0.1*b.MedianW {
			r.warn("unstable_baseline", &g, "GPU %d idle power varied (IQR %.1f W of %.1f W)", g, b.IQRW(), b.MedianW)
		}
	}
	saveBaselines(r.opts.BaselineCache, cache, r.log)
	return out, nil
}

// countdown waits d, showing the time left: a live line on a terminal, a log line every 10 s otherwise.
func (r *run) countdown(ctx context.Context, d time.Duration) {
	tty := false
	if f, ok := r.opts.Progress.(*os.File); ok {
		if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
			tty = true
		}
	}
	end := r.clock.Now().Add(d)
	r.log.Info("measuring idle baseline", "duration", d)
	for {
		left := end.Sub(r.clock.Now())
		if left <= 0 {
			break
		}
		if tty {
			fmt.Fprintf(r.opts.Progress, "\rbaseline: %3.0f s left ", math.Ceil(left.Seconds()))
		} else if int(left.Seconds())%10 == 0 && left.Seconds()-math.Floor(left.Seconds()) > 0.75 {
			r.log.Info("baseline", "left_s", math.Round(left.Seconds()))
		}
		select {
		case <-ctx.Done():
			return
		case <-r.clock.After(min(left, 250*time.Millisecond)):
		}
	}
	if tty {
		fmt.Fprint(r.opts.Progress, "\rbaseline: done        \n")
	}
}

func baselineCachePath(p string) string {
	if p != "" {
		return p
	}
	dir, err := os.UserCacheDir()
	if err != nil {
		return ""
	}
	return filepath.Join(dir, "lem", "baselines.json")
}

func loadBaselines(p string) map[string]manifest.Baseline {
	out := map[string]manifest.Baseline{}
	if b, err := os.ReadFile(baselineCachePath(p)); err == nil {
		json.Unmarshal(b, &out)
	}
	return out
}

func saveBaselines(p string, m map[string]manifest.Baseline, log interface{ Debug(string, ...any) }) {
	path := baselineCachePath(p)
	if path == "" {
		return
	}
	b, _ := json.MarshalIndent(m, "", "  ")
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err == nil {
		tmp := path + ".tmp"
		if err := os.WriteFile(tmp, b, 0o644); err == nil {
			os.Rename(tmp, path)
			return
		}
	}
	log.Debug("baseline cache not written", "path", path)
}

// finish computes energies, warnings and derived figures, writes the manifest and returns the result.
func (r *run) finish(t *trace.Trace, baselines map[int]*manifest.Baseline, exit int) (*Result, error) {
	m := r.m
	start, end := m.Times.Start, m.Times.End
	if end.Before(start) {
		end = start
	}
	m.Times.DurationS = end.Sub(start).Seconds()
	dur := end.Sub(start)
	run, _ := r.runs.Get(r.opts.RunID)
	r.mu.Lock()
	m.Results = r.results
	m.Markers = manifest.Markers{Parsed: r.parsed, Malformed: r.bad, HTTP: r.allMarkers - r.lineMarkers}
	r.mu.Unlock()
	hybrids := energy.HybridsOf(t)

	if dur > 0 && dur < 5*time.Second {
		r.warn("short_window", nil, "the run lasted %.2f s (< 5 s): counter updates every ~100 ms and edges weigh heavily", dur.Seconds())
	}
	for _, d := range m.Environment.Devices {
		g := d.Index
		mg := r.gpu(g)
		mg.Baseline = baselines[g]
		s := t.GPUs[g]
		if s == nil || dur <= 0 {
			continue
		}
		r.gpuEnergy(mg, s, hybrids[g], start, end)
		if mg.Baseline != nil {
			mg.Energy.AdjustedJ, mg.Energy.AdjustedClamped = energy.Adjust(mg.Energy.HybridJ, mg.Baseline.MedianW, dur)
			if mg.Energy.AdjustedClamped {
				r.warn("adjusted_clamped", &g, "GPU %d used less than its idle baseline over the run: adjusted energy clamped to 0", g)
			}
			if mg.TempStartC != nil && mg.Baseline.TempEndC != nil && math.Abs(*mg.TempStartC-*mg.Baseline.TempEndC) > 3 {
				r.warn("temperature_drift", &g, "GPU %d temperature moved %.0f °C between baseline and start", g,
					*mg.TempStartC-*mg.Baseline.TempEndC)
			}
		} else {
			mg.Energy.AdjustedJ = mg.Energy.HybridJ
		}
		m.AddGPUEnergy(*mg)
		r.gpuWarnings(mg, s, t.Events, start, end)
	}
	r.phases(hybrids, run.Phases, baselines, end)
	r.derive()
	if err := manifest.Write(r.dir, m); err != nil {
		return nil, err
	}
	return &Result{Dir: r.dir, Manifest: m, ExitCode: exit}, nil
}

func (r *run) gpuEnergy(mg *manifest.GPU, s *trace.Series, h *energy.Hybrid, start, end time.Time) {
	g := mg.Index
	if mg.CounterStart != nil && mg.CounterEnd != nil && mg.CounterEnd.EnergyMJ >= mg.CounterStart.EnergyMJ {
		mg.Energy.CounterJ = float64(mg.CounterEnd.EnergyMJ-mg.CounterStart.EnergyMJ) / 1000
	}
	if sr, err := energy.Sampled(s.Samples, start, end); err == nil {
		mg.Energy.SampledJ = sr.Joules
	}
	if h != nil {
		if hr, err := h.Energy(start, end); err == nil {
			mg.Energy.HybridJ = hr.Joules
		}
	}
	if mg.Energy.HybridJ == 0 {
		// No counter (pre-Volta) or no samples: fall back to what there is, and say so.
		switch {
		case mg.Energy.SampledJ > 0:
			mg.Energy.HybridJ = mg.Energy.SampledJ
			r.warn("no_counter", &g, "GPU %d: no usable energy counter; energy integrates the power samples", g)
		case mg.Energy.CounterJ > 0:
			mg.Energy.HybridJ = mg.Energy.CounterJ
			r.warn("no_samples", &g, "GPU %d: no power samples; energy is the counter difference only", g)
		}
	}
	if d := end.Sub(start).Seconds(); d > 0 {
		mg.MeanPowerW = mg.Energy.HybridJ / d
	}
	for _, x := range s.Samples {
		if !x.Time.Before(start) && !x.Time.After(end) {
			mg.PeakPowerW = math.Max(mg.PeakPowerW, x.PowerW)
			mg.Capture.Samples++
		}
	}
	var first, last *trace.Telemetry
	for i := range s.Telemetry {
		tm := &s.Telemetry[i]
		if tm.Time.Before(start) || tm.Time.After(end) {
			continue
		}
		if first == nil {
			first = tm
		}
		last = tm
	}
	if first != nil {
		mg.TempStartC, mg.TempEndC = f64p(first.TemperatureC), f64p(last.TemperatureC)
	}
	mg.ThrottleS = throttleSeconds(s.Telemetry, start, end)
}

// throttleSeconds sums, per clock-event reason that slows the GPU down, the time it was active in [start, end].
func throttleSeconds(tel []trace.Telemetry, start, end time.Time) map[string]float64 {
	out := map[string]float64{}
	for i := 1; i < len(tel); i++ {
		a, b := tel[i-1], tel[i]
		if !a.ClockReasonsValid || b.Time.Before(start) || a.Time.After(end) {
			continue
		}
		dt := b.Time.Sub(a.Time).Seconds()
		for _, cr := range gpu.ClockReasons {
			if a.ClockReasons&cr.Bit != 0 && cr.Name != "gpu_idle" && cr.Name != "applications_clocks_setting" {
				out[cr.Name] += dt
			}
		}
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

func (r *run) gpuWarnings(mg *manifest.GPU, s *trace.Series, events []trace.Event, start, end time.Time) {
	g := mg.Index
	if c, err := energy.Counter(s.Counters, start, end); err == nil {
		if c.Updates < 3 {
			r.warn("few_counter_updates", &g, "GPU %d: the counter changed %d times during the run (< 3)", g, c.Updates)
		}
		if c.Resets > 0 {
			r.warn("counter_reset", &g, "GPU %d: the energy counter reset during the run (driver reload?); energy around it is lost", g)
		}
	}
	for _, e := range events {
		if e.GPU != g || e.Time.Before(start) || e.Time.After(end) {
			continue
		}
		switch e.Type {
		case trace.EventGap, trace.EventOverrun:
			mg.Capture.Gaps++
			if e.Attrs["where"] != sampler.GapInBatch {
				mg.Capture.DrainGaps++
			}
			if e.Type == trace.EventOverrun {
				mg.Capture.Overruns++
			}
		case trace.EventDeviceError:
			r.warn("gpu_error", &g, "GPU %d: %s", g, e.Attrs["error"])
		}
	}
	// Samples are lost only when a drain comes too late for the driver's buffer (an overrun); other gaps are the
	// driver's own skipped samples (~43 ms each), counted in the capture figures.
	if mg.Capture.Overruns > 0 {
		r.warn("capture_gaps", &g, "GPU %d: %d power-sample buffer overruns lost samples (%d gaps)", g,
			mg.Capture.Overruns, mg.Capture.Gaps)
	}
	for reason, sec := range mg.ThrottleS {
		if sec > 0 {
			r.warn("throttling", &g, "GPU %d: clocks held back by %s for %.1f s", g, reason, sec)
		}
	}
}
