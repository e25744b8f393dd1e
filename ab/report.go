package ab

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"text/tabwriter"
)

// Comparison is one arm against the baseline (the first arm).
type Comparison struct {
	Arm      string `json:"arm"`
	Baseline string `json:"baseline"`
	// CI is mean(arm)/mean(baseline) with its bootstrap confidence interval.
	CI    RatioCI `json:"ratio"`
	Welch Welch   `json:"welch"`
	// Significant: the CI excludes 1 and Welch's p is below 1-level. Both must agree: with few
	// runs the percentile bootstrap is too narrow, and the t-test alone says nothing about size.
	Significant bool `json:"significant"`
	// Better: the arm's throughput is higher (or its metric lower, for lower-is-better).
	Better  bool   `json:"better"`
	Verdict string `json:"verdict"`
}

// Compare compares xs (arm name) against base (arm baseName).
func Compare(baseName, name string, base, xs []float64, higherIsBetter bool, level float64, resamples int, seed uint64) Comparison {
	c := Comparison{Arm: name, Baseline: baseName,
		CI:    BootstrapRatioCI(base, xs, level, resamples, seed),
		Welch: WelchTest(base, xs)}
	ciExcludes := c.CI.Low > 1 || c.CI.High < 1
	tTest := c.Welch.P < 1-level
	c.Significant = ciExcludes && tTest
	c.Better = (c.CI.Ratio > 1) == higherIsBetter
	c.Verdict = verdict(c, higherIsBetter, ciExcludes, tTest)
	return c
}

func verdict(c Comparison, higherIsBetter, ciExcludes, tTest bool) string {
	if math.IsNaN(c.Welch.P) || math.IsNaN(c.CI.Low) || math.IsInf(c.CI.Ratio, 0) || math.IsNaN(c.CI.Ratio) {
		return fmt.Sprintf("%s vs %s: not enough data for a comparison", c.Arm, c.Baseline)
	}
	change := (c.CI.Ratio - 1) * 100
	lo, hi := (c.CI.Low-1)*100, (c.CI.High-1)*100
	prec := 1
	if hi-lo < 1 {
		prec = 2
	}
	pct := func(x float64) string { return strconv.FormatFloat(x, 'f', prec, 64) + "%" }
	ci := fmt.Sprintf("%g%% CI [%s, %s]", c.CI.Level*100, pct(lo), pct(hi))
	p := formatP(c.Welch.P)
	if !c.Significant {
		s := fmt.Sprintf("%s vs %s: no significant difference (%s%s, %s, %s)", c.Arm, c.Baseline, plus(change), pct(change), ci, p)
		if ciExcludes != tTest {
			s += "; the bootstrap CI and the t-test disagree: more runs would settle it"
		}
		return s
	}
	mag := pct(math.Abs(change))
	switch {
	case higherIsBetter && change > 0:
		return fmt.Sprintf("%s is %s faster than %s, %s (%s)", c.Arm, mag, c.Baseline, ci, p)
	case higherIsBetter:
		return fmt.Sprintf("%s is %s slower than %s, %s (%s)", c.Arm, mag, c.Baseline, ci, p)
	case change < 0:
		return fmt.Sprintf("%s is better than %s: %s lower, %s (%s)", c.Arm, c.Baseline, mag, ci, p)
	}
	return fmt.Sprintf("%s is worse than %s: %s higher, %s (%s)", c.Arm, c.Baseline, mag, ci, p)
}

func plus(x float64) string {
	if x >= 0 {
		return "+"
	}
	return ""
}

func formatP(p float64) string {
	if p < 0.001 {
		return "p<0.001"
	}
	return "p=" + strconv.FormatFloat(p, 'g', 2, 64)
}

// ArmSummary is one arm's measured runs.
type ArmSummary struct {
	Arm     Arm       `json:"arm"`
	Ops     string    `json:"ops,omitempty"` // the sched_ext scheduler seen during its runs
	Summary Summary   `json:"summary"`
	Values  []float64 `json:"values"` // in run order, warm-up excluded
}

// Report is the analysed experiment.
type Report struct {
	*Result
	HigherIsBetter bool         `json:"higher_is_better"`
	Level          float64      `json:"level"`
	Resamples      int          `json:"resamples"`
	Arms           []ArmSummary `json:"summaries"`
	Comparisons    []Comparison `json:"comparisons"`
}

// RunsDone is the number of measured runs of the arm with the fewest: PerArm when the
// experiment finished, fewer when it was stopped (Ctrl-C reports what it has).
func (r *Report) RunsDone() int {
	if len(r.Arms) == 0 {
		return r.PerArm
	}
	n := r.Arms[0].Summary.N
	for _, a := range r.Arms[1:] {
		n = min(n, a.Summary.N)
	}
	return n
}

// runsPhrase is "N runs", or "N of M runs" for a stopped experiment.
func (r *Report) runsPhrase() string {
	if n := r.RunsDone(); n < r.PerArm {
		return fmt.Sprintf("%d of %d runs", n, r.PerArm)
	}
	return fmt.Sprintf("%d runs", r.PerArm)
}

// AnalyzeOptions tune Analyze; zero values mean DefaultLevel (95%) and DefaultResamples (10,000).
type AnalyzeOptions struct {
	LowerIsBetter bool
	Level         float64
	Resamples     int
}

// Analyze summarises every arm and compares each with the first. The bootstrap is seeded from
// the experiment's seed, so the same runs give the same report.
func Analyze(res *Result, o AnalyzeOptions) *Report {
	if o.Level == 0 {
		o.Level = DefaultLevel
	}
	if o.Resamples == 0 {
		o.Resamples = DefaultResamples
	}
	r := &Report{Result: res, HigherIsBetter: !o.LowerIsBetter, Level: o.Level, Resamples: o.Resamples}
	for _, a := range res.Arms {
		xs := res.Values(a.Name)
		s := ArmSummary{Arm: a, Summary: Summarize(xs), Values: xs}
		for _, run := range res.Runs {
			if run.Arm == a.Name && run.Ops != "" {
				s.Ops = run.Ops
			}
		}
		r.Arms = append(r.Arms, s)
	}
	if len(r.Arms) == 0 {
		return r
	}
	base := r.Arms[0]
	for i, a := range r.Arms[1:] {
		r.Comparisons = append(r.Comparisons, Compare(base.Arm.Name, a.Arm.Name, base.Values, a.Values,
			r.HigherIsBetter, o.Level, o.Resamples, res.Seed+uint64(i)))
	}
	return r
}

// WriteText prints the report for people.
func (r *Report) WriteText(w io.Writer) error {
	var b strings.Builder
	order := "interleaved in random order"
	warm := ""
	if r.Warmup > 0 {
		warm = fmt.Sprintf(" (+%d warm-up each, discarded)", r.Warmup)
	}
	fmt.Fprintf(&b, "A/B: %d arms x %s%s, %s (seed %d)\n", len(r.Arms), r.runsPhrase(), warm, order, r.Seed)
	fmt.Fprintf(&b, "workload: %s\n", shellJoin(r.Workload))
	unit := r.Unit
	if unit == "" {
		unit = "workload units"
	}
	better := "higher is better"
	if !r.HigherIsBetter {
		better = "lower is better"
	}
	fmt.Fprintf(&b, "kernel %s, %d CPUs; %s, %s\n", orUnknown(r.Kernel), r.CPUs, unit, better)
	if r.Note != "" {
		fmt.Fprintf(&b, "note: %s\n", r.Note)
	}
	b.WriteString("\n")

	width := len("vs ") + len(firstName(r))
	for _, a := range r.Arms {
		width = max(width, len(a.Arm.Name))
	}
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "%-*s\tn\tmean\tmedian\tstdev\tcv\tmin\tmax\t  %s\n", width, "arm", "scheduler")
	for _, a := range r.Arms {
		s := a.Summary
		sched := "(kernel default)"
		if a.Arm.NeedsSchedExt() {
			sched = orUnknown(a.Ops)
		}
		fmt.Fprintf(tw, "%-*s\t%d\t%s\t%s\t%s\t%.1f%%\t%s\t%s\t  %s\n", width, a.Arm.Name, s.N, formatValue(s.Mean),
			formatValue(s.Median), formatValue(s.Stdev), 100*s.Stdev/s.Mean, formatValue(s.Min), formatValue(s.Max), sched)
	}
	tw.Flush()
	if len(r.Comparisons) > 0 {
		b.WriteString("\n")
		tw = tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintf(tw, "%-*s\tratio\t%g%% CI (bootstrap)\tWelch t\tdf\tp\t\n", width, "vs "+firstName(r), r.Level*100)
		for _, c := range r.Comparisons {
			fmt.Fprintf(tw, "%-*s\t%.4f\t[%.4f, %.4f]\t%.2f\t%.1f\t%.3g\t\n", width, c.Arm, c.CI.Ratio, c.CI.Low, c.CI.High, c.Welch.T, c.Welch.DF, c.Welch.P)
		}
		tw.Flush()
		b.WriteString("\n")
		for _, c := range r.Comparisons {
			b.WriteString(c.Verdict + "\n")
		}
	}
	if n := r.RunsDone(); n < 5 {
		fmt.Fprintf(&b, "\nnote: %d runs per arm is few; the bootstrap CI is too narrow with fewer than ~10: use --runs 10 or more\n", n)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func orUnknown(s string) string {
	if s == "" {
		return "?"
	}
	return s
}

// shellJoin quotes words for display as a shell would need them.
func shellJoin(argv []string) string {
	q := make([]string, len(argv))
	for i, a := range argv {
		if a == "" || strings.ContainsAny(a, " \t\n'\"\\$`|&;<>()*?[]{}~#") {
			a = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
		q[i] = a
	}
	return strings.Join(q, " ")
}

// WriteJSON writes the report as one indented JSON document; NaN and infinities are null.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// finite is x, or nil (JSON null) for NaN and infinities, which JSON cannot carry.
func finite(x float64) any {
	if math.IsNaN(x) || math.IsInf(x, 0) {
		return nil
	}
	return x
}

func (s Summary) MarshalJSON() ([]byte, error) {
	return json.Marshal(map[string]any{"n": s.N, "mean": finite(s.Mean), "median": finite(s.Median),
		"stdev": finite(s.Stdev), "min": finite(s.Min), "max": finite(s.Max), "q1": finite(s.Q1), "q3": finite(s.Q3)})
}

func (w Welch) MarshalJSON() ([]byte, error) {
	return json.Marshal(map[string]any{"t": finite(w.T), "df": finite(w.DF), "p": finite(w.P)})
}

func (c RatioCI) MarshalJSON() ([]byte, error) {
	return json.Marshal(map[string]any{"ratio": finite(c.Ratio), "low": finite(c.Low), "high": finite(c.High), "level": c.Level})
}
