package features

// Outcome says how a sample's label was decided.
type Outcome uint8

const (
	// OutcomeVoluntary: R left the CPU without being preempted (blocked, slept, yielded, exited)
	// within the horizon. Label 1.
	OutcomeVoluntary Outcome = 1
	// OutcomePreempted: R was preempted within the horizon. Label 0.
	OutcomePreempted Outcome = 2
	// OutcomeTimeout: R was still on the CPU at the horizon. Label 0.
	OutcomeTimeout Outcome = 3
)

func (o Outcome) String() string {
	switch o {
	case OutcomeVoluntary:
		return "voluntary"
	case OutcomePreempted:
		return "preempted"
	case OutcomeTimeout:
		return "timeout"
	}
	return "unknown"
}

// LeftVoluntarily is the voluntary-leave rule of bpf/features.h (mls_left_voluntarily), which
// both the capture probes and the scheduler apply in BPF, over the facts both have: R left its
// CPU voluntarily when it is no longer runnable (slept, waited, exited) or it yielded. The
// scheduler has runnable from sched_ext's stopping(); capture derives it from sched_switch
// (preempted, or prev_state TASK_RUNNING).
func LeftVoluntarily(runnable, yielding bool) bool {
	return !runnable || yielding
}

// Label is the one label: R left its CPU leaveNs after the wakeup, voluntarily or not, and the
// horizon is horizonNs. 1 (OutcomeVoluntary) if it left voluntarily within the horizon; 0 if it
// was preempted within it (OutcomePreempted) or was still running at the horizon
// (OutcomeTimeout). Capture's label join, the scheduler's scoring and training's relabelling
// all decide with it.
func Label(voluntary bool, leaveNs, horizonNs uint64) (Outcome, uint8) {
	switch {
	case leaveNs > horizonNs:
		return OutcomeTimeout, 0
	case voluntary:
		return OutcomeVoluntary, 1
	}
	return OutcomePreempted, 0
}

// Sample is one training example: R's features when W woke on R's CPU, and what R did next.
type Sample struct {
	TsNs     uint64 // when W woke (monotonic ns; relative to the trace start inside a trace file)
	PrevCPU  uint16 // W's previous CPU, where R ran
	WakerCPU uint16
	WTid     uint32
	RTid     uint32
	ROnCPUNs uint64 // R's scheduling state at the wakeup (SchedState): how long R had been on the CPU,
	RStintNs uint64 // the average of its stints,
	RGapNs   uint64 // its time off the CPU before this stint,
	RVol     uint32 // the average of its voluntary leaves (Q16)
	Label    uint8  // 1 if R left the CPU voluntarily within the horizon
	Outcome  Outcome
	LeaveNs  uint64 // time from the wakeup to R's switch-out; 0 for OutcomeTimeout
	// Feats is the model's input: R's 64 decayed counts (Q16), then the extras of its
	// scheduling state (SetExtras of the R* fields).
	Feats [NumInputs]uint32
}

// State returns R's scheduling state.
func (s *Sample) State() SchedState {
	return SchedState{OnCPUNs: s.ROnCPUNs, StintNs: s.RStintNs, Vol: s.RVol, GapNs: s.RGapNs}
}

// SetState sets R's scheduling state and the extra inputs it makes.
func (s *Sample) SetState(st SchedState) {
	s.ROnCPUNs, s.RStintNs, s.RVol, s.RGapNs = st.OnCPUNs, st.StintNs, st.Vol, st.GapNs
	SetExtras(&s.Feats, &st)
}

// JoinStats accounts for every wake event given to a Joiner.
type JoinStats struct {
	Samples    uint64 // labelled and emitted
	Positives  uint64
	LostSwitch uint64 // R's switch-out was missed: the CPU switched away from another task, or dropped a switch event
	Unresolved uint64 // still pending when the stream ended, less than the horizon before its end
	BadCPU     uint64 // an event named a CPU outside the range given to NewJoiner
}

// DefaultSlackNs bounds how far out of timestamp order events from different CPUs can reach
// user space: an event is stamped just before it is reserved in the ring buffer.
const DefaultSlackNs = 2_000_000

// Joiner labels wake events from the switch events that follow them on the same CPU.
// It keeps, per CPU, the samples whose R is still running there; it allocates only while its
// per-CPU queues grow to their working size.
type Joiner struct {
	horizonNs uint64
	slackNs   uint64
	pending   [][]Sample
	emit      func(*Sample) error
	maxTs     uint64
	lastSweep uint64
	Stats     JoinStats
}

// NewJoiner returns a joiner for ncpu CPUs and horizon H; emit receives each labelled sample
// (the pointer is valid only during the call).
func NewJoiner(ncpu int, horizonNs uint64, emit func(*Sample) error) *Joiner {
	return &Joiner{
		horizonNs: horizonNs,
		slackNs:   DefaultSlackNs,
		pending:   make([][]Sample, ncpu),
		emit:      emit,
	}
}

// Pending returns the number of samples waiting for an outcome.
func (j *Joiner) Pending() int {
	n := 0
	for _, p := range j.pending {
		n += len(p)
	}
	return n
}

// Wake adds a sample point.
func (j *Joiner) Wake(e *WakeEvent) error {
	if int(e.PrevCPU) >= len(j.pending) {
		j.Stats.BadCPU++
		return nil
	}
	p := &j.pending[e.PrevCPU]
	*p = append(*p, Sample{
		TsNs: e.TsNs, PrevCPU: e.PrevCPU, WakerCPU: e.WakerCPU, WTid: e.WTid, RTid: e.RTid,
		ROnCPUNs: e.ROnCPUNs, RStintNs: e.RStintNs, RGapNs: e.RGapNs, RVol: e.RVol, Feats: e.Feats,
	})
	return j.advance(e.TsNs)
}

// Switch resolves every sample pending on the event's CPU.
func (j *Joiner) Switch(e *SwitchEvent) error {
	if int(e.CPU) >= len(j.pending) {
		j.Stats.BadCPU++
		return nil
	}
	p := j.pending[e.CPU]
	for i := range p {
		s := &p[i]
		if e.PrevTid != s.RTid {
			j.Stats.LostSwitch++
			continue
		}
		var d uint64
		if e.TsNs > s.TsNs {
			d = e.TsNs - s.TsNs
		}
		s.Outcome, s.Label = Label(e.Voluntary, d, j.horizonNs)
		if s.Outcome != OutcomeTimeout {
			s.LeaveNs = d
		}
		if err := j.output(s); err != nil {
			// s and those before it are out (the sink has them, or counts them lost): a
			// sample must not be handed out twice.
			j.pending[e.CPU] = append(p[:0], p[i+1:]...)
			return err
		}
	}
	j.pending[e.CPU] = p[:0]
	return j.advance(e.TsNs)
}

// SwitchLost says a switch event of cpu was lost (the ring was full): any of the samples
// pending there may have lost its outcome with it, and a timeout would label one that left
// the CPU as still running. They are counted as LostSwitch instead. Call it before Advance,
// with every loss up to the moment Advance is given.
func (j *Joiner) SwitchLost(cpu int) {
	if cpu < 0 || cpu >= len(j.pending) {
		return
	}
	j.Stats.LostSwitch += uint64(len(j.pending[cpu]))
	j.pending[cpu] = j.pending[cpu][:0]
}

// Advance tells the joiner that every event stamped before now has been delivered (less the
// slack): samples older than the horizon with no switch-out are labelled 0, still running.
func (j *Joiner) Advance(now uint64) error {
	if now > j.maxTs {
		j.maxTs = now
	}
	if j.maxTs < j.slackNs+j.horizonNs {
		return nil
	}
	return j.timeout(j.maxTs - j.slackNs)
}

// advance runs the timeout sweep at most every quarter horizon of event time.
func (j *Joiner) advance(ts uint64) error {
	if ts > j.maxTs {
		j.maxTs = ts
	}
	if j.maxTs-j.lastSweep < j.horizonNs/4+1 {
		return nil
	}
	j.lastSweep = j.maxTs
	return j.Advance(j.maxTs)
}

// timeout labels samples whose horizon ended before 'complete', the time up to which all
// switch events are known to have been delivered.
func (j *Joiner) timeout(complete uint64) error {
	for c, p := range j.pending {
		keep := p[:0]
		for i := range p {
			s := &p[i]
			if s.TsNs+j.horizonNs <= complete {
				s.Outcome = OutcomeTimeout
				if err := j.output(s); err != nil {
					j.pending[c] = append(keep, p[i+1:]...) // as in Switch: nothing out twice
					return err
				}
				continue
			}
			keep = append(keep, *s)
		}
		j.pending[c] = keep
	}
	return nil
}

// Finish resolves what can be resolved at the end of the stream: every switch event up to
// endNs has been delivered. The rest is counted as Unresolved and dropped.
func (j *Joiner) Finish(endNs uint64) error {
	if err := j.timeout(endNs); err != nil {
		return err
	}
	for c, p := range j.pending {
		j.Stats.Unresolved += uint64(len(p))
		j.pending[c] = p[:0]
	}
	return nil
}

func (j *Joiner) output(s *Sample) error {
	j.Stats.Samples++
	j.Stats.Positives += uint64(s.Label)
	return j.emit(s)
}
