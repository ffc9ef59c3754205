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
		AllValue: ".*", Query: map[string]any{"query": query, "refId": "PrometheusVariableQueryEditor-VariableQuery"}}
}

type builder struct {
	d      Dashboard
	x, y   int
	nextID int
}

func newDashboard(uid, title, desc string) *builder {
	b := &builder{nextID: 1}
	b.d = Dashboard{UID: uid, Title: title, Description: desc, Tags: []string{"lem", "gpu", "energy"}, Timezone: "browser",
		SchemaVersion: 39, Version: 1, Refresh: "10s", Editable: true}
	b.d.Time.From, b.d.Time.To = "now-30m", "now"
	return b
}

// add places a panel of width w (of 24) on the grid, row by row.
func (b *builder) add(typ, title, desc, unit string, w int, targets ...Target) {
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
}

func t(expr, legend string) Target { return Target{Expr: expr, LegendFormat: legend} }

const sel = `instance=~"$instance",gpu=~"$gpu"`

// Fleet is the "GPU power & energy" dashboard for every GPU host.
func Fleet() Dashboard {
	b := newDashboard("lem-gpu-fleet", "lem — GPU power & energy",
		"Power, energy, temperature, clocks, utilization, memory, throttling and capture quality of every GPU lem-exporter samples.")
	b.d.Templating.List = []Variable{datasourceVar(),
		queryVar("instance", "Host", `label_values(lem_gpu_info, instance)`),
		queryVar("gpu", "GPU", `label_values(lem_gpu_info{instance=~"$instance"}, gpu)`)}
	leg := "{{instance}} GPU {{gpu}}"
	b.add("timeseries", "Power", "Latest 50 Hz driver sample, instantaneous (field 186) and 1 s average power.", "watt", 12,
		t(`lem_gpu_power_watts{`+sel+`}`, leg+" {{source}}"))
	b.add("timeseries", "Energy rate", "Rate of the GPU energy counter: the exact average power between counter reads.", "watt", 12,
		t(`rate(lem_gpu_energy_joules_total{`+sel+`}[$__rate_interval])`, leg))
	b.add("stat", "Energy in the time range", "Increase of the GPU energy counter over the dashboard's time range.", "joule", 8,
		t(`sum by (instance, gpu) (increase(lem_gpu_energy_joules_total{`+sel+`}[$__range]))`, leg))
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
		Target{Expr: `lem_gpu_info{` + sel + `} * on (instance, gpu) group_left lem_gpu_up`, Instant: true, Format: "table"})
	return b.d
}

// Experiment shows one run: power with its phases as annotations, the idle baseline, energy per phase, J/token.
func Experiment() Dashboard {
	b := newDashboard("lem-experiment", "lem — Experiment",
		"One experiment run from its markers: power with the run's phases as annotations, the idle baseline lem-run measured, energy per phase and per output token.")
	b.d.Refresh = "5s"
	b.d.Time.From = "now-15m"
	runVar := queryVar("run_id", "Run", `label_values(lem_run_active, run_id)`)
	runVar.IncludeAll, runVar.Multi = false, false
	b.d.Templating.List = []Variable{datasourceVar(), runVar,
		queryVar("instance", "Host", `label_values(lem_run_active{run_id=~"$run_id"}, instance)`)}
	b.d.Annotations.List = []Annotation{
		{Name: "Phases", Datasource: promDS, Enable: true, IconColor: "orange", Step: "1s",
			Expr: `lem_run_phase_active{run_id=~"$run_id",instance=~"$instance"} == 1`, TitleFormat: "{{phase}}", TagKeys: "phase"},
		{Name: "Run", Datasource: promDS, Enable: true, IconColor: "blue", Step: "1s",
			Expr: `lem_run_active{run_id=~"$run_id",instance=~"$instance"} == 1`, TitleFormat: "{{run_id}} ({{experiment}})"},
	}
	run := `max by (instance) (lem_run_active{run_id=~"$run_id",instance=~"$instance"})`
	phase := `max by (instance, phase) (lem_run_phase_active{run_id=~"$run_id",instance=~"$instance"})`
	power := `sum by (instance) (rate(lem_gpu_energy_joules_total{instance=~"$instance"}[5s]))`
	b.add("timeseries", "Power and idle baseline", "50 Hz power of the run's hosts and the idle baseline lem-run measured (results idle_w_gpuN).", "watt", 24,
		t(`lem_gpu_power_watts{instance=~"$instance",source="sample"}`, "{{instance}} GPU {{gpu}}"),
		t(`lem_run_result{run_id=~"$run_id",key=~"idle_w_gpu.*"}`, "idle baseline {{key}}"))
	b.add("bargauge", "Energy per phase", "Counter energy while each phase was active (all GPUs of the host), joules.", "joule", 12,
		Target{Expr: `sum by (phase) (sum_over_time((` + power + ` * on (instance) group_right ` + phase + `)[$__range:1s]))`,
			LegendFormat: "{{phase}}", Instant: true})
	b.add("stat", "Energy per output token", "Counter energy while the run was active over the output tokens it reported.", "suffix:J/token", 6,
		Target{Expr: `sum(sum_over_time((` + power + ` * on (instance) group_right ` + run + `)[$__range:1s])) / sum(max_over_time(lem_run_result{run_id=~"$run_id",key="output_tokens"}[$__range]))`,
			Instant: true})
	b.add("stat", "Run energy", "Counter energy while the run was active, joules.", "joule", 6,
		Target{Expr: `sum(sum_over_time((` + power + ` * on (instance) group_right ` + run + `)[$__range:1s]))`, Instant: true})
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
