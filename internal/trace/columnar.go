package trace

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"runtime"
	"sync"
	"time"

	"github.com/parquet-go/parquet-go"
)

// The reader decodes each row group column by column straight from the pages' typed buffers (no per-row
// reflection), row groups in parallel: ingest runs at tens of millions of samples per second.

// column is one decoded column chunk: dense per row, with validity for optional columns.
type column struct {
	i64   []int64
	f64   []float64 // NaN where null
	str   []string
	valid []bool
}

// fill expands a page's non-null values into rows [off, off+rows) following its definition levels.
func fill[T any](dst []T, valid []bool, off int, def []byte, vals []T) (int, error) {
	if len(def) == 0 {
		if off+len(vals) > len(dst) {
			return 0, errors.New("page overruns its row group")
		}
		copy(dst[off:], vals)
		for i := range vals {
			valid[off+i] = true
		}
		return len(vals), nil
	}
	if off+len(def) > len(dst) {
		return 0, errors.New("page overruns its row group")
	}
	j := 0
	for i, d := range def {
		if d > 0 {
			if j >= len(vals) {
				return 0, errors.New("fewer values than definition levels")
			}
			dst[off+i] = vals[j]
			valid[off+i] = true
			j++
		}
	}
	return len(def), nil
}

// dictStrings converts a dictionary page to strings once per column chunk.
func dictStrings(d parquet.Dictionary) []string {
	v := d.Page().Data()
	data, offs := v.ByteArray()
	out := make([]string, max(len(offs)-1, 0))
	for i := range out {
		out[i] = string(data[offs[i]:offs[i+1]])
	}
	return out
}

// readColumn decodes a column chunk of n rows.
func readColumn(cc parquet.ColumnChunk, n int) (*column, error) {
	c := &column{valid: make([]bool, n)}
	kind := cc.Type().Kind()
	switch kind {
	case parquet.Int32, parquet.Int64:
		c.i64 = make([]int64, n)
	case parquet.Double:
		c.f64 = make([]float64, n)
		for i := range c.f64 {
			c.f64[i] = math.NaN()
		}
	case parquet.ByteArray:
		c.str = make([]string, n)
	default:
		return nil, fmt.Errorf("unexpected physical type %s", kind)
	}
	pages := cc.Pages()
	defer pages.Close()
	off := 0
	var dict parquet.Dictionary
	var dictStr []string
	for {
		p, err := pages.ReadPage()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, err
		}
		def := p.DefinitionLevels()
		data := p.Data()
		var k int
		if d := p.Dictionary(); d != nil {
			if d != dict {
				dict = d
				if kind == parquet.ByteArray {
					dictStr = dictStrings(d)
				}
			}
			idx := data.Int32()
			switch kind {
			case parquet.ByteArray:
				vals := make([]string, len(idx))
				for i, x := range idx {
					if int(x) >= len(dictStr) {
						return nil, fmt.Errorf("dictionary index %d out of range", x)
					}
					vals[i] = dictStr[x]
				}
				k, err = fill(c.str, c.valid, off, def, vals)
			default:
				return nil, fmt.Errorf("dictionary-encoded %s column", kind)
			}
		} else {
			switch kind {
			case parquet.Int32:
				v32 := data.Int32()
				vals := make([]int64, len(v32))
				for i, x := range v32 {
					vals[i] = int64(x)
				}
				k, err = fill(c.i64, c.valid, off, def, vals)
			case parquet.Int64:
				k, err = fill(c.i64, c.valid, off, def, data.Int64())
			case parquet.Double:
				k, err = fill(c.f64, c.valid, off, def, data.Double())
			case parquet.ByteArray:
				b, offs := data.ByteArray()
				vals := make([]string, max(len(offs)-1, 0))
				for i := range vals {
					vals[i] = string(b[offs[i]:offs[i+1]])
				}
				k, err = fill(c.str, c.valid, off, def, vals)
			}
		}
		parquet.Release(p)
		if err != nil {
			return nil, err
		}
		off += k
	}
	if off != n {
		return nil, fmt.Errorf("%d of %d rows decoded", off, n)
	}
	return c, nil
}

// part is what one row group holds.
type part struct {
	gpus   map[int]*Series
	events []Event
}

var columnNames = []string{"kind", "gpu", "time", "power_w", "energy_mj", "read_duration_ns", "instant_power_w",
	"average_power_w", "temperature_c", "sm_clock_hz", "mem_clock_hz", "util_gpu_ratio", "util_mem_ratio",
	"mem_used_bytes", "power_limit_w", "clock_event_reasons", "event", "run_id", "name", "attrs"}

func readRowGroup(pf *parquet.File, rg parquet.RowGroup) (*part, error) {
	n := int(rg.NumRows())
	cols := map[string]*column{}
	chunks := rg.ColumnChunks()
	for _, name := range columnNames {
		leaf, ok := pf.Schema().Lookup(name)
		if !ok {
			if name == "kind" || name == "gpu" || name == "time" {
				return nil, fmt.Errorf("%w: column %q missing", ErrNotTrace, name)
			}
			continue // a column this file lacks is null throughout
		}
		c, err := readColumn(chunks[leaf.ColumnIndex], n)
		if err != nil {
			return nil, fmt.Errorf("column %s: %w", name, err)
		}
		cols[name] = c
	}
	// Column pointers resolved once: nil for a column the file lacks.
	f := func(c *column, i int) float64 {
		if c != nil {
			return c.f64[i]
		}
		return math.NaN()
	}
	str := func(c *column, i int) string {
		if c != nil {
			return c.str[i]
		}
		return ""
	}
	i64 := func(c *column, i int) (int64, bool) {
		if c != nil && c.valid[i] {
			return c.i64[i], true
		}
		return 0, false
	}
	p := &part{gpus: map[int]*Series{}}
	power, energyMJ, readNS := cols["power_w"], cols["energy_mj"], cols["read_duration_ns"]
	inst, avg, temp, sm, mem := cols["instant_power_w"], cols["average_power_w"], cols["temperature_c"], cols["sm_clock_hz"], cols["mem_clock_hz"]
	ug, um, used, limit, reasons := cols["util_gpu_ratio"], cols["util_mem_ratio"], cols["mem_used_bytes"], cols["power_limit_w"], cols["clock_event_reasons"]
	evType, runID, evName, attrs := cols["event"], cols["run_id"], cols["name"], cols["attrs"]
	series := func(g int) *Series {
		sr := p.gpus[g]
		if sr == nil {
			sr = &Series{}
			p.gpus[g] = sr
		}
		return sr
	}
	kinds, gpus, times := cols["kind"].str, cols["gpu"].i64, cols["time"].i64
	// Size each GPU's slices once.
	type counts struct{ s, c, t int }
	per := map[int]*counts{}
	for i := 0; i < n; i++ {
		g := int(gpus[i])
		c := per[g]
		if c == nil {
			c = &counts{}
			per[g] = c
		}
		switch kinds[i] {
		case KindSample:
			c.s++
		case KindCounter:
			c.c++
		case KindTelemetry:
			c.t++
		}
	}
	for g, c := range per {
		if c.s+c.c+c.t == 0 {
			continue // events only
		}
		p.gpus[g] = &Series{Samples: make([]PowerSample, 0, c.s), Counters: make([]CounterReading, 0, c.c),
			Telemetry: make([]Telemetry, 0, c.t)}
	}
	for i := 0; i < n; i++ {
		ts := time.Unix(0, times[i]).UTC()
		g := int(gpus[i])
		switch kinds[i] {
		case KindSample:
			pw := f(power, i)
			if math.IsNaN(pw) {
				return nil, fmt.Errorf("sample row at %s without power_w", ts)
			}
			sr := series(g)
			sr.Samples = append(sr.Samples, PowerSample{Time: ts, PowerW: pw})
		case KindCounter:
			e, ok := i64(energyMJ, i)
			if !ok || e < 0 {
				return nil, fmt.Errorf("counter row at %s without a valid energy_mj", ts)
			}
			c := CounterReading{Time: ts, EnergyMJ: uint64(e)}
			if d, ok := i64(readNS, i); ok {
				c.ReadDuration = time.Duration(d)
			}
			sr := series(g)
			sr.Counters = append(sr.Counters, c)
		case KindTelemetry:
			tm := Telemetry{Time: ts, InstantPowerW: f(inst, i), AveragePowerW: f(avg, i), TemperatureC: f(temp, i),
				SMClockHz: f(sm, i), MemClockHz: f(mem, i), UtilGPU: f(ug, i), UtilMem: f(um, i), MemUsedBytes: f(used, i),
				PowerLimitW: f(limit, i)}
			if r, ok := i64(reasons, i); ok {
				tm.ClockReasons, tm.ClockReasonsValid = uint64(r), true
			}
			sr := series(g)
			sr.Telemetry = append(sr.Telemetry, tm)
		case KindEvent:
			e := Event{Time: ts, GPU: g, Type: str(evType, i), RunID: str(runID, i), Name: str(evName, i)}
			if a := str(attrs, i); a != "" {
				if err := json.Unmarshal([]byte(a), &e.Attrs); err != nil {
					return nil, fmt.Errorf("event %q at %s: bad attrs: %w", e.Name, ts, err)
				}
			}
			p.events = append(p.events, e)
		default:
			return nil, fmt.Errorf("unknown row kind %q at %s", kinds[i], ts)
		}
	}
	return p, nil
}

// readRows decodes every row group (in parallel) and appends them to t in file order.
func readRows(pf *parquet.File, t *Trace) error {
	rgs := pf.RowGroups()
	parts := make([]*part, len(rgs))
	errs := make([]error, len(rgs))
	next := make(chan int)
	var wg sync.WaitGroup
	for range min(runtime.GOMAXPROCS(0), max(len(rgs), 1)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				parts[i], errs[i] = readRowGroup(pf, rgs[i])
			}
		}()
	}
	for i := range rgs {
		next <- i
	}
	close(next)
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("reading rows: %w", err)
	}
	// Concatenate each GPU's parts (in file order) in parallel, each slice sized once.
	gpuSet := map[int]bool{}
	for _, p := range parts {
		for g := range p.gpus {
			gpuSet[g] = true
		}
		t.Events = append(t.Events, p.events...)
	}
	for g := range gpuSet {
		t.Series(g)
	}
	for g, dst := range t.GPUs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var ns, nc, nt int
			for _, p := range parts {
				if s := p.gpus[g]; s != nil {
					ns, nc, nt = ns+len(s.Samples), nc+len(s.Counters), nt+len(s.Telemetry)
				}
			}
			dst.Samples = make([]PowerSample, 0, ns)
			dst.Counters = make([]CounterReading, 0, nc)
			dst.Telemetry = make([]Telemetry, 0, nt)
			for _, p := range parts {
				if s := p.gpus[g]; s != nil {
					dst.Samples = append(dst.Samples, s.Samples...)
					dst.Counters = append(dst.Counters, s.Counters...)
					dst.Telemetry = append(dst.Telemetry, s.Telemetry...)
				}
			}
			dst.Sort()
		}()
	}
	wg.Wait()
	return nil
}
