package features

// TaskState mirrors the BPF per-task feature state (struct task_feat in bpf/features.h):
// a syscall counter and, per bucket, a decayed count valid at the task's syscall number Last.
//
// Decay is lazy: a syscall decays and bumps its own bucket only (O(1)); the other buckets
// are brought up to date when a snapshot is taken. The integer arithmetic is exactly the BPF
// code's, so both give the same numbers bit for bit.
type TaskState struct {
	N    uint32
	Val  [NumBuckets]uint32
	Last [NumBuckets]uint32
}

// decayed returns v, valid at syscall number last, decayed to syscall number n.
func decayed(v, last, n uint32) uint32 {
	k := n - last // wraps like the BPF u32 arithmetic
	if k >= PowLen {
		return 0
	}
	return uint32(uint64(v) * uint64(powTable[k]) >> PowShift)
}

// Syscall records one syscall of the task.
func (s *TaskState) Syscall(nr uint32) {
	b := Bucket(nr)
	s.N++
	s.Val[b] = decayed(s.Val[b], s.Last[b], s.N) + FixedOne
	s.Last[b] = s.N
}

// Snapshot writes the task's 64 decayed counts, all decayed to its current syscall number.
func (s *TaskState) Snapshot(out *[NumBuckets]uint32) {
	for b := range out {
		out[b] = decayed(s.Val[b], s.Last[b], s.N)
	}
}

// MaxCount is the largest fixed-point value a decayed count can reach (a task that makes only
// syscalls of one bucket approaches 64.0 from below).
const MaxCount = DecayDen * FixedOne
