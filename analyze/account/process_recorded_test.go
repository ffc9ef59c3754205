package account_test

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lem-energy/lem/analyze/account"
	"github.com/lem-energy/lem/internal/testutil"
	"github.com/lem-energy/lem/internal/trace"
)

// shareRun is scripts/gpu/share.py's own log of the recorded run (testdata/traces/h200-share.json): each phase's
// window and, per worker, its PID, kind and the units of work it finished inside the window.
type shareRun struct {
	GPU    int `json:"gpu"`
	Phases []struct {
		Name    string  `json:"name"`
		Start   float64 `json:"start"`
		End     float64 `json:"end"`
		Workers []struct {
			Kind  string `json:"kind"`
			PID   uint32 `json:"pid"`
			Units int    `json:"units"`
		} `json:"workers"`
	} `json:"phases"`
	Idle struct {
		Start float64 `json:"start"`
		End   float64 `json:"end"`
	} `json:"idle"`
}

func unixTime(s float64) time.Time {
	sec, frac := math.Modf(s)
	return time.Unix(int64(sec), int64(math.Round(frac*1e9))).UTC()
}

// The recording of one H200 (GPU 1) that three known workloads used alone and then time-shared
// (scripts/gpu/share.py under lem-run record, docs/RESULTS.md §5.4), split among its processes by the accounting.
// Against the script's own log: in every measured phase the processes charged are exactly that phase's workers;
// alone, the worker gets at least 95 % of the energy above the idle power measured in the script's idle window;
// processes, idle and unattributed add up to the GPU's energy exactly, that energy is the plain hybrid's at the
// meter's lag, and within 5 % of the counter interpolated between its 1 s reads (the edges fall between reads);
// and the per-unit-of-work costs RESULTS §5.4 quotes (each sharer's charge over what the same work cost alone,
// share.py's analysis re-done here) come out within their rounding.
func TestSharedGPURecorded(t *testing.T) {
	tr, err := trace.ReadFile(testutil.TracePath("h200-share"))
	require.NoError(t, err)
	raw, err := os.ReadFile(filepath.Join(testutil.Root(), "testdata", "traces", "h200-share.json"))
	require.NoError(t, err)
	var run shareRun
	require.NoError(t, json.Unmarshal(raw, &run))
	require.Equal(t, []int{run.GPU}, tr.GPUIndices())
	s := tr.GPUs[run.GPU]
	require.Len(t, run.Phases, 5)

	// The idle power, plainly: the counter's mean power over the script's idle window (no context on the GPU).
	ia, ib := unixTime(run.Idle.Start), unixTime(run.Idle.End)
	plainIdleW := testutil.PlainCounter(s.Counters, ia, ib) / ib.Sub(ia).Seconds()
	assert.InDelta(t, 78.8, plainIdleW, 0.5, "idle W over the script's idle window")

	meters := account.Meters(tr)
	lag, _ := meters[run.GPU].UsedLag()
	assert.Equal(t, 40*time.Millisecond, lag, "the counter lag lem-run reported for this recording")
	whole, phases := account.TraceProcesses(tr, meters, nil)
	require.Len(t, whole, 1)
	assert.InDelta(t, plainIdleW, float64(whole[0].IdleW), 0.5, "the accounting's idle W against the idle window's")

	// The accounting's phases are the trace's phase markers: the script's phase windows, each to the marker's
	// millisecond or so (the marker went out just before the window's clock was read).
	byName := map[string]account.PhaseProcesses{}
	for _, p := range phases {
		if _, dup := byName[p.Name]; !dup {
			byName[p.Name] = p
		}
	}
	soloPerUnit := map[string]float64{}      // kind → J per unit of work, alone
	ratio := map[string]map[string]float64{} // phase → kind → charged ÷ alone for the same work
	total := map[string]float64{}            // phase → all workers' charge ÷ alone for the same work
	for _, ph := range run.Phases {
		p, ok := byName[ph.Name]
		require.True(t, ok, "phase %s in the trace", ph.Name)
		assert.WithinDuration(t, unixTime(ph.Start), p.Start, 20*time.Millisecond, "%s start", ph.Name)
		assert.WithinDuration(t, unixTime(ph.End), p.End, 20*time.Millisecond, "%s end", ph.Name)
		require.Len(t, p.GPUs, 1, ph.Name)
		g := p.GPUs[0]

		// Who was charged: exactly the phase's workers.
		var want, got []uint32
		charged := map[uint32]float64{}
		for _, w := range ph.Workers {
			want = append(want, w.PID)
		}
		var sum float64
		for _, pr := range g.Processes {
			sum += float64(pr.EnergyJ)
			if pr.EnergyJ > 0 {
				got = append(got, pr.PID)
				charged[pr.PID] = float64(pr.EnergyJ)
			}
		}
		slices.Sort(want)
		slices.Sort(got)
		assert.Equal(t, want, got, "%s: PIDs charged", ph.Name)

		// Conservation: the split adds up to the GPU's energy, which is the plain hybrid's.
		gpuJ := float64(g.EnergyJ)
		assert.InEpsilon(t, gpuJ, sum+float64(g.IdleJ)+float64(g.UnattributedJ), 1e-9, "%s: processes + idle + unattributed", ph.Name)
		assert.Zero(t, float64(g.UnattributedJ), "%s: the driver gave per-process utilization", ph.Name)
		plainJ := testutil.PlainHybrid(s.Counters, s.Samples, lag, p.Start, p.End)
		assert.InEpsilon(t, plainJ, gpuJ, 1e-6, "%s: GPU energy against the plain hybrid", ph.Name)
		assert.InEpsilon(t, testutil.PlainCounter(s.Counters, p.Start, p.End), gpuJ, 0.05, "%s: against the counter", ph.Name)

		aboveIdle := plainJ - plainIdleW*p.End.Sub(p.Start).Seconds()
		if len(ph.Workers) == 1 {
			w := ph.Workers[0]
			assert.GreaterOrEqual(t, charged[w.PID], 0.95*aboveIdle, "%s: the solo worker's share of %.1f J above idle", ph.Name, aboveIdle)
			assert.LessOrEqual(t, charged[w.PID], 1.01*aboveIdle, "%s: no more than the energy above idle", ph.Name)
			soloPerUnit[w.Kind] = charged[w.PID] / float64(w.Units)
			continue
		}
		// share.py's analysis: a sharer's charge against its units of work at the solo cost per unit.
		ratio[ph.Name] = map[string]float64{}
		var j, alone float64
		for _, w := range ph.Workers {
			per, ok := soloPerUnit[w.Kind]
			require.True(t, ok, "%s measured alone before %s", w.Kind, ph.Name)
			ratio[ph.Name][w.Kind] = charged[w.PID] / (per * float64(w.Units))
			j += charged[w.PID]
			alone += per * float64(w.Units)
		}
		total[ph.Name] = j / alone
	}

	// docs/RESULTS.md §5.4, as printed there (three decimals).
	quoted := map[string]map[string]float64{
		"shared2": {"heavy": 0.952, "memory": 1.199},
		"shared3": {"heavy": 1.338, "memory": 0.597, "gen": 1.354},
	}
	quotedTotal := map[string]float64{"shared2": 1.065, "shared3": 1.098}
	for ph, kinds := range quoted {
		for k, v := range kinds {
			assert.InDelta(t, v, ratio[ph][k], 0.0005, "%s %s: charged ÷ alone", ph, k)
		}
		assert.InDelta(t, quotedTotal[ph], total[ph], 0.0005, "%s: all sharers' charge ÷ alone", ph)
	}
	t.Logf("solo J per unit %v; ratios %v; totals %v", soloPerUnit, ratio, total)
}
