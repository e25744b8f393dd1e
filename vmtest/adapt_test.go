package vmtest

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestVMAdapt: online adaptation in `mlsched run` on the mixed workload (--infer kernel, the
// default --adapt; exploration and slices raised so that a run of tens of seconds has enough
// unbiased outcomes: 12.5% explored, slices of 1024 outcomes or 5 s). The adapter learns from
// the explored outcomes without errors, nothing waits for user space, no outcome is
// misattributed, and a promotion writes a valid model. Then kill -9 mid-run, saving after every
// slice: the machine is back on its default scheduler and the saved model file is absent or
// whole (never half-written).
func TestVMAdapt(t *testing.T) {
	e := Setup(t)
	needPolicy(t, e, "model-kernel")
	if !e.HasCommand("run", "-adapt", "-explore", "-save-model", "-adapt-slice") {
		t.Skip("waiting for `mlsched run --adapt --explore --save-model`")
	}
	s := NewScenario("adapt")
	s.Timeout = 240 * time.Second
	adaptArgs := []string{"--explore", "0.125", "--adapt-slice", "1024", "--adapt-slice-time", "5s", "--adapt-cpu", "0.5"}
	s.Start("sched", policyArgs(e, "model-kernel", append(adaptArgs, "--stats", "5s", "--metrics-addr", "", "--save-model", "/tmp/a.bin")...)...)
	enabled := s.MayFail(s.WaitFile(SCXState, "enabled", attachTimeout))
	wl := s.Exec(120*time.Second, workloadArgs(45*time.Second)...)
	s.Signal("sched", "INT")
	exit := s.Wait("sched", 30*time.Second)
	saved := s.Exec(30*time.Second, "/mlsched", "inspect", "/tmp/a.bin")
	// kill -9 while it saves after every slice.
	s.Start("sched2", policyArgs(e, "model-kernel", append(adaptArgs[:2:2], "--adapt-slice", "256", "--adapt-slice-time", "0", "--adapt-cpu", "0.5",
		"--metrics-addr", "", "--save-model", "/tmp/b.bin")...)...)
	enabled2 := s.MayFail(s.WaitFile(SCXState, "enabled", attachTimeout))
	s.Start("load", workloadArgs(20*time.Second)...)
	s.Sleep(12 * time.Second)
	s.Signal("sched2", "KILL")
	disabled := s.MayFail(s.WaitFile(SCXState, "disabled", 10*time.Second))
	s.Wait("sched2", 10*time.Second)
	s.Wait("load", 60*time.Second)
	killed := s.Exec(30*time.Second, "/mlsched", "inspect", "/tmp/b.bin")
	r := e.Boot(t, s)

	sched := r.Step(exit)
	if !r.Step(enabled).OK {
		t.Fatalf("never enabled (state %q)\nmlsched stderr:\n%s", r.Step(enabled).Value, sched.Stderr)
	}
	decodeWorkload(t, "under --adapt", r.Step(wl).Stdout)
	kind, rest, tot, ok := parseRunOutput(sched.Stdout)
	if !ok || sched.ExitCode != 0 || !strings.HasPrefix(kind, "unreg") {
		t.Fatalf("mlsched run --adapt: exit %d, EXIT %q %q\nstdout:\n%s\nstderr:\n%s", sched.ExitCode, kind, rest, truncate(sched.Stdout, 3000), truncate(sched.Stderr, 3000))
	}
	checkAccounting(t, "adapt", tot.BPF)
	checkNoUserWait(t, "adapt", tot)
	u := tot.User
	if tot.BPF["explore"] == 0 || u["explore_outcomes"] == 0 || u["learned"] == 0 || u["adapt_errors"] != 0 {
		t.Errorf("--adapt: BPF explore=%d, explore_outcomes=%d learned=%d adapt_errors=%d: want exploration scored and learned from, no error (user %v)",
			tot.BPF["explore"], u["explore_outcomes"], u["learned"], u["adapt_errors"], u)
	}
	if u["promotions"] > 0 {
		if !strings.Contains(sched.Stderr, "adapt: promotion 1") {
			t.Errorf("%d promotions but stderr does not say so:\n%s", u["promotions"], truncate(sched.Stderr, 3000))
		}
		if sv := r.Step(saved); sv.ExitCode != 0 || !strings.Contains(sv.Stdout, "adapt_promotion") {
			t.Errorf("the saved model after %d promotions: inspect exit %d\n%s%s", u["promotions"], sv.ExitCode, sv.Stdout, sv.Stderr)
		}
	}
	// After a promotion, the active net's accuracy on each later slice's exploration outcomes
	// (act=, the --stats line) is above the majority class of those outcomes (smaj=). The line
	// that reports a promotion scores the net it replaced on the slice that promoted it.
	after, lastProm, promSlice := 0, 0, 0
	for _, l := range strings.Split(sched.Stdout, "\n") {
		var prom, slices int
		var act, smaj float64
		if _, err := fmt.Sscan(statField(l, "promotions"), &prom); err != nil || prom == 0 {
			continue
		}
		if _, err := fmt.Sscan(statField(l, "slices"), &slices); err != nil {
			continue
		}
		if prom > lastProm {
			lastProm, promSlice = prom, slices
			continue
		}
		_, err1 := fmt.Sscan(statField(l, "act"), &act)
		_, err2 := fmt.Sscan(statField(l, "smaj"), &smaj)
		if slices <= promSlice || err1 != nil || err2 != nil {
			continue
		}
		after++
		if act <= smaj {
			t.Errorf("after %d promotion(s): the active net's slice accuracy %.3f is not above the majority %.3f: %s", prom, act, smaj, l)
		}
	}
	t.Logf("adapt: promotions=%d learned=%d explore_outcomes=%d slices=%d shed=%d; %d stats lines after a promotion; stderr:\n%s", u["promotions"], u["learned"], u["explore_outcomes"],
		u["adapt_slices"], u["adapt_shed"], after, truncate(grepLines(sched.Stderr, "adapt"), 2000))

	if !r.Step(enabled2).OK {
		t.Fatalf("the second run never enabled (state %q)", r.Step(enabled2).Value)
	}
	// The bound is the kill -9 scenarios' 2 s plus headroom: here the guest is fully loaded
	// (ten workload threads on two vCPUs) while the adapter saves after every slice, and under
	// TCG the exit of the killed process then took 0.2 s in most runs and 2.9-3.0 s in two of
	// about eight (2026-12-03). What is checked is that the machine is back on its default
	// scheduler without waiting for the watchdog or anyone, not how fast TCG tears a process down.
	if dis := r.Step(disabled); !dis.OK || dis.Elapsed > 5*time.Second {
		t.Errorf("after kill -9 during saves: state %q after %v, want disabled within 5 s", dis.Value, dis.Elapsed.Round(time.Millisecond))
	} else {
		t.Logf("after kill -9 during saves: disabled %v after the signal", dis.Elapsed.Round(time.Millisecond))
	}
	// The saved file is absent (no promotion yet) or a whole model; never half-written.
	k := r.Step(killed)
	if k.ExitCode != 0 && !strings.Contains(k.Stderr, "no such file") {
		t.Errorf("after kill -9 the saved model is neither absent nor valid: inspect exit %d\n%s%s", k.ExitCode, k.Stdout, k.Stderr)
	}
	t.Logf("after kill -9: inspect /tmp/b.bin exit %d", k.ExitCode)
}

// grepLines keeps the lines of s that contain word.
func grepLines(s, word string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, word) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// statField is the value of key= in a --stats line ("" if absent).
func statField(line, key string) string {
	for _, f := range strings.Fields(line) {
		if v, ok := strings.CutPrefix(f, key+"="); ok {
			return v
		}
	}
	return ""
}
