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
}

// Decider turns wake events into decisions and outcome events into guard observations. It is
// the whole per-event path of the dispatch loop, without I/O; it does not allocate.
// Use it from one goroutine.
type Decider struct {
	pred      *model.Predictor // nil: FIFO policy, no prediction
	horizonNs uint64
	Guard     *Guard
	Stats     *Stats
	timeEvery uint64 // time one inference in timeEvery (a power of two)

	wake    features.WakeEvent
	outcome features.OutcomeEvent
	preds   [predRingLen]predEntry
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
		d.remember(w, w.Flags&features.WakeKeep != 0)
		d.Stats.KernelVerdicts.Add(1)
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
	d.remember(w, keep)
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

func (d *Decider) remember(w *features.WakeEvent, keep bool) {
	d.preds[w.Seq&(predRingLen-1)] = predEntry{seq: w.Seq, rTid: w.RTid, cpu: w.PrevCPU, keep: keep}
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
	_, l := features.Label(o.Voluntary, o.LeaveNs, d.horizonNs)
	label := l == 1
	if label {
		d.Stats.Positives.Add(1)
	}
	if p.keep == label {
		d.Stats.Correct.Add(1)
	}
	if d.Guard != nil {
		d.Guard.Observe(p.keep == label, label)
	}
	return nil
}
