package exporter

import (
	"runtime"
	"testing"
	"time"
)

// A full queue at the default bound, filled the way the stream fills it on a one-GPU host (a batch a second:
// 50 power samples in one series, a counter reading in another), costs what docs/RELIABILITY.md states: under 64
// bytes a sample, about 11 MB at 250,000 samples. Pushing beyond the bound drops the oldest and keeps the total.
func TestRemoteWriteQueueMemoryPerSample(t *testing.T) {
	w := &RemoteWriter{opts: RemoteWriteOptions{Instance: "host", Job: "lem_stream"}}
	q := newBatchQueue(DefaultRemoteWriteQueueSamples)
	at := time.Now()
	batch := func() *writeRequest {
		req := newWriteRequest()
		ts := req.series(w.labels("lem_gpu_power_watts", "0", "GPU-0", "source", "sample"))
		for range 50 {
			ts.samples = append(ts.samples, sample{512.25, at.UnixMilli()})
			at = at.Add(20 * time.Millisecond)
		}
		req.series(w.labels("lem_gpu_energy_joules_total", "0", "GPU-0")).samples = []sample{{1e6, at.UnixMilli()}}
		req.samples = 51
		return req
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for q.len()+51 <= DefaultRemoteWriteQueueSamples {
		if n := q.push(batch()); n != 0 {
			t.Fatalf("dropped %d samples below the bound", n)
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	perSample := float64(after.HeapAlloc-before.HeapAlloc) / float64(q.len())
	t.Logf("%d samples in %d batches: %.1f MB, %.1f bytes a sample", q.len(), len(q.batches),
		float64(after.HeapAlloc-before.HeapAlloc)/1e6, perSample)
	if perSample > 64 {
		t.Errorf("%.1f bytes a queued sample, want at most 64", perSample)
	}
	held := q.len()
	dropped := 0
	for range 100 {
		dropped += q.push(batch())
	}
	if got := q.len(); got > DefaultRemoteWriteQueueSamples || got < held {
		t.Errorf("after 100 batches more the queue holds %d samples, want %d..%d", got, held, DefaultRemoteWriteQueueSamples)
	}
	if dropped != 100*51-(q.len()-held) {
		t.Errorf("dropped %d samples, want %d", dropped, 100*51-(q.len()-held))
	}
	runtime.KeepAlive(q)
}

// A Retry-After from the receiver (seconds or an HTTP date, or anything else) is held to 0..maxWait.
func FuzzCapRetryAfter(f *testing.F) {
	for _, s := range []string{"3600", "0", "-5", "1.5", "", "Wed, 21 Oct 2015 07:28:00 GMT", "Fri, 31 Dec 9999 23:59:59 GMT",
		"99999999999999999999", " 7 "} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		const maxWait = 30 * time.Second
		if d := capRetryAfter(v, maxWait); d < 0 || d > maxWait {
			t.Fatalf("Retry-After %q: %s, want 0..%s", v, d, maxWait)
		}
	})
}
