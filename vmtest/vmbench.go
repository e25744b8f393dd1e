package vmtest

// `make vmbench` (bench_test.go): the project's yardstick. One VM runs every arm (no sched_ext
// scheduler, the kernel's example schedulers, mlsched's policies) on every workload, round
// after round, the arms' order shuffled per round. This file holds the parts that need no VM:
// the arms and workloads, the round plan and its resumption after a VM restart, the parsers of
// the workloads' output, the script a VM runs, and the report (JSON, tables); the figure is
// vmbench_svg.go, the host programs that go into the VM peers.go.

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/mlsched/mlsched/ab"
	"github.com/mlsched/mlsched/vmtest/internal/proto"
)

// benchArm is one scheduler configuration: Cmd (nil for the kernel's default scheduler) runs
// in the guest until SIGINT; while it runs, /sys/kernel/sched_ext/root/ops starts with Ops.
type benchArm struct {
	Name string
	Cmd  []string
	Ops  string
	// Extra arms run only when MLSCHED_VMBENCH_ARMS names them (the cost arms: --bpf-stats
	// slows every BPF program on the machine, so it is never on beside the others' figures).
	Extra bool
}

func (a benchArm) sched() bool { return a.Cmd != nil }

// benchMetric is one number a workload run yields: one table and one figure panel each.
type benchMetric struct {
	Name           string
	Unit           string
	HigherIsBetter bool
}

// benchWorkload is one command run once per arm and round; parse turns its output into a value
// per metric.
type benchWorkload struct {
	Name    string // for MLSCHED_VMBENCH_WORKLOADS
	Cmd     []string
	Timeout time.Duration
	Metrics []benchMetric
	parse   func(stdout, stderr string) (map[string]float64, error)
}

// benchConfig is what the environment may change (see vmtest.mk's vmbench target).
type benchConfig struct {
	Rounds         int
	Seed           uint64
	HackbenchLoops int
	StressDur      time.Duration
	PoolDur        time.Duration
	Accel          string
	MaxRestarts    int
	Arms           []string // names to keep (nil: all)
	Workloads      []string // names to keep (nil: all)
}

// stressors are the stress-ng mix's stressors, each a metric of its own.
var stressors = []string{"cpu", "fork", "pipe", "affinity"}

// benchWorkloads are the workloads, in the order each arm runs them.
func benchWorkloads(c benchConfig) []benchWorkload {
	loops := strconv.Itoa(c.HackbenchLoops)
	hackbench := func(name, mode string, args ...string) benchWorkload {
		return benchWorkload{
			Name:    name,
			Cmd:     append([]string{"/usr/bin/hackbench"}, append(args, "-g", "4", "-f", "10", "-l", loops)...),
			Timeout: 3 * time.Minute,
			Metrics: []benchMetric{{Name: "hackbench/" + mode, Unit: "s", HigherIsBetter: false}},
			parse: func(stdout, _ string) (map[string]float64, error) {
				v, err := parseHackbench(stdout)
				return map[string]float64{"hackbench/" + mode: v}, err
			},
		}
	}
	stress := benchWorkload{
		Name: "stress-ng",
		Cmd: []string{"/usr/bin/stress-ng", "-c", "2", "-f", "2", "--pipe", "2", "--affinity", "1", "--aggressive",
			"-t", durSeconds(c.StressDur), "--metrics-brief"},
		Timeout: c.StressDur + 2*time.Minute,
		parse: func(stdout, stderr string) (map[string]float64, error) {
			got, err := parseStressNG(stdout + "\n" + stderr)
			out := map[string]float64{}
			for k, v := range got {
				out["stress-ng/"+k] = v
			}
			return out, err
		},
	}
	for _, s := range stressors {
		stress.Metrics = append(stress.Metrics, benchMetric{Name: "stress-ng/" + s, Unit: "bogo ops/s", HigherIsBetter: true})
	}
	pool := benchWorkload{
		Name:    "pool",
		Cmd:     []string{"/mlsched", "workload", "pool", "--duration", c.PoolDur.String()},
		Timeout: c.PoolDur + 2*time.Minute,
		Metrics: []benchMetric{{Name: "pool", Unit: "tasks/s", HigherIsBetter: true}},
		parse: func(stdout, _ string) (map[string]float64, error) {
			v, err := parsePool(stdout)
			return map[string]float64{"pool": v}, err
		},
	}
	all := []benchWorkload{
		hackbench("hackbench-pipe", "pipes-processes", "-p"),
		hackbench("hackbench-thread", "sockets-threads", "-T"),
		stress, pool,
	}
	return keepNamed(all, c.Workloads, func(w benchWorkload) string { return w.Name })
}

// durSeconds is stress-ng's duration syntax (whole seconds, at least 1).
func durSeconds(d time.Duration) string {
	return strconv.Itoa(max(1, int(d.Round(time.Second)/time.Second))) + "s"
}

// keepNamed keeps the elements whose name is in names (all of them if names is empty).
func keepNamed[T any](all []T, names []string, name func(T) string) []T {
	if len(names) == 0 {
		return all
	}
	var out []T
	for _, x := range all {
		if slices.ContainsFunc(names, func(n string) bool { return strings.EqualFold(strings.TrimSpace(n), name(x)) }) {
			out = append(out, x)
		}
	}
	return out
}

var hackbenchTime = regexp.MustCompile(`(?m)^Time:\s*([0-9]+(?:\.[0-9]+)?)\s*$`)

// parseHackbench reads rt-tests hackbench's "Time: 1.234" (seconds).
func parseHackbench(out string) (float64, error) {
	m := hackbenchTime.FindStringSubmatch(strings.ReplaceAll(out, "\r", ""))
	if m == nil {
		return 0, fmt.Errorf("hackbench: no \"Time:\" line in %q", truncate(out, 300))
	}
	return strconv.ParseFloat(m[1], 64)
}

// stressRow is a row of stress-ng --metrics-brief's table: stressor, bogo ops, real, usr and
// sys time, bogo ops/s over real time and over usr+sys time.
var stressRow = regexp.MustCompile(`^stress-ng: \w+:\s+\[\d+\]\s+([a-z0-9-]+)\s+(\d+)\s+([0-9.]+)\s+([0-9.]+)\s+([0-9.]+)\s+([0-9.]+)\s+([0-9.]+)\s*$`)

// stressDispatch is stress-ng's "dispatching hogs: 2 cpu, 2 fork, 2 pipe, 1 affinity".
var stressDispatch = regexp.MustCompile(`(?m)\] dispatching hogs: (.*)$`)

// parseStressNG returns each stressor's bogo ops per second of real time from stress-ng
// --metrics-brief (its log lines, on stderr). --metrics-brief leaves out a stressor that did
// no bogo op at all: in a run that completed successfully that stressor's rate is 0 (it was
// starved, which is what a scheduler benchmark must show); in any other run its absence is an
// error, so that a stressor that never ran does not look like a slow one.
func parseStressNG(out string) (map[string]float64, error) {
	got := map[string]float64{}
	inTable := false
	for _, line := range strings.Split(strings.ReplaceAll(out, "\r", ""), "\n") {
		switch {
		case strings.Contains(line, "] stressor ") && strings.Contains(line, "bogo ops"):
			inTable = true
		case strings.Contains(line, "miscellaneous metrics"):
			inTable = false
		case inTable:
			if m := stressRow.FindStringSubmatch(line); m != nil {
				v, err := strconv.ParseFloat(m[6], 64)
				if err != nil {
					return got, err
				}
				got[m[1]] = v
			}
		}
	}
	completed := strings.Contains(out, "] successful run completed")
	dispatched := map[string]bool{} // stressor -> at least one instance
	if m := stressDispatch.FindStringSubmatch(out); m != nil {
		for _, hog := range strings.Split(m[1], ",") {
			if f := strings.Fields(hog); len(f) == 2 && f[0] != "0" {
				dispatched[f[1]] = true
			}
		}
	}
	var missing []string
	for _, s := range stressors {
		if _, ok := got[s]; !ok && completed && dispatched[s] {
			got[s] = 0
		} else if !ok {
			missing = append(missing, s)
		}
	}
	if len(missing) > 0 {
		return got, fmt.Errorf("stress-ng: no metrics row for %v and no successful run: %q", missing, truncate(strings.TrimSpace(out), 200))
	}
	return got, nil
}

// parsePool reads `mlsched workload pool`'s JSON report (throughput in tasks/s).
func parsePool(out string) (float64, error) {
	var r struct {
		Throughput *float64 `json:"throughput"`
		Unit       string   `json:"unit"`
	}
	if err := json.Unmarshal([]byte(strings.TrimSpace(out)), &r); err != nil {
		return 0, fmt.Errorf("pool: report %q: %w", truncate(out, 300), err)
	}
	if r.Throughput == nil || r.Unit != "tasks/s" {
		return 0, fmt.Errorf("pool: report %q has no throughput in tasks/s", truncate(out, 300))
	}
	return *r.Throughput, nil
}

// flagHelp returns the entry of flag name ("-policy") in a Go flag package usage text: its
// first line and the indented lines that follow, or "" if the flag is not there.
func flagHelp(usage, name string) string {
	lines := strings.Split(usage, "\n")
	for i, l := range lines {
		f := strings.Fields(l)
		if len(f) == 0 || f[0] != name {
			continue
		}
		entry := []string{l}
		for _, next := range lines[i+1:] {
			if !strings.HasPrefix(next, "    ") || strings.HasPrefix(strings.TrimSpace(next), "-") {
				break
			}
			entry = append(entry, next)
		}
		return strings.Join(entry, "\n")
	}
	return ""
}

// The model "mlsched vm-model" runs with (`make vmbench-model`, benchmodel_test.go): its file in
// the repository (module-relative) and in the guest.
const (
	benchModelFile  = "vmtest/testdata/vmbench-model.bin"
	benchModelGuest = "/vmbench-model.bin"
)

// mlschedArms returns mlsched's arms that `mlsched run` accepts (its usage text), and for each
// one it does not, why. model is "embedded", "file" (/default.bin) or "" (no model); vmModel
// says whether the model trained on captures of these workloads in this VM (benchModelFile,
// `make vmbench-model`) is in the guest as benchModelGuest: the arm "mlsched vm-model" runs the
// default run (--infer kernel) with it.
func mlschedArms(runUsage, model string, vmModel bool) (arms []benchArm, skipped map[string]string) {
	skipped = map[string]string{}
	run := []string{"/mlsched", "run", "--metrics-addr", ""}
	if flagHelp(runUsage, "-json") != "" {
		run = append(run, "--json") // the exit report, read into the arms' own account
	}
	withModel := run
	if model == "file" {
		withModel = append(slices.Clone(run), "--model", "/default.bin")
	}
	with := func(base []string, args ...string) []string { return append(slices.Clone(base), args...) }
	for _, c := range []struct {
		name  string
		cmd   []string
		needs map[string]string // flag entry -> word it must mention
		model bool
		extra bool
		vm    bool // needs the VM-trained model file
	}{
		{"mlsched fifo", with(run, "--policy", "fifo"), map[string]string{"-policy": "fifo"}, false, false, false},
		{"mlsched vtime", with(run, "--policy", "vtime"), map[string]string{"-policy": "vtime"}, false, false, false},
		{"mlsched model/fifo", with(withModel, "--policy", "model", "--queue", "fifo"), map[string]string{"-policy": "model", "-queue": "fifo"}, true, false, false},
		{"mlsched", withModel, nil, true, false, false}, // the default run: the model over the vtime queue
		// The net in BPF (--infer kernel, the default since it exists), and the older round trip.
		{"mlsched kernel", with(withModel, "--infer", "kernel"), map[string]string{"-infer": "kernel"}, true, false, false},
		{"mlsched user", with(withModel, "--infer", "user"), map[string]string{"-infer": "user"}, true, false, false},
		// The fixed placements: what any model's placement lies between.
		{"mlsched keep", with(withModel, "--policy", "keep"), map[string]string{"-policy": "keep"}, true, false, false},
		{"mlsched migrate", with(withModel, "--policy", "migrate"), map[string]string{"-policy": "migrate"}, true, false, false},
		{"mlsched oncpu", with(withModel, "--policy", "oncpu"), map[string]string{"-policy": "oncpu"}, true, false, false},
		// The default run with a model of these very workloads, captured in this VM: what the net
		// does when its model fits (the default model trips the guard on these workloads).
		{"mlsched vm-model", with(run, "--model", benchModelGuest, "--infer", "kernel"), map[string]string{"-infer": "kernel"}, false, false, true},
		// The cost arms: BPF run time per hook with and without the net, and without its cache.
		{"mlsched vtime +stats", with(run, "--policy", "vtime", "--bpf-stats"), map[string]string{"-policy": "vtime", "-bpf-stats": "statistics"}, false, true, false},
		{"mlsched +stats", with(withModel, "--bpf-stats"), map[string]string{"-bpf-stats": "statistics"}, true, true, false},
		{"mlsched +stats nocache", with(withModel, "--bpf-stats", "--no-verdict-cache"), map[string]string{"-bpf-stats": "statistics", "-no-verdict-cache": "net"}, true, true, false},
		// The default run with a shorter bound on a kept task's wait (default: the horizon):
		// what a wrong "keep" costs at most.
		{"mlsched kb100us", with(withModel, "--keep-budget", "100us"), map[string]string{"-keep-budget": "waits"}, true, true, false},
		{"mlsched kb20us", with(withModel, "--keep-budget", "20us"), map[string]string{"-keep-budget": "waits"}, true, true, false},
		// "mlsched shadow" runs the whole feature pipeline and the net on every wakeup but places
		// as the vtime queue does: against "mlsched vtime", what the pipeline costs apart from
		// where tasks go.
		{"mlsched shadow", with(withModel, "--shadow"), map[string]string{"-shadow": "scored"}, true, true, false},
		// The default run without the online learner (--adapt=false): the learner's share.
		{"mlsched noadapt", with(withModel, "--adapt=false"), map[string]string{"-adapt": "fine-tune"}, true, true, false},
		// The vtime queue with an empty program on sys_enter (the guest agent's `systrace`): the
		// floor of the feature pipeline's syscall hook, the tracepoint taken on every syscall.
		{"mlsched vtime +sys_enter", append([]string{"/init", "systrace"}, with(run, "--policy", "vtime")...), map[string]string{"-policy": "vtime"}, false, true, false},
	} {
		why := ""
		for flag, word := range c.needs {
			if entry := flagHelp(runUsage, flag); entry == "" {
				why = fmt.Sprintf("`mlsched run` has no %s flag", flag)
			} else if !strings.Contains(entry, word) {
				why = fmt.Sprintf("`mlsched run %s` does not offer %s", flag, word)
			}
		}
		if why == "" && c.model && model == "" {
			why = "mlsched embeds no default model and model/default.bin is missing"
		}
		if why == "" && c.vm && !vmModel {
			why = benchModelFile + " is missing (make vmbench-model)"
		}
		if why != "" {
			skipped[c.name] = why
			continue
		}
		arms = append(arms, benchArm{Name: c.name, Cmd: c.cmd, Ops: "mlsched", Extra: c.extra})
	}
	return arms, skipped
}

// The arms' own account: what each mlsched run's exit report (run --json) says, summed over the
// arm's runs: how many wakeups had a busy previous CPU and how many of those the placement
// decided (the net or a fixed rule, not the guard, a fallback or W's affinity), the verdicts
// reused, the scheduler's own CPU time, and with --bpf-stats each hook's run time.
type schedAccount struct {
	Reports       int                 `json:"reports"`
	BusyPrev      uint64              `json:"busy_prev"`
	Decided       uint64              `json:"decided"`
	DecidedFrac   float64             `json:"decided_fraction"`
	NetEvals      uint64              `json:"net_evaluations"` // kernel_keep+migrate+no_idle+guard+shadow, by the net
	Cached        uint64              `json:"cached"`
	GuardTrips    uint64              `json:"guard_trips"`
	Misattributed uint64              `json:"misattributed"`
	CPUS          float64             `json:"cpu_s"`      // while attached (older reports: the whole run)
	DurationS     float64             `json:"duration_s"` // attached (older reports: the whole run)
	NetNs         uint64              `json:"net_ns"`
	NetRuns       uint64              `json:"net_runs"`
	Progs         map[string]progStat `json:"bpf_progs,omitempty"`
}

type progStat struct {
	Runs  uint64 `json:"runs"`
	RunNs uint64 `json:"run_ns"`
}

// runReport is the part of `mlsched run --json`'s report the account reads.
type runReport struct {
	Exit      struct{ Kind string } `json:"exit"`
	DurationS float64               `json:"duration_s"`
	CPUS      float64               `json:"cpu_s"`
	// While attached (without the verifier's time at load); absent in older reports.
	AttachedS   float64             `json:"attached_s"`
	AttachedCPU float64             `json:"attached_cpu_s"`
	BPF         map[string]uint64   `json:"bpf"`
	User        map[string]uint64   `json:"user"`
	Progs       map[string]progStat `json:"bpf_progs"`
}

// parseRunReport finds the JSON exit report in a run's stdout (its last line that is one).
func parseRunReport(stdout string) (runReport, bool) {
	lines := strings.Split(stdout, "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		var r runReport
		if strings.HasPrefix(lines[i], `{"exit"`) && json.Unmarshal([]byte(lines[i]), &r) == nil && r.Exit.Kind != "" {
			return r, true
		}
	}
	return runReport{}, false
}

// add sums one run's report into the account.
func (a *schedAccount) add(r runReport) {
	b, u := r.BPF, r.User
	a.Reports++
	a.BusyPrev += b["busy_prev"]
	// In the kernel: the placement's keeps and migrates (no idle CPU: still its verdict) less
	// those W's affinity overrode; by the round trip: the decisions BPF applied.
	// (select_cpu decides the wakeups that are not scored: select_*.)
	sel := b["select_keep"] + b["select_migrate"] + b["select_no_idle"]
	a.Decided += b["kernel_keep"] + b["kernel_migrate"] + b["kernel_no_idle"] - min(b["kernel_forced"], b["kernel_keep"]+b["kernel_migrate"]+b["kernel_no_idle"]) +
		sel + b["keep"] + b["migrate"] + b["no_idle"]
	a.NetEvals += b["kernel_keep"] + b["kernel_migrate"] + b["kernel_no_idle"] + b["guard_fifo"] + b["shadow"] + sel
	a.Cached += b["kernel_cached"]
	a.GuardTrips += u["guard_trips"]
	a.Misattributed += u["misattributed"]
	if r.AttachedS > 0 {
		a.CPUS += r.AttachedCPU
		a.DurationS += r.AttachedS
	} else {
		a.CPUS += r.CPUS
		a.DurationS += r.DurationS
	}
	a.NetNs += b["net_ns"]
	a.NetRuns += b["net_runs"]
	for name, p := range r.Progs {
		if a.Progs == nil {
			a.Progs = map[string]progStat{}
		}
		q := a.Progs[name]
		a.Progs[name] = progStat{Runs: q.Runs + p.Runs, RunNs: q.RunNs + p.RunNs}
	}
	if a.BusyPrev > 0 {
		a.DecidedFrac = float64(a.Decided) / float64(a.BusyPrev)
	}
}

// account adds an mlsched arm's exit report (its run's stdout) to the arm's account.
func (r *benchReport) account(arm, stdout string) {
	rr, ok := parseRunReport(stdout)
	if !ok {
		return
	}
	if r.Accounts == nil {
		r.Accounts = map[string]*schedAccount{}
	}
	if r.Accounts[arm] == nil {
		r.Accounts[arm] = &schedAccount{}
	}
	r.Accounts[arm].add(rr)
}

// accountTable renders the arms' own accounts.
func (r *benchReport) accountTable() string {
	if len(r.Accounts) == 0 {
		return ""
	}
	var b strings.Builder
	b.WriteString("\nmlsched's own account (each arm's exit reports, summed over its runs; decided: of the wakeups whose\n" +
		"previous CPU was busy, the share its placement decided; cached: of the net's verdicts, the share reused;\n" +
		"cpu: the scheduler process's CPU time per second attached, as a share of one CPU; per-call ns with --bpf-stats):\n")
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "arm\truns\tbusy prev\tdecided\tcached\tguard trips\tmisattributed\tcpu\tselect ns\tenqueue ns\tdispatch ns\tstopping ns\tsys_enter ns\tnet ns\tnet share\t\n")
	for _, name := range r.Arms {
		a := r.Accounts[name]
		if a == nil {
			continue
		}
		perCall := func(prog string) string {
			p, ok := a.Progs[prog]
			if !ok || p.Runs == 0 {
				return "-"
			}
			return num(float64(p.RunNs) / float64(p.Runs))
		}
		cached, cpu, netNs, share := "-", "-", "-", "-"
		if a.NetEvals > 0 && a.Cached > 0 {
			cached = fmt.Sprintf("%.1f%%", 100*float64(a.Cached)/float64(a.NetEvals))
		}
		if a.DurationS > 0 {
			cpu = fmt.Sprintf("%.2f%%", 100*a.CPUS/a.DurationS)
		}
		if a.NetRuns > 0 {
			netNs = num(float64(a.NetNs) / float64(a.NetRuns))
		}
		var total uint64
		for _, p := range a.Progs {
			total += p.RunNs
		}
		if total > 0 && a.NetRuns > 0 {
			share = fmt.Sprintf("%.1f%%", 100*float64(a.NetNs)/float64(total))
		}
		decided := "-"
		if a.BusyPrev > 0 {
			decided = fmt.Sprintf("%.1f%%", 100*a.DecidedFrac)
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t%s\t%d\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", name, a.Reports, a.BusyPrev, decided, cached,
			a.GuardTrips, a.Misattributed, cpu, perCall("mls_select_cpu"), perCall("mls_enqueue"), perCall("mls_dispatch"),
			perCall("mls_stopping"), perCall("mls_sched_sys_enter"), netNs, share)
	}
	tw.Flush()
	return b.String()
}

// peerArms are the kernel's example schedulers (tools/sched_ext), at /scx_* in the guest.
func peerArms() []benchArm {
	return []benchArm{
		{Name: "scx_simple", Cmd: []string{"/scx_simple"}, Ops: "simple"},
		{Name: "scx_simple -f", Cmd: []string{"/scx_simple", "-f"}, Ops: "simple"},
		{Name: "scx_userland", Cmd: []string{"/scx_userland"}, Ops: "userland"},
	}
}

// benchUnit is one arm's turn in one round: every workload once.
type benchUnit struct {
	Round int `json:"round"` // 0-based
	Arm   int `json:"arm"`   // index into the arms
}

// benchPlan lays out rounds of every arm once, in an order shuffled per round from seed.
func benchPlan(arms, rounds int, seed uint64) []benchUnit {
	rng := rand.New(rand.NewPCG(seed, 0x766d62656e6368)) // "vmbench"
	var plan []benchUnit
	for r := 0; r < rounds; r++ {
		for _, a := range rng.Perm(arms) {
			plan = append(plan, benchUnit{Round: r, Arm: a})
		}
	}
	return plan
}

// unitSteps are a unit's step indexes in a VM's script.
type unitSteps struct {
	Plan    int   // index into the plan
	First   int   // its first step
	Last    int   // its last step
	Enabled int   // wait for state enabled (-1 for the default arm)
	Ops     int   // read of root/ops after enabling (-1 for the default arm)
	Work    []int // the workloads' exec steps, in benchWorkloads order
	State   []int // the read of the sched_ext state after each workload
	Exit    int   // wait for the scheduler to exit (-1 for the default arm)
}

// settle: after a scheduler enables, a moment for its own start-up work to end.
const settle = time.Second

// addUnit appends plan entry p (the arm's turn) to the scenario.
func addUnit(s *Scenario, p int, arm benchArm, works []benchWorkload) unitSteps {
	u := unitSteps{Plan: p, First: len(s.steps), Enabled: -1, Ops: -1, Exit: -1}
	name := fmt.Sprintf("sched-%d", p)
	if arm.sched() {
		s.Start(name, arm.Cmd...)
		u.Enabled = s.MayFail(s.WaitFile(SCXState, "enabled", attachTimeout))
		u.Ops = s.Read(SCXOps)
		s.Sleep(settle)
	} else {
		s.Read(SCXState)
	}
	for _, w := range works {
		u.Work = append(u.Work, s.MayFail(s.Exec(w.Timeout, w.Cmd...)))
		u.State = append(u.State, s.Read(SCXState))
	}
	if arm.sched() {
		s.MayFail(s.Signal(name, "INT")) // fails if the kernel already ejected it
		u.Exit = s.MayFail(s.Wait(name, 30*time.Second))
		s.MayFail(s.WaitFile(SCXState, "disabled", 15*time.Second))
	}
	u.Last = len(s.steps) - 1
	return u
}

// unitBudget bounds a unit's time in the VM (every step at its timeout).
func unitBudget(arm benchArm, works []benchWorkload) time.Duration {
	d := time.Duration(0)
	for _, w := range works {
		d += w.Timeout + time.Second
	}
	if arm.sched() {
		d += attachTimeout + settle + 45*time.Second
	}
	return d
}

// resumeAt says where the plan goes on after a VM that ran units (from its results): all
// done (cut < 0); or the first unit not fully reported, cut, was cut short. The next VM runs
// it again if none of its steps had run (a boot that failed), or if none of its workloads had
// finished (nothing of it counts yet: again is not twice) and it was not run again before
// (again says so: a unit that kills the VM twice is not retried for ever); else the next VM
// goes on after it.
func resumeAt(steps []proto.Result, units []unitSteps, again map[int]bool) (next, cut int) {
	for i, u := range units {
		if steps[u.Last].Kind != "" {
			continue
		}
		measured := slices.ContainsFunc(u.Work, func(w int) bool { return steps[w].Kind != "" })
		if steps[u.First].Kind == "" || !measured && !again[u.Plan] {
			return u.Plan, i
		}
		return u.Plan + 1, i
	}
	if len(units) == 0 {
		return 0, -1
	}
	return units[len(units)-1].Plan + 1, -1
}

// benchSample is one measured value.
type benchSample struct {
	Round int
	Value float64
}

// unitResult is what one unit yielded: a value per metric, or why a workload's values do not
// count.
type unitResult struct {
	Values   map[string]float64
	Problems []string
	Ops      string
}

// collectUnit reads unit u's values from a VM's step results. A workload's values count only
// if it ran to a zero exit, its output parses, and the arm was in charge from before it started
// until after it ended (enabled with its own ops; for the default arm, no scheduler at all).
func collectUnit(steps []proto.Result, u unitSteps, arm benchArm, works []benchWorkload) unitResult {
	res := unitResult{Values: map[string]float64{}}
	want := "disabled"
	if arm.sched() {
		want = "enabled"
		en, ops := steps[u.Enabled], steps[u.Ops]
		res.Ops = ops.Values[SCXOps]
		switch {
		case en.Kind == "":
			res.Problems = append(res.Problems, "the VM ended before the scheduler enabled")
			return res
		case !en.OK:
			exit := steps[u.Exit]
			res.Problems = append(res.Problems, fmt.Sprintf("never enabled (state %q after %v): %s", en.Value, attachTimeout,
				truncate(strings.TrimSpace(exit.Stdout+" "+exit.Stderr), 300)))
			return res
		case !strings.HasPrefix(res.Ops, arm.Ops):
			res.Problems = append(res.Problems, fmt.Sprintf("root/ops is %q, want %s", res.Ops, arm.Ops))
			return res
		}
	}
	for i, w := range works {
		r, st := steps[u.Work[i]], steps[u.State[i]]
		var err error
		switch {
		case r.Kind == "":
			err = errors.New("the VM ended before it finished")
		case !r.OK:
			err = errors.New(r.Error)
		case r.ExitCode != 0:
			err = fmt.Errorf("exit %d: %s", r.ExitCode, truncate(strings.TrimSpace(r.Stderr), 300))
		case st.Kind == "" || st.Values[SCXState] != want:
			err = fmt.Errorf("sched_ext state %q after it, want %s (the scheduler was ejected?)", st.Values[SCXState], want)
		}
		if err == nil {
			var vals map[string]float64
			if vals, err = w.parse(r.Stdout, r.Stderr); err == nil {
				for k, v := range vals {
					res.Values[k] = v
				}
			}
		}
		if err != nil {
			res.Problems = append(res.Problems, w.Name+": "+err.Error())
		}
	}
	return res
}

// The report: vmbench.json's shape (`commit`, `kernel`, `qemu`, `accel`, `restarts`,
// `workloads`: per metric its unit, direction and per arm the runs and their median) plus what
// makes a run reproducible and readable.
type benchReport struct {
	Commit    string                  `json:"commit"`
	Kernel    string                  `json:"kernel"`
	Qemu      string                  `json:"qemu"`
	Accel     string                  `json:"accel"`
	Restarts  int                     `json:"restarts"`
	Workloads map[string]*benchResult `json:"workloads"`

	Date           string            `json:"date"`
	Seed           uint64            `json:"seed"`
	Rounds         int               `json:"rounds"`
	Arms           []string          `json:"arms"`     // in the tables' order
	Commands       map[string]string `json:"commands"` // arm and workload -> guest command line
	Order          [][]string        `json:"order"`    // per round, the arms in the order they ran
	Skipped        map[string]string `json:"skipped,omitempty"`
	RestartReasons []string          `json:"restart_reasons,omitempty"`
	Problems       []string          `json:"problems,omitempty"` // runs that do not count, and why
	Notes          []string          `json:"notes,omitempty"`
	KernelLog      []string          `json:"kernel_log,omitempty"`
	Peers          string            `json:"peers,omitempty"` // the kernel source the example schedulers came from
	RatioMethod    string            `json:"ratio_method"`
	Note           string            `json:"note"`
	Metrics        []string          `json:"metrics"` // the tables' order
	// mlsched arms' own account, from their exit reports
	Accounts map[string]*schedAccount `json:"accounts,omitempty"`
}

type benchResult struct {
	Unit           string               `json:"unit"`
	HigherIsBetter bool                 `json:"higher_is_better"`
	Command        string               `json:"command"`
	Arms           map[string]*armStats `json:"arms"`
}

type armStats struct {
	Runs      []float64   `json:"runs"`
	Median    *float64    `json:"median"` // null without runs
	RunRounds []int       `json:"run_rounds"`
	Min       *float64    `json:"min,omitempty"`
	Max       *float64    `json:"max,omitempty"`
	Q1        *float64    `json:"q1,omitempty"`
	Q3        *float64    `json:"q3,omitempty"`
	VsDefault *ab.RatioCI `json:"vs_default,omitempty"`
	VsSimple  *ab.RatioCI `json:"vs_scx_simple,omitempty"`
	VsVtime   *ab.RatioCI `json:"vs_vtime,omitempty"`
}

// The references of the ratio columns.
const (
	refDefault = "default"
	refSimple  = "scx_simple"
	refVtime   = "mlsched vtime" // the base queue alone: what the model's placement adds to
)

// ratioMethod names how the ratio columns are computed (the table caption and the JSON).
const ratioMethod = "median(arm)/median(reference), 95% percentile bootstrap CI of that ratio of medians (ab.MedianRatioCI, 10000 resamples)"

// ratioCI is the ratio column's statistic: see ratioMethod.
func ratioCI(ref, arm []float64) ab.RatioCI { return ab.MedianRatioCI(ref, arm) }

// tcgNoteBench goes with every table and figure.
const tcgNoteBench = "qemu TCG does not model caches: these figures speak of cost and fairness, not the cache benefit of keeping a task local"

// fillStats computes each arm's summary and its ratios to the references.
func (r *benchReport) fillStats() {
	for _, res := range r.Workloads {
		for _, a := range res.Arms {
			if len(a.Runs) == 0 {
				continue
			}
			s := ab.Summarize(a.Runs)
			a.Median, a.Min, a.Max, a.Q1, a.Q3 = &s.Median, &s.Min, &s.Max, &s.Q1, &s.Q3
		}
		for _, a := range res.Arms {
			if len(a.Runs) == 0 {
				continue
			}
			if ref := res.Arms[refDefault]; ref != nil && len(ref.Runs) > 0 {
				ci := ratioCI(ref.Runs, a.Runs)
				a.VsDefault = &ci
			}
			if ref := res.Arms[refSimple]; ref != nil && len(ref.Runs) > 0 {
				ci := ratioCI(ref.Runs, a.Runs)
				a.VsSimple = &ci
			}
			if ref := res.Arms[refVtime]; ref != nil && len(ref.Runs) > 0 {
				ci := ratioCI(ref.Runs, a.Runs)
				a.VsVtime = &ci
			}
		}
	}
}

// add records a sample.
func (r *benchReport) add(metric, arm string, s benchSample) {
	a := r.Workloads[metric].Arms[arm]
	a.Runs = append(a.Runs, s.Value)
	a.RunRounds = append(a.RunRounds, s.Round)
}

// newBenchReport has an empty entry per metric and arm.
func newBenchReport(arms []benchArm, works []benchWorkload) *benchReport {
	r := &benchReport{Workloads: map[string]*benchResult{}, Commands: map[string]string{}, Skipped: map[string]string{},
		RatioMethod: ratioMethod, Note: tcgNoteBench}
	for _, a := range arms {
		r.Arms = append(r.Arms, a.Name)
		r.Commands[a.Name] = shellJoinArgs(a.Cmd)
	}
	for _, w := range works {
		r.Commands[w.Name] = shellJoinArgs(w.Cmd)
		for _, m := range w.Metrics {
			res := &benchResult{Unit: m.Unit, HigherIsBetter: m.HigherIsBetter, Command: shellJoinArgs(w.Cmd), Arms: map[string]*armStats{}}
			for _, a := range arms {
				res.Arms[a.Name] = &armStats{Runs: []float64{}, RunRounds: []int{}}
			}
			r.Workloads[m.Name] = res
			r.Metrics = append(r.Metrics, m.Name)
		}
	}
	return r
}

// shellJoinArgs quotes what a shell would need quoted (for reading, not for running).
func shellJoinArgs(args []string) string {
	if args == nil {
		return "(no sched_ext scheduler: the kernel's EEVDF)"
	}
	q := make([]string, len(args))
	for i, a := range args {
		if a == "" || strings.ContainsAny(a, " \t\"'$\\") {
			a = strconv.Quote(a)
		}
		q[i] = a
	}
	return strings.Join(q, " ")
}

// tables renders one table per metric: per arm n, median, min-max spread and IQR, and the
// ratio of medians to the default and to scx_simple with its bootstrap interval.
func (r *benchReport) tables() string {
	var b strings.Builder
	fmt.Fprintf(&b, "vmbench: commit %s, kernel %s, %s, -accel %s -cpu max -smp 2 -m 1G, %d rounds (seed %d), %s\n",
		r.Commit, r.Kernel, r.Qemu, r.Accel, r.Rounds, r.Seed, r.Date)
	fmt.Fprintf(&b, "VM restarts: %d", r.Restarts)
	if len(r.RestartReasons) > 0 {
		fmt.Fprintf(&b, " (%s)", strings.Join(r.RestartReasons, "; "))
	}
	fmt.Fprintf(&b, "\nratio columns: %s;\n  [low, high] the interval; a ratio below 1 is faster for a time, slower for a throughput.\nNOTE: %s.\n", r.RatioMethod, r.Note)
	for _, m := range r.Metrics {
		res := r.Workloads[m]
		better := "lower is better"
		if res.HigherIsBetter {
			better = "higher is better"
		}
		fmt.Fprintf(&b, "\n%s (%s, %s): %s\n", m, res.Unit, better, res.Command)
		tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintf(tw, "arm\tn\tmedian\tmin - max\tIQR\tvs default\tvs scx_simple\tvs mlsched vtime\t\n")
		for _, name := range r.Arms {
			a := res.Arms[name]
			if len(a.Runs) == 0 {
				fmt.Fprintf(tw, "%s\t0\t-\t-\t-\t-\t-\t-\t\n", name)
				continue
			}
			fmt.Fprintf(tw, "%s\t%d\t%s\t%s - %s\t%s\t%s\t%s\t%s\t\n", name, len(a.Runs), num(*a.Median), num(*a.Min), num(*a.Max),
				num(*a.Q3-*a.Q1), ratioCell(a.VsDefault, name == refDefault), ratioCell(a.VsSimple, name == refSimple), ratioCell(a.VsVtime, name == refVtime))
		}
		tw.Flush()
	}
	b.WriteString(r.accountTable())
	if len(r.Skipped) > 0 {
		b.WriteString("\nskipped arms:\n")
		for _, k := range slices.Sorted(maps.Keys(r.Skipped)) {
			fmt.Fprintf(&b, "  %s: %s\n", k, r.Skipped[k])
		}
	}
	if len(r.Problems) > 0 {
		b.WriteString("\nruns that do not count:\n")
		for _, p := range r.Problems {
			fmt.Fprintf(&b, "  %s\n", p)
		}
	}
	if len(r.Notes) > 0 {
		b.WriteString("\nnotes:\n")
		for _, n := range r.Notes {
			fmt.Fprintf(&b, "  %s\n", n)
		}
	}
	if len(r.KernelLog) > 0 {
		b.WriteString("\nkernel console lines worth a look (details in the VM logs):\n")
		for _, l := range r.KernelLog {
			fmt.Fprintf(&b, "  %s\n", l)
		}
	}
	return b.String()
}

func ratioCell(ci *ab.RatioCI, self bool) string {
	switch {
	case self:
		return "1"
	case ci == nil:
		return "-"
	case math.IsInf(ci.Ratio, 0) || math.IsNaN(ci.Ratio):
		return "- (reference median 0)"
	case math.IsNaN(ci.Low):
		return num2(ci.Ratio)
	}
	return fmt.Sprintf("%s [%s, %s]", num2(ci.Ratio), num2(ci.Low), num2(ci.High))
}

// num prints 4 significant digits without an exponent for the sizes seen here.
func num(v float64) string {
	switch a := math.Abs(v); {
	case a >= 1000:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case a >= 100:
		return strconv.FormatFloat(v, 'f', 1, 64)
	case a >= 10:
		return strconv.FormatFloat(v, 'f', 2, 64)
	}
	return strconv.FormatFloat(v, 'f', 3, 64)
}

// num2 prints a ratio with two decimals, or two significant digits below 0.1 (0.0027 is not
// 0.00: a starved arm is not one that did nothing).
func num2(v float64) string {
	if a := math.Abs(v); a != 0 && a < 0.1 {
		return strconv.FormatFloat(v, 'g', 2, 64)
	}
	return strconv.FormatFloat(v, 'f', 2, 64)
}

// benchConfigFrom reads the MLSCHED_VMBENCH_* variables (getenv is os.Getenv in the
// benchmark, a map in its tests); seed is the default seed (the clock's).
func benchConfigFrom(getenv func(string) string, seed uint64) (benchConfig, error) {
	c := benchConfig{Rounds: 5, Seed: seed, HackbenchLoops: 300, StressDur: 5 * time.Second, PoolDur: 5 * time.Second,
		Accel: "tcg,thread=multi", MaxRestarts: 10}
	var errs []error
	integer := func(name string, into *int, least int) {
		if v := getenv(name); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < least {
				errs = append(errs, fmt.Errorf("%s=%q: want an integer >= %d", name, v, least))
				return
			}
			*into = n
		}
	}
	duration := func(name string, into *time.Duration) {
		if v := getenv(name); v != "" {
			d, err := time.ParseDuration(v)
			if err != nil || d < time.Second {
				errs = append(errs, fmt.Errorf("%s=%q: want a duration of at least 1s", name, v))
				return
			}
			*into = d
		}
	}
	list := func(name string) []string {
		if v := strings.TrimSpace(getenv(name)); v != "" {
			return strings.Split(v, ",")
		}
		return nil
	}
	integer("MLSCHED_VMBENCH_ROUNDS", &c.Rounds, 1)
	integer("MLSCHED_VMBENCH_HACKBENCH_LOOPS", &c.HackbenchLoops, 1)
	integer("MLSCHED_VMBENCH_MAX_RESTARTS", &c.MaxRestarts, 0)
	duration("MLSCHED_VMBENCH_STRESS_DURATION", &c.StressDur)
	duration("MLSCHED_VMBENCH_POOL_DURATION", &c.PoolDur)
	if v := getenv("MLSCHED_VMBENCH_SEED"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			errs = append(errs, fmt.Errorf("MLSCHED_VMBENCH_SEED=%q: want an unsigned integer", v))
		}
		c.Seed = n
	}
	if v := getenv("MLSCHED_VMBENCH_ACCEL"); v != "" {
		c.Accel = v
	}
	c.Arms, c.Workloads = list("MLSCHED_VMBENCH_ARMS"), list("MLSCHED_VMBENCH_WORKLOADS")
	return c, errors.Join(errs...)
}
