package exporter

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/lem-energy/lem/internal/recorder"
)

// RecorderCollector exposes the recorder's health (with --record.dir): its write errors and the free space where
// it writes, which the LemRecorderErrors and LemRecorderDiskFull alerts read. A filesystem metric of
// node_exporter sees mount points only, not the directory the recorder uses.
type RecorderCollector struct {
	rec   interface{ Stats() recorder.DirStats }
	table table[recorder.DirStats]
}

var _ prometheus.Collector = (*RecorderCollector)(nil)

var recorderMetrics = []metric[recorder.DirStats]{
	{name: "lem_exporter_recorder_errors_total", typ: prometheus.CounterValue,
		help:   "Errors met while recording (see the log): the full-rate data may not be recorded.",
		values: func(s recorder.DirStats) []value { return one(float64(s.Errors)) }},
	{name: "lem_exporter_recorder_disk_free_bytes", typ: prometheus.GaugeValue,
		help:   "Free space on the file system of the recording directory.",
		values: func(s recorder.DirStats) []value { return one(s.FreeBytes) }},
}

// NewRecorderCollector builds the recorder metrics' descriptors.
func NewRecorderCollector(rec interface{ Stats() recorder.DirStats }) *RecorderCollector {
	return &RecorderCollector{rec: rec, table: newTable(nil, recorderMetrics)}
}

// Describe sends the descriptors.
func (c *RecorderCollector) Describe(ch chan<- *prometheus.Desc) { c.table.describe(ch) }

// Collect reads the recorder's stats.
func (c *RecorderCollector) Collect(ch chan<- prometheus.Metric) { c.table.collect(ch, c.rec.Stats()) }
