package model

import (
	"math/rand/v2"
	"os"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/mlsched/mlsched/features"
)

func threadCPU() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(1 /* RUSAGE_THREAD */, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// TestCPUTimePerOp reports thread CPU time per call (robust to a loaded machine); run with
// MLSCHED_CPUTIME=1.
func TestCPUTimePerOp(t *testing.T) {
	if os.Getenv("MLSCHED_CPUTIME") == "" {
		t.Skip("set MLSCHED_CPUTIME=1")
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	p := NewPredictor(testModel(rand.New(rand.NewPCG(1, 2)), DefaultHidden))
	for _, kernel := range availableKernels() {
		restore := useKernel(kernel)
		avx := kernel != "go"
		for _, nz := range []int{12, 64} {
			rng := rand.New(rand.NewPCG(5, 6))
			var ins [64]*[features.NumInputs]uint32
			for i := range ins {
				ins[i] = randomInput(rng, nz)
			}
			for _, fn := range []string{"Predict", "KeepLocal"} {
				n := 20_000_000
				if !avx {
					n /= 8
				}
				best := time.Duration(1 << 62)
				for r := 0; r < 3; r++ {
					var s float32
					k := 0
					t0 := threadCPU()
					for i := 0; i < n; i++ {
						if fn == "Predict" {
							s += p.Predict(ins[i&63])
						} else if p.KeepLocal(ins[i&63]) {
							k++
						}
					}
					best = min(best, (threadCPU()-t0)/time.Duration(n/1000))
					_, _ = s, k
				}
				t.Logf("%s nonzero=%d %s: %.1f ns/op CPU time", kernel, nz, fn, float64(best)/1000)
			}
		}
		restore()
	}
}
