package runner

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/lem-energy/lem/analyze/account"
	"github.com/lem-energy/lem/analyze/energy"
	"github.com/lem-energy/lem/internal/fileutil"
	"github.com/lem-energy/lem/internal/manifest"
	"github.com/lem-energy/lem/internal/trace"
)

// preflightGPUs warns about other processes and MIG mode on the workload's GPUs.
func (r *run) preflightGPUs() {
	for _, d := range r.src.Devices() {
		in := d.Info()
		if _, sampled := r.m.Environment.Device(in.Index); !sampled || !r.workload(in.Index) {
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

// Cool-down gates.
const (
	CooldownIdle = "idle" // each GPU within IdleMarginC of its usual idle temperature (the campaigns' default)
	CooldownNone = "none"
	// IdleMarginC is how far above its usual idle temperature a GPU may start the baseline under the idle gate.
	IdleMarginC = 2.0
)

// ParseCooldown reads a cool-down gate: "idle", "stable", a temperature such as 45, 45C or 45°C, or "none" (nil).
func ParseCooldown(s string) (*manifest.Cooldown, error) {
	switch s = strings.TrimSpace(s); s {
	case "", CooldownNone:
		return nil, nil
	case "stable", CooldownIdle:
		return &manifest.Cooldown{Mode: s}, nil
	}
	t, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSuffix(s, "C"), "°"), 64)
	if err != nil || t <= 0 || t > 110 {
		return nil, fmt.Errorf("cool-down %q: want \"idle\", \"stable\", \"none\" or a temperature such as 45C", s)
	}
	return &manifest.Cooldown{Mode: "temperature", TargetC: t}, nil
}

// stableWindow and stableBand define "stable": every GPU within ±1 °C over 10 s.
const (
	stableWindow = 10 * time.Second
	stableBand   = 2.0
)

// cooldown waits until every GPU is at or below its target temperature (a fixed one, or its usual idle
// temperature plus a margin), or stable within ±1 °C over 10 s, showing each GPU's temperature against the target
// while it waits.
func (r *run) cooldown(ctx context.Context) {
	cd, _ := ParseCooldown(r.opts.Cooldown) // checked by Run
	if cd == nil {
		return
	}
	r.m.Cooldown = cd
	if cd.Mode == CooldownIdle {
		hist := loadIdleHistory(r.opts.IdleHistory)
		cd.TargetsC = map[int]float64{}
		for _, d := range r.smp.Devices() {
			if t, ok := hist.idleTemp(d.UUID); ok {
				cd.TargetsC[d.Index] = t + IdleMarginC
			}
		}
	}
	begin := r.clock.Now()
	history := map[int][]trace.Telemetry{}
	nextShow := begin
	for {
		ok := true
		var status []string
		for _, d := range r.smp.Devices() {
			cool, s := r.cooled(d.Index, cd, history, begin)
			ok = ok && cool
			status = append(status, s)
		}
		cd.WaitedS = r.clock.Since(begin).Seconds()
		if ok {
			cd.Reached = true
			r.progressDone("cool-down reached")
			r.log.Info("cool-down reached", "mode", cd.Mode, "waited_s", math.Round(cd.WaitedS))
			return
		}
		if now := r.clock.Now(); !now.Before(nextShow) || r.opts.ProgressTTY {
			r.progress(fmt.Sprintf("cool-down (%s): %s", r.opts.Cooldown, strings.Join(status, ", ")), "cooling", "temperatures", strings.Join(status, ", "))
			nextShow = now.Add(progressEvery)
		}
		if r.clock.Since(begin) > r.opts.CooldownTimeout {
			cd.Message = fmt.Sprintf("not reached within %s; measuring anyway", r.opts.CooldownTimeout)
			r.progressDone("")
			r.warn("cooldown_timeout", nil, "cool-down (%s) %s", r.opts.Cooldown, cd.Message)
			return
		}
		select {
		case <-ctx.Done():
			cd.Message = "interrupted"
			r.progressDone("")
			return
		case <-r.clock.After(time.Second):
		}
	}
}

// cooled says whether GPU g has reached the gate, and its status for the progress line. history keeps each GPU's
// recent telemetry for the stable test.
func (r *run) cooled(g int, cd *manifest.Cooldown, history map[int][]trace.Telemetry, begin time.Time) (bool, string) {
	st, _ := r.smp.Stats(g)
	if !st.HasTelemetry || math.IsNaN(st.LatestTelem.TemperatureC) {
		return false, fmt.Sprintf("GPU %d ? °C", g)
	}
	temp := st.LatestTelem.TemperatureC
	h := append(history[g], st.LatestTelem)
	for len(h) > 0 && st.LatestTelem.Time.Sub(h[0].Time) > stableWindow {
		h = h[1:]
	}
	history[g] = h
	target, fixed := cd.TargetC, cd.Mode == "temperature"
	if t, ok := cd.TargetsC[g]; ok && cd.Mode == CooldownIdle {
		target, fixed = t, true
	}
	if fixed {
		return temp <= target, fmt.Sprintf("GPU %d %.0f/%.0f °C", g, temp, target)
	}
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, t := range h {
		lo, hi = math.Min(lo, t.TemperatureC), math.Max(hi, t.TemperatureC)
	}
	return r.clock.Since(begin) >= stableWindow && hi-lo <= stableBand,
		fmt.Sprintf("GPU %d %.0f °C (±%.1f over %s)", g, temp, (hi-lo)/2, stableWindow)
}

// progressEvery is how often waits are logged when the progress output is not a terminal.
const progressEvery = 5 * time.Second

// progress shows a wait's state: one redrawn line on a terminal, a log line (with attrs) otherwise.
func (r *run) progress(line, msg string, attrs ...any) {
	if r.opts.ProgressTTY {
		fmt.Fprintf(r.opts.Progress, "\r\033[K%s", line)
		return
	}
	r.log.Info(msg, attrs...)
}

func (r *run) progressDone(final string) {
	if !r.opts.ProgressTTY {
		return
	}
	if final != "" {
		fmt.Fprintf(r.opts.Progress, "\r\033[K%s\n", final)
	} else {
		fmt.Fprint(r.opts.Progress, "\r\033[K")
	}
}

// baseline measures (or reuses) every GPU's idle power. A GPU whose baseline could not be measured is left out:
// its adjusted energy is not reported (the accounting warns no_baseline).
func (r *run) baseline(ctx context.Context) map[int]*manifest.Baseline {
	out := map[int]*manifest.Baseline{}
	if r.opts.Baseline <= 0 {
		return out
	}
	cache := loadBaselines(r.opts.BaselineCache)
	if r.opts.BaselineTTL > 0 {
		now := r.clock.Now()
		for _, d := range r.smp.Devices() {
			b, ok := cache.Baselines[d.UUID]
			if !ok || now.Sub(b.End) > r.opts.BaselineTTL {
				clear(out)
				break
			}
			c := b
			c.Reused, c.AgeS = true, now.Sub(b.End).Seconds()
			out[d.Index] = &c
		}
		if len(out) > 0 {
			r.log.Info("reusing recent baselines", "ttl", r.opts.BaselineTTL)
			return out
		}
	}
	// The first drain holds the driver buffer's history: start the window after it so it is all idle time.
	sleepClock(r.clock, 200*time.Millisecond)
	t0 := r.clock.Now()
	r.countdown(ctx, r.opts.Baseline)
	t1 := r.clock.Now()
	if ctx.Err() != nil {
		return out
	}
	r.m.Times.BaselineStart, r.m.Times.BaselineEnd = t0, t1
	sleepClock(r.clock, r.smp.Config().DrainInterval+100*time.Millisecond) // the window's samples drained
	hist := loadIdleHistory(r.opts.IdleHistory)
	measured := map[string]manifest.Baseline{}
	for _, d := range r.smp.Devices() {
		win, err := r.smp.Window(d.Index, t0, t1)
		if err != nil {
			continue
		}
		b, err := energy.ComputeBaseline(win.Samples, win.Telemetry, t0, t1)
		if err != nil {
			r.log.Warn("no baseline", "gpu", d.Index, "err", err)
			continue
		}
		mb := &manifest.Baseline{Start: t0, End: t1, MedianW: b.MedianW, P25W: b.P25W, P75W: b.P75W, IQRW: b.IQRW(),
			Samples: b.N, TempStartC: f64p(b.TempStartC), TempEndC: f64p(b.TempEndC), UtilMean: meanUtil(win.Telemetry),
			TempMeanC: f64p(b.TempMeanC), SMClockHz: meanOf(win.Telemetry, func(t trace.Telemetry) float64 { return t.SMClockHz }),
			MemUsedBytes: meanOf(win.Telemetry, func(t trace.Telemetry) float64 { return t.MemUsedBytes }),
			DriftW:       drift(win.Samples, t0, t1)}
		if common, _, ok := account.PStates(win.Telemetry, time.Time{}, time.Time{}); ok {
			mb.PState = &common
		}
		if mb.TempMeanC != nil {
			hist.remember(d.UUID, *mb.TempMeanC, mb.MedianW)
		}
		if fit, ok := hist.fit(d.UUID); ok {
			mb.TempFit = &fit
		}
		out[d.Index] = mb
		measured[d.UUID] = *mb
	}
	saveBaselines(r.opts.BaselineCache, measured, r.log)
	hist.save(r.log)
	return out
}

func meanUtil(tel []trace.Telemetry) *float64 {
	return meanOf(tel, func(t trace.Telemetry) float64 { return t.UtilGPU })
}

// meanOf is the mean of a telemetry field over the snapshots that have it; nil when none does.
func meanOf(tel []trace.Telemetry, field func(trace.Telemetry) float64) *float64 {
	var sum, n float64
	for _, t := range tel {
		if v := field(t); !math.IsNaN(v) {
			sum += v
			n++
		}
	}
	if n == 0 {
		return nil
	}
	m := sum / n
	return &m
}

// drift is the baseline window's second half's median power minus its first half's.
func drift(ss []trace.PowerSample, t0, t1 time.Time) *float64 {
	mid := trace.StampOf(t0.Add(t1.Sub(t0) / 2))
	var a, b []float64
	for _, s := range ss {
		if s.Time.Before(mid) {
			a = append(a, s.PowerW)
		} else {
			b = append(b, s.PowerW)
		}
	}
	if len(a) < energy.MinBaselineSamples || len(b) < energy.MinBaselineSamples {
		return nil
	}
	slices.Sort(a)
	slices.Sort(b)
	d := energy.Quantile(b, 0.5) - energy.Quantile(a, 0.5)
	return &d
}

// countdown waits d, showing the time left.
func (r *run) countdown(ctx context.Context, d time.Duration) {
	end := r.clock.Now().Add(d)
	r.log.Info("measuring idle baseline", "duration", d)
	nextLog := r.clock.Now().Add(progressEvery)
	for {
		now := r.clock.Now()
		left := end.Sub(now)
		if left <= 0 {
			break
		}
		if r.opts.ProgressTTY {
			r.progress(fmt.Sprintf("baseline: %3.0f s left", math.Ceil(left.Seconds())), "")
		} else if !now.Before(nextLog) {
			r.log.Info("baseline", "left_s", math.Ceil(left.Seconds()))
			nextLog = nextLog.Add(progressEvery)
		}
		select {
		case <-ctx.Done():
			r.progressDone("")
			return
		case <-r.clock.After(min(left, 250*time.Millisecond)):
		}
	}
	r.progressDone("baseline: done")
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

// baselineCache is the file of the latest baseline per GPU, reused within --baseline-ttl.
type baselineCache struct {
	Baselines map[string]manifest.Baseline `json:"baselines"`
}

func loadBaselines(p string) *baselineCache {
	out := &baselineCache{Baselines: map[string]manifest.Baseline{}}
	if b, err := os.ReadFile(baselineCachePath(p)); err == nil {
		var c baselineCache
		if json.Unmarshal(b, &c) == nil && c.Baselines != nil {
			out.Baselines = c.Baselines // a damaged or older cache only costs a fresh baseline
		}
	}
	return out
}

// saveBaselines adds the baselines just measured to the cache file, keeping the other GPUs' entries as the file
// holds them now (another lem-run on this host may have measured its GPUs meanwhile).
func saveBaselines(p string, measured map[string]manifest.Baseline, log interface{ Debug(string, ...any) }) {
	path := baselineCachePath(p)
	if path == "" || len(measured) == 0 {
		return
	}
	err := fileutil.Update(path, func(old []byte) ([]byte, error) {
		var c baselineCache
		if json.Unmarshal(old, &c) != nil || c.Baselines == nil {
			c.Baselines = map[string]manifest.Baseline{} // a damaged or older cache only costs a fresh baseline
		}
		maps.Copy(c.Baselines, measured)
		return json.MarshalIndent(&c, "", "  ")
	})
	if err != nil {
		log.Debug("baseline cache not written", "path", path, "err", err)
	}
}

func f64p(v float64) *float64 {
	if math.IsNaN(v) {
		return nil
	}
	return &v
}
