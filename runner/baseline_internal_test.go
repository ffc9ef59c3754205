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

// The host's idle history keeps a bounded (temperature, idle) record per GPU, fits idle power against
// temperature from it and gives a GPU's usual idle temperature; a damaged file is an empty history.
func TestIdleHistoryFitAndIdleTemperature(t *testing.T) {
	path := filepath.Join(t.TempDir(), "idle-history.json")
	h := loadIdleHistory(path)
	for i := range maxHistory + 10 {
		temp := 30 + float64(i%10)
		h.remember("GPU-a", temp, 70+0.25*temp) // 0.25 W per °C, exactly
	}
	assert.Len(t, h.GPUs["GPU-a"], maxHistory)
	fit, ok := h.fit("GPU-a")
	require.True(t, ok)
	assert.InDelta(t, 0.25, fit.SlopeWPerC, 1e-9)
	assert.InDelta(t, 70, fit.InterceptW, 1e-7)
	assert.Equal(t, 30.0, fit.MinC)
	assert.Equal(t, 39.0, fit.MaxC)
	_, ok = h.fit("GPU-b")
	assert.False(t, ok, "no history, no fit")
	idle, ok := h.idleTemp("GPU-a") // the last ten: 30 … 39
	require.True(t, ok)
	assert.Equal(t, 34.5, idle)
	_, ok = h.idleTemp("GPU-b")
	assert.False(t, ok)

	h.save(slog.Default())
	back := loadIdleHistory(path)
	assert.Equal(t, h.GPUs, back.GPUs)

	require.NoError(t, os.WriteFile(path, []byte(`{"gpus": [1, 2]}`), 0o644))
	assert.Empty(t, loadIdleHistory(path).GPUs, "a damaged history costs the fit, nothing else")
	off := loadIdleHistory(IdleHistoryOff)
	off.remember("GPU-a", 30, 80)
	off.save(slog.Default()) // writes nothing
	assert.Empty(t, off.path)
}

// drift compares the baseline's halves: a settling GPU (power falling 3 W across the window) shows it, a
// flat one does not.
func TestBaselineDrift(t *testing.T) {
	t0 := time.Unix(1000, 0)
	var flat, falling []trace.PowerSample
	for i := range 500 { // 10 s at 50 Hz
		at := t0.Add(time.Duration(i) * 20 * time.Millisecond)
		flat = append(flat, trace.PowerSample{Time: trace.StampOf(at), PowerW: 78 + float64(i%3)*0.1})
		falling = append(falling, trace.PowerSample{Time: trace.StampOf(at), PowerW: 81 - 3*float64(i)/500})
	}
	t1 := t0.Add(10 * time.Second)
	require.NotNil(t, drift(flat, t0, t1))
	assert.InDelta(t, 0, *drift(flat, t0, t1), 0.11)
	assert.InDelta(t, -1.5, *drift(falling, t0, t1), 0.01, "the halves' medians are 1.5 W apart")
	assert.Nil(t, drift(flat[:10], t0, t1), "too few samples to say")
}
