package features

import (
	"math"
	"math/rand/v2"
	"testing"
)

// A float64 model of the decayed count, updated eagerly on every syscall.
type eagerState struct{ v [NumBuckets]float64 }

func (e *eagerState) syscall(nr uint32) {
	for i := range e.v {
		e.v[i] *= float64(DecayNum) / DecayDen
	}
	e.v[Bucket(nr)]++
}

func TestDecayMatchesEagerFloat(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var s TaskState
	var e eagerState
	var snap [NumBuckets]uint32
	nrs := []uint32{0, 1, 202, 232, 9, 110, 24}
	for i := 0; i < 20000; i++ {
		nr := nrs[rng.IntN(len(nrs))]
		if rng.IntN(10) == 0 {
			nr = uint32(rng.IntN(600))
		}
		s.Syscall(nr)
		e.syscall(nr)
		if i%97 == 0 {
			s.Snapshot(&snap)
			for b := range snap {
				got := float64(snap[b]) / FixedOne
				// Truncation loses < 1 unit per update; decay shrinks old errors. Bound: 64 units.
				if math.Abs(got-e.v[b]) > 64.0/FixedOne+1e-9 {
					t.Fatalf("step %d bucket %d: fixed %f, float %f", i, b, got, e.v[b])
				}
			}
		}
	}
}

func TestDecaySteadyState(t *testing.T) {
	var s TaskState
	var snap [NumBuckets]uint32
	prev := uint32(0)
	for i := 0; i < 5000; i++ {
		s.Syscall(0)
		s.Snapshot(&snap)
		if snap[0] < prev {
			t.Fatalf("count of a repeated syscall decreased at %d", i)
		}
		prev = snap[0]
	}
	if prev >= MaxCount || prev < MaxCount-2*FixedOne/64 {
		t.Fatalf("steady state %f, want just under 64", float64(prev)/FixedOne)
	}
}

func TestDecayForgets(t *testing.T) {
	var s TaskState
	var snap [NumBuckets]uint32
	for i := 0; i < 100; i++ {
		s.Syscall(202)
	}
	for i := 0; i < PowLen; i++ { // another bucket's syscalls age futex's count
		s.Syscall(0)
	}
	s.Snapshot(&snap)
	if snap[Bucket(202)] != 0 {
		t.Fatalf("futex count %d after %d other syscalls, want 0", snap[Bucket(202)], PowLen)
	}
	// One step short of the table's end, something is left.
	var s2 TaskState
	s2.Syscall(202)
	for i := 0; i < 100; i++ {
		s2.Syscall(0)
	}
	s2.Snapshot(&snap)
	want := math.Pow(63.0/64, 100)
	if got := float64(snap[Bucket(202)]) / FixedOne; math.Abs(got-want) > 1e-4 {
		t.Fatalf("after 100 syscalls: %f, want %f", got, want)
	}
}

func TestDecayCounterWraps(t *testing.T) {
	s := TaskState{N: math.MaxUint32 - 3}
	for b := range s.Last {
		s.Last[b] = s.N
	}
	var snap [NumBuckets]uint32
	for i := 0; i < 10; i++ {
		s.Syscall(1)
	}
	s.Snapshot(&snap)
	var ref TaskState
	for i := 0; i < 10; i++ {
		ref.Syscall(1)
	}
	var want [NumBuckets]uint32
	ref.Snapshot(&want)
	if snap != want {
		t.Fatalf("wrapping syscall counter changes the features: %v vs %v", snap[1], want[1])
	}
}

func BenchmarkSyscallDecay(b *testing.B) {
	var s TaskState
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		s.Syscall(uint32(i & 31))
	}
}
