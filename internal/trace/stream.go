package trace

import (
	"unsafe"

	"cmp"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"maps"
	"math"
	"os"
	"runtime"
	"slices"
	"time"

	"github.com/parquet-go/parquet-go/format"

	"github.com/parquet-go/parquet-go"

	"github.com/lem-energy/lem/internal/meta"
	"github.com/lem-energy/lem/internal/ordered"
)

// A Stream reads a trace that need not fit in memory — one file, or the closed segments of one recording — a row
// group at a time in file order: memory holds a few row groups whatever the trace's size. lem's writers write rows
// in about the order they were measured, so each row group covers a short stretch of time, and the row groups'
// time statistics say up to when the rows handed so far are complete (Part.Complete); Merge puts the parts back
// in time order. Every file is checked as ReadFile checks it, each row group before it is decoded.
type Stream struct {
	files  []*streamFile
	groups []groupRef
	// after[i] is the earliest time of any row in the row groups after group i (Unix ns).
	after []int64
	env   meta.Environment
	extra map[string]string // the first file's metadata lem does not interpret
	rows  int64
	bytes int64         // Footprint
	cpu   chan struct{} // tokens a row group's decoding holds (ShareCPU); nil: none
}

type streamFile struct {
	path    string
	f       io.ReaderAt
	close   func() error
	pf      *parquet.File
	size    int64
	dataEnd int64
}

// groupRef is one row group of one file with its rows' time range.
type groupRef struct {
	file, index int
	minNS       int64 // math.MaxInt64 for a row group without rows
	maxNS       int64
}

// Kinds selects the row kinds a scan decodes; the others are neither decoded nor allocated (their times still
// count in Part.Extents).
type Kinds uint8

// Row kinds to scan.
const (
	RowSamples Kinds = 1 << iota
	RowCounters
	RowTelemetry
	RowEvents
	RowProcesses // process samples and process rows
	AllRows      = RowSamples | RowCounters | RowTelemetry | RowEvents | RowProcesses
)

// Extent counts one kind of a GPU's rows and gives their first and last time.
type Extent struct {
	N           int
	first, last int64
}

func (e *Extent) add(ns int64) {
	if e.N == 0 || ns < e.first {
		e.first = ns
	}
	if e.N == 0 || ns > e.last {
		e.last = ns
	}
	e.N++
}

// Merge adds o's rows to e.
func (e *Extent) Merge(o Extent) {
	if o.N == 0 {
		return
	}
	if e.N == 0 || o.first < e.first {
		e.first = o.first
	}
	if e.N == 0 || o.last > e.last {
		e.last = o.last
	}
	e.N += o.N
}

// First and Last are the extent's first and last time (zero without rows).
func (e Extent) First() time.Time { return e.at(e.first) }

// Last is the time of the extent's last row.
func (e Extent) Last() time.Time { return e.at(e.last) }

func (e Extent) at(ns int64) time.Time {
	if e.N == 0 {
		return time.Time{}
	}
	return time.Unix(0, ns).UTC()
}

// Extents are a GPU's rows of each kind.
type Extents struct{ Samples, Counters, Telemetry, ProcessSamples, Processes Extent }

// Merge adds o's rows of every kind to e.
func (e *Extents) Merge(o Extents) {
	e.Samples.Merge(o.Samples)
	e.Counters.Merge(o.Counters)
	e.Telemetry.Merge(o.Telemetry)
	e.ProcessSamples.Merge(o.ProcessSamples)
	e.Processes.Merge(o.Processes)
}

// Rows is the number of rows of every kind.
func (e Extents) Rows() int {
	return e.Samples.N + e.Counters.N + e.Telemetry.N + e.ProcessSamples.N + e.Processes.N
}

// Part is one row group's rows.
type Part struct {
	// Trace holds the row group's rows of the kinds scanned: each GPU's series in time order, and the events.
	Trace *Trace
	// Extents are each GPU's rows of every kind in the row group, scanned or not.
	Extents map[int]Extents
	// Complete: every row of the later row groups is at or after this time, so every row before it has been
	// handed. The last part's is the end of time.
	Complete time.Time
	Last     bool
}

// OpenStream opens the files of one trace, in order (a file, or a recording's closed segments); the first file's
// environment is the trace's. Close releases them.
func OpenStream(paths ...string) (*Stream, error) {
	return openStream(len(paths), func(i int) (*streamFile, *Trace, error) { return openStreamFile(paths[i]) })
}

func openStream(n int, file func(i int) (*streamFile, *Trace, error)) (_ *Stream, err error) {
	if n == 0 {
		return nil, fmt.Errorf("%w: no files", ErrNotTrace)
	}
	s := &Stream{}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	for i := range n {
		sf, t, err := file(i)
		if err != nil {
			return nil, err
		}
		s.files = append(s.files, sf)
		if i == 0 {
			s.env, s.extra = t.Env, t.Extra
		}
		if err := s.addGroups(i); err != nil {
			return nil, fmt.Errorf("reading trace %s: %w", sf.path, err)
		}
	}
	s.after = make([]int64, len(s.groups))
	next := int64(math.MaxInt64)
	for i := len(s.groups) - 1; i >= 0; i-- {
		s.after[i] = next
		next = min(next, s.groups[i].minNS)
	}
	return s, nil
}

func openStreamFile(path string) (*streamFile, *Trace, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, fmt.Errorf("opening trace: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("opening trace: %w", err)
	}
	sf, t, err := newStreamFile(path, f, st.Size())
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	sf.close = f.Close
	return sf, t, nil
}

func newStreamFile(path string, r io.ReaderAt, size int64) (*streamFile, *Trace, error) {
	pf, t, dataEnd, err := open(r, size)
	if err != nil {
		return nil, nil, fmt.Errorf("reading trace %s: %w", path, err)
	}
	return &streamFile{path: path, f: r, pf: pf, size: size, dataEnd: dataEnd}, t, nil
}

// addGroups lists file i's row groups with their time range: from the time column's statistics, or, where a
// writer left them out, from the column itself.
func (s *Stream) addGroups(i int) error {
	sf := s.files[i]
	leaf, ok := sf.pf.Schema().Lookup("time")
	if !ok {
		return fmt.Errorf("%w: column %q missing", ErrNotTrace, "time")
	}
	nonNull := func(rg *format.RowGroup, name string) int64 {
		l, ok := sf.pf.Schema().Lookup(name)
		if !ok {
			return 0
		}
		return min(max(rg.NumRows-rg.Columns[l.ColumnIndex].MetaData.Statistics.NullCount, 0), rg.NumRows)
	}
	for j := range sf.pf.Metadata().RowGroups {
		rg := &sf.pf.Metadata().RowGroups[j]
		ref := groupRef{file: i, index: j, minNS: math.MaxInt64, maxNS: math.MinInt64}
		s.rows += rg.NumRows
		smp, cnt, prc, ev := nonNull(rg, "power_w"), nonNull(rg, "energy_mj"), nonNull(rg, "pid"), nonNull(rg, "event")
		tel := max(rg.NumRows-smp-cnt-prc-ev, 0)
		s.bytes += max(smp*sampleBytes+cnt*counterBytes+tel*telemetryBytes+prc*processBytes+ev*eventBytes,
			rg.NumRows*sampleBytes)
		if rg.NumRows > 0 {
			st := rg.Columns[leaf.ColumnIndex].MetaData.Statistics
			lo, hi := st.MinValue, st.MaxValue
			if len(lo) == 0 && len(hi) == 0 {
				lo, hi = st.Min, st.Max // statistics of older writers
			}
			if len(lo) == 8 && len(hi) == 8 && st.NullCount == 0 {
				ref.minNS, ref.maxNS = int64(binary.LittleEndian.Uint64(lo)), int64(binary.LittleEndian.Uint64(hi))
			} else if err := s.timeRange(sf, &ref); err != nil {
				return err
			}
		}
		s.groups = append(s.groups, ref)
	}
	return nil
}

// timeRange decodes a row group's time column for its range.
func (s *Stream) timeRange(sf *streamFile, ref *groupRef) error {
	fc := &fileCols{f: sf.pf, r: sf.f, dataEnd: sf.dataEnd}
	for k := range fc.skip {
		fc.skip[k] = true
	}
	r := &rowGroup{index: ref.index, rg: sf.pf.RowGroups()[ref.index]}
	if err := fc.scan(r); err != nil {
		return err
	}
	c, err := fc.column(r, "time", nil)
	if err != nil {
		return err
	}
	for i, ns := range c.i64 {
		if c.valid[i] {
			ref.minNS, ref.maxNS = min(ref.minNS, ns), max(ref.maxNS, ns)
		}
	}
	return nil
}

// Env is the trace's environment (its first file's).
func (s *Stream) Env() meta.Environment { return s.env }

// ReadWhole reads a stream of one file whole, as ReadFile does, without reading its footer again (for a large
// file that is thousands of column chunks' metadata). The stream is not to be read afterwards.
func (s *Stream) ReadWhole() (*Trace, error) {
	if len(s.files) != 1 {
		return nil, fmt.Errorf("a whole read takes one file, the stream has %d", len(s.files))
	}
	sf := s.files[0]
	t := New(s.env)
	maps.Copy(t.Extra, s.extra)
	if err := readRows(sf.pf, sf.f, sf.size, sf.dataEnd, t, ReadOptions{}); err != nil {
		return nil, fmt.Errorf("reading trace %s: %w", sf.path, err)
	}
	return t, nil
}

// Bytes a row of each kind takes read whole (the in-memory types; a process row is the larger of the two process
// kinds with a short identity, an event with a few attributes).
const (
	sampleBytes    = int64(unsafe.Sizeof(PowerSample{}))
	counterBytes   = int64(unsafe.Sizeof(CounterReading{}))
	telemetryBytes = int64(unsafe.Sizeof(Telemetry{}))
	processBytes   = int64(unsafe.Sizeof(Process{})) + 64
	eventBytes     = int64(unsafe.Sizeof(Event{})) + 256
)

// Footprint is what the rows of all files take in memory read whole, by kind, from each row group's null counts:
// a row is a sample where power_w holds a value, a counter reading where energy_mj does, a process row where pid
// does, an event where event does, telemetry otherwise. Statistics a writer left out count every row as every
// kind; at least a sample's size a row.
func (s *Stream) Footprint() int64 { return s.bytes }

// Rows is the number of rows in all files.
func (s *Stream) Rows() int64 { return s.rows }

// ShareCPU makes each row group's decoding hold one of tokens (a buffered channel: a send takes one) while it
// runs. A consumer that computes in parallel too takes its tokens from the same channel, so decoding and the
// consumer's work together keep as many goroutines busy as the channel holds, not the sum of both pools: more
// busy goroutines than cores only preempt one another, and each holds its buffers in memory meanwhile.
func (s *Stream) ShareCPU(tokens chan struct{}) { s.cpu = tokens }

// Close closes the files.
func (s *Stream) Close() error {
	var first error
	for _, f := range s.files {
		if f.close == nil {
			continue
		}
		if err := f.close(); err != nil && first == nil {
			first = err
		}
	}
	s.files = nil
	return first
}

// Scan decodes the row groups of the given kinds, a few in parallel, and hands them to fn in file order. It stops
// at fn's first error, or at the first row group that cannot be read (the error names its file).
func (s *Stream) Scan(ctx context.Context, kinds Kinds, fn func(Part) error) error {
	cols := make([]*fileCols, len(s.files))
	expanded := make([]int64, len(s.files)) // decompressed bytes declared so far, per file (consumer only)
	for i, sf := range s.files {
		fc := &fileCols{f: sf.pf, r: sf.f, dataEnd: sf.dataEnd, extents: true}
		fc.skip[codeSample] = kinds&RowSamples == 0
		fc.skip[codeCounter] = kinds&RowCounters == 0
		fc.skip[codeTelemetry] = kinds&RowTelemetry == 0
		fc.skip[codeEvent] = kinds&RowEvents == 0
		fc.skip[codeProcessSample] = kinds&RowProcesses == 0
		fc.skip[codeProcess] = kinds&RowProcesses == 0
		cols[i] = fc
	}
	type result struct {
		p        *Part
		expanded int64
		err      error
	}
	n := len(s.groups)
	workers := min(runtime.GOMAXPROCS(0), max(n, 1))
	decode := func(_ context.Context, i int) result {
		if s.cpu != nil {
			s.cpu <- struct{}{}
			defer func() { <-s.cpu }()
		}
		p, exp, err := s.decode(cols[s.groups[i].file], i)
		return result{p, exp, err}
	}
	// Row groups decoded ahead of fn, two per worker: bounds memory.
	return ordered.Run(ctx, n, workers, 2*workers, decode, func(i int, r result) error {
		ref := s.groups[i]
		sf := s.files[ref.file]
		if r.err != nil {
			return fmt.Errorf("reading trace %s: %w", sf.path, r.err)
		}
		// What a file's row groups declare they decompress to is bounded by its size, as in ReadFile.
		if expanded[ref.file] += r.expanded; expanded[ref.file] > maxExpansion*sf.size {
			return fmt.Errorf("reading trace %s: %w: %d bytes decompress to more than %d times", sf.path, ErrNotTrace,
				sf.size, maxExpansion)
		}
		r.p.Last = i == n-1
		r.p.Complete = time.Unix(0, min(s.after[i], maxTimeNS)).UTC()
		return fn(*r.p)
	})
}

// decode reads row group i (checked first, as ReadFile checks every row group).
func (s *Stream) decode(fc *fileCols, i int) (*Part, int64, error) {
	ref := s.groups[i]
	r := &rowGroup{index: ref.index, rg: fc.f.RowGroups()[ref.index]}
	if err := fc.scan(r); err != nil {
		return nil, 0, err
	}
	if err := fc.firstPass(r); err != nil {
		return nil, 0, err
	}
	t := New(s.env)
	r.off = make(map[int32]*[nCodes]int, len(r.counts))
	total := make(map[int32]*[nCodes]int, len(r.counts))
	for g, c := range r.counts {
		r.off[g] = &[nCodes]int{}
		tot := *c
		total[g] = &tot
	}
	allocate(t, total, fc.skip)
	if err := fc.secondPass(r, t); err != nil {
		return nil, 0, err
	}
	t.Events = r.events
	p := &Part{Trace: t, Extents: make(map[int]Extents, len(r.extents))}
	for g, e := range r.extents {
		p.Extents[int(g)] = Extents{Samples: e[codeSample], Counters: e[codeCounter], Telemetry: e[codeTelemetry],
			ProcessSamples: e[codeProcessSample], Processes: e[codeProcess]}
		for _, x := range e {
			if x.N > 0 && (x.first < ref.minNS || x.last > ref.maxNS) {
				return nil, 0, fmt.Errorf("row group %d: rows from %d to %d ns outside its time statistics", ref.index,
					x.first, x.last)
			}
		}
	}
	for _, e := range t.Events {
		if ns := e.Time.UnixNano(); ns < ref.minNS || ns > ref.maxNS {
			return nil, 0, fmt.Errorf("row group %d: event at %d ns outside its time statistics", ref.index, ns)
		}
	}
	for _, ser := range t.GPUs {
		ser.Sort()
	}
	return p, r.expanded, nil
}

// Merge puts a stream's parts back in time order. Add each part's series in turn; Release returns, per GPU, the
// rows before a time, sorted, and keeps the rest. Rows of equal time keep their order in the files, as a whole
// read's sort keeps them, so released rows are exactly those a whole read would hold, in the same order: power
// samples, counter readings, telemetry, process samples and processes alike.
type Merge struct {
	pending map[int][]*Series // per GPU, sorted runs in file order
}

// rows is how many rows of every kind s holds.
func rows(s *Series) int {
	return len(s.Samples) + len(s.Counters) + len(s.Telemetry) + len(s.ProcessSamples) + len(s.Processes)
}

// Add queues a part's rows.
func (m *Merge) Add(t *Trace) {
	if m.pending == nil {
		m.pending = map[int][]*Series{}
	}
	for g, s := range t.GPUs {
		if rows(s) > 0 {
			m.pending[g] = append(m.pending[g], s)
		}
	}
}

// Release returns each GPU's queued rows before t (GPUs with none are absent).
func (m *Merge) Release(t time.Time) map[int]*Series {
	out := map[int]*Series{}
	tn := t.UnixNano()
	for g, runs := range m.pending {
		var ss [][]PowerSample
		var cs [][]CounterReading
		var ts [][]Telemetry
		var ps [][]ProcessSample
		var qs [][]Process
		keep := runs[:0]
		for _, r := range runs {
			r.Samples = splitBefore(r.Samples, tn, func(x PowerSample) int64 { return int64(x.Time) }, &ss)
			r.Counters = splitBefore(r.Counters, tn, func(x CounterReading) int64 { return int64(x.Time) }, &cs)
			r.Telemetry = splitBefore(r.Telemetry, tn, func(x Telemetry) int64 { return int64(x.Time) }, &ts)
			r.ProcessSamples = splitBefore(r.ProcessSamples, tn, func(x ProcessSample) int64 { return x.Time.UnixNano() }, &ps)
			r.Processes = splitBefore(r.Processes, tn, func(x Process) int64 { return x.Time.UnixNano() }, &qs)
			if rows(r) > 0 {
				keep = append(keep, r)
			}
		}
		clear(runs[len(keep):])
		if len(keep) == 0 {
			delete(m.pending, g)
		} else {
			m.pending[g] = keep
		}
		s := &Series{
			Samples:        mergeRuns(ss, func(x PowerSample) int64 { return int64(x.Time) }),
			Counters:       mergeRuns(cs, func(x CounterReading) int64 { return int64(x.Time) }),
			Telemetry:      mergeRuns(ts, func(x Telemetry) int64 { return int64(x.Time) }),
			ProcessSamples: mergeRuns(ps, func(x ProcessSample) int64 { return x.Time.UnixNano() }),
			Processes:      mergeRuns(qs, func(x Process) int64 { return x.Time.UnixNano() }),
		}
		if rows(s) > 0 {
			out[g] = s
		}
	}
	return out
}

// splitBefore moves the prefix of the sorted xs before t onto *heads and returns the rest.
func splitBefore[T any](xs []T, t int64, at func(T) int64, heads *[][]T) []T {
	i, _ := slices.BinarySearchFunc(xs, t, func(x T, t int64) int { return cmp.Compare(at(x), t) })
	if i > 0 {
		*heads = append(*heads, xs[:i:i])
	}
	return xs[i:]
}

// mergeRuns merges sorted runs into one sorted slice; on equal times the earlier run's rows come first.
func mergeRuns[T any](runs [][]T, at func(T) int64) []T {
	switch len(runs) {
	case 0:
		return nil
	case 1:
		return runs[0]
	}
	n := 0
	for _, r := range runs {
		n += len(r)
	}
	out := make([]T, 0, n)
	idx := make([]int, len(runs))
	for len(out) < n {
		best := -1
		var bt int64
		for k, r := range runs {
			if idx[k] == len(r) {
				continue
			}
			if t := at(r[idx[k]]); best < 0 || t < bt {
				best, bt = k, t
			}
		}
		out = append(out, runs[best][idx[best]])
		idx[best]++
	}
	return out
}
