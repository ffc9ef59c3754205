package dashboards

import "fmt"

// The experiment dashboard's energies come from the counter readings Prometheus stored (one per scrape, each
// stamped with its read time), interpolated linearly between readings and cut at the run's or phase's own start
// and end timestamps: the counter's increase over exactly that window, whatever the scrape interval. rate()
// over a fixed window, instead, extrapolates and depends on where the scrapes fall.
//
// A subquery steps through the time range every 2 s. At the step where a new reading appears, irate and
// idelta give the slope and the increase since the reading before it, and so the time between the two; the
// interval's energy is spread evenly over that time and the part inside the window kept:
//
//	(C_i − C_{i−1}) / (t_i − t_{i−1}) × |(t_{i−1}, t_i] ∩ [start, end]|
//
// Summed over readings this is C(end) − C(start) with C interpolated between readings. A reading's own time is
// taken as the middle of the step it appeared in (within a second): timestamp() would give it exactly but costs
// time quadratic in the range on Prometheus 2.x, where irate and idelta cost milliseconds an hour. Only the
// intervals cut by a window's edge feel that second; every interval inside counts exactly.

// energyStep is the subquery step, in seconds: shorter than any scrape interval lem supports (10 s and up), so
// each reading appears in a step of its own. The cost grows as its inverse; the error at a window's edge with it
// (1 s: −0.17 % on the demo run at 15 s scrapes, 2 s: −0.27 %, 5 s: −0.55 %; a 140 s run −1.0 % at 2 s, −3.3 %
// at 5 s).
const energyStep = 2

// lookahead is how far past a reading the run's and phase's markers are read at each step: the scrape that
// stored the reading also knows whether the run or phase had started or ended by then, and it comes at most
// lem-exporter's counter read interval (2 s) after the reading. Read at each step, not once over the whole
// range, they keep the cost linear in the range.
const lookahead = "10s"

const (
	runSel  = hostSel + `,run_id="$run_id"`
	counter = `lem_gpu_energy_joules_total{` + hostSel + `}`
)

// atEnd is the last value of sel in the dashboard's time range: for the figures computed once, outside the
// subqueries.
func atEnd(sel string) string { return "last_over_time(" + sel + "[$__range] @ end())" }

// ahead is sel as the first scrapes after a step's readings saw it.
func ahead(sel string) string { return sel + " offset -" + lookahead }

// runGPUs are the run's workload GPUs (lem_run_gpu_active, from lem-run's workload_gpus label); on a host where
// the run names none (markers posted by a workload itself), every GPU of the host. read reads a run series.
func runGPUs(read func(string) string) string {
	return `(group by (instance, gpu) (` + read(`lem_run_gpu_active{`+runSel+`}`) + `) or on (instance) (group by (instance, gpu) (` +
		read(counter) + `) and on (instance) max by (instance) (` + read(`lem_run_start_timestamp_seconds{`+runSel+`}`) + `)))`
}

var (
	// The run's start and end per host at each step; a run still going ends at +Inf.
	runStart = `max by (instance) (` + ahead(`lem_run_start_timestamp_seconds{`+runSel+`}`) + `)`
	runEnd   = `(max by (instance) (` + ahead(`lem_run_end_timestamp_seconds{`+runSel+`}`) + `) or on (instance) (` + runStart + ` * 0 + Inf))`

	// Figures read once, at the end of the time range.
	startOnce = `max by (instance) (` + atEnd(`lem_run_start_timestamp_seconds{`+runSel+`}`) + `)`
	endOnce   = `max by (instance) (` + atEnd(`lem_run_end_timestamp_seconds{`+runSel+`}`) + `)`
	gpusOnce  = runGPUs(atEnd)
	// baseline is the idle power lem-run measured per GPU before the run.
	baseline = `max by (instance, gpu) (` + atEnd(`lem_run_baseline_watts{`+runSel+`,stat="median"}`) + `)`
	tokens   = `max(` + atEnd(`lem_run_result{`+runSel+`,key="output_tokens"}`) + `)`

	// Per subquery step: a new reading t_i (in this step), the increase and slope since the one before.
	// (A reading is new if the newest value differs from a step before: point lookups, whichever way a Prometheus
	// version bounds range selectors. A counter that did not move adds nothing and would divide 0 by 0.)
	fresh   = fmt.Sprintf(`(%s != %s offset %ds) and (idelta(%s[5m]) > 0)`, counter, counter, energyStep, counter)
	slope   = `irate(` + counter + `[5m])`
	span    = `(idelta(` + counter + `[5m]) / ` + slope + `)` // t_i − t_{i−1}
	readT   = fmt.Sprintf(`(%s * 0 + time() - %g)`, counter, float64(energyStep)/2)
	prevT   = `(` + readT + ` - ` + span + `)`
	runSpan = overlap(runStart, runEnd)
	runRaw  = `sum(` + perGPU(slope+` * `+runSpan) + `)`
	// Above idle: each GPU's power above its baseline over the run, never below 0 per GPU (as lem-analyze), and
	// only where every workload GPU has a baseline.
	baseAhead   = `max by (instance, gpu) (` + ahead(`lem_run_baseline_watts{`+runSel+`,stat="median"}`) + `)`
	runAdjusted = `(sum(clamp_min(` + perGPU(`(`+slope+` - on (instance, gpu) group_left () `+baseAhead+`) * `+runSpan) + `, 0)) and on () (count(` +
		baseline + ` and on (instance, gpu) ` + gpusOnce + `) == count(` + gpusOnce + `)))`
)

// overlap is, per GPU, how much of the interval between the previous reading and the newest one lies in
// [start, end] (per-host vectors): (t_i − t_{i−1}) less the parts before start and after end, never negative.
func overlap(start, end string) string {
	return fmt.Sprintf(`clamp_min(%s - clamp_min(%s - on (instance) group_right () %s, 0) - clamp_min(%s - on (instance) group_left () %s, 0), 0)`,
		span, start, prevT, readT, end)
}

// perGPU sums expr over the readings of the time range, on the run's GPUs, per GPU.
func perGPU(expr string) string {
	return fmt.Sprintf(`sum_over_time((%s and on (instance, gpu) %s and %s)[$__range:%ds])`, expr, runGPUs(ahead), fresh, energyStep)
}

// phaseEnergy is the counter energy of the run's GPUs while phase $phase was active, every occurrence that
// lasted longer than a scrape interval.
func phaseEnergy() string {
	pSel := runSel + `,phase="$phase"`
	start := `max by (instance) (` + ahead(`lem_run_phase_start_timestamp_seconds{`+pSel+`}`) + `)`
	// An end before the start belongs to an earlier occurrence (a store without staleness markers keeps it).
	end := `(max by (instance) (` + ahead(`lem_run_phase_end_timestamp_seconds{`+pSel+`}`) + `) >= on (instance) ` + start +
		` or on (instance) ` + runEnd + `)`
	return `sum(` + perGPU(slope+` * `+overlap(start, end)) + `)`
}

// Experiment shows one run: power with its phases as annotations, the idle baseline, raw and above-idle energy,
// per output token, per phase.
func Experiment() Dashboard {
	b := newDashboard("lem-experiment", "lem — Experiment",
		"One experiment run from its markers: power with the run's phases as annotations, the idle baseline lem-run measured, the run's energy raw and above idle, per output token and per phase. Energies are the counter's increase over the run's own start and end: keep the run inside the time range.")
	b.d.Refresh = "1m"
	b.d.Time.From = "now-1h"
	runVar := queryVar("run_id", "Run", `label_values(lem_run_active{job="$job"}, run_id)`)
	runVar.IncludeAll, runVar.Multi, runVar.AllValue, runVar.Sort = false, false, "", 0
	phaseVar := queryVar("phase", "Phase", `label_values(lem_run_phase_start_timestamp_seconds{job="$job",run_id="$run_id"}, phase)`)
	phaseVar.AllValue = ""
	phaseVar.Current = map[string]any{"selected": true, "text": []string{"All"}, "value": []string{"$__all"}}
	b.d.Templating.List = []Variable{datasourceVar(), jobVar(), runVar,
		queryVar("instance", "Host", `label_values(lem_run_active{job="$job",run_id="$run_id"}, instance)`), phaseVar}
	b.d.Annotations.List = []Annotation{
		{Name: "Phases", Datasource: promDS, Enable: true, IconColor: "orange", Step: "15s",
			Expr: `lem_run_phase_active{` + runSel + `} == 1`, TitleFormat: "{{phase}}", TagKeys: "phase"},
		{Name: "Run", Datasource: promDS, Enable: true, IconColor: "blue", Step: "15s",
			Expr: `lem_run_active{` + runSel + `} == 1`, TitleFormat: "{{run_id}} ({{experiment}})"},
	}
	b.add("timeseries", "Power of the run's GPUs", "The run's workload GPUs: power from the energy counter's rate (summed per host), the latest 50 Hz sample at each scrape per GPU, and the idle baseline lem-run measured before the run.", "watt", 24,
		t(`sum by (instance) (rate(`+counter+`[$__rate_interval]) and on (instance, gpu) `+gpusOnce+`)`, "{{instance}} energy counter"),
		t(`lem_gpu_power_watts{`+hostSel+`,source="sample"} and on (instance, gpu) `+gpusOnce, "{{instance}} GPU {{gpu}} 50 Hz sample"),
		t(`max by (instance, gpu) (lem_run_baseline_watts{`+runSel+`,stat="median"})`, "{{instance}} GPU {{gpu}} idle baseline"))
	b.add("stat", "Run energy", "Energy of the run's workload GPUs from its start to its end (to now while it runs): the energy counter's increase over the run.", "joule", 4,
		instant(runRaw, ""))
	b.add("stat", "Run energy above idle", "Run energy less each GPU's idle baseline (median) times the run's duration, never below 0 per GPU. lem-analyze also corrects the baseline for temperature where a host's fit allows; this does not.", "joule", 4,
		instant(runAdjusted, ""))
	b.add("stat", "Energy per output token", "Run energy over the output tokens the run reported (LEM_RESULT output_tokens).", "suffix:J/token", 4,
		instant(runRaw+` / `+tokens, ""))
	b.add("stat", "Energy per output token above idle", "Run energy above idle over the output tokens.", "suffix:J/token", 4,
		instant(runAdjusted+` / `+tokens, ""))
	b.add("stat", "Output tokens", "Output tokens the run reported.", "short", 4, instant(tokens, ""))
	b.add("stat", "Run duration", "From the run's start to its end (to now while it runs).", "s", 4,
		instant(`max((`+endOnce+` or on (instance) (`+startOnce+` * 0 + time())) - `+startOnce+`)`, ""))
	p := b.add("stat", "Phase $phase", "Energy of the run's workload GPUs while the phase was active, every occurrence summed. Phases shorter than a scrape interval are not resolved here; lem-analyze resolves them from the 50 Hz samples.", "joule", 6,
		instant(phaseEnergy(), ""))
	p.Repeat, p.RepeatDirection, p.MaxPerRow = "phase", "h", 4
	return b.d
}
