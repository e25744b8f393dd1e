package ab

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

func near(t *testing.T, what string, got, want, tol float64) {
	t.Helper()
	if math.IsNaN(got) || math.Abs(got-want) > tol {
		t.Errorf("%s = %.9g, want %.9g (±%g)", what, got, want, tol)
	}
}

func TestSummarizeHandComputed(t *testing.T) {
	// Mean 5; squared deviations 9+1+1+1+0+0+4+16 = 32; variance 32/7.
	s := Summarize([]float64{9, 4, 2, 4, 5, 4, 7, 5})
	if s.N != 8 {
		t.Fatalf("n = %d", s.N)
	}
	near(t, "mean", s.Mean, 5, 1e-12)
	near(t, "stdev", s.Stdev, math.Sqrt(32.0/7), 1e-12)
	near(t, "median", s.Median, 4.5, 1e-12)
	near(t, "q1", s.Q1, 4, 1e-12)   // h = 0.25*7 = 1.75: 4 + 0.75*(4-4)
	near(t, "q3", s.Q3, 5.5, 1e-12) // h = 5.25: 5 + 0.25*(7-5)
	near(t, "min", s.Min, 2, 0)
	near(t, "max", s.Max, 9, 0)
	near(t, "odd median", Median([]float64{3, 1, 2}), 2, 0)
	if !math.IsNaN(Stdev([]float64{1})) || !math.IsNaN(Mean(nil)) {
		t.Error("stdev of one value and mean of none must be NaN")
	}
	// Large values with tiny differences: the two-pass variance keeps the digits.
	near(t, "offset stdev", Stdev([]float64{1e9 + 1, 1e9 + 2, 1e9 + 3}), 1, 1e-9)
}

func TestWelchHandComputed(t *testing.T) {
	// a: mean 3, var 2.5, n 5; b: mean 7, var 14, n 6.
	// se² = 2.5/5 + 14/6 = 17/6; t = 4/sqrt(17/6) = 4*sqrt(6/17)
	// df = (17/6)² / ((1/2)²/4 + (7/3)²/5) = (289/36) / (829/720) = 5780/829
	a := []float64{1, 2, 3, 4, 5}
	b := []float64{2, 4, 6, 8, 10, 12}
	w := WelchTest(a, b)
	near(t, "t", w.T, 4*math.Sqrt(6.0/17), 1e-12)
	near(t, "df", w.DF, 5780.0/829, 1e-12)
	near(t, "p", w.P, tTwoSidedByIntegration(w.T, w.DF), 1e-7)
	if w.P < 0.04 || w.P > 0.06 { // t=2.376 at df≈7 is just past the 5% critical value (2.365 at df=7)
		t.Errorf("p = %g, want about 0.049", w.P)
	}
	// Symmetric: swapping the samples flips t, not p.
	w2 := WelchTest(b, a)
	near(t, "swapped t", w2.T, -w.T, 1e-12)
	near(t, "swapped p", w2.P, w.P, 1e-12)

	if w := WelchTest([]float64{5, 5, 5}, []float64{5, 5}); w.P != 1 {
		t.Errorf("identical constants: p = %g, want 1", w.P)
	}
	if w := WelchTest([]float64{5, 5, 5}, []float64{6, 6}); w.P != 0 || !math.IsInf(w.T, 1) {
		t.Errorf("different constants: %+v, want t=+Inf p=0", w)
	}
	if w := WelchTest([]float64{5}, []float64{6, 7}); !math.IsNaN(w.P) {
		t.Errorf("n=1: p = %g, want NaN", w.P)
	}
}

// Two-sided critical values from a printed t table: P(|T| >= t) at df.
func TestStudentTTable(t *testing.T) {
	for _, c := range []struct{ t, df, p float64 }{
		{12.7062, 1, 0.05},
		{63.6567, 1, 0.01},
		{4.3027, 2, 0.05},
		{2.7764, 4, 0.05},
		{2.5706, 5, 0.05},
		{4.0321, 5, 0.01},
		{2.2281, 10, 0.05},
		{1.8125, 10, 0.10},
		{3.1693, 10, 0.01},
		{2.8453, 20, 0.01},
		{2.0423, 30, 0.05},
		{1.9600, math.Inf(1), 0.05},
		{0, 7, 1},
	} {
		near(t, "p", StudentTTwoSided(c.t, c.df), c.p, 2e-5*max(1, c.p*10))
		near(t, "cdf", StudentTCDF(c.t, c.df), 1-c.p/2, 1e-5)
		near(t, "cdf(-t)", StudentTCDF(-c.t, c.df), c.p/2, 1e-5)
	}
	// Closed forms: df=1 is Cauchy, df=2 is t/(2 sqrt(2+t²)) + 1/2.
	for _, x := range []float64{-30, -3, -0.5, 0.1, 1, 2.5, 40} {
		near(t, "cauchy", StudentTCDF(x, 1), 0.5+math.Atan(x)/math.Pi, 1e-12)
		near(t, "df2", StudentTCDF(x, 2), 0.5+x/(2*math.Sqrt(2+x*x)), 1e-12)
	}
	// Non-integer df against numerical integration of the density.
	for _, c := range []struct{ t, df float64 }{{1.3, 3.7}, {2.9, 11.2}, {0.4, 57.5}, {5, 2.5}} {
		near(t, "integrated p", StudentTTwoSided(c.t, c.df), tTwoSidedByIntegration(c.t, c.df), 1e-7)
	}
}

func TestRegIncBetaHandComputed(t *testing.T) {
	// I_x(1, 1) = x; I_x(2, 1) = x²; I_x(1, 2) = 1-(1-x)²; I_x(a, b) = 1 - I_{1-x}(b, a).
	for _, x := range []float64{0, 0.1, 0.5, 0.77, 1} {
		near(t, "I(1,1)", RegIncBeta(1, 1, x), x, 1e-13)
		near(t, "I(2,1)", RegIncBeta(2, 1, x), x*x, 1e-13)
		near(t, "I(1,2)", RegIncBeta(1, 2, x), 1-(1-x)*(1-x), 1e-13)
		near(t, "symmetry", RegIncBeta(3.5, 0.5, x), 1-RegIncBeta(0.5, 3.5, 1-x), 1e-13)
	}
	// I_{1/2}(a, a) = 1/2.
	near(t, "I(7,7)", RegIncBeta(7, 7, 0.5), 0.5, 1e-13)
	if !math.IsNaN(RegIncBeta(-1, 1, 0.5)) || !math.IsNaN(RegIncBeta(1, 1, 2)) {
		t.Error("invalid arguments must give NaN")
	}
}

// tTwoSidedByIntegration integrates Student's t density with Simpson's rule: an independent
// check of gonum's incomplete beta function.
func tTwoSidedByIntegration(t, df float64) float64 {
	lg1, _ := math.Lgamma((df + 1) / 2)
	lg2, _ := math.Lgamma(df / 2)
	c := math.Exp(lg1-lg2) / math.Sqrt(df*math.Pi)
	f := func(x float64) float64 { return c * math.Pow(1+x*x/df, -(df+1)/2) }
	t = math.Abs(t)
	const n = 20000
	h := t / n
	sum := f(0) + f(t)
	for i := 1; i < n; i++ {
		w := 2.0
		if i%2 == 1 {
			w = 4
		}
		sum += w * f(float64(i)*h)
	}
	return 1 - 2*sum*h/3
}

func TestBootstrapDeterministic(t *testing.T) {
	a := []float64{100, 104, 98, 101, 97, 103}
	b := []float64{106, 103, 108, 104, 107, 105}
	ci1 := BootstrapRatioCI(a, b, 0.95, 10000, 1)
	ci2 := BootstrapRatioCI(a, b, 0.95, 10000, 1)
	if ci1 != ci2 {
		t.Fatalf("same seed, different intervals: %+v %+v", ci1, ci2)
	}
	near(t, "ratio", ci1.Ratio, 633.0/603, 1e-12) // sums: a 603, b 633
	if !(ci1.Low < ci1.Ratio && ci1.Ratio < ci1.High) {
		t.Errorf("interval %+v does not contain the ratio", ci1)
	}
	// Pinned for seed 1: a change in the resampling scheme shows up here.
	near(t, "low", ci1.Low, 1.02597403, 1e-8)
	near(t, "high", ci1.High, 1.07470289, 1e-8)
	if ci3 := BootstrapRatioCI(a, b, 0.95, 10000, 2); ci3 == ci1 {
		t.Errorf("different seeds, same interval %+v", ci3)
	}
	// No spread: every resample has the same ratio.
	c := BootstrapRatioCI([]float64{10, 10, 10}, []float64{11, 11, 11}, 0.95, 1000, 7)
	near(t, "const low", c.Low, 1.1, 1e-12)
	near(t, "const high", c.High, 1.1, 1e-12)
}

// The ratio of medians ignores an outlying run that the ratio of means follows. Base
// {1, 1, 1, 100}: a resample of four draws has median 1 when it holds at most one 100
// (81/256 + 108/256 = 74%), (1+100)/2 = 50.5 with two (54/256 = 21%) and 100 with three or
// four (13/256 = 5.1%). The arm is constant 2, so median(arm*)/median(base*) is 2, 2/50.5 or
// 2/100: the 2.5% quantile falls among the 5.1% at 0.02 and the 97.5% among the 74% at 2.
func TestBootstrapMedianRatioHandComputed(t *testing.T) {
	base := []float64{1, 100, 1, 1}
	arm := []float64{2, 2, 2, 2}
	ci := MedianRatioCI(base, arm)
	near(t, "ratio", ci.Ratio, 2, 0)
	near(t, "low", ci.Low, 0.02, 1e-15)
	near(t, "high", ci.High, 2, 0)
	near(t, "level", ci.Level, 0.95, 0)
	if !slices.Equal(base, []float64{1, 100, 1, 1}) {
		t.Errorf("the samples were reordered: %v", base)
	}
	if again := BootstrapMedianRatioCI(base, arm, 0.95, 10000, 1); again != ci {
		t.Errorf("MedianRatioCI %+v, BootstrapMedianRatioCI at 95%%, 10000, seed 1 %+v", ci, again)
	}
	near(t, "mean ratio", BootstrapRatioCI(base, arm, 0.95, 1000, 1).Ratio, 2/25.75, 1e-15)

	// Odd and even counts: medians 2 and (4+6)/2 = 5.
	near(t, "odd/even", MedianRatioCI([]float64{3, 1, 2}, []float64{8, 4, 6, 2}).Ratio, 2.5, 1e-15)
	c := MedianRatioCI([]float64{10, 10, 10}, []float64{11, 11, 11})
	near(t, "const low", c.Low, 1.1, 1e-12)
	near(t, "const high", c.High, 1.1, 1e-12)
	if e := MedianRatioCI(nil, arm); !math.IsNaN(e.Ratio) || !math.IsNaN(e.Low) || !math.IsNaN(e.High) {
		t.Errorf("empty base: %+v, want NaN", e)
	}
}

// Two arms drawn from normal distributions whose means differ by a known ratio: the 95% CI
// covers the true ratio in about 95% of repetitions (percentile bootstrap slightly under).
func TestBootstrapCoversTrueRatio(t *testing.T) {
	const (
		reps     = 50
		n        = 30
		trueRate = 1.05
	)
	rng := rand.New(rand.NewPCG(42, 43))
	draw := func(mean float64) []float64 {
		xs := make([]float64, n)
		for i := range xs {
			xs[i] = mean + 30*rng.NormFloat64()
		}
		return xs
	}
	covered, significant := 0, 0
	for i := range reps {
		a, b := draw(1000), draw(1000*trueRate)
		ci := BootstrapRatioCI(a, b, 0.95, 2000, uint64(i))
		if ci.Low <= trueRate && trueRate <= ci.High {
			covered++
		}
		if c := Compare("a", "b", a, b, true, 0.95, 2000, uint64(i)); c.Significant {
			significant++
		}
	}
	t.Logf("covered %d/%d, significant %d/%d", covered, reps, significant, reps)
	if covered < 45 {
		t.Errorf("95%% CI covered the true ratio %.2f in %d of %d repetitions, want >= 45", trueRate, covered, reps)
	}
	if significant < 45 { // a 5% difference with 3% noise and n=30 is plainly visible
		t.Errorf("found the 5%% difference significant in %d of %d repetitions", significant, reps)
	}
}

// With no real difference, p < 0.05 about 5% of the time and the CI covers 1 about 95%.
func TestNoDifferenceCalibrated(t *testing.T) {
	const reps = 200
	rng := rand.New(rand.NewPCG(7, 8))
	draw := func(n int, sd float64) []float64 {
		xs := make([]float64, n)
		for i := range xs {
			xs[i] = 500 + sd*rng.NormFloat64()
		}
		return xs
	}
	rejected, significant := 0, 0
	for i := range reps {
		a, b := draw(8, 10), draw(12, 25) // unequal n and variance: what Welch is for
		if WelchTest(a, b).P < 0.05 {
			rejected++
		}
		if Compare("a", "b", a, b, true, 0.95, 1000, uint64(i)).Significant {
			significant++
		}
	}
	t.Logf("p<0.05 in %d/%d, significant verdicts %d/%d", rejected, reps, significant, reps)
	if rejected < 2 || rejected > 22 {
		t.Errorf("Welch rejected a true null in %d of %d, want about 10", rejected, reps)
	}
	if significant > 20 {
		t.Errorf("%d of %d verdicts claim a difference that is not there", significant, reps)
	}
}

// A reference whose median can be 0 (a stressor starved in some runs records 0 ops): the
// resampled ratios that divide by 0 are +Inf and the interval must say so, not NaN; ratios of
// 0/0 have no order, and then there is no interval at all.
func TestMedianRatioCIZeroMedians(t *testing.T) {
	arm := []float64{5, 6, 7, 8, 5, 6, 7, 8}
	ci := MedianRatioCI([]float64{0, 0, 0, 3, 4, 5, 6, 7}, arm)
	if math.IsNaN(ci.Ratio) || math.IsNaN(ci.Low) || !math.IsInf(ci.High, 1) {
		t.Errorf("some zeros in the reference: %+v, want a finite ratio and low, high +Inf", ci)
	}
	if ci := MedianRatioCI([]float64{0, 0, 0, 0}, arm); !math.IsInf(ci.Ratio, 1) || !math.IsInf(ci.Low, 1) || !math.IsInf(ci.High, 1) {
		t.Errorf("all-zero reference: %+v, want +Inf throughout", ci)
	}
	if ci := MedianRatioCI([]float64{0, 0, 1}, []float64{0, 0, 1}); !math.IsNaN(ci.Low) || !math.IsNaN(ci.High) {
		t.Errorf("0/0 resamples: %+v, want no interval (NaN bounds)", ci)
	}
	if q := quantileSorted([]float64{1, math.Inf(1), math.Inf(1)}, 0.9); !math.IsInf(q, 1) {
		t.Errorf("quantile between two +Inf: %v", q)
	}
}
