package vmtest

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestVMBench measures a wakeup-heavy workload in one VM under the kernel's default
// scheduler, mlsched --policy fifo and mlsched with the default model (when the binary embeds
// one), then the default scheduler again to show the drift within the run. It is a
// measurement, not a claim: opt-in with MLSCHED_VMBENCH=1 (`make vmbench`), and it writes a
// markdown table to vmtest/out/bench.md for docs/BENCHMARKS.md.
//
// TCG does not model caches: these numbers show correctness and overhead, never the cache
// benefit of keeping a task local.
func TestVMBench(t *testing.T) {
	if os.Getenv("MLSCHED_VMBENCH") == "" {
		t.Skip("a measurement, not a claim: run `make vmbench` (MLSCHED_VMBENCH=1)")
	}
	e := Setup(t)
	needRun(t, e)
	d := 10 * time.Second
	if v := os.Getenv("MLSCHED_VMBENCH_DURATION"); v != "" {
		var err error
		if d, err = time.ParseDuration(v); err != nil {
			t.Fatal(err)
		}
	}
	arms := []string{"default", "fifo"}
	if hasModelPolicy(e) {
		arms = append(arms, "model")
	}
	arms = append(arms, "default")
	// Pipe ping-pong pairs are the wakeups; two spinners keep the previous CPU busy so the
	// model path (wakee's CPU busy) is taken; a few sleepers add timer wakeups.
	load := []string{"/init", "workload", "-duration", d.String(), "-spin", "2", "-sleep", "2", "-pipes", "4"}

	s := NewScenario("bench")
	s.Timeout = 120*time.Second + time.Duration(len(arms))*(d+60*time.Second)
	type armSteps struct{ enabled, wl, exit int }
	steps := make([]armSteps, len(arms))
	for i, arm := range arms {
		name := fmt.Sprintf("sched-%d", i)
		if arm != "default" {
			s.Start(name, policyArgs(e, arm, "--metrics-addr", "")...)
			steps[i].enabled = s.MayFail(s.WaitFile(SCXState, "enabled", attachTimeout))
			s.Sleep(time.Second)
		}
		steps[i].wl = s.Exec(d+60*time.Second, load...)
		if arm != "default" {
			s.Signal(name, "INT")
			steps[i].exit = s.Wait(name, 30*time.Second)
			s.WaitFile(SCXState, "disabled", 10*time.Second)
		}
	}
	r := e.Boot(t, s)

	var b strings.Builder
	fmt.Fprintf(&b, "| arm | pipe round trips/s | vs default | 1 ms sleeps/s | spin Miter/s | decisions keep / migrate / fifo | fallbacks ring_full / timeout | round trip per decision |\n")
	fmt.Fprintf(&b, "| --- | ---: | ---: | ---: | ---: | --- | --- | ---: |\n")
	var base float64
	for i, arm := range arms {
		var w workloadReport
		if !decodeJSON(r.Step(steps[i].wl).Stdout, &w) || w.ElapsedS == 0 {
			t.Fatalf("%s: workload report %q: %s", arm, r.Step(steps[i].wl).Stdout, r.Step(steps[i].wl).Stderr)
		}
		rt := float64(w.PipeRoundTrips) / w.ElapsedS
		if i == 0 {
			base = rt
		}
		dec, fb, rtt := "-", "-", "-"
		if arm != "default" {
			if !r.Step(steps[i].enabled).OK {
				t.Fatalf("%s never enabled", arm)
			}
			_, _, tot, ok := parseRunOutput(r.Step(steps[i].exit).Stdout)
			if !ok {
				t.Fatalf("%s: no TOTALS:\n%s", arm, r.Step(steps[i].exit).Stdout)
			}
			dec = fmt.Sprintf("%d / %d / %d", tot.BPF["keep"], tot.BPF["migrate"], tot.BPF["fifo"])
			fb = fmt.Sprintf("%d / %d", tot.BPF["ring_full"], tot.BPF["timeout"])
			// rtt_ns sums enqueue -> decision applied over the decisions that went
			// through user space (the --stats rtt= figure, over the whole run).
			if n := tot.BPF["keep"] + tot.BPF["migrate"] + tot.BPF["fifo"] + tot.BPF["no_idle"] + tot.BPF["bad_cpu"]; n > 0 && tot.BPF["rtt_ns"] > 0 {
				rtt = fmt.Sprintf("%.0f us", float64(tot.BPF["rtt_ns"])/float64(n)/1e3)
			}
		}
		label := arm
		if arm == "default" && i > 0 {
			label = "default (again, drift)"
		} else if arm != "default" {
			label = "mlsched " + arm
		}
		fmt.Fprintf(&b, "| %s | %.0f | %.2f | %.0f | %.1f | %s | %s | %s |\n", label, rt, rt/base,
			float64(w.SleepWakeups)/w.ElapsedS, float64(w.SpinIters)*1000/w.ElapsedS/1e6, dec, fb, rtt)
	}
	fmt.Fprintf(&b, "\nKernel %s, qemu TCG (-accel %s -cpu max -smp 2 -m 1G), %v per arm, workload `%s`.\n",
		r.Hello.Kernel, e.Accel, d, strings.Join(load[1:], " "))
	t.Logf("\n%s", b.String())
	if err := os.WriteFile(filepath.Join(e.OutDir, "bench.md"), []byte(b.String()), 0o644); err != nil {
		t.Error(err)
	}
}
