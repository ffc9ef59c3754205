package runner

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"

	"github.com/lem-energy/lem/analyze/account"
	"github.com/lem-energy/lem/internal/fileutil"
	"github.com/lem-energy/lem/internal/manifest"
)

// idleHistory is the host's record of the deep-idle baselines it measured: per GPU UUID, (mean temperature °C,
// median W) pairs, oldest first. It is the data of the idle-temperature fit and of the "idle" cool-down gate's
// target, so it is kept per host (the user cache directory), whatever baseline cache a run or campaign uses.
type idleHistory struct {
	GPUs  map[string][][2]float64 `json:"gpus"`
	path  string
	added map[string][][2]float64 // this run's points, added to the file on save
}

// Bounds of the history.
const (
	maxHistory = 200 // points kept per GPU
	// idleTempPoints is how many recent baselines give a GPU's idle temperature (their median).
	idleTempPoints = 10
	// IdleHistoryOff turns the history off (--idle-history off).
	IdleHistoryOff = "off"
)

func idleHistoryPath(p string) string {
	switch p {
	case IdleHistoryOff:
		return ""
	case "":
		dir, err := os.UserCacheDir()
		if err != nil {
			return ""
		}
		return filepath.Join(dir, "lem", "idle-history.json")
	}
	return p
}

// loadIdleHistory reads the history; a missing or damaged file is an empty history (it costs only the fit).
func loadIdleHistory(p string) *idleHistory {
	h := &idleHistory{GPUs: map[string][][2]float64{}, path: idleHistoryPath(p)}
	if h.path == "" {
		return h
	}
	if b, err := os.ReadFile(h.path); err == nil {
		var f idleHistory
		if json.Unmarshal(b, &f) == nil && f.GPUs != nil {
			h.GPUs = f.GPUs
		}
	}
	return h
}

func (h *idleHistory) remember(uuid string, tempC, watts float64) {
	p := [2]float64{tempC, watts}
	h.GPUs[uuid] = appendCapped(h.GPUs[uuid], p)
	if h.added == nil {
		h.added = map[string][][2]float64{}
	}
	h.added[uuid] = append(h.added[uuid], p)
}

// appendCapped appends p, keeping the newest maxHistory points.
func appendCapped(g [][2]float64, p [2]float64) [][2]float64 {
	g = append(g, p)
	if len(g) > maxHistory {
		g = g[len(g)-maxHistory:]
	}
	return g
}

func (h *idleHistory) fit(uuid string) (manifest.TempFit, bool) {
	var ts, ws []float64
	for _, p := range h.GPUs[uuid] {
		ts, ws = append(ts, p[0]), append(ws, p[1])
	}
	return account.FitIdleTemperature(ts, ws)
}

// idleTemp is the GPU's usual idle temperature: the median over its most recent baselines.
func (h *idleHistory) idleTemp(uuid string) (float64, bool) {
	g := h.GPUs[uuid]
	if len(g) == 0 {
		return 0, false
	}
	var ts []float64
	for _, p := range g[max(0, len(g)-idleTempPoints):] {
		ts = append(ts, p[0])
	}
	slices.Sort(ts)
	n := len(ts)
	if n%2 == 1 {
		return ts[n/2], true
	}
	return (ts[n/2-1] + ts[n/2]) / 2, true
}

func (h *idleHistory) save(log interface{ Debug(string, ...any) }) {
	if h.path == "" || len(h.added) == 0 {
		return
	}
	// The points this run added, on top of the file as it is now: another lem-run on this host may have added
	// its GPUs' meanwhile.
	err := fileutil.Update(h.path, func(old []byte) ([]byte, error) {
		var f idleHistory
		if json.Unmarshal(old, &f) != nil || f.GPUs == nil {
			f.GPUs = map[string][][2]float64{}
		}
		for uuid, ps := range h.added {
			for _, p := range ps {
				f.GPUs[uuid] = appendCapped(f.GPUs[uuid], p)
			}
		}
		return json.MarshalIndent(&f, "", "  ")
	})
	if err != nil {
		log.Debug("idle history not written", "path", h.path, "err", err)
	}
}
