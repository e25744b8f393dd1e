package model

import (
	"errors"
	"fmt"
	"math"
	"math/bits"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/mlsched/mlsched/features"
)

// Online adaptation (docs/TRAINING.md, "Online adaptation"): a Learner holds a copy of a
// model's net and fine-tunes it, one labelled sample at a time, in plain Go.
//
// Algorithm: plain SGD on the class-weighted binary cross-entropy of the logit,
// softplus(z) - y*z (weights 0.5/p for positives and 0.5/(1-p) for negatives, p a running
// estimate of the positive rate, as training weights each class to half the loss), plus an L2
// pull (lambda/2)*|theta - theta0|^2 toward the starting parameters theta0, with the gradient's
// norm clipped. The model's normalisation (Mean, Std) and threshold are kept as they are: the
// net adapts, its inputs mean what they meant in training, and a threshold chosen for balanced
// accuracy on a class-balanced loss stays meaningful while the loss stays class-balanced.
//
// Cost. A sample has few nonzero counts (5-15 of 64), but its standardised inputs are dense:
// x_j = (log1p(v_j) - mean_j)/std_j = c_j + s_j with c_j = -mean_j/std_j for every input and
// s_j = log1p(v_j)/std_j nonzero only where v_j is. The learner keeps the first layer factored,
//
//	W1 = W1_0 + alpha * (E + g c^T)
//
// with a scalar alpha (the L2 pull's decay of W1 - W1_0, all weights at once), a vector g (the
// part of every gradient that lies along c) and a matrix E that only the nonzero inputs'
// columns update; with the products W1_0 c and E c kept up to date, one Learn costs
// O(Hidden * nonzero inputs), not O(Hidden * 64). When alpha becomes small it is folded into E
// and g (O(Hidden * 64), once every ~ln(1e4)/(lr*lambda) samples). This is exactly SGD on the
// dense net (TestLearnerMatchesDenseSGD compares the two).

// Defaults of LearnerConfig. The step was chosen on the default mix's leave-one-program-out
// replays (docs/TRAINING.md, "Choosing the learner's step"): each program replayed through a
// model that never saw it, steps 0.01 to 0.0003; 0.003 and 0.001 were best (mean prequential
// gain over the majority within 0.001 of each other), 0.01 with the threshold kept lost 3 to
// 17 points on three programs, and of the two the smaller step moves the validated net less.
const (
	DefaultLearnRate = 0.001
	DefaultL2        = 1e-3
	// DefaultBudget is the learns per second Offer allows. 2% of one core at 50,000 outcomes/s
	// is 400 ns per outcome; one Learn of a 16-unit net costs ~700 ns of CPU on this project's
	// (loaded) machine (BenchmarkLearnerLearn), so at most ~30,000 learns/s fit, and 20,000
	// leave room for the dropped offers and a slower machine: BenchmarkLearnerOffer50k
	// measures ~1.35% of a core (docs/TRAINING.md, "Online adaptation").
	DefaultBudget = 20000
	// DefaultClipNorm bounds the norm of one sample's gradient.
	DefaultClipNorm = 10
	// DefaultPosRateSamples is the time constant, in learned samples, of the positive-rate
	// estimate that weights the classes.
	DefaultPosRateSamples = 4096
	// BudgetBurstNs: Offer may learn up to this much of its budget at once after a quiet spell.
	BudgetBurstNs = 10_000_000
)

// LearnerConfig are the learner's hyperparameters. DefaultLearnerConfig returns the defaults;
// NewLearner takes the values as given.
type LearnerConfig struct {
	LearnRate float64 // SGD step size, >= 0 (0: the net never changes)
	L2        float64 // lambda of the pull toward the starting parameters, >= 0
	// Budget is how many samples per second (of the caller's clock, the timestamps it gives
	// Offer) the learner learns from at most; Offer drops the rest. 0: no limit.
	Budget float64
	// ClipNorm bounds the Euclidean norm of one sample's gradient (> 0).
	ClipNorm float64
	// PosRateSamples is the time constant of the running positive rate (>= 1 samples).
	PosRateSamples float64
	// ThresholdWindow, when > 0, re-chooses the decision threshold on the last ThresholdWindow
	// learned samples (each scored by the net just before it learned from it), every
	// ThresholdWindow/8 learns once the window is full, for ThresholdFor. 0 keeps the model's
	// threshold. At most MaxThresholdWindow.
	ThresholdWindow int
	ThresholdFor    ThresholdObjective
}

// ThresholdObjective is what a re-chosen threshold maximises.
type ThresholdObjective int

const (
	ThresholdBalanced ThresholdObjective = iota // balanced accuracy (as training chooses by default)
	ThresholdAccuracy                           // accuracy
)

// The threshold window bins each learned sample's logit: thrBins bins of 1/thrScale over
// [-thrRange, thrRange) (the outermost bins also take everything beyond), so that choosing a
// threshold is a scan of the bins, not a sort; a chosen threshold is a bin edge.
const (
	thrRange           = 8
	thrScale           = 16
	thrBins            = 2 * thrRange * thrScale
	MaxThresholdWindow = 1 << 20
)

// DefaultThresholdWindow is the threshold window `eval --online` and `run --adapt` use when
// they re-choose the threshold: at the learner's default budget about half a second of
// learned samples, long enough that a bin edge is chosen on thousands of labels.
const DefaultThresholdWindow = 8192

// DefaultLearnerConfig returns the default hyperparameters.
func DefaultLearnerConfig() LearnerConfig {
	return LearnerConfig{LearnRate: DefaultLearnRate, L2: DefaultL2, Budget: DefaultBudget,
		ClipNorm: DefaultClipNorm, PosRateSamples: DefaultPosRateSamples}
}

// ErrLearnerConfig is returned by NewLearner for hyperparameters out of range.
var ErrLearnerConfig = errors.New("bad online learner configuration")

func (c *LearnerConfig) validate() error {
	bad := func(name string, v float64, ok bool) error {
		if ok && !math.IsNaN(v) && !math.IsInf(v, 0) {
			return nil
		}
		name, want, _ := strings.Cut(name, " (")
		if want != "" {
			return fmt.Errorf("%s = %v (%s: %w", name, v, want, ErrLearnerConfig)
		}
		return fmt.Errorf("%s = %v: %w", name, v, ErrLearnerConfig)
	}
	return errors.Join(
		bad("learning rate (want 0..10)", c.LearnRate, c.LearnRate >= 0 && c.LearnRate <= 10),
		// The pull toward the base weights must not overshoot: l2 * rate < 1, judged only for
		// a valid rate (a bad rate is its own error, not l2's).
		bad("l2 (want >= 0, l2 * learning rate < 1)", c.L2, c.L2 >= 0 && (!(c.LearnRate >= 0 && c.LearnRate <= 10) || c.L2*c.LearnRate < 1)),
		bad("budget", c.Budget, c.Budget >= 0),
		bad("clip norm", c.ClipNorm, c.ClipNorm > 0),
		bad("positive-rate samples", c.PosRateSamples, c.PosRateSamples >= 1),
		bad("threshold window", float64(c.ThresholdWindow), c.ThresholdWindow >= 0 && c.ThresholdWindow <= MaxThresholdWindow),
		bad("threshold objective", float64(c.ThresholdFor), c.ThresholdFor == ThresholdBalanced || c.ThresholdFor == ThresholdAccuracy),
	)
}

// Learner fine-tunes a copy of a model on labelled samples. Learn and Offer never allocate.
// A Learner is not safe for concurrent use: one goroutine learns, predicts and snapshots (the
// daemon's learner goroutine; Model's snapshot can be handed to other goroutines).
type Learner struct {
	cfg  LearnerConfig
	base *Model // a private copy of the starting model (never changed)
	n, h int

	invStd []float64 // 1/Std[j]
	c      []float64 // -Mean[j]/Std[j]: the standardised input of a zero count
	cc     float64   // c.c

	// First layer, input-major ([j*h+k]): W1 = W1_0 + alpha*(E + g c^T).
	w1    []w1pair
	g     []float64 // [h]
	p0    []float64 // [h] W1_0 c
	q     []float64 // [h] E c
	alpha float64

	b1, b1_0 []float64 // [h]
	w2, w2_0 []float64 // [h]
	b2, b2_0 float64

	logitThreshold float64

	// Scratch, sized once.
	a      []float64 // [h] pre-activations
	delta  []float64 // [h]
	act    []int32   // [0:h] the active units of the current input
	nzIdx  [NumInputs]uint8
	nzS    [NumInputs]float64
	nnz    int
	sc, ss float64 // s.c and s.s of the current input

	posRate float64

	// The threshold window (ThresholdWindow > 0): a ring of the last learned samples' logit
	// bins (the label in bit 15), and per bin how many of them are positive and negative.
	thrRing          []uint16
	thrPos, thrNeg   [thrBins]uint32
	thrNext, thrFill int
	thrSince         int
	rechosen         uint64

	learned, offered, dropped uint64
	tokens                    float64
	lastNs                    uint64
	clockSet                  bool
}

// w1pair is one first-layer weight: the starting W1_0[k][j] and E[k][j].
type w1pair struct{ w0, e float64 }

// NewLearner returns a learner that starts from a copy of m, which must be valid.
func NewLearner(m *Model, cfg LearnerConfig) (*Learner, error) {
	if err := m.Validate(); err != nil {
		return nil, fmt.Errorf("online learner: %w", err)
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	n, h := m.Inputs, m.Hidden
	l := &Learner{
		cfg: cfg, base: m.clone(), n: n, h: h,
		invStd: make([]float64, n), c: make([]float64, n),
		w1: make([]w1pair, n*h),
		g:  make([]float64, h), p0: make([]float64, h), q: make([]float64, h), alpha: 1,
		b1: make([]float64, h), b1_0: make([]float64, h),
		w2: make([]float64, h), w2_0: make([]float64, h),
		b2: float64(m.B2), b2_0: float64(m.B2),
		logitThreshold: math.Log(float64(m.Threshold) / (1 - float64(m.Threshold))),
		a:              make([]float64, h), delta: make([]float64, h), act: make([]int32, 0, h),
		posRate: 0.5, tokens: 1,
	}
	for j := range n {
		l.invStd[j] = 1 / float64(m.Std[j])
		l.c[j] = -float64(m.Mean[j]) / float64(m.Std[j])
		l.cc += l.c[j] * l.c[j]
	}
	for k := range h {
		for j := range n {
			w := float64(m.W1[k*n+j])
			l.w1[j*h+k].w0 = w
			l.p0[k] += w * l.c[j]
		}
		l.b1[k], l.b1_0[k] = float64(m.B1[k]), float64(m.B1[k])
		l.w2[k], l.w2_0[k] = float64(m.W2[k]), float64(m.W2[k])
	}
	if d := m.Meta.Data; d.Samples > 0 {
		l.posRate = float64(d.Positives) / float64(d.Samples)
	}
	if cfg.ThresholdWindow > 0 {
		l.thrRing = make([]uint16, cfg.ThresholdWindow)
	}
	return l, nil
}

// clone is a deep copy of m.
func (m *Model) clone() *Model {
	c := *m
	c.Mean = append([]float32(nil), m.Mean...)
	c.Std = append([]float32(nil), m.Std...)
	c.W1 = append([]float32(nil), m.W1...)
	c.B1 = append([]float32(nil), m.B1...)
	c.W2 = append([]float32(nil), m.W2...)
	c.Meta.Metrics.Baselines = append([]Baseline(nil), m.Meta.Metrics.Baselines...)
	c.Meta.Data.Traces = append([]string(nil), m.Meta.Data.Traces...)
	c.Meta.Notes = make(map[string]string, len(m.Meta.Notes))
	for k, v := range m.Meta.Notes {
		c.Meta.Notes[k] = v
	}
	return &c
}

// load reads the sparse part of the standardised input of in: the nonzero inputs' s_j (the
// counts', then the extras'), s.c and s.s.
func (l *Learner) load(in *[NumInputs]uint32) {
	l.nnz, l.sc, l.ss = 0, 0, 0
	add := func(j int, s float64) {
		l.nzIdx[l.nnz%NumInputs] = uint8(j)
		l.nzS[l.nnz%NumInputs] = s
		l.nnz++
		l.sc += s * l.c[j]
		l.ss += s * s
	}
	for nz := nonzeroMask(features.Counts(in)); nz != 0; nz &= nz - 1 {
		j := bits.TrailingZeros64(nz) % features.NumBuckets
		add(j, float64(log1pFixed(in[j]))*l.invStd[j])
	}
	for j := features.NumBuckets; j < NumInputs; j++ {
		if in[j] != 0 {
			add(j, float64(extraFloat(in[j]))*l.invStd[j])
		}
	}
}

// forward computes the pre-activations of the loaded input into l.a and returns the logit.
func (l *Learner) forward() float64 {
	h := l.h
	a := l.a[:h]
	alpha := l.alpha
	cx := l.cc + l.sc
	g, p0, q, b1 := l.g[:h], l.p0[:h], l.q[:h], l.b1[:h]
	for k := range a {
		a[k] = b1[k] + p0[k] + alpha*(q[k]+g[k]*cx)
	}
	for i := range l.nnz {
		j, s := int(l.nzIdx[i%NumInputs]), l.nzS[i%NumInputs]
		col := l.w1[j*h:][:len(a)]
		for k := range a {
			a[k] += (col[k].w0 + alpha*col[k].e) * s
		}
	}
	z := l.b2
	w2 := l.w2[:len(a)]
	for k, v := range a {
		if v > 0 {
			z += w2[k] * v
		}
	}
	return z
}

// Logit returns the current net's logit for the counts in (float64, the model's
// normalisation; log1p by the same table as Predictor).
func (l *Learner) Logit(in *[NumInputs]uint32) float64 {
	l.load(in)
	return l.forward()
}

// KeepLocal reports whether the current net's probability for in reaches the model's
// threshold (decided on the logit).
func (l *Learner) KeepLocal(in *[NumInputs]uint32) bool {
	return l.Logit(in) >= l.logitThreshold
}

// Learn takes one SGD step on the sample (in, label): label true if R yielded within the
// horizon. It does not allocate.
func (l *Learner) Learn(in *[NumInputs]uint32, label bool) {
	l.load(in)
	z := l.forward()
	y := 0.0
	if label {
		y = 1
	}
	// Class weights from the running positive rate (before this sample), clamped.
	pr := min(max(l.posRate, 0.01), 0.99)
	w := 0.5 / (1 - pr)
	if label {
		w = 0.5 / pr
	}
	l.posRate += (y - l.posRate) / l.cfg.PosRateSamples
	dz := w * (sigmoid64(z) - y) // d loss / d z
	h := l.h
	a, w2, delta := l.a[:h], l.w2[:h], l.delta[:h]
	// Gradient norm: dz^2 (1 + |h|^2) for b2 and W2, |delta|^2 (1 + |x|^2) for b1 and W1.
	var hh, dd float64
	for k, v := range a {
		if v > 0 {
			hh += v * v
			dd += w2[k] * w2[k]
		}
	}
	xx := l.cc + 2*l.sc + l.ss
	norm := math.Abs(dz) * math.Sqrt(1+hh+dd*(1+xx))
	if norm > l.cfg.ClipNorm {
		dz *= l.cfg.ClipNorm / norm
	}
	lr := l.cfg.LearnRate
	decay := 1 - lr*l.cfg.L2
	act := l.act[:0]
	for k, v := range a {
		delta[k] = 0
		if v > 0 {
			delta[k] = dz * w2[k]
			act = append(act, int32(k))
		}
	}
	// Output layer and biases: theta - theta0 <- decay*(theta - theta0) - lr*grad.
	b1, b10, w20 := l.b1[:h], l.b1_0[:h], l.w2_0[:h]
	for k, v := range a {
		hk := max(v, 0)
		w2[k] = w20[k] + decay*(w2[k]-w20[k]) - lr*dz*hk
		b1[k] = b10[k] + decay*(b1[k]-b10[k]) - lr*delta[k]
	}
	l.b2 = l.b2_0 + decay*(l.b2-l.b2_0) - lr*dz
	// First layer, factored: alpha' = decay*alpha, then -lr*delta x^T in units of alpha'.
	l.alpha *= decay
	beta := lr / l.alpha
	g, q := l.g[:h], l.q[:h]
	for k, d := range delta {
		g[k] -= beta * d
		q[k] -= beta * d * l.sc
	}
	// Only the active units have a gradient.
	for i := range l.nnz {
		j, s := int(l.nzIdx[i%NumInputs]), l.nzS[i%NumInputs]
		col := l.w1[j*h:][:len(delta)]
		bs := beta * s
		for _, k := range act {
			col[k].e -= bs * delta[k]
		}
	}
	if l.alpha < 1e-4 {
		l.fold()
	}
	if l.thrRing != nil {
		l.window(z, label)
	}
	l.learned++
}

// window adds a learned sample's logit (before the step) to the threshold window and
// re-chooses the threshold when it is due.
func (l *Learner) window(z float64, label bool) {
	b := uint16(min(max((z+thrRange)*thrScale, 0), thrBins-1))
	if label {
		b |= 1 << 15
	}
	if l.thrFill == len(l.thrRing) {
		old := l.thrRing[l.thrNext]
		if old>>15 != 0 {
			l.thrPos[old&(1<<15-1)%thrBins]--
		} else {
			l.thrNeg[old%thrBins]--
		}
	} else {
		l.thrFill++
	}
	l.thrRing[l.thrNext] = b
	if label {
		l.thrPos[b&(1<<15-1)%thrBins]++
	} else {
		l.thrNeg[b%thrBins]++
	}
	l.thrNext = (l.thrNext + 1) % len(l.thrRing)
	l.thrSince++
	if l.thrFill == len(l.thrRing) && l.thrSince >= max(1, len(l.thrRing)/8) {
		l.thrSince = 0
		l.rechoose()
	}
}

// rechoose sets the threshold to the bin edge that maximises the objective on the window
// (deciding KeepLocal for the logits at or above it); among equal ones, the closest to the
// current threshold. With one class only in the window, balanced accuracy says nothing: the
// threshold stays.
func (l *Learner) rechoose() {
	var pos, neg float64
	for i := range thrBins {
		pos += float64(l.thrPos[i])
		neg += float64(l.thrNeg[i])
	}
	balanced := l.cfg.ThresholdFor == ThresholdBalanced
	if balanced && (pos == 0 || neg == 0) {
		return
	}
	// Cut c: KeepLocal iff bin >= c. TP = positives in bins >= c, TN = negatives below c.
	tp, tn := pos, 0.0
	best, bestCut, bestDist := math.Inf(-1), 0, math.Inf(1)
	for c := 0; c <= thrBins; c++ {
		if c > 0 {
			tp -= float64(l.thrPos[c-1])
			tn += float64(l.thrNeg[c-1])
		}
		v := tp + tn
		if balanced {
			v = tp/pos + tn/neg
		}
		edge := float64(c)/thrScale - thrRange
		dist := math.Abs(edge - l.logitThreshold)
		if v > best+1e-12 || (v > best-1e-12 && dist < bestDist) {
			best, bestCut, bestDist = v, c, dist
		}
	}
	l.logitThreshold = float64(bestCut)/thrScale - thrRange
	l.rechosen++
}

// Threshold returns the current decision threshold (a probability): the model's, or the last
// one chosen on the window.
func (l *Learner) Threshold() float64 { return sigmoid64(l.logitThreshold) }

// fold multiplies alpha into E, g and q, so that alpha is 1 again.
func (l *Learner) fold() {
	for i := range l.w1 {
		l.w1[i].e *= l.alpha
	}
	for k := range l.g {
		l.g[k] *= l.alpha
		l.q[k] *= l.alpha
	}
	l.alpha = 1
}

// Offer gives the learner a labelled sample whose label became known at nowNs (the caller's
// monotonic clock, in ns). It learns from it if the budget allows (at most Budget samples per
// second of that clock, up to BudgetBurstNs of budget at once) and reports whether it did.
// It does not allocate.
func (l *Learner) Offer(nowNs uint64, in *[NumInputs]uint32, label bool) bool {
	l.offered++
	if b := l.cfg.Budget; b > 0 {
		if l.clockSet && nowNs > l.lastNs {
			burst := max(1, b*BudgetBurstNs/1e9)
			l.tokens = min(burst, l.tokens+float64(nowNs-l.lastNs)*b/1e9)
		}
		if !l.clockSet || nowNs > l.lastNs {
			l.lastNs, l.clockSet = nowNs, true
		}
		if l.tokens < 1 {
			l.dropped++
			return false
		}
		l.tokens--
	}
	l.Learn(in, label)
	return true
}

// Learned is the number of samples learned from; Offered and Dropped count Offer's calls and
// the samples the budget dropped.
func (l *Learner) Learned() uint64 { return l.learned }
func (l *Learner) Offered() uint64 { return l.offered }
func (l *Learner) Dropped() uint64 { return l.dropped }

// Config returns the learner's hyperparameters.
func (l *Learner) Config() LearnerConfig { return l.cfg }

// Notes the snapshot adds to Meta.Notes.
const (
	NoteOnlineLearned     = "online_learned"      // samples learned from
	NoteOnlineLearnRate   = "online_lr"           // LearnerConfig.LearnRate
	NoteOnlineL2          = "online_l2"           // LearnerConfig.L2
	NoteOnlineBudget      = "online_budget"       // LearnerConfig.Budget (learns/s; 0: all)
	NoteOnlineBaseCreated = "online_base_created" // the starting model's creation (RFC 3339)
	NoteOnlinePosRate     = "online_pos_rate"     // the running positive rate
	NoteOnlineThreshold   = "online_threshold"    // how the threshold was re-chosen, if it was
)

// Model returns a snapshot of the current net as a new, valid model: the starting model's
// normalisation, threshold, horizon and training data summary, the current weights (clamped
// to the format's range), metrics NaN (the starting model's held-out figures no longer
// describe it), the creation time now, and notes saying how it was adapted. It allocates.
func (l *Learner) Model() *Model {
	m := l.base.clone()
	n, h := l.n, l.h
	clamp := func(v float64) float32 {
		if math.IsNaN(v) {
			return 0
		}
		return float32(min(max(v, -MaxAbsWeight), MaxAbsWeight))
	}
	for k := range h {
		for j := range n {
			i := j*h + k
			m.W1[k*n+j] = clamp(l.w1[i].w0 + l.alpha*(l.w1[i].e+l.g[k]*l.c[j]))
		}
		m.B1[k], m.W2[k] = clamp(l.b1[k]), clamp(l.w2[k])
	}
	m.B2 = clamp(l.b2)
	if l.rechosen > 0 {
		m.Threshold = float32(min(max(l.Threshold(), 1e-6), 1-1e-6))
	}
	nan := math.NaN()
	m.Meta.Metrics = Metrics{Accuracy: nan, BalancedAccuracy: nan, Precision: nan, Recall: nan, AUC: nan}
	m.Meta.CreatedUnixNs = time.Now().UnixNano()
	notes := map[string]string{
		NoteOnlineLearned:     strconv.FormatUint(l.learned, 10),
		NoteOnlineLearnRate:   strconv.FormatFloat(l.cfg.LearnRate, 'g', -1, 64),
		NoteOnlineL2:          strconv.FormatFloat(l.cfg.L2, 'g', -1, 64),
		NoteOnlineBudget:      strconv.FormatFloat(l.cfg.Budget, 'g', -1, 64),
		NoteOnlineBaseCreated: time.Unix(0, l.base.Meta.CreatedUnixNs).UTC().Format(time.RFC3339Nano),
		NoteOnlinePosRate:     strconv.FormatFloat(l.posRate, 'f', 4, 64),
	}
	if l.cfg.ThresholdWindow > 0 {
		obj := "balanced"
		if l.cfg.ThresholdFor == ThresholdAccuracy {
			obj = "accuracy"
		}
		notes[NoteOnlineThreshold] = fmt.Sprintf("max %s on the last %d learned, re-chosen %d times; the starting model's %.4f",
			obj, l.cfg.ThresholdWindow, l.rechosen, l.base.Threshold)
	}
	// Keep the starting model's notes (its training), as many as fit with these.
	keys := make([]string, 0, len(m.Meta.Notes))
	for k := range m.Meta.Notes {
		if _, ours := notes[k]; !ours {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	for _, k := range keys[:min(len(keys), MaxListLen-len(notes))] {
		notes[k] = m.Meta.Notes[k]
	}
	m.Meta.Notes = notes
	return m
}
