package account

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"math"
	"os"
	"strconv"
	"time"

	"github.com/lem-energy/lem/analyze/energy"
	"github.com/lem-energy/lem/internal/fileutil"
	"github.com/lem-energy/lem/internal/manifest"
)

// The counter lag belongs to the setup (host, driver, read schedule), so a trace that cannot resolve its own
// (flat power, or too few counter intervals: a short run read once a second) is better served by the last lag
// the same GPU showed on this host than by 0. lem-run and lem-exporter keep each GPU's last well-resolved lag
// in a small file (LagCache); Fill uses it through Input.FallbackLags and says so in the manifest.

// LagRecord is a well-resolved counter lag of one GPU, and how well it was resolved.
type LagRecord struct {
	MS        float64   `json:"ms"`
	UMS       float64   `json:"u_ms"`
	Contrast  float64   `json:"contrast"`
	Intervals int       `json:"intervals"`
	At        time.Time `json:"at"` // the end of the trace it was fitted on
}

// MaxKeptLagU is the largest lag uncertainty worth keeping: a fifth of the spread of lags between setups
// (energy.UnresolvedLagU); the shared recordings resolve theirs to 1.4 ms.
const MaxKeptLagU = 10 * time.Millisecond

// SetupLagU is added in quadrature to a kept lag's own uncertainty when another trace uses it: the lag of one
// setup moves between recordings (the two shared H200 recordings, same driver and probe, gave 85 and 65 ms), so a
// lag from another trace is known to about half that difference.
const SetupLagU = 10 * time.Millisecond

// WellResolved says whether a lag fit is worth keeping for later traces of the same GPU.
func WellResolved(est energy.LagEstimate) bool {
	return est.OK && est.U <= MaxKeptLagU
}

// Record is the fit as a LagRecord measured at t.
func Record(est energy.LagEstimate, t time.Time) LagRecord {
	return LagRecord{MS: float64(est.Lag) / 1e6, UMS: float64(est.U) / 1e6, Contrast: est.Contrast, Intervals: est.Intervals,
		At: t.UTC()}
}

// fallbackU is the standard uncertainty of a kept lag used on another trace.
func (r LagRecord) fallbackU() time.Duration {
	u := math.Hypot(r.UMS, float64(SetupLagU)/1e6)
	return time.Duration(u * 1e6)
}

// LagCache is the file of a host's last well-resolved lag per GPU UUID (lags.json beside lem-run's baseline cache,
// or in lem-exporter's recording directory).
type LagCache struct {
	Lags map[string]LagRecord `json:"lags"`
}

// LagCacheFile is the cache's file name.
const LagCacheFile = "lags.json"

// maxLagCacheSize bounds the file read: a few hundred bytes per GPU.
const maxLagCacheSize = 1 << 20

// LoadLagCache reads a lag cache. A missing file is an empty cache; a damaged one is an empty cache and an error
// naming the file (the caller logs it: a lost cache only costs the fallback).
func LoadLagCache(path string) (*LagCache, error) {
	c := &LagCache{Lags: map[string]LagRecord{}}
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return c, nil
	case err != nil:
		return c, fmt.Errorf("lag cache: %w", err)
	case len(b) > maxLagCacheSize:
		return c, fmt.Errorf("lag cache %s: larger than %d bytes", path, maxLagCacheSize)
	}
	var f LagCache
	if err := json.Unmarshal(b, &f); err != nil {
		return c, fmt.Errorf("lag cache %s: %w", path, err)
	}
	for uuid, r := range f.Lags {
		if uuid != "" && !math.IsNaN(r.MS) && !math.IsInf(r.MS, 0) && r.UMS >= 0 && r.UMS <= float64(MaxKeptLagU)/1e6 &&
			r.MS >= float64(energy.MinLag)/1e6 && r.MS <= float64(energy.MaxLag)/1e6 {
			c.Lags[uuid] = r
		}
	}
	return c, nil
}

// Save adds the cache's lags to the file (the newer of two for one GPU wins), keeping the other GPUs' as the file
// holds them now: lem-runs on one host and the exporter share it. Written atomically, its directory created.
func (c *LagCache) Save(path string) error {
	err := fileutil.Update(path, func(old []byte) ([]byte, error) {
		f := &LagCache{Lags: map[string]LagRecord{}}
		var cur LagCache
		if len(old) <= maxLagCacheSize && json.Unmarshal(old, &cur) == nil {
			maps.Copy(f.Lags, cur.Lags) // a damaged file is replaced: a lost cache only costs the fallback
		}
		for uuid, r := range c.Lags {
			f.Keep(uuid, r)
		}
		b, err := json.MarshalIndent(f, "", "  ")
		return append(b, '\n'), err
	})
	if err != nil {
		return fmt.Errorf("lag cache %s: %w", path, err)
	}
	return nil
}

// Keep stores a GPU's lag if it is newer than the one kept.
func (c *LagCache) Keep(uuid string, r LagRecord) {
	if uuid == "" {
		return
	}
	if old, ok := c.Lags[uuid]; ok && old.At.After(r.At) {
		return
	}
	c.Lags[uuid] = r
}

// KeepFrom stores the lags a manifest's GPUs fitted well on their own trace (source fit, uncertainty at most
// MaxKeptLagU), measured at the run's end; it returns how many it kept.
func (c *LagCache) KeepFrom(m *manifest.Manifest) int {
	n := 0
	for _, g := range m.GPUs {
		l := g.Lag
		if l == nil || l.Source != manifest.LagFit || !l.Resolved || !l.UMS.Valid() || float64(l.UMS) > float64(MaxKeptLagU)/1e6 {
			continue
		}
		c.Keep(g.UUID, LagRecord{MS: l.MS, UMS: float64(l.UMS), Contrast: l.Contrast, Intervals: l.Intervals, At: m.Times.End.UTC()})
		n++
	}
	return n
}

// fallback finds a GPU's kept lag: by UUID, else by its index written in decimal.
func fallback(lags map[string]LagRecord, uuid string, index int) (LagRecord, bool) {
	if r, ok := lags[uuid]; ok && uuid != "" {
		return r, true
	}
	r, ok := lags[strconv.Itoa(index)]
	return r, ok
}
