package sched

import (
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
	Queue          string       // the model policy's base queue: QueueVtime (default) or QueueFIFO
	Model          *model.Model // required for PolicyModel
	Slice          time.Duration
	Watchdog       time.Duration
	PendingTimeout time.Duration
	UserStall      time.Duration // BPF exits when no decision is read for this long while tasks wait
	GuardWindow    int
	NoFlush        bool          // leave decisions to the next ops.dispatch (no apply syscall per batch)
	Stats          time.Duration // 0: no --stats lines
	MetricsAddr    string        // "": no metrics server
	Verbose        bool
	Out            io.Writer // --stats lines and the exit report
	Log            io.Writer // messages
}

// Report is what a run ends with.
type Report struct {
	Exit     bpf.ExitInfo
	Counters bpf.SchedCounters
	Variant  string
	Duration time.Duration
	Restarts int
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
	default:
		return nil, fmt.Errorf("unknown policy %q", cfg.Policy)
	}
	if q := BaseQueue(cfg.Policy, cfg.Queue); q != QueueVtime && q != QueueFIFO {
		return nil, fmt.Errorf("unknown queue %q", cfg.Queue)
	}
	// A page fault in the scheduler while it schedules itself can deadlock: lock everything.
	if err := unix.Mlockall(unix.MCL_CURRENT | unix.MCL_FUTURE); err != nil {
		fmt.Fprintf(cfg.Log, "warning: mlockall: %v\n", err)
	}
	st := &Stats{Policy: cfg.Policy, Queue: BaseQueue(cfg.Policy, cfg.Queue)}
	var mt *metricsServer
	start := time.Now()
	rep := &Report{}
	for {
		if err := Preflight(); err != nil {
			return rep, err
		}
		r, err := runOnce(ctx, cfg, st, &mt)
		rep.Exit, rep.Counters, rep.Variant = r.Exit, r.Counters, r.Variant
		rep.Duration = time.Since(start)
		if err != nil || !r.Exit.Restart() || ctx.Err() != nil {
			if mt != nil {
				mt.Close()
			}
			return rep, err
		}
		rep.Restarts++
		fmt.Fprintf(cfg.Log, "%s: restarting in place\n", r.ExitLine())
		// The kernel finishes disabling asynchronously: wait for it before attaching again.
		for i := 0; i < 50; i++ {
			b, _ := os.ReadFile("/sys/kernel/sched_ext/state")
			if strings.TrimSpace(string(b)) == "disabled" {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
}

func runOnce(ctx context.Context, cfg Config, st *Stats, mt **metricsServer) (*Report, error) {
	rep := &Report{}
	useModel := cfg.Policy == PolicyModel
	s, err := bpf.LoadSched(bpf.SchedConfig{
		SelfTgid:       uint32(os.Getpid()),
		UseModel:       useModel,
		QueueVtime:     BaseQueue(cfg.Policy, cfg.Queue) == QueueVtime,
		Slice:          cfg.Slice,
		PendingTimeout: cfg.PendingTimeout,
		UserStall:      cfg.UserStall,
		Watchdog:       cfg.Watchdog,
		LogVerifier:    cfg.Verbose,
	})
	if err != nil {
		return rep, err
	}
	defer s.Close()
	rep.Variant = s.Variant
	if cfg.Verbose {
		fmt.Fprintf(cfg.Log, "attached %s, policy %s over the %s queue\n", s.Variant, cfg.Policy, st.Queue)
	}

	loopDone := make(chan error, 1)
	var stopLoop atomic.Bool
	loopRunning := false
	if useModel {
		guard := NewGuard(cfg.GuardWindow, st)
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
		d := NewDecider(cfg.Model, guard, st)
		var flush func() error
		if !cfg.NoFlush {
			flush = s.Apply
		}
		loopRunning = true
		go func() { loopDone <- loop(s.Events, d, s.Decisions, flush, &stopLoop) }()
	}
	if cfg.MetricsAddr != "" && *mt == nil {
		m, err := startMetrics(cfg.MetricsAddr, st)
		if err != nil {
			return rep, err
		}
		*mt = m
	}
	if *mt != nil {
		(*mt).setSched(s)
		defer (*mt).setSched(nil)
	}

	poll := time.NewTicker(100 * time.Millisecond)
	defer poll.Stop()
	var statsC <-chan time.Time
	if cfg.Stats > 0 {
		t := time.NewTicker(cfg.Stats)
		defer t.Stop()
		statsC = t.C
	}
	var prev bpf.SchedCounters
	prevEvents := st.Events.Load()
	last := time.Now()
	var runErr error
wait:
	for {
		select {
		case <-ctx.Done():
			break wait
		case err := <-loopDone:
			loopRunning = false
			runErr = fmt.Errorf("dispatch loop: %w", err)
			break wait
		case <-poll.C:
			if e, err := s.ExitInfo(); err == nil && e.Kind != bpf.ExitNone {
				runErr = ErrEjected
				break wait
			}
		case now := <-statsC:
			cur, err := s.Counters()
			if err != nil {
				fmt.Fprintf(cfg.Log, "stats: %v\n", err)
				continue
			}
			fmt.Fprintln(cfg.Out, statsLine(now.Sub(last), &cur, &prev, st, prevEvents, s.Events.AvailableBytes()/features.WakeMaxSize))
			prev, prevEvents, last = cur, st.Events.Load(), now
		}
	}
	// Stop the loop before anything is unmapped (s.Close): it reads the event ring and writes
	// the decision ring and BPF variables. Flush wakes it; it reads what is left and returns.
	if loopRunning {
		stopLoop.Store(true)
		if err := s.Events.Flush(); err != nil {
			fmt.Fprintf(cfg.Log, "stop dispatch loop: %v\n", err)
		}
		if err := <-loopDone; err != nil && runErr == nil {
			runErr = fmt.Errorf("dispatch loop: %w", err)
		}
	}
	if err := s.Detach(); err != nil {
		fmt.Fprintf(cfg.Log, "detach: %v\n", err)
	}
	rep.Exit, _ = s.ExitInfo()
	rep.Counters, _ = s.Counters()
	fmt.Fprintln(cfg.Out, rep.ExitLine())
	fmt.Fprintln(cfg.Out, totalsLine(&rep.Counters, st))
	if errors.Is(runErr, ErrEjected) && rep.Exit.Restart() {
		runErr = nil
	}
	if errors.Is(runErr, ErrEjected) {
		runErr = fmt.Errorf("%w: %s", ErrEjected, rep.ExitLine())
	}
	return rep, runErr
}

func totalsLine(c *bpf.SchedCounters, st *Stats) string {
	var b strings.Builder
	b.WriteString("TOTALS:")
	for i, v := range c {
		if v != 0 {
			fmt.Fprintf(&b, " %s=%d", bpf.SchedCounter(i), v)
		}
	}
	fmt.Fprintf(&b, " | events=%d outcomes=%d keep=%d migrate=%d fifo=%d urb_full=%d unmatched=%d guard_trips=%d",
		st.Events.Load(), st.Outcomes.Load(), st.Keep.Load(), st.Migrate.Load(), st.FIFO.Load(),
		st.RingFull.Load(), st.Unmatched.Load(), st.GuardTrips.Load())
	fmt.Fprintf(&b, " flushes=%d flush_errors=%d scored_only=%d", st.Flushes.Load(), st.FlushErrors.Load(), st.Informational.Load())
	return b.String()
}
