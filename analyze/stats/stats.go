// Package stats summarises repeated measurements: mean, spread and 95 % confidence intervals that respect the
// quantity (positive quantities get intervals on the log scale, which cannot cross zero), a studentized bootstrap
// for n ≥ 10, and ratios against a reference, paired by cycle or independent. Below MinIntervalN values no
// interval is given: the values themselves are. Pure functions; docs/METHODOLOGY.md gives the coverage measured
// by simulation.
package stats

import (
	"encoding/json"
	"math"
	"math/rand/v2"
	"slices"

	"gonum.org/v1/gonum/stat/distuv"
)

// Interval methods (Summary.Method, Ratio.Method).
const (
	// MethodT is Student's t on the values: mean ± t(n−1) · s/√n.
	MethodT = "t"
	// MethodLogT is Student's t on the log scale for positive quantities: mean · exp(± t(n−1) · s/(mean √n)), the
	// delta method for log(mean). It cannot cross zero and is asymmetric the way positive data are.
	MethodLogT = "log-t"
	// MethodLogRatio is the delta method for log(ā/b̄) with Student's t (Welch–Satterthwaite degrees of freedom for
	// independent samples, n−1 for pairs).
	MethodLogRatio = "log-ratio"
	// MethodBootT is the studentized bootstrap (bootstrap-t), on the log scale for positive quantities.
	MethodBootT = "bootstrap-t"
)

// MinIntervalN is the fewest values an interval is computed from: with two, Student's t has one degree of
// freedom and its 95 % interval is ±12.7 standard errors (n = 2 once gave "1.000 [-11.709, 13.709] s").
const MinIntervalN = 3

// BootstrapMinN is the fewest values a bootstrap interval is computed for.
const BootstrapMinN = 10

// BootstrapRounds is the number of bootstrap resamples: enough for the 2.5 % and 97.5 % quantiles of the
// studentized mean (Efron & Tibshirani suggest 1,000 or more for intervals).
const BootstrapRounds = 4000

// Confidence is the confidence level of every interval.
const Confidence = 0.95

// Summary describes n repeated values of one quantity.
type Summary struct {
	N      int       `json:"n"`
	Values []float64 `json:"values"` // the values, in the order given
	Mean   float64   `json:"mean"`
	Std    float64   `json:"std"` // sample standard deviation (n−1)
	CV     float64   `json:"cv"`  // Std / Mean
	// Positive says the quantity cannot be negative (energies, durations, J/token): its intervals are on the log
	// scale.
	Positive bool `json:"positive"`
	// CILow and CIHigh are the 95 % confidence interval of the mean by Method; NaN for n < MinIntervalN.
	CILow  float64 `json:"ci_low"`
	CIHigh float64 `json:"ci_high"`
	Method string  `json:"method,omitempty"`
	// BootLow and BootHigh are the 95 % studentized-bootstrap interval of the mean, for n ≥ BootstrapMinN.
	BootLow  float64 `json:"boot_low"`
	BootHigh float64 `json:"boot_high"`
}

// HasInterval says whether the summary carries a confidence interval (n ≥ MinIntervalN).
func (s Summary) HasInterval() bool { return !math.IsNaN(s.CILow) && !math.IsNaN(s.CIHigh) }

// HasBootstrap says whether the summary carries a bootstrap interval.
func (s Summary) HasBootstrap() bool { return !math.IsNaN(s.BootLow) && !math.IsNaN(s.BootHigh) }

// SE is the standard error of the mean, s/√n; NaN for n < 2.
func (s Summary) SE() float64 {
	if s.N < 2 {
		return math.NaN()
	}
	return s.Std / math.Sqrt(float64(s.N))
}

// TQuantile is the two-sided critical value of Student's t for the confidence level and df degrees of freedom.
func TQuantile(df float64) float64 {
	return distuv.StudentsT{Mu: 0, Sigma: 1, Nu: df}.Quantile(1 - (1-Confidence)/2)
}

// SummarizePositive summarises a positive quantity (energy, duration, J/token): its intervals are computed on the
// log scale and stay above zero. A value ≤ 0 (an adjusted energy clamped at 0) makes the log scale unusable:
// the summary then falls back to Student's t with its lower end held at 0.
func SummarizePositive(xs []float64) Summary { return summarize(xs, true, true) }

// Summarize summarises a quantity that may take any sign (an energy adjusted to active idle): Student's t and the
// bootstrap-t on the values themselves.
func Summarize(xs []float64) Summary { return summarize(xs, false, true) }

// summarize computes the summary; boot adds the bootstrap interval (the costly part). A quantity that may take
// any sign (positive false) gets Student's t and the bootstrap-t on the values themselves.
func summarize(xs []float64, positive, boot bool) Summary {
	s := Summary{N: len(xs), Values: slices.Clone(xs), Mean: math.NaN(), Std: math.NaN(), CV: math.NaN(),
		CILow: math.NaN(), CIHigh: math.NaN(), BootLow: math.NaN(), BootHigh: math.NaN()}
	if s.Values == nil {
		s.Values = []float64{}
	}
	if s.N == 0 {
		return s
	}
	s.Mean, s.Std = meanStd(xs)
	if s.Mean != 0 && !math.IsNaN(s.Std) {
		s.CV = s.Std / s.Mean
	}
	logScale := positive && slices.Min(xs) > 0
	s.Positive = logScale
	if s.N < MinIntervalN {
		return s
	}
	t := TQuantile(float64(s.N - 1))
	se := s.SE()
	if logScale {
		h := t * se / s.Mean
		s.CILow, s.CIHigh, s.Method = s.Mean*math.Exp(-h), s.Mean*math.Exp(h), MethodLogT
	} else {
		s.CILow, s.CIHigh, s.Method = s.Mean-t*se, s.Mean+t*se, MethodT
		if positive {
			s.CILow = math.Max(s.CILow, 0)
		}
	}
	if boot && s.N >= BootstrapMinN {
		s.BootLow, s.BootHigh = bootstrapT(xs, logScale, BootstrapRounds)
		if positive && !logScale {
			s.BootLow = math.Max(s.BootLow, 0)
		}
	}
	return s
}

func meanStd(xs []float64) (mean, std float64) {
	var sum float64
	for _, x := range xs {
		sum += x
	}
	mean = sum / float64(len(xs))
	if len(xs) < 2 {
		return mean, math.NaN()
	}
	var ss float64
	for _, x := range xs {
		ss += (x - mean) * (x - mean)
	}
	return mean, math.Sqrt(ss / float64(len(xs)-1))
}

// bootstrapT is the studentized bootstrap interval of the mean: the distribution of (m* − m)/se* over resamples
// stands in for Student's t, so skewed data get an asymmetric interval and the interval is second-order accurate
// (the percentile bootstrap covered 90.5 % at n = 10). On the log scale for positive data the statistic is
// (log m* − log m)/(se*/m*). The resamples are seeded: a report is reproducible.
func bootstrapT(xs []float64, logScale bool, rounds int) (lo, hi float64) {
	n := len(xs)
	mean, std := meanStd(xs)
	se := std / math.Sqrt(float64(n))
	if se == 0 {
		return mean, mean
	}
	r := rand.New(rand.NewPCG(1, 2))
	ts := make([]float64, 0, rounds)
	for range rounds {
		var sum, sq float64
		for range n {
			x := xs[r.IntN(n)]
			sum += x
			sq += x * x
		}
		m := sum / float64(n)
		v := (sq - float64(n)*m*m) / float64(n-1)
		if v <= 0 {
			continue // a resample of one repeated value has no spread to studentize by
		}
		seStar := math.Sqrt(v / float64(n))
		if logScale {
			ts = append(ts, (math.Log(m)-math.Log(mean))/(seStar/m))
		} else {
			ts = append(ts, (m-mean)/seStar)
		}
	}
	if len(ts) < rounds/2 {
		return math.NaN(), math.NaN()
	}
	slices.Sort(ts)
	a := (1 - Confidence) / 2
	qlo, qhi := quantile(ts, a), quantile(ts, 1-a)
	if logScale {
		l := math.Log(mean)
		return math.Exp(l - qhi*se/mean), math.Exp(l - qlo*se/mean)
	}
	return mean - qhi*se, mean - qlo*se
}

// quantile of sorted values by linear interpolation between order statistics (type 7).
func quantile(sorted []float64, q float64) float64 {
	h := q * float64(len(sorted)-1)
	i := int(h)
	if i >= len(sorted)-1 {
		return sorted[len(sorted)-1]
	}
	return sorted[i] + (h-float64(i))*(sorted[i+1]-sorted[i])
}

// Ratio is mean(a)/mean(b) with a 95 % interval (MethodLogRatio): positive, asymmetric, never crossing zero.
type Ratio struct {
	Value  float64 `json:"value"`
	CILow  float64 `json:"ci_low"`
	CIHigh float64 `json:"ci_high"`
	// Paired says the runs were paired by cycle (a campaign that interleaves its experiments): the
	// cycle-to-cycle drift common to both cancels. Pairs counts the pairs used.
	Paired bool    `json:"paired"`
	Pairs  int     `json:"pairs,omitempty"`
	DF     float64 `json:"df"`
	// RelSE is the standard uncertainty of the ratio from repetition, relative to Value (the standard error of
	// log ratio).
	RelSE  float64 `json:"rel_se"`
	Method string  `json:"method,omitempty"`
}

func noRatio(v float64) Ratio {
	return Ratio{Value: v, CILow: math.NaN(), CIHigh: math.NaN(), DF: math.NaN(), RelSE: math.NaN()}
}

// RatioOf compares independent samples a and b (the reference): log-ratio interval with Welch–Satterthwaite
// degrees of freedom. No interval below MinIntervalN values on either side, or where a mean is not positive.
func RatioOf(a, b Summary) Ratio {
	r := noRatio(a.Mean / b.Mean)
	if a.N < MinIntervalN || b.N < MinIntervalN || !(a.Mean > 0) || !(b.Mean > 0) {
		return r
	}
	// Relative variances of the two means: the variance of log(mean) by the delta method.
	va := a.Std * a.Std / float64(a.N) / (a.Mean * a.Mean)
	vb := b.Std * b.Std / float64(b.N) / (b.Mean * b.Mean)
	r.DF = math.Inf(1)
	if den := va*va/float64(a.N-1) + vb*vb/float64(b.N-1); den > 0 {
		r.DF = (va + vb) * (va + vb) / den
	}
	r.RelSE = math.Sqrt(va + vb)
	r.setInterval()
	return r
}

// PairedRatioOf compares paired values (a[i] and b[i] from the same cycle): the log-ratio interval with the
// covariance of the pairs, n−1 degrees of freedom. Pairs with a value missing (NaN) are left out.
func PairedRatioOf(a, b []float64) Ratio {
	var xa, xb []float64
	for i := range min(len(a), len(b)) {
		if !math.IsNaN(a[i]) && !math.IsNaN(b[i]) {
			xa, xb = append(xa, a[i]), append(xb, b[i])
		}
	}
	n := len(xa)
	if n == 0 {
		return noRatio(math.NaN())
	}
	ma, _ := meanStd(xa)
	mb, _ := meanStd(xb)
	r := noRatio(ma / mb)
	r.Paired, r.Pairs = true, n
	if n < MinIntervalN || !(ma > 0) || !(mb > 0) {
		return r
	}
	// Var(log(ā/b̄)) ≈ Var(mean of d), d_i = a_i/ā − b_i/b̄ (the linearised log ratio of each pair).
	var ss float64
	for i := range xa {
		d := xa[i]/ma - xb[i]/mb
		ss += d * d // mean of d is 0 by construction
	}
	r.DF = float64(n - 1)
	r.RelSE = math.Sqrt(ss / float64(n-1) / float64(n))
	r.setInterval()
	return r
}

func (r *Ratio) setInterval() {
	h := TQuantile(r.DF) * r.RelSE
	r.CILow, r.CIHigh, r.Method = r.Value*math.Exp(-h), r.Value*math.Exp(h), MethodLogRatio
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
	return json.Marshal(struct {
		N        int       `json:"n"`
		Values   []float64 `json:"values"`
		Mean     jnum      `json:"mean"`
		Std      jnum      `json:"std"`
		CV       jnum      `json:"cv"`
		Positive bool      `json:"positive"`
		CILow    jnum      `json:"ci_low"`
		CIHigh   jnum      `json:"ci_high"`
		Method   string    `json:"method,omitempty"`
		BootLow  jnum      `json:"boot_low"`
		BootHigh jnum      `json:"boot_high"`
	}{s.N, s.Values, jnum(s.Mean), jnum(s.Std), jnum(s.CV), s.Positive, jnum(s.CILow), jnum(s.CIHigh), s.Method,
		jnum(s.BootLow), jnum(s.BootHigh)})
}

// UnmarshalJSON reads null as NaN (campaign state files carry summaries).
func (s *Summary) UnmarshalJSON(b []byte) error {
	var in struct {
		N        int       `json:"n"`
		Values   []float64 `json:"values"`
		Mean     *float64  `json:"mean"`
		Std      *float64  `json:"std"`
		CV       *float64  `json:"cv"`
		Positive bool      `json:"positive"`
		CILow    *float64  `json:"ci_low"`
		CIHigh   *float64  `json:"ci_high"`
		Method   string    `json:"method"`
		BootLow  *float64  `json:"boot_low"`
		BootHigh *float64  `json:"boot_high"`
	}
	if err := json.Unmarshal(b, &in); err != nil {
		return err
	}
	*s = Summary{N: in.N, Values: in.Values, Mean: orNaN(in.Mean), Std: orNaN(in.Std), CV: orNaN(in.CV),
		Positive: in.Positive, CILow: orNaN(in.CILow), CIHigh: orNaN(in.CIHigh), Method: in.Method,
		BootLow: orNaN(in.BootLow), BootHigh: orNaN(in.BootHigh)}
	return nil
}

// MarshalJSON writes undefined values (NaN) as null.
func (r Ratio) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		Value  jnum   `json:"value"`
		CILow  jnum   `json:"ci_low"`
		CIHigh jnum   `json:"ci_high"`
		Paired bool   `json:"paired"`
		Pairs  int    `json:"pairs,omitempty"`
		DF     jnum   `json:"df"`
		RelSE  jnum   `json:"rel_se"`
		Method string `json:"method,omitempty"`
	}{jnum(r.Value), jnum(r.CILow), jnum(r.CIHigh), r.Paired, r.Pairs, jnum(r.DF), jnum(r.RelSE), r.Method})
}

// UnmarshalJSON reads null as NaN.
func (r *Ratio) UnmarshalJSON(b []byte) error {
	var in struct {
		Value  *float64 `json:"value"`
		CILow  *float64 `json:"ci_low"`
		CIHigh *float64 `json:"ci_high"`
		Paired bool     `json:"paired"`
		Pairs  int      `json:"pairs"`
		DF     *float64 `json:"df"`
		RelSE  *float64 `json:"rel_se"`
		Method string   `json:"method"`
	}
	if err := json.Unmarshal(b, &in); err != nil {
		return err
	}
	*r = Ratio{Value: orNaN(in.Value), CILow: orNaN(in.CILow), CIHigh: orNaN(in.CIHigh), Paired: in.Paired,
		Pairs: in.Pairs, DF: orNaN(in.DF), RelSE: orNaN(in.RelSE), Method: in.Method}
	return nil
}

func orNaN(p *float64) float64 {
	if p == nil {
		return math.NaN()
	}
	return *p
}
