package exporter

import (
	"context"
	"log/slog"
	"maps"
	"path/filepath"
	"sync"
	"time"

	"github.com/lem-energy/lem/analyze/account"
	"github.com/lem-energy/lem/analyze/energy"
	"github.com/lem-energy/lem/internal/gpu"
	"github.com/lem-energy/lem/internal/meta"
	"github.com/lem-energy/lem/internal/sampler"
	"github.com/lem-energy/lem/internal/trace"
)

// lagFitEvery is how often the exporter refits each GPU's counter lag on its ring buffer: the lag belongs to the
// setup and moves slowly, and a fit over ten minutes of 2 s reads costs well under a millisecond.
const lagFitEvery = time.Minute

// LagSource is what a LagKeeper reads: the sampler's devices, recent data and clock.
type LagSource interface {
	Devices() []meta.Device
	Window(g int, t0, t1 time.Time) (trace.Series, error)
	Clock() gpu.Clock
}

// LagKeeper keeps each GPU's last well-resolved counter lag, fitted on the ring buffer: the energy API's intervals
// (fitted on 30 s around them, often too few counter reads to resolve a lag) fall back to it, and with a
// recording directory it is kept there (lags.json) for the next start and for lem-analyze.
type LagKeeper struct {
	src  LagSource
	span time.Duration // how much recent data a fit sees
	path string        // "" without a recording directory
	log  *slog.Logger

	mu   sync.Mutex
	lags map[string]account.LagRecord
}

// NewLagKeeper keeps lags fitted on span of recent data, starting from the recording directory's kept lags, if
// any ("": no directory).
func NewLagKeeper(src LagSource, span time.Duration, recordDir string, log *slog.Logger) *LagKeeper {
	k := &LagKeeper{src: src, span: span, log: log, lags: map[string]account.LagRecord{}}
	if recordDir != "" {
		k.path = filepath.Join(recordDir, account.LagCacheFile)
		c, err := account.LoadLagCache(k.path)
		if err != nil {
			log.Warn("kept counter lags unreadable: starting without", "err", err)
		}
		k.lags = c.Lags
	}
	return k
}

// Lags returns the kept lags by GPU UUID (a copy: the accounting's FallbackLags).
func (k *LagKeeper) Lags() map[string]account.LagRecord {
	k.mu.Lock()
	defer k.mu.Unlock()
	return maps.Clone(k.lags)
}

// Run refits every lagFitEvery until ctx is done.
func (k *LagKeeper) Run(ctx context.Context) {
	tick := k.src.Clock().NewTicker(lagFitEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C():
			k.Fit()
		}
	}
}

// Fit fits each GPU's lag on the recent data and keeps the well-resolved ones, writing the file when one changed.
func (k *LagKeeper) Fit() {
	now := k.src.Clock().Now()
	changed := false
	for _, d := range k.src.Devices() {
		w, err := k.src.Window(d.Index, now.Add(-k.span), now)
		if err != nil || d.UUID == "" {
			continue
		}
		_, est, err := energy.FitHybrid(w.Counters, w.Samples)
		if err != nil || !account.WellResolved(est) {
			continue
		}
		end := now
		if n := len(w.Counters); n > 0 {
			end = w.Counters[n-1].Time.Time()
		}
		k.mu.Lock()
		k.lags[d.UUID] = account.Record(est, end)
		k.mu.Unlock()
		changed = true
	}
	if !changed || k.path == "" {
		return
	}
	c := &account.LagCache{Lags: k.Lags()}
	if err := c.Save(k.path); err != nil {
		k.log.Warn("kept counter lags not written", "err", err)
	}
}

var _ LagSource = (*sampler.Sampler)(nil)
