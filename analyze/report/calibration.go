package report

import (
	"fmt"
	"math"

	"github.com/lem-energy/lem/analyze/account"
	"github.com/lem-energy/lem/analyze/calibrate"
	"github.com/lem-energy/lem/internal/manifest"
)

// Calibrated says how a run's energies were corrected by a calibration file: for each GPU the file knew, its fit.
type Calibrated struct {
	File   string          `json:"file"`
	Boards []CalibratedGPU `json:"boards"`
}

// CalibratedGPU is one GPU of a run corrected by its board's fit.
type CalibratedGPU struct {
	Index int    `json:"index"`
	UUID  string `json:"uuid"`
	calibrate.Board
}

// Calibrate corrects runs' energies with a calibration file (docs/METHODOLOGY.md, "Calibration"): on every GPU
// whose UUID the file holds, energies over a time T become gain·E + offset·T (raw, counter, samples; runs, phases
// and, on runs with one workload GPU, windows), idle-adjusted ones gain·E (the offset cancels: idle was read by
// the same sensor), derived per-token figures follow; the budgets' gain term becomes the fit's uncertainty on
// those GPUs (the assumed ±5 % stays on the others), and their other terms scale with the gain. Runs whose GPUs
// the file does not know are left as they are. It returns how many runs it corrected.
func Calibrate(runs []Run, c *calibrate.File, name string) int {
	n := 0
	for i := range runs {
		if calibrateRun(&runs[i], c, name) {
			n++
		}
	}
	return n
}

func calibrateRun(r *Run, c *calibrate.File, name string) bool {
	m := r.Manifest
	boards, cal := calibratedBoards(m, c)
	if len(boards) == 0 {
		return false
	}
	cal.File = name
	if r.PhaseUncertainty == nil {
		r.PhaseUncertainty = phaseBudgets(m) // from the figures before correction, recalibrated below
	}
	dur := m.Times.DurationS
	// The budgets' terms before, per run and phase: the raw and adjusted energy per GPU they are spread over.
	runGPU := workloadEnergies(m)
	workload := correctGPUs(m, boards, dur)
	phaseGPU := correctPhases(m, boards)
	if workload == 1 {
		correctWindows(m, boards)
	}
	account.Derive(m)
	r.Uncertainty = recalibrated(r.Uncertainty, runGPU, boards, dur)
	for i, p := range m.Phases {
		if b, ok := r.PhaseUncertainty[p.Name]; ok {
			r.PhaseUncertainty[p.Name] = recalibrated(b, phaseGPU[p.Name], boards, m.Phases[i].DurationS)
		}
	}
	r.Calibrated = &cal
	return true
}

// calibratedBoards are the fits of the run's GPUs the file knows, by GPU index, and the same fits as the run
// reports them (its file name left to the caller).
func calibratedBoards(m *manifest.Manifest, c *calibrate.File) (map[int]calibrate.Board, Calibrated) {
	boards := map[int]calibrate.Board{}
	var cal Calibrated
	for _, g := range m.GPUs {
		if b, ok := c.Boards[g.UUID]; ok && g.UUID != "" {
			boards[g.Index] = b
			cal.Boards = append(cal.Boards, CalibratedGPU{Index: g.Index, UUID: g.UUID, Board: b})
		}
	}
	return boards, cal
}

// workloadEnergies is each workload GPU's raw (hybrid) and idle-adjusted energy.
func workloadEnergies(m *manifest.Manifest) map[int][2]float64 {
	e := map[int][2]float64{}
	for _, g := range m.GPUs {
		if g.Role != manifest.RoleObserved {
			e[g.Index] = [2]float64{g.Energy.HybridJ.Or(math.NaN()), g.Energy.AdjustedJ.Or(math.NaN())}
		}
	}
	return e
}

// correctGPUs corrects each calibrated GPU's energies and powers and sums the run's workload and observed energy
// again; it returns the number of workload GPUs.
func correctGPUs(m *manifest.Manifest, boards map[int]calibrate.Board, dur float64) int {
	m.Energy, m.ObservedEnergy = manifest.Energy{}, nil
	workload := 0
	for i := range m.GPUs {
		g := &m.GPUs[i]
		if b, ok := boards[g.Index]; ok {
			correctEnergy(&g.Energy, b, dur)
			g.MeanPowerW = cnum(b.Gain*g.MeanPowerW.Or(math.NaN()) + b.OffsetW)
			g.PeakPowerW = cnum(b.Gain*g.PeakPowerW.Or(math.NaN()) + b.OffsetW)
			g.IdleW = cnum(b.Gain*g.IdleW.Or(math.NaN()) + b.OffsetW)
		}
		if g.Role == manifest.RoleObserved {
			if m.ObservedEnergy == nil {
				m.ObservedEnergy = &manifest.Energy{}
			}
			m.ObservedEnergy.Sum(g.Energy)
			continue
		}
		workload++
		m.Energy.Sum(g.Energy)
	}
	return workload
}

// correctPhases corrects each phase's energy per calibrated GPU and sums the phase again; it returns each phase's
// raw and adjusted energy per GPU before correction.
func correctPhases(m *manifest.Manifest, boards map[int]calibrate.Board) map[string]map[int][2]float64 {
	before := map[string]map[int][2]float64{}
	for i := range m.Phases {
		p := &m.Phases[i]
		before[p.Name] = map[int][2]float64{}
		p.Energy.HybridJ, p.Energy.AdjustedJ, p.Energy.AdjustedActiveJ = 0, 0, 0
		for j := range p.GPUs {
			pg := &p.GPUs[j]
			before[p.Name][pg.Index] = [2]float64{pg.HybridJ.Or(math.NaN()), pg.AdjustedJ.Or(math.NaN())}
			if b, ok := boards[pg.Index]; ok {
				pg.HybridJ = cnum(b.Gain*pg.HybridJ.Or(math.NaN()) + b.OffsetW*p.DurationS)
				pg.AdjustedJ = cnum(b.Gain * pg.AdjustedJ.Or(math.NaN()))
				pg.AdjustedActiveJ = cnum(b.Gain * pg.AdjustedActiveJ.Or(math.NaN()))
			}
			p.Energy.HybridJ += pg.HybridJ
			p.Energy.AdjustedJ += pg.AdjustedJ
			p.Energy.AdjustedActiveJ += pg.AdjustedActiveJ
		}
	}
	return before
}

// correctWindows corrects the windows of a run with one workload GPU by that GPU's fit (a window's energy is summed
// over the workload's GPUs: with more there is no one fit to apply). Nothing changes if the GPU is not calibrated.
func correctWindows(m *manifest.Manifest, boards map[int]calibrate.Board) {
	var b calibrate.Board
	ok := false
	for _, g := range m.GPUs {
		if g.Role != manifest.RoleObserved {
			b, ok = boards[g.Index]
		}
	}
	if !ok {
		return
	}
	for i := range m.Windows {
		w := &m.Windows[i]
		correctEnergy(&w.Energy, b, w.DurationS)
		w.MedianJ = cnum(b.Gain * w.MedianJ.Or(math.NaN())) // an occurrence's own duration is not kept: gain only
		w.P90J = cnum(b.Gain * w.P90J.Or(math.NaN()))
	}
}

// correctEnergy puts one GPU's energy over durS seconds on the meter's scale.
func correctEnergy(e *manifest.Energy, b calibrate.Board, durS float64) {
	lin := func(v manifest.Num) manifest.Num { return cnum(b.Gain*v.Or(math.NaN()) + b.OffsetW*durS) }
	e.CounterJ, e.HybridJ, e.SampledJ = lin(e.CounterJ), lin(e.HybridJ), lin(e.SampledJ)
	e.AdjustedJ = cnum(b.Gain * e.AdjustedJ.Or(math.NaN()))
	e.AdjustedActiveJ = cnum(b.Gain * e.AdjustedActiveJ.Or(math.NaN()))
}

func cnum(v float64) manifest.Num {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return manifest.Null
	}
	return manifest.Num(v)
}

// recalibrated is a budget after correction: the energies the corrected ones, the gain term from the fit on the
// calibrated GPUs (each GPU's energy before correction, gpuE: raw and adjusted) and the assumed ±5 % on the
// others, GPUs in quadrature; the other terms, joules read by the same sensors, scaled by the energy-weighted gain.
func recalibrated(b Budget, gpuE map[int][2]float64, boards map[int]calibrate.Board, durS float64) Budget {
	if len(b.Terms) == 0 {
		return b
	}
	var raw, adj, raw0, adj0, g2raw, g2adj float64
	for idx, e := range gpuE {
		if bd, ok := boards[idx]; ok {
			cr, ur := bd.Correct(e[0], durS)
			ca, ua := bd.CorrectDifference(e[1])
			raw, adj = raw+cr, adj+ca
			g2raw, g2adj = g2raw+ur*ur, g2adj+ua*ua
		} else {
			raw, adj = raw+e[0], adj+e[1]
			g2raw += (gainU * e[0]) * (gainU * e[0])
			g2adj += (gainU * e[1]) * (gainU * e[1])
		}
		raw0, adj0 = raw0+e[0], adj0+e[1]
	}
	scale := func(after, before float64) manifest.Num {
		if !(before > 0) {
			return 1
		}
		return manifest.Num(after / before)
	}
	sr, sa := scale(raw, raw0), scale(adj, adj0)
	out := Budget{RawJ: cnum(raw), AdjustedJ: cnum(adj)}
	if !b.AdjustedJ.Valid() {
		out.AdjustedJ = manifest.Null
	}
	for _, t := range b.Terms {
		switch t.Name {
		case TermGain:
			t.RawJ, t.AdjustedJ = cnum(math.Sqrt(g2raw)), cnum(math.Sqrt(g2adj))
			if !b.AdjustedJ.Valid() {
				t.AdjustedJ = manifest.Null
			}
		default:
			t.RawJ, t.AdjustedJ = t.RawJ*sr, t.AdjustedJ*sa
		}
		out.Terms = append(out.Terms, t)
	}
	out.combine()
	return out
}

// String says in one line how a run was corrected (uncertainties expanded, k = 2).
func (c *Calibrated) String() string {
	if c == nil {
		return ""
	}
	s := "calibrated by " + c.File + ":"
	for _, b := range c.Boards {
		s += fmt.Sprintf(" GPU %d (%s) gain %.4f ± %.4f, offset %+.1f ± %.1f W;", b.Index, b.UUID, b.Gain, K*b.GainSE,
			b.OffsetW, K*b.OffsetSEW)
	}
	return s[:len(s)-1]
}
