package runner

import (
	"path/filepath"

	"github.com/lem-energy/lem/analyze/account"
)

// The host's kept counter lags (account.LagCache): lags.json beside the baseline cache, used whenever that cache
// is (a run with a baseline, or a cache file named). A run whose trace cannot resolve its own lag (a short run
// read once a second, flat power) is accounted with the last lag its GPU showed on this host; a run that resolves
// its lag well keeps it for the next.

// lagCachePath is the lag cache of a run ("" when the run uses no cache directory).
func (r *run) lagCachePath() string {
	if r.opts.Baseline <= 0 && r.opts.BaselineCache == "" {
		return ""
	}
	p := baselineCachePath(r.opts.BaselineCache)
	if p == "" {
		return ""
	}
	return filepath.Join(filepath.Dir(p), account.LagCacheFile)
}

// keptLags reads the host's kept lags for the accounting; nil when there are none. A damaged cache is logged and
// costs only the fallback.
func (r *run) keptLags() map[string]account.LagRecord {
	path := r.lagCachePath()
	if path == "" {
		return nil
	}
	c, err := account.LoadLagCache(path)
	if err != nil {
		r.log.Warn("lag cache unreadable: runs that cannot resolve their counter lag use 0", "err", err)
	}
	if len(c.Lags) == 0 {
		return nil
	}
	return c.Lags
}

// keepLags stores the lags this run's trace resolved well, for later runs on the same GPUs.
func (r *run) keepLags() {
	path := r.lagCachePath()
	if path == "" {
		return
	}
	c, err := account.LoadLagCache(path)
	if err != nil {
		r.log.Debug("lag cache replaced", "err", err)
	}
	if c.KeepFrom(r.m) == 0 {
		return
	}
	if err := c.Save(path); err != nil {
		r.log.Debug("lag cache not written", "err", err)
	}
}
