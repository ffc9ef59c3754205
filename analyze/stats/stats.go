// Package stats summarises repeated measurements: mean, spread, confidence intervals (exact Student t for any n,
// bootstrap for n ≥ 10) and ratios against a reference. Pure functions, table-tested.
package stats

import (
	"encoding/json"
	"math"
	"math/rand/v2"
	"slices"

	"gonum.org/v1/gonum/stat/distuv"
)

// Summary describes n repeated values of one quantity.
type Summary struct {
	N    int     `json:"n"`
	Mean float64 `json:"mean"`
	Std  float64 `json:"std"` // sample standard deviation (n−1)
	CV   float64 `json:"cv"`  // Std / Mean
	// CILow and CIHigh are the 95 % confidence interval of the mean from Student's t with n−1 degrees of
	// freedom (exact for normal data, any n ≥ 2); NaN for n < 2.
	CILow  float64 `json:"ci_low"`
	CIHigh float64 `json:"ci_high"`
	// BootLow and BootHigh are a 95 % percentile-bootstrap interval of the mean, given for n ≥ BootstrapMinN.
	BootLow  float64 `json:"boot_low,omitempty"`
	BootHigh float64 `json:"boot_high,omitempty"`
}

// BootstrapMinN is the fewest values a bootstrap interval is computed for.
const BootstrapMinN = 10

// Confidence is the confidence level of every interval.
const Confidence = 0.95

// TQuantile is the two-sided critical value of Student's t for the confidence level and df degrees of freedom.
func TQuantile(df int) float64 {
	return distuv.StudentsT{Mu: 0, Sigma: 1, Nu: float64(df)}.Quantile(1 - (1-Confidence)/2)
}

// Summarize computes the summary of xs. The bootstrap is seeded, so reports are reproducible.
func Summarize(xs []float64) Summary {
	s := Summary{N: len(xs), Mean: math.NaN(), Std: math.NaN(), CV: math.NaN(), CILow: math.NaN(), CIHigh: math.NaN()}
	if s.N == 0 {
		return s
	}
	var sum float64
	for _, x := range xs {
		sum += x
	}
	s.Mean = sum / float64(s.N)
	if s.N < 2 {
		return s
	}
	var ss float64
	for _, x := range xs {
		ss += (x - s.Mean) * (x - s.Mean)
	}
	s.Std = math.Sqrt(ss / float64(s.N-1))
	if s.Mean != 0 {
		s.CV = s.Std / s.Mean
	}
	half := TQuantile(s.N-1) * s.Std / math.Sqrt(float64(s.N))
	s.CILow, s.CIHigh = s.Mean-half, s.Mean+half
	if s.N >= BootstrapMinN {
		s.BootLow, s.BootHigh = bootstrap(xs, 10000)
	}
	return s
}

func bootstrap(xs []float64, rounds int) (lo, hi float64) {
	r := rand.New(rand.NewPCG(1, 2))
	means := make([]float64, rounds)
	n := len(xs)
	for i := range means {
		var sum float64
		for range n {
			sum += xs[r.IntN(n)]
		}
		means[i] = sum / float64(n)
	}
	slices.Sort(means)
	a := (1 - Confidence) / 2
	return means[int(a*float64(rounds))], means[int((1-a)*float64(rounds))-1]
}

// Ratio is mean(a)/mean(b) with a 95 % interval from the delta method (independent samples, Welch–Satterthwaite
// degrees of freedom).
type Ratio struct {
	Value  float64 `json:"value"`
	CILow  float64 `json:"ci_low"`
	CIHigh float64 `json:"ci_high"`
}

// RatioOf compares a to the reference b.
func RatioOf(a, b Summary) Ratio {
	r := Ratio{Value: a.Mean / b.Mean, CILow: math.NaN(), CIHigh: math.NaN()}
	if a.N < 2 || b.N < 2 || b.Mean == 0 {
		return r
	}
	va, vb := a.Std*a.Std/float64(a.N), b.Std*b.Std/float64(b.N)
	// Relative variance of a ratio of independent means (first-order delta method).
	rel := va/(a.Mean*a.Mean) + vb/(b.Mean*b.Mean)
	df := 1.0
	if va+vb > 0 {
		num := (va/(a.Mean*a.Mean) + vb/(b.Mean*b.Mean))
		den := math.Pow(va/(a.Mean*a.Mean), 2)/float64(a.N-1) + math.Pow(vb/(b.Mean*b.Mean), 2)/float64(b.N-1)
		if den > 0 {
			df = num * num / den
		}
	}
	t := distuv.StudentsT{Mu: 0, Sigma: 1, Nu: df}.Quantile(1 - (1-Confidence)/2)
	half := t * r.Value * math.Sqrt(rel)
	r.CILow, r.CIHigh = r.Value-half, r.Value+half
	return r
}

// jnum is a float that encodes NaN as null (JSON has no NaN).
type jnum float64

func (f jnum) MarshalJSON() ([]byte, error) {
	if math.IsNaN(float64(f)) || math.IsInf(float64(f), 0) {
		return []byte("null"), nil
	}
	return json.Marshal(float64(f))
}

// MarshalJSON writes undefined values (NaN) as null.
func (s Summary) MarshalJSON() ([]byte, error) {
	out := struct {
		N        int   `json:"n"`
		Mean     jnum  `json:"mean"`
		Std      jnum  `json:"std"`
		CV       jnum  `json:"cv"`
		CILow    jnum  `json:"ci_low"`
		CIHigh   jnum  `json:"ci_high"`
		BootLow  *jnum `json:"boot_low,omitempty"`
		BootHigh *jnum `json:"boot_high,omitempty"`
	}{N: s.N, Mean: jnum(s.Mean), Std: jnum(s.Std), CV: jnum(s.CV), CILow: jnum(s.CILow), CIHigh: jnum(s.CIHigh)}
	if s.BootLow != 0 || s.BootHigh != 0 {
		lo, hi := jnum(s.BootLow), jnum(s.BootHigh)
		out.BootLow, out.BootHigh = &lo, &hi
	}
	return json.Marshal(out)
}

// MarshalJSON writes undefined values (NaN) as null.
func (r Ratio) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		Value  jnum `json:"value"`
		CILow  jnum `json:"ci_low"`
		CIHigh jnum `json:"ci_high"`
	}{jnum(r.Value), jnum(r.CILow), jnum(r.CIHigh)})
}
