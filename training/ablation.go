package training

// The schema v2 ablation (issue 13; docs/TRAINING.md, "Schema v2 ablation"): which of R's
// scheduling state, added to the 64 decayed syscall counts, helps the net, measured on the
// time-held-out part of every program and leave-one-program-out.
//
// Nothing here changes the trace or model formats or Train: the extra inputs are rebuilt
// offline from what a version 1 trace already records per sample (R's tid, the wakeup time,
// R's on-CPU time at the wakeup, the outcome and its delay), replaying each trace in time order
// and using at every wakeup only the outcomes that would be known by then. The net is the one
// Train trains (inputs -> hidden ReLU -> 1 sigmoid, class-weighted cross-entropy from the
// logit, Adam, gorgonia float32), built here for any input width.

import (
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/mlsched/mlsched/features"
	"github.com/mlsched/mlsched/model"
)

// The extra inputs the ablation can add to the counts, each a function of R's state at the
// wakeup that a BPF program could keep per task.
const (
	// ExtraOnCPU is log1p(R's on-CPU time at the wakeup in µs): the sample's ROnCPUNs.
	ExtraOnCPU = iota
	// ExtraStint is log1p(the EWMA of R's previous stints in µs), 0 before R has one. A stint
	// is approximated by a previous sample's on-CPU time plus its delay to R's switch-out
	// (exact for a stint that ended within the horizon; horizon-censored for one that did not).
	ExtraStint
	// ExtraVol is the EWMA of "the stint ended voluntarily within the horizon" (the label of
	// R's previous stints), 0.5 before R has one.
	ExtraVol
	// ExtraPreempt is the EWMA of "the stint ended in a preemption within the horizon", 0.5
	// before R has one.
	ExtraPreempt
	// ExtraGap is log1p(the time R was off the CPU before its current stint, in µs), from the
	// end of R's latest known stint to the current stint's switch-in; 0 when unknown. An upper
	// bound of the real gap: the stint just before may have had no sample.
	ExtraGap
	// ExtraHist is min(R's known stints, 8)/8: how warmed up the averages are.
	ExtraHist
	// NumExtras is the number of extra inputs the ablation knows.
	NumExtras
)

// ExtraNames names the extra inputs, indexed by their constants.
var ExtraNames = [NumExtras]string{"oncpu", "stint", "vol", "preempt", "gap", "hist"}

// AblationEWMAShift sets the averages' weight: each new stint moves them by 1/2^shift (1/8),
// an update BPF does with a shift: avg += (x - avg) >> 3.
const AblationEWMAShift = 3

// stintOf is what the ablation knows of one earlier sample of R.
type stintOf struct {
	ts, onCPU, leave uint64
	tid              uint32
	label            uint8
	outcome          features.Outcome
}

// rHistory is R's reconstructed per-task state: what BPF would keep in its feature slot.
type rHistory struct {
	n       int     // stints accounted
	lastIn  uint64  // switch-in time of the latest accounted stint (ts - on-CPU time)
	stint   float64 // EWMA of stint lengths, µs
	vol     float64 // EWMA of "ended voluntarily within the horizon"
	preempt float64 // EWMA of "ended in a preemption within the horizon"
	lastEnd uint64  // switch-out time of the latest known stint that ended within the horizon
}

// known returns when sample s's outcome would be known: its horizon after it (the rule the
// online replay uses), or, with atLeave, at R's switch-out when that came within the horizon.
func (s *stintOf) known(horizonNs uint64, atLeave bool) uint64 {
	if atLeave && s.outcome != features.OutcomeTimeout {
		return s.ts + s.leave
	}
	return s.ts + horizonNs
}

func switchIn(ts, onCPU uint64) uint64 {
	if onCPU > ts {
		return 0
	}
	return ts - onCPU
}

// account folds a known sample of an ended stint into R's history. Several samples can fall
// in one stint (every wakeup on R's CPU while it runs): they share the switch-in time, and only
// the first known one counts; a stint older than the latest accounted one is ignored.
func (h *rHistory) account(s *stintOf, horizonNs uint64) {
	in := switchIn(s.ts, s.onCPU)
	resolved := s.outcome != features.OutcomeTimeout
	if resolved {
		h.lastEnd = max(h.lastEnd, s.ts+s.leave)
	}
	if h.n > 0 && in <= h.lastIn {
		return
	}
	d := horizonNs // censored: R was still running at the horizon
	if resolved {
		d = s.leave
	}
	x := float64(s.onCPU+d) / 1e3
	vol := float64(s.label & 1)
	pre := 0.0
	if s.outcome == features.OutcomePreempted {
		pre = 1
	}
	if h.n == 0 {
		h.stint, h.vol, h.preempt = x, vol, pre
	} else {
		const a = 1.0 / (1 << AblationEWMAShift)
		h.stint += a * (x - h.stint)
		h.vol += a * (vol - h.vol)
		h.preempt += a * (pre - h.preempt)
	}
	h.n++
	h.lastIn = in
}

// extras writes the extra inputs of a sample of R (at ts, on the CPU for onCPU) from h.
func (h *rHistory) extras(ts, onCPU uint64, out []float32) {
	out[ExtraOnCPU] = float32(math.Log1p(float64(onCPU) / 1e3))
	out[ExtraStint], out[ExtraVol], out[ExtraPreempt], out[ExtraGap], out[ExtraHist] = 0, 0.5, 0.5, 0, 0
	if h == nil {
		return
	}
	if h.n > 0 {
		out[ExtraStint] = float32(math.Log1p(h.stint))
		out[ExtraVol], out[ExtraPreempt] = float32(h.vol), float32(h.preempt)
		out[ExtraHist] = float32(min(h.n, 8)) / 8
	}
	if in := switchIn(ts, onCPU); h.lastEnd > 0 && h.lastEnd <= in {
		out[ExtraGap] = float32(math.Log1p(float64(in-h.lastEnd) / 1e3))
	}
}

// ReconstructExtras computes the extra inputs of every sample of one trace, in the order
// given (any order; the replay sorts by time). Sample i's inputs use only the outcomes of
// samples strictly earlier than it, in earlier stints of R than i's (by their switch-in time),
// whose outcome is known by its wakeup: known horizonNs after the sample, or with atLeave at
// R's switch-out for an outcome within the horizon.
func ReconstructExtras(samples []features.Sample, horizonNs uint64, atLeave bool) [][NumExtras]float32 {
	st := make([]stintOf, len(samples))
	for i := range samples {
		s := &samples[i]
		st[i] = stintOf{ts: s.TsNs, onCPU: s.ROnCPUNs, leave: s.LeaveNs, tid: s.RTid, label: s.Label, outcome: s.Outcome}
	}
	out, _ := reconstruct(st, horizonNs, atLeave)
	return out
}

// reconstruct also counts the samples whose R has a known earlier stint that ended after the
// current stint began (by the on-CPU time): inconsistent records, 0 in a sound trace.
func reconstruct(st []stintOf, horizonNs uint64, atLeave bool) ([][NumExtras]float32, int) {
	n := len(st)
	byTs := make([]int32, n)
	byKnown := make([]int32, n)
	for i := range byTs {
		byTs[i], byKnown[i] = int32(i), int32(i)
	}
	sort.SliceStable(byTs, func(a, b int) bool { return st[byTs[a]].ts < st[byTs[b]].ts })
	knownAt := make([]uint64, n)
	for i := range st {
		knownAt[i] = st[i].known(horizonNs, atLeave)
	}
	sort.SliceStable(byKnown, func(a, b int) bool {
		ka, kb := knownAt[byKnown[a]], knownAt[byKnown[b]]
		if ka != kb {
			return ka < kb
		}
		return st[byKnown[a]].ts < st[byKnown[b]].ts
	})
	hist := make(map[uint32]*rHistory)
	// Known outcomes wait per task until a sample of that task is strictly later and in a
	// later stint: the averages describe R's ended stints, never its current one (BPF updates
	// them when a stint ends).
	pending := make(map[uint32][]int32)
	out := make([][NumExtras]float32, n)
	k, overlaps := 0, 0
	for _, i := range byTs {
		ts := st[i].ts
		for k < n && knownAt[byKnown[k]] <= ts {
			j := byKnown[k]
			pending[st[j].tid] = append(pending[st[j].tid], j)
			k++
		}
		tid := st[i].tid
		in := switchIn(ts, st[i].onCPU)
		h := hist[tid]
		if p := pending[tid]; len(p) > 0 {
			keep := p[:0]
			for _, j := range p {
				if st[j].ts >= ts || switchIn(st[j].ts, st[j].onCPU) >= in {
					keep = append(keep, j)
					continue
				}
				if h == nil {
					h = &rHistory{}
					hist[tid] = h
				}
				h.account(&st[j], horizonNs)
			}
			pending[tid] = keep
		}
		h.extras(ts, st[i].onCPU, out[i][:])
		if h != nil && h.lastEnd > in {
			overlaps++
		}
	}
	return out, overlaps
}

// AblationProgram is one program's capture in an AblationData.
type AblationProgram struct {
	Name       string
	Path       string
	Samples    int
	Positives  int
	DurationNs uint64
	First      int // its rows are First .. First+Samples-1, in time order
	Early      int // rows First .. First+Early-1 are its first 1-ValFrac by time
	Warm       int // samples whose R had at least one known earlier stint
	Overlaps   int // samples whose R had a known stint ending after the current one began
}

// AblationData holds the samples of several programs' traces (one trace per program), each
// program's rows in time order, with both the 64 counts and the extra inputs.
type AblationData struct {
	HorizonNs uint64
	ValFrac   float64
	AtLeave   bool
	Programs  []AblationProgram
	Counts    []float32 // Inputs per row: log1p(count / 2^16), as Dataset's rows
	Extra     []float32 // NumExtras per row
	Y         []uint8
}

// Rows is the number of samples.
func (d *AblationData) Rows() int { return len(d.Y) }

// LoadAblation reads one trace per program (the program's name is the file's base name
// without .trace), relabelled for horizonNs if not 0 (else every trace must have the same
// horizon), and rebuilds the extra inputs (ReconstructExtras). Each program's last valFrac of
// samples by time is its time-held-out part.
func LoadAblation(paths []string, valFrac float64, horizonNs uint64, atLeave bool) (*AblationData, error) {
	if len(paths) == 0 {
		return nil, errors.New("ablation: no traces")
	}
	if !(valFrac > 0 && valFrac < 1) {
		return nil, fmt.Errorf("ablation: validation fraction %v: want 0 < f < 1", valFrac)
	}
	d := &AblationData{HorizonNs: horizonNs, ValFrac: valFrac, AtLeave: atLeave}
	seen := map[string]bool{}
	for _, p := range paths {
		name := strings.TrimSuffix(filepath.Base(p), ".trace")
		if seen[name] {
			return nil, fmt.Errorf("ablation: two traces of program %q", name)
		}
		seen[name] = true
		f, err := os.Open(p)
		if err != nil {
			return nil, fmt.Errorf("ablation: %w", err)
		}
		err = d.add(name, p, f, horizonNs != 0)
		f.Close()
		if err != nil {
			return nil, err
		}
	}
	return d, nil
}

// AddTrace adds one program's trace from r (the name is the program's).
func (d *AblationData) AddTrace(name string, r io.Reader) error {
	return d.add(name, name, r, false)
}

func (d *AblationData) add(name, path string, r io.Reader, relabel bool) error {
	tr, err := features.NewTraceReader(r)
	if err != nil {
		return fmt.Errorf("trace %s: %w", path, err)
	}
	h := tr.Header().HorizonNs
	switch {
	case h == 0:
		return fmt.Errorf("trace %s: horizon is 0", path)
	case d.HorizonNs == 0:
		d.HorizonNs = h
	case relabel && h < d.HorizonNs:
		return fmt.Errorf("trace %s: captured with horizon %s, cannot label it for %s: %w", path, fmtNs(h), fmtNs(d.HorizonNs), ErrHorizonMismatch)
	case !relabel && h != d.HorizonNs:
		return fmt.Errorf("trace %s: horizon %s, others %s: %w", path, fmtNs(h), fmtNs(d.HorizonNs), ErrHorizonMismatch)
	}
	var samples []features.Sample
	var s features.Sample
	for {
		err := tr.Next(&s)
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("trace %s: %w", path, err)
		}
		if relabel {
			Relabel(&s, d.HorizonNs)
		}
		samples = append(samples, s)
	}
	if len(samples) == 0 {
		return fmt.Errorf("trace %s: no samples", path)
	}
	sort.SliceStable(samples, func(a, b int) bool { return samples[a].TsNs < samples[b].TsNs })
	st := make([]stintOf, len(samples))
	for i := range samples {
		s := &samples[i]
		st[i] = stintOf{ts: s.TsNs, onCPU: s.ROnCPUNs, leave: s.LeaveNs, tid: s.RTid, label: s.Label, outcome: s.Outcome}
	}
	ex, overlaps := reconstruct(st, d.HorizonNs, d.AtLeave)
	p := AblationProgram{Name: name, Path: path, Samples: len(samples), First: len(d.Y), Overlaps: overlaps}
	if sum := tr.Summary(); sum != nil {
		p.DurationNs = sum.DurationNs
	}
	var row [features.NumBuckets]float32
	for i := range samples {
		for j, v := range features.Counts(&samples[i].Feats) {
			row[j] = 0
			if v != 0 {
				row[j] = float32(model.Log1pCount(v))
			}
		}
		d.Counts = append(d.Counts, row[:]...)
		d.Extra = append(d.Extra, ex[i][:]...)
		d.Y = append(d.Y, samples[i].Label&1)
		p.Positives += int(samples[i].Label & 1)
		if ex[i][ExtraHist] > 0 {
			p.Warm++
		}
	}
	p.Early = p.Samples - int(math.Round(float64(p.Samples)*d.ValFrac))
	d.Programs = append(d.Programs, p)
	return nil
}

// AblationInputs is one set of inputs: the counts or not, and some extras.
type AblationInputs struct {
	Name   string
	Counts bool
	Extras []int
}

// Width is the number of inputs.
func (a AblationInputs) Width() int {
	if a.Counts {
		return features.NumBuckets + len(a.Extras)
	}
	return len(a.Extras)
}

// Describe names the inputs, e.g. "counts + oncpu + stint".
func (a AblationInputs) Describe() string {
	var parts []string
	if a.Counts {
		parts = append(parts, "counts")
	}
	for _, e := range a.Extras {
		parts = append(parts, ExtraNames[e])
	}
	return strings.Join(parts, " + ")
}

// DefaultAblationInputs are the sets (a)-(f) and two more: the three extras without
// the counts (g) and every extra with the counts (h).
func DefaultAblationInputs() []AblationInputs {
	return []AblationInputs{
		{Name: "a", Counts: true},
		{Name: "b", Counts: true, Extras: []int{ExtraOnCPU}},
		{Name: "c", Counts: true, Extras: []int{ExtraStint}},
		{Name: "d", Counts: true, Extras: []int{ExtraVol}},
		{Name: "e", Counts: true, Extras: []int{ExtraOnCPU, ExtraStint, ExtraVol}},
		{Name: "f1", Extras: []int{ExtraOnCPU}},
		{Name: "f2", Extras: []int{ExtraStint}},
		{Name: "f3", Extras: []int{ExtraVol}},
		{Name: "g", Extras: []int{ExtraOnCPU, ExtraStint, ExtraVol}},
		{Name: "h", Counts: true, Extras: []int{ExtraOnCPU, ExtraStint, ExtraVol, ExtraPreempt, ExtraGap, ExtraHist}},
	}
}

// MoreAblationInputs are sets that separate (h)'s additions: (e) plus one of them.
func MoreAblationInputs() []AblationInputs {
	return []AblationInputs{
		{Name: "i", Counts: true, Extras: []int{ExtraOnCPU, ExtraStint, ExtraVol, ExtraGap}},
		{Name: "j", Counts: true, Extras: []int{ExtraOnCPU, ExtraStint, ExtraVol, ExtraPreempt}},
	}
}

// AblationSettings are the training hyperparameters and the subsampling.
type AblationSettings struct {
	Hidden    int     // 16
	Epochs    int     // 8
	BatchSize int     // 256
	LearnRate float64 // 0.003
	Seed      uint64
	// MaxTrainPerProgram caps the training rows drawn (at random, seeded) from each program's
	// early part; 0: all of them.
	MaxTrainPerProgram int
	// MaxSelectPerProgram caps the rows drawn from each training program's late part to choose
	// the epoch (and, leave-one-program-out, the threshold and margin); 0: all.
	MaxSelectPerProgram int
	Workers             int // trainings run at once (0: GOMAXPROCS)
	Progress            func(string)
}

func (s *AblationSettings) defaults() {
	if s.Hidden == 0 {
		s.Hidden = model.DefaultHidden
	}
	if s.Epochs == 0 {
		s.Epochs = 8
	}
	if s.BatchSize == 0 {
		s.BatchSize = 256
	}
	if s.LearnRate == 0 {
		s.LearnRate = 0.003
	}
	if s.Workers <= 0 {
		s.Workers = runtime.GOMAXPROCS(0)
	}
}

// AblationScore is one trained net scored on one test set.
type AblationScore struct {
	Net       Metrics
	Majority  Metrics
	Threshold float64
	Confident Confident // with the abstention margin chosen where the threshold was
	BestEpoch int
	// Own is the net scored at the threshold that maximises balanced accuracy on the test rows
	// themselves: what adapting the threshold alone could reach (for time-held-out, Net).
	Own Metrics
}

// AblationResult is one input set's scores.
type AblationResult struct {
	Inputs AblationInputs
	// Time: trained on every program's early part, scored on every program's late part
	// (threshold and margin chosen on those late rows, as Train does).
	Time AblationScore
	// LOPO[p]: trained on the other programs' early parts, epoch, threshold and margin chosen
	// on their late parts, scored on all of program p.
	LOPO []AblationScore
}

// RunAblation trains and scores every input set, time-held-out and leave-one-program-out
// (the latter needs at least two programs).
func RunAblation(d *AblationData, sets []AblationInputs, s AblationSettings) ([]AblationResult, error) {
	s.defaults()
	if s.Hidden < 1 || s.Hidden > model.MaxHidden {
		return nil, fmt.Errorf("hidden %d: want 1..%d", s.Hidden, model.MaxHidden)
	}
	np := len(d.Programs)
	res := make([]AblationResult, len(sets))
	type job struct{ set, held int } // held -1: time-held-out
	var jobs []job
	for i := range sets {
		if sets[i].Width() == 0 {
			return nil, fmt.Errorf("input set %s has no inputs", sets[i].Name)
		}
		res[i].Inputs = sets[i]
		if np > 1 {
			res[i].LOPO = make([]AblationScore, np)
		}
		jobs = append(jobs, job{i, -1})
		for p := 0; p < np && np > 1; p++ {
			jobs = append(jobs, job{i, p})
		}
	}
	ch := make(chan job)
	var mu sync.Mutex
	var firstErr error
	var wg sync.WaitGroup
	for w := 0; w < min(s.Workers, len(jobs)); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range ch {
				sc, err := d.runOne(sets[j.set], j.held, &s)
				mu.Lock()
				switch {
				case err != nil && firstErr == nil:
					firstErr = fmt.Errorf("input set %s: %w", sets[j.set].Name, err)
				case err == nil && j.held < 0:
					res[j.set].Time = sc
				case err == nil:
					res[j.set].LOPO[j.held] = sc
				}
				if s.Progress != nil && err == nil {
					what := "time-held-out"
					if j.held >= 0 {
						what = "without " + d.Programs[j.held].Name
					}
					s.Progress(fmt.Sprintf("%s (%s), %s: accuracy %.4f balanced %.4f majority %.4f AUC %.4f",
						sets[j.set].Name, sets[j.set].Describe(), what, sc.Net.Accuracy, sc.Net.BalancedAccuracy, sc.Majority.Accuracy, sc.Net.AUC))
				}
				mu.Unlock()
			}
		}()
	}
	for _, j := range jobs {
		ch <- j
	}
	close(ch)
	wg.Wait()
	return res, firstErr
}

// rows returns the rows of program p: its early part, its late part, or all.
func (d *AblationData) rows(p int, early, late bool) []int32 {
	pr := &d.Programs[p]
	lo, hi := pr.First, pr.First+pr.Samples
	if !early {
		lo = pr.First + pr.Early
	}
	if !late {
		hi = pr.First + pr.Early
	}
	out := make([]int32, 0, hi-lo)
	for r := lo; r < hi; r++ {
		out = append(out, int32(r))
	}
	return out
}

// draw returns at most n of rows, at random (seeded), in their original order.
func draw(rows []int32, n int, seed uint64) []int32 {
	if n <= 0 || len(rows) <= n {
		return rows
	}
	rng := rand.New(rand.NewPCG(seed, 0x61626c6174696f6e)) // "ablation"
	idx := rng.Perm(len(rows))[:n]
	sort.Ints(idx)
	out := make([]int32, n)
	for i, k := range idx {
		out[i] = rows[k]
	}
	return out
}

// fill writes row r's inputs for set a into x (unstandardised).
func (d *AblationData) fill(a *AblationInputs, r int32, x []float32) {
	k := 0
	if a.Counts {
		copy(x, d.Counts[int(r)*features.NumBuckets:(int(r)+1)*features.NumBuckets])
		k = features.NumBuckets
	}
	ex := d.Extra[int(r)*NumExtras : (int(r)+1)*NumExtras]
	for _, e := range a.Extras {
		x[k] = ex[e]
		k++
	}
}

// runOne trains one net (held < 0: time-held-out; else without program held) and scores it.
func (d *AblationData) runOne(a AblationInputs, held int, s *AblationSettings) (AblationScore, error) {
	var train, sel, test []int32
	for p := range d.Programs {
		if p == held {
			continue
		}
		seed := s.Seed*1000 + uint64(p)
		train = append(train, draw(d.rows(p, true, false), s.MaxTrainPerProgram, seed)...)
		sel = append(sel, draw(d.rows(p, false, true), s.MaxSelectPerProgram, seed+500)...)
		if held < 0 {
			test = append(test, d.rows(p, false, true)...)
		}
	}
	if held >= 0 {
		test = d.rows(held, true, true)
	}
	net, err := d.train(&a, train, sel, s)
	if err != nil {
		return AblationScore{}, err
	}
	// Where the threshold and margin are chosen: time-held-out, on the scored rows themselves,
	// as Train does; leave-one-program-out, on the training programs' late rows, never on the
	// held-out program.
	choose := sel
	if held < 0 {
		choose = test
	}
	cl := d.Labels(choose)
	cp := net.probs(d, &a, choose)
	thr, _ := BestThreshold(cl, cp)
	thr = float64(float32(min(max(thr, 1e-6), 1-1e-6)))
	thrLogit := math.Log(thr / (1 - thr))
	conf := ChooseMargin(cl, threshold(cp, thr), logitsOf(cp), thrLogit, DefaultMinCoverage)

	tl := d.Labels(test)
	tp := cp
	if held >= 0 {
		tp = net.probs(d, &a, test)
	}
	pred := threshold(tp, thr)
	own, _ := BestThreshold(tl, tp)
	return AblationScore{
		Own:       Score(tl, threshold(tp, own), tp),
		Net:       Score(tl, pred, tp),
		Majority:  Majority(tl),
		Threshold: thr,
		Confident: ScoreConfident(tl, pred, logitsOf(tp), thrLogit, conf.Margin),
		BestEpoch: net.bestEpoch,
	}, nil
}

func logitsOf(probs []float64) []float64 {
	out := make([]float64, len(probs))
	for i, p := range probs {
		p = min(max(p, 1e-12), 1-1e-12)
		out[i] = math.Log(p / (1 - p))
	}
	return out
}

// Labels returns the labels of rows.
func (d *AblationData) Labels(rows []int32) []uint8 {
	out := make([]uint8, len(rows))
	for i, r := range rows {
		out[i] = d.Y[r]
	}
	return out
}

// ablNet is the net of Params for any input width, with its input standardisation.
type ablNet struct {
	in, hidden int
	w1         []float32 // in x hidden, row-major (gorgonia's layout, as Params)
	b1, w2     []float32
	b2         float32
	mean, std  []float32
	bestEpoch  int
}

func (p *ablNet) clone() *ablNet {
	q := *p
	q.w1 = append([]float32(nil), p.w1...)
	q.b1 = append([]float32(nil), p.b1...)
	q.w2 = append([]float32(nil), p.w2...)
	return &q
}

// logit of one standardised row, in float64 as Params.Logit.
func (p *ablNet) logit(x []float32, h []float64) float64 {
	H := p.hidden
	for k := range h[:H] {
		h[k] = float64(p.b1[k])
	}
	for j, xj := range x[:p.in] {
		if xj == 0 {
			continue
		}
		for k, w := range p.w1[j*H : (j+1)*H] {
			h[k] += float64(w) * float64(xj)
		}
	}
	z := float64(p.b2)
	for k, v := range h[:H] {
		if v > 0 {
			z += float64(p.w2[k]) * v
		}
	}
	return z
}

func (p *ablNet) standardize(x []float32) {
	for j := range x[:p.in] {
		x[j] = float32(model.Standardized(float64(x[j]), p.mean[j], p.std[j]))
	}
}

// probs returns P(yield) for rows, in parallel.
func (p *ablNet) probs(d *AblationData, a *AblationInputs, rows []int32) []float64 {
	out := make([]float64, len(rows))
	workers := max(1, min(runtime.GOMAXPROCS(0), len(rows)/4096))
	chunk := (len(rows) + workers - 1) / workers
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		lo, hi := w*chunk, min((w+1)*chunk, len(rows))
		wg.Add(1)
		go func() {
			defer wg.Done()
			x := make([]float32, p.in)
			h := make([]float64, p.hidden)
			for i := lo; i < hi; i++ {
				d.fill(a, rows[i], x)
				p.standardize(x)
				out[i] = sigmoid(p.logit(x, h))
			}
		}()
	}
	wg.Wait()
	return out
}

// train trains the net on the train rows as Train does (standardisation on them, class
// weights, He/Glorot-uniform start, seeded shuffle, Adam) and keeps the epoch with the lowest
// class-weighted loss on the sel rows.
func (d *AblationData) train(a *AblationInputs, train, sel []int32, s *AblationSettings) (*ablNet, error) {
	in := a.Width()
	n := len(train)
	if n == 0 || len(sel) == 0 {
		return nil, errors.New("no training or selection rows")
	}
	pos := 0
	for _, r := range train {
		pos += int(d.Y[r])
	}
	if pos == 0 || pos == n {
		return nil, fmt.Errorf("the %d training rows all have one label", n)
	}
	// The training matrix, standardised with its own mean and std (std 1 for a constant input).
	X := make([]float32, n*in)
	for i, r := range train {
		d.fill(a, r, X[i*in:(i+1)*in])
	}
	net := &ablNet{in: in, hidden: s.Hidden, mean: make([]float32, in), std: make([]float32, in)}
	for j := 0; j < in; j++ {
		var sum, sq float64
		for i := 0; i < n; i++ {
			sum += float64(X[i*in+j])
		}
		net.mean[j] = float32(sum / float64(n))
		for i := 0; i < n; i++ {
			dx := float64(X[i*in+j]) - float64(net.mean[j])
			sq += dx * dx
		}
		sd := math.Sqrt(sq / float64(n))
		if sd < 1e-6 {
			sd = 1
		}
		net.std[j] = float32(sd)
	}
	for i := 0; i < n; i++ {
		net.standardize(X[i*in : (i+1)*in])
	}

	wPos := float32(float64(n) / (2 * float64(pos)))
	wNeg := float32(float64(n) / (2 * float64(n-pos)))
	rng := rand.New(rand.NewPCG(s.Seed, 0x6d6c73636865642e))
	H := s.Hidden
	net.w1 = make([]float32, in*H)
	net.b1 = make([]float32, H)
	net.w2 = make([]float32, H)
	a1 := math.Sqrt(6.0 / float64(in))
	for i := range net.w1 {
		net.w1[i] = float32((2*rng.Float64() - 1) * a1)
	}
	a2 := math.Sqrt(6.0 / float64(H+1))
	for i := range net.w2 {
		net.w2[i] = float32((2*rng.Float64() - 1) * a2)
	}

	batch := min(s.BatchSize, n)
	gr, err := newAblGraph(batch, net)
	if err != nil {
		return nil, err
	}
	defer gr.vm.Close()
	solver := G.NewAdamSolver(G.WithLearnRate(s.LearnRate))
	grads := G.NodesToValueGrads(gr.learnables)
	selLabels := d.Labels(sel)
	order := make([]int32, n)
	for i := range order {
		order[i] = int32(i)
	}
	var best *ablNet
	bestLoss := math.Inf(1)
	for epoch := 1; epoch <= s.Epochs; epoch++ {
		rng.Shuffle(n, func(i, j int) { order[i], order[j] = order[j], order[i] })
		for b := 0; b < n/batch; b++ {
			for i, r := range order[b*batch : (b+1)*batch] {
				copy(gr.xBuf[i*in:(i+1)*in], X[int(r)*in:(int(r)+1)*in])
				y := d.Y[train[r]]
				gr.yBuf[i] = float32(y)
				gr.wtBuf[i] = wNeg
				if y == 1 {
					gr.wtBuf[i] = wPos
				}
			}
			if err := gr.run(); err != nil {
				return nil, fmt.Errorf("epoch %d: %w", epoch, err)
			}
			if err := solver.Step(grads); err != nil {
				return nil, fmt.Errorf("epoch %d: adam step: %w", epoch, err)
			}
		}
		gr.sync()
		cur := net.clone()
		cur.w1, cur.b1, cur.w2, cur.b2 = append([]float32(nil), gr.w1V...), append([]float32(nil), gr.b1V...), append([]float32(nil), gr.w2V...), gr.b2V[0]
		loss := weightedLoss(selLabels, cur.probs(d, a, sel), float64(wPos), float64(wNeg))
		if math.IsNaN(loss) {
			return nil, fmt.Errorf("epoch %d: loss is NaN", epoch)
		}
		if loss < bestLoss {
			bestLoss, best = loss, cur
			best.bestEpoch = epoch
		}
	}
	return best, nil
}

// ablGraph is graph (net.go) for any input width: the same expression, loss and gradients.
type ablGraph struct {
	g                  *G.ExprGraph
	x, y, wt           *G.Node
	w1, b1, w2, b2     *G.Node
	xT, yT, wtT        *tensor.Dense
	vm                 G.VM
	learnables         G.Nodes
	xBuf, yBuf, wtBuf  []float32
	w1V, b1V, w2V, b2V []float32
}

func newAblGraph(batch int, p *ablNet) (*ablGraph, error) {
	in, H := p.in, p.hidden
	gr := &ablGraph{g: G.NewGraph()}
	g := gr.g
	mat := func(name string, buf []float32, shape ...int) (*G.Node, *tensor.Dense) {
		t := tensor.New(tensor.WithShape(shape...), tensor.WithBacking(buf))
		return G.NewMatrix(g, tensor.Float32, G.WithShape(shape...), G.WithName(name), G.WithValue(t)), t
	}
	gr.xBuf = make([]float32, batch*in)
	gr.yBuf = make([]float32, batch)
	gr.wtBuf = make([]float32, batch)
	gr.x, gr.xT = mat("x", gr.xBuf, batch, in)
	gr.y, gr.yT = mat("y", gr.yBuf, batch, 1)
	gr.wt, gr.wtT = mat("wt", gr.wtBuf, batch, 1)
	gr.w1V = append([]float32(nil), p.w1...)
	gr.b1V = append([]float32(nil), p.b1...)
	gr.w2V = append([]float32(nil), p.w2...)
	gr.b2V = []float32{p.b2}
	gr.w1, _ = mat("w1", gr.w1V, in, H)
	gr.b1, _ = mat("b1", gr.b1V, 1, H)
	gr.w2, _ = mat("w2", gr.w2V, H, 1)
	gr.b2, _ = mat("b2", gr.b2V, 1, 1)
	gr.learnables = G.Nodes{gr.w1, gr.b1, gr.w2, gr.b2}

	z, err := logitGraph(gr.x, gr.w1, gr.b1, gr.w2, gr.b2)
	if err != nil {
		return nil, err
	}
	// BCE from the logit, stable for any z: softplus(z) - y*z.
	sp, err := G.Softplus(z)
	if err != nil {
		return nil, fmt.Errorf("build graph: softplus: %w", err)
	}
	yz, err := G.HadamardProd(gr.y, z)
	if err != nil {
		return nil, fmt.Errorf("build graph: y*z: %w", err)
	}
	bce, err := G.Sub(sp, yz)
	if err != nil {
		return nil, fmt.Errorf("build graph: bce: %w", err)
	}
	wbce, err := G.HadamardProd(gr.wt, bce)
	if err != nil {
		return nil, fmt.Errorf("build graph: weights: %w", err)
	}
	loss, err := G.Mean(wbce)
	if err != nil {
		return nil, fmt.Errorf("build graph: mean: %w", err)
	}
	if _, err = G.Grad(loss, gr.learnables...); err != nil {
		return nil, fmt.Errorf("build graph: gradients: %w", err)
	}
	gr.vm = G.NewTapeMachine(g, G.BindDualValues(gr.learnables...))
	return gr, nil
}

func (gr *ablGraph) run() error {
	defer gr.vm.Reset()
	for _, l := range []struct {
		n *G.Node
		v *tensor.Dense
	}{{gr.x, gr.xT}, {gr.y, gr.yT}, {gr.wt, gr.wtT}} {
		if err := G.Let(l.n, l.v); err != nil {
			return fmt.Errorf("bind %s: %w", l.n.Name(), err)
		}
	}
	if err := gr.vm.RunAll(); err != nil {
		return fmt.Errorf("run graph: %w", err)
	}
	return nil
}

func (gr *ablGraph) sync() {
	gr.w1V, gr.b1V, gr.w2V, gr.b2V = valueOf(gr.w1), valueOf(gr.b1), valueOf(gr.w2), valueOf(gr.b2)
}

// FormatAblation writes the results as markdown: the data, a summary table (time-held-out and
// leave-one-program-out means) and per-program leave-one-program-out tables.
func FormatAblation(w io.Writer, d *AblationData, res []AblationResult) {
	fmt.Fprintf(w, "Horizon %s; outcomes known %s.\n\n", fmtNs(d.HorizonNs),
		map[bool]string{false: "a horizon after their sample", true: "at R's switch-out (within the horizon), else a horizon after"}[d.AtLeave])
	fmt.Fprintf(w, "| program | samples | positive | duration | time-held-out rows | R with a known stint | overlapping stints |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: |\n")
	for _, p := range d.Programs {
		fmt.Fprintf(w, "| %s | %d | %.1f%% | %.1f s | %d | %.1f%% | %d |\n", p.Name, p.Samples, 100*float64(p.Positives)/float64(p.Samples),
			float64(p.DurationNs)/1e9, p.Samples-p.Early, 100*float64(p.Warm)/float64(p.Samples), p.Overlaps)
	}
	fmt.Fprintf(w, "\nEach extra input alone as a score, per program (ROC AUC over all its samples; 0.5: no information, below 0.5: the opposite direction):\n\n| program | short on-CPU time | short stint average | high voluntary average | short off-CPU gap |\n| --- | ---: | ---: | ---: | ---: |\n")
	for p := range d.Programs {
		rows := d.rows(p, true, true)
		labels := d.Labels(rows)
		auc := func(e int, sign float64) float64 {
			sc := make([]float64, len(rows))
			for i, r := range rows {
				sc[i] = sign * float64(d.Extra[int(r)*NumExtras+e])
			}
			return AUC(labels, sc)
		}
		fmt.Fprintf(w, "| %s | %.3f | %.3f | %.3f | %.3f |\n", d.Programs[p].Name, auc(ExtraOnCPU, -1), auc(ExtraStint, -1), auc(ExtraVol, 1), auc(ExtraGap, -1))
	}
	if len(res) == 0 {
		return
	}
	lopo := len(d.Programs) > 1
	fmt.Fprintf(w, "\n| set | inputs | n | time: acc | bal | AUC | majority |")
	if lopo {
		fmt.Fprintf(w, " LOPO: acc | bal | AUC | majority | min bal | bal at own threshold | acc >= maj | bal >= 0.70 | coverage | conf acc >= conf base |")
	}
	fmt.Fprintf(w, "\n| --- | --- | ---: | ---: | ---: | ---: | ---: |")
	if lopo {
		fmt.Fprintf(w, " ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
	}
	fmt.Fprintln(w)
	for _, r := range res {
		t := r.Time
		fmt.Fprintf(w, "| %s | %s | %d | %.4f | %.4f | %.4f | %.4f |", r.Inputs.Name, r.Inputs.Describe(), r.Inputs.Width(),
			t.Net.Accuracy, t.Net.BalancedAccuracy, t.Net.AUC, t.Majority.Accuracy)
		if lopo {
			var acc, bal, auc, maj, cov, own float64
			minBal := math.Inf(1)
			beat, bal70, confOK := 0, 0, 0
			for _, l := range r.LOPO {
				acc += l.Net.Accuracy
				bal += l.Net.BalancedAccuracy
				auc += l.Net.AUC
				own += l.Own.BalancedAccuracy
				maj += l.Majority.Accuracy
				cov += l.Confident.Coverage
				minBal = min(minBal, l.Net.BalancedAccuracy)
				if l.Net.Accuracy >= l.Majority.Accuracy {
					beat++
				}
				if l.Net.BalancedAccuracy >= 0.70 {
					bal70++
				}
				if l.Confident.Coverage >= 0.5 && l.Confident.Accuracy >= l.Confident.BaselineAccuracy {
					confOK++
				}
			}
			k := float64(len(r.LOPO))
			fmt.Fprintf(w, " %.4f | %.4f | %.4f | %.4f | %.4f | %.4f | %d/%d | %d/%d | %.3f | %d/%d |", acc/k, bal/k, auc/k, maj/k, minBal, own/k,
				beat, len(r.LOPO), bal70, len(r.LOPO), cov/k, confOK, len(r.LOPO))
		}
		fmt.Fprintln(w)
	}
	if !lopo {
		return
	}
	for _, what := range []string{"balanced accuracy", "accuracy (majority class)", "AUC", "balanced accuracy at the held-out program's own best threshold", "coverage, confident accuracy (its majority)"} {
		fmt.Fprintf(w, "\nLeave-one-program-out, %s of the net trained on the other programs:\n\n| set |", what)
		for _, p := range d.Programs {
			fmt.Fprintf(w, " %s |", p.Name)
		}
		fmt.Fprintf(w, "\n| --- |%s\n", strings.Repeat(" ---: |", len(d.Programs)))
		for _, r := range res {
			fmt.Fprintf(w, "| %s |", r.Inputs.Name)
			for _, l := range r.LOPO {
				switch what {
				case "balanced accuracy":
					fmt.Fprintf(w, " %.3f |", l.Net.BalancedAccuracy)
				case "AUC":
					fmt.Fprintf(w, " %.3f |", l.Net.AUC)
				case "balanced accuracy at the held-out program's own best threshold":
					fmt.Fprintf(w, " %.3f |", l.Own.BalancedAccuracy)
				case "accuracy (majority class)":
					fmt.Fprintf(w, " %.3f (%.3f) |", l.Net.Accuracy, l.Majority.Accuracy)
				default:
					fmt.Fprintf(w, " %.2f, %.3f (%.3f) |", l.Confident.Coverage, l.Confident.Accuracy, l.Confident.BaselineAccuracy)
				}
			}
			fmt.Fprintln(w)
		}
	}
}
