package exporter

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/lem-energy/lem/internal/meta"
	"github.com/lem-energy/lem/internal/recorder"
	"github.com/lem-energy/lem/internal/sampler"
	"github.com/lem-energy/lem/internal/trace"
)

// DirOptions configure the rotating recorder.
type DirOptions struct {
	Dir string
	// FlushEvery closes the current segment: a crash (even kill -9) loses at most this much.
	FlushEvery time.Duration
	// RotateEvery starts a new file; its segments are merged into one trace file.
	RotateEvery time.Duration
	// MaxBytes starts a new file once the current one's segments reach this size (0: no limit).
	MaxBytes int64
	// MaxAge and MaxFiles bound retention of finished files (0: unbounded).
	MaxAge   time.Duration
	MaxFiles int
}

// DirRecorder writes everything the sampler delivers into Parquet trace files in a directory. Data goes into
// short segments, each closed (footer written, renamed into place) every FlushEvery, and the segments of one
// rotation period are merged into a single file "lem-<start>.parquet". A crash loses only the open segment;
// segments left by a crash are merged at the next start.
type DirRecorder struct {
	opts  DirOptions
	env   meta.Environment
	sub   *sampler.Subscription
	log   *slog.Logger
	done  chan struct{}
	err   error
	id    string // current file id (start time)
	seq   int
	seg   *trace.Writer
	segAt time.Time
	fileT time.Time
	bytes int64 // closed segments of the current file
}

const (
	segPrefix  = ".seg-"
	filePrefix = "lem-"
	idLayout   = "20060102T150405.000Z"
)

// StartDir recovers leftovers in the directory and starts recording.
func StartDir(s *sampler.Sampler, opts DirOptions, log *slog.Logger) (*DirRecorder, error) {
	if opts.FlushEvery <= 0 {
		opts.FlushEvery = 10 * time.Second
	}
	if opts.RotateEvery <= 0 {
		opts.RotateEvery = time.Hour
	}
	if err := os.MkdirAll(opts.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("record dir: %w", err)
	}
	d := &DirRecorder{opts: opts, env: s.Environment(), log: log, done: make(chan struct{})}
	if err := d.recover(); err != nil {
		return nil, err
	}
	d.sub = s.Subscribe("record_dir", recorder.QueueSize)
	go d.run()
	return d, nil
}

// recover merges segments a crash left behind and removes partial (temporary) files.
func (d *DirRecorder) recover() error {
	ents, err := os.ReadDir(d.opts.Dir)
	if err != nil {
		return fmt.Errorf("record dir: %w", err)
	}
	ids := map[string]bool{}
	for _, e := range ents {
		name := e.Name()
		switch {
		case strings.HasSuffix(name, ".tmp"):
			d.log.Warn("removing a partial file left by a crash (its rows were never flushed)", "file", name)
			os.Remove(filepath.Join(d.opts.Dir, name))
		case strings.HasPrefix(name, segPrefix):
			if id, _, ok := strings.Cut(strings.TrimPrefix(name, segPrefix), "-"); ok {
				ids[id] = true
			}
		}
	}
	for id := range ids {
		d.log.Info("recovering segments of an interrupted recording", "file", filePrefix+id+".parquet")
		if err := d.merge(id); err != nil {
			return err
		}
	}
	return nil
}

func (d *DirRecorder) segments(id string) ([]string, error) {
	m, err := filepath.Glob(filepath.Join(d.opts.Dir, segPrefix+id+"-*.parquet"))
	sort.Strings(m) // sequence numbers are zero-padded
	return m, err
}

// merge joins the segments of file id into its final file and deletes them.
func (d *DirRecorder) merge(id string) error {
	segs, err := d.segments(id)
	if err != nil || len(segs) == 0 {
		return err
	}
	final := filepath.Join(d.opts.Dir, filePrefix+id+".parquet")
	var all *trace.Trace
	if prev, err := trace.ReadFile(final); err == nil {
		all = prev // a crash between writing the final file and deleting the segments
		segs = nil
	}
	for _, p := range segs {
		t, err := trace.ReadFile(p)
		if err != nil {
			d.log.Error("segment unreadable; kept aside", "file", p, "err", err)
			os.Rename(p, p+".bad")
			continue
		}
		if all == nil {
			all = t
			continue
		}
		for g, s := range t.GPUs {
			dst := all.Series(g)
			dst.Samples = append(dst.Samples, s.Samples...)
			dst.Counters = append(dst.Counters, s.Counters...)
			dst.Telemetry = append(dst.Telemetry, s.Telemetry...)
		}
		all.Events = append(all.Events, t.Events...)
	}
	if all != nil && segs != nil {
		if err := trace.WriteFile(final, all); err != nil {
			return fmt.Errorf("merging recording %s: %w", final, err)
		}
	}
	all2, _ := d.segments(id)
	for _, p := range all2 {
		os.Remove(p)
	}
	return nil
}

func (d *DirRecorder) run() {
	defer close(d.done)
	tick := time.NewTicker(d.opts.FlushEvery / 4)
	defer tick.Stop()
	for {
		select {
		case rec, ok := <-d.sub.C():
			if !ok {
				d.keep(d.finishFile())
				return
			}
			d.keep(d.write(rec))
		case <-tick.C:
			d.keep(d.maybeRoll(time.Now()))
		}
	}
}

func (d *DirRecorder) keep(err error) {
	if err != nil {
		d.log.Error("recorder", "err", err)
		if d.err == nil {
			d.err = err
		}
	}
}

func (d *DirRecorder) write(rec sampler.Record) error {
	now := time.Now()
	if d.seg == nil {
		if d.id == "" {
			d.fileT = now
			d.id = now.UTC().Format(idLayout)
			d.seq = 0
		}
		p := filepath.Join(d.opts.Dir, fmt.Sprintf("%s%s-%06d.parquet", segPrefix, d.id, d.seq))
		w, err := trace.Create(p, d.env)
		if err != nil {
			return err
		}
		d.seg, d.segAt = w, now
		d.seq++
	}
	return recorder.Write(d.seg, rec)
}

func (d *DirRecorder) closeSegment() error {
	if d.seg == nil {
		return nil
	}
	err := d.seg.Close()
	if st, serr := os.Stat(d.seg.Path()); serr == nil {
		d.bytes += st.Size()
	}
	d.seg = nil
	return err
}

func (d *DirRecorder) maybeRoll(now time.Time) error {
	var err error
	if d.seg != nil && now.Sub(d.segAt) >= d.opts.FlushEvery {
		err = d.closeSegment()
	}
	full := d.opts.MaxBytes > 0 && d.bytes >= d.opts.MaxBytes
	if d.id != "" && (full || now.Sub(d.fileT) >= d.opts.RotateEvery) {
		err = errors.Join(err, d.finishFile())
	}
	return err
}

// finishFile closes the segment, merges the current file and applies retention.
func (d *DirRecorder) finishFile() error {
	err := d.closeSegment()
	if d.id != "" {
		err = errors.Join(err, d.merge(d.id))
		d.id, d.bytes = "", 0
	}
	return errors.Join(err, d.retain(time.Now()))
}

func (d *DirRecorder) retain(now time.Time) error {
	files, err := filepath.Glob(filepath.Join(d.opts.Dir, filePrefix+"*.parquet"))
	if err != nil {
		return err
	}
	sort.Strings(files) // names sort by start time
	for i, f := range files {
		id := strings.TrimSuffix(strings.TrimPrefix(filepath.Base(f), filePrefix), ".parquet")
		t, perr := time.Parse(idLayout, id)
		old := d.opts.MaxAge > 0 && perr == nil && now.Sub(t) > d.opts.MaxAge
		excess := d.opts.MaxFiles > 0 && len(files)-i > d.opts.MaxFiles
		if old || excess {
			d.log.Info("retention: removing recording", "file", f)
			os.Remove(f)
		}
	}
	return nil
}

// Stop closes and merges the current file. The sampler should have stopped first.
func (d *DirRecorder) Stop() error {
	d.sub.Close()
	<-d.done
	return d.err
}
