package trace

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"time"

	"github.com/parquet-go/parquet-go"

	"github.com/lem-energy/lem/internal/meta"
)

// SchemaVersion is the version of the file layout documented in docs/TRACE_FORMAT.md.
const SchemaVersion = "1"

// Key-value metadata keys in every lem trace file.
const (
	MetaSchema      = "lem.schema_version"
	MetaEnvironment = "lem.environment"
)

// Row kinds: the "kind" column says which of the other columns a row uses.
const (
	KindSample    = "sample"
	KindCounter   = "counter"
	KindTelemetry = "telemetry"
	KindEvent     = "event"
	// KindProcessSample rows are the driver's per-process utilization samples, KindProcess rows the compute
	// processes seen at each poll with who they belong to.
	KindProcessSample = "process_sample"
	KindProcess       = "process"
)

// ErrNotTrace is returned for files that are not (complete) lem traces.
var ErrNotTrace = errors.New("not a lem trace file")

// row is the one long/tidy table of a trace file. Columns a kind does not use are null.
type row struct {
	Kind          string    `parquet:"kind,dict"`
	GPU           int32     `parquet:"gpu"`
	Time          time.Time `parquet:"time,timestamp(nanosecond)"`
	PowerW        *float64  `parquet:"power_w,optional"`
	EnergyMJ      *int64    `parquet:"energy_mj,optional"`
	ReadNS        *int64    `parquet:"read_duration_ns,optional"`
	InstantPowerW *float64  `parquet:"instant_power_w,optional"`
	AveragePowerW *float64  `parquet:"average_power_w,optional"`
	TemperatureC  *float64  `parquet:"temperature_c,optional"`
	SMClockHz     *float64  `parquet:"sm_clock_hz,optional"`
	MemClockHz    *float64  `parquet:"mem_clock_hz,optional"`
	UtilGPU       *float64  `parquet:"util_gpu_ratio,optional"`
	UtilMem       *float64  `parquet:"util_mem_ratio,optional"`
	MemUsedBytes  *float64  `parquet:"mem_used_bytes,optional"`
	PowerLimitW   *float64  `parquet:"power_limit_w,optional"`
	ClockReasons  *int64    `parquet:"clock_event_reasons,optional"`
	PState        *float64  `parquet:"performance_state,optional"`
	Event         *string   `parquet:"event,optional,dict"`
	RunID         *string   `parquet:"run_id,optional,dict"`
	Name          *string   `parquet:"name,optional,dict"`
	Attrs         *string   `parquet:"attrs,optional"`
	// Process rows.
	PID              *int64   `parquet:"pid,optional"`
	ProcSM           *float64 `parquet:"process_sm_ratio,optional"`
	ProcMem          *float64 `parquet:"process_mem_ratio,optional"`
	ProcEnc          *float64 `parquet:"process_enc_ratio,optional"`
	ProcDec          *float64 `parquet:"process_dec_ratio,optional"`
	ProcMemoryBytes  *int64   `parquet:"process_memory_bytes,optional"`
	GPUInstance      *int32   `parquet:"gpu_instance,optional"`
	ComputeInstance  *int32   `parquet:"compute_instance,optional"`
	Command          *string  `parquet:"command,optional,dict"`
	ContainerRuntime *string  `parquet:"container_runtime,optional,dict"`
	ContainerID      *string  `parquet:"container_id,optional,dict"`
	ContainerName    *string  `parquet:"container_name,optional,dict"`
	PodUID           *string  `parquet:"pod_uid,optional,dict"`
	PodNamespace     *string  `parquet:"pod_namespace,optional,dict"`
	PodName          *string  `parquet:"pod_name,optional,dict"`
}

var nan = math.NaN()

func opt(v float64) *float64 {
	if math.IsNaN(v) {
		return nil
	}
	return &v
}

func optStr(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

func sampleRow(gpu int, s PowerSample) row {
	p := s.PowerW
	return row{Kind: KindSample, GPU: int32(gpu), Time: s.Time.Time(), PowerW: &p}
}

func counterRow(gpu int, c CounterReading) row {
	e, d := int64(c.EnergyMJ), int64(c.ReadDuration)
	return row{Kind: KindCounter, GPU: int32(gpu), Time: c.Time.Time(), EnergyMJ: &e, ReadNS: &d}
}

func telemetryRow(gpu int, t Telemetry) row {
	r := row{Kind: KindTelemetry, GPU: int32(gpu), Time: t.Time.Time(),
		InstantPowerW: opt(t.InstantPowerW), AveragePowerW: opt(t.AveragePowerW), TemperatureC: opt(t.TemperatureC),
		SMClockHz: opt(t.SMClockHz), MemClockHz: opt(t.MemClockHz), UtilGPU: opt(t.UtilGPU), UtilMem: opt(t.UtilMem),
		MemUsedBytes: opt(t.MemUsedBytes), PowerLimitW: opt(t.PowerLimitW), PState: opt(t.PState)}
	if t.ClockReasonsValid {
		c := int64(t.ClockReasons)
		r.ClockReasons = &c
	}
	return r
}

func processSampleRow(gpu int, p ProcessSample) row {
	pid := int64(p.PID)
	sm, mem, enc, dec := p.SM, p.Mem, p.Enc, p.Dec
	return row{Kind: KindProcessSample, GPU: int32(gpu), Time: p.Time, PID: &pid, ProcSM: &sm, ProcMem: &mem,
		ProcEnc: &enc, ProcDec: &dec}
}

func instance(i int) *int32 {
	if i < 0 {
		return nil
	}
	v := int32(i)
	return &v
}

func processRow(gpu int, p Process) row {
	pid, used := int64(p.PID), int64(p.MemoryBytes)
	id := p.Identity
	return row{Kind: KindProcess, GPU: int32(gpu), Time: p.Time, PID: &pid, ProcMemoryBytes: &used,
		GPUInstance: instance(p.GPUInstance), ComputeInstance: instance(p.ComputeInstance),
		Command: optStr(id.Command), ContainerRuntime: optStr(id.Runtime), ContainerID: optStr(id.ContainerID),
		ContainerName: optStr(id.ContainerName), PodUID: optStr(id.PodUID), PodNamespace: optStr(id.PodNamespace),
		PodName: optStr(id.PodName)}
}

func eventRow(e Event) (row, error) {
	r := row{Kind: KindEvent, GPU: int32(e.GPU), Time: e.Time, Event: optStr(e.Type), RunID: optStr(e.RunID),
		Name: optStr(e.Name)}
	if len(e.Attrs) > 0 {
		b, err := json.Marshal(e.Attrs)
		if err != nil {
			return row{}, fmt.Errorf("encoding attributes of event %q: %w", e.Name, err)
		}
		s := string(b)
		r.Attrs = &s
	}
	return r, nil
}

// Writer streams a trace into a Parquet file. Rows go to a temporary file beside the target, which Close renames
// into place: a crash never leaves a partial file under the final name. NewStreamWriter writes to any io.Writer.
type Writer struct {
	final, tmp string
	f          *os.File // nil for a stream writer
	pw         *parquet.GenericWriter[row]
	buf        []row
	closed     bool
}

func newParquetWriter(w io.Writer, env meta.Environment) (*parquet.GenericWriter[row], error) {
	envJSON, err := json.Marshal(env)
	if err != nil {
		return nil, fmt.Errorf("encoding environment: %w", err)
	}
	return parquet.NewGenericWriter[row](w,
		parquet.Compression(&parquet.Zstd),
		parquet.KeyValueMetadata(MetaSchema, SchemaVersion),
		parquet.KeyValueMetadata(MetaEnvironment, string(envJSON)),
		parquet.CreatedBy("lem", meta.LemVersion(), ""),
	), nil
}

// NewStreamWriter writes a trace to w (an HTTP response, say); Close finishes the file but does not close w.
func NewStreamWriter(w io.Writer, env meta.Environment) (*Writer, error) {
	pw, err := newParquetWriter(w, env)
	if err != nil {
		return nil, err
	}
	return &Writer{final: "stream", pw: pw}, nil
}

// rowGroupRows bounds memory: a row group is written once this many rows are buffered.
const rowGroupRows = 64 * 1024

// Create starts a trace file at path for the given environment.
func Create(path string, env meta.Environment) (*Writer, error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		return nil, fmt.Errorf("creating trace %s: %w", path, err)
	}
	if err := f.Chmod(0o644); err != nil { // CreateTemp makes 0600; traces are meant to be shared
		f.Close()
		os.Remove(f.Name())
		return nil, fmt.Errorf("creating trace %s: %w", path, err)
	}
	pw, err := newParquetWriter(f, env)
	if err != nil {
		f.Close()
		os.Remove(f.Name())
		return nil, fmt.Errorf("creating trace %s: %w", path, err)
	}
	return &Writer{final: path, tmp: f.Name(), f: f, pw: pw}, nil
}

// SetMetadata adds a key-value pair to the file footer (written at Close).
func (w *Writer) SetMetadata(key, value string) { w.pw.SetKeyValueMetadata(key, value) }

// Path is the final path of the file.
func (w *Writer) Path() string { return w.final }

func (w *Writer) add(rows ...row) error {
	if w.closed {
		return fmt.Errorf("trace %s: write after close", w.final)
	}
	w.buf = append(w.buf, rows...)
	if len(w.buf) >= rowGroupRows {
		return w.Flush()
	}
	return nil
}

// WriteSamples appends power samples of GPU gpu. A GPU index, a time or a power the reader would refuse is an error
// (see MaxGPU, checkTime; power must be finite), and the rows before it are kept.
func (w *Writer) WriteSamples(gpu int, ss []PowerSample) error {
	if err := checkGPU(gpu, false); err != nil {
		return fmt.Errorf("trace %s: samples: %w", w.final, err)
	}
	for _, s := range ss {
		if err := checkStamp(s.Time); err != nil {
			return fmt.Errorf("trace %s: sample of GPU %d: %w", w.final, gpu, err)
		}
		if math.IsNaN(s.PowerW) || math.IsInf(s.PowerW, 0) {
			return fmt.Errorf("trace %s: sample of GPU %d at %s: power %v is not finite", w.final, gpu,
				s.Time.Format(time.RFC3339Nano), s.PowerW)
		}
		if err := w.add(sampleRow(gpu, s)); err != nil {
			return err
		}
	}
	return nil
}

// WriteCounter appends a counter reading of GPU gpu.
func (w *Writer) WriteCounter(gpu int, c CounterReading) error {
	if err := checkRow(gpu, false, c.Time.Time()); err != nil {
		return fmt.Errorf("trace %s: counter reading: %w", w.final, err)
	}
	return w.add(counterRow(gpu, c))
}

// WriteTelemetry appends a telemetry snapshot of GPU gpu.
func (w *Writer) WriteTelemetry(gpu int, t Telemetry) error {
	if err := checkRow(gpu, false, t.Time.Time()); err != nil {
		return fmt.Errorf("trace %s: telemetry: %w", w.final, err)
	}
	return w.add(telemetryRow(gpu, t))
}

// WriteProcessSamples appends per-process utilization samples of GPU gpu.
func (w *Writer) WriteProcessSamples(gpu int, ps []ProcessSample) error {
	for _, p := range ps {
		if err := checkRow(gpu, false, p.Time); err != nil {
			return fmt.Errorf("trace %s: process sample: %w", w.final, err)
		}
		if err := checkRatios(p); err != nil {
			return fmt.Errorf("trace %s: process sample of GPU %d, PID %d: %w", w.final, gpu, p.PID, err)
		}
		if err := w.add(processSampleRow(gpu, p)); err != nil {
			return err
		}
	}
	return nil
}

// WriteProcesses appends the compute processes seen on GPU gpu.
func (w *Writer) WriteProcesses(gpu int, ps []Process) error {
	for _, p := range ps {
		if err := checkRow(gpu, false, p.Time); err != nil {
			return fmt.Errorf("trace %s: process: %w", w.final, err)
		}
		if err := checkProcess(p); err != nil {
			return fmt.Errorf("trace %s: process of GPU %d, PID %d: %w", w.final, gpu, p.PID, err)
		}
		if err := w.add(processRow(gpu, p)); err != nil {
			return err
		}
	}
	return nil
}

// WriteEvent appends an event.
func (w *Writer) WriteEvent(e Event) error {
	if err := checkRow(e.GPU, true, e.Time); err != nil {
		return fmt.Errorf("trace %s: %s event: %w", w.final, e.Type, err)
	}
	r, err := eventRow(e)
	if err != nil {
		return err
	}
	return w.add(r)
}

// WriteTrace appends everything in t.
func (w *Writer) WriteTrace(t *Trace) error {
	for _, g := range t.GPUIndices() {
		s := t.GPUs[g]
		if err := w.WriteSamples(g, s.Samples); err != nil {
			return err
		}
		for _, c := range s.Counters {
			if err := w.WriteCounter(g, c); err != nil {
				return err
			}
		}
		for _, tm := range s.Telemetry {
			if err := w.WriteTelemetry(g, tm); err != nil {
				return err
			}
		}
		if err := w.WriteProcessSamples(g, s.ProcessSamples); err != nil {
			return err
		}
		if err := w.WriteProcesses(g, s.Processes); err != nil {
			return err
		}
	}
	for _, e := range t.Events {
		if err := w.WriteEvent(e); err != nil {
			return err
		}
	}
	for k, v := range t.Extra {
		w.SetMetadata(k, v)
	}
	return nil
}

// Flush writes the buffered rows as a row group and syncs them to disk.
func (w *Writer) Flush() error {
	if len(w.buf) == 0 {
		return nil
	}
	if _, err := w.pw.Write(w.buf); err != nil {
		return fmt.Errorf("writing trace %s: %w", w.final, err)
	}
	w.buf = w.buf[:0]
	if err := w.pw.Flush(); err != nil {
		return fmt.Errorf("flushing trace %s: %w", w.final, err)
	}
	return nil
}

// Close writes the footer, syncs and renames the file into place.
func (w *Writer) Close() error {
	if w.closed {
		return nil
	}
	err := w.Flush()
	w.closed = true
	if err == nil {
		err = w.pw.Close()
	}
	if w.f == nil {
		return err
	}
	if err == nil {
		err = w.f.Sync()
	}
	if cerr := w.f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(w.tmp, w.final)
	}
	if err != nil {
		os.Remove(w.tmp)
		return fmt.Errorf("closing trace %s: %w", w.final, err)
	}
	return nil
}

// Abort discards the file.
func (w *Writer) Abort() {
	if w.closed {
		return
	}
	w.closed = true
	if w.f != nil {
		w.f.Close()
		os.Remove(w.tmp)
	}
}

// WriteFile writes t to path atomically.
func WriteFile(path string, t *Trace) error {
	w, err := Create(path, t.Env)
	if err != nil {
		return err
	}
	if err := w.WriteTrace(t); err != nil {
		w.Abort()
		return err
	}
	return w.Close()
}

// ReadOptions select what a read decodes.
type ReadOptions struct {
	// SkipTelemetry leaves the telemetry rows out (energy computations need only samples, counters and events).
	SkipTelemetry bool
}

// ReadFile reads a whole trace file.
func ReadFile(path string) (*Trace, error) { return ReadFileWith(path, ReadOptions{}) }

// ReadFileWith reads a trace file with options.
func ReadFileWith(path string, opts ReadOptions) (*Trace, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("opening trace: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("opening trace: %w", err)
	}
	t, err := read(f, st.Size(), opts)
	if err != nil {
		return nil, fmt.Errorf("reading trace %s: %w", path, err)
	}
	return t, nil
}

var parquetMagic = []byte("PAR1")

func read(r io.ReaderAt, size int64, opts ReadOptions) (*Trace, error) {
	pf, t, dataEnd, err := open(r, size)
	if err != nil {
		return nil, err
	}
	if err := readRows(pf, r, size, dataEnd, t, opts); err != nil { // sorts each GPU's series
		return nil, err
	}
	return t, nil
}

// open checks a file's header, footer and schema and opens it: an empty trace with its environment and extra
// metadata, and where its column data ends.
func open(r io.ReaderAt, size int64) (*parquet.File, *Trace, int64, error) {
	if size < 12 {
		return nil, nil, 0, fmt.Errorf("%w: %d bytes is too short for a Parquet file", ErrNotTrace, size)
	}
	var head, tail [4]byte
	if _, err := r.ReadAt(head[:], 0); err != nil {
		return nil, nil, 0, fmt.Errorf("reading header: %w", err)
	}
	if _, err := r.ReadAt(tail[:], size-4); err != nil {
		return nil, nil, 0, fmt.Errorf("reading footer: %w", err)
	}
	if !bytes.Equal(head[:], parquetMagic) {
		return nil, nil, 0, fmt.Errorf("%w: no Parquet header", ErrNotTrace)
	}
	if !bytes.Equal(tail[:], parquetMagic) {
		return nil, nil, 0, fmt.Errorf("%w: Parquet footer missing (truncated or still being written)", ErrNotTrace)
	}
	footer, err := readFooter(r, size)
	if err != nil {
		return nil, nil, 0, err
	}
	// Page and column indexes and bloom filters are not used; not reading them leaves less to trust.
	pf, err := openFile(r, size)
	if err != nil {
		return nil, nil, 0, fmt.Errorf("%w: %v", ErrNotTrace, err)
	}
	ver, ok := pf.Lookup(MetaSchema)
	if !ok {
		return nil, nil, 0, fmt.Errorf("%w: Parquet file without %s metadata", ErrNotTrace, MetaSchema)
	}
	if ver != SchemaVersion {
		return nil, nil, 0, fmt.Errorf("%w: schema version %q, this lem reads %q", ErrNotTrace, ver, SchemaVersion)
	}
	var env meta.Environment
	if s, ok := pf.Lookup(MetaEnvironment); ok {
		if err := json.Unmarshal([]byte(s), &env); err != nil {
			return nil, nil, 0, fmt.Errorf("%w: bad %s metadata: %v", ErrNotTrace, MetaEnvironment, err)
		}
	}
	t := New(env)
	for _, kv := range pf.Metadata().KeyValueMetadata {
		if kv.Key != MetaSchema && kv.Key != MetaEnvironment {
			t.Extra[kv.Key] = kv.Value
		}
	}
	return pf, t, size - 8 - footer, nil
}
