package sched

import (
	"encoding/binary"
	"fmt"
	"time"

	"github.com/mlsched/mlsched/bpf"
	"github.com/mlsched/mlsched/features"
	"github.com/mlsched/mlsched/model"
	"golang.org/x/sys/unix"
)

// Action is what BPF does with a waking task (enum mls_action in bpf/sched.h).
type Action uint8

const (
	ActFIFO        Action = bpf.ActFIFO
	ActKeepLocal   Action = bpf.ActKeepLocal
	ActMigrateIdle Action = bpf.ActMigrateIdle
)

func (a Action) String() string {
	switch a {
	case ActFIFO:
		return "fifo"
	case ActKeepLocal:
		return "keep_local"
	case ActMigrateIdle:
		return "migrate_idle"
	}
	return fmt.Sprintf("action%d", uint8(a))
}

// Decision is one answer to a wake event (struct mls_decision in bpf/sched.h).
type Decision struct {
	Seq    uint64
	WTid   uint32
	CPU    uint16
	Action Action
}

// EncodeDecision writes d into b (at least bpf.DecisionSize bytes) in the kernel's layout.
func EncodeDecision(b []byte, d *Decision) {
	_ = b[bpf.DecisionSize-1]
	le := binary.LittleEndian
	le.PutUint64(b[0:], d.Seq)
	le.PutUint32(b[8:], d.WTid)
	le.PutUint16(b[12:], d.CPU)
	b[14] = byte(d.Action)
	b[15] = 0
}

// DecodeDecision is EncodeDecision's inverse (tests, tools).
func DecodeDecision(b []byte, d *Decision) {
	_ = b[bpf.DecisionSize-1]
	le := binary.LittleEndian
	d.Seq = le.Uint64(b[0:])
	d.WTid = le.Uint32(b[8:])
	d.CPU = le.Uint16(b[12:])
	d.Action = Action(b[14])
}

// WakeInfo is a decoded scheduler wake event: capture's wake event plus what the scheduler adds.
type WakeInfo struct {
	features.WakeEvent
	NrAllowed uint16
	Seq       uint64
}

// DecodeSchedWake fills w from a raw ring buffer record of type bpf.EventSchedWake.
func DecodeSchedWake(raw []byte, w *WakeInfo) error {
	if len(raw) < bpf.SchedWakeSize {
		return fmt.Errorf("sched wake event: %w (%d < %d bytes)", features.ErrShortEvent, len(raw), bpf.SchedWakeSize)
	}
	if err := features.DecodeWake(raw, &w.WakeEvent); err != nil {
		return err
	}
	w.NrAllowed = binary.LittleEndian.Uint16(raw[6:])
	w.Seq = binary.LittleEndian.Uint64(raw[features.WakeEventSize:])
	return nil
}

// OutcomeInfo is a decoded outcome event: how R left the CPU after a wake event named it.
type OutcomeInfo struct {
	Voluntary bool
	CPU       uint16
	RTid      uint32
	Seq       uint64
	LeaveNs   uint64
	TsNs      uint64
}

// DecodeOutcome fills o from a raw record of type bpf.EventSchedOutcome.
func DecodeOutcome(raw []byte, o *OutcomeInfo) error {
	if len(raw) < bpf.SchedOutcomeSize {
		return fmt.Errorf("sched outcome event: %w (%d < %d bytes)", features.ErrShortEvent, len(raw), bpf.SchedOutcomeSize)
	}
	le := binary.LittleEndian
	o.Voluntary = raw[1] != 0
	o.CPU = le.Uint16(raw[2:])
	o.RTid = le.Uint32(raw[4:])
	o.Seq = le.Uint64(raw[8:])
	o.LeaveNs = le.Uint64(raw[16:])
	o.TsNs = le.Uint64(raw[24:])
	return nil
}

// predRingLen bounds how many predictions wait for their outcome; an outcome arriving after
// predRingLen more wakeups finds its slot reused and is counted as unmatched.
const predRingLen = 1 << 14

type predEntry struct {
	seq  uint64
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

	wake    WakeInfo
	outcome OutcomeInfo
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

// Wake decides for one raw wake event.
func (d *Decider) Wake(raw []byte, out *Decision) error {
	w := &d.wake
	if err := DecodeSchedWake(raw, w); err != nil {
		d.Stats.DecodeErrors.Add(1)
		return err
	}
	n := d.Stats.Events.Add(1)
	out.Seq, out.WTid, out.CPU, out.Action = w.Seq, w.WTid, w.PrevCPU, ActFIFO
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
	d.preds[w.Seq&(predRingLen-1)] = predEntry{seq: w.Seq, keep: keep}
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

// Outcome scores the prediction an outcome event refers to.
func (d *Decider) Outcome(raw []byte) error {
	o := &d.outcome
	if err := DecodeOutcome(raw, o); err != nil {
		d.Stats.DecodeErrors.Add(1)
		return err
	}
	d.Stats.Outcomes.Add(1)
	if d.pred == nil {
		return nil
	}
	p := &d.preds[o.Seq&(predRingLen-1)]
	if p.seq != o.Seq {
		d.Stats.Unmatched.Add(1)
		return nil
	}
	p.seq = 0
	label := o.Voluntary && o.LeaveNs <= d.horizonNs
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
