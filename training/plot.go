package training

import (
	"fmt"
	"html"
	"io"
	"math"
	"strings"
)

// series is one line of a panel.
type series struct {
	name  string
	color string
	ys    []float64
}

// WriteSVG draws the training curves: the loss (training and validation) and the validation
// accuracy, balanced accuracy and AUC per epoch, with the kept epoch marked. title goes on top.
func WriteSVG(w io.Writer, title string, hist []EpochStats, bestEpoch int) error {
	const (
		width, height = 1000, 430
		panelW        = 400
		panelH        = 300
		top           = 60
	)
	var loss, trainLoss, acc, bal, auc []float64
	for _, h := range hist {
		trainLoss = append(trainLoss, h.TrainLoss)
		loss = append(loss, h.ValLoss)
		acc = append(acc, h.ValAccuracy)
		bal = append(bal, h.ValBalancedAccuracy)
		auc = append(auc, h.ValAUC)
	}
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n",
		width, height, width, height)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	fmt.Fprintf(&b, `<text x="%d" y="24" font-size="16" text-anchor="middle">%s</text>`+"\n", width/2, html.EscapeString(title))
	panel(&b, 70, top, panelW, panelH, "loss (class-weighted BCE)", hist, bestEpoch, false, []series{
		{"training", "#1f77b4", trainLoss},
		{"validation", "#d62728", loss},
	})
	panel(&b, 70+panelW+90, top, panelW, panelH, "validation (at the best-balanced threshold)", hist, bestEpoch, true, []series{
		{"accuracy", "#2ca02c", acc},
		{"balanced accuracy", "#9467bd", bal},
		{"ROC AUC", "#ff7f0e", auc},
	})
	b.WriteString("</svg>\n")
	_, err := io.WriteString(w, b.String())
	return err
}

func panel(b *strings.Builder, x0, y0, w, h int, title string, hist []EpochStats, best int, unit bool, ss []series) {
	n := len(hist)
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, s := range ss {
		for _, y := range s.ys {
			if !math.IsNaN(y) && !math.IsInf(y, 0) {
				lo, hi = min(lo, y), max(hi, y)
			}
		}
	}
	if lo > hi {
		lo, hi = 0, 1
	}
	if unit {
		lo, hi = math.Floor(lo*10)/10, math.Min(1, math.Ceil(hi*10)/10)
	} else {
		pad := (hi - lo) * 0.1
		lo, hi = math.Max(0, lo-pad), hi+pad
	}
	if hi-lo < 1e-9 {
		lo, hi = lo-0.5, hi+0.5
	}
	xOf := func(epoch int) float64 {
		if n <= 1 {
			return float64(x0 + w/2)
		}
		return float64(x0) + float64(epoch-1)*float64(w)/float64(n-1)
	}
	yOf := func(v float64) float64 { return float64(y0+h) - (v-lo)/(hi-lo)*float64(h) }

	fmt.Fprintf(b, `<text x="%d" y="%d" text-anchor="middle" font-size="14">%s</text>`+"\n", x0+w/2, y0-12, html.EscapeString(title))
	fmt.Fprintf(b, `<rect x="%d" y="%d" width="%d" height="%d" fill="none" stroke="#333"/>`+"\n", x0, y0, w, h)
	// y grid and labels
	for i := 0; i <= 5; i++ {
		v := lo + (hi-lo)*float64(i)/5
		y := yOf(v)
		fmt.Fprintf(b, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#ddd"/>`+"\n", x0, y, x0+w, y)
		fmt.Fprintf(b, `<text x="%d" y="%.1f" text-anchor="end" dominant-baseline="middle">%.3g</text>`+"\n", x0-6, y, v)
	}
	// x ticks: at most ~10 labels
	step := max(1, (n+9)/10)
	for e := 1; e <= n; e += step {
		x := xOf(e)
		fmt.Fprintf(b, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#333"/>`+"\n", x, y0+h, x, y0+h+4)
		fmt.Fprintf(b, `<text x="%.1f" y="%d" text-anchor="middle">%d</text>`+"\n", x, y0+h+18, e)
	}
	fmt.Fprintf(b, `<text x="%d" y="%d" text-anchor="middle">epoch</text>`+"\n", x0+w/2, y0+h+36)
	if best >= 1 && best <= n {
		x := xOf(best)
		fmt.Fprintf(b, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#888" stroke-dasharray="4 3"/>`+"\n", x, y0, x, y0+h)
		fmt.Fprintf(b, `<text x="%.1f" y="%d" text-anchor="end" fill="#555">kept </text>`+"\n", x, y0+12)
	}
	for i, s := range ss {
		var pts []string
		for e, y := range s.ys {
			if math.IsNaN(y) || math.IsInf(y, 0) {
				continue
			}
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", xOf(e+1), yOf(y)))
		}
		fmt.Fprintf(b, `<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>`+"\n", s.color, strings.Join(pts, " "))
		for _, p := range pts {
			var px, py float64
			fmt.Sscanf(p, "%f,%f", &px, &py)
			fmt.Fprintf(b, `<circle cx="%.1f" cy="%.1f" r="2.5" fill="%s"/>`+"\n", px, py, s.color)
		}
		ly := y0 + h + 56
		lx := x0 + i*150
		fmt.Fprintf(b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="%s" stroke-width="3"/>`+"\n", lx, ly, lx+20, ly, s.color)
		fmt.Fprintf(b, `<text x="%d" y="%d" dominant-baseline="middle">%s</text>`+"\n", lx+26, ly, html.EscapeString(s.name))
	}
}
