package analyze_test

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lem-energy/lem/analyze"
	"github.com/lem-energy/lem/analyze/energy"
	"github.com/lem-energy/lem/internal/testutil"
	"github.com/lem-energy/lem/internal/trace"
)

func TestPhaseTablesOnRealRecordings(t *testing.T) {
	cases := []struct {
		trace    string
		samples  int
		expected int
		gaps     int
		phases   []string
		lines    []string
	}{
		{"h200-shape", 2067, 2074, 3, []string{"idle1", "heavy", "idle2", "medium", "idle3"},
			[]string{"heavy    4.008   2654.4  2702.0", "idle2    4.004    544.6   498.3"}},
		{"h200-llm", 3814, 3814, 0, []string{"load", "idle", "bs1", "bs8", "bs32"},
			[]string{"bs32   11.123   1520.6  1522.2"}},
		{"h100-gpuload", 1550, 1556, 5, []string{"idle1", "heavy", "idle2", "medium", "idle3"}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.trace, func(t *testing.T) {
			tr, err := trace.ReadFile(testutil.TracePath(tc.trace))
			require.NoError(t, err)
			gps := analyze.PhaseEnergies(tr, energy.Options{})
			require.Len(t, gps, 1)
			c := gps[0].Capture
			assert.Equal(t, [3]int{tc.samples, tc.expected, tc.gaps}, [3]int{c.Samples, c.Expected, c.Gaps})
			var names []string
			for _, p := range gps[0].Phases {
				names = append(names, p.Phase)
				assert.Empty(t, p.Notes)
			}
			assert.Equal(t, tc.phases, names)
			var b strings.Builder
			require.NoError(t, analyze.WritePhaseTables(&b, gps))
			for _, l := range tc.lines {
				assert.Contains(t, b.String(), l)
			}
		})
	}
}
