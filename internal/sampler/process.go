package sampler

import (
	"context"
	"errors"
	"time"

	"github.com/lem-energy/lem/internal/gpu"
	"github.com/lem-energy/lem/internal/trace"
)

// Device call names of the process poll in Stats.Calls.
const (
	CallProcesses          = "processes"
	CallProcessUtilization = "process_utilization"
)

// processLoop reads, every ProcessInterval, the driver's per-process utilization samples new since the last poll
// and the processes running, and publishes both as one record. A device that supports neither is left alone after
// the first poll; one without per-process utilization (MIG, a recording without it) still has its processes read.
func (d *device) processLoop(ctx context.Context) {
	pu, _ := d.dev.(gpu.ProcessUtilizer)
	tk := d.s.clock.NewTicker(d.s.cfg.ProcessInterval)
	defer tk.Stop()
	var lastSeen time.Time
	listed := true
	for {
		select {
		case <-ctx.Done():
			return
		case tick := <-tk.C():
			d.noteLag("processes", time.Since(tick))
		}
		var samples []trace.ProcessSample
		if pu != nil {
			err := d.call(CallProcessUtilization, func() (err error) { samples, err = pu.ProcessUtilization(lastSeen); return err })
			if errors.Is(err, gpu.ErrNotSupported) {
				pu = nil // asked once: it will not start answering
			}
		}
		for _, p := range samples {
			if p.Time.After(lastSeen) {
				lastSeen = p.Time
			}
		}
		var procs []gpu.Process
		if listed {
			err := d.call(CallProcesses, func() (err error) { procs, err = d.dev.Processes(); return err })
			listed = !errors.Is(err, gpu.ErrNotSupported)
		}
		if pu == nil && !listed {
			return
		}
		at := d.s.clock.Now()
		rec := Record{GPU: d.idx, Kind: KindProcesses, At: at, ProcessSamples: samples}
		for _, p := range procs {
			rec.Processes = append(rec.Processes, trace.Process{Time: at, PID: p.PID, MemoryBytes: p.UsedMemoryBytes,
				GPUInstance: p.GPUInstance, ComputeInstance: p.ComputeInstance, Identity: p.Identity})
		}
		d.mu.Lock()
		d.st.ProcessPolls++
		d.st.ProcessSamples += uint64(len(samples))
		d.st.Processes = len(procs)
		d.mu.Unlock()
		d.s.publish(rec)
	}
}
