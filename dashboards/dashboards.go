// Package dashboards generates lem's Grafana dashboards. The committed JSON files are this package's output
// (go run ./dashboards/gen); a test checks they match and that every query returns data from a real Prometheus.
package dashboards

import (
	"encoding/json"
	"fmt"
)

// DS is a datasource reference; every panel, target and annotation uses the ${datasource} variable.
type DS struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

var promDS = DS{Type: "prometheus", UID: "${datasource}"}

// Target is one query.
type Target struct {
	Datasource   DS     `json:"datasource"`
	Expr         string `json:"expr"`
	LegendFormat string `json:"legendFormat,omitempty"`
	RefID        string `json:"refId"`
	Instant      bool   `json:"instant,omitempty"`
	Range        bool   `json:"range,omitempty"`
	Format       string `json:"format,omitempty"`
}

// GridPos places a panel.
type GridPos struct {
	H int `json:"h"`
	W int `json:"w"`
	X int `json:"x"`
	Y int `json:"y"`
}

// Defaults are a panel's field defaults.
type Defaults struct {
	Unit     string   `json:"unit"`
	Min      *float64 `json:"min,omitempty"`
	Decimals *int     `json:"decimals,omitempty"`
}

// FieldConfig holds the defaults.
type FieldConfig struct {
	Defaults  Defaults `json:"defaults"`
	Overrides []any    `json:"overrides"`
}

// Panel is a dashboard panel.
type Panel struct {
	ID          int            `json:"id"`
	Type        string         `json:"type"`
	Title       string         `json:"title"`
	Description string         `json:"description,omitempty"`
	GridPos     GridPos        `json:"gridPos"`
	Datasource  DS             `json:"datasource"`
	Targets     []Target       `json:"targets"`
	FieldConfig FieldConfig    `json:"fieldConfig"`
	Options     map[string]any `json:"options,omitempty"`
	// Repeat names a variable: Grafana draws the panel once per value, with the variable set to that value.
	Repeat          string `json:"repeat,omitempty"`
	RepeatDirection string `json:"repeatDirection,omitempty"`
	MaxPerRow       int    `json:"maxPerRow,omitempty"`
}

// Variable is a template variable.
type Variable struct {
	Name       string `json:"name"`
	Label      string `json:"label,omitempty"`
	Type       string `json:"type"`
	Query      any    `json:"query"`
	Datasource *DS    `json:"datasource,omitempty"`
	Refresh    int    `json:"refresh,omitempty"`
	IncludeAll bool   `json:"includeAll,omitempty"`
	Multi      bool   `json:"multi,omitempty"`
	AllValue   string `json:"allValue,omitempty"`
	Current    any    `json:"current,omitempty"`
	Sort       int    `json:"sort,omitempty"`
}

// Annotation is an annotation query.
type Annotation struct {
	Name        string `json:"name"`
	Datasource  DS     `json:"datasource"`
	Enable      bool   `json:"enable"`
	IconColor   string `json:"iconColor"`
	Expr        string `json:"expr"`
	Step        string `json:"step"`
	TitleFormat string `json:"titleFormat"`
	TextFormat  string `json:"textFormat,omitempty"`
	TagKeys     string `json:"tagKeys,omitempty"`
}

// Dashboard is a Grafana dashboard model.
type Dashboard struct {
	UID           string   `json:"uid"`
	Title         string   `json:"title"`
	Description   string   `json:"description"`
	Tags          []string `json:"tags"`
	Timezone      string   `json:"timezone"`
	SchemaVersion int      `json:"schemaVersion"`
	Version       int      `json:"version"`
	Refresh       string   `json:"refresh"`
	Editable      bool     `json:"editable"`
	Time          struct {
		From string `json:"from"`
		To   string `json:"to"`
	} `json:"time"`
	Templating struct {
		List []Variable `json:"list"`
	} `json:"templating"`
	Annotations struct {
		List []Annotation `json:"list"`
	} `json:"annotations"`
	Panels []Panel `json:"panels"`
}

func datasourceVar() Variable {
	return Variable{Name: "datasource", Label: "Data source", Type: "datasource", Query: "prometheus"}
}

func queryVar(name, label, query string) Variable {
	ds := promDS
	return Variable{Name: name, Label: label, Type: "query", Datasource: &ds, Refresh: 2, IncludeAll: true, Multi: true,
		AllValue: ".*", Sort: 1, Query: map[string]any{"query": query, "refId": "PrometheusVariableQueryEditor-VariableQuery"}}
}

// jobVar chooses the scrape job, one at a time. lem-exporter's remote-write stream has the same instance as its
// scrapes and carries the same power and energy series under job "lem_stream": every query matches one job, so
// the two never add up. The choices come from lem_gpu_info, which only scrapes carry.
func jobVar() Variable {
	v := queryVar("job", "Job", `label_values(lem_gpu_info, job)`)
	v.IncludeAll, v.Multi, v.AllValue = false, false, ""
	v.Current = map[string]any{"selected": true, "text": "lem-exporter", "value": "lem-exporter"}
	return v
}

type builder struct {
	d      Dashboard
	x, y   int
	nextID int
}

func newDashboard(uid, title, desc string) *builder {
	b := &builder{nextID: 1}
	b.d = Dashboard{UID: uid, Title: title, Description: desc, Tags: []string{"lem", "gpu", "energy"}, Timezone: "browser",
		SchemaVersion: 39, Version: 1, Refresh: "30s", Editable: true}
	b.d.Time.From, b.d.Time.To = "now-30m", "now"
	return b
}

// add places a panel of width w (of 24) on the grid, row by row, and returns it for further settings.
func (b *builder) add(typ, title, desc, unit string, w int, targets ...Target) *Panel {
	if b.x+w > 24 {
		b.x, b.y = 0, b.y+8
	}
	for i := range targets {
		targets[i].Datasource = promDS
		targets[i].RefID = string(rune('A' + i))
		if !targets[i].Instant {
			targets[i].Range = true
		}
	}
	p := Panel{ID: b.nextID, Type: typ, Title: title, Description: desc, GridPos: GridPos{H: 8, W: w, X: b.x, Y: b.y},
		Datasource: promDS, Targets: targets, FieldConfig: FieldConfig{Defaults: Defaults{Unit: unit}, Overrides: []any{}}}
	if typ == "timeseries" {
		p.Options = map[string]any{"legend": map[string]any{"displayMode": "table", "placement": "bottom", "showLegend": true},
			"tooltip": map[string]any{"mode": "multi", "sort": "none"}}
	}
	b.nextID++
	b.x += w
	b.d.Panels = append(b.d.Panels, p)
	return &b.d.Panels[len(b.d.Panels)-1]
}

func t(expr, legend string) Target { return Target{Expr: expr, LegendFormat: legend} }

// instant is a query evaluated once, at the end of the dashboard's time range.
func instant(expr, legend string) Target {
	return Target{Expr: expr, LegendFormat: legend, Instant: true}
}

const (
	hostSel = `job="$job",instance=~"$instance"`
	sel     = hostSel + `,gpu=~"$gpu"`
)

// Fleet is the "GPU power & energy" dashboard for every GPU host.
func Fleet() Dashboard {
	b := newDashboard("lem-gpu-fleet", "lem — GPU power & energy",
		"Power, energy, temperature, clocks, utilization, memory, throttling, capture quality and energy by container of every GPU lem-exporter samples.")
	b.d.Templating.List = []Variable{datasourceVar(), jobVar(),
		queryVar("instance", "Host", `label_values(lem_gpu_info{job="$job"}, instance)`),
		queryVar("gpu", "GPU", `label_values(lem_gpu_info{job="$job",instance=~"$instance"}, gpu)`)}
	leg := "{{instance}} GPU {{gpu}}"
	b.add("timeseries", "Power", "Power at each scrape: the latest 50 Hz driver sample, the instantaneous reading (field 186) and the 1 s average.", "watt", 12,
		t(`lem_gpu_power_watts{`+sel+`}`, leg+" {{source}}"))
	b.add("timeseries", "Energy rate", "Rate of the GPU energy counter: the exact average power between the counter readings the scrapes stored.", "watt", 12,
		t(`rate(lem_gpu_energy_joules_total{`+sel+`}[$__rate_interval])`, leg))
	b.add("stat", "Energy in the time range", "Increase of the GPU energy counter over the dashboard's time range.", "joule", 8,
		instant(`sum by (instance, gpu) (increase(lem_gpu_energy_joules_total{`+sel+`}[$__range]))`, leg))
	b.add("timeseries", "Temperature", "", "celsius", 8, t(`lem_gpu_temperature_celsius{`+sel+`}`, leg))
	b.add("timeseries", "Clocks", "SM and memory clocks.", "hertz", 8,
		t(`lem_gpu_sm_clock_hertz{`+sel+`}`, leg+" SM"), t(`lem_gpu_memory_clock_hertz{`+sel+`}`, leg+" memory"))
	b.add("timeseries", "Utilization", "GPU and memory-controller utilization.", "percentunit", 8,
		t(`lem_gpu_utilization_ratio{`+sel+`}`, leg+" GPU"), t(`lem_gpu_memory_utilization_ratio{`+sel+`}`, leg+" memory"))
	b.add("timeseries", "Memory used", "", "bytes", 8,
		t(`lem_gpu_memory_used_bytes{`+sel+`}`, leg), t(`lem_gpu_memory_total_bytes{`+sel+`}`, leg+" total"))
	b.add("timeseries", "Clock-event reasons", "Share of time each clock-event (throttle) reason was active.", "percentunit", 8,
		t(`rate(lem_gpu_clock_event_reason_seconds_total{`+sel+`}[$__rate_interval])`, leg+" {{reason}}"))
	b.add("timeseries", "Capture quality", "Power-sample gaps (in_batch: the driver's own; at_drain) and buffer overruns per second, and failing NVML calls.", "short", 12,
		t(`rate(lem_exporter_sample_gaps_total{`+sel+`}[$__rate_interval])`, leg+" gaps {{where}}"),
		t(`rate(lem_exporter_sample_buffer_overruns_total{`+sel+`}[$__rate_interval])`, leg+" overruns"),
		t(`rate(lem_exporter_nvml_errors_total{`+sel+`}[$__rate_interval])`, leg+" {{call}} errors"))
	b.add("table", "GPUs", "Identity of every GPU; up is 0 while a GPU is lost.", "short", 12,
		Target{Expr: `lem_gpu_info{` + sel + `} * on (instance, gpu) group_left lem_gpu_up{` + sel + `}`, Instant: true, Format: "table"})
	// Per-process energy, per container: the sum of its processes' counters, counting only what it gains between
	// steps. A process that starts adds its energy since its start; one whose series ends (folded into its
	// container's exited processes, or an exporter restart) takes nothing away and counts nothing twice, where
	// increase() would count a fold twice (per process) or read a vanished process as a counter reset (per
	// container).
	container := func(offset string) string {
		return `sum by (instance, namespace, pod, container) (lem_process_gpu_energy_joules_total{` + sel + `}` + offset + `)`
	}
	added := `clamp_min(` + container("") + ` - (` + container(" offset $__interval") + ` or ` + container("") + ` * 0), 0)`
	b.add("table", "GPU energy by container", "GPU energy each container (pod, namespace) used on each host over the time range, as lem-exporter attributes it (host processes: no container). No data until the exporter exposes per-process energy.", "joule", 12,
		Target{Expr: `sort_desc(sum_over_time((` + added + `)[$__range:$__interval]))`, Instant: true, Format: "table"})
	b.add("timeseries", "GPU power by container", "Power each container drew on the GPUs of each host: its attributed energy per interval.", "watt", 12,
		t(`(`+added+`) / ($__interval_ms / 1000)`, "{{instance}} {{namespace}}/{{pod}}/{{container}}"))
	return b.d
}

// All maps file names to dashboards.
func All() map[string]Dashboard {
	return map[string]Dashboard{"lem-gpu-fleet.json": Fleet(), "lem-experiment.json": Experiment()}
}

// Render is the committed form of a dashboard.
func Render(d Dashboard) ([]byte, error) {
	b, err := json.MarshalIndent(d, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("dashboard %s: %w", d.UID, err)
	}
	return append(b, '\n'), nil
}
