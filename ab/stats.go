package ab

import (
	"math"
	"math/rand/v2"
	"slices"

	"gonum.org/v1/gonum/mathext"
	"gonum.org/v1/gonum/stat/distuv"
)

// Summary describes one arm's measurements.
type Summary struct {
	N      int     `json:"n"`
	Mean   float64 `json:"mean"`
	Median float64 `json:"median"`
	Stdev  float64 `json:"stdev"` // sample standard deviation (n-1)
	Min    float64 `json:"min"`
	Max    float64 `json:"max"`
	Q1     float64 `json:"q1"` // first and third quartiles (linear interpolation, as numpy's default)
	Q3     float64 `json:"q3"`
}

// Summarize computes n, mean, median, stdev, min, max and quartiles of xs.
func Summarize(xs []float64) Summary {
	s := Summary{N: len(xs)}
	if len(xs) == 0 {
		nan := math.NaN()
		s.Mean, s.Median, s.Stdev, s.Min, s.Max, s.Q1, s.Q3 = nan, nan, nan, nan, nan, nan, nan
		return s
	}
	sorted := slices.Clone(xs)
	slices.Sort(sorted)
	s.Mean = Mean(xs)
	s.Stdev = Stdev(xs)
	s.Min, s.Max = sorted[0], sorted[len(sorted)-1]
	s.Median = quantileSorted(sorted, 0.5)
	s.Q1 = quantileSorted(sorted, 0.25)
	s.Q3 = quantileSorted(sorted, 0.75)
	return s
}

// Mean is the arithmetic mean (NaN for no values).
func Mean(xs []float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	var sum float64
	for _, x := range xs {
		sum += x
	}
	return sum / float64(len(xs))
}

// Variance is the unbiased sample variance (NaN for fewer than two values). Two passes:
// throughputs are large numbers with small differences, where the one-pass formula cancels.
func Variance(xs []float64) float64 {
	if len(xs) < 2 {
		return math.NaN()
	}
	m := Mean(xs)
	var ss float64
	for _, x := range xs {
		d := x - m
		ss += d * d
	}
	return ss / float64(len(xs)-1)
}

// Stdev is the sample standard deviation.
func Stdev(xs []float64) float64 { return math.Sqrt(Variance(xs)) }

// Median is the middle value (the mean of the two middle values for an even count).
func Median(xs []float64) float64 { return medianInPlace(slices.Clone(xs)) }

// medianInPlace is Median, sorting xs.
func medianInPlace(xs []float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	slices.Sort(xs)
	return quantileSorted(xs, 0.5)
}

// quantileSorted interpolates linearly between order statistics (type 7 of Hyndman & Fan).
func quantileSorted(sorted []float64, q float64) float64 {
	if len(sorted) == 1 {
		return sorted[0]
	}
	h := q * float64(len(sorted)-1)
	lo := int(math.Floor(h))
	if lo >= len(sorted)-1 {
		return sorted[len(sorted)-1]
	}
	if sorted[lo] == sorted[lo+1] { // also two infinities, where the formula gives NaN
		return sorted[lo]
	}
	return sorted[lo] + (h-float64(lo))*(sorted[lo+1]-sorted[lo])
}

// Welch is the result of Welch's unequal-variances t-test of b against a.
type Welch struct {
	T  float64 `json:"t"`  // (mean(b) - mean(a)) / standard error
	DF float64 `json:"df"` // Welch-Satterthwaite degrees of freedom
	P  float64 `json:"p"`  // two-sided p-value
}

// WelchTest compares the means of a and b without assuming equal variances. With fewer than two
// values in either sample the result is NaN. When both samples have zero spread the test
// degenerates: p is 1 if the means are equal and 0 if they differ.
func WelchTest(a, b []float64) Welch {
	if len(a) < 2 || len(b) < 2 {
		return Welch{T: math.NaN(), DF: math.NaN(), P: math.NaN()}
	}
	va, vb := Variance(a)/float64(len(a)), Variance(b)/float64(len(b))
	diff := Mean(b) - Mean(a)
	se2 := va + vb
	if se2 == 0 {
		if diff == 0 {
			return Welch{T: 0, DF: math.Inf(1), P: 1}
		}
		return Welch{T: math.Copysign(math.Inf(1), diff), DF: math.Inf(1), P: 0}
	}
	t := diff / math.Sqrt(se2)
	df := se2 * se2 / (va*va/float64(len(a)-1) + vb*vb/float64(len(b)-1))
	return Welch{T: t, DF: df, P: StudentTTwoSided(t, df)}
}

// StudentTCDF is P(T <= t) for Student's t distribution with df degrees of freedom (gonum's
// distuv.StudentsT; NaN for a NaN argument or df <= 0, the normal distribution for df = +Inf).
func StudentTCDF(t, df float64) float64 {
	if math.IsNaN(t) || math.IsNaN(df) || df <= 0 {
		return math.NaN()
	}
	if math.IsInf(df, 1) {
		return distuv.UnitNormal.CDF(t)
	}
	return distuv.StudentsT{Mu: 0, Sigma: 1, Nu: df}.CDF(t)
}

// StudentTTwoSided is P(|T| >= |t|) with df degrees of freedom: twice StudentTCDF(-|t|, df).
func StudentTTwoSided(t, df float64) float64 {
	return 2 * StudentTCDF(-math.Abs(t), df)
}

// RegIncBeta is the regularized incomplete beta function I_x(a, b) (gonum's mathext.RegIncBeta)
// for a, b > 0 and x in [0, 1], and NaN outside that domain, where gonum panics.
func RegIncBeta(a, b, x float64) float64 {
	if !(a > 0 && b > 0 && x >= 0 && x <= 1) {
		return math.NaN()
	}
	return mathext.RegIncBeta(a, b, x)
}

// DefaultLevel and DefaultResamples are the A/B report's confidence level and bootstrap size
// when AnalyzeOptions leaves them zero, and those of MedianRatioCI.
const (
	DefaultLevel     = 0.95
	DefaultResamples = 10000
)

// RatioCI is a bootstrap confidence interval for stat(b)/stat(a), where stat is the mean
// (BootstrapRatioCI, the A/B report) or the median (BootstrapMedianRatioCI, MedianRatioCI).
type RatioCI struct {
	Ratio float64 `json:"ratio"` // stat(b) / stat(a) of the data
	Low   float64 `json:"low"`
	High  float64 `json:"high"`
	Level float64 `json:"level"` // e.g. 0.95
}

// BootstrapRatioCI resamples a and b independently with replacement and takes the percentile
// interval of mean(b*)/mean(a*). The same seed gives the same interval.
func BootstrapRatioCI(a, b []float64, level float64, resamples int, seed uint64) RatioCI {
	return bootstrapRatioCI(a, b, level, resamples, seed, Mean)
}

// BootstrapMedianRatioCI is BootstrapRatioCI for the ratio of medians, median(b)/median(a):
// the same resampling, the same seed giving the same interval, but robust to a few outlying runs.
func BootstrapMedianRatioCI(a, b []float64, level float64, resamples int, seed uint64) RatioCI {
	return bootstrapRatioCI(a, b, level, resamples, seed, medianInPlace)
}

// MedianRatioCI compares arm with base for a benchmark table: median(arm)/median(base) with its
// DefaultLevel (95%) percentile bootstrap interval over DefaultResamples resamples. The seed is
// fixed, so the same samples always give the same interval.
func MedianRatioCI(base, arm []float64) RatioCI {
	return BootstrapMedianRatioCI(base, arm, DefaultLevel, DefaultResamples, 1)
}

// bootstrapRatioCI is the percentile bootstrap of stat(b*)/stat(a*); stat may reorder its
// argument.
func bootstrapRatioCI(a, b []float64, level float64, resamples int, seed uint64, stat func([]float64) float64) RatioCI {
	ci := RatioCI{Ratio: stat(slices.Clone(b)) / stat(slices.Clone(a)), Level: level, Low: math.NaN(), High: math.NaN()}
	if len(a) == 0 || len(b) == 0 || resamples < 1 {
		return ci
	}
	rng := rand.New(rand.NewPCG(seed, 0x6d6c7363686564)) // "mlsched"
	bufA, bufB := make([]float64, len(a)), make([]float64, len(b))
	ratios := make([]float64, resamples)
	for i := range ratios {
		ratios[i] = stat(resample(rng, b, bufB)) / stat(resample(rng, a, bufA))
		if math.IsNaN(ratios[i]) {
			// 0/0 (or a NaN sample): no order to put it in (a sort would rank it below
			// every ratio), so no interval either.
			return ci
		}
	}
	slices.Sort(ratios)
	alpha := (1 - level) / 2
	ci.Low = quantileSorted(ratios, alpha)
	ci.High = quantileSorted(ratios, 1-alpha)
	return ci
}

// resample fills buf (len(xs) long) with values of xs drawn with replacement.
func resample(rng *rand.Rand, xs, buf []float64) []float64 {
	for i := range buf {
		buf[i] = xs[rng.IntN(len(xs))]
	}
	return buf
}
