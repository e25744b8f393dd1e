package training

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/mlsched/mlsched/features"
)

// Candidate inputs beyond schema v2, measured on version 2 traces before any format changes
// (docs/TRAINING.md, "Inputs tried after schema v2"): each is rebuilt offline from what a
// trace records, and scored per program by its ROC AUC as a single score and by how far
// binning it with the inputs the model has already lifts a per-cell majority vote.
//
//   - waker: W's waker runs on W's previous CPU (R is the waker), WakerCPU == PrevCPU;
//   - W's sleep: the wakeup time minus W's latest known switch-out (W's earlier samples as
//     R whose outcome came within the horizon and is known by the wakeup);
//   - W's voluntary average: the value recorded when W was last R;
//   - faster averages of R's voluntary leaves (1/2, 1/4 per stint, and the last stint alone),
//     rebuilt from R's earlier samples as in ReconstructExtras (the leave rule).
//
// MLSCHED_CANDIDATE_TRACES: a glob of version 2 traces (one per program); skipped without.
//
//	MLSCHED_CANDIDATE_TRACES="$PWD/.cache/default-model/*.trace" go test -run CandidateInputs -v ./training
func TestCandidateInputs(t *testing.T) {
	paths, _ := filepath.Glob(os.Getenv("MLSCHED_CANDIDATE_TRACES"))
	if len(paths) == 0 {
		t.Skip("MLSCHED_CANDIDATE_TRACES not set (a glob of version 2 traces)")
	}
	fmt.Println("| program | samples | majority | AUC: waker | W's sleep | W's vol | R's vol (recorded) | vol 1/2 | vol 1/4 | last stint vol | cells: oncpu x vol | + W's sleep | + W's sleep, W's vol |")
	fmt.Println("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
	for _, p := range paths {
		ss := readSamples(t, p)
		c := candidateScores(ss)
		y := make([]uint8, len(ss))
		for i := range ss {
			y[i] = ss[i].Label
		}
		maj := cellMajority(y, 8)
		a2 := cellMajority(y, 8, c["oncpu"], c["vol"])
		a3 := cellMajority(y, 8, c["oncpu"], c["vol"], c["wsleep"])
		a4 := cellMajority(y, 8, c["oncpu"], c["vol"], c["wsleep"], c["wvol"])
		// Refining a partition never lowers the in-sample majority vote.
		if a2 < maj-1e-12 || a3 < a2-1e-12 || a4 < a3-1e-12 {
			t.Errorf("%s: cell accuracies %.4f %.4f %.4f %.4f not non-decreasing", p, maj, a2, a3, a4)
		}
		fmt.Printf("| %s | %d | %.3f | %.3f | %.3f | %.3f | %.3f | %.3f | %.3f | %.3f | %.3f | %.3f | %.3f |\n",
			strings.TrimSuffix(filepath.Base(p), ".trace"), len(ss), maj,
			AUC(y, c["waker"]), AUC(y, c["wsleep"]), AUC(y, c["wvol"]), AUC(y, c["vol"]),
			AUC(y, c["vol2"]), AUC(y, c["vol4"]), AUC(y, c["last"]), a2, a3, a4)
	}
}

func readSamples(t *testing.T, path string) []features.Sample {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r, err := features.NewTraceReader(f)
	if err != nil {
		t.Fatal(err)
	}
	var ss []features.Sample
	var s features.Sample
	for r.Next(&s) == nil {
		ss = append(ss, s)
	}
	sort.SliceStable(ss, func(a, b int) bool { return ss[a].TsNs < ss[b].TsNs })
	return ss
}

// candidateScores rebuilds each candidate per sample of ss (in time order), using only what is
// known at the sample's wakeup; the recorded inputs are there too, for the cells.
func candidateScores(ss []features.Sample) map[string][]float64 {
	n := len(ss)
	c := map[string][]float64{}
	for _, k := range []string{"waker", "wsleep", "wvol", "vol", "vol2", "vol4", "last", "oncpu"} {
		c[k] = make([]float64, n)
	}
	const horizon = 1e6
	type known struct {
		at uint64
		i  int
	}
	outs := make([]known, 0, n)
	for i := range ss {
		at := ss[i].TsNs + horizon
		if ss[i].Outcome != features.OutcomeTimeout {
			at = ss[i].TsNs + ss[i].LeaveNs
		}
		outs = append(outs, known{at, i})
	}
	slices.SortStableFunc(outs, func(a, b known) int {
		if a.at != b.at {
			if a.at < b.at {
				return -1
			}
			return 1
		}
		return 0
	})
	type task struct {
		lastOut         uint64 // latest known switch-out within the horizon
		vol             float64
		seenAsR         bool
		n               int
		lastIn          uint64
		v2, v4, lastVol float64
		pending         []int
	}
	tasks := map[uint32]*task{}
	get := func(tid uint32) *task {
		tk := tasks[tid]
		if tk == nil {
			tk = &task{}
			tasks[tid] = tk
		}
		return tk
	}
	in := func(i int) uint64 { return ss[i].TsNs - min(ss[i].ROnCPUNs, ss[i].TsNs) }
	k := 0
	for i := range ss {
		ts := ss[i].TsNs
		for ; k < n && outs[k].at <= ts; k++ {
			j := outs[k].i
			tk := get(ss[j].RTid)
			if ss[j].Outcome != features.OutcomeTimeout {
				tk.lastOut = max(tk.lastOut, ss[j].TsNs+ss[j].LeaveNs)
			}
			tk.pending = append(tk.pending, j)
		}
		r := get(ss[i].RTid)
		// R's earlier stints whose outcome is known now fold into the faster averages.
		keep := r.pending[:0]
		for _, j := range r.pending {
			if ss[j].TsNs >= ts || in(j) >= in(i) {
				keep = append(keep, j)
				continue
			}
			if r.n > 0 && in(j) <= r.lastIn {
				continue
			}
			v := float64(ss[j].Label & 1)
			if r.n == 0 {
				r.v2, r.v4 = v, v
			} else {
				r.v2 += (v - r.v2) / 2
				r.v4 += (v - r.v4) / 4
			}
			r.lastVol, r.lastIn = v, in(j)
			r.n++
		}
		r.pending = keep
		if ss[i].WakerCPU == ss[i].PrevCPU {
			c["waker"][i] = 1
		}
		c["vol"][i] = float64(ss[i].RVol)
		c["oncpu"][i] = math.Log1p(float64(ss[i].ROnCPUNs))
		c["vol2"][i], c["vol4"][i], c["last"][i] = 0.5, 0.5, 0.5
		if r.n > 0 {
			c["vol2"][i], c["vol4"][i], c["last"][i] = r.v2, r.v4, r.lastVol
		}
		c["wvol"][i] = features.VolUnknown
		if w := tasks[ss[i].WTid]; w != nil {
			if w.lastOut > 0 && w.lastOut <= ts {
				c["wsleep"][i] = math.Log1p(float64(ts - w.lastOut))
			}
			if w.seenAsR {
				c["wvol"][i] = w.vol
			}
		}
		r.vol, r.seenAsR = float64(ss[i].RVol), true
	}
	return c
}

// cellMajority is the in-sample accuracy of voting each cell's majority label, the cells being
// the cross product of nb quantile bins of each score (one cell without scores: the majority
// class). It bounds what those inputs can say about the label on these samples at this
// resolution.
func cellMajority(y []uint8, nb int, scores ...[]float64) float64 {
	n := len(y)
	bin := make([][]int, len(scores))
	for d, s := range scores {
		o := make([]int, n)
		for i := range o {
			o[i] = i
		}
		sort.SliceStable(o, func(a, b int) bool { return s[o[a]] < s[o[b]] })
		bin[d] = make([]int, n)
		for r, i := range o {
			if r > 0 && s[i] == s[o[r-1]] {
				bin[d][i] = bin[d][o[r-1]] // ties share a bin
			} else {
				bin[d][i] = r * nb / n
			}
		}
	}
	type cell struct{ n, pos int }
	cells := map[int]*cell{}
	for i := range y {
		key := 0
		for d := range scores {
			key = key*nb + bin[d][i]
		}
		c := cells[key]
		if c == nil {
			c = &cell{}
			cells[key] = c
		}
		c.n++
		c.pos += int(y[i])
	}
	right := 0
	for _, c := range cells {
		right += max(c.pos, c.n-c.pos)
	}
	return float64(right) / float64(max(n, 1))
}

func TestCellMajority(t *testing.T) {
	y := []uint8{0, 0, 1, 1, 1, 0, 1, 1}
	if got := cellMajority(y, 4); got != 5.0/8 {
		t.Errorf("no scores: %v, want the majority 5/8", got)
	}
	// A score that separates the classes, one sample per bin: every cell is pure.
	sep := []float64{0, 0.1, 5, 6, 7, 0.2, 8, 9}
	if got := cellMajority(y, 8, sep); got != 1 {
		t.Errorf("separating score: %v, want 1", got)
	}
	// A constant score is one cell: the majority again.
	if got := cellMajority(y, 4, make([]float64, 8)); got != 5.0/8 {
		t.Errorf("constant score: %v, want 5/8", got)
	}
}
