package features

import (
	"math"
	"testing"
)

// LogTime is log2(1 + ns/1024) to within the chord error of a linear mantissa (< 0.087) and
// one unit of its last bit, monotone, 0 at 0, and clamped at LogTimeMaxNs.
func TestLogTime(t *testing.T) {
	if LogTime(0) != 0 || LogTime(1023) != 0 {
		t.Fatalf("LogTime(0) = %d, LogTime(1023) = %d", LogTime(0), LogTime(1023))
	}
	prev := uint32(0)
	for ns := uint64(0); ns < 1<<42; ns = ns*9/8 + 977 {
		v := LogTime(ns)
		if v < prev {
			t.Fatalf("not monotone at %d ns: %d < %d", ns, v, prev)
		}
		prev = v
		if v > MaxExtraInput {
			t.Fatalf("LogTime(%d) = %d > MaxExtraInput %d", ns, v, MaxExtraInput)
		}
		if ns > LogTimeMaxNs {
			if v != LogTime(LogTimeMaxNs) {
				t.Fatalf("not clamped at %d ns", ns)
			}
			continue
		}
		exact := math.Log2(1 + float64(ns>>LogTimeUnitShift))
		if got := float64(v) / (1 << LogTimeFrac); got > exact+1e-9 || got < exact-0.0861-1.0/(1<<LogTimeFrac) {
			t.Fatalf("LogTime(%d) = %.4f, log2 %.4f", ns, got, exact)
		}
	}
	if LogTime(LogTimeMaxNs) != MaxExtraInput {
		t.Fatalf("LogTime(max) = %d, MaxExtraInput %d", LogTime(LogTimeMaxNs), MaxExtraInput)
	}
}

func TestSetExtras(t *testing.T) {
	var in [NumInputs]uint32
	in[0] = 7
	SetExtras(&in, &SchedState{OnCPUNs: 1 << 20, StintNs: 0, Vol: VolOne + 5, GapNs: 3 << 10})
	want := [NumExtras]uint32{10 << LogTimeFrac, 0, VolOne >> VolInputShift, 2<<LogTimeFrac | 0}
	if got := [NumExtras]uint32(in[NumBuckets:]); got != want || in[0] != 7 {
		t.Fatalf("extras %v, want %v (counts kept: %d)", got, want, in[0])
	}
	if InputName(InputVol) != "vol" || InputName(0) != "read" {
		t.Fatalf("names %q %q", InputName(InputVol), InputName(0))
	}
}
