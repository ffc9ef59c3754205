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

// stableWindow and stableBand define "stable": every GPU within ±1 °C over 10 s.
const (
	stableWindow = 10 * time.Second
	stableBand   = 2.0
)

// cooldown waits until every GPU is at or below a temperature, or stable within ±1 °C over 10 s, showing each
// GPU's temperature against the target while it waits.
func (r *run) cooldown(ctx context.Context) {
	if strings.TrimSpace(r.opts.Cooldown) == "" {
		return
	}
	cd, _ := ParseCooldown(r.opts.Cooldown) // checked by Run
	r.m.Cooldown = cd
	begin := r.clock.Now()
	history := map[int][]trace.Telemetry{}
	nextShow := begin
	for {
		ok := true
		var status []string
		for _, d := range r.smp.Devices() {
			st, _ := r.smp.Stats(d.Index)
			if !st.HasTelemetry || math.IsNaN(st.LatestTelem.TemperatureC) {
				ok = false
				status = append(status, fmt.Sprintf("GPU %d ? °C", d.Index))
				continue
			}
			temp := st.LatestTelem.TemperatureC
			h := append(history[d.Index], st.LatestTelem)
			for len(h) > 0 && st.LatestTelem.Time.Sub(h[0].Time) > stableWindow {
				h = h[1:]
			}
			history[d.Index] = h
			if cd.Mode == "temperature" {
				ok = ok && temp <= cd.TargetC
				status = append(status, fmt.Sprintf("GPU %d %.0f/%.0f °C", d.Index, temp, cd.TargetC))
				continue
			}
			lo, hi := math.Inf(1), math.Inf(-1)
			for _, t := range h {
				lo, hi = math.Min(lo, t.TemperatureC), math.Max(hi, t.TemperatureC)
			}
			ok = ok && r.clock.Since(begin) >= stableWindow && hi-lo <= stableBand
			status = append(status, fmt.Sprintf("GPU %d %.0f °C (±%.1f over %s)", d.Index, temp, (hi-lo)/2, stableWindow))
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
			b, ok := cache[d.UUID]
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
			Samples: b.N, TempStartC: f64p(b.TempStartC), TempEndC: f64p(b.TempEndC), UtilMean: meanUtil(win.Telemetry)}
		out[d.Index] = mb
		cache[d.UUID] = *mb
	}
	saveBaselines(r.opts.BaselineCache, cache, r.log)
	return out
}

func meanUtil(tel []trace.Telemetry) *float64 {
	var sum, n float64
	for _, t := range tel {
		if !math.IsNaN(t.UtilGPU) {
			sum += t.UtilGPU
			n++
		}
	}
	if n == 0 {
		return nil
	}
	m := sum / n
	return &m
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

func loadBaselines(p string) map[string]manifest.Baseline {
	out := map[string]manifest.Baseline{}
	if b, err := os.ReadFile(baselineCachePath(p)); err == nil {
		if json.Unmarshal(b, &out) != nil {
			out = map[string]manifest.Baseline{} // a damaged cache only costs a fresh baseline
		}
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
		if err := fileutil.WriteAtomic(path, b); err == nil {
			return
		}
	}
	log.Debug("baseline cache not written", "path", path)
}

func f64p(v float64) *float64 {
	if math.IsNaN(v) {
		return nil
	}
	return &v
}
