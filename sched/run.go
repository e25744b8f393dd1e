package sched

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/mlsched/mlsched/bpf"
	"github.com/mlsched/mlsched/features"
	"github.com/mlsched/mlsched/model"
	"golang.org/x/sys/unix"
)

// Policy names: the model's placement over a base queue, or a base queue alone.
const (
	PolicyModel = "model"
	PolicyFIFO  = "fifo"  // the plain shared FIFO, no model
	PolicyVtime = "vtime" // the shared weighted-vtime queue, no model (scx_simple's placement)
	// Fixed placements in BPF, the yardsticks a model is measured against: they decide the
	// same question as the net (keep W on its busy previous CPU, or an idle CPU) by a rule.
	PolicyKeep    = "keep"    // always keep W on its previous CPU (bounded by the keep budget)
	PolicyMigrate = "migrate" // always an idle CPU, else the base queue
	PolicyOnCPU   = "oncpu"   // keep while R has been on the CPU less than the bound (Config.OnCPU)
)

// fixedPlacements are the fixed policies' rules in BPF (enum mls_placement).
var fixedPlacements = map[string]uint8{
	PolicyKeep: features.PlaceKeep, PolicyMigrate: features.PlaceMigrate, PolicyOnCPU: features.PlaceOnCPU,
}

// Fixed says whether policy is a fixed placement (keep, migrate, oncpu).
func Fixed(policy string) bool { _, ok := fixedPlacements[policy]; return ok }

// Where the model policy decides (--infer).
const (
	InferKernel = "kernel" // in BPF, at the wakeup, with the net's integer kernel form
	InferUser   = "user"   // in the Go loop, with a round trip per wakeup
)

// Base queue names (--queue): where every wakeup the model does not place goes.
const (
	QueueVtime = "vtime"
	QueueFIFO  = "fifo"
)

// BaseQueue is the base queue a policy runs over: its own for fifo and vtime, the configured
// one (vtime by default) for the model.
func BaseQueue(policy, queue string) string {
	switch policy {
	case PolicyFIFO:
		return QueueFIFO
	case PolicyVtime:
		return QueueVtime
	}
	if queue == "" {
		return QueueVtime
	}
	return queue
}

// Config is everything `mlsched run` passes on.
type Config struct {
	Policy         string
	Queue          string        // the model policy's base queue: QueueVtime (default) or QueueFIFO
	Infer          string        // the model policy: InferKernel (decide in BPF) or InferUser (ask the loop)
	KeepBudget     time.Duration // --infer kernel: the longest a kept task waits for its CPU (0: the model's horizon)
	OnCPU          time.Duration // PolicyOnCPU: keep while R has run less than this (required)
	Shadow         bool          // PolicyModel: the net decides and is scored on every wakeup, W goes to the base queue
	BPFStats       bool          // enable the kernel's BPF run-time statistics; time the net in BPF
	NoVerdictCache bool          // evaluate the net on every decision (to measure what the cache saves)
	Explore        float64       // PolicyModel in the kernel: the fraction of decisions taken at random, marked (--explore)
	Adapt          *AdaptConfig  // PolicyModel in the kernel: online adaptation (adapt.go; nil: off), never promoting under Shadow
	Model          *model.Model  // required for PolicyModel; for a fixed placement, the keep budget's default
	Slice          time.Duration
	Watchdog       time.Duration
	PendingTimeout time.Duration
	UserStall      time.Duration // BPF exits when no decision is read for this long while tasks wait
	GuardWindow    int
	NoFlush        bool          // leave decisions to the next ops.dispatch (no apply syscall per batch)
	Stats          time.Duration // 0: no --stats lines
	MetricsAddr    string        // "": no metrics server
	Verbose        bool
	Out            io.Writer // --stats lines
	Log            io.Writer // messages
}

// Report is what a run ends with; `mlsched run` prints it (ExitLine and TotalsLine, or JSON).
type Report struct {
	Exit     bpf.ExitInfo
	Counters bpf.SchedCounters // the BPF counters, summed over every attach (restarts in place)
	User     map[string]uint64 // the dispatch loop's counters over the whole run
	Variant  string
	Policy   string
	Queue    string
	Duration time.Duration
	Restarts int
	CPU      time.Duration // the scheduler process's own CPU time (user + system), loading included
	// How long the scheduler was attached, and the process's CPU time meanwhile (summed over
	// restarts): the cost of scheduling, without the verifier's time at load.
	Attached, AttachedCPU time.Duration
	Progs                 map[string]bpf.ProgStat // --bpf-stats: each BPF program's run time, summed over every attach
}

// ExitLine formats the exit as `EXIT: <kind> <reason> (<msg>)`.
func (r *Report) ExitLine() string {
	return fmt.Sprintf("EXIT: %s %s (%s)", r.Exit.KindName(), r.Exit.ReasonString(), r.Exit.MsgString())
}

// Errors of Run that `mlsched run` maps to exit codes.
var (
	ErrEjected = errors.New("the kernel disabled the scheduler")
)

// Preflight checks what can be checked before loading: sched_ext exists and is free.
func Preflight() error { return preflight("/sys/kernel/sched_ext") }

func preflight(dir string) error {
	if _, err := os.Stat(dir); err != nil {
		return bpf.ErrNoSchedExt
	}
	state, _ := os.ReadFile(filepath.Join(dir, "state"))
	if s := strings.TrimSpace(string(state)); s != "" && s != "disabled" {
		ops, _ := os.ReadFile(filepath.Join(dir, "root", "ops"))
		name := strings.TrimSpace(string(ops))
		if name == "" {
			name = "unknown"
		}
		return fmt.Errorf("%w: %q (state %s); stop it first", bpf.ErrBusy, name, s)
	}
	return nil
}

// Run loads and attaches the scheduler and runs it until ctx ends (clean detach) or the kernel
// disables it. An exit that asks for a restart (CPU hotplug) restarts in place.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if cfg.Out == nil {
		cfg.Out = os.Stdout
	}
	if cfg.Log == nil {
		cfg.Log = os.Stderr
	}
	switch cfg.Policy {
	case PolicyModel:
		if cfg.Model == nil {
			return nil, errors.New("policy model needs a model")
		}
	case PolicyFIFO, PolicyVtime:
	case PolicyKeep, PolicyMigrate:
	case PolicyOnCPU:
		if cfg.OnCPU <= 0 {
			return nil, errors.New("policy oncpu needs its bound on R's on-CPU time")
		}
	default:
		return nil, fmt.Errorf("unknown policy %q", cfg.Policy)
	}
	if cfg.Shadow && (cfg.Policy != PolicyModel || !cfg.inKernel()) {
		return nil, errors.New("--shadow scores the net deciding in the kernel: it needs the model policy with --infer kernel")
	}
	if q := BaseQueue(cfg.Policy, cfg.Queue); q != QueueVtime && q != QueueFIFO {
		return nil, fmt.Errorf("unknown queue %q", cfg.Queue)
	}
	if cfg.Adapt != nil && (cfg.Policy != PolicyModel || !cfg.inKernel()) {
		return nil, errors.New("--adapt adapts the net deciding in the kernel: it needs the model policy with --infer kernel")
	}
	if !(cfg.Explore >= 0 && cfg.Explore <= 1) {
		return nil, fmt.Errorf("exploration rate %v: want 0..1", cfg.Explore)
	}
	// A page fault in the scheduler while it schedules itself can deadlock: lock everything.
	if err := unix.Mlockall(unix.MCL_CURRENT | unix.MCL_FUTURE); err != nil {
		fmt.Fprintf(cfg.Log, "warning: mlockall: %v\n", err)
	}
	st := &Stats{Policy: cfg.Policy, Queue: BaseQueue(cfg.Policy, cfg.Queue), BPFStats: cfg.BPFStats}
	st.Explore = cfg.exploring()
	var ad *Adapter
	if cfg.Adapt != nil {
		ac := *cfg.Adapt
		ac.NoPromote = ac.NoPromote || cfg.Shadow
		ac.Explore = cfg.Explore
		if cfg.Shadow {
			ac.Explore = 0
		}
		if ac.Log == nil {
			ac.Log = cfg.Log
		}
		var err error
		if ad, err = NewAdapter(cfg.Model, ac, st); err != nil {
			return nil, err
		}
		st.Adapt = true
		ad.Start()
		defer ad.Close() // on every return; the normal ones close it before the report's totals
	}
	if cfg.BPFStats {
		c, err := bpf.EnableRunTimeStats()
		if err != nil {
			return nil, err
		}
		defer c.Close()
	}
	var mt *metricsServer
	start := time.Now()
	rep := &Report{Policy: st.Policy, Queue: st.Queue}
	// end closes the run: the adapter (the loop has stopped: the last outcomes, then the model
	// file), its totals, the metrics listener.
	end := func(err error) (*Report, error) {
		if ad != nil {
			ad.Close()
			rep.User = userTotals(st)
		}
		if mt != nil {
			mt.Close()
		}
		return rep, err
	}
	for {
		if err := Preflight(); err != nil {
			if mt != nil { // a restart in place found the kernel changed
				mt.Close()
			}
			return rep, err
		}
		r, err := runOnce(ctx, cfg, st, &mt, ad)
		// An attach that never loaded (a reload after a restart failed) keeps the last one's
		// exit; the counters of every attach add up, like the loop's own.
		if r.Variant != "" {
			rep.Exit, rep.Variant = r.Exit, r.Variant
			for i, v := range r.Counters {
				rep.Counters[i] += v
			}
			rep.Progs = addProgStats(rep.Progs, r.Progs)
		}
		rep.Attached, rep.AttachedCPU = rep.Attached+r.Attached, rep.AttachedCPU+r.AttachedCPU
		rep.Duration, rep.User, rep.CPU = time.Since(start), userTotals(st), processCPU()
		if err != nil || !r.Exit.Restart() || ctx.Err() != nil {
			return end(err)
		}
		rep.Restarts++
		fmt.Fprintf(cfg.Log, "%s: restarting in place\n", r.ExitLine())
		// The kernel finishes disabling asynchronously: wait for it before attaching again
		// (a stop meanwhile ends the run: no load and attach just to detach).
		for i := 0; i < 50 && ctx.Err() == nil; i++ {
			b, _ := os.ReadFile("/sys/kernel/sched_ext/state")
			if strings.TrimSpace(string(b)) == "disabled" {
				break
			}
			select {
			case <-ctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
		}
		if ctx.Err() != nil {
			return end(nil)
		}
	}
}

// addProgStats adds b's per-program run times into a (allocated when nil).
func addProgStats(a, b map[string]bpf.ProgStat) map[string]bpf.ProgStat {
	if len(b) == 0 {
		return a
	}
	if a == nil {
		a = make(map[string]bpf.ProgStat, len(b))
	}
	for k, v := range b {
		t := a[k]
		t.Runs += v.Runs
		t.Runtime += v.Runtime
		a[k] = t
	}
	return a
}

func runOnce(ctx context.Context, cfg Config, st *Stats, mt **metricsServer, ad *Adapter) (*Report, error) {
	rep := &Report{}
	sc := bpf.SchedConfig{
		SelfTgid:       uint32(os.Getpid()),
		UseModel:       cfg.Policy == PolicyModel || Fixed(cfg.Policy),
		QueueVtime:     BaseQueue(cfg.Policy, cfg.Queue) == QueueVtime,
		Slice:          cfg.Slice,
		PendingTimeout: cfg.PendingTimeout,
		UserStall:      cfg.UserStall,
		Watchdog:       cfg.Watchdog,
		LogVerifier:    cfg.Verbose,
	}
	if cfg.inKernel() {
		sc.InferKernel, sc.Placement, sc.OnCPU, sc.KeepBudget = true, fixedPlacements[cfg.Policy], cfg.OnCPU, cfg.KeepBudget
		if cfg.Model != nil {
			sc.KeepBudget = cmp.Or(cfg.KeepBudget, time.Duration(cfg.Model.HorizonNs))
		}
		sc.Shadow, sc.TimeNet, sc.NoVerdictCache = cfg.Shadow, cfg.BPFStats, cfg.NoVerdictCache
		if cfg.Policy == PolicyModel && !cfg.Shadow {
			sc.Explore = cfg.Explore
		}
	}
	if cfg.inKernel() && cfg.Policy == PolicyModel {
		m := cfg.Model
		if ad != nil {
			m = ad.Active() // a restart in place keeps the promoted net
		}
		net, err := kernelNet(m)
		if err != nil {
			return rep, err
		}
		sc.Net = net
	}
	// Listen before attaching: a bad or busy --metrics-addr fails here, before the machine's
	// scheduler has changed.
	if cfg.MetricsAddr != "" && *mt == nil {
		m, err := startMetrics(cfg.MetricsAddr, st)
		if err != nil {
			return rep, err
		}
		*mt = m
	}
	s, err := bpf.LoadSched(sc)
	if err != nil {
		return rep, err
	}
	defer s.Close()
	if ad != nil {
		ad.attach(s.SetNet)
		defer ad.attach(nil) // before s.Close: no SetNet on a closed scheduler
	}
	rep.Variant = s.Variant
	t0, cpu0 := time.Now(), processCPU()
	defer func() { rep.Attached, rep.AttachedCPU = time.Since(t0), processCPU()-cpu0 }()
	if cfg.Verbose {
		fmt.Fprintf(cfg.Log, "attached %s, policy %s over the %s queue%s\n", s.Variant, cfg.Policy, st.Queue, inferDesc(cfg))
	}
	var dl *dispatchLoop
	if sc.UseModel {
		dl = startDispatchLoop(s, cfg, st, ad)
	}
	if *mt != nil {
		(*mt).setSched(s)
		defer (*mt).setSched(nil)
	}
	runErr := watch(ctx, s, cfg, st, dl)
	// Stop the loop before anything is unmapped (s.Close): it reads the event ring and writes
	// the decision ring and BPF variables.
	if err := dl.stop(s, cfg.Log); err != nil && runErr == nil {
		runErr = err
	}
	if err := s.Detach(); err != nil {
		fmt.Fprintf(cfg.Log, "detach: %v\n", err)
	}
	rep.Exit, _ = s.ExitInfo()
	rep.Counters, _ = s.Counters()
	if cfg.BPFStats {
		rep.Progs, _ = s.ProgStats()
	}
	if errors.Is(runErr, ErrEjected) && rep.Exit.Restart() {
		runErr = nil
	}
	if errors.Is(runErr, ErrEjected) {
		runErr = fmt.Errorf("%w: %s", ErrEjected, rep.ExitLine())
	}
	return rep, runErr
}

// kernelNet is m's integer kernel form, as BPF reads it.
func kernelNet(m *model.Model) ([]byte, error) {
	kf, err := model.NewKernelForm(m)
	if err != nil {
		return nil, fmt.Errorf("%w (or run it with --infer user)", err)
	}
	return kf.MarshalBinary()
}

// exploring says whether BPF explores: the model policy in the kernel, not in shadow, with a
// rate above 0 (runOnce passes it to BPF under the same condition).
func (cfg Config) exploring() bool {
	return cfg.Policy == PolicyModel && cfg.inKernel() && !cfg.Shadow && cfg.Explore > 0
}

// inKernel says whether BPF decides at the wakeup: a fixed placement, or the model policy
// unless --infer user.
func (cfg Config) inKernel() bool {
	return Fixed(cfg.Policy) || cfg.Policy == PolicyModel && cfg.Infer != InferUser
}

func inferDesc(cfg Config) string {
	switch {
	case Fixed(cfg.Policy):
		return ", a fixed placement in the kernel"
	case cfg.Shadow:
		return ", the net deciding in the kernel in shadow (scored, not applied: --shadow)"
	case cfg.inKernel():
		return ", deciding in the kernel (--infer kernel)"
	case cfg.Policy == PolicyModel:
		return ", deciding in user space (--infer user)"
	}
	return ""
}

// dispatchLoop is the model policy's user-space loop: wake events in, decisions out.
type dispatchLoop struct {
	done    chan error
	halt    atomic.Bool
	running bool
}

// startDispatchLoop starts the loop with its guard, whose trips switch BPF to the base queue.
// Under a fixed placement or --shadow the guard only measures the live accuracy: there is no
// model placement to switch off.
func startDispatchLoop(s *bpf.Sched, cfg Config, st *Stats, ad *Adapter) *dispatchLoop {
	guard := NewGuard(cfg.GuardWindow, st)
	// A new attach starts with BPF's guard flag clear and this guard untripped: say so (after
	// a restart in place, the last attach's trip would otherwise stay in the gauge).
	st.GuardActive.Store(false)
	guard.Passive = cfg.Policy != PolicyModel || cfg.Shadow
	guard.OnChange = func(tripped bool, acc, maj float64) {
		if err := s.SetGuardFIFO(tripped); err != nil {
			fmt.Fprintf(cfg.Log, "model guard: %v\n", err)
		}
		if tripped {
			fmt.Fprintf(cfg.Log, "model guard: live accuracy %.3f < majority rate %.3f: switching to the %s queue\n", acc, maj, st.Queue)
		} else {
			fmt.Fprintf(cfg.Log, "model guard: live accuracy %.3f >= majority rate %.3f: back to the model\n", acc, maj)
		}
	}
	var d *Decider
	switch {
	case cfg.Policy == PolicyModel:
		d = NewDecider(cfg.Model, guard, st)
		if cfg.inKernel() {
			// With exploration, the guard judges the net on the outcomes its verdict did not
			// shape; the adapter learns from those (adapt.go).
			d.UnbiasedGuard, d.Shadow = cfg.exploring(), cfg.Shadow
			if ad != nil {
				d.SetAdapter(ad)
			}
		}
	case cfg.Model != nil: // a fixed placement, scored with the model's horizon
		d = NewScorer(cfg.Model.HorizonNs, guard, st)
	default:
		d = NewScorer(uint64(cmp.Or(cfg.KeepBudget, time.Millisecond)), guard, st)
	}
	var flush func() error
	if !cfg.NoFlush {
		flush = s.Apply
	}
	dl := &dispatchLoop{done: make(chan error, 1), running: true}
	var poll time.Duration
	if cfg.inKernel() {
		poll = 50 * time.Millisecond // BPF does not wake the loop: nothing waits for it
	}
	go func() { dl.done <- loop(s.Events, d, s.Decisions, flush, &dl.halt, poll) }()
	return dl
}

// stop ends the loop (nil: no loop) and returns its error. Flushing the ring wakes it; it
// reads what is left and returns.
func (dl *dispatchLoop) stop(s *bpf.Sched, log io.Writer) error {
	if dl == nil || !dl.running {
		return nil
	}
	dl.running = false
	dl.halt.Store(true)
	if err := s.Events.Flush(); err != nil {
		fmt.Fprintf(log, "stop dispatch loop: %v\n", err)
	}
	if err := <-dl.done; err != nil {
		return fmt.Errorf("dispatch loop: %w", err)
	}
	return nil
}

// watch runs until ctx ends, the kernel disables the scheduler (ErrEjected) or the dispatch
// loop fails, printing a --stats line every cfg.Stats.
func watch(ctx context.Context, s *bpf.Sched, cfg Config, st *Stats, dl *dispatchLoop) error {
	poll := time.NewTicker(100 * time.Millisecond)
	defer poll.Stop()
	var statsC <-chan time.Time
	if cfg.Stats > 0 {
		t := time.NewTicker(cfg.Stats)
		defer t.Stop()
		statsC = t.C
	}
	var loopDone <-chan error
	if dl != nil {
		loopDone = dl.done
	}
	var prev bpf.SchedCounters
	var prevProgs map[string]bpf.ProgStat
	prevEvents, prevCPU, prevAdaptCPU := st.Events.Load(), processCPU(), st.AdaptCPUNs.Load()
	last := time.Now()
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-loopDone:
			dl.running = false
			return fmt.Errorf("dispatch loop: %w", err)
		case <-poll.C:
			if e, err := s.ExitInfo(); err == nil && e.Kind != bpf.ExitNone {
				return ErrEjected
			}
		case now := <-statsC:
			cur, err := s.Counters()
			if err != nil {
				fmt.Fprintf(cfg.Log, "stats: %v\n", err)
				continue
			}
			var progs map[string]bpf.ProgStat
			if cfg.BPFStats {
				progs, _ = s.ProgStats()
			}
			cpu, adaptCPU := processCPU(), st.AdaptCPUNs.Load()
			fmt.Fprintln(cfg.Out, statsLine(now.Sub(last), &cur, &prev, st, prevEvents, s.Events.AvailableBytes()/features.WakeMaxSize)+
				adaptLine(now.Sub(last), &cur, &prev, st, time.Duration(adaptCPU-prevAdaptCPU))+
				runtimeLine(now.Sub(last), cpu-prevCPU, progs, prevProgs, cur[bpf.SCNetNs]-prev[bpf.SCNetNs]))
			prev, prevProgs, prevEvents, prevCPU, prevAdaptCPU, last = cur, progs, st.Events.Load(), cpu, adaptCPU, now
		}
	}
}

// processCPU is this process's CPU time so far, user and system.
func processCPU() time.Duration {
	var ru unix.Rusage
	if unix.Getrusage(unix.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// TotalsLine formats every nonzero BPF counter and the dispatch loop's counters as
// `TOTALS: <bpf counters> | <user-space counters>`.
func (r *Report) TotalsLine() string {
	var b strings.Builder
	b.WriteString("TOTALS:")
	for i, v := range r.Counters {
		if v != 0 {
			fmt.Fprintf(&b, " %s=%d", bpf.SchedCounter(i), v)
		}
	}
	b.WriteString(" |")
	for _, k := range userTotalNames {
		fmt.Fprintf(&b, " %s=%d", k, r.User[k])
	}
	return b.String()
}

// userTotalNames orders the dispatch loop's counters in TOTALS and the JSON report.
var userTotalNames = []string{"events", "outcomes", "keep", "migrate", "fifo", "urb_full", "unmatched", "guard_trips",
	"flushes", "flush_errors", "scored_only", "kernel_verdicts", "misattributed",
	"explore_outcomes", "promotions", "learned", "adapt_taken", "adapt_skipped", "adapt_dropped", "adapt_shed", "adapt_slices",
	"adapt_refused", "adapt_errors", "adapt_cpu_us"}

func userTotals(st *Stats) map[string]uint64 {
	return map[string]uint64{
		"events": st.Events.Load(), "outcomes": st.Outcomes.Load(), "keep": st.Keep.Load(), "migrate": st.Migrate.Load(),
		"fifo": st.FIFO.Load(), "urb_full": st.RingFull.Load(), "unmatched": st.Unmatched.Load(),
		"guard_trips": st.GuardTrips.Load(), "flushes": st.Flushes.Load(), "flush_errors": st.FlushErrors.Load(),
		"scored_only": st.Informational.Load(), "kernel_verdicts": st.KernelVerdicts.Load(),
		"misattributed": st.Misattributed.Load(),
		// Exploration and online adaptation.
		"explore_outcomes": st.ExploreOutcomes.Load(), "promotions": st.Promotions.Load(), "learned": st.Learned.Load(),
		"adapt_taken": st.AdaptTaken.Load(), "adapt_skipped": st.AdaptSkipped.Load(), "adapt_dropped": st.AdaptDropped.Load(), "adapt_shed": st.AdaptShed.Load(),
		"adapt_slices": st.AdaptSlices.Load(), "adapt_refused": st.AdaptRefused.Load(), "adapt_errors": st.AdaptErrors.Load(),
		"adapt_cpu_us": st.AdaptCPUNs.Load() / 1000,
	}
}

// JSONReport is the report's structured form (`mlsched run --json`): what vmtest and scripts
// read.
type JSONReport struct {
	Exit struct {
		Kind   string `json:"kind"`
		Reason string `json:"reason"`
		Msg    string `json:"msg"`
		Code   int64  `json:"code"`
	} `json:"exit"`
	Variant     string              `json:"variant"`
	Policy      string              `json:"policy"`
	Queue       string              `json:"queue"`
	DurationS   float64             `json:"duration_s"`
	Restarts    int                 `json:"restarts"`
	BPF         map[string]uint64   `json:"bpf"`
	User        map[string]uint64   `json:"user"`
	CPUS        float64             `json:"cpu_s"`               // the scheduler process's CPU time
	AttachedS   float64             `json:"attached_s"`          // how long it was attached
	AttachedCPU float64             `json:"attached_cpu_s"`      // its CPU time meanwhile
	Progs       map[string]JSONProg `json:"bpf_progs,omitempty"` // --bpf-stats, by program
}

// JSONProg is one BPF program's run-time statistics in the JSON report.
type JSONProg struct {
	Runs  uint64 `json:"runs"`
	RunNs uint64 `json:"run_ns"`
}

// JSON returns the report's structured form; every BPF counter is named, zero or not.
func (r *Report) JSON() JSONReport {
	j := JSONReport{Variant: r.Variant, Policy: r.Policy, Queue: r.Queue, DurationS: r.Duration.Seconds(),
		Restarts: r.Restarts, BPF: map[string]uint64{}, User: r.User, CPUS: r.CPU.Seconds(),
		AttachedS: r.Attached.Seconds(), AttachedCPU: r.AttachedCPU.Seconds()}
	for name, p := range r.Progs {
		if j.Progs == nil {
			j.Progs = map[string]JSONProg{}
		}
		j.Progs[name] = JSONProg{Runs: p.Runs, RunNs: uint64(p.Runtime)}
	}
	j.Exit.Kind, j.Exit.Reason, j.Exit.Msg, j.Exit.Code = r.Exit.KindName(), r.Exit.ReasonString(), r.Exit.MsgString(), r.Exit.ExitCode
	for i, v := range r.Counters {
		j.BPF[bpf.SchedCounter(i).String()] = v
	}
	return j
}
