package vmtest

import (
	"bytes"
	"fmt"
	"os/exec"
	"regexp"
	"strings"
	"testing"
)

// The cpio writer's output is what GNU cpio (if installed) reads back, names and sizes.
func TestCpioNewc(t *testing.T) {
	var buf bytes.Buffer
	w := newCpioWriter(&buf)
	writeTree(w, []string{"dev", "tmp"}, map[string]cpioData{
		"/init":              {perm: 0o755, data: []byte("#!bin\n")},
		"/etc/deep/file.txt": {perm: 0o644, data: []byte("hello, odd length")},
	})
	w.CharDev("dev/console", 5, 1)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if buf.Len()%4 != 0 {
		t.Errorf("archive length %d is not 4-byte aligned", buf.Len())
	}
	if !bytes.HasPrefix(buf.Bytes(), []byte("070701")) || !bytes.Contains(buf.Bytes(), []byte("TRAILER!!!\x00")) {
		t.Fatalf("not a newc archive with a trailer")
	}
	if _, err := exec.LookPath("cpio"); err != nil {
		t.Skip("cpio not installed: cannot cross-check the archive")
	}
	cmd := exec.Command("cpio", "-itv", "--quiet")
	cmd.Stdin = &buf
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("cpio -it: %v\n%s", err, out)
	}
	for _, want := range []string{"dev\n", "tmp\n", "init\n", "etc/deep\n", "etc/deep/file.txt\n", "dev/console\n"} {
		if !strings.Contains(string(out)+"\n", strings.TrimSuffix(want, "\n")) {
			t.Errorf("cpio listing lacks %q:\n%s", want, out)
		}
	}
	if !regexp.MustCompile(`-rwxr-xr-x .* 6 .* init`).Match(out) || !regexp.MustCompile(`crw------- .* 5, +1 .* dev/console`).Match(out) {
		t.Errorf("modes, sizes or device numbers wrong:\n%s", out)
	}
}

// detachedStallLog is TestVMHotplug's console in CI (2026-12-04): CPU 1 went offline, the
// kernel ejected mlsched, and while mlsched loaded again (38 s with one CPU under TCG) the
// default scheduler left a nice-19 khugepaged unrun for 21 s. %s is the grace period's age.
const detachedStallLog = `[    9.118809] sched_ext: BPF scheduler "mlsched" enabled
[   12.745062] smpboot: CPU 1 is now offline
[   12.911898] sched_ext: BPF scheduler "mlsched" disabled (unregistered from the main kernel)
[   48.193877] rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:
[   48.202203] rcu: 	Tasks blocked on level-0 rcu_node (CPUs 0-1): P42/1:b..l
[   48.203345] rcu: 	(detected by 0, t=%s jiffies, g=-367, q=94 ncpus=1)
[   48.204803] task:khugepaged      state:R  running task     stack:0     pid:42
[   48.205851] Call Trace:
[   48.206724]  <TASK>
[   48.213833]  kthread+0xe4/0x120
[   48.214000]  </TASK>
%s[   51.663000] sched_ext: BPF scheduler "mlsched" enabled
`

func TestDetachedStalls(t *testing.T) {
	const hz = 250
	findings := func(log string) []finding {
		lines := consoleLines(log)
		return checkKernelLines(lines, nil, detachedStalls(lines, hz))
	}
	// 5252 jiffies at 250 Hz: the grace period began at 27.19 s, after the disable at 12.91.
	if f := findings(fmt.Sprintf(detachedStallLog, "5252", "")); len(f) != 0 {
		t.Errorf("a stall wholly under the default scheduler was flagged: %+v", f)
	}
	// 10000 jiffies: it began at 8.19 s, while mlsched was still enabled.
	if f := findings(fmt.Sprintf(detachedStallLog, "10000", "")); len(f) != 2 {
		t.Errorf("a stall begun under mlsched: %d findings, want the header and the Call Trace: %+v", len(f), f)
	}
	// Another splat right after the report is judged on its own.
	warn := "[   48.300000] WARNING: CPU: 0 PID: 1 at kernel/sched/ext.c:1 x\n"
	if f := findings(fmt.Sprintf(detachedStallLog, "5252", warn)); len(f) != 1 || !strings.Contains(f[0].text, "WARNING:") {
		t.Errorf("a WARNING after an excused stall: findings %+v, want that WARNING only", f)
	}
	// While mlsched is enabled nothing is excused.
	enabled := strings.Replace(fmt.Sprintf(detachedStallLog, "5252", ""),
		"[   12.911898] sched_ext: BPF scheduler \"mlsched\" disabled (unregistered from the main kernel)\n", "", 1)
	if f := findings(enabled); len(f) != 2 {
		t.Errorf("a stall while mlsched was enabled: %d findings, want 2: %+v", len(f), f)
	}
	// A report without its age is not excused either.
	noAge := strings.Replace(fmt.Sprintf(detachedStallLog, "5252", ""), "t=5252 jiffies", "", 1)
	if f := findings(noAge); len(f) != 2 {
		t.Errorf("a stall report without t=: %d findings, want 2: %+v", len(f), f)
	}
	// At boot, before the first scheduler, the machine is the default scheduler's.
	boot := "[   30.000000] rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:\n[   30.1] rcu: 	(detected by 0, t=5252 jiffies)\n"
	if f := findings(boot); len(f) != 0 {
		t.Errorf("a stall at boot before any sched_ext scheduler: %+v", f)
	}
}

func TestKernelLogCheck(t *testing.T) {
	clean := `[    0.000000] Kernel command line: console=ttyS0 panic=-1
[    0.064000] tsc: Unable to calibrate against PIT
[    9.1] sched_ext: BPF scheduler "mlsched" enabled
[   12.0] sched_ext: BPF scheduler "mlsched" disabled (unregistered from user space)
`
	clean += "[    1.0] hid: raw HID events driver installed\n[    1.1] Installing knfsd (copyright (C) 1996 okir@monad.swb.de).\n"
	if f := checkKernelLog(clean, nil); len(f) != 0 {
		t.Errorf("clean log flagged: %+v", f)
	}
	for _, bad := range []string{
		"[ 3.1] WARNING: CPU: 1 PID: 55 at kernel/sched/ext.c:1234 scx_foo+0x1/0x2",
		"[ 3.1] BUG: kernel NULL pointer dereference, address: 0000000000000000",
		"[ 3.1] Oops: general protection fault, probably for non-canonical address",
		"[ 3.1] Kernel panic - not syncing: Attempted to kill init!",
		"[ 3.1] rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:",
		`[ 3.1] sched_ext: BPF scheduler "mlsched" disabled (runnable task stall)`,
		`[ 3.1] sched_ext: BPF scheduler "mlsched" disabled (runtime error)`,
		`[ 3.1] sched_ext: BPF scheduler "mlsched" errored, disabling`,
		"[ 3.1] watchdog: BUG: soft lockup - CPU#0 stuck for 22s!",
		"[ 3.1] INFO: task kworker/0:1:12 blocked for more than 120 seconds.",
		"[ 3.1] Initramfs unpacking failed: invalid magic at start of compressed archive",
	} {
		f := checkKernelLog(clean+bad+"\n[ 4.0] after\n", nil)
		if len(f) != 1 || !strings.Contains(f[0].context, ">> "+bad) || !strings.Contains(f[0].context, "after") {
			t.Errorf("%q: findings %+v, want one with context", bad, f)
		}
	}
	stall := `[ 3.1] sched_ext: BPF scheduler "mlsched" disabled (runnable task stall)`
	if f := checkKernelLog(stall, []*regexp.Regexp{regexp.MustCompile(`disabled \(runnable task stall\)`)}); len(f) != 0 {
		t.Errorf("allowed line flagged: %+v", f)
	}
}

// The bad-input scenario's fixture is refused for its schema only (checked without a VM).
func TestOtherSchemaFixture(t *testing.T) {
	if len(otherSchemaModel(t)) < 48 {
		t.Fatal("fixture too short")
	}
}

// checkAccounting against totals seen in the VM (fifo and model runs of 7.2), and a lost task.
func TestCheckAccounting(t *testing.T) {
	_, _, fifo, _ := parseRunOutput("EXIT: unreg unregistered from user space ()\nTOTALS: enqueue=15381 select_direct=1003 ours=719 kthread=45 fifo_policy=14617 dispatch=15652 | events=0\n")
	_, _, mdl, _ := parseRunOutput("EXIT: unreg x ()\nTOTALS: enqueue=21001 select_direct=86 ours=9424 kthread=98 reenqueue=6109 no_running=592 event=4778 decision_rx=4778 keep=1796 migrate=3 no_idle=2795 timeout=183 | events=4778\n")
	_, _, guard, _ := parseRunOutput("EXIT: unreg x ()\nTOTALS: enqueue=62276 select_direct=172 ours=25051 kthread=269 reenqueue=18593 no_running=2185 event=14336 decision_rx=14336 decision_stale=176 keep=4992 migrate=8 no_idle=9160 timeout=176 move_fail=82 guard_fifo=1842 | events=1\n")
	for name, c := range map[string]map[string]uint64{"fifo": fifo.BPF, "model": mdl.BPF, "guard": guard.BPF} {
		if errs := accountingErrors(name, c); len(errs) > 0 {
			t.Errorf("%s totals flagged: %v", name, errs)
		}
	}
	lost := map[string]uint64{}
	for k, v := range mdl.BPF {
		lost[k] = v
	}
	lost["keep"] -= 500
	if len(accountingErrors("lost", lost)) == 0 {
		t.Errorf("500 tasks missing from the applied paths were not flagged")
	}
	// The kernel path (--infer kernel, the JSON report of a 7.2 attach run) and --shadow, whose
	// decided wakeups leave by the shadow path only: the sum holds with it and breaks without.
	kind, _, kern, ok := parseRunOutput(kernelReport)
	if !ok || kind != "unreg" || kern.BPF["kernel_keep"] != 87576 || kern.User["misattributed"] != 0 || kern.Restarts != 0 || kern.CPUS != 5.136181 {
		t.Fatalf("the kernel path's JSON report parsed as kind %q, %+v", kind, kern)
	}
	_, _, shadow, _ := parseRunOutput(shadowReport)
	_, _, sel, _ := parseRunOutput(selectReport)
	if sel.BPF["select_keep"] == 0 || sel.BPF["busy_prev"] <= sel.BPF["kernel_keep"]+sel.BPF["kernel_no_idle"] {
		t.Fatalf("fixture: most wakeups decided at select_cpu: %v", sel.BPF)
	}
	for name, c := range map[string]map[string]uint64{"kernel": kern.BPF, "shadow": shadow.BPF, "select": sel.BPF} {
		if errs := accountingErrors(name, c); len(errs) > 0 {
			t.Errorf("%s totals flagged: %v", name, errs)
		}
	}
	if shadow.BPF["shadow"] == 0 || shadow.BPF["kernel_keep"]+shadow.BPF["kernel_migrate"] != 0 {
		t.Fatalf("fixture: a --shadow run places nothing itself: %v", shadow.BPF)
	}
	if errs := accountingErrors("double", withDelta(shadow.BPF, "kernel_keep", 7)); len(errs) == 0 {
		t.Errorf("7 enqueues counted twice (shadow and kernel_keep) were not flagged")
	}
	if errs := accountingErrors("uncounted", withDelta(shadow.BPF, "shadow", -100)); len(errs) == 0 {
		t.Errorf("100 shadow enqueues left uncounted were not flagged")
	}
	// select_cpu's placements are no enqueue path, but each wakeup behind a busy CPU is placed once.
	if errs := accountingErrors("select lost", withDelta(sel.BPF, "select_keep", -50)); len(errs) != 1 || !strings.Contains(errs[0], "busy_prev") {
		t.Errorf("50 wakeups placed at select_cpu uncounted: %v, want one busy_prev error", errs)
	}
	// keep_timer (the stall timer aimed at a kept task): at least one start for a run that kept
	// tasks, never more than one per kept task; a report without it (older binaries) passes.
	kept := sel.BPF["select_keep"] + sel.BPF["kernel_keep"]
	for _, c := range []struct {
		n    int64
		want bool // flagged
	}{{1, false}, {int64(kept), false}, {0, true}, {int64(kept) + 1, true}} {
		errs := accountingErrors("keep timer", withDelta(sel.BPF, "keep_timer", c.n))
		if flagged := len(errs) > 0; flagged != c.want {
			t.Errorf("keep_timer=%d for %d kept tasks: flagged %v (%v), want %v", c.n, kept, flagged, errs, c.want)
		}
	}
}

// selectReport is TestVMFloodKernel's report on 7.2 (2026-12-02), after select_cpu began to
// place the unscored wakeups itself (select_keep, select_migrate, select_no_idle).
const selectReport = `{"exit":{"kind":"unreg","reason":"unregistered from user space","msg":"","code":0},"variant":"sched (___v2 kfuncs)","policy":"model","queue":"vtime","duration_s":14.913173004,"restarts":0,"bpf":{"apply_no_ctx":0,"apply_run":0,"bad_cpu":0,"busy_prev":40414,"decision_bad":0,"decision_gone":0,"decision_rx":0,"decision_stale":0,"dispatch":45438,"drain_busy":0,"drain_error":0,"enqueue":10226,"event":0,"feat_takeover":0,"fifo":0,"fifo_policy":0,"guard_fifo":1,"keep":0,"keep_stolen":3604,"kernel_cached":12933,"kernel_forced":0,"kernel_keep":4190,"kernel_migrate":2,"kernel_no_idle":858,"kernel_no_net":0,"kernel_sample_drop":0,"kthread":481,"migrate":0,"move_fail":0,"net_ns":0,"net_runs":0,"no_ctx":0,"no_idle":0,"no_running":641,"orphan":0,"ours":602,"outcome":4547,"outcome_drop":0,"reenqueue":3451,"ring_full":0,"rtt_ns":0,"select_direct":519,"select_keep":28954,"select_migrate":12,"select_no_idle":6397,"shadow":0,"timeout":0,"timer_kick":3305,"vtime_policy":0},"user":{"events":5050,"fifo":0,"flush_errors":0,"flushes":0,"guard_trips":1,"keep":0,"kernel_verdicts":5050,"migrate":0,"misattributed":0,"outcomes":4547,"scored_only":5050,"unmatched":0,"urb_full":0},"cpu_s":5.286926,"attached_s":11.127038994,"attached_cpu_s":0.465146}`

// kernelReport is `mlsched run --json`'s report of TestVMAttachModelKernel on 7.2 (2026-12-02).
const kernelReport = `{"exit":{"kind":"unreg","reason":"unregistered from user space","msg":"","code":0},"variant":"sched (___v2 kfuncs)","policy":"model","queue":"vtime","duration_s":41.239490809,"restarts":0,"bpf":{"apply_no_ctx":0,"apply_run":0,"bad_cpu":0,"busy_prev":124038,"decision_bad":0,"decision_gone":0,"decision_rx":0,"decision_stale":0,"dispatch":157092,"drain_busy":0,"drain_error":0,"enqueue":164045,"event":0,"feat_takeover":0,"fifo":0,"fifo_policy":0,"guard_fifo":3,"keep":0,"keep_stolen":5014,"kernel_cached":36470,"kernel_forced":272,"kernel_keep":87576,"kernel_migrate":4,"kernel_no_idle":36455,"kernel_no_net":0,"kernel_sample_drop":3822,"kthread":146,"migrate":0,"move_fail":0,"net_ns":0,"net_runs":0,"no_ctx":0,"no_idle":0,"no_running":767,"orphan":0,"ours":2450,"outcome":11398,"outcome_drop":0,"reenqueue":36644,"ring_full":0,"rtt_ns":0,"select_direct":121,"shadow":0,"timeout":0,"timer_kick":9676,"vtime_policy":0},"user":{"events":11682,"fifo":0,"flush_errors":0,"flushes":0,"guard_trips":2,"keep":0,"kernel_verdicts":11682,"migrate":0,"misattributed":0,"outcomes":11398,"scored_only":11682,"unmatched":0,"urb_full":0},"cpu_s":5.136181}`

// shadowReport is the report of TestVMAttachShadow on 7.2 (2026-12-02).
const shadowReport = `{"exit":{"kind":"unreg","reason":"unregistered from user space","msg":"","code":0},"variant":"sched (___v2 kfuncs)","policy":"model","queue":"vtime","duration_s":33.332608792,"restarts":0,"bpf":{"apply_no_ctx":0,"apply_run":0,"bad_cpu":0,"busy_prev":195555,"decision_bad":0,"decision_gone":0,"decision_rx":0,"decision_stale":0,"dispatch":200427,"drain_busy":0,"drain_error":0,"enqueue":202481,"event":0,"feat_takeover":0,"fifo":0,"fifo_policy":0,"guard_fifo":0,"keep":0,"keep_stolen":0,"kernel_cached":46964,"kernel_forced":0,"kernel_keep":0,"kernel_migrate":0,"kernel_no_idle":0,"kernel_no_net":0,"kernel_sample_drop":183556,"kthread":93,"migrate":0,"move_fail":0,"net_ns":0,"net_runs":0,"no_ctx":0,"no_idle":0,"no_running":696,"orphan":0,"ours":2003,"outcome":8882,"outcome_drop":1,"reenqueue":4134,"ring_full":0,"rtt_ns":0,"select_direct":37,"shadow":195555,"timeout":0,"timer_kick":0,"vtime_policy":0},"user":{"events":11999,"fifo":0,"flush_errors":0,"flushes":0,"guard_trips":0,"keep":0,"kernel_verdicts":11999,"migrate":0,"misattributed":0,"outcomes":8882,"scored_only":11999,"unmatched":0,"urb_full":0},"cpu_s":5.163025,"attached_s":30.253394222,"attached_cpu_s":0.99483}`

func copyCounters(c map[string]uint64) map[string]uint64 {
	out := make(map[string]uint64, len(c))
	for k, v := range c {
		out[k] = v
	}
	return out
}

func withDelta(c map[string]uint64, k string, d int64) map[string]uint64 {
	out := copyCounters(c)
	out[k] = uint64(int64(out[k]) + d)
	return out
}

// checkNoUserWait: a kernel-path run passes; a round trip, a decision read, a round-trip time,
// an outcome scored against another wakeup's sample, no outcome at all, or a report without
// the misattributed counter each fail.
func TestNoUserWait(t *testing.T) {
	_, _, kern, _ := parseRunOutput(kernelReport)
	if errs := noUserWaitErrors("kernel", kern); len(errs) > 0 {
		t.Errorf("a kernel-path run flagged: %v", errs)
	}
	_, _, mdl, _ := parseRunOutput("EXIT: unreg x ()\nTOTALS: enqueue=21001 select_direct=86 ours=9424 kthread=98 reenqueue=6109 no_running=592 event=4778 decision_rx=4778 keep=1796 migrate=3 no_idle=2795 timeout=183 | events=4778 outcomes=4000 misattributed=0\n")
	if errs := noUserWaitErrors("round trip", mdl); len(errs) != 1 || !strings.Contains(errs[0], "event=4778") || !strings.Contains(errs[0], "timeout=183") {
		t.Errorf("the round trip's totals: %v, want one error naming event and timeout", errs)
	}
	for k, v := range map[string]uint64{"event": 1, "timeout": 1, "decision_rx": 1, "apply_run": 1, "rtt_ns": 12345} {
		if errs := noUserWaitErrors(k, Totals{BPF: withDelta(kern.BPF, k, int64(v)), User: kern.User}); len(errs) != 1 || !strings.Contains(errs[0], k+"=") {
			t.Errorf("%s=%d: %v, want one error naming it", k, v, errs)
		}
	}
	for name, user := range map[string]map[string]uint64{
		"misattributed": withDelta(kern.User, "misattributed", 3),
		"no outcomes":   withDelta(kern.User, "outcomes", -int64(kern.User["outcomes"])),
		"no counter":    func() map[string]uint64 { u := copyCounters(kern.User); delete(u, "misattributed"); return u }(),
	} {
		if errs := noUserWaitErrors(name, Totals{BPF: kern.BPF, User: user}); len(errs) != 1 {
			t.Errorf("%s: %v, want one error", name, errs)
		}
	}
	if errs := bpfUserWaitErrors("empty scrape", map[string]uint64{}); len(errs) != 1 {
		t.Errorf("counters without any enqueue: %v, want flagged", errs)
	}
	// A /metrics scrape read back as Totals (what TestVMKill9Kernel checks before the kill).
	prom := promTotals(parseProm("mlsched_bpf_events_total{counter=\"enqueue\"} 500\nmlsched_bpf_events_total{counter=\"event\"} 0\n" +
		"mlsched_decision_roundtrip_seconds_sum 0.25\nmlsched_outcomes_total{label=\"0\"} 7\nmlsched_outcomes_total{label=\"1\"} 5\n"))
	if prom.BPF["enqueue"] != 500 || prom.BPF["rtt_ns"] != 250000000 || prom.User["outcomes"] != 12 {
		t.Errorf("promTotals: %+v", prom)
	}
}

// The --stats line's counters by section: dec's keep is keep, the kernel's is kernel.keep.
func TestStatsLines(t *testing.T) {
	out := "enq/s=5315 ev/s=0 dec keep=3 migrate=4 fifo=5 kernel keep=84051 migrate=7 noidle=35993 stolen=4697 cached=35987 direct sel=79 ours=2062 kthr=103 base(vtime) policy=0 fb guard=0 ring=1 timeout=2 noidle=6 badcpu=0 q=13442 acc=- age=0us inf=0ns drops=0 decided=96.4% cpu=0.69% bpf sel=210ns enq=1302ns disp=388ns net=3.1%\n" +
		"TOTALS: enqueue=1 | events=0\n"
	lines := statsLines(out)
	if len(lines) != 1 {
		t.Fatalf("%d stats lines, want 1", len(lines))
	}
	kv := lines[0].kv
	for k, want := range map[string]uint64{"keep": 3, "migrate": 4, "kernel.keep": 84051, "kernel.migrate": 7, "noidle": 35993, "fb.noidle": 6, "sel": 79, "ring": 1, "timeout": 2} {
		if kv[k] != want {
			t.Errorf("%s = %d, want %d (%v)", k, kv[k], want, kv)
		}
	}
	if !statsCPU.MatchString(lines[0].raw) || !statsBPF.MatchString(lines[0].raw) {
		t.Errorf("cpu= or bpf ... enq= not found in %q", lines[0].raw)
	}
	if liveAccuracy(out) || !liveAccuracy(strings.Replace(out, "acc=-", "acc=0.835(guard:vtime)", 1)) {
		t.Errorf("liveAccuracy: acc=- is no live accuracy, acc=0.835(guard:vtime) is one")
	}
	if statsBPF.MatchString("... cpu=0.69%") {
		t.Errorf("a line without --bpf-stats matched the bpf pattern")
	}
}
