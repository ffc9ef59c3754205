package sampler

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lem-energy/lem/internal/gpu"
	"github.com/lem-energy/lem/internal/meta"
	"github.com/lem-energy/lem/internal/trace"
)

// scripted is a device whose answers the test sets.
type scripted struct {
	samples []trace.PowerSample
	energy  []uint64
}

func (d *scripted) Info() meta.Device { return meta.Device{Index: 0} }
func (d *scripted) ReadEnergy() (trace.CounterReading, error) {
	e := d.energy[0]
	d.energy = d.energy[1:]
	return trace.CounterReading{Time: trace.StampOf(time.Now()), EnergyMJ: e}, nil
}
func (d *scripted) PowerSamples(time.Time) ([]trace.PowerSample, error) { return d.samples, nil }
func (d *scripted) Telemetry() (trace.Telemetry, error) {
	return trace.NewTelemetry(trace.StampOf(time.Now())), nil
}
func (d *scripted) Processes() ([]gpu.Process, error) { return nil, nil }

type oneDevice struct{ d gpu.Device }

func (s oneDevice) Environment() meta.Environment { return meta.Environment{} }
func (s oneDevice) Devices() []gpu.Device         { return []gpu.Device{s.d} }
func (s oneDevice) Clock() gpu.Clock              { return gpu.WallClock{} }
func (s oneDevice) Close() error                  { return nil }

func samplesAt(t0 time.Time, ms ...int) []trace.PowerSample {
	out := make([]trace.PowerSample, len(ms))
	for i, m := range ms {
		out[i] = trace.PowerSample{Time: trace.StampOf(t0.Add(time.Duration(m) * time.Millisecond)), PowerW: 100}
	}
	return out
}

func TestGapAndOverrunAccounting(t *testing.T) {
	dev := &scripted{}
	s, err := New(oneDevice{dev}, nil, Config{}, nil)
	require.NoError(t, err)
	d := s.devs[0]
	t0 := time.Now()

	dev.samples = samplesAt(t0, 0, 20, 40, 100, 120) // 60 ms hole inside one batch: the driver's
	d.drain()
	dev.samples = samplesAt(t0, 140, 160) // next drain, contiguous
	d.drain()
	dev.samples = samplesAt(t0, 260, 280) // 100 ms hole at the drain boundary
	d.drain()
	d.lastDrain = time.Now().Add(-5 * time.Second) // a drain delayed past the 2.4 s buffer
	dev.samples = samplesAt(t0, 3000, 3020)
	d.drain()

	st := d.snapshot()
	assert.Equal(t, uint64(11), st.SamplesCaptured)
	assert.Equal(t, uint64(3), st.Gaps)
	assert.Equal(t, uint64(2), st.DrainGaps)
	assert.Equal(t, uint64(1), st.Overruns)
	assert.Equal(t, uint64(2+4+135), st.MissedSamples)
	// 3.02 s at 100 W, bridged across the gaps.
	assert.InDelta(t, 302.0, st.SampledEnergyJ, 1e-9)
}

func TestCounterResetNeverLosesOrNegatesEnergy(t *testing.T) {
	dev := &scripted{energy: []uint64{50_000, 60_000, 70_000, 2_000, 12_000}}
	s, err := New(oneDevice{dev}, nil, Config{}, nil)
	require.NoError(t, err)
	sub := s.Subscribe("t", 64)
	d := s.devs[0]
	var prev float64
	for range 5 {
		_, err := d.readCounter()
		require.NoError(t, err)
		st := d.snapshot()
		require.GreaterOrEqual(t, st.EnergyJ, prev)
		prev = st.EnergyJ
	}
	sub.Close()
	st := d.snapshot()
	assert.Equal(t, uint64(1), st.CounterResets)
	assert.InDelta(t, 10+10+2+10, st.EnergyJ, 1e-9)
	var resets int
	for r := range sub.C() {
		if r.Kind == KindEvent && r.Event.Type == trace.EventCounterReset {
			resets++
		}
	}
	assert.Equal(t, 1, resets)
}
