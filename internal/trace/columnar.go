package trace

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"runtime"
	"sync"
	"time"

	"github.com/parquet-go/parquet-go"
)

// The reader decodes each row group column by column straight from the pages' typed buffers (no per-row
// reflection), row groups in parallel, in two passes: kinds and GPUs first, so each GPU's slices are allocated
// once at their final size; then every row straight into its place. Ingest runs at tens of millions of samples
// per second.

// column is one decoded column chunk: dense per row, with validity for optional columns.
type column struct {
	i64 []int64
	f64 []float64 // stale where null (valid says which rows hold a value)
	// A string column is each row's index into strs (-1: null): no pointer per row, so clearing and filling it
	// costs no write barriers while the collector runs (a []string per row did, for every row of every row group
	// of the event columns, however few events they held).
	strIdx []int32
	strs   []string
	valid  []bool
	// A page's values before definition levels place them, reused page after page (a fresh slice per page was
	// most of the decoder's garbage).
	pageI64 []int64
	pageIdx []int32
}

// str is row i's string ("" when null).
func (c *column) str(i int) string {
	if k := c.strIdx[i]; k >= 0 {
		return c.strs[k]
	}
	return ""
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

// appendDictStrings appends a dictionary page's strings to out, once per column chunk.
func appendDictStrings(out []string, d parquet.Dictionary) []string {
	v := d.Page().Data()
	data, offs := v.ByteArray()
	for i := 0; i+1 < len(offs); i++ {
		out = append(out, string(data[offs[i]:offs[i+1]]))
	}
	return out
}

// grow returns xs resized to n, reusing its array when large enough.
func grow[T any](xs []T, n int) []T {
	if cap(xs) >= n {
		return xs[:n]
	}
	return make([]T, n)
}

// readColumn decodes a column chunk of n rows into c (reusing its buffers: row groups are decoded by a few
// workers, and fresh buffers per row group would churn gigabytes on large traces). One long function on
// purpose: it is the page loop every value of a trace goes through, and its cases share the page's state.
func readColumn(cc parquet.ColumnChunk, n int, c *column) (_ *column, err error) {
	defer recoverLibrary(&err)
	if c == nil {
		c = &column{}
	}
	c.valid = grow(c.valid, n)
	clear(c.valid)
	kind := cc.Type().Kind()
	switch kind {
	case parquet.Int32, parquet.Int64:
		c.i64 = grow(c.i64, n)
	case parquet.Double:
		c.f64 = grow(c.f64, n) // not cleared: a row group's worth of NaNs per column was a fifth of its decoding
	case parquet.ByteArray:
		c.strIdx = grow(c.strIdx, n)
		for i := range c.strIdx {
			c.strIdx[i] = -1
		}
		clear(c.strs)
		c.strs = c.strs[:0]
	default:
		return nil, fmt.Errorf("unexpected physical type %s", kind)
	}
	pages := cc.Pages()
	defer pages.Close()
	off := 0
	var dict parquet.Dictionary
	dictAt, dictLen := 0, 0 // where the current dictionary's strings start in c.strs, and how many
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
					dictAt = len(c.strs)
					c.strs = appendDictStrings(c.strs, d)
					dictLen = len(c.strs) - dictAt
				}
			}
			idx := data.Int32()
			switch kind {
			case parquet.ByteArray:
				vals := grow(c.pageIdx, len(idx))
				c.pageIdx = vals
				for i, x := range idx {
					if x < 0 || int(x) >= dictLen { // not past it into a plain page's strings
						return nil, fmt.Errorf("dictionary index %d out of range", x)
					}
					vals[i] = int32(dictAt) + x
				}
				k, err = fill(c.strIdx, c.valid, off, def, vals)
			default:
				return nil, fmt.Errorf("dictionary-encoded %s column", kind)
			}
		} else {
			switch kind {
			case parquet.Int32:
				v32 := data.Int32()
				vals := grow(c.pageI64, len(v32))
				c.pageI64 = vals
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
				vals := grow(c.pageIdx, max(len(offs)-1, 0))
				c.pageIdx = vals
				for i := range vals {
					vals[i] = int32(len(c.strs))
					c.strs = append(c.strs, string(b[offs[i]:offs[i+1]]))
				}
				k, err = fill(c.strIdx, c.valid, off, def, vals)
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

var columnNames = []string{"kind", "gpu", "time", "power_w", "energy_mj", "read_duration_ns", "instant_power_w",
	"average_power_w", "temperature_c", "sm_clock_hz", "mem_clock_hz", "util_gpu_ratio", "util_mem_ratio",
	"mem_used_bytes", "power_limit_w", "clock_event_reasons", "performance_state", "event", "run_id", "name", "attrs",
	"pid", "process_sm_ratio", "process_mem_ratio", "process_enc_ratio", "process_dec_ratio", "process_memory_bytes",
	"gpu_instance", "compute_instance", "command", "container_runtime", "container_id", "container_name", "pod_uid",
	"pod_namespace", "pod_name"}

// kindColumns are the columns only one row kind uses (kind, gpu and time are every row's): a read that skips the
// kind does not decode them.
var kindColumns = map[string]uint8{"power_w": codeSample, "energy_mj": codeCounter, "read_duration_ns": codeCounter,
	"instant_power_w": codeTelemetry, "average_power_w": codeTelemetry, "temperature_c": codeTelemetry,
	"sm_clock_hz": codeTelemetry, "mem_clock_hz": codeTelemetry, "util_gpu_ratio": codeTelemetry,
	"util_mem_ratio": codeTelemetry, "mem_used_bytes": codeTelemetry, "power_limit_w": codeTelemetry,
	"clock_event_reasons": codeTelemetry, "performance_state": codeTelemetry, "event": codeEvent, "run_id": codeEvent,
	"name": codeEvent, "attrs": codeEvent, "process_sm_ratio": codeProcessSample, "process_mem_ratio": codeProcessSample,
	"process_enc_ratio": codeProcessSample, "process_dec_ratio": codeProcessSample, "process_memory_bytes": codeProcess,
	"gpu_instance": codeProcess, "compute_instance": codeProcess, "command": codeProcess, "container_runtime": codeProcess,
	"container_id": codeProcess, "container_name": codeProcess, "pod_uid": codeProcess, "pod_namespace": codeProcess,
	"pod_name": codeProcess}

// Row kinds as small codes for the first pass.
const (
	codeSample = iota
	codeCounter
	codeTelemetry
	codeProcessSample
	codeProcess
	codeEvent
	nCodes = codeProcess + 1 // per-GPU series kinds
)

var kindNames = [...]string{codeSample: KindSample, codeCounter: KindCounter, codeTelemetry: KindTelemetry,
	codeProcessSample: KindProcessSample, codeProcess: KindProcess, codeEvent: KindEvent}

// rowGroup is a row group's first pass: each row's kind and GPU, and the rows per GPU and kind.
type rowGroup struct {
	index  int
	rg     parquet.RowGroup
	kinds  []uint8
	gpus   []int32
	counts map[int32]*[nCodes]int // rows per GPU and kind, skipped kinds included
	// present says which kinds (events included) have rows here: a column only absent kinds use is not decoded
	// (a recording without process rows would otherwise decode fifteen columns of nulls in every row group).
	present [nCodes + 1]bool
	// unsorted says a GPU's rows of one kind went back in time inside this row group (second pass): its series
	// is sorted after the read; in order, only the seams between row groups are checked.
	unsorted bool
	off      map[int32]*[nCodes]int // where this row group's rows start in the GPU's slices (second pass)
	events   []Event
	// extents are each GPU's rows per kind with their first and last time, skipped kinds included (their times
	// are decoded all the same): what a scan that leaves a kind out still learns about it.
	extents map[int32]*[nCodes]Extent
	// expanded is the decompressed size of the columns read, as the pages declare and their compression confirms.
	expanded int64
}

// errorf is an error naming the row group and column.
func (r *rowGroup) errorf(column, format string, a ...any) error {
	return fmt.Errorf("row group %d, column %s: %w", r.index, column, fmt.Errorf(format, a...))
}

// column decodes one column of r into buf (reused; may be nil).
func (pf *fileCols) column(r *rowGroup, name string, buf *column) (*column, error) {
	leaf, ok := pf.f.Schema().Lookup(name)
	if !ok {
		if name == "kind" || name == "gpu" || name == "time" {
			return nil, fmt.Errorf("%w: column %q missing", ErrNotTrace, name)
		}
		return nil, nil // a column this file lacks is null throughout
	}
	c, err := readColumn(r.rg.ColumnChunks()[leaf.ColumnIndex], int(r.rg.NumRows()), buf)
	if err != nil {
		return nil, fmt.Errorf("row group %d, column %s: %w", r.index, name, err)
	}
	return c, nil
}

// fileCols reads one file's row groups.
type fileCols struct {
	f       *parquet.File
	r       io.ReaderAt
	dataEnd int64            // where the column data ends and the footer begins
	skip    [nCodes + 1]bool // row kinds not wanted: not decoded, not allocated
	extents bool             // collect each row group's extents (rowGroup.extents)
	bufs    sync.Pool        // map[string]*column decode buffers, one set per worker at a time
	scans   sync.Pool        // *chunkScan
}

// wanted lists the columns a read decodes.
func (pf *fileCols) wanted() []string {
	var out []string
	for _, name := range columnNames {
		if name == "pid" && pf.skip[codeProcessSample] && pf.skip[codeProcess] {
			continue // the two process kinds' column
		}
		if k, ok := kindColumns[name]; !ok || !pf.skip[k] {
			out = append(out, name)
		}
	}
	return out
}

// scan checks the page headers of every column chunk the read decodes before anything is decoded (see
// chunkScan), and the row count against the decompressed size.
func (pf *fileCols) scan(r *rowGroup) error {
	s, _ := pf.scans.Get().(*chunkScan)
	if s == nil {
		s = &chunkScan{r: pf.r, dataEnd: pf.dataEnd}
	}
	defer pf.scans.Put(s)
	rows := r.rg.NumRows()
	if rows < 0 {
		return fmt.Errorf("row group %d: %d rows", r.index, rows)
	}
	chunks := pf.f.Metadata().RowGroups[r.index].Columns
	for _, name := range pf.wanted() {
		leaf, ok := pf.f.Schema().Lookup(name)
		if !ok {
			continue
		}
		n, err := s.scan(chunks[leaf.ColumnIndex], rows, leaf.MaxDefinitionLevel > 0)
		if err != nil {
			return fmt.Errorf("row group %d, column %s: %w", r.index, name, err)
		}
		r.expanded += n
	}
	if rows > r.expanded/minBytesPerRow {
		return fmt.Errorf("row group %d: %d rows in %d decompressed bytes", r.index, rows, r.expanded)
	}
	return nil
}

func (pf *fileCols) buffers() map[string]*column {
	if b, ok := pf.bufs.Get().(map[string]*column); ok {
		return b
	}
	return map[string]*column{}
}

// kindCode maps a row kind to its code; ok is false for anything else.
func kindCode(s string) (uint8, bool) {
	switch s {
	case KindSample:
		return codeSample, true
	case KindCounter:
		return codeCounter, true
	case KindTelemetry:
		return codeTelemetry, true
	case KindProcessSample:
		return codeProcessSample, true
	case KindProcess:
		return codeProcess, true
	case KindEvent:
		return codeEvent, true
	}
	return 0, false
}

// badKind marks a row whose kind is null or unknown in readKinds' output.
const badKind = 0xff

// readKinds decodes the kind column of n rows straight into codes (no strings per row: the column is a dictionary
// of a few values), badKind where a row's kind is null or unknown; bad is the first unknown value. Long for the
// same reason as readColumn: one page loop, dictionary and plain pages and definition levels handled in place.
func readKinds(cc parquet.ColumnChunk, n int, out []uint8) (bad string, err error) {
	defer recoverLibrary(&err)
	if cc.Type().Kind() != parquet.ByteArray {
		return "", fmt.Errorf("unexpected physical type %s", cc.Type().Kind())
	}
	code := func(s string) uint8 {
		c, ok := kindCode(s)
		if !ok {
			if bad == "" {
				bad = s
			}
			return badKind
		}
		return c
	}
	pages := cc.Pages()
	defer pages.Close()
	off := 0
	var dict parquet.Dictionary
	var dictCodes []uint8
	// One page's codes, sized once: grown from nothing in every row group they were 60 MB of a large read's garbage.
	vals := make([]uint8, 0, min(n, rowGroupRows))
	for {
		p, err := pages.ReadPage()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return "", err
		}
		data := p.Data()
		vals = vals[:0]
		if d := p.Dictionary(); d != nil {
			if d != dict {
				dict, dictCodes = d, dictCodes[:0]
				for _, s := range appendDictStrings(nil, d) {
					dictCodes = append(dictCodes, code(s))
				}
			}
			for _, x := range data.Int32() {
				if int(x) >= len(dictCodes) || x < 0 {
					parquet.Release(p)
					return "", fmt.Errorf("dictionary index %d out of range", x)
				}
				vals = append(vals, dictCodes[x])
			}
		} else {
			b, offs := data.ByteArray()
			for i := 0; i+1 < len(offs); i++ {
				vals = append(vals, code(string(b[offs[i]:offs[i+1]])))
			}
		}
		def := p.DefinitionLevels()
		var k int
		if len(def) == 0 {
			if off+len(vals) > n {
				err = errors.New("page overruns its row group")
			}
			k = copy(out[off:min(off+len(vals), n)], vals)
		} else if off+len(def) > n {
			err = errors.New("page overruns its row group")
		} else {
			j := 0
			for i, d := range def {
				out[off+i] = badKind
				if d > 0 {
					if j >= len(vals) {
						err = errors.New("fewer values than definition levels")
						break
					}
					out[off+i] = vals[j]
					j++
				}
			}
			k = len(def)
		}
		parquet.Release(p)
		if err != nil {
			return "", err
		}
		off += k
	}
	if off != n {
		return "", fmt.Errorf("%d of %d rows decoded", off, n)
	}
	return bad, nil
}

// firstPass decodes the kind and GPU columns and counts the rows per GPU and kind.
func (pf *fileCols) firstPass(r *rowGroup) error {
	bufs := pf.buffers()
	defer pf.bufs.Put(bufs)
	n := int(r.rg.NumRows())
	r.kinds, r.gpus, r.counts = make([]uint8, n), make([]int32, n), map[int32]*[nCodes]int{}
	leaf, ok := pf.f.Schema().Lookup("kind")
	if !ok {
		return fmt.Errorf("%w: column %q missing", ErrNotTrace, "kind")
	}
	bad, err := readKinds(r.rg.ColumnChunks()[leaf.ColumnIndex], n, r.kinds)
	if err != nil {
		return r.errorf("kind", "%v", err)
	}
	gc, err := pf.column(r, "gpu", bufs["gpu"])
	if err != nil {
		return err
	}
	bufs["gpu"] = gc
	// Counts per GPU in a small slice indexed by slot (a map lookup per row costs more than the rest).
	var slot [MaxGPU + 2]uint16 // 0: not seen yet
	var counts []*[nCodes]int
	for i, k := range r.kinds {
		if k == badKind {
			return r.errorf("kind", "row %d: unknown row kind %q", i, bad)
		}
		if !gc.valid[i] {
			return r.errorf("gpu", "row %d: null", i)
		}
		g64 := gc.i64[i]
		if g64 < 0 || g64 > MaxGPU {
			if err := checkGPU(int(g64), k == codeEvent); err != nil {
				return r.errorf("gpu", "row %d (%s): %v", i, kindNames[k], err)
			}
		}
		g := int32(g64)
		r.gpus[i] = g
		r.present[k] = true
		if k == codeEvent {
			continue
		}
		sl := slot[g]
		if sl == 0 {
			counts = append(counts, &[nCodes]int{})
			sl = uint16(len(counts))
			slot[g] = sl
			r.counts[g] = counts[sl-1]
		}
		counts[sl-1][k]++
	}
	return nil
}

// uses says whether a row of r reads column name.
func (r *rowGroup) uses(name string) bool {
	if name == "pid" {
		return r.present[codeProcessSample] || r.present[codeProcess]
	}
	k, ok := kindColumns[name]
	return !ok || r.present[k]
}

// secondPass decodes the other columns and writes each row into its GPU's series at the row group's offsets. One
// loop over every row of a trace, one case per row kind, kept in one function: a call per row would sit in the
// reader's hottest loop, and the cases share the per-GPU cursors.
func (pf *fileCols) secondPass(r *rowGroup, t *Trace) error {
	bufs := pf.buffers()
	defer pf.bufs.Put(bufs)
	cols := map[string]*column{}
	for _, name := range pf.wanted()[2:] {
		if !r.uses(name) {
			cols[name] = nil // read as null: no row here reads it
			continue
		}
		c, err := pf.column(r, name, bufs[name])
		if err != nil {
			return err
		}
		if c != nil {
			bufs[name] = c
		}
		cols[name] = c
	}
	f := func(c *column, i int) float64 {
		if c != nil && c.valid[i] {
			return c.f64[i]
		}
		return math.NaN()
	}
	str := func(c *column, i int) string {
		if c != nil {
			return c.str(i)
		}
		return ""
	}
	i64 := func(c *column, i int) (int64, bool) {
		if c != nil && c.valid[i] {
			return c.i64[i], true
		}
		return 0, false
	}
	times := cols["time"].i64
	power, energyMJ, readNS := cols["power_w"], cols["energy_mj"], cols["read_duration_ns"]
	inst, avg, temp, sm, mem := cols["instant_power_w"], cols["average_power_w"], cols["temperature_c"], cols["sm_clock_hz"], cols["mem_clock_hz"]
	ug, um, used, limit, reasons := cols["util_gpu_ratio"], cols["util_mem_ratio"], cols["mem_used_bytes"], cols["power_limit_w"], cols["clock_event_reasons"]
	pstate := cols["performance_state"]
	pid, psm, pmem, penc, pdec := cols["pid"], cols["process_sm_ratio"], cols["process_mem_ratio"], cols["process_enc_ratio"], cols["process_dec_ratio"]
	pused, gi, ci := cols["process_memory_bytes"], cols["gpu_instance"], cols["compute_instance"]
	command, runtime, cid, cname := cols["command"], cols["container_runtime"], cols["container_id"], cols["container_name"]
	podUID, podNS, podName := cols["pod_uid"], cols["pod_namespace"], cols["pod_name"]
	instance := func(c *column, i int) int {
		if v, ok := i64(c, i); ok && v >= 0 && v <= math.MaxInt32 {
			return int(v)
		}
		return NoInstance
	}
	evType, runID, evName, attrs := cols["event"], cols["run_id"], cols["name"], cols["attrs"]
	// Per-GPU cursors in small slices, one per GPU present (maps cost a lookup per row).
	var slot [MaxGPU + 1]uint16
	next := make([][nCodes]int, 0, len(r.off))
	dst := make([]*Series, 0, len(r.off))
	for g, o := range r.off {
		slot[g] = uint16(len(next))
		next, dst = append(next, *o), append(dst, t.GPUs[int(g)])
	}
	last := make([][nCodes]int64, len(next)) // each GPU's last time per kind, for unsorted (times are ≥ 0)
	timeCol := cols["time"]
	var ext [][nCodes]Extent
	if pf.extents {
		ext = make([][nCodes]Extent, len(next))
		defer func() {
			r.extents = make(map[int32]*[nCodes]Extent, len(ext))
			for g := range r.off {
				r.extents[g] = &ext[slot[g]]
			}
		}()
	}
	for i, k := range r.kinds {
		if ext != nil && k != codeEvent && timeCol.valid[i] && times[i] >= 0 && times[i] < maxTimeNS {
			ext[slot[r.gpus[i]]][k].add(times[i])
		}
		if pf.skip[k] {
			continue
		}
		if !timeCol.valid[i] {
			return r.errorf("time", "row %d: null", i)
		}
		if times[i] < 0 || times[i] >= maxTimeNS {
			return r.errorf("time", "row %d: %v", i, checkTime(time.Unix(0, times[i])))
		}
		ts := Stamp(times[i])
		g := r.gpus[i]
		if k == codeEvent {
			e := Event{Time: ts.Time(), GPU: int(g), Type: str(evType, i), RunID: str(runID, i), Name: str(evName, i)}
			if a := str(attrs, i); a != "" {
				if err := json.Unmarshal([]byte(a), &e.Attrs); err != nil {
					return r.errorf("attrs", "row %d: event %q at %s: %v", i, e.Name, ts, err)
				}
			}
			r.events = append(r.events, e)
			continue
		}
		at := &next[slot[g]]
		j := at[k]
		at[k]++
		if lt := &last[slot[g]][k]; times[i] < *lt {
			r.unsorted = true
		} else {
			*lt = times[i]
		}
		s := dst[slot[g]]
		switch k {
		case codeSample:
			pw := f(power, i)
			if math.IsNaN(pw) || math.IsInf(pw, 0) {
				return r.errorf("power_w", "row %d: sample at %s without a finite power", i, ts)
			}
			s.Samples[j] = PowerSample{Time: ts, PowerW: pw}
		case codeCounter:
			e, ok := i64(energyMJ, i)
			if !ok || e < 0 {
				return r.errorf("energy_mj", "row %d: counter at %s without a valid energy", i, ts)
			}
			c := CounterReading{Time: ts, EnergyMJ: uint64(e)}
			if d, ok := i64(readNS, i); ok {
				c.ReadDuration = time.Duration(d)
			}
			s.Counters[j] = c
		case codeTelemetry:
			tm := Telemetry{Time: ts, InstantPowerW: f(inst, i), AveragePowerW: f(avg, i), TemperatureC: f(temp, i),
				SMClockHz: f(sm, i), MemClockHz: f(mem, i), UtilGPU: f(ug, i), UtilMem: f(um, i), MemUsedBytes: f(used, i),
				PowerLimitW: f(limit, i), PState: f(pstate, i)}
			if rr, ok := i64(reasons, i); ok {
				tm.ClockReasons, tm.ClockReasonsValid = uint64(rr), true
			}
			s.Telemetry[j] = tm
		case codeProcessSample, codeProcess:
			p, ok := i64(pid, i)
			if !ok || p < 0 || p > math.MaxUint32 {
				return r.errorf("pid", "row %d: %s at %s without a valid PID", i, kindNames[k], ts)
			}
			if k == codeProcess {
				used, _ := i64(pused, i)
				if used < 0 {
					return r.errorf("process_memory_bytes", "row %d: %d bytes", i, used)
				}
				s.Processes[j] = Process{Time: ts.Time(), PID: uint32(p), MemoryBytes: uint64(used),
					GPUInstance: instance(gi, i), ComputeInstance: instance(ci, i),
					Identity: ProcessIdentity{Command: str(command, i), Runtime: str(runtime, i), ContainerID: str(cid, i),
						ContainerName: str(cname, i), PodUID: str(podUID, i), PodNamespace: str(podNS, i), PodName: str(podName, i)}}
				continue
			}
			ps := ProcessSample{Time: ts.Time(), PID: uint32(p), SM: f(psm, i), Mem: f(pmem, i), Enc: f(penc, i), Dec: f(pdec, i)}
			if col, err := badRatio(ps); err != nil {
				return r.errorf(col, "row %d: PID %d at %s: %v", i, p, ts, err)
			}
			s.ProcessSamples[j] = ps
		}
	}
	return nil
}

// parallel runs fn for every row group on all cores and returns the first row group's error.
func parallel(rgs []*rowGroup, fn func(*rowGroup) error) error {
	errs := make([]error, len(rgs))
	next := make(chan int)
	var wg sync.WaitGroup
	for range min(runtime.GOMAXPROCS(0), max(len(rgs), 1)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				errs[i] = fn(rgs[i])
			}
		}()
	}
	for i := range rgs {
		next <- i
	}
	close(next)
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// allocate makes each GPU's slices at their final size; GPUs with rows of skipped kinds only get no series.
func allocate(t *Trace, total map[int32]*[nCodes]int, skip [nCodes + 1]bool) {
	for g, tot := range total {
		for k := range nCodes {
			if skip[k] {
				tot[k] = 0
			}
		}
		if tot[codeSample]+tot[codeCounter]+tot[codeTelemetry]+tot[codeProcessSample]+tot[codeProcess] == 0 {
			continue
		}
		s := t.Series(int(g))
		s.Samples = make([]PowerSample, tot[codeSample])
		s.Counters = make([]CounterReading, tot[codeCounter])
		s.Telemetry = make([]Telemetry, tot[codeTelemetry])
		s.ProcessSamples = make([]ProcessSample, tot[codeProcessSample])
		s.Processes = make([]Process, tot[codeProcess])
		adviseHuge(s.Samples)
		adviseHuge(s.Counters)
		adviseHuge(s.Telemetry)
	}
}

// writtenInOrder says whether GPU g's series s is in time order as the second pass wrote it: in order inside every row
// group (rowGroup.unsorted) and across each seam between two row groups' rows of one kind. Checking that costs a
// comparison per row group, where Series.Sort checks every row again, one GPU per core.
func writtenInOrder(rgs []*rowGroup, g int32, s *Series, skip [nCodes + 1]bool) bool {
	for _, r := range rgs {
		if r.unsorted {
			return false
		}
		off, cnt := r.off[g], r.counts[g]
		if off == nil || cnt == nil {
			continue
		}
		for k := range nCodes {
			if skip[k] || cnt[k] == 0 || off[k] == 0 {
				continue
			}
			if rowTime(s, uint8(k), off[k]-1) > rowTime(s, uint8(k), off[k]) {
				return false
			}
		}
	}
	return true
}

// rowTime is the time of row i of kind k in s, Unix ns.
func rowTime(s *Series, k uint8, i int) int64 {
	switch k {
	case codeSample:
		return int64(s.Samples[i].Time)
	case codeCounter:
		return int64(s.Counters[i].Time)
	case codeTelemetry:
		return int64(s.Telemetry[i].Time)
	case codeProcessSample:
		return s.ProcessSamples[i].Time.UnixNano()
	}
	return s.Processes[i].Time.UnixNano()
}

// readRows reads every row group in two parallel passes: kinds and GPUs first, so each GPU's slices are
// allocated once at their final size; then every row straight into its place (no merge copies).
func readRows(pf *parquet.File, r io.ReaderAt, size, dataEnd int64, t *Trace, opts ReadOptions) error {
	fc := &fileCols{f: pf, r: r, dataEnd: dataEnd}
	fc.skip[codeTelemetry] = opts.SkipTelemetry
	t0 := time.Now()
	var rgs []*rowGroup
	for i, rg := range pf.RowGroups() {
		rgs = append(rgs, &rowGroup{index: i, rg: rg})
	}
	// Every declared size is checked before the first allocation it drives.
	if err := parallel(rgs, fc.scan); err != nil {
		return err
	}
	var expanded int64
	for _, r := range rgs {
		expanded += r.expanded
	}
	if expanded > maxExpansion*size {
		return fmt.Errorf("%w: %d bytes decompress to %d, more than %d times", ErrNotTrace, size, expanded, maxExpansion)
	}
	t1 := time.Now()
	if err := parallel(rgs, fc.firstPass); err != nil {
		return err
	}
	t2 := time.Now()
	total := map[int32]*[nCodes]int{}
	for _, r := range rgs {
		r.off = map[int32]*[nCodes]int{}
		for g, c := range r.counts {
			tot := total[g]
			if tot == nil {
				tot = &[nCodes]int{}
				total[g] = tot
			}
			o := *tot
			r.off[g] = &o
			for k := range nCodes {
				tot[k] += c[k]
			}
		}
	}
	allocate(t, total, fc.skip)
	t3 := time.Now()
	if err := parallel(rgs, func(r *rowGroup) error { return fc.secondPass(r, t) }); err != nil {
		return err
	}
	t4 := time.Now()
	for _, r := range rgs {
		t.Events = append(t.Events, r.events...)
	}
	var wg sync.WaitGroup
	for g, s := range t.GPUs {
		if writtenInOrder(rgs, int32(g), s, fc.skip) {
			continue
		}
		wg.Add(1)
		go func() { defer wg.Done(); s.Sort() }()
	}
	wg.Wait()
	slog.Debug("trace rows read", "row groups", len(rgs), "checked", t1.Sub(t0), "first pass", t2.Sub(t1),
		"allocated", t3.Sub(t2), "second pass", t4.Sub(t3), "sorted", time.Since(t4))
	return nil
}
