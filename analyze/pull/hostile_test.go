package pull_test

import (
	"context"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lem-energy/lem/analyze/pull"
	"github.com/lem-energy/lem/internal/testutil"
	"github.com/lem-energy/lem/internal/trace"
)

// hostileInstance needs escaping in PromQL and in OpenMetrics: a quote and a backslash.
const hostileInstance = `we"ird\host:9464`

// hostileProm backfills a real Prometheus with one GPU's series of an exporter whose instance label needs escaping,
// a minute of 1 Hz power and counter with values a broken exporter or a relabelling mistake can store: NaN, ±Inf
// and negative numbers.
func hostileProm(t *testing.T, power, energy func(i int) string, flags ...string) (*testutil.Prometheus, time.Time) {
	t.Helper()
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		testutil.SkipOrFail(t, "promtool not installed (Debian package prometheus)")
	}
	t0 := time.Now().Add(-2 * time.Hour).Truncate(time.Second)
	esc := strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(hostileInstance)
	lbl := fmt.Sprintf(`gpu="0",uuid="GPU-h",instance="%s"`, esc)
	var om strings.Builder
	om.WriteString("# TYPE lem_gpu_power_watts gauge\n")
	for i := 0; i <= 60; i++ {
		fmt.Fprintf(&om, "lem_gpu_power_watts{source=\"sample\",%s} %s %d\n", lbl, power(i), t0.Add(time.Duration(i)*time.Second).Unix())
	}
	// A gauge: OpenMetrics refuses negative counters, a relabelled or restored series need not be one.
	om.WriteString("# TYPE lem_gpu_energy_joules_total gauge\n")
	for i := 0; i <= 60; i++ {
		fmt.Fprintf(&om, "lem_gpu_energy_joules_total{%s} %s %d\n", lbl, energy(i), t0.Add(time.Duration(i)*time.Second).Unix())
	}
	om.WriteString("# EOF\n")
	dir := t.TempDir()
	in := filepath.Join(dir, "h.om")
	require.NoError(t, os.WriteFile(in, []byte(om.String()), 0o644))
	data := filepath.Join(dir, "data")
	out, err := exec.Command(promtool, "tsdb", "create-blocks-from", "openmetrics", in, data).CombinedOutput()
	require.NoError(t, err, "%s", out)
	prom := testutil.StartPrometheus(t, "global:\n  scrape_interval: 1m\n",
		append([]string{"--storage.tsdb.path=" + data, "--storage.tsdb.retention.time=10y"}, flags...)...)
	return prom, t0
}

// A series holding NaN, ±Inf or negative values: the pull keeps every finite power sample and every usable counter
// reading, skips the others (counted in its stats), and the trace it writes is one the reader accepts. Before, a
// NaN power was written into a file every reader then refused ("without a finite power"), and a negative or NaN
// counter became a reading near 2^63 mJ.
func TestPullSkipsValuesNoTraceCanHold(t *testing.T) {
	power := func(i int) string {
		switch i {
		case 10:
			return "NaN"
		case 20:
			return "+Inf"
		case 30:
			return "-Inf"
		case 40:
			return "-5" // a negative power is kept: an offset calibration can make one
		}
		return "100"
	}
	energy := func(i int) string {
		switch i {
		case 15:
			return "NaN"
		case 25:
			return "-1"
		case 35:
			return "+Inf"
		}
		return fmt.Sprintf("%d", 1000+100*i)
	}
	prom, t0 := hostileProm(t, power, energy)
	cl, err := pull.New(pull.Options{URL: prom.URL, Chunk: 20 * time.Second, Workers: 2})
	require.NoError(t, err)
	from, to := t0.Add(-time.Second), t0.Add(61*time.Second)
	devs, err := cl.Devices(context.Background(), hostileInstance, from, to)
	require.NoError(t, err, "the instance's quote and backslash are escaped in the query")
	require.Len(t, devs, 1)
	path := filepath.Join(t.TempDir(), "h.parquet")
	w, err := trace.Create(path, cl.Environment(devs))
	require.NoError(t, err)
	st, err := cl.Stream(context.Background(), hostileInstance, from, to, devs, pull.WriterSink{W: w})
	require.NoError(t, err)
	require.NoError(t, w.Close())
	assert.Equal(t, int64(61-3), st.Samples, "61 samples, NaN and ±Inf skipped")
	assert.Equal(t, int64(61-3), st.Counters, "61 readings, NaN, −1 and +Inf skipped")
	assert.Equal(t, int64(3), st.SkippedSamples)
	assert.Equal(t, int64(3), st.SkippedCounters)
	tr, err := trace.ReadFile(path)
	require.NoError(t, err, "the pulled trace is readable")
	s := tr.GPUs[0]
	require.Len(t, s.Samples, 58)
	require.Len(t, s.Counters, 58)
	neg := 0
	for _, x := range s.Samples {
		require.False(t, math.IsNaN(x.PowerW) || math.IsInf(x.PowerW, 0))
		if x.PowerW < 0 {
			neg++
		}
	}
	assert.Equal(t, 1, neg)
	for _, c := range s.Counters {
		// 1000 J + 100 J/s: every reading kept is one the exporter meant, in mJ.
		i := c.Time.Sub(trace.StampOf(t0)) / time.Second
		assert.Equal(t, uint64(1000+100*i)*1000, c.EnergyMJ, "reading at %s", c.Time)
	}
}
