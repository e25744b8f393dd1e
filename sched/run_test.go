package sched

import (
	"errors"
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
