package bpf

import (
	"math/bits"
	"math/rand/v2"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/mlsched/mlsched/features"
)

// The BPF feature code (features.h), run through BPF_PROG_TEST_RUN, gives exactly the numbers
// of the Go mirror (features.TaskState) for random syscall sequences.
func TestBPFDecayMatchesGo(t *testing.T) {
	requireRoot(t)
	var objs testprogsObjects
	if err := loadTestprogsObjects(&objs, nil); err != nil {
		t.Fatalf("load test programs: %v", err)
	}
	defer objs.Close()

	rng := rand.New(rand.NewPCG(7, 8))
	var goState features.TaskState
	var want, got [features.NumBuckets]uint32
	common := []uint32{0, 1, 202, 232, 7, 24, 35, 110, 257, 3}
	for round := 0; round < 60; round++ {
		n := rng.IntN(513)
		var nrs [512]uint32
		for i := 0; i < n; i++ {
			switch {
			case round%10 == 9: // long runs of one syscall age every other bucket out
				nrs[i] = 0
			case rng.IntN(8) == 0:
				nrs[i] = rng.Uint32N(1000) // includes numbers past the table
			default:
				nrs[i] = common[rng.IntN(len(common))]
			}
			goState.Syscall(nrs[i])
		}
		if err := objs.TestNrs.Set(nrs); err != nil {
			t.Fatal(err)
		}
		if err := objs.TestCount.Set(uint32(n)); err != nil {
			t.Fatal(err)
		}
		ret, err := objs.MlsTestDecay.Run(&ebpf.RunOptions{})
		if err != nil || ret != 0 {
			t.Fatalf("test run: ret %d, %v", ret, err)
		}
		if err := objs.TestOut.Get(&got); err != nil {
			t.Fatal(err)
		}
		goState.Snapshot(&want)
		if got != want {
			for b := range got {
				if got[b] != want[b] {
					t.Fatalf("round %d (after %d syscalls): bucket %d: BPF %d, Go %d", round, goState.N, b, got[b], want[b])
				}
			}
		}
		// The sparse snapshot (capture's samples) lists the used buckets, in order, with
		// the same values; a bucket outside its mask is 0.
		var sparse [features.NumBuckets]uint32
		var mask uint64
		var nSparse uint32
		if err := objs.TestSparse.Get(&sparse); err != nil {
			t.Fatal(err)
		}
		if err := objs.TestSparseMask.Get(&mask); err != nil {
			t.Fatal(err)
		}
		if err := objs.TestSparseN.Get(&nSparse); err != nil {
			t.Fatal(err)
		}
		if int(nSparse) != bits.OnesCount64(mask) {
			t.Fatalf("round %d: %d sparse values for mask %#x", round, nSparse, mask)
		}
		k := 0
		for b := range want {
			if mask>>b&1 == 0 {
				if want[b] != 0 {
					t.Fatalf("round %d: bucket %d = %d missing from the sparse mask %#x", round, b, want[b], mask)
				}
				continue
			}
			if sparse[k] != want[b] {
				t.Fatalf("round %d: sparse value %d (bucket %d) = %d, dense %d", round, k, b, sparse[k], want[b])
			}
			k++
		}
		var st testprogsTaskFeat
		if err := objs.TestState.Get(&st); err != nil {
			t.Fatal(err)
		}
		if st.N != goState.N {
			t.Fatalf("round %d: syscall number %d, Go %d", round, st.N, goState.N)
		}
		for b := range st.B {
			if st.B[b].Val != goState.Val[b] || st.B[b].Last != goState.Last[b] {
				t.Fatalf("round %d: bucket %d: state %+v, Go %d/%d", round, b, st.B[b], goState.Val[b], goState.Last[b])
			}
		}
	}
}
