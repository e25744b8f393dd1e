package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/cilium/ebpf/ringbuf"
	"golang.org/x/sys/unix"

	"github.com/mlsched/mlsched/bpf"
	"github.com/mlsched/mlsched/features"
	"github.com/mlsched/mlsched/features/outfile"
)

// DefaultHorizon is the label's horizon H. Keeping a waking task on its busy previous CPU
// only pays while the wait is shorter than what migrating costs: refilling L1/L2 (a few MB at
// ~10 GB/s) plus a cross-CPU wakeup is on the order of 100 µs to 1 ms, and the default
// sched_ext slice (20 ms) is far longer. 1 ms keeps waits within that cost and still lets
// short CPU bursts count as "yields soon".
const DefaultHorizon = time.Millisecond

func init() {
	register(&command{
		name:    "capture",
		summary: "record a trace of syscall features and yield outcomes (any kernel with BTF)",
		usage:   "-o FILE [--duration D] [--horizon H] [--only-command] [-- COMMAND ARGS...]",
		help: `Records training samples from this machine's workload with BPF tracepoints (sys_enter,
sched_waking, sched_switch); it needs root (or CAP_BPF and CAP_PERFMON) and a kernel with BTF,
but not sched_ext.

A sample is taken whenever a task W wakes while its previous CPU runs another task R: the
features are R's 64 decayed syscall counts at that moment, the label is 1 if R leaves the CPU
voluntarily (blocks, sleeps, yields, exits) within the horizon H, 0 if it is preempted or still
running at H. Samples whose outcome is unknown when the capture ends are dropped and counted.

Without COMMAND it captures system-wide for --duration (default 10s). With '-- COMMAND ARGS',
it runs the command and captures until it exits (or --duration, if given, elapses first);
--only-command keeps only the command's process tree.

At most --max-rate samples per second are taken on each CPU (default 20000): on a
wakeup-heavy machine the wakeups over the cap are sampled at random, so that the probes' cost
and the trace's size stay bounded; --max-rate 0 samples every wakeup. --sample-every N keeps
one wakeup in N on top of that.

Ctrl-C or SIGTERM ends the capture cleanly: the trace is complete and valid. Every loss
(ring-buffer drops, unresolved samples) is counted in the trace and in the summary.

The trace goes to a new file next to FILE and is renamed into place when complete: no link
planted at FILE (or anywhere else) is followed. Once the probes are attached and COMMAND has
started, capture drops its capabilities (all but what reading its counters and renaming FILE
need; the summary's "privileges" line names them) and sets no_new_privs.

Examples:
  sudo mlsched capture -o idle.trace --duration 5s
  sudo mlsched capture -o build.trace --only-command -- go build ./...
  mlsched inspect build.trace`,
		flags: captureFlags,
	})
}

type captureOpts struct {
	out         string
	duration    time.Duration
	horizon     time.Duration
	onlyCommand bool
	ringMB      uint
	maxTasks    uint
	sampleEvery uint
	maxRate     uint
	progress    string
	verbose     bool
}

func captureFlags(fs *flag.FlagSet) func([]string) error {
	var o captureOpts
	fs.StringVar(&o.out, "o", "", "write the trace to `FILE` (required)")
	fs.DurationVar(&o.duration, "duration", 0, "capture for `D` (default 10s without a command; with one, until it exits)")
	fs.DurationVar(&o.horizon, "horizon", DefaultHorizon, "label horizon `H`: 1 if R yields within H")
	fs.BoolVar(&o.onlyCommand, "only-command", false, "sample only COMMAND's process tree")
	fs.UintVar(&o.ringMB, "ringbuf-mb", 16, "event ring buffer size in MiB (a power of two)")
	fs.UintVar(&o.maxTasks, "max-tasks", 0, "feature slots (a power of two; default: enough for pid_max, at most 65536)")
	fs.UintVar(&o.sampleEvery, "sample-every", 1, "keep one wakeup in `N`, at random (less overhead and smaller traces on wakeup-heavy machines)")
	fs.UintVar(&o.maxRate, "max-rate", bpf.DefaultMaxRate, "take at most `N` samples per second on each CPU, the rest sampled at random (0: every wakeup)")
	fs.StringVar(&o.progress, "progress", "auto", "progress line: auto (on a terminal), always, never")
	fs.BoolVar(&o.verbose, "v", false, "verbose: full verifier log on load errors")
	return func(args []string) error { return runCapture(o, args) }
}

func runCapture(o captureOpts, args []string) error {
	// Everything that can be checked is checked before anything is attached.
	if o.out == "" {
		return errorf(exitUsage, "-o FILE is required")
	}
	if o.horizon <= 0 || o.horizon > time.Minute {
		return errorf(exitUsage, "--horizon %v: must be in (0, 1m]", o.horizon)
	}
	if o.ringMB == 0 || o.ringMB&(o.ringMB-1) != 0 || o.ringMB > 1024 {
		return errorf(exitUsage, "--ringbuf-mb %d: must be a power of two, at most 1024", o.ringMB)
	}
	if o.onlyCommand && len(args) == 0 {
		return errorf(exitUsage, "--only-command needs a command after '--'")
	}
	if o.sampleEvery == 0 || o.sampleEvery > 1<<20 {
		return errorf(exitUsage, "--sample-every %d: must be in [1, 1048576]", o.sampleEvery)
	}
	if o.maxRate > bpf.MaxRateLimit {
		return errorf(exitUsage, "--max-rate %d: must be at most %d (0: no limit)", o.maxRate, bpf.MaxRateLimit)
	}
	if o.progress != "auto" && o.progress != "always" && o.progress != "never" {
		return errorf(exitUsage, "--progress %q: want auto, always or never", o.progress)
	}
	if len(args) == 0 && o.duration == 0 {
		o.duration = 10 * time.Second
	}
	var cmdPath string
	if len(args) > 0 {
		p, err := exec.LookPath(args[0])
		if err != nil {
			return errorf(exitUsage, "command %q: %v", args[0], err)
		}
		cmdPath = p
	}
	if err := checkBPFPrivileges(); err != nil {
		return err
	}
	if err := bpf.CheckBTF(); err != nil {
		return withCode(exitNoKernel, err)
	}
	// The trace is written to a new file next to its destination and renamed into place when
	// complete (features/outfile): an existing file of that name survives a failed capture, no
	// link planted at either name is followed, and a capture killed outright leaves a hidden
	// ".NAME.tmp-*" file whose blocks are still readable.
	if fi, err := os.Stat(o.out); err == nil && fi.IsDir() {
		return errorf(exitUsage, "cannot write the trace: %s is a directory", o.out)
	}
	f, err := outfile.Create(o.out)
	if err != nil {
		return errorf(exitFailure, "cannot write the trace: %v", err)
	}
	defer f.Abort()

	capt, err := bpf.LoadCapture(bpf.CaptureConfig{
		SelfTgid:    uint32(os.Getpid()),
		FilterTree:  o.onlyCommand,
		RingBytes:   uint32(o.ringMB) << 20,
		MaxTasks:    uint32(o.maxTasks),
		SampleEvery: uint32(o.sampleEvery),
		MaxRate:     uint32(o.maxRate),
		LogVerifier: o.verbose,
	})
	if err != nil {
		if errors.Is(err, bpf.ErrVerifier) {
			return withCode(exitVerifier, err)
		}
		return withCode(exitFailure, err)
	}
	defer capt.Close()

	start := time.Now()
	hdr := features.TraceHeader{
		SchemaID:      features.SchemaID(),
		HorizonNs:     uint64(o.horizon),
		StartUnixNs:   start.UnixNano(),
		StartKtimeNs:  monotonicNs(),
		NumCPU:        uint32(bpf.PossibleCPUs()),
		KernelRelease: kernelRelease(),
		Hostname:      hostname(),
		Command:       strings.Join(args, " "),
	}
	cw := &countingWriter{w: f}
	bw := bufio.NewWriterSize(cw, 256<<10)
	tw, err := features.NewTraceWriter(bw, hdr)
	if err != nil {
		return err
	}

	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)

	var child *exec.Cmd
	childDone := make(chan error, 1)
	if len(args) > 0 {
		child, err = startCaptured(cmdPath, args, o.onlyCommand, capt)
		if err != nil {
			return err
		}
		go func() { childDone <- child.Wait() }()
	}
	// Least privilege from here on: the probes are attached, the trace is open and the command
	// (started with the privileges mlsched was given) is running; what is left reads kernel
	// data and writes one file.
	keep := captureKeepCaps(o.out)
	privs := keptCapsDesc(keep)
	if err := dropPrivileges(keep); err != nil {
		privs = fmt.Sprintf("kept all privileges: %v", err)
		fmt.Fprintf(stderr, "mlsched capture: warning: could not drop privileges: %v\n", err)
	}

	st := &captureState{
		o: o, hdr: hdr, capt: capt, tw: tw, cw: cw, start: start,
		showProgress: o.progress == "always" || (o.progress == "auto" && isTerminal(os.Stderr)),
	}
	st.joiner = features.NewJoiner(int(hdr.NumCPU), hdr.HorizonNs, func(s *features.Sample) error {
		return tw.Write(s)
	})

	// The reader runs in this goroutine; stop conditions arrive through 'stop'.
	stop := make(chan string, 1)
	go func() {
		var timeout <-chan time.Time
		if o.duration > 0 {
			timeout = time.After(o.duration)
		}
		select {
		case <-timeout:
			stop <- "duration elapsed"
		case s := <-sigs:
			stop <- "signal " + s.String()
			if child != nil && child.Process != nil && s == syscall.SIGTERM {
				// A terminal's Ctrl-C reaches the command too (same process group): only
				// SIGTERM, sent to mlsched alone, is passed on.
				child.Process.Signal(s)
			}
		case err := <-childDone:
			childDone <- err
			stop <- "command exited"
		}
	}()
	reason, err := st.readLoop(stop)
	if err != nil {
		return err
	}
	var cmdErr error
	if child != nil {
		select {
		case cmdErr = <-childDone:
		case <-time.After(10 * time.Second):
			cmdErr = errors.New("still running 10s after the capture ended; left running")
		}
	}
	sum, err := st.finish()
	if err != nil {
		return err
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("write trace: %w", err)
	}
	if err := f.Commit(); err != nil {
		return fmt.Errorf("trace: %w", err)
	}
	printCaptureSummary(stdout, o.out, reason, sum, cw.n)
	fmt.Fprintf(stdout, "  probes     %s\n", hooksDesc(capt))
	fmt.Fprintf(stdout, "  privileges %s\n", privs)
	if st.sampledOut > 0 {
		fmt.Fprintf(stdout, "  sampling   %d wakeups left out at random (%s)\n", st.sampledOut, samplingDesc(o))
	}
	if cmdErr != nil {
		fmt.Fprintf(stderr, "mlsched capture: command: %v\n", cmdErr)
	}
	return nil
}

// pollPeriod is how often the ring buffer is drained. The default 16 MiB ring holds ~58,000
// wake events: 50 ms of polling keeps up with over a million events per second.
const pollPeriod = 50 * time.Millisecond

type captureState struct {
	o            captureOpts
	hdr          features.TraceHeader
	capt         *bpf.Capture
	tw           *features.TraceWriter
	cw           *countingWriter
	joiner       *features.Joiner
	start        time.Time
	showProgress bool
	decodeErrors uint64
	sampledOut   uint64 // wakeups left out by --max-rate or --sample-every, at the end
	rec          ringbuf.Record
	wake         features.WakeEvent
	sw           features.SwitchEvent
}

// readLoop reads and joins events until a stop reason arrives.
func (st *captureState) readLoop(stop <-chan string) (string, error) {
	tick := time.Now()
	for {
		select {
		case reason := <-stop:
			return reason, nil
		default:
		}
		// The probes never wake the reader (BPF_RB_NO_WAKEUP): read what accumulated each period.
		st.capt.Events.SetDeadline(time.Now().Add(pollPeriod))
		err := st.drain()
		if err != nil {
			return "", err
		}
		if st.showProgress && time.Since(tick) >= time.Second {
			tick = time.Now()
			st.printProgress()
		}
	}
}

// drain handles records until none is available before the reader's deadline, then tells
// the joiner that everything stamped before now has been seen.
func (st *captureState) drain() error {
	for {
		err := st.capt.Events.ReadInto(&st.rec)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return st.joiner.Advance(monotonicNs())
		}
		if errors.Is(err, ringbuf.ErrClosed) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read events: %w", err)
		}
		if err := st.handle(st.rec.RawSample); err != nil {
			return err
		}
	}
}

func (st *captureState) handle(raw []byte) error {
	switch features.EventType(raw) {
	case features.EventWake:
		if features.DecodeWake(raw, &st.wake) != nil {
			st.decodeErrors++
			return nil
		}
		return st.joiner.Wake(&st.wake)
	case features.EventSwitch:
		if features.DecodeSwitch(raw, &st.sw) != nil {
			st.decodeErrors++
			return nil
		}
		return st.joiner.Switch(&st.sw)
	default:
		st.decodeErrors++
		return nil
	}
}

// finish detaches the probes, reads what is left in the ring buffer, resolves the samples that
// can be resolved and writes the trailer.
func (st *captureState) finish() (features.TraceSummary, error) {
	st.capt.Detach()
	end := monotonicNs()
	st.capt.Events.SetDeadline(time.Now().Add(50 * time.Millisecond))
	for {
		err := st.capt.Events.ReadInto(&st.rec)
		if err != nil {
			break
		}
		if err := st.handle(st.rec.RawSample); err != nil {
			return features.TraceSummary{}, err
		}
	}
	if err := st.joiner.Finish(end); err != nil {
		return features.TraceSummary{}, err
	}
	cnt, err := st.capt.Counters()
	if err != nil {
		return features.TraceSummary{}, err
	}
	js := st.joiner.Stats
	st.sampledOut = cnt[bpf.CntWakeSampledOut]
	sum := features.TraceSummary{
		DurationNs:   end - st.hdr.StartKtimeNs,
		WakeTotal:    cnt[bpf.CntWakeTotal],
		WakeIdle:     cnt[bpf.CntWakeIdle],
		WakeSkipped:  cnt[bpf.CntWakeSelf] + cnt[bpf.CntWakeOurs] + cnt[bpf.CntWakeFiltered] + cnt[bpf.CntWakeSampledOut],
		RingDrops:    cnt[bpf.CntWakeDrop],
		SwitchDrops:  cnt[bpf.CntSwitchDrop],
		LostSwitch:   js.LostSwitch,
		Unresolved:   js.Unresolved + js.BadCPU,
		FeatTakeover: cnt[bpf.CntFeatTakeover],
		DecodeErrors: st.decodeErrors,
		WakeEmitted:  cnt[bpf.CntWakeEmitted],
	}
	if st.showProgress {
		st.printProgress()
		fmt.Fprintln(stderr)
	}
	if err := st.tw.Close(sum); err != nil {
		return sum, err
	}
	sum.Samples, sum.Positives = st.tw.Samples()
	return sum, nil
}

func (st *captureState) printProgress() {
	n, pos := st.tw.Samples()
	cnt, _ := st.capt.Counters()
	fmt.Fprintf(stderr, "\r%7.1fs  samples %d  positives %s  ring drops %d  written %.1f MB   ",
		time.Since(st.start).Seconds(), n, pct(pos, n), cnt[bpf.CntWakeDrop]+cnt[bpf.CntSwitchDrop],
		float64(st.cw.n)/1e6)
}

// hooksDesc says which variant of the switch and wakeup hooks ran, and why not the newest.
func hooksDesc(c *bpf.Capture) string {
	switch c.Hooks {
	case bpf.HooksCast:
		return "cast hooks (task fields read directly, no clock read per switch; Linux >= 6.2)"
	case bpf.HooksPrevState:
		return fmt.Sprintf("prev-state hooks (task fields by probe read, a clock read per switch; Linux >= 5.18): %v", c.CastErr)
	}
	return fmt.Sprintf("probe-read hooks (Linux >= 5.15): %v", c.CastErr)
}

// samplingDesc says which sampling options were in force.
func samplingDesc(o captureOpts) string {
	var parts []string
	if o.maxRate > 0 {
		parts = append(parts, fmt.Sprintf("--max-rate %d per CPU; --max-rate 0 keeps every wakeup", o.maxRate))
	}
	if o.sampleEvery > 1 {
		parts = append(parts, fmt.Sprintf("--sample-every %d", o.sampleEvery))
	}
	return strings.Join(parts, ", ")
}

func printCaptureSummary(w io.Writer, path, reason string, s features.TraceSummary, bytes int64) {
	fmt.Fprintf(w, "capture: %s (%s) after %.1fs, %.1f MB\n", path, reason, float64(s.DurationNs)/1e9, float64(bytes)/1e6)
	fmt.Fprintf(w, "  samples    %d (positives %d, %s)\n", s.Samples, s.Positives, pct(s.Positives, s.Samples))
	fmt.Fprintf(w, "  wakeups    %d seen, %d to an idle CPU, %d skipped (self, own, filtered, sampled out)\n", s.WakeTotal, s.WakeIdle, s.WakeSkipped)
	fmt.Fprintf(w, "  dropped    %d ring-buffer (wake) + %d ring-buffer (switch), %d switch-out missed, %d unresolved at end\n",
		s.RingDrops, s.SwitchDrops, s.LostSwitch, s.Unresolved)
	if s.FeatTakeover > 0 || s.DecodeErrors > 0 {
		fmt.Fprintf(w, "  warnings   %d feature slots shared by two live threads (raise --max-tasks), %d undecodable events\n", s.FeatTakeover, s.DecodeErrors)
	}
	if s.RingDrops+s.SwitchDrops > 0 {
		fmt.Fprintf(w, "  hint       ring buffer overflowed: raise --ringbuf-mb\n")
	}
}

func pct(a, b uint64) string {
	if b == 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f%%", 100*float64(a)/float64(b))
}

// startCaptured starts the command. With a filter, the child waits on a pipe until its pid is
// in the filter set, so that nothing it does is missed.
func startCaptured(path string, args []string, filter bool, capt *bpf.Capture) (*exec.Cmd, error) {
	if !filter {
		cmd := exec.Command(path, args[1:]...)
		cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
		if err := cmd.Start(); err != nil {
			return nil, fmt.Errorf("start command: %w", err)
		}
		return cmd, nil
	}
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("find own executable: %w", err)
	}
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	defer r.Close()
	cmd := exec.Command(self, append([]string{gateCommand, path}, args...)...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.ExtraFiles = []*os.File{r}
	if err := cmd.Start(); err != nil {
		w.Close()
		return nil, fmt.Errorf("start command: %w", err)
	}
	if err := capt.AddTreeTgid(uint32(cmd.Process.Pid)); err != nil {
		cmd.Process.Kill()
		w.Close()
		return nil, err
	}
	w.Write([]byte{1})
	w.Close()
	return cmd, nil
}

// gateCommand is the hidden first argument of the exec gate: wait for a byte on fd 3, then
// exec the command in this process (so it keeps the pid mlsched registered).
const gateCommand = "__exec-gate"

func execGate(args []string) int {
	if len(args) < 2 {
		fmt.Fprintln(stderr, "mlsched: exec gate: missing command")
		return exitUsage
	}
	gate := os.NewFile(3, "gate")
	var b [1]byte
	if n, _ := gate.Read(b[:]); n != 1 {
		return exitFailure // mlsched went away before starting us
	}
	gate.Close()
	err := syscall.Exec(args[0], args[1:], os.Environ())
	fmt.Fprintf(stderr, "mlsched: exec %s: %v\n", args[0], err)
	return 127
}

// checkBPFPrivileges fails early, before anything is attached, without the needed capabilities.
func checkBPFPrivileges() error {
	if os.Geteuid() == 0 {
		return nil
	}
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err == nil {
		has := func(c uint) bool { return data[c/32].Effective&(1<<(c%32)) != 0 }
		if has(unix.CAP_SYS_ADMIN) || (has(unix.CAP_BPF) && has(unix.CAP_PERFMON)) {
			return nil
		}
	}
	return errorf(exitNotRoot, "needs root (or CAP_BPF and CAP_PERFMON) to load BPF programs: run it with sudo")
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

func monotonicNs() uint64 {
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return uint64(ts.Nano())
}

func kernelRelease() string {
	var u unix.Utsname
	if unix.Uname(&u) != nil {
		return "unknown"
	}
	return unix.ByteSliceToString(u.Release[:])
}

func hostname() string {
	h, _ := os.Hostname()
	return h
}

func isTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}
