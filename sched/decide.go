package sched

import (
	"time"

	"github.com/mlsched/mlsched/features"
	"github.com/mlsched/mlsched/model"
	"golang.org/x/sys/unix"
)

// The records and actions of bpf/abi.h, as this package uses them (one type each, in features).
type (
	Action   = features.Action
	Decision = features.Decision
)

const (
	ActFIFO        = features.ActFIFO
	ActKeepLocal   = features.ActKeepLocal
	ActMigrateIdle = features.ActMigrateIdle
)

// predRingLen bounds how many predictions wait for their outcome; an outcome arriving after
// predRingLen more wakeups finds its slot reused and is counted as unmatched.
const predRingLen = 1 << 14

// predEntry is a scored wakeup's verdict, and where it was made: its outcome must come from
// the same CPU and the same R.
type predEntry struct {
	seq  uint64
	rTid uint32
	cpu  uint16
	keep bool
	mark uint8 // predUnbiased, predExplored
}

const (
	predUnbiased  = 1 << iota // the action did not follow the verdict (Decider.unbiased, at the wakeup)
	predExplored              // BPF took the action at random (MLS_WAKE_EXPLORE)
	predAbstained             // the net had no opinion (MLS_WAKE_ABSTAIN): nothing to score
)

// Decider turns wake events into decisions and outcome events into guard observations. It is
// the whole per-event path of the dispatch loop, without I/O; it does not allocate.
// Use it from one goroutine.
type Decider struct {
	pred      *model.Predictor // nil: FIFO policy, no prediction
	horizonNs uint64
	Guard     *Guard
	Stats     *Stats
	timeEvery uint64 // time one inference in timeEvery (a power of two)

	// UnbiasedGuard (--explore with the net deciding in BPF): the guard scores only the
	// outcomes whose action did not follow the verdict (explored at random, or placed by the
	// base queue while the guard holds it): on the others the verdict shaped its own label.
	UnbiasedGuard bool
	// Shadow (--shadow): every wakeup went to the base queue; every outcome is unbiased.
	Shadow bool

	wake    features.WakeEvent
	outcome features.OutcomeEvent
	preds   [predRingLen]predEntry

	// Online adaptation (SetAdapter): admitted samples wait here for their outcome.
	adapt        *Adapter
	pend         *[adaptPendLen]pendSample
	adaptPending int    // outcomes committed since the adapter was last woken
	adaptKickNs  uint64 // when it was last woken
}

// NewDecider returns a decider for m, or a FIFO-only decider when m is nil.
func NewDecider(m *model.Model, guard *Guard, stats *Stats) *Decider {
	d := &Decider{Guard: guard, Stats: stats, timeEvery: 8}
	if m != nil {
		d.pred = model.NewPredictor(m)
		d.horizonNs = m.HorizonNs
	}
	return d
}

// NewScorer returns a decider that only scores the verdicts BPF made (a fixed placement),
// labelling outcomes with horizonNs.
func NewScorer(horizonNs uint64, guard *Guard, stats *Stats) *Decider {
	return &Decider{Guard: guard, Stats: stats, timeEvery: 8, horizonNs: horizonNs}
}

// SetAdapter makes the decider hand the adapter the outcomes it may learn from: those of
// unbiased samples (see unbiased), as many as its admission allows.
func (d *Decider) SetAdapter(a *Adapter) {
	d.adapt = a
	if a != nil && d.pend == nil {
		d.pend = new([adaptPendLen]pendSample)
	}
}

// unbiased says whether a sample's action did not follow its verdict, so that its outcome
// judges every net alike: BPF explored it (a random action), or W went to the base queue
// whatever the verdict (--shadow, or the guard holding the base queue; a base placement with
// neither is a migrate verdict that found no idle CPU, which did follow the verdict).
func (d *Decider) unbiased(flags uint8) bool {
	return flags&features.WakeExplore != 0 || d.Shadow ||
		flags&features.WakeBase != 0 && d.Guard != nil && d.Guard.Tripped()
}

// Wake decides for one raw wake event.
func (d *Decider) Wake(raw []byte, out *Decision) error {
	w := &d.wake
	if err := features.DecodeWake(raw, w); err != nil {
		d.Stats.DecodeErrors.Add(1)
		return err
	}
	n := d.Stats.Events.Add(1)
	out.Seq, out.WTid, out.CPU, out.Action = w.Seq, w.WTid, w.PrevCPU, ActFIFO
	if w.Flags&features.WakeVerdict != 0 {
		// BPF decided already (--infer kernel, a fixed placement): score its own verdict, the
		// kernel form's, not a re-prediction by the float net.
		unb := d.unbiased(w.Flags)
		var mark uint8
		if unb {
			mark |= predUnbiased
		}
		if w.Flags&features.WakeExplore != 0 {
			mark |= predExplored
		}
		if w.Flags&features.WakeAbstain != 0 {
			mark |= predAbstained
		}
		d.remember(w, w.Flags&features.WakeKeep != 0, mark)
		d.Stats.KernelVerdicts.Add(1)
		if unb && d.adapt != nil && d.adapt.admit(w.TsNs) {
			p := &d.pend[w.Seq%adaptPendLen]
			p.seq, p.wakeNs, p.flags, p.feats = w.Seq, w.TsNs, w.Flags, w.Feats
		}
		return nil
	}
	if d.pred == nil {
		d.Stats.FIFO.Add(1)
		return nil
	}
	var keep bool
	if n&(d.timeEvery-1) == 0 {
		// Event age: BPF stamped it with bpf_ktime_get_ns (CLOCK_MONOTONIC) at enqueue.
		var ts unix.Timespec
		if unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts) == nil {
			if now := uint64(ts.Nano()); now > w.TsNs {
				d.Stats.EventAge.Observe(now - w.TsNs)
			}
		}
		t0 := time.Now()
		keep = d.pred.KeepLocal(&w.Feats)
		d.Stats.Inference.Observe(uint64(time.Since(t0)))
	} else {
		keep = d.pred.KeepLocal(&w.Feats)
	}
	d.remember(w, keep, predUnbiased) // the round trip: nothing explores, the guard sees all
	switch {
	case d.Guard != nil && d.Guard.Tripped():
		d.Stats.FIFO.Add(1)
	case keep || w.NrAllowed == 1:
		out.Action = ActKeepLocal
		d.Stats.Keep.Add(1)
	default:
		out.Action = ActMigrateIdle
		d.Stats.Migrate.Add(1)
	}
	return nil
}

func (d *Decider) remember(w *features.WakeEvent, keep bool, mark uint8) {
	d.preds[w.Seq&(predRingLen-1)] = predEntry{seq: w.Seq, rTid: w.RTid, cpu: w.PrevCPU, keep: keep, mark: mark}
}

// Outcome scores the prediction an outcome event refers to.
func (d *Decider) Outcome(raw []byte) error {
	o := &d.outcome
	if err := features.DecodeOutcome(raw, o); err != nil {
		d.Stats.DecodeErrors.Add(1)
		return err
	}
	d.Stats.Outcomes.Add(1)
	if d.horizonNs == 0 { // nothing is scored: a base queue alone
		return nil
	}
	p := &d.preds[o.Seq&(predRingLen-1)]
	if p.seq != o.Seq {
		d.Stats.Unmatched.Add(1)
		return nil
	}
	p.seq = 0
	if p.rTid != o.RTid || p.cpu != o.CPU {
		// Another wakeup's sample: never score it (the attribution test counts these).
		d.Stats.Misattributed.Add(1)
		return nil
	}
	if p.mark&predAbstained != 0 { // no verdict was given: not a prediction to score
		return nil
	}
	_, l := features.Label(o.Voluntary, o.LeaveNs, d.horizonNs)
	label := l == 1
	if label {
		d.Stats.Positives.Add(1)
	} else {
		d.Stats.Negatives.Add(1)
	}
	if p.keep == label {
		d.Stats.Correct.Add(1)
	}
	if p.mark&predExplored != 0 {
		d.Stats.ExploreOutcomes.Add(1)
	}
	unbiased := p.mark&predUnbiased != 0
	if d.Guard != nil && (!d.UnbiasedGuard || unbiased) {
		d.Guard.Observe(p.keep == label, label)
		_, maj := d.Guard.Accuracy()
		d.Stats.setLiveMajority(maj)
	}
	if unbiased && d.adapt != nil {
		d.toAdapter(o, label)
	}
	return nil
}

// toAdapter hands the adapter the outcome of an admitted sample (if it was admitted and its
// slot not reused since): its features, label and flags, stamped with the time the label
// became known.
func (d *Decider) toAdapter(o *features.OutcomeEvent, label bool) {
	p := &d.pend[o.Seq%adaptPendLen]
	if p.seq != o.Seq {
		return
	}
	p.seq = 0
	r := d.adapt.reserve()
	if r == nil {
		return
	}
	r.feats, r.wakeNs, r.flags, r.label = p.feats, p.wakeNs, p.flags, label
	r.tsNs = p.wakeNs + min(o.LeaveNs, d.horizonNs)
	d.adapt.commit()
	d.adaptPending++
}

// kickAdapter wakes the adapter if outcomes were handed to it since it was last woken, and
// either a quarter of its ring is waiting or adaptKickEvery has passed: the loop calls it when
// it has read everything there was (once per poll). Waking another goroutine costs a thread
// wakeup (~6 us here, milliseconds under qemu TCG): a few per second, not one per poll.
func (d *Decider) kickAdapter() {
	if d.adaptPending == 0 {
		return
	}
	if now := monotonicNs(); d.adaptPending >= adaptRingLen/4 || now-d.adaptKickNs >= uint64(adaptKickEvery) {
		d.adaptPending, d.adaptKickNs = 0, now
		d.adapt.notify()
	}
}
