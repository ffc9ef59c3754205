package trace

import (
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/lem-energy/lem/internal/meta"
)

// ImportProbeDir converts a CSV recording made by the NVML probe (a directory with counters.csv,
// power_samples.csv and optionally marks.txt) into a trace of one GPU. env describes the recorded machine.
//
// marks.txt lines are "MARK <name> <unix ns> [key=value …]". A name "X-start" starts phase X, "X-end" ends it
// (its key=values become a result event), "end" ends the open phase, any other name starts a phase of that name.
func ImportProbeDir(dir string, gpu int, env meta.Environment) (*Trace, error) {
	if err := checkGPU(gpu, false); err != nil {
		return nil, fmt.Errorf("importing %s: %w", dir, err)
	}
	open := func(name string) (*os.File, error) {
		f, err := os.Open(filepath.Join(dir, name))
		if err != nil {
			return nil, fmt.Errorf("reading recording: %w", err)
		}
		return f, nil
	}
	counters, err := open("counters.csv")
	if err != nil {
		return nil, err
	}
	defer counters.Close()
	samples, err := open("power_samples.csv")
	if err != nil {
		return nil, err
	}
	defer samples.Close()
	marks := filepath.Join(dir, "marks.txt")
	b, err := os.ReadFile(marks)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("reading %s: %w", marks, err)
	}
	return importProbe(gpu, env, counters, samples, b, marks)
}

// importProbe reads a probe recording from counters.csv and power_samples.csv (named by their readers) and the
// content of marks.txt (named marksName; nil if there is none).
func importProbe(gpu int, env meta.Environment, counters, samples named, marks []byte, marksName string) (*Trace, error) {
	t := New(env)
	s := t.Series(gpu)
	if err := readCSV(counters, []string{"t_ns", "energy_mj"}, func(c cols) error {
		ts, err := c.ns("t_ns")
		if err != nil {
			return err
		}
		e, err := c.int("energy_mj")
		if err != nil {
			return err
		}
		if e < 0 {
			return c.errorf("energy_mj", "%d is negative", e)
		}
		cr := CounterReading{Time: ts, EnergyMJ: uint64(e)}
		if us, err := c.int("energy_read_us"); err == nil {
			if us < 0 || us > int64(time.Hour/time.Microsecond) {
				return c.errorf("energy_read_us", "%d µs is not a read duration", us)
			}
			cr.ReadDuration = time.Duration(us) * time.Microsecond
		}
		s.Counters = append(s.Counters, cr)
		tm := NewTelemetry(ts)
		tm.AveragePowerW = c.scaled("power_mw", 1e-3)
		tm.InstantPowerW = c.scaled("inst_mw", 1e-3)
		tm.TemperatureC = c.scaled("temp_c", 1)
		tm.SMClockHz = c.scaled("sm_mhz", 1e6)
		tm.MemClockHz = c.scaled("mem_mhz", 1e6)
		tm.UtilGPU = c.scaled("util_gpu", 1e-2)
		tm.UtilMem = c.scaled("util_mem", 1e-2)
		tm.MemUsedBytes = c.scaled("mem_used_b", 1)
		if v, err := c.int("clk_reasons"); err == nil {
			tm.ClockReasons, tm.ClockReasonsValid = uint64(v), true
		}
		if d, ok := env.Device(gpu); ok && d.PowerLimits.EnforcedW > 0 {
			tm.PowerLimitW = d.PowerLimits.EnforcedW
		}
		s.Telemetry = append(s.Telemetry, tm)
		return nil
	}); err != nil {
		return nil, err
	}
	last := Stamp(-1) // before any time accepted
	if err := readCSV(samples, []string{"ts_us", "power_mw"}, func(c cols) error {
		us, err := c.int("ts_us")
		if err != nil {
			return err
		}
		mw, err := c.int("power_mw")
		if err != nil {
			return err
		}
		if mw < 0 {
			return c.errorf("power_mw", "%d is negative", mw)
		}
		if us < 0 || us >= maxTimeNS/1000 {
			return c.errorf("ts_us", "%d: time outside 1970..2200", us)
		}
		ts := Stamp(us * 1000)
		if !ts.After(last) { // overlapping drains repeat samples; keep each once
			return nil
		}
		last = ts
		s.Samples = append(s.Samples, PowerSample{Time: ts, PowerW: float64(mw) / 1000})
		return nil
	}); err != nil {
		return nil, err
	}
	if marks != nil {
		evs, err := ParseProbeMarks(string(marks))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", marksName, err)
		}
		t.Events = append(t.Events, evs...)
	}
	s.Sort()
	return t, nil
}

// ParseProbeMarks turns MARK lines into phase and result events (see ImportProbeDir).
func ParseProbeMarks(text string) ([]Event, error) {
	var out []Event
	for n, line := range strings.Split(text, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		if f[0] != "MARK" || len(f) < 3 {
			return nil, fmt.Errorf("line %d: want \"MARK <name> <unix ns> [k=v …]\", got %q", n+1, line)
		}
		ns, err := strconv.ParseInt(f[2], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("line %d: bad timestamp %q", n+1, f[2])
		}
		if err := checkTime(time.Unix(0, ns)); err != nil {
			return nil, fmt.Errorf("line %d: timestamp %d: %w", n+1, ns, err)
		}
		attrs := map[string]string{}
		for _, kv := range f[3:] {
			k, v, ok := strings.Cut(kv, "=")
			if !ok {
				return nil, fmt.Errorf("line %d: %q is not key=value", n+1, kv)
			}
			attrs[k] = v
		}
		if len(attrs) == 0 {
			attrs = nil
		}
		ts, name := time.Unix(0, ns), f[1]
		switch {
		case name == "end":
			out = append(out, Event{Time: ts, GPU: NoGPU, Type: EventPhaseEnd, Attrs: attrs})
		case strings.HasSuffix(name, "-start"):
			out = append(out, Event{Time: ts, GPU: NoGPU, Type: EventPhase, Name: strings.TrimSuffix(name, "-start"),
				Attrs: attrs})
		case strings.HasSuffix(name, "-end"):
			ph := strings.TrimSuffix(name, "-end")
			out = append(out, Event{Time: ts, GPU: NoGPU, Type: EventPhaseEnd, Name: ph})
			if attrs != nil {
				out = append(out, Event{Time: ts, GPU: NoGPU, Type: EventResult, Name: ph, Attrs: attrs})
			}
		default:
			out = append(out, Event{Time: ts, GPU: NoGPU, Type: EventPhase, Name: name, Attrs: attrs})
		}
	}
	return out, nil
}

// cols is one CSV record addressed by header name.
type cols struct {
	idx  map[string]int
	rec  []string
	file string
	line int
}

func (c cols) get(name string) (string, bool) {
	i, ok := c.idx[name]
	if !ok || i >= len(c.rec) {
		return "", false
	}
	return c.rec[i], true
}

func (c cols) errorf(name, format string, a ...any) error {
	return fmt.Errorf("%s:%d: column %s: %s", c.file, c.line, name, fmt.Sprintf(format, a...))
}

func (c cols) int(name string) (int64, error) {
	s, ok := c.get(name)
	if !ok {
		return 0, fmt.Errorf("%s:%d: no column %q", c.file, c.line, name)
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, c.errorf(name, "%q is not an integer", s)
	}
	return v, nil
}

// ns reads a time in Unix nanoseconds.
func (c cols) ns(name string) (Stamp, error) {
	v, err := c.int(name)
	if err != nil {
		return 0, err
	}
	if err := checkStamp(Stamp(v)); err != nil {
		return 0, c.errorf(name, "%d: %v", v, err)
	}
	return Stamp(v), nil
}

// scaled returns the column times k, or NaN where it is missing, unparsable or not finite.
func (c cols) scaled(name string, k float64) float64 {
	s, ok := c.get(name)
	if !ok {
		return nan
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsInf(v*k, 0) || math.IsNaN(v) {
		return nan
	}
	return v * k
}

// named is a CSV source with the name its errors give.
type named interface {
	io.Reader
	Name() string
}

func readCSV(f named, required []string, fn func(cols) error) error {
	path := f.Name()
	r := csv.NewReader(f)
	r.ReuseRecord = true
	head, err := r.Read()
	if err != nil {
		return fmt.Errorf("%s: reading header: %w", path, err)
	}
	idx := map[string]int{}
	for i, h := range head {
		idx[strings.TrimSpace(h)] = i
	}
	for _, req := range required {
		if _, ok := idx[req]; !ok {
			return fmt.Errorf("%s: missing column %q (header %q)", path, req, head)
		}
	}
	for {
		rec, err := r.Read()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		line, _ := r.FieldPos(0)
		if err := fn(cols{idx: idx, rec: rec, file: path, line: line}); err != nil {
			return err
		}
	}
}
