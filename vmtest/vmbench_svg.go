package vmtest

import (
	"fmt"
	"html"
	"io"
	"math"
	"strconv"
	"strings"
)

// benchColors: one per arm, in the tables' order (Okabe-Ito, then greys).
var benchColors = []string{"#000000", "#0072B2", "#56B4E9", "#009E73", "#E69F00", "#D55E00", "#CC79A7", "#8C564B", "#7F7F7F"}

// writeSVG draws one panel per metric: each arm's runs as dots (spread left to right by
// round) and its median as a bar, the y axis from 0 so that heights compare.
func (r *benchReport) writeSVG(w io.Writer) error {
	const (
		cols   = 2
		panelW = 560
		panelH = 300
		top    = 78
		padL   = 64
		padB   = 92
		gapY   = 36
	)
	rows := (len(r.Metrics) + cols - 1) / cols
	width, height := cols*panelW+24, top+rows*(panelH+gapY)+16
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="DejaVu Sans, Helvetica, Arial, sans-serif" font-size="11">`+"\n", width, height, width, height)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	fmt.Fprintf(&b, `<text x="14" y="24" font-size="16" font-weight="bold">mlsched vmbench: %s, %d rounds, kernel %s</text>`+"\n",
		svgEsc(r.Commit), r.Rounds, svgEsc(r.Kernel))
	fmt.Fprintf(&b, `<text x="14" y="42" fill="#444">%s -accel %s -smp 2 · %s · VM restarts %d · dots: runs, bar: median</text>`+"\n",
		svgEsc(r.Qemu), svgEsc(r.Accel), svgEsc(r.Date), r.Restarts)
	fmt.Fprintf(&b, `<text x="14" y="60" fill="#B03A2E" font-weight="bold">NOTE: %s.</text>`+"\n", svgEsc(r.Note))
	for i, m := range r.Metrics {
		x0 := 12 + (i%cols)*panelW
		y0 := top + (i/cols)*(panelH+gapY)
		r.panel(&b, m, float64(x0), float64(y0), panelW-24, panelH, padL, padB)
	}
	b.WriteString("</svg>\n")
	_, err := io.WriteString(w, b.String())
	return err
}

func (r *benchReport) panel(b *strings.Builder, metric string, x0, y0, w, h, padL, padB float64) {
	res := r.Workloads[metric]
	better := "lower is better"
	if res.HigherIsBetter {
		better = "higher is better"
	}
	fmt.Fprintf(b, `<text x="%.0f" y="%.0f" font-size="13" font-weight="bold">%s</text>`+"\n", x0, y0+14, svgEsc(metric))
	fmt.Fprintf(b, `<text x="%.0f" y="%.0f" text-anchor="end" fill="#444">%s, %s</text>`+"\n", x0+w, y0+14, svgEsc(res.Unit), better)
	left, right, top, bottom := x0+padL, x0+w, y0+28, y0+h-padB
	hi := 0.0
	for _, a := range res.Arms {
		for _, v := range a.Runs {
			hi = math.Max(hi, v)
		}
	}
	step := tickStep(hi)
	hi = math.Max(step, math.Ceil(hi*1.05/step)*step)
	yOf := func(v float64) float64 { return bottom - v/hi*(bottom-top) }
	for v := 0.0; v <= hi+step/2; v += step {
		y := yOf(v)
		fmt.Fprintf(b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#e4e4e4"/>`+"\n", left, y, right, y)
		fmt.Fprintf(b, `<text x="%.1f" y="%.1f" text-anchor="end" fill="#444">%s</text>`+"\n", left-6, y+4,
			strconv.FormatFloat(v, 'f', max(0, int(-math.Floor(math.Log10(step)))), 64))
	}
	fmt.Fprintf(b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#444"/>`+"\n", left, bottom, right, bottom)
	slot := (right - left) / float64(max(1, len(r.Arms)))
	for i, name := range r.Arms {
		a := res.Arms[name]
		color := benchColors[i%len(benchColors)]
		cx := left + slot*(float64(i)+0.5)
		fmt.Fprintf(b, `<text transform="translate(%.1f,%.1f) rotate(-35)" text-anchor="end">%s</text>`+"\n", cx+4, bottom+14, svgEsc(name))
		if len(a.Runs) == 0 {
			fmt.Fprintf(b, `<text x="%.1f" y="%.1f" text-anchor="middle" fill="#999">no runs</text>`+"\n", cx, bottom-6)
			continue
		}
		bw := slot * 0.7
		fmt.Fprintf(b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s" fill-opacity="0.18"/>`+"\n",
			cx-bw/2, yOf(*a.Median), bw, bottom-yOf(*a.Median), color)
		fmt.Fprintf(b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s" stroke-width="3"><title>%s median %s</title></line>`+"\n",
			cx-bw/2, yOf(*a.Median), cx+bw/2, yOf(*a.Median), color, svgEsc(name), num(*a.Median))
		spread := bw * 0.8 / float64(max(1, r.Rounds))
		for k, v := range a.Runs {
			x := cx + (float64(a.RunRounds[k])-float64(r.Rounds-1)/2)*spread
			fmt.Fprintf(b, `<circle cx="%.1f" cy="%.1f" r="3.2" fill="%s" stroke="white" stroke-width="0.8"><title>%s round %d: %s</title></circle>`+"\n",
				x, yOf(v), color, svgEsc(name), a.RunRounds[k]+1, num(v))
		}
	}
}

// tickStep is a 1-2-5 step that gives 4-8 gridlines up to hi.
func tickStep(hi float64) float64 {
	if hi <= 0 || math.IsNaN(hi) || math.IsInf(hi, 0) {
		return 1
	}
	mag := math.Pow(10, math.Floor(math.Log10(hi/5)))
	for _, m := range []float64{1, 2, 5, 10} {
		if hi/(m*mag) <= 8 {
			return m * mag
		}
	}
	return 10 * mag
}

func svgEsc(s string) string { return html.EscapeString(s) }
