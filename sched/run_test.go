package sched

import (
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mlsched/mlsched/bpf"
	"github.com/mlsched/mlsched/model"
)

func TestPreflight(t *testing.T) {
	dir := t.TempDir()
	if err := preflight(filepath.Join(dir, "missing")); !errors.Is(err, bpf.ErrNoSchedExt) {
		t.Fatalf("no sched_ext dir: %v", err)
	}
	write := func(name, v string) {
		p := filepath.Join(dir, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(v), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("state", "disabled\n")
	if err := preflight(dir); err != nil {
		t.Fatalf("disabled: %v", err)
	}
	write("state", "enabled\n")
	write("root/ops", "scx_rusty_1.0.4\n")
	err := preflight(dir)
	if !errors.Is(err, bpf.ErrBusy) || !strings.Contains(err.Error(), `"scx_rusty_1.0.4"`) {
		t.Fatalf("enabled: %v", err)
	}
}

func TestExitLine(t *testing.T) {
	r := &Report{}
	r.Exit.Kind = bpf.ExitErrorStall
	copy(r.Exit.Reason[:], "runnable task stall")
	copy(r.Exit.Msg[:], "init[117] failed to run for 6.392s")
	if got, want := r.ExitLine(), "EXIT: error_stall runnable task stall (init[117] failed to run for 6.392s)"; got != want {
		t.Fatalf("%q != %q", got, want)
	}
}

// The kernel form of a model: the record BPF reads for a model it can hold, a refusal naming
// the limit (and the way out) for one it cannot.
func TestKernelNet(t *testing.T) {
	def, err := model.Default()
	if err != nil {
		t.Fatal(err)
	}
	net, err := kernelNet(def)
	if err != nil {
		t.Fatal(err)
	}
	if len(net) != model.NetSize {
		t.Errorf("kernel form is %d bytes, struct mls_net %d", len(net), model.NetSize)
	}
	big := model.New(17, 1_000_000)
	for i := range big.W1 {
		big.W1[i] = 0.01 * float32(i%7)
	}
	if _, err := kernelNet(big); !errors.Is(err, model.ErrKernelForm) || !strings.Contains(err.Error(), "--infer user") {
		t.Errorf("hidden 17: %v, want ErrKernelForm naming --infer user", err)
	}
}

// A live accuracy of 0 (a model wrong on every outcome of the window) reads as 0, not as the
// NaN of "nothing measured yet".
func TestLiveAccuracyZero(t *testing.T) {
	var st Stats
	if !math.IsNaN(st.LiveAccuracy()) {
		t.Errorf("fresh stats: live accuracy %v, want NaN", st.LiveAccuracy())
	}
	st.setLiveAccuracy(0)
	if st.LiveAccuracy() != 0 {
		t.Errorf("after 0: live accuracy %v, want 0", st.LiveAccuracy())
	}
	st.setLiveAccuracy(0.75)
	if st.LiveAccuracy() != 0.75 {
		t.Errorf("after 0.75: live accuracy %v", st.LiveAccuracy())
	}
}

// The report's per-program run times add up over restarts in place, like its counters.
func TestAddProgStats(t *testing.T) {
	var sum map[string]bpf.ProgStat
	sum = addProgStats(sum, nil)
	if sum != nil {
		t.Fatalf("nothing added: %v", sum)
	}
	sum = addProgStats(sum, map[string]bpf.ProgStat{"enqueue": {Runs: 2, Runtime: 3}})
	sum = addProgStats(sum, map[string]bpf.ProgStat{"enqueue": {Runs: 5, Runtime: 7}, "dispatch": {Runs: 1, Runtime: 1}})
	if sum["enqueue"] != (bpf.ProgStat{Runs: 7, Runtime: 10}) || sum["dispatch"] != (bpf.ProgStat{Runs: 1, Runtime: 1}) {
		t.Errorf("sum %v", sum)
	}
}
