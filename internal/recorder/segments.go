package recorder

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/lem-energy/lem/internal/meta"
	"github.com/lem-energy/lem/internal/sampler"
	"github.com/lem-energy/lem/internal/trace"
)

// SegmentPrefix starts the names of a trace's closed segments: ".seg-<name>-<seq>.parquet" beside the trace
// "<name>.parquet" they become. A crash (even kill -9) loses only the segment being written; the closed ones are
// complete Parquet files that ReadSegments and MergeSegments put together.
const SegmentPrefix = ".seg-"

// Segments lists the closed segments of trace name in dir, in sequence order. Only ".seg-<name>-<digits>.parquet"
// is one of name's: the segments of a recording "run-2" beside "run" are not "run"'s, and sequence numbers past
// 999999 (a seventh digit) still sort after the six-digit ones.
func Segments(dir, name string) ([]string, error) {
	// Not a glob: a name may hold the glob's own characters ("exp[1]").
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("segments of %s: %w", filepath.Join(dir, name+".parquet"), err)
	}
	type seg struct {
		path string
		seq  uint64
	}
	var segs []seg
	for _, e := range ents {
		if seq, ok := segmentSeq(e.Name(), name); ok && e.Type().IsRegular() {
			segs = append(segs, seg{filepath.Join(dir, e.Name()), seq})
		}
	}
	sort.Slice(segs, func(i, j int) bool { return segs[i].seq < segs[j].seq })
	out := make([]string, 0, len(segs))
	for _, s := range segs {
		out = append(out, s.path)
	}
	return out, nil
}

// segmentSeq is the sequence number of file base if it is a segment of trace name.
func segmentSeq(base, name string) (uint64, bool) {
	digits, ok := strings.CutPrefix(base, SegmentPrefix+name+"-")
	if !ok {
		return 0, false
	}
	if digits, ok = strings.CutSuffix(digits, ".parquet"); !ok || digits == "" || len(digits) > 18 {
		return 0, false
	}
	for _, r := range digits {
		if r < '0' || r > '9' {
			return 0, false
		}
	}
	n, err := strconv.ParseUint(digits, 10, 64)
	return n, err == nil
}

// UsableSegments is Segments without the segments that cannot be part of the recording, each named in the error:
// a file that is not a complete trace (empty, truncated, corrupt footer), a byte-for-byte copy of an earlier
// segment, and a segment measured elsewhere (another host or other GPUs than the first usable segment's: a file
// copied in beside it).
func UsableSegments(dir, name string) ([]string, error) {
	good, _, err := usableSegments(dir, name)
	return good, err
}

func usableSegments(dir, name string) (good, bad []string, _ error) {
	segs, err := Segments(dir, name)
	if err != nil || len(segs) == 0 {
		return nil, nil, err
	}
	var errs []error
	var first meta.Environment
	for _, p := range segs {
		s, err := trace.OpenStream(p) // the footer and row groups' statistics only
		if err != nil {
			errs = append(errs, fmt.Errorf("segment skipped: %w", err))
			bad = append(bad, p)
			continue
		}
		env := s.Env()
		s.Close()
		if dup := copyOf(p, good); dup != "" {
			errs = append(errs, fmt.Errorf("segment %s skipped: a copy of %s", p, filepath.Base(dup)))
			bad = append(bad, p)
			continue
		}
		if len(good) == 0 {
			first = env
		} else if why := otherPlace(first, env); why != "" {
			errs = append(errs, fmt.Errorf("segment %s skipped: %s than %s", p, why, filepath.Base(good[0])))
			bad = append(bad, p)
			continue
		}
		good = append(good, p)
	}
	return good, bad, errors.Join(errs...)
}

// copyOf is the segment among segs whose bytes p repeats ("" if none): a segment copied under another number
// would count its rows twice. Only files of equal size are read.
func copyOf(p string, segs []string) string {
	st, err := os.Stat(p)
	if err != nil {
		return ""
	}
	var mine []byte
	for _, q := range segs {
		if qs, err := os.Stat(q); err != nil || qs.Size() != st.Size() {
			continue
		}
		if mine == nil {
			if mine, err = os.ReadFile(p); err != nil {
				return ""
			}
		}
		if theirs, err := os.ReadFile(q); err == nil && bytes.Equal(mine, theirs) {
			return q
		}
	}
	return ""
}

// otherPlace says how env was measured elsewhere than first: another host, or other GPUs ("" if neither).
func otherPlace(first, env meta.Environment) string {
	if first.Host.Hostname != env.Host.Hostname {
		return fmt.Sprintf("recorded on host %q, not %q as", env.Host.Hostname, first.Host.Hostname)
	}
	gpus := func(e meta.Environment) string {
		var b strings.Builder
		for _, d := range e.Devices {
			fmt.Fprintf(&b, "%d=%s ", d.Index, d.UUID)
		}
		return strings.TrimSpace(b.String())
	}
	if gpus(first) != gpus(env) {
		return fmt.Sprintf("recorded with GPUs [%s], not [%s] as", gpus(env), gpus(first))
	}
	return ""
}

// ReadSegments reads the usable closed segments of trace name in dir as one trace (nil, nil when there are none).
// Segments that cannot be used or read are skipped and named in the error; the others are still returned.
func ReadSegments(dir, name string) (*trace.Trace, error) {
	segs, uerr := UsableSegments(dir, name)
	if len(segs) == 0 {
		return nil, uerr
	}
	var all *trace.Trace
	errs := []error{uerr}
	for _, p := range segs {
		t, err := trace.ReadFile(p)
		if err != nil {
			errs = append(errs, fmt.Errorf("segment skipped: %w", err))
			continue
		}
		if all == nil {
			all = t
			continue
		}
		for g, s := range t.GPUs {
			all.Series(g).Append(s)
		}
		all.Events = append(all.Events, t.Events...)
	}
	if all != nil {
		for _, s := range all.GPUs {
			s.Sort()
		}
	}
	return all, errors.Join(errs...)
}

// MergeSegments joins the closed segments of trace name in dir into dir/name.parquet and deletes them. When the
// final file already exists (a crash between writing it and deleting the segments), the segments are only
// deleted: the final file holds them. When merging, segments that cannot be used (unreadable, measured elsewhere,
// a copy of another) are kept aside as ".bad", not deleted.
func MergeSegments(dir, name string) error {
	segs, err := Segments(dir, name)
	if err != nil || len(segs) == 0 {
		return err
	}
	final := filepath.Join(dir, name+".parquet")
	if _, err := trace.ReadFile(final); err != nil {
		all, rerr := ReadSegments(dir, name)
		if rerr != nil {
			_, bad, _ := usableSegments(dir, name)
			for _, p := range segs {
				if _, err := trace.ReadFile(p); err != nil || slices.Contains(bad, p) {
					os.Rename(p, p+".bad")
				}
			}
		}
		if all != nil {
			if err := trace.WriteFile(final, all); err != nil {
				return fmt.Errorf("merging %s: %w", final, err)
			}
		}
	}
	for _, p := range segs {
		os.Remove(p)
	}
	return nil
}

// segmentWriter writes sampler records into closed segments of one trace, closing the current segment every
// flushEvery.
type segmentWriter struct {
	dir, name  string
	env        meta.Environment
	meta       map[string]string
	flushEvery time.Duration
	seq        int
	cur        *trace.Writer
	curAt      time.Time
	bytes      int64 // closed segments' size
}

func newSegmentWriter(dir, name string, env meta.Environment, md map[string]string, flushEvery time.Duration) (*segmentWriter, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("trace directory: %w", err)
	}
	// Continue numbering after segments already there (a recording resumed after a crash appends).
	seq := 0
	if segs, _ := Segments(dir, name); len(segs) > 0 {
		if n, ok := segmentSeq(filepath.Base(segs[len(segs)-1]), name); ok {
			seq = int(n) + 1
		}
	}
	return &segmentWriter{dir: dir, name: name, env: env, meta: md, flushEvery: flushEvery, seq: seq}, nil
}

func (w *segmentWriter) write(rec sampler.Record, now time.Time) error {
	if w.cur == nil {
		p := filepath.Join(w.dir, fmt.Sprintf("%s%s-%06d.parquet", SegmentPrefix, w.name, w.seq))
		tw, err := trace.Create(p, w.env)
		if err != nil {
			return err
		}
		for k, v := range w.meta {
			tw.SetMetadata(k, v)
		}
		w.cur, w.curAt = tw, now
		w.seq++
	}
	return Write(w.cur, rec)
}

// tick closes the current segment once it is flushEvery old.
func (w *segmentWriter) tick(now time.Time) error {
	if w.cur != nil && now.Sub(w.curAt) >= w.flushEvery {
		return w.closeSegment()
	}
	return nil
}

func (w *segmentWriter) closeSegment() error {
	if w.cur == nil {
		return nil
	}
	err := w.cur.Close()
	if st, serr := os.Stat(w.cur.Path()); serr == nil {
		w.bytes += st.Size()
	}
	w.cur = nil
	return err
}

// finish closes the current segment and merges all into the final trace.
func (w *segmentWriter) finish() error {
	return errors.Join(w.closeSegment(), MergeSegments(w.dir, w.name))
}
