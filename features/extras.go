package features

import "math/bits"

// Feature schema v2 (docs/FEATURES.md, "Schema v2"): after the 64 decayed syscall counts, the
// model reads four inputs from R's scheduling state, kept per task by the one BPF feature
// pipeline (bpf/features.h) in capture and in the scheduler alike:
//
//   - InputOnCPU: how long R has been on its CPU at the wakeup;
//   - InputStint: the running average of R's CPU stints (switch-in to switch-out);
//   - InputVol: the running average of "R left the CPU voluntarily" over those stints;
//   - InputGap: how long R was off the CPU before its current stint.
//
// The averages move by 1/2^EWMAShift per stint, at every stint's end (BPF's stopping() and
// sched_switch), starting from R's first stint; before it the stint average and the gap are 0
// and the voluntary average is one half. The chosen four and why: docs/TRAINING.md, "Schema v2
// ablation".
//
// The raw values (ns, and Q16 for the voluntary average) are what the BPF records and the trace
// keep; the model's inputs are their integer transforms below, computed identically in Go
// (SetExtras) and in BPF (mls_log_time, mls_vol_input in bpf/features.h, which a test checks
// bit for bit). Each is an integer in [0, MaxExtraInput]: the float net reads it divided by
// 2^13 (ExtraInputScale), the kernel form reads the integer itself.
const (
	// NumExtras is the number of scheduling-state inputs; NumInputs the model's input width.
	NumExtras = 4
	NumInputs = NumBuckets + NumExtras
)

// The index of each extra in an input vector.
const (
	InputOnCPU = NumBuckets + iota
	InputStint
	InputVol
	InputGap
)

const (
	// EWMAShift: each stint moves the averages by 1/2^EWMAShift (1/8).
	EWMAShift = 3
	// VolOne is a voluntary average of 1.0 (Q16); VolUnknown the value before R's first stint.
	VolOne     = 1 << 16
	VolUnknown = VolOne / 2

	// LogTimeFrac is the number of fractional bits of LogTime; LogTimeUnitShift the time unit
	// (2^10 ns, ~1 µs); LogTimeMaxNs the largest time it distinguishes.
	LogTimeFrac      = 9
	LogTimeUnitShift = 10
	LogTimeMaxNs     = 1 << 40
	// VolInputShift: the voluntary average's input is its Q16 value >> 3, 0..8192.
	VolInputShift = 3

	// ExtraInputScale: the float net's value of an extra input is the integer / 2^13.
	ExtraInputScale = 1 << 13
	// MaxExtraInput bounds every extra input: LogTime of LogTimeMaxNs.
	MaxExtraInput = (40 - LogTimeUnitShift) << LogTimeFrac
)

// ExtraNames names the extra inputs in order, as inspect and the docs show them.
var ExtraNames = [NumExtras]string{"oncpu", "stint", "vol", "gap"}

// InputName names input j of an input vector: a bucket's syscall, or an extra.
func InputName(j int) string {
	if j >= NumBuckets && j < NumInputs {
		return ExtraNames[j-NumBuckets]
	}
	return BucketName(j)
}

// LogTime is a time's input: log2(1 + ns/2^10) in fixed point with LogTimeFrac fractional bits,
// linear between powers of two (the bit length and the bits below the leading one), ns clamped
// to LogTimeMaxNs. Monotone, 0 for 0.
func LogTime(ns uint64) uint32 {
	ns = min(ns, LogTimeMaxNs)
	y := ns>>LogTimeUnitShift + 1
	e := uint(bits.Len64(y) - 1)
	var frac uint64
	if e >= LogTimeFrac {
		frac = y >> (e - LogTimeFrac)
	} else {
		frac = y << (LogTimeFrac - e)
	}
	return uint32(e<<LogTimeFrac) | uint32(frac&(1<<LogTimeFrac-1))
}

// VolInput is the voluntary average's input (q16 clamped to VolOne).
func VolInput(q16 uint32) uint32 { return min(q16, VolOne) >> VolInputShift }

// SchedState is R's scheduling state at a wakeup, raw, as the BPF records and the trace keep it.
type SchedState struct {
	OnCPUNs uint64 // how long R had been on the CPU
	StintNs uint64 // the average of R's stints (0 before its first)
	Vol     uint32 // the average of R's voluntary leaves, Q16 (VolUnknown before its first stint)
	GapNs   uint64 // how long R was off the CPU before its current stint (0 if unknown)
}

// SetExtras writes the extra inputs of state st into in's last NumExtras entries.
func SetExtras(in *[NumInputs]uint32, st *SchedState) {
	in[InputOnCPU] = LogTime(st.OnCPUNs)
	in[InputStint] = LogTime(st.StintNs)
	in[InputVol] = VolInput(st.Vol)
	in[InputGap] = LogTime(st.GapNs)
}

// Counts returns the syscall-count part of an input vector.
func Counts(in *[NumInputs]uint32) *[NumBuckets]uint32 { return (*[NumBuckets]uint32)(in[:NumBuckets]) }

// TaskSched is a task's scheduling state as BPF keeps it (the part of struct task_feat in
// bpf/features.h that mls_feat_stint_start and mls_feat_stint_end update): their Go mirror,
// which a test checks against the BPF code bit for bit.
type TaskSched struct {
	StopNs, GapNs, StintAvg uint64
	VolAvg, Stints          uint32
}

// StintStart: the task's stint starts at now.
func (t *TaskSched) StintStart(now uint64) {
	t.GapNs = 0
	if t.StopNs != 0 && now > t.StopNs {
		t.GapNs = now - t.StopNs
	}
}

// StintEnd: the task's stint, started at start, ends at now.
func (t *TaskSched) StintEnd(start, now uint64, voluntary bool) {
	var n uint64
	if start != 0 && now > start {
		n = now - start
	}
	var vol uint32
	if voluntary {
		vol = VolOne
	}
	if t.Stints == 0 {
		t.StintAvg, t.VolAvg = n, vol
	} else {
		t.StintAvg += uint64(int64(n-t.StintAvg) >> EWMAShift)
		t.VolAvg += uint32(int32(vol-t.VolAvg) >> EWMAShift)
	}
	if t.Stints != ^uint32(0) {
		t.Stints++
	}
	t.StopNs = now
}

// State is the sample BPF takes of the task at now, on its CPU since start (mls_state_fill).
func (t *TaskSched) State(start, now uint64) SchedState {
	st := SchedState{StintNs: t.StintAvg, Vol: VolUnknown, GapNs: t.GapNs}
	if now > start {
		st.OnCPUNs = now - start
	}
	if t.Stints != 0 {
		st.Vol = t.VolAvg
	}
	return st
}
