// Command fleet-om writes a fleet's lem series in OpenMetrics, for `promtool tsdb create-blocks-from openmetrics`
// in the pull benchmark (scripts/bench-pull.sh): GPUS GPUs of one instance over HOURS hours ending at END (Unix
// seconds) — the 50 Hz power stream (job lem_stream), the energy counter every 2 s (consistent with the power),
// and temperature, utilization and SM clock every 15 s. Load changes every few seconds per GPU.
//
//	go run ./fleet-om -gpus 16 -hours 24 -end $(date +%s) > fleet.om
package main

import (
	"bufio"
	"flag"
	"fmt"
	"os"
	"strconv"
	"time"
)

func main() {
	gpus := flag.Int("gpus", 16, "GPUs")
	hours := flag.Float64("hours", 24, "hours of data")
	end := flag.Int64("end", time.Now().Unix(), "end (Unix seconds)")
	instance := flag.String("instance", "fleet-host:9464", "instance label")
	flag.Parse()
	w := bufio.NewWriterSize(os.Stdout, 1<<22)
	defer w.Flush()
	span := int64(*hours * 3600 * 1000) // ms
	t0 := *end*1000 - span
	levels := []float64{78, 690, 320, 700, 115, 450}
	power := func(g int, ms int64) float64 {
		k := (ms/4000 + int64(g)*7) % int64(len(levels)) // a level for 4 s
		return levels[k] + float64((ms/20+int64(g))%13)/2
	}
	lbl := func(g int) string {
		return fmt.Sprintf(`instance=%q,gpu="%d",uuid="GPU-fleet-%02d",modelName="NVIDIA H200"`, *instance, g, g)
	}
	var b []byte
	ts := func(ms int64) []byte {
		b = b[:0]
		b = strconv.AppendInt(b, ms/1000, 10)
		b = append(b, '.')
		r := ms % 1000
		b = append(b, byte('0'+r/100), byte('0'+r/10%10), byte('0'+r%10))
		return b
	}
	num := make([]byte, 0, 32)
	fmt.Fprintln(w, "# TYPE lem_gpu_power_watts gauge")
	for g := range *gpus {
		prefix := "lem_gpu_power_watts{source=\"sample\",job=\"lem_stream\"," + lbl(g) + "} "
		for ms := t0; ms < t0+span; ms += 20 {
			w.WriteString(prefix)
			w.Write(strconv.AppendFloat(num[:0], power(g, ms), 'f', -1, 64))
			w.WriteByte(' ')
			w.Write(ts(ms))
			w.WriteByte('\n')
		}
	}
	fmt.Fprintln(w, "# TYPE lem_gpu_energy_joules counter")
	for g := range *gpus {
		e := 1e6
		for ms := t0; ms < t0+span; ms += 2000 {
			fmt.Fprintf(w, "lem_gpu_energy_joules_total{%s} %.3f %s\n", lbl(g), e, ts(ms))
			for x := ms; x < ms+2000; x += 20 {
				e += power(g, x) * 0.02
			}
		}
	}
	for _, m := range []struct {
		name string
		v    func(g int, ms int64) float64
	}{
		{"lem_gpu_temperature_celsius", func(g int, ms int64) float64 { return 35 + power(g, ms)/20 }},
		{"lem_gpu_utilization_ratio", func(g int, ms int64) float64 { return min(power(g, ms)/700, 1) }},
		{"lem_gpu_sm_clock_hertz", func(g int, ms int64) float64 { return 1.98e9 }},
	} {
		fmt.Fprintf(w, "# TYPE %s gauge\n", m.name)
		for g := range *gpus {
			for ms := t0; ms < t0+span; ms += 15000 {
				fmt.Fprintf(w, "%s{%s} %g %s\n", m.name, lbl(g), m.v(g, ms), ts(ms))
			}
		}
	}
	fmt.Fprintln(w, "# EOF")
}
