package trace

import (
	"errors"
	"io"
	"math"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/parquet-go/parquet-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lem-energy/lem/internal/meta"
)

// rowsOf reads a file with parquet-go's reflection-based row reader: the reference the columnar reader must
// reproduce exactly.
func rowsOf(t *testing.T, path string) []row {
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	st, _ := f.Stat()
	pf, err := parquet.OpenFile(f, st.Size())
	require.NoError(t, err)
	r := parquet.NewGenericReader[row](pf)
	defer r.Close()
	var out []row
	buf := make([]row, 1024)
	for {
		n, err := r.Read(buf)
		out = append(out, buf[:n]...)
		if errors.Is(err, io.EOF) {
			return out
		}
		require.NoError(t, err)
	}
}

func same(a, b float64) bool { return a == b || math.IsNaN(a) && math.IsNaN(b) }

func TestColumnarReaderMatchesRowReader(t *testing.T) {
	paths, _ := filepath.Glob(filepath.Join("..", "..", "testdata", "traces", "*.parquet"))
	// A file with every row kind and null pattern, several row groups.
	mixed := filepath.Join(t.TempDir(), "mixed.parquet")
	w, err := Create(mixed, meta.Environment{})
	require.NoError(t, err)
	t0 := time.Unix(1795735590, 0)
	for i := range 150_000 {
		ts := t0.Add(time.Duration(i) * 20 * time.Millisecond)
		require.NoError(t, w.WriteSamples(i%3, []PowerSample{{Time: StampOf(ts), PowerW: float64(i % 700)}}))
		if i%5 == 0 {
			require.NoError(t, w.WriteCounter(i%3, CounterReading{Time: StampOf(ts), EnergyMJ: uint64(i) * 10, ReadDuration: time.Millisecond}))
		}
		if i%7 == 0 {
			tm := NewTelemetry(StampOf(ts))
			tm.TemperatureC = float64(i % 90)
			if i%2 == 0 {
				tm.ClockReasons, tm.ClockReasonsValid = uint64(i%8), true
			}
			require.NoError(t, w.WriteTelemetry(i%3, tm))
		}
		if i%1000 == 0 {
			require.NoError(t, w.WriteEvent(Event{Time: ts, GPU: NoGPU, Type: EventPhase, RunID: "r", Name: "p",
				Attrs: map[string]string{"i": "x"}}))
		}
	}
	require.NoError(t, w.Close())
	paths = append(paths, mixed)
	require.GreaterOrEqual(t, len(paths), 3)
	for _, p := range paths {
		t.Run(filepath.Base(p), func(t *testing.T) {
			tr, err := ReadFile(p)
			require.NoError(t, err)
			rows := rowsOf(t, p)
			idx := map[[2]int]int{} // (gpu, kind) → next position
			events := 0
			for _, r := range rows {
				g := int(r.GPU)
				s := tr.GPUs[g]
				switch r.Kind {
				case KindSample:
					k := [2]int{g, 0}
					got := s.Samples[idx[k]]
					idx[k]++
					require.True(t, got.Time.Equal(StampOf(r.Time)) && got.PowerW == *r.PowerW, "sample %v vs %v", got, r)
				case KindCounter:
					k := [2]int{g, 1}
					got := s.Counters[idx[k]]
					idx[k]++
					require.True(t, got.Time.Equal(StampOf(r.Time)) && got.EnergyMJ == uint64(*r.EnergyMJ))
					if r.ReadNS != nil {
						require.Equal(t, time.Duration(*r.ReadNS), got.ReadDuration)
					}
				case KindTelemetry:
					k := [2]int{g, 2}
					got := s.Telemetry[idx[k]]
					idx[k]++
					require.True(t, got.Time.Equal(StampOf(r.Time)))
					require.True(t, same(got.TemperatureC, val(r.TemperatureC)) && same(got.InstantPowerW, val(r.InstantPowerW)) &&
						same(got.SMClockHz, val(r.SMClockHz)) && same(got.PowerLimitW, val(r.PowerLimitW)))
					require.Equal(t, r.ClockReasons != nil, got.ClockReasonsValid)
				case KindProcessSample:
					k := [2]int{g, 3}
					got := s.ProcessSamples[idx[k]]
					idx[k]++
					require.True(t, got.Time.Equal(r.Time) && int64(got.PID) == *r.PID, "process sample %v vs %v", got, r)
				case KindProcess:
					k := [2]int{g, 4}
					got := s.Processes[idx[k]]
					idx[k]++
					require.True(t, got.Time.Equal(r.Time) && int64(got.PID) == *r.PID, "process %v vs %v", got, r)
				case KindEvent:
					e := tr.Events[events]
					events++
					require.True(t, e.Time.Equal(r.Time))
					require.Equal(t, str(r.Event), e.Type)
					require.Equal(t, str(r.Name), e.Name)
					require.Equal(t, str(r.RunID), e.RunID)
				}
			}
			total := events
			for _, s := range tr.GPUs {
				total += len(s.Samples) + len(s.Counters) + len(s.Telemetry) + len(s.ProcessSamples) + len(s.Processes)
			}
			assert.Equal(t, len(rows), total, "every row read once")
			assert.Equal(t, len(tr.Events), events)
		})
	}
}
