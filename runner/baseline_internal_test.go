package runner

import (
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lem-energy/lem/internal/trace"
)

// The cache keeps a bounded (temperature, idle) history per GPU and fits idle power against temperature from it;
// a cache in the older format (a bare map of baselines) still loads.
func TestBaselineCacheHistoryAndFit(t *testing.T) {
	path := filepath.Join(t.TempDir(), "baselines.json")
	c := loadBaselines(path)
	for i := range maxHistory + 10 {
		temp := 30 + float64(i%10)
		c.remember("GPU-a", temp, 70+0.25*temp) // 0.25 W per °C, exactly
	}
	assert.Len(t, c.History["GPU-a"], maxHistory)
	fit, ok := c.fit("GPU-a")
	require.True(t, ok)
	assert.InDelta(t, 0.25, fit.SlopeWPerC, 1e-9)
	assert.InDelta(t, 70, fit.InterceptW, 1e-7)
	_, ok = c.fit("GPU-b")
	assert.False(t, ok, "no history, no fit")

	saveBaselines(path, c, slog.Default())
	back := loadBaselines(path)
	assert.Equal(t, c.History, back.History)

	require.NoError(t, os.WriteFile(path, []byte(`{"GPU-a": {"median_w": 78}}`), 0o644))
	old := loadBaselines(path)
	assert.Empty(t, old.Baselines, "an older cache costs a fresh baseline, never a wrong one")
	assert.NotNil(t, old.History)
}

// drift compares the baseline's halves: a settling GPU (power falling 3 W across the window) shows it, a
// flat one does not.
func TestBaselineDrift(t *testing.T) {
	t0 := time.Unix(1000, 0)
	var flat, falling []trace.PowerSample
	for i := range 500 { // 10 s at 50 Hz
		at := t0.Add(time.Duration(i) * 20 * time.Millisecond)
		flat = append(flat, trace.PowerSample{Time: at, PowerW: 78 + float64(i%3)*0.1})
		falling = append(falling, trace.PowerSample{Time: at, PowerW: 81 - 3*float64(i)/500})
	}
	t1 := t0.Add(10 * time.Second)
	require.NotNil(t, drift(flat, t0, t1))
	assert.InDelta(t, 0, *drift(flat, t0, t1), 0.11)
	assert.InDelta(t, -1.5, *drift(falling, t0, t1), 0.01, "the halves' medians are 1.5 W apart")
	assert.Nil(t, drift(flat[:10], t0, t1), "too few samples to say")
}
