package ab

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// The note the VM demo puts on its report (vmtest/demo_test.go).
const tcgNote = "qemu TCG (emulated CPUs, no cache model): behaviour and overhead, not real-hardware speedups"

// svgText is a <text> element with its box estimated from its font size: the glyphs reach
// 0.93 em above the baseline and 0.24 em below it, and a character is 0.58 em wide (0.64 bold),
// a little over DejaVu Sans's average in prose.
type svgText struct {
	text                     string
	x, y, size               float64
	left, right, top, bottom float64
}

// svgTexts parses an SVG and returns its size and its unrotated <text> elements.
func svgTexts(t *testing.T, svg []byte) (width, height float64, texts []svgText) {
	t.Helper()
	num := func(s string) float64 {
		v, err := strconv.ParseFloat(s, 64)
		if err != nil {
			t.Fatalf("number %q: %v", s, err)
		}
		return v
	}
	d := xml.NewDecoder(bytes.NewReader(svg))
	rootSize := 0.0
	for {
		tok, err := d.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("SVG is not well-formed XML: %v", err)
		}
		se, ok := tok.(xml.StartElement)
		if !ok {
			continue
		}
		attr := map[string]string{}
		for _, a := range se.Attr {
			attr[a.Name.Local] = a.Value
		}
		switch se.Name.Local {
		case "svg":
			width, height, rootSize = num(attr["width"]), num(attr["height"]), num(attr["font-size"])
			if vb := fmt.Sprintf("0 0 %g %g", width, height); attr["viewBox"] != vb {
				t.Errorf("viewBox %q, want %q", attr["viewBox"], vb)
			}
		case "text":
			var content string
			if err := d.DecodeElement(&content, &se); err != nil {
				t.Fatal(err)
			}
			if attr["transform"] != "" { // the rotated axis label
				continue
			}
			tx := svgText{text: content, x: num(attr["x"]), y: num(attr["y"]), size: rootSize}
			if s, ok := attr["font-size"]; ok {
				tx.size = num(s)
			}
			em := 0.58
			if attr["font-weight"] == "bold" {
				em = 0.64
			}
			w := em * tx.size * float64(len([]rune(content)))
			switch attr["text-anchor"] {
			case "end":
				tx.left, tx.right = tx.x-w, tx.x
			case "middle":
				tx.left, tx.right = tx.x-w/2, tx.x+w/2
			default:
				tx.left, tx.right = tx.x, tx.x+w
			}
			tx.top, tx.bottom = tx.y-0.93*tx.size, tx.y+0.24*tx.size
			texts = append(texts, tx)
		}
	}
	return width, height, texts
}

// testReport is three arms of six runs each (and a warm-up round) under workload, with note.
func testReport(t *testing.T, workload []string, note string) *Report {
	t.Helper()
	res := &Result{Arms: []Arm{mustArm(t, "default"), mustArm(t, "fifo"), mustArm(t, "model")},
		Workload: workload, Unit: "ops/s", Seed: 11, Warmup: 1, PerArm: 6,
		Kernel: "6.12.0-rc1-sched-ext", CPUs: 4, Note: note}
	for round := 1; round <= 7; round++ {
		for i, a := range res.Arms {
			res.Runs = append(res.Runs, Run{Seq: len(res.Runs) + 1, Round: round, Arm: a.Name, Warmup: round == 1,
				Throughput: 1000 + 40*float64(i) + 7*float64(round%3)})
		}
	}
	return Analyze(res, AnalyzeOptions{})
}

// The title, subtitle and note each take lines of their own at the top, whatever their length;
// no two texts anywhere overlap, and all stay inside the picture.
func TestSVGLayout(t *testing.T) {
	long := []string{"mlsched", "workload", "hackbench", "--duration", "2s", "--groups", "8", "--loops", "100000",
		"--pipe", "--threads", "--fds", "20", "--data-size", "4096", "--output", "/var/lib/mlsched/ab/" + strings.Repeat("hackbench-results-", 8) + "x.json",
		"--tag", "a very long tag with spaces in it"}
	for _, c := range []struct {
		name     string
		workload []string
		note     string
	}{
		{"short", []string{"mlsched", "workload", "hackbench"}, ""},
		{"long title, TCG note", long, tcgNote},
		{"long title, long note", long, strings.Repeat(tcgNote+"; ", 3)},
	} {
		t.Run(c.name, func(t *testing.T) {
			var svg bytes.Buffer
			if err := testReport(t, c.workload, c.note).WriteSVG(&svg); err != nil {
				t.Fatal(err)
			}
			width, height, texts := svgTexts(t, svg.Bytes())
			for i, a := range texts {
				if a.left < 0 || a.right > width || a.top < 0 || a.bottom > height {
					t.Errorf("%q (x %g, y %g, size %g) is outside the %gx%g picture", a.text, a.x, a.y, a.size, width, height)
				}
				for _, b := range texts[i+1:] {
					if a.left < b.right && b.left < a.right && a.top < b.bottom && b.top < a.bottom {
						t.Errorf("%q (y %g, size %g) overlaps %q (y %g, size %g)", a.text, a.y, a.size, b.text, b.y, b.size)
					}
				}
			}

			// The header: every text above the panels' headings, each on a line of its own.
			panelsY := 0.0
			for _, tx := range texts {
				if strings.Contains(tx.text, " per arm (") {
					panelsY = tx.y
				}
			}
			var head []svgText
			for _, tx := range texts {
				if tx.y < panelsY {
					head = append(head, tx)
				}
			}
			var title, lines []string
			for i, a := range head {
				for _, b := range head[:i] {
					if a.top < b.bottom && b.top < a.bottom {
						t.Errorf("%q (y %g, size %g) shares a line with %q (y %g, size %g)", a.text, a.y, a.size, b.text, b.y, b.size)
					}
				}
				if a.size == 17 {
					title = append(title, a.text)
				} else {
					lines = append(lines, a.text)
				}
			}
			full := "mlsched ab: " + shellJoin(c.workload)
			if got := strings.Join(title, " "); got != full && !(len(title) == 2 && strings.HasSuffix(got, "…") &&
				strings.HasPrefix(full, strings.TrimSuffix(got, "…"))) {
				t.Errorf("title lines %q, want %q whole or cut at two lines", title, full)
			}
			if len(lines) == 0 || !strings.HasPrefix(lines[0], "6 runs per arm (+1 warm-up)") {
				t.Errorf("header lines %q lack the subtitle", lines)
			}
			if c.note != "" && !strings.Contains(strings.Join(lines, " "), strings.TrimSpace(c.note)) {
				t.Errorf("header lines %q lack the note %q", lines, c.note)
			}
			if len(head) != len(title)+len(lines) || len(title) == 0 {
				t.Errorf("header %+v", head)
			}
		})
	}
}

func TestAppendWrapped(t *testing.T) {
	// 10 px at 0.6 em is 6 px a character: 60 px holds 10.
	text := func(ls []textLine) []string {
		var s []string
		for _, l := range ls {
			s = append(s, l.text)
		}
		return s
	}
	for _, c := range []struct {
		in   string
		max  int
		want []string
	}{
		{"short", 3, []string{"short"}},
		{"one two three four", 3, []string{"one two", "three four"}},
		{"abcdefghijklmnopqrstuvwxy z", 5, []string{"abcdefghij", "klmnopqrst", "uvwxy z"}},
		{"aaaa bbbb cccc dddd eeee", 2, []string{"aaaa bbbb", "cccc dddd…"}},
		{"aaaa bbbbbb cccc", 1, []string{"aaaa…"}},
		{"  ", 2, nil},
	} {
		got := text(appendWrapped(nil, c.in, 60, 10, false, "", c.max))
		if strings.Join(got, "|") != strings.Join(c.want, "|") {
			t.Errorf("wrap(%q, %d lines) = %q, want %q", c.in, c.max, got, c.want)
		}
	}
}

// An experiment stopped early (Ctrl-C with at least two runs per arm) is reported with the runs
// it has: the header, the few-runs note and the plot's subtitle say "2 of 6", not 6.
func TestReportStoppedEarly(t *testing.T) {
	rep := testReport(t, []string{"hackbench"}, "")
	if rep.RunsDone() != 6 {
		t.Fatalf("complete experiment: %d runs done, want 6", rep.RunsDone())
	}
	res := *rep.Result
	res.Runs = slices.DeleteFunc(slices.Clone(res.Runs), func(r Run) bool { return r.Round > 3 }) // warm-up + 2
	stopped := Analyze(&res, AnalyzeOptions{})
	if stopped.RunsDone() != 2 {
		t.Fatalf("stopped experiment: %d runs done, want 2", stopped.RunsDone())
	}
	var text bytes.Buffer
	if err := stopped.WriteText(&text); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"3 arms x 2 of 6 runs", "note: 2 runs per arm is few"} {
		if !strings.Contains(text.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, text.String())
		}
	}
	var svg bytes.Buffer
	if err := stopped.WriteSVG(&svg); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(svg.String(), "2 of 6 runs per arm") {
		t.Error("plot subtitle does not say 2 of 6 runs")
	}
}
