package vmtest

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"io"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mlsched/mlsched/ab"
	"github.com/mlsched/mlsched/vmtest/internal/proto"
)

// The benchmark's pure parts (`make vmbench` is bench_test.go): parsers of the workloads'
// output, the arms' probing, the round plan and its resumption after a VM restart, the
// per-unit collection, the report's JSON shape, its tables and its figure.

func TestParseHackbench(t *testing.T) {
	out := "Running in process mode with 4 groups using 20 file descriptors each (== 80 tasks)\r\nEach sender will pass 300 messages of 100 bytes\r\nTime: 1.372\r\n"
	if v, err := parseHackbench(out); err != nil || v != 1.372 {
		t.Errorf("parseHackbench = %v, %v; want 1.372", v, err)
	}
	if _, err := parseHackbench("Running in threaded mode ...\n"); err == nil {
		t.Error("no Time: line, but no error")
	}
}

// stressOut is stress-ng 0.15.06's --metrics-brief log (bookworm), with the misc section.
const stressOut = `stress-ng: info:  [20653] setting to a 3 second run per stressor
stress-ng: info:  [20653] dispatching hogs: 2 cpu, 2 fork, 2 pipe, 1 affinity
stress-ng: metrc: [20653] stressor       bogo ops real time  usr time  sys time   bogo ops/s     bogo ops/s
stress-ng: metrc: [20653]                           (secs)    (secs)    (secs)   (real time) (usr+sys time)
stress-ng: metrc: [20653] cpu                 881      3.01      0.78      0.10       292.69        1003.78
stress-ng: metrc: [20653] fork                367      3.01      0.13      0.14       121.98        1360.39
stress-ng: metrc: [20653] pipe             251719      3.01      0.10      0.58     83704.29      371336.52
stress-ng: metrc: [20653] affinity         276124      3.01      0.43      2.18     91864.77      106148.10
stress-ng: metrc: [20653] miscellaneous metrics:
stress-ng: metrc: [20653] pipe                  20.43 MB per sec pipe write rate (geometic mean of 2 instances)
stress-ng: info:  [20653] successful run completed in 3.02s
`

func TestParseStressNG(t *testing.T) {
	got, err := parseStressNG(stressOut)
	want := map[string]float64{"cpu": 292.69, "fork": 121.98, "pipe": 83704.29, "affinity": 91864.77}
	if err != nil || !equalMaps(got, want) {
		t.Errorf("parseStressNG = %v, %v; want %v", got, err, want)
	}
	// --metrics-brief drops a stressor without a single bogo op: in a completed run it was
	// starved (0), in a failed one its absence is an error.
	var starved []string
	for _, l := range strings.Split(stressOut, "\n") {
		if !strings.Contains(l, "] pipe  ") && !strings.Contains(l, "] affinity ") {
			starved = append(starved, l)
		}
	}
	got, err = parseStressNG(strings.Join(starved, "\n"))
	if err != nil || got["pipe"] != 0 || got["affinity"] != 0 || got["cpu"] != 292.69 {
		t.Errorf("starved stressors: %v, %v; want pipe and affinity 0", got, err)
	}
	failed := strings.ReplaceAll(strings.Join(starved, "\n"), "successful run completed", "unsuccessful run completed")
	if _, err := parseStressNG(failed); err == nil || !strings.Contains(err.Error(), "pipe") {
		t.Errorf("missing rows of a failed run: err %v, want one naming pipe", err)
	}
	undispatched := strings.ReplaceAll(strings.Join(starved, "\n"), ", 1 affinity", "")
	if _, err := parseStressNG(undispatched); err == nil || !strings.Contains(err.Error(), "affinity") {
		t.Errorf("a stressor that was never dispatched: err %v, want one naming affinity", err)
	}
}

func TestParsePool(t *testing.T) {
	out := `{"workload":"pool","throughput":11553.8,"unit":"tasks/s","ops":11558,"elapsed_s":1.0}` + "\n"
	if v, err := parsePool(out); err != nil || v != 11553.8 {
		t.Errorf("parsePool = %v, %v", v, err)
	}
	for _, bad := range []string{"", "pool: boom", `{"unit":"tasks/s"}`, `{"throughput":3,"unit":"ops/s"}`} {
		if _, err := parsePool(bad); err == nil {
			t.Errorf("parsePool(%q): no error", bad)
		}
	}
}

func TestParseLdd(t *testing.T) {
	out := "\tlinux-vdso.so.1 (0x00007efe34363000)\n" +
		"\tlibelf.so.1 => /lib/x86_64-linux-gnu/libelf.so.1 (0x00007efe3429e000)\n" +
		"\tlibz.so.1 => /lib/x86_64-linux-gnu/libz.so.1 (0x00007efe3427f000)\n" +
		"\t/lib64/ld-linux-x86-64.so.2 (0x00007efe34365000)\n"
	libs, err := parseLdd(out)
	want := []string{"/lib/x86_64-linux-gnu/libelf.so.1", "/lib/x86_64-linux-gnu/libz.so.1", "/lib64/ld-linux-x86-64.so.2"}
	if err != nil || !slices.Equal(libs, want) {
		t.Errorf("parseLdd = %v, %v; want %v", libs, err, want)
	}
	if _, err := parseLdd("\tlibjudy.so.1 => not found\n"); err == nil {
		t.Error("a library ldd cannot find: no error")
	}
	if libs, err := parseLdd("\tstatically linked\n"); err != nil || len(libs) != 0 {
		t.Errorf("static binary: %v, %v", libs, err)
	}
}

// runUsage is `mlsched run --help` before and after --policy vtime and --queue.
const runUsageOld = `Flags:
  -metrics-addr ADDR
    	serve Prometheus metrics on ADDR ("" to disable) (default "127.0.0.1:9617")
  -model MODEL
    	model file MODEL (default: the model embedded in the binary)
  -policy POLICY
    	POLICY: model or fifo (default "model")
  -slice D
    	time slice D (default 5ms)
`

const runUsageNew = `Flags:
  -infer WHERE
    	model policy: where the net decides, WHERE: kernel (in BPF) or user (default "user")
  -policy POLICY
    	POLICY: model, vtime or fifo (default "model")
  -queue QUEUE
    	model policy: the base QUEUE every fallback goes to, vtime or fifo (default "vtime")
  -slice D
    	time slice D (default 5ms)
`

func TestMlschedArms(t *testing.T) {
	if got := flagHelp(runUsageOld, "-policy"); !strings.Contains(got, "model or fifo") || strings.Contains(got, "slice") {
		t.Errorf("flagHelp(-policy) = %q", got)
	}
	if got := flagHelp(runUsageOld, "-queue"); got != "" {
		t.Errorf("flagHelp(-queue) = %q, want none", got)
	}
	names := func(arms []benchArm) []string {
		var n []string
		for _, a := range arms {
			n = append(n, a.Name)
		}
		return n
	}
	arms, skipped := mlschedArms(runUsageOld, "embedded", true)
	if got := names(arms); !slices.Equal(got, []string{"mlsched fifo", "mlsched"}) || !strings.Contains(skipped["mlsched kernel"], "-infer") {
		t.Errorf("old binary: arms %v", got)
	}
	if !strings.Contains(skipped["mlsched vtime"], "vtime") || !strings.Contains(skipped["mlsched model/fifo"], "-queue") ||
		!strings.Contains(skipped["mlsched vm-model"], "-infer") {
		t.Errorf("old binary: skipped %v", skipped)
	}
	// Without vmtest/testdata/vmbench-model.bin the vm-model arm is skipped, saying how to make it.
	arms, skipped = mlschedArms(runUsageNew, "file", false)
	if got := names(arms); !slices.Equal(got, []string{"mlsched fifo", "mlsched vtime", "mlsched model/fifo", "mlsched", "mlsched kernel", "mlsched user", "mlsched vtime +sys_enter"}) ||
		len(skipped) != 11 || !strings.Contains(skipped["mlsched shadow"], "-shadow") || !strings.Contains(skipped["mlsched noadapt"], "-adapt") || !strings.Contains(skipped["mlsched keep"], "keep") || !strings.Contains(skipped["mlsched kb20us"], "-keep-budget") || !strings.Contains(skipped["mlsched +stats"], "-bpf-stats") ||
		!strings.Contains(skipped["mlsched vm-model"], "make vmbench-model") {
		t.Errorf("new binary: arms %v, skipped %v", got, skipped)
	}
	want := "/mlsched run --metrics-addr \"\" --model /default.bin --policy model --queue fifo"
	if got := shellJoinArgs(arms[2].Cmd); got != want {
		t.Errorf("model/fifo command %q, want %q", got, want)
	}
	if got := shellJoinArgs(arms[1].Cmd); got != `/mlsched run --metrics-addr "" --policy vtime` {
		t.Errorf("vtime command %q", got)
	}
	if got := shellJoinArgs(arms[4].Cmd); got != `/mlsched run --metrics-addr "" --model /default.bin --infer kernel` {
		t.Errorf("kernel command %q", got)
	}
	// With it, the arm runs the default run (--infer kernel) on that file, also when there is no
	// default model.
	if arms, skipped := mlschedArms(runUsageNew, "file", true); len(arms) != 8 || arms[6].Name != "mlsched vm-model" || skipped["mlsched vm-model"] != "" ||
		shellJoinArgs(arms[6].Cmd) != `/mlsched run --metrics-addr "" --model /vmbench-model.bin --infer kernel` || arms[6].Extra || arms[6].Ops != "mlsched" {
		t.Errorf("new binary with the VM model: arms %v, skipped %v", names(arms), skipped)
	}
	if arms, skipped := mlschedArms(runUsageNew, "", false); len(arms) != 3 || !strings.Contains(skipped["mlsched"], "model") {
		t.Errorf("no model: arms %v, skipped %v", names(arms), skipped)
	}
	if arms, _ := mlschedArms(runUsageNew, "", true); !slices.Equal(names(arms), []string{"mlsched fifo", "mlsched vtime", "mlsched vm-model", "mlsched vtime +sys_enter"}) {
		t.Errorf("no default model, the VM model: arms %v", names(arms))
	}
	// A binary with the fixed placements, --bpf-stats, --keep-budget and --json: every arm, the
	// cost and keep-budget arms marked extra, and every command asks for the JSON report.
	arms, skipped = mlschedArms(runUsageFixed, "embedded", true)
	if len(arms) != 18 || len(skipped) != 0 {
		t.Fatalf("fixed placements: arms %v, skipped %v", names(arms), skipped)
	}
	for _, a := range arms {
		if !slices.Contains(a.Cmd, "--json") {
			t.Errorf("%s: %q lacks --json", a.Name, shellJoinArgs(a.Cmd))
		}
		if a.Extra != (strings.Contains(a.Name, "+stats") || strings.Contains(a.Name, " kb") || strings.HasSuffix(a.Name, "shadow") || strings.HasSuffix(a.Name, "noadapt") || strings.Contains(a.Name, "+sys_enter")) {
			t.Errorf("%s: extra %v", a.Name, a.Extra)
		}
	}
	if got := shellJoinArgs(arms[8].Cmd); got != `/mlsched run --metrics-addr "" --json --policy oncpu` {
		t.Errorf("oncpu command %q", got)
	}
	if got := shellJoinArgs(arms[9].Cmd); arms[9].Name != "mlsched vm-model" || got != `/mlsched run --metrics-addr "" --json --model /vmbench-model.bin --infer kernel` {
		t.Errorf("%s command %q", arms[9].Name, got)
	}
	if got := shellJoinArgs(arms[14].Cmd); arms[14].Name != "mlsched kb20us" || got != `/mlsched run --metrics-addr "" --json --keep-budget 20us` {
		t.Errorf("%s command %q", arms[14].Name, got)
	}
	if got := shellJoinArgs(arms[15].Cmd); arms[15].Name != "mlsched shadow" || got != `/mlsched run --metrics-addr "" --json --shadow` {
		t.Errorf("%s command %q", arms[15].Name, got)
	}
	if got := shellJoinArgs(arms[16].Cmd); arms[16].Name != "mlsched noadapt" || got != `/mlsched run --metrics-addr "" --json --adapt=false` {
		t.Errorf("%s command %q", arms[16].Name, got)
	}
	if got := shellJoinArgs(arms[17].Cmd); arms[17].Name != "mlsched vtime +sys_enter" || got != `/init systrace /mlsched run --metrics-addr "" --json --policy vtime` {
		t.Errorf("%s command %q", arms[17].Name, got)
	}
}

const runUsageFixed = `Flags:
  -adapt
    	model policy, --infer kernel: fine-tune a copy of the net on the explored outcomes (default true)
  -bpf-stats
    	enable the kernel's BPF run-time statistics: per-hook run time
  -infer WHERE
    	model policy: where the net decides, WHERE: kernel (in BPF) or user (default "kernel")
  -json
    	print the exit report as one JSON object
  -keep-budget D
    	with --infer kernel: a task kept on its busy previous CPU waits at most D for it
  -no-verdict-cache
    	evaluate the net on every wakeup
  -policy POLICY
    	POLICY: model, vtime, fifo, or a fixed placement: keep, migrate, oncpu (default "model")
  -queue QUEUE
    	model policy: the base QUEUE every fallback goes to, vtime or fifo (default "vtime")
  -shadow
    	model policy: the net decides and is scored on every wakeup, but tasks go where the base queue puts them
`

// The arms' own account sums their exit reports: the decided fraction is over the wakeups
// with a busy previous CPU, less the verdicts W's affinity overrode; per-call costs and the
// net's share come from --bpf-stats.
func TestSchedAccount(t *testing.T) {
	out := "stats line\n" +
		`{"exit":{"kind":"unreg"},"duration_s":12,"cpu_s":3,"attached_s":10,"attached_cpu_s":0.5,"bpf":{"busy_prev":1000,"kernel_keep":500,"kernel_migrate":100,"kernel_no_idle":200,"kernel_forced":50,"guard_fifo":100,"kernel_cached":300,"net_ns":4000,"net_runs":100},"user":{"guard_trips":1},"bpf_progs":{"mls_enqueue":{"runs":1000,"run_ns":200000},"mls_dispatch":{"runs":10,"run_ns":6000}}}` + "\n"
	rep := &benchReport{Arms: []string{"mlsched"}}
	rep.account("mlsched", out)
	rep.account("mlsched", "no report here\n")
	rep.account("mlsched", strings.ReplaceAll(out, `"kernel_forced":50`, `"kernel_forced":0`))
	a := rep.Accounts["mlsched"]
	if a == nil || a.Reports != 2 || a.BusyPrev != 2000 || a.Decided != 750+800 || a.GuardTrips != 2 {
		t.Fatalf("account %+v", a)
	}
	if a.Progs["mls_enqueue"].Runs != 2000 || a.NetEvals != 1800 || a.Cached != 600 {
		t.Fatalf("account %+v", a)
	}
	tab := rep.accountTable()
	for _, want := range []string{"77.5%", "33.3%", "5.00%", "200", "40.0", "1.9%"} {
		if !strings.Contains(tab, want) {
			t.Errorf("account table lacks %q:\n%s", want, tab)
		}
	}
}

func TestBenchPlan(t *testing.T) {
	plan := benchPlan(8, 5, 42)
	if len(plan) != 40 {
		t.Fatalf("%d units, want 40", len(plan))
	}
	orders := map[string]bool{}
	for r := 0; r < 5; r++ {
		var arms []int
		for _, u := range plan[r*8 : r*8+8] {
			if u.Round != r {
				t.Fatalf("unit %+v in round %d's block", u, r)
			}
			arms = append(arms, u.Arm)
		}
		orders[jsonOf(t, arms)] = true
		slices.Sort(arms)
		if !slices.Equal(arms, []int{0, 1, 2, 3, 4, 5, 6, 7}) {
			t.Errorf("round %d is not a permutation of the arms: %v", r, arms)
		}
	}
	if len(orders) < 2 {
		t.Errorf("every round ran the arms in the same order: %v", orders)
	}
	if !slices.Equal(plan, benchPlan(8, 5, 42)) || slices.Equal(plan, benchPlan(8, 5, 43)) {
		t.Error("the plan is not a function of the seed")
	}
}

// testBench is a small benchmark: the default arm and one scheduler, the real workloads.
func testBench() ([]benchArm, []benchWorkload) {
	arms := []benchArm{{Name: refDefault}, {Name: refSimple, Cmd: []string{"/scx_simple"}, Ops: "simple"}}
	c, _ := benchConfigFrom(func(string) string { return "" }, 1)
	return arms, benchWorkloads(c)
}

// okResults answers every step of a script as a VM would on a good run: the workloads print
// what they print, the scheduler is enabled while it should be.
func okResults(s *Scenario, units []unitSteps, plan []benchUnit, arms []benchArm, works []benchWorkload) []proto.Result {
	steps := make([]proto.Result, len(s.steps))
	for i, st := range s.steps {
		steps[i] = proto.Result{Kind: "step", Step: i, Op: st.Op, OK: true}
	}
	for _, u := range units {
		arm := arms[plan[u.Plan].Arm]
		state := "disabled"
		if arm.sched() {
			state = "enabled"
			steps[u.Ops].Values = map[string]string{SCXOps: arm.Ops}
		}
		for i, w := range works {
			r := &steps[u.Work[i]]
			switch w.Name {
			case "stress-ng":
				r.Stderr = stressOut
			case "pool":
				r.Stdout = `{"throughput":1000,"unit":"tasks/s"}`
			default:
				r.Stdout = "Time: 1.5\n"
			}
			steps[u.State[i]].Values = map[string]string{SCXState: state}
		}
	}
	return steps
}

func TestBenchScriptResume(t *testing.T) {
	arms, works := testBench()
	plan := benchPlan(len(arms), 3, 7)
	s := NewScenario("t")
	var units []unitSteps
	for p := range plan {
		units = append(units, addUnit(s, p, arms[plan[p].Arm], works))
	}
	for i, u := range units {
		if u.First > u.Last || i > 0 && u.First != units[i-1].Last+1 || len(u.Work) != len(works) {
			t.Fatalf("unit %d steps %+v", i, u)
		}
		if arms[plan[u.Plan].Arm].sched() != (u.Enabled >= 0 && u.Exit >= 0) {
			t.Errorf("unit %d: enabled/exit steps %+v for arm %s", i, u, arms[plan[u.Plan].Arm].Name)
		}
	}
	steps := okResults(s, units, plan, arms, works)
	if next, cut := resumeAt(steps, units, nil); next != len(plan) || cut != -1 {
		t.Errorf("complete run: resumeAt = %d, %d", next, cut)
	}
	cutFrom := func(step int) []proto.Result {
		partial := slices.Clone(steps)
		for i := step; i < len(partial); i++ {
			partial[i] = proto.Result{}
		}
		return partial
	}
	// The VM dies in unit 2's second workload: units 0 and 1 are done, unit 2 keeps its
	// first workload and the next VM starts at unit 3.
	partial := cutFrom(units[2].Work[1])
	if next, cut := resumeAt(partial, units, nil); next != 3 || cut != 2 {
		t.Errorf("died mid unit 2: resumeAt = %d, %d; want 3, 2", next, cut)
	}
	res := collectUnit(partial, units[2], arms[plan[units[2].Plan].Arm], works)
	if _, ok := res.Values["hackbench/pipes-processes"]; !ok || len(res.Values) != 1 || len(res.Problems) != len(works)-1 {
		t.Errorf("unit 2 cut in its second workload: values %v, problems %v", res.Values, res.Problems)
	}
	// Dying before any workload of unit 1 finished (on attach): unit 1 runs again, once.
	partial = cutFrom(units[1].Work[0])
	if next, cut := resumeAt(partial, units, nil); next != 1 || cut != 1 {
		t.Errorf("died on unit 1's attach: resumeAt = %d, %d; want 1, 1", next, cut)
	}
	if next, cut := resumeAt(partial, units, map[int]bool{1: true}); next != 2 || cut != 1 {
		t.Errorf("died on unit 1's attach again: resumeAt = %d, %d; want 2, 1", next, cut)
	}
	// A boot that never reached unit 1 costs it no retry.
	if next, cut := resumeAt(cutFrom(units[1].First), units, map[int]bool{1: true}); next != 1 || cut != 1 {
		t.Errorf("died before unit 1 (retried before): resumeAt = %d, %d; want 1, 1", next, cut)
	}
	// A later VM's script starts mid-plan: its units carry their plan indexes.
	s2 := NewScenario("t2")
	rest := []unitSteps{addUnit(s2, 4, arms[plan[4].Arm], works), addUnit(s2, 5, arms[plan[5].Arm], works)}
	if next, cut := resumeAt(make([]proto.Result, len(s2.steps)), rest, nil); next != 4 || cut != 0 {
		t.Errorf("no hello on a resumed VM: resumeAt = %d, %d; want 4, 0", next, cut)
	}
}

func TestCollectUnit(t *testing.T) {
	arms, works := testBench()
	plan := []benchUnit{{Round: 0, Arm: 1}, {Round: 0, Arm: 0}}
	s := NewScenario("t")
	units := []unitSteps{addUnit(s, 0, arms[1], works), addUnit(s, 1, arms[0], works)}
	steps := okResults(s, units, plan, arms, works)
	res := collectUnit(steps, units[0], arms[1], works)
	if len(res.Values) != 7 || len(res.Problems) != 0 || res.Values["stress-ng/pipe"] != 83704.29 || res.Ops != "simple" {
		t.Errorf("good unit: %+v", res)
	}
	// The kernel ejected the scheduler during stress-ng: stress-ng and pool do not count.
	ejected := slices.Clone(steps)
	ejected[units[0].State[2]].Values = map[string]string{SCXState: "disabled"}
	ejected[units[0].State[3]].Values = map[string]string{SCXState: "disabled"}
	res = collectUnit(ejected, units[0], arms[1], works)
	if len(res.Values) != 2 || len(res.Problems) != 2 || !strings.Contains(res.Problems[0], "ejected") {
		t.Errorf("ejected mid-unit: %+v", res)
	}
	// A scheduler that never enabled: nothing counts.
	never := slices.Clone(steps)
	never[units[0].Enabled] = proto.Result{Kind: "step", OK: false, Value: "disabled"}
	if res := collectUnit(never, units[0], arms[1], works); len(res.Values) != 0 || !strings.Contains(strings.Join(res.Problems, ""), "never enabled") {
		t.Errorf("never enabled: %+v", res)
	}
	// Another scheduler's ops, a failed workload, a default arm with sched_ext on.
	other := slices.Clone(steps)
	other[units[0].Ops].Values = map[string]string{SCXOps: "mlsched"}
	other[units[1].Work[0]].ExitCode = 1
	other[units[1].State[1]].Values = map[string]string{SCXState: "enabled"}
	if res := collectUnit(other, units[0], arms[1], works); len(res.Values) != 0 {
		t.Errorf("wrong ops: %+v", res)
	}
	if res := collectUnit(other, units[1], arms[0], works); len(res.Values) != 5 || len(res.Problems) != 2 {
		t.Errorf("default arm with a failed hackbench and sched_ext on: %+v", res)
	}
}

func TestBenchReport(t *testing.T) {
	arms, works := testBench()
	arms = append(arms, benchArm{Name: "mlsched fifo", Cmd: []string{"/mlsched", "run", "--metrics-addr", "", "--policy", "fifo"}, Ops: "mlsched"})
	rep := newBenchReport(arms, works)
	rep.Commit, rep.Kernel, rep.Qemu, rep.Accel, rep.Rounds, rep.Seed = "abc", "7.2.13", "qemu 7.2", "tcg,thread=multi", 5, 9
	for r := 0; r < 5; r++ {
		for i, a := range arms[:2] {
			for _, m := range rep.Metrics {
				rep.add(m, a.Name, benchSample{Round: r, Value: float64(10*(i+1) + r)})
			}
		}
	}
	rep.fillStats()
	js, err := json.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	// The documented shape: top-level keys, and per workload unit, direction and per arm
	// runs and median.
	var shape struct {
		Commit, Kernel, Qemu, Accel *string
		Restarts                    *int
		Workloads                   map[string]struct {
			Unit           *string
			HigherIsBetter *bool `json:"higher_is_better"`
			Arms           map[string]struct {
				Runs   []float64
				Median *float64
			}
		}
	}
	if err := json.Unmarshal(js, &shape); err != nil {
		t.Fatal(err)
	}
	if shape.Commit == nil || shape.Kernel == nil || shape.Qemu == nil || shape.Accel == nil || shape.Restarts == nil || len(shape.Workloads) != 7 {
		t.Fatalf("top level: %s", js)
	}
	hb := shape.Workloads["hackbench/pipes-processes"]
	if hb.Unit == nil || *hb.Unit != "s" || hb.HigherIsBetter == nil || *hb.HigherIsBetter {
		t.Errorf("hackbench entry: %+v", hb)
	}
	if a := hb.Arms[refSimple]; len(a.Runs) != 5 || a.Median == nil || *a.Median != 22 {
		t.Errorf("scx_simple runs %v median %v", a.Runs, a.Median)
	}
	if a := hb.Arms["mlsched fifo"]; len(a.Runs) != 0 || a.Median != nil {
		t.Errorf("an arm without runs: %+v", a)
	}
	if !bytes.Contains(js, []byte(`"runs":[]`)) {
		t.Errorf("an arm without runs should have an empty runs list: %s", js)
	}
	ratio := rep.Workloads["pool"].Arms[refSimple].VsDefault
	if ratio == nil || math.Abs(ratio.Ratio-22.0/12) > 1e-9 || !(ratio.Low <= ratio.Ratio && ratio.Ratio <= ratio.High) {
		t.Errorf("scx_simple vs default: %+v, want 22/12 inside its interval", ratio)
	}
	text := rep.tables()
	for _, want := range []string{"hackbench/sockets-threads (s, lower is better)", "stress-ng/affinity (bogo ops/s, higher is better)",
		"ab.MedianRatioCI", "TCG does not model caches", "1.83 [", "mlsched fifo  0"} {
		if !strings.Contains(text, want) {
			t.Errorf("tables lack %q:\n%s", want, text)
		}
	}
	var svg bytes.Buffer
	if err := rep.writeSVG(&svg); err != nil {
		t.Fatal(err)
	}
	for d := xml.NewDecoder(bytes.NewReader(svg.Bytes())); ; {
		if _, err := d.Token(); err == io.EOF {
			break
		} else if err != nil {
			t.Fatalf("the SVG is not well-formed XML: %v", err)
		}
	}
	if got := strings.Count(svg.String(), "<circle"); got != 7*10 {
		t.Errorf("%d run dots, want 70", got)
	}
	if !strings.Contains(svg.String(), "no runs") || !strings.Contains(svg.String(), "does not model caches") {
		t.Error("the SVG lacks the no-runs mark or the TCG note")
	}
}

func TestBenchConfig(t *testing.T) {
	c, err := benchConfigFrom(func(string) string { return "" }, 99)
	if err != nil || c.Rounds != 5 || c.Seed != 99 || c.Accel != "tcg,thread=multi" || c.StressDur != 5*time.Second || c.Arms != nil {
		t.Errorf("defaults: %+v, %v", c, err)
	}
	env := map[string]string{"MLSCHED_VMBENCH_ROUNDS": "2", "MLSCHED_VMBENCH_SEED": "7", "MLSCHED_VMBENCH_ARMS": "default, scx_simple -f",
		"MLSCHED_VMBENCH_WORKLOADS": "pool", "MLSCHED_VMBENCH_STRESS_DURATION": "3s"}
	c, err = benchConfigFrom(func(k string) string { return env[k] }, 99)
	if err != nil || c.Rounds != 2 || c.Seed != 7 || len(c.Arms) != 2 || c.StressDur != 3*time.Second {
		t.Errorf("set: %+v, %v", c, err)
	}
	if w := benchWorkloads(c); len(w) != 1 || w[0].Name != "pool" {
		t.Errorf("MLSCHED_VMBENCH_WORKLOADS=pool: %v", w)
	}
	kept := keepNamed(peerArms(), c.Arms, func(a benchArm) string { return a.Name })
	if len(kept) != 1 || kept[0].Name != "scx_simple -f" {
		t.Errorf("MLSCHED_VMBENCH_ARMS kept %v", kept)
	}
	for k, v := range map[string]string{"MLSCHED_VMBENCH_ROUNDS": "0", "MLSCHED_VMBENCH_POOL_DURATION": "5", "MLSCHED_VMBENCH_SEED": "-1"} {
		if _, err := benchConfigFrom(func(name string) string { return map[string]string{k: v}[name] }, 1); err == nil {
			t.Errorf("%s=%s: no error", k, v)
		}
	}
	if got := benchWorkloads(benchConfig{HackbenchLoops: 300, StressDur: 2500 * time.Millisecond, PoolDur: time.Second})[2].Cmd; !slices.Contains(got, "3s") {
		t.Errorf("stress-ng -t for 2.5s: %v", got)
	}
}

func equalMaps(a, b map[string]float64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func jsonOf(t *testing.T, v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// The table's ratio cells: a reference median of 0 (a starved stressor) is said, not printed
// as +Inf or NaN; a small ratio keeps two significant digits instead of reading 0.00.
func TestRatioCell(t *testing.T) {
	arm := []float64{5, 6, 7, 8}
	for _, base := range [][]float64{{0, 0, 0, 0}, {0, 0, 0, 1, 0}} {
		ci := ab.MedianRatioCI(base, arm)
		if got := ratioCell(&ci, false); got != "- (reference median 0)" {
			t.Errorf("base %v: %q, want the reference's zero median said", base, got)
		}
	}
	// 6.5 tasks/s against 4,622: 0.0014, not 0.00 (which reads as nothing done).
	ci := ab.MedianRatioCI([]float64{4622, 4600, 4650}, []float64{5, 6.5, 8})
	if got := ratioCell(&ci, false); !strings.HasPrefix(got, "0.0014 [0.001") || strings.Contains(got, "0.00,") || strings.HasSuffix(got, "0.00]") {
		t.Errorf("small ratio: %q, want 0.0014 [0.001.., 0.001..]", got)
	}
	for v, want := range map[float64]string{0.0027: "0.0027", 0.5: "0.50", 1.234: "1.23", 0: "0.00", 0.1: "0.10"} {
		if got := num2(v); got != want {
			t.Errorf("num2(%v) = %q, want %q", v, got, want)
		}
	}
}
