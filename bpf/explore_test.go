package bpf

import (
	"math"
	"testing"
)

// --explore's rate is over all decided wakeups; BPF explores among the scored ones (one in
// scoreEvery), so the threshold on a 32-bit random number is rate*scoreEvery of its range.
func TestExploreThresh(t *testing.T) {
	for _, c := range []struct {
		rate float64
		want float64 // fraction of 2^32
	}{{0.02, 0.16}, {0.001, 0.008}, {0.125, 1}, {0.5, 1}} {
		got := float64(exploreThresh(c.rate)) / (1 << 32)
		if math.Abs(got-min(c.want, float64(math.MaxUint32)/(1<<32))) > 1e-6 {
			t.Errorf("exploreThresh(%v) = %v of the range, want %v", c.rate, got, c.want)
		}
	}
}
