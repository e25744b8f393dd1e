package bpf

import (
	"bytes"
	"errors"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
)

// Both scheduler objects offer what the loader takes (their records: abi_test.go).
func TestSchedLayouts(t *testing.T) {
	for name, load := range map[string]func() (*ebpf.CollectionSpec, error){"sched": loadSched, "schedcompat": loadSchedcompat} {
		spec, err := load()
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range []string{"mlsched_ops", "events", "decisions", "sched_counters", "task_feat_slots", "cpu_states"} {
			if spec.Maps[m] == nil {
				t.Errorf("%s: no map %s", name, m)
			}
		}
		for _, v := range []string{"self_tgid", "use_model", "queue_vtime", "nr_cpus", "kf_legacy_names", "slice_ns", "pending_timeout_ns", "timer_period_ns", "user_stall_ns", "exit_info", "mls_feat_mask"} {
			if spec.Variables[v] == nil {
				t.Errorf("%s: no variable %s", name, v)
			}
		}
		if err := setOpsField(spec.Maps["mlsched_ops"], "timeout_ms", 1234); err != nil {
			t.Error(err)
		}
	}
}

func TestExitInfoStrings(t *testing.T) {
	var e ExitInfo
	e.Kind = ExitErrorStall
	copy(e.Reason[:], "runnable task stall\x00junk")
	e.ExitCode = ExitCodeActRestart
	if e.KindName() != "error_stall" || e.ReasonString() != "runnable task stall" || !e.Restart() {
		t.Fatalf("%s %q %v", e.KindName(), e.ReasonString(), e.Restart())
	}
}

// kernelLike builds a BTF spec with the named functions (and sched_ext_ops unless noSCX).
func kernelLike(t *testing.T, noSCX bool, funcs ...string) *btf.Spec {
	t.Helper()
	var b btf.Builder
	proto := &btf.FuncProto{Return: (*btf.Void)(nil)}
	for _, f := range funcs {
		if _, err := b.Add(&btf.Func{Name: f, Type: proto, Linkage: btf.GlobalFunc}); err != nil {
			t.Fatal(err)
		}
	}
	if !noSCX {
		if _, err := b.Add(&btf.Struct{Name: "sched_ext_ops", Size: 8}); err != nil {
			t.Fatal(err)
		}
	}
	raw, err := b.Marshal(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	spec, err := btf.LoadSpecFromReader(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	return spec
}

func TestProbeKernelVariants(t *testing.T) {
	for _, c := range []struct {
		name    string
		noSCX   bool
		funcs   []string
		want    kfuncVariant
		wantErr bool
	}{
		// 7.x: the ___v2 and ___v2_impl flavours next to the plain name, the layout that
		// trips cilium/ebpf v0.22's by-name lookup.
		{"7.x", false, []string{"scx_bpf_dsq_insert", "scx_bpf_dsq_insert___v2", "scx_bpf_dsq_insert___v2_impl", "scx_bpf_dsq_insert_impl"}, kfuncVariant{v2: true}, false},
		{"6.13-6.x", false, []string{"scx_bpf_dsq_insert", "scx_bpf_dispatch"}, kfuncVariant{}, false},
		{"6.12", false, []string{"scx_bpf_dispatch", "scx_bpf_consume"}, kfuncVariant{legacy: true}, false},
		{"no dispatch kfunc", false, []string{"scx_bpf_kick_cpu"}, kfuncVariant{}, true},
		{"no sched_ext", true, []string{"bpf_task_release"}, kfuncVariant{}, true},
	} {
		got, err := probeSpec(kernelLike(t, c.noSCX, c.funcs...))
		if (err != nil) != c.wantErr || (err == nil && got != c.want) {
			t.Errorf("%s: got %+v, %v; want %+v, error %v", c.name, got, err, c.want, c.wantErr)
		}
		if c.noSCX && !errors.Is(err, ErrNoSchedExt) {
			t.Errorf("%s: %v, want ErrNoSchedExt", c.name, err)
		}
	}
}
