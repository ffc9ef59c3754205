package trace

import (
	"bytes"
	"slices"
	"testing"
	"time"

	"github.com/lem-energy/lem/internal/meta"
)

// A reader hands every GPU's rows of each kind over in time order, whatever order the file holds them in: in
// order, out of order inside a row group, and out of order only across the seam between two row groups (the
// reader checks the seams itself and sorts only then). The rows are the ones written, each once.
func TestReadSortsOutOfOrderRows(t *testing.T) {
	base := time.Date(2026, 11, 29, 0, 0, 0, 0, time.UTC)
	n := rowGroupRows + rowGroupRows/2 // two row groups of samples
	at := func(i int) Stamp { return StampOf(base.Add(time.Duration(i) * 20 * time.Millisecond)) }
	orders := map[string]func(i int) int{
		"in order": func(i int) int { return i },
		// the second row group's samples come before the first's: each row group is in order, the seam is not
		"seam": func(i int) int {
			if i < rowGroupRows {
				return i + n - rowGroupRows
			}
			return i - rowGroupRows
		},
		"inside": func(i int) int { // neighbours swapped in the middle of the first row group
			switch i {
			case 1000:
				return 1001
			case 1001:
				return 1000
			}
			return i
		},
	}
	for name, pos := range orders {
		t.Run(name, func(t *testing.T) {
			var buf bytes.Buffer
			w, err := NewStreamWriter(&buf, meta.Environment{})
			if err != nil {
				t.Fatal(err)
			}
			want := map[int][]int64{}
			for g := range 2 {
				ss := make([]PowerSample, n)
				for i := range ss {
					p := pos(i)
					ss[i] = PowerSample{Time: at(p) + Stamp(g), PowerW: float64(p)}
					want[g] = append(want[g], int64(ss[i].Time))
				}
				if err := w.WriteSamples(g, ss); err != nil {
					t.Fatal(err)
				}
				for i := range 3 { // counters: the last two swapped
					j := []int{0, 2, 1}[i]
					if err := w.WriteCounter(g, CounterReading{Time: at(j * 100), EnergyMJ: uint64(j)}); err != nil {
						t.Fatal(err)
					}
				}
			}
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			tr, err := read(bytes.NewReader(buf.Bytes()), int64(buf.Len()), ReadOptions{})
			if err != nil {
				t.Fatal(err)
			}
			for g := range 2 {
				s := tr.GPUs[g]
				got := make([]int64, len(s.Samples))
				for i, x := range s.Samples {
					got[i] = int64(x.Time)
					if x.PowerW != float64((int64(x.Time)-int64(g)-int64(at(0)))/int64(20*time.Millisecond)) {
						t.Fatalf("GPU %d sample %d: power %v does not belong to its time", g, i, x.PowerW)
					}
				}
				if !slices.IsSorted(got) {
					t.Fatalf("GPU %d samples out of order", g)
				}
				slices.Sort(want[g])
				if !slices.Equal(got, want[g]) {
					t.Fatalf("GPU %d: samples read are not the ones written", g)
				}
				var mj []uint64
				for _, c := range s.Counters {
					mj = append(mj, c.EnergyMJ)
				}
				if !slices.Equal(mj, []uint64{0, 1, 2}) {
					t.Fatalf("GPU %d counters %v, want 0 1 2", g, mj)
				}
			}
		})
	}
}

// A seam across a row group without the GPU's rows of a kind: GPU 0's counter readings lie in row groups 0 and 2
// (none in 1), the later group's reading earlier in time; the read sorts them.
func TestReadSortsAcrossRowGroupWithoutTheKind(t *testing.T) {
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var buf bytes.Buffer
	w, err := NewStreamWriter(&buf, meta.Environment{})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.WriteCounter(0, CounterReading{Time: StampOf(base.Add(100 * time.Second)), EnergyMJ: 2}); err != nil {
		t.Fatal(err)
	}
	for k := range 3 { // row groups 0 (the reading and samples), 1 (samples only), 2 (samples, then the reading)
		ss := make([]PowerSample, []int{rowGroupRows - 1, rowGroupRows, 10}[k])
		for i := range ss {
			ss[i] = PowerSample{Time: StampOf(base.Add(time.Duration(k*rowGroupRows+i) * time.Millisecond)), PowerW: 1}
		}
		if err := w.WriteSamples(1, ss); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.WriteCounter(0, CounterReading{Time: StampOf(base.Add(50 * time.Second)), EnergyMJ: 1}); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	pf, _, _, err := open(bytes.NewReader(buf.Bytes()), int64(buf.Len()))
	if err != nil {
		t.Fatal(err)
	}
	if n := len(pf.RowGroups()); n != 3 {
		t.Fatalf("%d row groups, want 3", n)
	}
	tr, err := read(bytes.NewReader(buf.Bytes()), int64(buf.Len()), ReadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cs := tr.GPUs[0].Counters
	if len(cs) != 2 || cs[0].EnergyMJ != 1 || cs[1].EnergyMJ != 2 {
		t.Fatalf("counters %v", cs)
	}
}
