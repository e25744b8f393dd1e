package sched

import (
	"fmt"
	"io"
	"math"
	"runtime"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mlsched/mlsched/features"
	"github.com/mlsched/mlsched/model"
	"golang.org/x/sys/unix"
)

// Online adaptation in `mlsched run` (--adapt): an Adapter fine-tunes a copy of the active net
// (model.Learner, plain Go) on the live outcome stream, and promotes a copy of it into BPF
// (bpf.Sched.SetNet) when its kernel form has beaten the active net and the majority class on
// later outcomes than it learned from. It is never in the decision path: BPF decides every
// wakeup; the dispatch loop scores the samples and hands the adapter the outcomes it may use.
//
// Which outcomes. A decision changes the label it is judged by: a waking task W migrated to an
// idle CPU can answer R before R blocks, a W kept behind R cannot. The outcome of a wakeup
// placed by the active net's own verdict is therefore biased toward that verdict, and would
// favour the active net over any candidate. The adapter takes only the outcomes whose action did
// not follow the verdict (Decider.unbiased): the exploration outcomes (--explore: the action was
// drawn at random in BPF, MLS_WAKE_EXPLORE), and the outcomes of wakeups the base queue placed
// whatever the verdict (--shadow; the guard holding the base queue). On those the label does not
// depend on either net's verdict, so the active net, a candidate and the constant answers are
// judged on the same labels, which none of them influenced: a paired comparison. The learner
// learns from the same outcomes. (Importance weighting of the other outcomes would not add
// information at these rates: with exploration q among the scored decisions, an outcome whose
// action followed the verdict gets weight 1/2 / (1 - q/2) and one whose action went against it
// 1/q, and the weighted estimate has a larger variance than the exploration outcomes alone.)
//
// Time slices. Outcomes are cut into slices of at least SliceOutcomes outcomes and SliceTime of
// stream time. At the end of slice k the learner's current net is frozen as the candidate: its
// model snapshot and its kernel form (the integer net BPF would run). During slice k+1 the
// candidate's kernel-form verdict on each outcome's features (KernelForm.KeepLocal, bit for bit
// what BPF would decide) is scored beside the active net's (BPF's own verdict, carried by the
// sample) and the label, while the learner goes on learning from those outcomes; at the end of
// slice k+1 the candidate is tested on them, outcomes it never learned from.
//
// The promotion test (promotionTest). On the n outcomes of the slice, three one-sided exact sign
// tests on the discordant pairs (McNemar's exact test): the candidate against the active net (b
// outcomes where only the candidate is right, c where only the active is: p = P(Bin(b+c, 1/2) >=
// b)), and against each constant answer, always keep and always migrate (the majority class,
// whichever it is, is one of them). All three must reject at level alpha_j (an
// intersection-union test: the overall level is alpha_j, no split needed), and the point
// estimates must show a gain of at least MinGain over the active net and over the majority rate
// (so that a huge slice does not promote a negligible gain). Repeated comparisons spend alpha:
// the j-th comparison since the last promotion (or the start) runs at alpha_j = Alpha/(j(j+1)),
// and sum_j alpha_j = Alpha, so while no candidate is better than the active net the chance of
// any promotion, over however many slices, is at most Alpha (default 0.01); after a promotion
// j starts again at 1. The tests assume the outcomes of a slice are independent; outcomes of
// the same tasks are correlated in practice, which makes the real level somewhat higher than
// nominal: the small Alpha and MinGain are the margin for it.
//
// Cost. Each admitted outcome costs a copy on the loop side, one kernel-form evaluation of the
// candidate and one Learn (~0.9 us here); the freeze at each slice's end (model snapshot and
// kernel form, whose agreement check dominates) ~25 ms. Admission is a token bucket of Budget
// outcomes per second of stream time, drawn at the wakeup, before the label is known (so the
// subsample does not depend on the label): at the default 15,000/s and a slice of >= 10 s this
// stays under 2% of one core however many outcomes arrive (BenchmarkAdaptOutcome: ~1.4% here).
// On a slower machine (or under emulation: ~75x slower per outcome in qemu TCG) Budget would
// buy more CPU, so a governor also measures the adapter's own thread CPU time and sheds the
// waiting records while it is above MaxCPU (2% of one core) of the wall time elapsed.
//
// On promotion the candidate's kernel form, with the next generation number (the verdict cache
// is keyed by it), is written into BPF's spare net slot and made active; the candidate becomes
// the active model, and the learner continues (its L2 pull stays anchored at the model the
// daemon started from: a restart from that file is the rollback). With SaveModel the active
// model is written (model.Save: atomic, temporary file and rename) after each promotion and on
// Close, with its provenance in its notes.

// Defaults of AdaptConfig.
const (
	DefaultAdaptBudget    = 15000 // outcomes per second of stream time
	DefaultAdaptSlice     = 2048  // outcomes per slice, at least
	DefaultAdaptSliceTime = 10 * time.Second
	DefaultAdaptAlpha     = 0.01
	DefaultAdaptMinGain   = 0.005
	DefaultAdaptMaxCPU    = 0.02 // of one core
)

const (
	adaptRingLen = 1 << 12 // records between the loop and the adapter (~1.1 MB)
	adaptPendLen = 1 << 12 // admitted samples waiting for their outcome (~1.1 MB)
	adaptBurstNs = 10_000_000
	cpuBurst     = 2 * time.Second // the CPU governor banks at most this much wall time's worth
	// adaptKickEvery: the dispatch loop wakes the adapter at most this long after an outcome
	// (sooner when a quarter of the ring waits: at the default budget, every ~70 ms).
	adaptKickEvery = 500 * time.Millisecond
)

// Notes an adapter adds to the models it promotes and saves.
const (
	NoteAdaptPromotion = "adapt_promotion" // which promotion of the run this model is (0: none)
	NoteAdaptPromoted  = "adapt_promoted"  // when (RFC 3339)
	NoteAdaptEvidence  = "adapt_evidence"  // the slice that promoted it (SliceResult.String)
	NoteAdaptRule      = "adapt_rule"      // the promotion test and its parameters
	NoteAdaptOutcomes  = "adapt_outcomes"  // which outcomes it was scored and learned on
	NoteAdaptStart     = "adapt_start"     // the model the run started from
	NoteAdaptRun       = "adapt_run"       // the run's totals when the file was written
)

// AdaptConfig configures an Adapter. Zero fields take the defaults.
type AdaptConfig struct {
	Budget        float64       // outcomes per second of stream time the adapter takes (DefaultAdaptBudget)
	SliceOutcomes int           // a slice has at least this many outcomes (DefaultAdaptSlice)
	SliceTime     time.Duration // and lasts at least this long, in stream time (DefaultAdaptSliceTime; < 0: no minimum)
	Alpha         float64       // the chance of a promotion while no candidate is better (DefaultAdaptAlpha)
	MinGain       float64       // least accuracy gain over the active net and the majority rate (DefaultAdaptMinGain; < 0: none)
	// MaxCPU caps the adapter's goroutine at this fraction of one core, measured (its Drains'
	// thread CPU time against wall time; DefaultAdaptMaxCPU; < 0: no cap). Budget sizes the
	// work to fit on this machine; the cap holds on a slower one (or under emulation).
	MaxCPU float64
	// NoPromote: learn and score, never promote (--shadow: the net places nothing).
	NoPromote bool
	// Learner are the learner's hyperparameters (zero: model.DefaultLearnerConfig). Its Budget is
	// set to Budget: the adapter admits, the learner learns every admitted outcome.
	Learner model.LearnerConfig
	// SaveModel, if set, is where the active model is written after each promotion and on Close.
	SaveModel string
	Source    string  // the starting model, for the notes ("file X", "the embedded default model")
	Explore   float64 // the exploration rate, for the notes
	Log       io.Writer
	// OnSlice, if set, is called with every closed slice (from the adapter's goroutine).
	OnSlice func(SliceResult)
}

func (c *AdaptConfig) fill() {
	if c.Budget <= 0 {
		c.Budget = DefaultAdaptBudget
	}
	if c.SliceOutcomes <= 0 {
		c.SliceOutcomes = DefaultAdaptSlice
	}
	if c.SliceTime == 0 {
		c.SliceTime = DefaultAdaptSliceTime
	}
	if c.SliceTime < 0 {
		c.SliceTime = 0
	}
	if c.Alpha <= 0 {
		c.Alpha = DefaultAdaptAlpha
	}
	if c.MinGain == 0 {
		c.MinGain = DefaultAdaptMinGain
	}
	if c.MinGain < 0 {
		c.MinGain = 0
	}
	if c.MaxCPU == 0 {
		c.MaxCPU = DefaultAdaptMaxCPU
	}
	if c.MaxCPU < 0 {
		c.MaxCPU = 0
	}
	if c.Learner == (model.LearnerConfig{}) {
		c.Learner = model.DefaultLearnerConfig()
	}
	c.Learner.Budget = c.Budget
	if c.Log == nil {
		c.Log = io.Discard
	}
}

// adaptRecord is one outcome the adapter uses: R's features when W woke, the label, and the
// sample's flags (the active net's verdict WakeKeep, the action WakeActKeep/WakeBase,
// WakeExplore).
type adaptRecord struct {
	feats  [features.NumInputs]uint32
	wakeNs uint64 // when the decision was made (BPF's clock, CLOCK_MONOTONIC)
	tsNs   uint64 // when the label became known: wakeNs + min(leave, horizon)
	flags  uint8
	label  bool
}

// pendSample is an admitted sample waiting for its outcome (the Decider's side table).
type pendSample struct {
	seq    uint64
	wakeNs uint64
	flags  uint8
	feats  [features.NumInputs]uint32
}

// sliceCounts are one slice's paired scores: candidate (kernel form) and active verdicts
// against the label.
type sliceCounts struct {
	seen                  int // outcomes in the slice (learned from)
	n, pos                int // scored: outcomes, positives
	candRight, actRight   int
	b, c                  int // only the candidate right; only the active right
	candKeep, candKeepPos int // the candidate said keep; and the label was 1
}

func (s *sliceCounts) add(cand, active, label bool) {
	s.n++
	if label {
		s.pos++
	}
	cr, ar := cand == label, active == label
	if cr {
		s.candRight++
	}
	if ar {
		s.actRight++
	}
	switch {
	case cr && !ar:
		s.b++
	case ar && !cr:
		s.c++
	}
	if cand {
		s.candKeep++
		if label {
			s.candKeepPos++
		}
	}
}

// SliceResult is one closed slice and, when a candidate was scored on it, its promotion test.
type SliceResult struct {
	Index      int // slices closed so far, this one included
	Comparison int // j: comparisons since the last promotion, this one included (0: no candidate)
	Seen       int // outcomes in the slice (learned from)
	StartNs    uint64
	EndNs      uint64

	N, Positives           int // outcomes the candidate was scored on
	CandRight, ActiveRight int
	B, C                   int // discordant with the active net: only the candidate right, only the active
	KeepB, KeepC           int // with always keep: the candidate right (it said migrate, label 0), wrong
	MigB, MigC             int // with always migrate: the candidate right (keep, label 1), wrong
	PActive, PKeep, PMig   float64
	AlphaJ                 float64
	Pass                   bool // the test passed (promoted unless NoPromote or SetNet failed)
	Promoted               bool
}

// CandidateAccuracy, ActiveAccuracy and MajorityAccuracy are the slice's accuracies (NaN with
// no scored outcome).
func (r SliceResult) CandidateAccuracy() float64 { return ratio(r.CandRight, r.N) }
func (r SliceResult) ActiveAccuracy() float64    { return ratio(r.ActiveRight, r.N) }
func (r SliceResult) MajorityAccuracy() float64 {
	return ratio(max(r.Positives, r.N-r.Positives), r.N)
}

func ratio(a, n int) float64 {
	if n == 0 {
		return math.NaN()
	}
	return float64(a) / float64(n)
}

func (r SliceResult) String() string {
	if r.Comparison == 0 {
		return fmt.Sprintf("slice %d: %d outcomes learned, no candidate scored", r.Index, r.Seen)
	}
	verdict := "no promotion"
	switch {
	case r.Promoted:
		verdict = "promoted"
	case r.Pass:
		verdict = "passed, not promoted"
	}
	return fmt.Sprintf("slice %d (comparison %d since the last promotion): %d outcomes (%.1f%% positive); accuracy candidate %.4f, active %.4f, majority %.4f; "+
		"discordant vs active %d:%d p=%.3g, vs always-keep %d:%d p=%.3g, vs always-migrate %d:%d p=%.3g; alpha_j %.3g: %s",
		r.Index, r.Comparison, r.N, 100*ratio(r.Positives, r.N), r.CandidateAccuracy(), r.ActiveAccuracy(), r.MajorityAccuracy(),
		r.B, r.C, r.PActive, r.KeepB, r.KeepC, r.PKeep, r.MigB, r.MigC, r.PMig, r.AlphaJ, verdict)
}

// promotionTest fills the test of r from s at comparison j: the three sign tests at
// alpha/(j(j+1)) and the gains of at least minGain.
func promotionTest(s *sliceCounts, j int, alpha, minGain float64, r *SliceResult) {
	r.Comparison = j
	r.N, r.Positives, r.CandRight, r.ActiveRight, r.B, r.C = s.n, s.pos, s.candRight, s.actRight, s.b, s.c
	r.KeepB = (s.n - s.candKeep) - (s.pos - s.candKeepPos)
	r.KeepC = s.pos - s.candKeepPos
	r.MigB = s.candKeepPos
	r.MigC = s.candKeep - s.candKeepPos
	r.PActive, r.PKeep, r.PMig = signTail(r.B, r.C), signTail(r.KeepB, r.KeepC), signTail(r.MigB, r.MigC)
	r.AlphaJ = alphaSpent(alpha, j)
	gainActive := float64(r.B-r.C) / float64(max(s.n, 1))
	gainMajority := r.CandidateAccuracy() - r.MajorityAccuracy()
	r.Pass = s.n > 0 && max(r.PActive, r.PKeep, r.PMig) <= r.AlphaJ && gainActive >= minGain && gainMajority >= minGain
}

// alphaSpent is the level of the j-th comparison: alpha/(j(j+1)), which sums to alpha over
// j = 1, 2, ...
func alphaSpent(alpha float64, j int) float64 {
	fj := float64(max(j, 1))
	return alpha / (fj * (fj + 1))
}

// signTail is P(X >= b) for X ~ Binomial(b+c, 1/2): the one-sided p-value of the exact sign
// test (McNemar's exact test) with b discordant pairs for and c against. It does not allocate.
func signTail(b, c int) float64 {
	m := b + c
	if b <= 0 || m == 0 {
		return 1
	}
	if 2*b <= m {
		// The tail holds the mode: 1 - P(X <= b-1) = 1 - P(X >= m-b+1), whose terms decrease.
		return 1 - signTail(m-b+1, b-1)
	}
	lg := func(x int) float64 { v, _ := math.Lgamma(float64(x) + 1); return v }
	t := math.Exp(lg(m) - lg(b) - lg(m-b) - float64(m)*math.Ln2)
	sum := t
	for k := b; k < m && t > sum*1e-17; k++ {
		t *= float64(m-k) / float64(k+1)
		sum += t
	}
	return min(sum, 1)
}

// Adapter is the online adaptation of the active net. The dispatch loop's goroutine feeds it
// (Decider: admit, reserve, commit; no allocation, no blocking: a full ring drops the outcome
// and counts it); its own goroutine (Start) or the caller of Drain learns, scores, freezes
// candidates and promotes. Close stops it and writes the model file.
type Adapter struct {
	cfg   AdaptConfig
	stats *Stats
	base  *model.Model

	// Producer side (the dispatch loop's goroutine): the admission token bucket.
	tokens   float64
	lastNs   uint64
	clockSet bool

	ring [adaptRingLen]adaptRecord
	head atomic.Uint64 // records committed (written by the producer)
	tail atomic.Uint64 // records processed (written by the consumer)

	// Consumer side (one goroutine at a time).
	learner    *model.Learner
	activeKF   *model.KernelForm // the active net's kernel form (what BPF runs)
	cand       *model.KernelForm // the frozen candidate scored on this slice (nil: none)
	candM      *model.Model
	slice      sliceCounts
	sliceStart uint64
	started    bool
	slices     int
	compare    int    // comparisons since the last promotion
	evalFrom   uint64 // outcomes of decisions made before the last promotion are not scored
	gen        uint64 // the promoted nets' generation numbers
	promotions int
	refused    bool
	// The CPU governor (measuredDrain): ns of CPU time the adapter may still use.
	cpuTokens   float64
	cpuLastNs   uint64
	cpuClockSet bool
	clock       func() uint64 // CLOCK_MONOTONIC (monotonicNs, BPF's clock) in production; nil (tests): the stream's own time

	active atomic.Pointer[model.Model]

	mu     sync.Mutex
	setNet func([]byte) error // the attached scheduler's SetNet (nil: none attached)

	kick       chan struct{} // notify: outcomes are waiting
	stop, done chan struct{}
	running    bool
	closed     bool
}

// NewAdapter returns an adapter starting from m (valid, with a kernel form), with its
// learner and buffers allocated once.
func NewAdapter(m *model.Model, cfg AdaptConfig, stats *Stats) (*Adapter, error) {
	cfg.fill()
	if stats == nil {
		stats = &Stats{}
	}
	l, err := model.NewLearner(m, cfg.Learner)
	if err != nil {
		return nil, fmt.Errorf("adapt: %w", err)
	}
	kf, err := model.NewKernelForm(m)
	if err != nil {
		return nil, fmt.Errorf("adapt: %w", err)
	}
	a := &Adapter{cfg: cfg, stats: stats, base: m, learner: l, activeKF: kf, tokens: 1, clock: monotonicNs, kick: make(chan struct{}, 1)}
	a.active.Store(m)
	stats.setCandidateAccuracy(math.NaN())
	return a, nil
}

// Active is the model BPF runs (or will run at the next attach): the starting model until the
// first promotion.
func (a *Adapter) Active() *model.Model { return a.active.Load() }

// Promotions is how many candidates were promoted.
func (a *Adapter) Promotions() int { return int(a.stats.Promotions.Load()) }

// attach gives the adapter the scheduler's SetNet (nil: detached). While detached a promotion
// only changes Active, which the next attach loads.
func (a *Adapter) attach(setNet func([]byte) error) {
	a.mu.Lock()
	a.setNet = setNet
	a.mu.Unlock()
}

// admit is the admission: a token bucket of Budget outcomes per second of the samples' own
// clock (their wakeups), burst adaptBurstNs of budget. The loop's goroutine only.
func (a *Adapter) admit(nowNs uint64) bool {
	b := a.cfg.Budget
	if a.clockSet && nowNs > a.lastNs {
		a.tokens = min(max(1, b*adaptBurstNs/1e9), a.tokens+float64(nowNs-a.lastNs)*b/1e9)
	}
	if !a.clockSet || nowNs > a.lastNs {
		a.lastNs, a.clockSet = nowNs, true
	}
	if a.tokens < 1 {
		a.stats.AdaptSkipped.Add(1)
		return false
	}
	a.tokens--
	return true
}

// reserve returns the next free record of the ring, or nil (counted) when it is full. The
// loop's goroutine only; commit publishes it.
func (a *Adapter) reserve() *adaptRecord {
	h := a.head.Load()
	if h-a.tail.Load() >= adaptRingLen {
		a.stats.AdaptDropped.Add(1)
		return nil
	}
	return &a.ring[h%adaptRingLen]
}

func (a *Adapter) commit() {
	a.head.Add(1)
	a.stats.AdaptTaken.Add(1)
}

// Drain processes every committed record and returns how many. One goroutine at a time (the
// adapter's own after Start).
func (a *Adapter) Drain() int {
	h, t0 := a.head.Load(), a.tail.Load()
	for t := t0; t < h; t++ {
		a.process(&a.ring[t%adaptRingLen])
		a.tail.Store(t + 1)
	}
	return int(h - t0)
}

// process scores one outcome (candidate against active and label), learns from it, and closes
// the slice when it is full.
func (a *Adapter) process(r *adaptRecord) {
	now := r.tsNs
	if !a.started {
		a.started, a.sliceStart = true, now
	}
	s := &a.slice
	s.seen++
	if a.cand != nil && r.wakeNs >= a.evalFrom {
		s.add(a.cand.KeepLocal(&r.feats), r.flags&features.WakeKeep != 0, r.label)
	}
	a.learner.Learn(&r.feats, r.label)
	a.stats.Learned.Add(1)
	full := s.seen
	if a.cand != nil {
		full = s.n
	}
	if full >= a.cfg.SliceOutcomes && now >= a.sliceStart && now-a.sliceStart >= uint64(a.cfg.SliceTime) {
		a.closeSlice(now)
	}
}

// closeSlice tests the slice's candidate, promotes it if it passed, and freezes the next one.
func (a *Adapter) closeSlice(now uint64) {
	a.slices++
	a.stats.AdaptSlices.Add(1)
	res := SliceResult{Index: a.slices, Seen: a.slice.seen, StartNs: a.sliceStart, EndNs: now}
	if a.cand != nil && a.slice.n > 0 {
		a.compare++
		promotionTest(&a.slice, a.compare, a.cfg.Alpha, a.cfg.MinGain, &res)
		a.stats.setCandidateAccuracy(res.CandidateAccuracy())
		a.stats.setSliceActiveAccuracy(res.ActiveAccuracy())
		a.stats.setSliceMajority(res.MajorityAccuracy())
		if res.Pass && !a.cfg.NoPromote {
			res.Promoted = a.promote(&res, now)
		}
	}
	if a.cfg.OnSlice != nil {
		a.cfg.OnSlice(res)
	}
	a.freeze()
	a.slice = sliceCounts{}
	a.sliceStart = now
}

// freeze makes the learner's current net the candidate: its snapshot and kernel form.
func (a *Adapter) freeze() {
	m := a.learner.Model()
	kf, err := model.NewKernelForm(m)
	if err != nil {
		a.cand, a.candM = nil, nil
		a.stats.AdaptRefused.Add(1)
		if !a.refused {
			a.refused = true
			fmt.Fprintf(a.cfg.Log, "adapt: the adapted net has no kernel form (%v): no candidate this slice\n", err)
		}
		return
	}
	a.cand, a.candM = kf, m
}

// promote makes the candidate the active net: into BPF (the next generation), then Active,
// then the model file. It reports whether it did (SetNet can fail).
func (a *Adapter) promote(res *SliceResult, now uint64) bool {
	kf, m := a.cand, a.candM
	kf.Generation = a.gen + 1
	img, err := kf.MarshalBinary()
	if err == nil {
		a.mu.Lock()
		if a.setNet != nil {
			err = a.setNet(img)
		}
		a.mu.Unlock()
	}
	if err != nil {
		a.stats.AdaptErrors.Add(1)
		fmt.Fprintf(a.cfg.Log, "adapt: promotion failed, the active net stays: %v\n", err)
		return false
	}
	a.gen++
	a.promotions++
	a.compare = 0
	a.evalFrom = now
	if a.clock != nil {
		a.evalFrom = a.clock()
	}
	a.activeKF = kf
	res.Promoted = true
	a.annotate(m, res)
	a.active.Store(m)
	a.stats.Promotions.Add(1)
	fmt.Fprintf(a.cfg.Log, "adapt: promotion %d: %s\n", a.promotions, res)
	if a.cfg.SaveModel != "" {
		a.save(m)
	}
	return true
}

// annotate writes the provenance notes of a promoted model.
func (a *Adapter) annotate(m *model.Model, res *SliceResult) {
	setNotes(m, map[string]string{
		NoteAdaptPromotion: strconv.Itoa(a.promotions),
		NoteAdaptPromoted:  time.Now().UTC().Format(time.RFC3339Nano),
		NoteAdaptEvidence:  res.String(),
		NoteAdaptRule:      a.rule(),
		NoteAdaptOutcomes:  a.outcomes(),
		NoteAdaptStart:     a.start(),
		NoteAdaptRun:       a.runNote(),
	})
}

func (a *Adapter) rule() string {
	return fmt.Sprintf("one-sided exact sign tests (McNemar) of the candidate's kernel form against the active net and against always-keep and always-migrate, on a later slice than it learned from (>= %d outcomes, >= %s), each p <= alpha/(j(j+1)) with alpha %g and j the comparisons since the last promotion, and an accuracy gain >= %g over the active net and the majority rate",
		a.cfg.SliceOutcomes, a.cfg.SliceTime, a.cfg.Alpha, a.cfg.MinGain)
}

func (a *Adapter) outcomes() string {
	return fmt.Sprintf("outcomes whose action did not follow the verdict: explored at random (--explore %g), or placed by the base queue (the guard, --shadow); at most %g per second, each learned",
		a.cfg.Explore, a.cfg.Budget)
}

func (a *Adapter) start() string {
	src := a.cfg.Source
	if src == "" {
		src = "the model given"
	}
	return fmt.Sprintf("%s, created %s", src, time.Unix(0, a.base.Meta.CreatedUnixNs).UTC().Format(time.RFC3339Nano))
}

func (a *Adapter) runNote() string {
	return fmt.Sprintf("%d promotions, %d slices, %d outcomes learned, %d dropped (ring full)",
		a.promotions, a.slices, a.stats.Learned.Load(), a.stats.AdaptDropped.Load())
}

// setNotes adds notes to m, dropping the oldest other notes (in key order) if the format's
// limit would be exceeded.
func setNotes(m *model.Model, add map[string]string) {
	if m.Meta.Notes == nil {
		m.Meta.Notes = map[string]string{}
	}
	if over := len(m.Meta.Notes) + len(add) - model.MaxListLen; over > 0 {
		keys := make([]string, 0, len(m.Meta.Notes))
		for k := range m.Meta.Notes {
			if _, ours := add[k]; !ours {
				keys = append(keys, k)
			}
		}
		sort.Strings(keys)
		for _, k := range keys[:min(over, len(keys))] {
			delete(m.Meta.Notes, k)
		}
	}
	for k, v := range add {
		if len(v) > model.MaxStringLen {
			v = v[:model.MaxStringLen]
		}
		m.Meta.Notes[k] = v
	}
}

// save writes m to SaveModel (atomically: model.Save); a failure is logged and counted.
func (a *Adapter) save(m *model.Model) {
	if err := m.Save(a.cfg.SaveModel); err != nil {
		a.stats.AdaptErrors.Add(1)
		fmt.Fprintf(a.cfg.Log, "adapt: %v\n", err)
	}
}

// Start runs Drain on a goroutine of its own, whenever the dispatch loop wakes it (notify:
// Decider.kickAdapter, after a batch, when a quarter of the ring waits or 500 ms after an
// outcome), until Close. The goroutine waits on a channel, with no timer: idle, it never wakes. Each Drain runs locked to
// its thread, whose CPU time over the Drain is the adapter's (Stats.AdaptCPUNs).
func (a *Adapter) Start() {
	a.stop, a.done, a.running = make(chan struct{}), make(chan struct{}), true
	go func() {
		defer close(a.done)
		for {
			select {
			case <-a.stop:
				a.measuredDrain()
				return
			case <-a.kick:
			}
			a.measuredDrain()
		}
	}()
}

// notify wakes the adapter's goroutine if it is not already due to run (no allocation, no
// blocking: the dispatch loop calls it after a batch that committed outcomes).
func (a *Adapter) notify() {
	select {
	case a.kick <- struct{}{}:
	default:
	}
}

// measuredDrain is Drain with its thread CPU time added to Stats.AdaptCPUNs, under the CPU
// governor: while the adapter has used more than MaxCPU of one core, the records waiting are
// shed (dropped unread, counted) instead of drained.
func (a *Adapter) measuredDrain() {
	if a.head.Load() == a.tail.Load() {
		return
	}
	if !a.cpuAllowed(monotonicNs()) {
		a.shed()
		return
	}
	runtime.LockOSThread()
	cpu0 := threadCPU()
	a.Drain()
	used := max(threadCPU()-cpu0, 0)
	runtime.UnlockOSThread()
	a.stats.AdaptCPUNs.Add(uint64(used))
	a.chargeCPU(used)
}

// cpuAllowed is the CPU governor's test at nowNs (monotonic): a bucket of CPU time that fills
// at MaxCPU ns per ns of wall time, up to cpuBurst's worth (at 2%, 40 ms: a slice's end, its
// snapshot and kernel form, ~25 ms here, fits), and that each Drain empties by the CPU time it
// took, into debt if it took more. No limit with MaxCPU 0.
func (a *Adapter) cpuAllowed(nowNs uint64) bool {
	if a.cfg.MaxCPU <= 0 {
		return true
	}
	burst := a.cfg.MaxCPU * float64(cpuBurst)
	if !a.cpuClockSet {
		a.cpuTokens, a.cpuLastNs, a.cpuClockSet = burst, nowNs, true
	}
	if nowNs > a.cpuLastNs {
		a.cpuTokens = min(burst, a.cpuTokens+float64(nowNs-a.cpuLastNs)*a.cfg.MaxCPU)
		a.cpuLastNs = nowNs
	}
	return a.cpuTokens > 0
}

func (a *Adapter) chargeCPU(used time.Duration) { a.cpuTokens -= float64(used) }

// shed drops every committed record unread (the CPU governor), counting them.
func (a *Adapter) shed() {
	h, t := a.head.Load(), a.tail.Load()
	a.tail.Store(h)
	a.stats.AdaptShed.Add(h - t)
}

// Close stops the goroutine (after a last Drain) and, with SaveModel, writes the active model:
// the last promoted one, or with no promotion the starting model with notes saying so. Once;
// later calls do nothing. Not concurrently with Drain's other callers.
func (a *Adapter) Close() {
	if a.closed {
		return
	}
	a.closed = true
	if a.running {
		a.running = false
		close(a.stop)
		<-a.done
	} else {
		a.Drain()
	}
	a.attach(nil)
	if a.cfg.SaveModel == "" {
		return
	}
	m := a.Active()
	if a.promotions == 0 {
		c, err := cloneModel(m)
		if err != nil {
			a.stats.AdaptErrors.Add(1)
			fmt.Fprintf(a.cfg.Log, "adapt: %v\n", err)
			return
		}
		setNotes(c, map[string]string{
			NoteAdaptPromotion: "0",
			NoteAdaptRule:      a.rule(),
			NoteAdaptOutcomes:  a.outcomes(),
			NoteAdaptStart:     a.start(),
			NoteAdaptRun:       a.runNote(),
		})
		m = c
	} else {
		setNotes(m, map[string]string{NoteAdaptRun: a.runNote()})
	}
	a.save(m)
}

// cloneModel is a deep copy of m through its encoding.
func cloneModel(m *model.Model) (*model.Model, error) {
	b, err := m.MarshalBinary()
	if err != nil {
		return nil, err
	}
	return model.Unmarshal(b)
}

// threadCPU is the calling thread's CPU time (user and system), to the ns:
// CLOCK_THREAD_CPUTIME_ID brings the running thread's account up to date, where
// getrusage(RUSAGE_THREAD) lags by up to a tick (a short Drain would read 0).
func threadCPU() time.Duration {
	var ts unix.Timespec
	if unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts) != nil {
		return 0
	}
	return time.Duration(ts.Nano())
}
