package features

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
)

// The Go mirror of bpf/abi.h: every record and enum that crosses the BPF/Go boundary, decoded
// and encoded here and nowhere else. bpf/abi_test.go checks ABIRecords and ABIEnums (which
// name every offset, size and value below) against the BTF of every BPF object, field by field.

// Event types (enum mls_event_type): a ring-buffer record's first byte.
const (
	EventSwitch       = 2 // struct mls_switch_event (capture)
	EventSchedWake    = 3 // struct mls_wake from the scheduler: a decision is wanted
	EventSchedOutcome = 4 // struct mls_sched_outcome
	EventWake         = 5 // struct mls_wake from the capture probes
)

// Wake flags (enum mls_wake_flags) of a scheduler wake event.
const (
	// WakeNoDecision: only to be scored; BPF has placed the task already.
	WakeNoDecision = 1
	// WakeVerdict: BPF decided at the wakeup (--infer kernel, a fixed placement), and
	// WakeKeep is that verdict (set: keep on the previous CPU; clear: migrate).
	WakeVerdict = 2
	WakeKeep    = 4
	// WakeBase: the task went to the base queue whatever the verdict (--shadow, the guard, no
	// idle CPU to migrate to).
	WakeBase = 8
	// WakeExplore: the action was taken at random (--explore); WakeActKeep: the action taken
	// was keep on the previous CPU.
	WakeExplore = 16
	WakeActKeep = 32
	// WakeAbstain: the net had no opinion (inside the model's abstention band).
	WakeAbstain = 64
)

// Placements (enum mls_placement): what decides a wakeup in BPF.
const (
	PlaceNet     = 0
	PlaceKeep    = 1
	PlaceMigrate = 2
	PlaceOnCPU   = 3
)

// Action is what BPF does with a waking task (enum mls_action).
type Action uint8

const (
	ActFIFO        Action = 0 // no opinion: the base queue (vtime or FIFO, whichever runs)
	ActKeepLocal   Action = 1
	ActMigrateIdle Action = 2
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

// struct mls_wake: the header, then 4 bytes per listed count.
const (
	wakeOffType      = 0
	wakeOffNvals     = 1
	wakeOffFlags     = 2
	wakeOffPrevCPU   = 4
	wakeOffWakerCPU  = 6
	wakeOffWTid      = 8
	wakeOffRTid      = 12
	wakeOffTs        = 16
	wakeOffROnCPU    = 24
	wakeOffSeq       = 32
	wakeOffNrAllowed = 40
	wakeOffRVol      = 44
	wakeOffRStint    = 48
	wakeOffRGap      = 56
	wakeOffMask      = 64
	wakeOffVals      = 72

	// WakeHeaderSize is the fixed part of a wake record; WakeMaxSize the largest record.
	WakeHeaderSize = wakeOffVals
	WakeMaxSize    = WakeHeaderSize + 4*NumBuckets
)

// struct mls_switch_event.
const (
	switchOffType      = 0
	switchOffVoluntary = 1
	switchOffCPU       = 2
	switchOffPrevTid   = 4
	switchOffNextTid   = 8
	switchOffTs        = 16
	SwitchEventSize    = 24
)

// struct mls_sched_outcome.
const (
	outcomeOffType      = 0
	outcomeOffVoluntary = 1
	outcomeOffCPU       = 2
	outcomeOffRTid      = 4
	outcomeOffSeq       = 8
	outcomeOffLeave     = 16
	outcomeOffTs        = 24
	OutcomeSize         = 32
)

// struct mls_decision.
const (
	decisionOffSeq    = 0
	decisionOffWTid   = 8
	decisionOffCPU    = 12
	decisionOffAction = 14
	DecisionSize      = 16
)

// Field and Record describe a C record's layout as the Go side uses it.
type Field struct {
	Name         string
	Offset, Size int
}

type Record struct {
	Name   string // the C struct
	Size   int
	Fields []Field // every member, in order
}

// ABIRecords are the records this file decodes or encodes by offset.
var ABIRecords = []Record{
	{"mls_wake", WakeMaxSize, []Field{
		{"type", wakeOffType, 1}, {"nvals", wakeOffNvals, 1}, {"flags", wakeOffFlags, 1}, {"_pad0", 3, 1},
		{"prev_cpu", wakeOffPrevCPU, 2}, {"waker_cpu", wakeOffWakerCPU, 2},
		{"w_tid", wakeOffWTid, 4}, {"r_tid", wakeOffRTid, 4},
		{"ts_ns", wakeOffTs, 8}, {"r_oncpu_ns", wakeOffROnCPU, 8}, {"seq", wakeOffSeq, 8},
		{"nr_allowed", wakeOffNrAllowed, 2}, {"_pad1", 42, 2}, {"r_vol", wakeOffRVol, 4},
		{"r_stint_ns", wakeOffRStint, 8}, {"r_gap_ns", wakeOffRGap, 8}, {"mask", wakeOffMask, 8}, {"vals", wakeOffVals, 4 * NumBuckets},
	}},
	{"mls_switch_event", SwitchEventSize, []Field{
		{"type", switchOffType, 1}, {"voluntary", switchOffVoluntary, 1}, {"cpu", switchOffCPU, 2},
		{"prev_tid", switchOffPrevTid, 4}, {"next_tid", switchOffNextTid, 4}, {"_pad", 12, 4},
		{"ts_ns", switchOffTs, 8},
	}},
	{"mls_sched_outcome", OutcomeSize, []Field{
		{"type", outcomeOffType, 1}, {"voluntary", outcomeOffVoluntary, 1}, {"cpu", outcomeOffCPU, 2},
		{"r_tid", outcomeOffRTid, 4}, {"seq", outcomeOffSeq, 8}, {"leave_ns", outcomeOffLeave, 8},
		{"ts_ns", outcomeOffTs, 8},
	}},
	{"mls_decision", DecisionSize, []Field{
		{"seq", decisionOffSeq, 8}, {"w_tid", decisionOffWTid, 4}, {"cpu", decisionOffCPU, 2},
		{"action", decisionOffAction, 1}, {"_pad", 15, 1},
	}},
}

// Enum is a C enum's values by name, as Go uses them.
type Enum struct {
	Name   string
	Values map[string]int64
}

// ABIEnums are the enums of bpf/abi.h this file mirrors (the counters are bpf/counters.go's).
var ABIEnums = []Enum{
	{"mls_event_type", map[string]int64{
		"MLS_EV_SWITCH": EventSwitch, "MLS_EV_SCHED_WAKE": EventSchedWake,
		"MLS_EV_SCHED_OUTCOME": EventSchedOutcome, "MLS_EV_WAKE": EventWake,
	}},
	{"mls_wake_flags", map[string]int64{"MLS_WAKE_NO_DECISION": WakeNoDecision, "MLS_WAKE_VERDICT": WakeVerdict,
		"MLS_WAKE_KEEP": WakeKeep, "MLS_WAKE_BASE": WakeBase, "MLS_WAKE_EXPLORE": WakeExplore, "MLS_WAKE_ACT_KEEP": WakeActKeep,
		"MLS_WAKE_ABSTAIN": WakeAbstain}},
	{"mls_placement", map[string]int64{"MLS_PLACE_NET": PlaceNet, "MLS_PLACE_KEEP": PlaceKeep,
		"MLS_PLACE_MIGRATE": PlaceMigrate, "MLS_PLACE_ONCPU": PlaceOnCPU}},
	{"mls_action", map[string]int64{
		"MLS_ACT_FIFO": int64(ActFIFO), "MLS_ACT_KEEP_LOCAL": int64(ActKeepLocal), "MLS_ACT_MIGRATE_IDLE": int64(ActMigrateIdle),
	}},
}

// WakeEvent is a decoded sample point: W woke while its previous CPU ran R. Seq, NrAllowed and
// Flags are the scheduler's (zero in capture samples). Feats is the model's input: R's counts,
// then the extras of R's scheduling state (SetExtras of the R* fields).
type WakeEvent struct {
	Type      uint8
	Flags     uint8
	PrevCPU   uint16
	WakerCPU  uint16
	NrAllowed uint16
	WTid      uint32
	RTid      uint32
	TsNs      uint64
	Seq       uint64
	ROnCPUNs  uint64 // R's scheduling state (SchedState)
	RStintNs  uint64
	RGapNs    uint64
	RVol      uint32
	Feats     [NumInputs]uint32
}

// State returns R's scheduling state.
func (e *WakeEvent) State() SchedState {
	return SchedState{OnCPUNs: e.ROnCPUNs, StintNs: e.RStintNs, Vol: e.RVol, GapNs: e.RGapNs}
}

// SwitchEvent is a decoded context switch on a CPU that had a pending sample.
type SwitchEvent struct {
	Voluntary bool
	CPU       uint16
	PrevTid   uint32
	NextTid   uint32
	TsNs      uint64
}

// OutcomeEvent is a decoded scheduler outcome: how R left the CPU after a wake event named it.
type OutcomeEvent struct {
	Voluntary bool
	CPU       uint16
	RTid      uint32
	Seq       uint64
	LeaveNs   uint64
	TsNs      uint64
}

// Decision is one answer to a scheduler wake event.
type Decision struct {
	Seq    uint64
	WTid   uint32
	CPU    uint16
	Action Action
}

var (
	// ErrShortEvent is returned for a record too short for its type.
	ErrShortEvent = errors.New("event record too short")
	// ErrBadEvent is returned for a record whose fields contradict each other.
	ErrBadEvent = errors.New("malformed event record")
)

// EventType returns the type byte of a raw record (0 when empty).
func EventType(raw []byte) uint8 {
	if len(raw) == 0 {
		return 0
	}
	return raw[0]
}

// DecodeWake fills e from a raw wake record (EventWake or EventSchedWake): the header, a 64-bit
// mask of the listed buckets, then their counts in increasing bucket order; the other buckets
// are 0. A record may be longer than its counts (the scheduler reserves the largest size). It
// does not allocate.
func DecodeWake(raw []byte, e *WakeEvent) error {
	if len(raw) < WakeHeaderSize {
		return fmt.Errorf("wake event: %w (%d < %d bytes)", ErrShortEvent, len(raw), WakeHeaderSize)
	}
	le := binary.LittleEndian
	mask := le.Uint64(raw[wakeOffMask:])
	n := bits.OnesCount64(mask)
	if int(raw[wakeOffNvals]) != n {
		return fmt.Errorf("wake event: %w: %d counts for a mask of %d buckets", ErrBadEvent, raw[wakeOffNvals], n)
	}
	if len(raw) < WakeHeaderSize+4*n {
		return fmt.Errorf("wake event: %w (%d < %d bytes)", ErrShortEvent, len(raw), WakeHeaderSize+4*n)
	}
	e.Type = raw[wakeOffType]
	e.Flags = raw[wakeOffFlags]
	e.PrevCPU = le.Uint16(raw[wakeOffPrevCPU:])
	e.WakerCPU = le.Uint16(raw[wakeOffWakerCPU:])
	e.NrAllowed = le.Uint16(raw[wakeOffNrAllowed:])
	e.WTid = le.Uint32(raw[wakeOffWTid:])
	e.RTid = le.Uint32(raw[wakeOffRTid:])
	e.TsNs = le.Uint64(raw[wakeOffTs:])
	e.ROnCPUNs = le.Uint64(raw[wakeOffROnCPU:])
	e.Seq = le.Uint64(raw[wakeOffSeq:])
	e.RVol = le.Uint32(raw[wakeOffRVol:])
	e.RStintNs = le.Uint64(raw[wakeOffRStint:])
	e.RGapNs = le.Uint64(raw[wakeOffRGap:])
	e.Feats = [NumInputs]uint32{}
	vals := raw[wakeOffVals:]
	for i := 0; mask != 0; i++ {
		b := bits.TrailingZeros64(mask) % NumBuckets
		mask &= mask - 1
		e.Feats[b] = le.Uint32(vals[4*i:])
	}
	st := e.State()
	SetExtras(&e.Feats, &st)
	return nil
}

// EncodeWake writes e as a raw wake record into b (at least WakeMaxSize bytes), listing the
// nonzero buckets, and returns its length: the inverse of DecodeWake (tests, tools). The
// extras in e.Feats are not written: DecodeWake computes them from the R* fields.
func EncodeWake(b []byte, e *WakeEvent) int {
	_ = b[WakeMaxSize-1]
	le := binary.LittleEndian
	clear(b[:WakeHeaderSize])
	b[wakeOffType] = e.Type
	b[wakeOffFlags] = e.Flags
	le.PutUint16(b[wakeOffPrevCPU:], e.PrevCPU)
	le.PutUint16(b[wakeOffWakerCPU:], e.WakerCPU)
	le.PutUint16(b[wakeOffNrAllowed:], e.NrAllowed)
	le.PutUint32(b[wakeOffWTid:], e.WTid)
	le.PutUint32(b[wakeOffRTid:], e.RTid)
	le.PutUint64(b[wakeOffTs:], e.TsNs)
	le.PutUint64(b[wakeOffROnCPU:], e.ROnCPUNs)
	le.PutUint64(b[wakeOffSeq:], e.Seq)
	le.PutUint32(b[wakeOffRVol:], e.RVol)
	le.PutUint64(b[wakeOffRStint:], e.RStintNs)
	le.PutUint64(b[wakeOffRGap:], e.RGapNs)
	var mask uint64
	n := 0
	for i, v := range Counts(&e.Feats) {
		if v != 0 {
			mask |= 1 << i
			le.PutUint32(b[wakeOffVals+4*n:], v)
			n++
		}
	}
	le.PutUint64(b[wakeOffMask:], mask)
	b[wakeOffNvals] = byte(n)
	return WakeHeaderSize + 4*n
}

// DecodeSwitch fills e from a raw switch record. It does not allocate.
func DecodeSwitch(raw []byte, e *SwitchEvent) error {
	if len(raw) < SwitchEventSize {
		return fmt.Errorf("switch event: %w (%d < %d bytes)", ErrShortEvent, len(raw), SwitchEventSize)
	}
	le := binary.LittleEndian
	e.Voluntary = raw[switchOffVoluntary] != 0
	e.CPU = le.Uint16(raw[switchOffCPU:])
	e.PrevTid = le.Uint32(raw[switchOffPrevTid:])
	e.NextTid = le.Uint32(raw[switchOffNextTid:])
	e.TsNs = le.Uint64(raw[switchOffTs:])
	return nil
}

// EncodeSwitch writes e as a raw switch record into b (at least SwitchEventSize bytes).
func EncodeSwitch(b []byte, e *SwitchEvent) {
	_ = b[SwitchEventSize-1]
	le := binary.LittleEndian
	clear(b[:SwitchEventSize])
	b[switchOffType] = EventSwitch
	if e.Voluntary {
		b[switchOffVoluntary] = 1
	}
	le.PutUint16(b[switchOffCPU:], e.CPU)
	le.PutUint32(b[switchOffPrevTid:], e.PrevTid)
	le.PutUint32(b[switchOffNextTid:], e.NextTid)
	le.PutUint64(b[switchOffTs:], e.TsNs)
}

// DecodeOutcome fills o from a raw outcome record. It does not allocate.
func DecodeOutcome(raw []byte, o *OutcomeEvent) error {
	if len(raw) < OutcomeSize {
		return fmt.Errorf("sched outcome event: %w (%d < %d bytes)", ErrShortEvent, len(raw), OutcomeSize)
	}
	le := binary.LittleEndian
	o.Voluntary = raw[outcomeOffVoluntary] != 0
	o.CPU = le.Uint16(raw[outcomeOffCPU:])
	o.RTid = le.Uint32(raw[outcomeOffRTid:])
	o.Seq = le.Uint64(raw[outcomeOffSeq:])
	o.LeaveNs = le.Uint64(raw[outcomeOffLeave:])
	o.TsNs = le.Uint64(raw[outcomeOffTs:])
	return nil
}

// EncodeOutcome writes o as a raw outcome record into b (at least OutcomeSize bytes).
func EncodeOutcome(b []byte, o *OutcomeEvent) {
	_ = b[OutcomeSize-1]
	le := binary.LittleEndian
	clear(b[:OutcomeSize])
	b[outcomeOffType] = EventSchedOutcome
	if o.Voluntary {
		b[outcomeOffVoluntary] = 1
	}
	le.PutUint16(b[outcomeOffCPU:], o.CPU)
	le.PutUint32(b[outcomeOffRTid:], o.RTid)
	le.PutUint64(b[outcomeOffSeq:], o.Seq)
	le.PutUint64(b[outcomeOffLeave:], o.LeaveNs)
	le.PutUint64(b[outcomeOffTs:], o.TsNs)
}

// EncodeDecision writes d into b (at least DecisionSize bytes) in the kernel's layout. It does
// not allocate.
func EncodeDecision(b []byte, d *Decision) {
	_ = b[DecisionSize-1]
	le := binary.LittleEndian
	le.PutUint64(b[decisionOffSeq:], d.Seq)
	le.PutUint32(b[decisionOffWTid:], d.WTid)
	le.PutUint16(b[decisionOffCPU:], d.CPU)
	b[decisionOffAction] = byte(d.Action)
	b[DecisionSize-1] = 0
}

// DecodeDecision is EncodeDecision's inverse (tests, tools).
func DecodeDecision(b []byte, d *Decision) {
	_ = b[DecisionSize-1]
	le := binary.LittleEndian
	d.Seq = le.Uint64(b[decisionOffSeq:])
	d.WTid = le.Uint32(b[decisionOffWTid:])
	d.CPU = le.Uint16(b[decisionOffCPU:])
	d.Action = Action(b[decisionOffAction])
}
