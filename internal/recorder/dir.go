package recorder

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/lem-energy/lem/internal/sampler"
)

// DirOptions configure a rotating recording directory.
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

// Dir records everything a sampler delivers into trace files "lem-<start>.parquet" in a directory, one per
// rotation period, each written as closed segments (see Options.Path) merged at rotation. Segments a crash left
// behind are merged at the next start.
type Dir struct {
	opts  DirOptions
	s     *sampler.Sampler
	sub   *sampler.Subscription
	log   *slog.Logger
	done  chan struct{}
	err   error
	cur   *segmentWriter // the current file's, nil between files
	fileT time.Time
	errs  atomic.Uint64 // errors met while recording (each logged)
}

// DirStats is what the recorder's own metrics show.
type DirStats struct {
	Errors uint64 // errors met while recording
	// FreeBytes is the space left to unprivileged writers on the directory's file system; NaN if unknown.
	FreeBytes float64
}

// Stats reads the recorder's error count and the free space where it writes.
func (d *Dir) Stats() DirStats {
	st := DirStats{Errors: d.errs.Load(), FreeBytes: math.NaN()}
	var fs syscall.Statfs_t
	if err := syscall.Statfs(d.opts.Dir, &fs); err == nil {
		st.FreeBytes = float64(fs.Bavail) * float64(fs.Bsize)
	}
	return st
}

const (
	filePrefix = "lem-"
	idLayout   = "20060102T150405.000Z"
)

// StartDir recovers leftovers in the directory and starts recording.
func StartDir(s *sampler.Sampler, opts DirOptions, log *slog.Logger) (*Dir, error) {
	if opts.FlushEvery <= 0 {
		opts.FlushEvery = DefaultFlushEvery
	}
	if opts.RotateEvery <= 0 {
		opts.RotateEvery = time.Hour
	}
	if err := os.MkdirAll(opts.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("record dir: %w", err)
	}
	d := &Dir{opts: opts, s: s, log: log, done: make(chan struct{})}
	if err := d.recover(); err != nil {
		return nil, err
	}
	d.sub = s.Subscribe("record_dir", QueueSize)
	go d.run()
	return d, nil
}

// recover merges segments a crash left behind and removes partial (temporary) files.
func (d *Dir) recover() error {
	ents, err := os.ReadDir(d.opts.Dir)
	if err != nil {
		return fmt.Errorf("record dir: %w", err)
	}
	names := map[string]bool{}
	for _, e := range ents {
		name := e.Name()
		switch {
		case strings.HasSuffix(name, ".tmp"):
			d.log.Warn("removing a partial file left by a crash (its rows were never flushed)", "file", name)
			os.Remove(filepath.Join(d.opts.Dir, name))
		case strings.HasPrefix(name, SegmentPrefix) && strings.HasSuffix(name, ".parquet"):
			base := strings.TrimSuffix(strings.TrimPrefix(name, SegmentPrefix), ".parquet")
			if i := strings.LastIndex(base, "-"); i > 0 {
				names[base[:i]] = true
			}
		}
	}
	for name := range names {
		d.log.Info("recovering segments of an interrupted recording", "file", name+".parquet")
		if err := MergeSegments(d.opts.Dir, name); err != nil {
			return err
		}
	}
	return nil
}

func (d *Dir) run() {
	defer close(d.done)
	tick := tickEvery(d.opts.FlushEvery)
	t := time.NewTicker(tick)
	defer t.Stop()
	for {
		select {
		case rec, ok := <-d.sub.C():
			if !ok {
				d.keep(d.finishFile())
				return
			}
			d.keep(d.write(rec))
		case now := <-t.C:
			d.keep(d.maybeRoll(now, tick))
		}
	}
}

func (d *Dir) keep(err error) {
	if err != nil {
		d.errs.Add(1)
		d.log.Error("recorder", "err", err)
		if d.err == nil {
			d.err = err
		}
	}
}

func (d *Dir) write(rec sampler.Record) error {
	now := time.Now()
	if d.cur == nil {
		w, err := newSegmentWriter(d.opts.Dir, filePrefix+now.UTC().Format(idLayout), d.s.Environment(), nil, d.opts.FlushEvery)
		if err != nil {
			return err
		}
		d.cur, d.fileT = w, now
	}
	return d.cur.write(rec, now)
}

func (d *Dir) maybeRoll(now time.Time, tick time.Duration) error {
	if d.cur == nil {
		return nil
	}
	err := d.cur.tick(now.Add(tick))
	full := d.opts.MaxBytes > 0 && d.cur.bytes >= d.opts.MaxBytes
	if full || now.Sub(d.fileT) >= d.opts.RotateEvery {
		err = errors.Join(err, d.finishFile())
	}
	return err
}

// finishFile closes and merges the current file and applies retention.
func (d *Dir) finishFile() error {
	var err error
	if d.cur != nil {
		err = d.cur.finish()
		d.cur = nil
	}
	return errors.Join(err, d.retain(time.Now()))
}

func (d *Dir) retain(now time.Time) error {
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
func (d *Dir) Stop() error {
	d.sub.Close()
	<-d.done
	return d.err
}
