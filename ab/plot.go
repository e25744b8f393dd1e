package ab

import (
	"fmt"
	"html"
	"io"
	"math"
	"strings"
)

// palette: distinguishable, colour-blind-friendly (Okabe-Ito).
var palette = []string{"#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000"}

func armColor(i int) string { return palette[i%len(palette)] }

// WriteSVG draws the report as a standalone SVG: every measured run per arm as a dot over a
// box (quartiles, median, mean), each arm's change against the first with its confidence
// interval, and every run in the order it ran (warm-up hollow), which shows drift.
func (r *Report) WriteSVG(w io.Writer) error {
	n := len(r.Arms)
	leftW := max(460, 110*n+90)
	rightW := 440
	width := leftW + rightW
	const (
		margin  = 16
		headTop = 9 // the title's baseline 26 px down
		panelH  = 300
		orderH  = 170
	)
	lineW := float64(width - 2*margin)

	// The title, the subtitle and the note each on lines of their own under one another, wrapped
	// to the width; a title past two lines ends in "…".
	warm := ""
	if r.Warmup > 0 {
		warm = fmt.Sprintf(" (+%d warm-up)", r.Warmup)
	}
	var head []textLine
	head = appendWrapped(head, "mlsched ab: "+shellJoin(r.Workload), lineW, 17, true, `font-weight="bold"`, 2)
	head = appendWrapped(head, fmt.Sprintf("%s per arm%s, interleaved in random order (seed %d) · kernel %s · %d CPUs",
		r.runsPhrase(), warm, r.Seed, orUnknown(r.Kernel), r.CPUs), lineW, 12, false, `fill="#444"`, 2)
	if r.Note != "" {
		head = appendWrapped(head, r.Note, lineW, 12, true, `fill="#B03A2E" font-weight="bold"`, 3)
	}
	// The panels' headings share a line under those, and the panels start under it.
	headY := math.Ceil(lineBlockBottom(headTop, head)) + 16
	top := headY + 8
	orderY := top + panelH + 90

	// The footer: each verdict wrapped, then the methods line.
	var foot []textLine
	for _, c := range r.Comparisons {
		foot = appendWrapped(foot, c.Verdict, lineW, 11, false, `fill="#222"`, 4)
	}
	footY := orderY + orderH + 51 // under the run-order panel's legend
	methodsY := math.Ceil(lineBlockBottom(footY, foot)) + 12
	height := int(methodsY) + 8

	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="DejaVu Sans, Helvetica, Arial, sans-serif" font-size="12">`+"\n", width, height, width, height)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	writeLines(&b, margin, headTop, head)

	unit := r.Unit
	if unit == "" {
		unit = "throughput"
	}
	better := "higher is better"
	if !r.HigherIsBetter {
		better = "lower is better"
	}

	// Value range over every run, warm-up included (they appear in the run-order panel).
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, run := range r.Runs {
		lo, hi = math.Min(lo, run.Throughput), math.Max(hi, run.Throughput)
	}
	if math.IsInf(lo, 0) {
		lo, hi = 0, 1
	}
	ticks, ylo, yhi := niceTicks(lo, hi, 6)

	// Panel 1: strip and box per arm.
	px0, px1 := 80.0, float64(leftW-20)
	py0, py1 := top, top+panelH
	yOf := func(v float64) float64 { return py1 - (v-ylo)/(yhi-ylo)*(py1-py0) }
	fmt.Fprintf(&b, `<text x="%g" y="%g" font-weight="bold">%s per arm (%s)</text>`+"\n", px0, headY, esc(unit), better)
	axisY(&b, px0, px1, yOf, ticks)
	fmt.Fprintf(&b, `<text transform="translate(18,%g) rotate(-90)" text-anchor="middle" fill="#444">%s</text>`+"\n", (py0+py1)/2, esc(unit))
	slot := (px1 - px0) / float64(max(n, 1))
	for i, a := range r.Arms {
		cx := px0 + slot*(float64(i)+0.5)
		col := armColor(i)
		s := a.Summary
		bw := math.Min(60, slot*0.5)
		if s.N > 0 {
			// Whiskers to min and max: with a handful of runs every point is shown anyway.
			fmt.Fprintf(&b, `<line x1="%.1f" x2="%.1f" y1="%.1f" y2="%.1f" stroke="%s" stroke-width="1.5"/>`+"\n", cx, cx, yOf(s.Min), yOf(s.Max), col)
			for _, v := range []float64{s.Min, s.Max} {
				fmt.Fprintf(&b, `<line x1="%.1f" x2="%.1f" y1="%.1f" y2="%.1f" stroke="%s" stroke-width="1.5"/>`+"\n", cx-bw/4, cx+bw/4, yOf(v), yOf(v), col)
			}
			fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s" fill-opacity="0.15" stroke="%s" stroke-width="1.5"/>`+"\n",
				cx-bw/2, yOf(s.Q3), bw, math.Max(1, yOf(s.Q1)-yOf(s.Q3)), col, col)
			fmt.Fprintf(&b, `<line x1="%.1f" x2="%.1f" y1="%.1f" y2="%.1f" stroke="%s" stroke-width="3"><title>median %s</title></line>`+"\n", cx-bw/2, cx+bw/2, yOf(s.Median), yOf(s.Median), col, formatValue(s.Median))
			my := yOf(s.Mean)
			fmt.Fprintf(&b, `<path d="M%.1f %.1fl6 6l-6 6l-6 -6z" fill="white" stroke="black" stroke-width="1.2"><title>mean %s</title></path>`+"\n", cx+bw/2+12, my-6, formatValue(s.Mean))
		}
		for j, v := range a.Values {
			jx := cx + (math.Mod(float64(j)*0.618034, 1)-0.5)*bw*0.8
			fmt.Fprintf(&b, `<circle cx="%.1f" cy="%.1f" r="3.5" fill="%s" fill-opacity="0.8"><title>%s: %s</title></circle>`+"\n", jx, yOf(v), col, esc(a.Arm.Name), formatValue(v))
		}
		fmt.Fprintf(&b, `<text x="%.1f" y="%g" text-anchor="middle" font-weight="bold" fill="%s">%s</text>`+"\n", cx, py1+18, col, esc(a.Arm.Name))
		fmt.Fprintf(&b, `<text x="%.1f" y="%g" text-anchor="middle" fill="#444" font-size="11">n=%d, mean %s</text>`+"\n", cx, py1+33, s.N, formatValue(s.Mean))
		fmt.Fprintf(&b, `<text x="%.1f" y="%g" text-anchor="middle" fill="#444" font-size="11">%s</text>`+"\n", cx, py1+47, esc(armLabel(a)))
	}

	// Panel 2: change against the baseline with the CI.
	qx0, qx1 := float64(leftW+30), float64(width-20)
	fmt.Fprintf(&b, `<text x="%g" y="%g" font-weight="bold">change vs %s: mean ratio, %g%% bootstrap CI</text>`+"\n", qx0, headY, esc(firstName(r)), r.Level*100)
	if len(r.Comparisons) > 0 {
		clo, chi := 0.0, 0.0
		for _, c := range r.Comparisons {
			for _, v := range []float64{c.CI.Low, c.CI.High, c.CI.Ratio} {
				if !math.IsNaN(v) && !math.IsInf(v, 0) {
					clo, chi = math.Min(clo, (v-1)*100), math.Max(chi, (v-1)*100)
				}
			}
		}
		span := math.Max(chi-clo, 1)
		// A ratio cannot fall below -100%: keep the axis from inventing room for it.
		cticks, xlo, xhi := niceTicks(math.Max(clo-0.05*span, -100), chi+0.05*span, 5)
		xOf := func(v float64) float64 { return qx0 + (v-xlo)/(xhi-xlo)*(qx1-qx0) }
		rowH := math.Min(70, (py1-py0-40)/float64(len(r.Comparisons)))
		for _, t := range cticks {
			x := xOf(t)
			fmt.Fprintf(&b, `<line x1="%.1f" x2="%.1f" y1="%g" y2="%g" stroke="#eee"/>`+"\n", x, x, py0, py1)
			fmt.Fprintf(&b, `<text x="%.1f" y="%g" text-anchor="middle" fill="#444" font-size="11">%s%%</text>`+"\n", x, py1+15, trimFloat(t))
		}
		fmt.Fprintf(&b, `<line x1="%.1f" x2="%.1f" y1="%g" y2="%g" stroke="#888" stroke-dasharray="4 3"/>`+"\n", xOf(0), xOf(0), py0, py1)
		fmt.Fprintf(&b, `<text x="%.1f" y="%g" text-anchor="middle" fill="#888" font-size="11">%s</text>`+"\n", xOf(0), py1+30, "no change")
		for i, c := range r.Comparisons {
			y := py0 + 40 + rowH*(float64(i)+0.5)
			col := "#777"
			if c.Significant {
				col = "#C0392B"
				if c.Better {
					col = "#1E8449"
				}
			}
			if !math.IsNaN(c.CI.Low) {
				fmt.Fprintf(&b, `<line x1="%.1f" x2="%.1f" y1="%.1f" y2="%.1f" stroke="%s" stroke-width="3"/>`+"\n", xOf((c.CI.Low-1)*100), xOf((c.CI.High-1)*100), y, y, col)
				for _, v := range []float64{c.CI.Low, c.CI.High} {
					fmt.Fprintf(&b, `<line x1="%.1f" x2="%.1f" y1="%.1f" y2="%.1f" stroke="%s" stroke-width="2"/>`+"\n", xOf((v-1)*100), xOf((v-1)*100), y-6, y+6, col)
				}
			}
			if !math.IsNaN(c.CI.Ratio) && !math.IsInf(c.CI.Ratio, 0) {
				fmt.Fprintf(&b, `<circle cx="%.1f" cy="%.1f" r="5" fill="%s"><title>%s</title></circle>`+"\n", xOf((c.CI.Ratio-1)*100), y, col, esc(c.Verdict))
			}
			fmt.Fprintf(&b, `<text x="%g" y="%.1f" font-weight="bold" fill="%s">%s</text>`+"\n", qx0, y-12, armColor(i+1), esc(c.Arm))
			fmt.Fprintf(&b, `<text x="%g" y="%.1f" fill="%s" font-size="11">%s</text>`+"\n", qx0, y+20, col, esc(shortVerdict(c)))
		}
	} else {
		fmt.Fprintf(&b, `<text x="%g" y="%g" fill="#888">only one arm</text>`+"\n", qx0, py0+30)
	}

	// Panel 3: every run in the order it ran.
	ox0, ox1 := 80.0, float64(width-20)
	oy0, oy1 := orderY, orderY+orderH
	fmt.Fprintf(&b, `<text x="%g" y="%g" font-weight="bold">every run in the order it ran (hollow: warm-up, discarded)</text>`+"\n", ox0, oy0-10)
	oyOf := func(v float64) float64 { return oy1 - (v-ylo)/(yhi-ylo)*(oy1-oy0) }
	axisY(&b, ox0, ox1, oyOf, thin(ticks))
	runs := max(len(r.Runs), 1)
	sx := func(seq int) float64 { return ox0 + (float64(seq)-0.5)/float64(runs)*(ox1-ox0) }
	armIdx := map[string]int{}
	for i, a := range r.Arms {
		armIdx[a.Arm.Name] = i
	}
	for _, run := range r.Runs {
		col := armColor(armIdx[run.Arm])
		fill := col
		if run.Warmup {
			fill = "white"
		}
		fmt.Fprintf(&b, `<circle cx="%.1f" cy="%.1f" r="3.5" fill="%s" stroke="%s" stroke-width="1.5"><title>run %d, %s: %s</title></circle>`+"\n",
			sx(run.Seq), oyOf(run.Throughput), fill, col, run.Seq, esc(run.Arm), formatValue(run.Throughput))
	}
	fmt.Fprintf(&b, `<text x="%g" y="%g" text-anchor="middle" fill="#444" font-size="11">run 1 … %d</text>`+"\n", (ox0+ox1)/2, oy1+15, len(r.Runs))
	lx := ox0
	for i, a := range r.Arms {
		fmt.Fprintf(&b, `<circle cx="%.1f" cy="%g" r="4" fill="%s"/><text x="%.1f" y="%g">%s</text>`+"\n", lx, oy1+34, armColor(i), lx+8, oy1+38, esc(a.Arm.Name))
		lx += 20 + 7.5*float64(len(a.Arm.Name))
	}

	// Footer: verdicts in words, and what the numbers can and cannot say.
	writeLines(&b, margin, footY, foot)
	note := ""
	if ylo > 0 {
		note = "y axes do not start at 0 · "
	}
	fmt.Fprintf(&b, `<text x="%d" y="%g" text-anchor="end" fill="#999" font-size="10">%sWelch t-test · percentile bootstrap, %d resamples</text>`+"\n", width-12, methodsY, note, r.Resamples)
	b.WriteString("</svg>\n")
	_, err := io.WriteString(w, b.String())
	return err
}

// textLine is one line of text at a font size, with its other attributes (fill, weight).
type textLine struct {
	text  string
	size  float64
	attrs string
}

// lineSpacing stacks lines of text: a line at size s has its baseline s below its top (the
// glyphs' ascent is 0.93 em in DejaVu Sans) and the next line starts 1.35 s below its top (the
// descent is 0.24 em, the rest is leading).
const lineSpacing = 1.35

// lineBlockBottom is where lines stacked from y end.
func lineBlockBottom(y float64, lines []textLine) float64 {
	for _, l := range lines {
		y += lineSpacing * l.size
	}
	return y
}

// writeLines draws lines left-aligned at x, stacked from y (the top of the first).
func writeLines(b *strings.Builder, x, y float64, lines []textLine) {
	for _, l := range lines {
		fmt.Fprintf(b, `<text x="%g" y="%.1f" font-size="%g" %s>%s</text>`+"\n", x, y+l.size, l.size, l.attrs, esc(l.text))
		y += lineSpacing * l.size
	}
}

// appendWrapped appends s wrapped to lines no wider than width at size, counting 0.6 em a
// character (0.68 bold): a little wide, as DejaVu Sans, the widest of the fonts the SVG asks
// for, averages 0.55 em in prose (0.62 bold). Lines break at spaces, and a word longer than a
// line wherever it must; past maxLines the last line ends in "…".
func appendWrapped(lines []textLine, s string, width, size float64, bold bool, attrs string, maxLines int) []textLine {
	em := 0.6
	if bold {
		em = 0.68
	}
	maxRunes := max(int(width/(em*size)), 2)
	var wrapped []string
	var line []rune
	for _, word := range strings.Fields(s) {
		w := []rune(word)
		if len(line) > 0 && len(line)+1+len(w) <= maxRunes {
			line = append(append(line, ' '), w...)
			continue
		}
		if len(line) > 0 {
			wrapped = append(wrapped, string(line))
		}
		for len(w) > maxRunes {
			wrapped = append(wrapped, string(w[:maxRunes]))
			w = w[maxRunes:]
		}
		line = w
	}
	if len(line) > 0 {
		wrapped = append(wrapped, string(line))
	}
	if len(wrapped) > maxLines {
		last := []rune(wrapped[maxLines-1])
		wrapped = append(wrapped[:maxLines-1], string(last[:min(len(last), maxRunes-1)])+"…")
	}
	for _, w := range wrapped {
		lines = append(lines, textLine{text: w, size: size, attrs: attrs})
	}
	return lines
}

func firstName(r *Report) string {
	if len(r.Arms) == 0 {
		return "?"
	}
	return r.Arms[0].Arm.Name
}

func armLabel(a ArmSummary) string {
	if !a.Arm.NeedsSchedExt() {
		return "kernel default"
	}
	if a.Ops != "" {
		return "sched_ext: " + a.Ops
	}
	return a.Arm.Spec
}

func shortVerdict(c Comparison) string {
	if math.IsNaN(c.CI.Low) {
		return "not enough data"
	}
	s := fmt.Sprintf("%+.1f%% [%+.1f, %+.1f] %s", (c.CI.Ratio-1)*100, (c.CI.Low-1)*100, (c.CI.High-1)*100, formatP(c.Welch.P))
	if !c.Significant {
		s += " · n.s."
	}
	return s
}

// axisY draws horizontal grid lines with labels at the ticks.
func axisY(b *strings.Builder, x0, x1 float64, yOf func(float64) float64, ticks []float64) {
	for _, t := range ticks {
		y := yOf(t)
		fmt.Fprintf(b, `<line x1="%g" x2="%g" y1="%.1f" y2="%.1f" stroke="#eee"/>`+"\n", x0, x1, y, y)
		fmt.Fprintf(b, `<text x="%g" y="%.1f" text-anchor="end" fill="#444" font-size="11">%s</text>`+"\n", x0-6, y+4, esc(tickLabel(t)))
	}
	fmt.Fprintf(b, `<line x1="%g" x2="%g" y1="%.1f" y2="%.1f" stroke="#888"/>`+"\n", x0, x0, yOf(ticks[0]), yOf(ticks[len(ticks)-1]))
}

// thin keeps every other tick when there are many (the run-order panel is short).
func thin(ticks []float64) []float64 {
	if len(ticks) <= 5 {
		return ticks
	}
	var out []float64
	for i := 0; i < len(ticks); i += 2 {
		out = append(out, ticks[i])
	}
	return out
}

// niceTicks covers [lo, hi] with about n ticks at 1, 2 or 5 times a power of ten and returns
// them with the covered range.
func niceTicks(lo, hi float64, n int) ([]float64, float64, float64) {
	if hi <= lo {
		d := math.Max(math.Abs(lo)*0.05, 1e-9)
		lo, hi = lo-d, hi+d
	}
	raw := (hi - lo) / float64(n)
	p := math.Pow(10, math.Floor(math.Log10(raw)))
	step := p
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= raw {
			step = m * p
			break
		}
	}
	start := math.Floor(lo/step) * step
	end := math.Ceil(hi/step) * step
	var ticks []float64
	for v := start; v <= end+step/2; v += step {
		ticks = append(ticks, math.Round(v/step)*step)
	}
	return ticks, start, end
}

func tickLabel(v float64) string {
	a := math.Abs(v)
	switch {
	case a >= 1e6:
		return trimFloat(v/1e6) + "M"
	case a >= 1e4:
		return trimFloat(v/1e3) + "k"
	}
	return trimFloat(v)
}

func trimFloat(v float64) string {
	s := fmt.Sprintf("%.3f", v)
	s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
	if s == "-0" {
		return "0"
	}
	return s
}

func esc(s string) string { return html.EscapeString(s) }
