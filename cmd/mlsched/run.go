package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"syscall"
	"time"

	"github.com/mlsched/mlsched/bpf"
	"github.com/mlsched/mlsched/features/outfile"
	"github.com/mlsched/mlsched/model"
	"github.com/mlsched/mlsched/sched"
)

func init() {
	register(&command{
		name:    "run",
		summary: "run the scheduler (sched_ext; needs root)",
		usage:   "[--model MODEL [--queue vtime|fifo] [--shadow] [--explore F] [--adapt=false | --save-model FILE] | --policy vtime|fifo|keep|migrate|oncpu] [--metrics-addr ADDR] [--stats D] [--bpf-stats] [--slice D] [-v]",
		help: `
Attach mlsched as the machine's sched_ext scheduler until SIGINT or SIGTERM, then detach and
print the exit report. With the model policy, when a task wakes and its previous CPU is busy,
the model predicts from the running task's recent syscalls whether it will leave the CPU soon;
if so the waking task stays on its cache-warm CPU (keep_local), otherwise it moves to an idle
CPU (migrate_idle). By default (--infer kernel) BPF decides at the wakeup with the model's
integer form, and a kept task waits at most --keep-budget for its CPU before any idle CPU may
run it; user space only scores the outcomes and runs the guard. --infer user asks this process
for every decision instead (the older design, for comparison). Every wakeup the model does not
place (the guard tripped, no idle CPU; with --infer user also user space late or ring full)
goes to the base queue, in BPF.

Policies:
  model  (default) the model's placement over --queue: vtime (default), or fifo (the
         original design: the model over a plain FIFO)
  vtime  the shared queue ordered by weighted virtual time, no model: a waking task goes to an
         idle CPU if the kernel's default idle search finds one, else into the queue (the
         kernel's scx_simple does the same); fair between CPU hogs and tasks that sleep
  fifo   the plain shared FIFO, no model

Fixed placements, in BPF over --queue: the yardsticks a model is measured against (they
answer the same question by a rule; what a model can gain lies between them):
  keep     always keep the waking task on its busy previous CPU (for at most --keep-budget)
  migrate  always an idle CPU, else the base queue
  oncpu    keep while the running task has been on the CPU less than --oncpu-threshold (the
           model's one-parameter heuristic, recorded by train), else migrate
They take the keep budget and the threshold from the model (--model, or the embedded one).

--shadow runs the model policy without letting it act: the net decides in BPF and every
decision is scored (the live accuracy in --stats and metrics), but every task goes where the
base queue puts it. Use it to see a model's live accuracy on a machine before it places tasks.

Exploration and online adaptation (the model policy with --infer kernel): a decision changes
the label it is judged by (a task moved to an idle CPU can answer the running task before it
blocks, a task kept behind it cannot), so --explore F (default 0.02) has BPF take a fraction F
of the decisions at random, marked in their samples. With exploration on, the live accuracy
(--stats acc=, the guard, mlsched_live_accuracy_ratio) is scored on those outcomes only.
--adapt (default on; --adapt=false turns it off) fine-tunes a copy of the net in this process
on the same outcomes (at most --adapt-budget per second: ~1.5% of one core at the default, and
never more than --adapt-cpu of one core, measured), never in the decision path; after each
slice of outcomes (at least --adapt-slice outcomes and --adapt-slice-time) the copy is frozen,
and scored in its kernel form on the next slice beside the active net. It replaces the active
net in BPF only when on that later slice it beats the active net and both constant answers
(always keep, always migrate) by exact one-sided sign tests at level 0.01/(j(j+1)) for the j-th
comparison since the last promotion (so that chance wins over repeated comparisons stay under
1%), with a gain of at least half a point. The candidate's threshold is re-chosen
(--adapt-threshold accuracy, the default) on the last --adapt-threshold-window outcomes it
learned from, for accuracy, what promotion and the guard score (balanced: for balanced
accuracy; keep: the model's own); --adapt-lr sets the learner's step. The adapted net lives in memory; --save-model FILE
writes it (atomically) after each promotion and on exit, with its provenance in its notes: run
with --model FILE to start from it, or with the model it came from to roll back. With --explore
0 it only learns from the outcomes of the guard's spells on the base queue. Under --shadow
nothing is explored and nothing promoted: the adapted copy is scored beside the net (--stats
cand=).

--bpf-stats turns on the kernel's BPF run-time statistics (kernel.bpf_stats_enabled) while
mlsched runs: --stats then shows each hook's mean run time per call (bpf sel=.. enq=..) and the
net's share of the scheduler's BPF run time (net=..%), and the JSON report has bpf_progs. They
cost two clock reads per BPF program run, machine-wide. Every --stats line has cpu=, this
process's own CPU time as a share of one core (also process_cpu_seconds_total in metrics).

If mlsched dies, however it dies, the kernel puts every task back on the default scheduler.
Needs a kernel with sched_ext (CONFIG_SCHED_CLASS_EXT, Linux >= 6.12) and BTF.

Run as root, --model refuses a file that a non-root user could change (owned by another
user, group- or world-writable, or in such a directory without the sticky bit): the model
steers the scheduler of every task on the machine.

Exit codes: 3 not root, 4 no sched_ext, 5 another scheduler is enabled, 6 bad model,
7 verifier rejected the scheduler (-v prints its log), 1 the kernel ejected the scheduler.`,
		flags: runFlags,
	})
}

type runOpts struct {
	modelPath      string
	policy         string
	queue          string
	infer          string
	keepBudget     time.Duration
	oncpu          time.Duration
	shadow         bool
	bpfStats       bool
	noVerdictCache bool
	explore        float64
	adapt          bool
	adaptBudget    float64
	adaptSlice     int
	adaptSliceTime time.Duration
	adaptCPU       float64
	adaptLR        float64
	adaptThr       string
	adaptThrWindow int
	learner        model.LearnerConfig // --adapt's, from the three above (checkRunFlags)
	saveModel      string
	fs             *flag.FlagSet // to tell a flag given from its default
	metricsAddr    string
	stats          time.Duration
	slice          time.Duration
	watchdog       time.Duration
	pendingTimeout time.Duration
	userStall      time.Duration
	guardWindow    int
	noFlush        bool
	json           bool
	verbose        bool
}

func runFlags(fs *flag.FlagSet) func([]string) error {
	o := &runOpts{fs: fs}
	fs.StringVar(&o.modelPath, "model", "", "model file `MODEL` (default: the model embedded in the binary)")
	fs.StringVar(&o.policy, "policy", sched.PolicyModel, "`POLICY`: model, vtime, fifo, or a fixed placement: keep, migrate, oncpu")
	fs.StringVar(&o.queue, "queue", sched.QueueVtime, "model policy: the base `QUEUE` every fallback goes to, vtime or fifo")
	fs.StringVar(&o.infer, "infer", sched.InferKernel, "model policy: where the net decides, `WHERE`: kernel (in BPF, at the wakeup, nothing waits for user space) or user (the older round trip to this process per wakeup, for comparison)")
	fs.DurationVar(&o.keepBudget, "keep-budget", 0, "with --infer kernel: a task kept on its busy previous CPU waits at most `D` for it, then any allowed CPU may run it (default: the model's horizon)")
	fs.DurationVar(&o.oncpu, "oncpu-threshold", 0, "with --policy oncpu: keep while the running task has been on the CPU less than `D` (default: the model's heuristic_oncpu_ns)")
	fs.BoolVar(&o.shadow, "shadow", false, "model policy: the net decides and is scored on every wakeup, but tasks go where the base queue puts them")
	fs.BoolVar(&o.bpfStats, "bpf-stats", false, "enable the kernel's BPF run-time statistics: per-hook run time and the net's share in --stats and the report")
	fs.BoolVar(&o.noVerdictCache, "no-verdict-cache", false, "with --infer kernel: evaluate the net on every wakeup, even when the running task made no syscall since its last verdict (to measure the cache)")
	fs.Float64Var(&o.explore, "explore", 0.02, "model policy, --infer kernel: take a fraction `F` of the decisions at random (0..0.125, 0: none), marked: the outcomes the live accuracy and --adapt judge by")
	fs.BoolVar(&o.adapt, "adapt", true, "model policy, --infer kernel: fine-tune a copy of the net on the explored outcomes and promote it into BPF when it beats the active net on later ones (--adapt=false: off)")
	fs.Float64Var(&o.adaptBudget, "adapt-budget", sched.DefaultAdaptBudget, "with --adapt: learn from at most `N` outcomes per second (the CPU bound)")
	fs.IntVar(&o.adaptSlice, "adapt-slice", sched.DefaultAdaptSlice, "with --adapt: a candidate is frozen and scored on slices of at least `N` outcomes")
	fs.DurationVar(&o.adaptSliceTime, "adapt-slice-time", sched.DefaultAdaptSliceTime, "with --adapt: and of at least `D` (0: no minimum)")
	fs.Float64Var(&o.adaptCPU, "adapt-cpu", sched.DefaultAdaptMaxCPU, "with --adapt: cap the adapter at a fraction `F` of one core, measured (it sheds outcomes above it; 0: no cap)")
	fs.Float64Var(&o.adaptLR, "adapt-lr", model.DefaultLearnRate, "with --adapt: the learner's SGD step size `R`")
	fs.StringVar(&o.adaptThr, "adapt-threshold", thresholdAccuracy, "with --adapt: the candidate's threshold, `OBJ`: keep (the model's), or re-chosen on the last --adapt-threshold-window learned outcomes for accuracy (what promotion and the guard score) or balanced accuracy")
	fs.IntVar(&o.adaptThrWindow, "adapt-threshold-window", model.DefaultThresholdWindow, "with --adapt-threshold accuracy|balanced: the window, `N` learned outcomes")
	fs.StringVar(&o.saveModel, "save-model", "", "with --adapt: write the adapted model to `FILE` after each promotion and on exit (atomically, provenance in its notes)")
	fs.StringVar(&o.metricsAddr, "metrics-addr", sched.DefaultMetricsAddr, "serve Prometheus metrics on `ADDR` (\"\" to disable)")
	fs.DurationVar(&o.stats, "stats", 0, "print a stats line every `D` (0: never)")
	fs.DurationVar(&o.slice, "slice", 5*time.Millisecond, "time slice `D`")
	fs.DurationVar(&o.watchdog, "watchdog", 5*time.Second, "kernel watchdog `D`: a runnable task not run for D ejects the scheduler")
	fs.DurationVar(&o.pendingTimeout, "pending-timeout", 20*time.Millisecond, "a task waits at most `D` for a decision, then the base queue")
	fs.DurationVar(&o.userStall, "user-stall", 10*time.Second, "model policy: BPF ends the scheduler when wake events sit unread and no decision comes for `D` (0: never)")
	fs.IntVar(&o.guardWindow, "guard-window", 2000, "model guard: sliding window of `N` observed outcomes")
	fs.BoolVar(&o.noFlush, "no-flush", false, "apply decisions only at the next dispatch, not right after each batch (for comparison)")
	fs.BoolVar(&o.json, "json", false, "print the exit report as one JSON object on stdout instead of the EXIT and TOTALS lines")
	fs.BoolVar(&o.verbose, "v", false, "verbose: variant loaded, full verifier log on load errors")
	return func(args []string) error { return runScheduler(o, args) }
}

func runScheduler(o *runOpts, args []string) error {
	if len(args) > 0 {
		return errorf(exitUsage, "unexpected arguments %q", args)
	}
	var m *model.Model
	queueSet := false
	o.fs.Visit(func(f *flag.Flag) { queueSet = queueSet || f.Name == "queue" })
	if o.queue != sched.QueueVtime && o.queue != sched.QueueFIFO {
		return errorf(exitUsage, "--queue %q: want vtime or fifo", o.queue)
	}
	if o.infer != sched.InferKernel && o.infer != sched.InferUser {
		return errorf(exitUsage, "--infer %q: want kernel or user", o.infer)
	}
	switch o.policy {
	case sched.PolicyFIFO, sched.PolicyVtime:
		if o.modelPath != "" {
			return errorf(exitUsage, "--model and --policy %s exclude each other", o.policy)
		}
		if queueSet {
			return errorf(exitUsage, "--queue is for the model policy and the fixed placements; --policy %s is its own queue", o.policy)
		}
	case sched.PolicyModel, sched.PolicyKeep, sched.PolicyMigrate, sched.PolicyOnCPU:
		var err error
		if m, err = loadRunModel(o.modelPath); err != nil {
			return err
		}
	default:
		return errorf(exitUsage, "unknown policy %q (model, vtime, fifo, keep, migrate or oncpu)", o.policy)
	}
	if err := checkRunFlags(o, m); err != nil {
		return err
	}
	if os.Geteuid() != 0 {
		return errorf(exitNotRoot, "attaching a sched_ext scheduler needs root (CAP_SYS_ADMIN, CAP_BPF): run with sudo")
	}
	if err := sched.Preflight(); err != nil {
		return schedError(err)
	}

	var adapt *sched.AdaptConfig
	if o.adapt {
		src := "the embedded default model"
		if o.modelPath != "" {
			src = "file " + o.modelPath
		}
		adapt = &sched.AdaptConfig{Budget: o.adaptBudget, SliceOutcomes: o.adaptSlice, SliceTime: o.adaptSliceTime,
			MaxCPU: o.adaptCPU, SaveModel: o.saveModel, Source: src, Learner: o.learner}
		if o.adaptCPU == 0 {
			adapt.MaxCPU = -1 // no cap
		}
		if o.adaptSliceTime == 0 {
			adapt.SliceTime = -1 // no minimum
		}
		if o.saveModel != "" {
			removeStaleTemps(o.saveModel)
		}
	}

	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	rep, err := sched.Run(ctx, sched.Config{
		Policy:         o.policy,
		Queue:          o.queue,
		Infer:          o.infer,
		KeepBudget:     o.keepBudget,
		OnCPU:          o.oncpu,
		Shadow:         o.shadow,
		BPFStats:       o.bpfStats,
		NoVerdictCache: o.noVerdictCache,
		Explore:        o.explore,
		Adapt:          adapt,
		Model:          m,
		Slice:          o.slice,
		Watchdog:       o.watchdog,
		PendingTimeout: o.pendingTimeout,
		UserStall:      o.userStall,
		GuardWindow:    o.guardWindow,
		NoFlush:        o.noFlush,
		Stats:          o.stats,
		MetricsAddr:    o.metricsAddr,
		Verbose:        o.verbose,
		Out:            stdout,
		Log:            os.Stderr,
	})
	if rep != nil && rep.Variant != "" { // it attached: say how it ended, however it ended
		printRunReport(rep, o.json)
	}
	if err != nil {
		return schedError(err)
	}
	if o.verbose {
		fmt.Fprintf(os.Stderr, "ran %s with %s\n", rep.Duration.Round(time.Millisecond), rep.Variant)
	}
	return nil
}

// loadRunModel is the model `run` uses: the file given (as root, only one root alone can
// change), else the embedded default.
func loadRunModel(path string) (*model.Model, error) {
	if path == "" {
		m, err := model.Default()
		if err != nil {
			return nil, errorf(exitBadInput, "%v (pass --model FILE, or --policy vtime for no model)", err)
		}
		return m, nil
	}
	if os.Geteuid() == 0 {
		// run_model.go: root runs only a model root alone can change.
		if err := checkModelTrusted(path, 0); err != nil {
			return nil, withCode(exitBadInput, err)
		}
	}
	m, err := model.Load(path)
	if err != nil {
		return nil, errorf(exitBadInput, "%v", err)
	}
	return m, nil
}

// checkRunFlags refuses flags that do not apply to the policy, and fills --oncpu-threshold
// from the model's heuristic.
func checkRunFlags(o *runOpts, m *model.Model) error {
	set := map[string]bool{}
	o.fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	// Durations and sizes that would otherwise be replaced by a default, wrap, or mean "never"
	// without a word.
	switch {
	case o.slice <= 0 || o.slice > time.Second:
		return errorf(exitUsage, "--slice %v: want (0, 1s]", o.slice)
	case o.watchdog <= 0 || o.watchdog > 30*time.Second:
		return errorf(exitUsage, "--watchdog %v: want (0, 30s] (the kernel's limit)", o.watchdog)
	case o.pendingTimeout <= 0:
		return errorf(exitUsage, "--pending-timeout %v: must be positive", o.pendingTimeout)
	case o.userStall < 0:
		return errorf(exitUsage, "--user-stall %v: want >= 0 (0: never)", o.userStall)
	case o.keepBudget < 0:
		return errorf(exitUsage, "--keep-budget %v: want >= 0 (0: the model's horizon)", o.keepBudget)
	case o.oncpu < 0:
		return errorf(exitUsage, "--oncpu-threshold %v: want >= 0 (0: the model's heuristic)", o.oncpu)
	case o.stats < 0:
		return errorf(exitUsage, "--stats %v: want >= 0 (0: no stats lines)", o.stats)
	case o.guardWindow < 1:
		return errorf(exitUsage, "--guard-window %d: want at least 1 outcome", o.guardWindow)
	}
	fixed := sched.Fixed(o.policy)
	if fixed && set["infer"] {
		return errorf(exitUsage, "--infer is for the model policy: --policy %s decides in the kernel", o.policy)
	}
	if o.shadow && (o.policy != sched.PolicyModel || o.infer != sched.InferKernel) {
		return errorf(exitUsage, "--shadow scores the net deciding in the kernel: it needs the model policy with --infer kernel")
	}
	if set["oncpu-threshold"] && o.policy != sched.PolicyOnCPU {
		return errorf(exitUsage, "--oncpu-threshold is for --policy oncpu")
	}
	// Exploration and adaptation are the model policy's in the kernel: on by default there, off
	// elsewhere; given explicitly elsewhere, a usage error.
	netInKernel := o.policy == sched.PolicyModel && o.infer == sched.InferKernel
	if !(o.explore >= 0 && o.explore <= maxExplore) {
		return errorf(exitUsage, "--explore %v: want 0..%v (exploration happens among the scored decisions, one in 8)", o.explore, maxExplore)
	}
	if set["explore"] && o.explore > 0 && (!netInKernel || o.shadow) {
		return errorf(exitUsage, "--explore is for the model policy with --infer kernel, without --shadow (which places nothing)")
	}
	if !netInKernel || o.shadow {
		o.explore = 0
	}
	if set["adapt"] && o.adapt && !netInKernel {
		return errorf(exitUsage, "--adapt adapts the net deciding in the kernel: it needs the model policy with --infer kernel")
	}
	o.adapt = o.adapt && netInKernel
	for _, f := range []string{"adapt-budget", "adapt-slice", "adapt-slice-time", "adapt-cpu", "adapt-lr", "adapt-threshold", "adapt-threshold-window", "save-model"} {
		if set[f] && !o.adapt {
			return errorf(exitUsage, "--%s is for --adapt (the model policy with --infer kernel)", f)
		}
	}
	if o.adaptBudget <= 0 || o.adaptSlice <= 0 || o.adaptSliceTime < 0 || !(o.adaptCPU >= 0 && o.adaptCPU <= 1) {
		return errorf(exitUsage, "--adapt-budget and --adapt-slice must be > 0, --adapt-slice-time >= 0, --adapt-cpu 0..1")
	}
	if o.adapt {
		var err error
		if o.learner, err = adaptLearner(o); err != nil {
			return err
		}
	}
	if o.saveModel != "" {
		if o.shadow {
			return errorf(exitUsage, "--save-model writes the promoted model; under --shadow nothing is promoted")
		}
		if err := outfile.CheckWritable(o.saveModel); err != nil {
			return errorf(exitUsage, "--save-model: %v", err)
		}
	}
	if o.policy == sched.PolicyOnCPU && o.oncpu <= 0 {
		d, ok := m.HeuristicOnCPU()
		if !ok {
			return errorf(exitUsage, "--policy oncpu: the model records no on-CPU heuristic (note %s); pass --oncpu-threshold D", model.NoteHeuristicNs)
		}
		o.oncpu = d
	}
	return nil
}

// adaptLearner is the adapter's learner from --adapt-lr, --adapt-threshold and
// --adapt-threshold-window: a usage error if they are out of range.
func adaptLearner(o *runOpts) (model.LearnerConfig, error) {
	cfg := model.DefaultLearnerConfig()
	cfg.LearnRate = o.adaptLR
	if err := setThreshold(&cfg, "adapt-threshold", o.adaptThr, o.adaptThrWindow); err != nil {
		return cfg, err
	}
	if _, err := model.NewLearner(model.New(1, 1), cfg); err != nil {
		return cfg, withCode(exitUsage, fmt.Errorf("--adapt-lr: %w", err))
	}
	return cfg, nil
}

// maxExplore is the highest --explore: BPF explores among the scored decisions, one in 8 of
// those it decides.
const maxExplore = 0.125

// removeStaleTemps removes the temporary files a write of path left when mlsched was killed
// during it (features/outfile's ".NAME.tmp-<16 hex>" beside it): regular files of this user
// only. The target itself is never half-written (the write is a rename).
func removeStaleTemps(path string) {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	re := regexp.MustCompile(`^\.` + regexp.QuoteMeta(base) + `\.tmp-[0-9a-f]{16}$`)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range ents {
		if !re.MatchString(e.Name()) {
			continue
		}
		p := filepath.Join(dir, e.Name())
		fi, err := os.Lstat(p)
		if err != nil || !fi.Mode().IsRegular() {
			continue
		}
		if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) == os.Geteuid() {
			os.Remove(p)
		}
	}
}

// printRunReport prints the exit report: the EXIT and TOTALS lines, or with --json one JSON
// object (what scripts and the VM tests read).
func printRunReport(rep *sched.Report, asJSON bool) {
	if asJSON {
		b, _ := json.Marshal(rep.JSON())
		fmt.Fprintf(stdout, "%s\n", b)
		return
	}
	fmt.Fprintln(stdout, rep.ExitLine())
	fmt.Fprintln(stdout, rep.TotalsLine())
}

// schedError maps scheduler errors to exit codes.
func schedError(err error) error {
	switch {
	case errors.Is(err, bpf.ErrNoSchedExt), errors.Is(err, bpf.ErrNoBTF):
		return withCode(exitNoKernel, err)
	case errors.Is(err, model.ErrKernelForm):
		return withCode(exitBadInput, err)
	case errors.Is(err, bpf.ErrBusy):
		return withCode(exitBusy, err)
	case errors.Is(err, bpf.ErrVerifier):
		return withCode(exitVerifier, err)
	}
	return withCode(exitFailure, err)
}
