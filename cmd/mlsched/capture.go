package main

import (
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

	"golang.org/x/sys/unix"

	"github.com/mlsched/mlsched/bpf"
	"github.com/mlsched/mlsched/features"
	"github.com/mlsched/mlsched/features/outfile"
	"github.com/mlsched/mlsched/sched"
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
		exits:   "1 failed (also when the traced command failed: the trace is kept), 2 usage, 3 not root, 4 the kernel lacks BTF or a needed feature, 7 the BPF verifier rejected a probe",
		usage:   "-o FILE [--duration D] [--horizon H] [--only-command] [-- COMMAND ARGS...]",
		help: `Records training samples from this machine's workload with BPF tracepoints (sys_enter,
sched_waking, sched_switch); it needs root (or CAP_BPF and CAP_PERFMON) and a kernel with BTF,
but not sched_ext.

A sample is taken whenever a task W wakes while its previous CPU runs another task R: the
features are R's 64 decayed syscall counts at that moment, the label is 1 if R leaves the CPU
voluntarily (blocks, sleeps, yields, exits) within the horizon H, 0 if it is preempted or still
running at H. Samples whose outcome is unknown when the capture ends are dropped and counted.

Without COMMAND it captures system-wide for --duration (default 10s). With '-- COMMAND ARGS',
it runs the command and captures until it exits (or --duration, if given, elapses first: the
trace is then completed at once, and capture waits up to 10s more for the command to exit, for
its exit status, before leaving it running); --only-command keeps only the command's process
tree. With the trace on stdout (-o -), the command's own stdout goes to stderr.

At most --max-rate samples per second are taken on each CPU (default 20000): on a
wakeup-heavy machine the wakeups over the cap are sampled at random, so that the probes' cost
and the trace's size stay bounded; --max-rate 0 samples every wakeup. --sample-every N keeps
one wakeup in N on top of that.

Ctrl-C, SIGTERM or SIGHUP ends the capture cleanly: the trace is complete and valid. Every loss
(ring-buffer drops, unresolved samples) is counted in the trace and in the summary. A capture
whose write fails part-way (a full disk) cuts the trace back to its last whole block, ends it
there with the loss counted in its trailer (write_lost), and exits 1: FILE is a valid, shorter
trace. If even that fails, what was written stays in the hidden temporary file next to FILE,
named in the error: inspect reads those samples, train and eval refuse a trace without its end.

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
	fs.StringVar(&o.out, "o", "", "write the trace to `FILE` (required; - for stdout, the summary then goes to stderr)")
	fs.DurationVar(&o.duration, "duration", 0, "capture for `D` (default 10s without a command; with one, until it exits)")
	fs.DurationVar(&o.horizon, "horizon", DefaultHorizon, "label horizon `H`: 1 if R yields within H")
	fs.BoolVar(&o.onlyCommand, "only-command", false, "sample only COMMAND's process tree")
	fs.UintVar(&o.ringMB, "ringbuf-mb", 16, "event ring buffer size in MiB (a power of two)")
	fs.UintVar(&o.maxTasks, "max-tasks", 0, "feature slots, a power of two in [1024, 4194304] (default: enough for pid_max, at most 65536)")
	fs.UintVar(&o.sampleEvery, "sample-every", 1, "keep one wakeup in `N`, at random (less overhead and smaller traces on wakeup-heavy machines)")
	fs.UintVar(&o.maxRate, "max-rate", bpf.DefaultMaxRate, "take at most `N` samples per second on each CPU, the rest sampled at random (0: every wakeup)")
	fs.StringVar(&o.progress, "progress", "auto", "progress line: auto (on a terminal), always, never")
	fs.BoolVar(&o.verbose, "v", false, "verbose: full verifier log on load errors")
	return func(args []string) error { return runCapture(o, args) }
}

func runCapture(o captureOpts, args []string) error {
	cmdPath, err := checkCaptureOpts(&o, args)
	if err != nil {
		return err
	}
	if err := checkNotTerminal("-o", o.out); err != nil {
		return err
	}
	if err := checkBPFPrivileges(); err != nil {
		return err
	}
	if err := bpf.CheckBTF(); err != nil {
		return withCode(exitNoKernel, err)
	}
	// Signals from here on end the capture cleanly, also one that comes while the probes load
	// (it is kept, and the capture stops as soon as it starts). SIGHUP too: a closed terminal
	// or a dropped ssh session must not cost a long capture.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)
	f, err := openTrace(o.out)
	if err != nil {
		return err
	}
	defer f.Abort()
	sess, err := sched.StartCapture(sched.CaptureConfig{
		Probes: bpf.CaptureConfig{
			SelfTgid: uint32(os.Getpid()), FilterTree: o.onlyCommand, RingBytes: uint32(o.ringMB) << 20,
			MaxTasks: uint32(o.maxTasks), SampleEvery: uint32(o.sampleEvery), MaxRate: uint32(o.maxRate),
			LogVerifier: o.verbose,
		},
		Header: features.TraceHeader{HorizonNs: uint64(o.horizon), KernelRelease: kernelRelease(),
			Hostname: hostname(), Command: strings.Join(args, " ")},
	}, f)
	if err != nil {
		if errors.Is(err, bpf.ErrVerifier) {
			return withCode(exitVerifier, err)
		}
		return withCode(exitFailure, err)
	}
	defer sess.Close()

	var child *exec.Cmd
	childDone := make(chan error, 1)
	if len(args) > 0 {
		// With the trace on stdout, the command's output goes to stderr: mixed into the
		// trace's stream it would corrupt it.
		cmdOut := os.Stdout
		if outfile.IsStdout(o.out) {
			cmdOut = os.Stderr
		}
		if child, err = startCaptured(cmdPath, args, o.onlyCommand, sess.Probes, cmdOut); err != nil {
			return err
		}
		go func() { childDone <- child.Wait() }()
	}
	// A capture that fails part-way stops its command and loses as little as it can: after a
	// failed write (a full disk) it ends the trace at its last whole block (Salvage); otherwise,
	// or if that fails too, it keeps what it wrote in the hidden temporary file, as a capture
	// killed outright does (inspect reads the complete blocks there).
	failed := func(err error) error {
		if child != nil && child.Process.Signal(syscall.SIGTERM) == nil { // nil: it was still running
			err = fmt.Errorf("%w (the command was sent SIGTERM)", err)
		}
		if errors.Is(err, features.ErrWrite) {
			// A full disk: cut the trace back to its last whole block and end it there, the
			// loss counted in its trailer. Only if that fails too is the file kept as it is.
			rep, serr := sess.Salvage(f)
			if serr != nil {
				err = fmt.Errorf("%w (and ending the trace there failed: %v)", err, serr)
			} else if cerr := f.Commit(); cerr != nil {
				// The commit names where a renamed-too-late output stays.
				return fmt.Errorf("%w; the trace was ended at its last whole block, but: %v", err, cerr)
			} else {
				printCaptureSummary(reportWriter(o.out), o.out, "write failed", rep.Summary, rep.Bytes)
				return errorf(exitFailure, "%v: %s is a valid trace of the %d samples written before it; the %d after it are lost (write_lost in its trailer)",
					err, o.out, rep.Summary.Samples, rep.Summary.WriteLost)
			}
		}
		if n := sess.Progress().Bytes; n > 0 {
			if kept := f.Keep(); kept != "" {
				return fmt.Errorf("%w; the %.1f MB written before it are kept in %s (`mlsched inspect` reads the samples there; train and eval need a complete trace: capture again)",
					err, float64(n)/1e6, kept)
			}
		}
		return err
	}
	privs := dropCapturePrivileges(o.out)

	var tick func()
	if o.progress == "always" || (o.progress == "auto" && isTerminal(os.Stderr)) {
		tick = func() { printProgress(sess.Progress()) }
	}
	reason, err := sess.Run(captureStops(o.duration, sigs, child, childDone), tick)
	if err != nil {
		return failed(err)
	}
	// The capture ends now: the probes detach and the trace is completed before waiting for
	// the command (waiting with the probes attached and nobody reading filled the ring).
	rep, err := sess.Finish()
	if err != nil {
		return failed(err)
	}
	if tick != nil {
		tick()
		fmt.Fprintln(stderr)
	}
	if err := f.Commit(); err != nil {
		return fmt.Errorf("trace: %w", err)
	}
	w := reportWriter(o.out)
	printCaptureSummary(w, o.out, reason, rep.Summary, rep.Bytes)
	fmt.Fprintf(w, "  probes     %s\n", hooksDesc(sess.Probes))
	fmt.Fprintf(w, "  privileges %s\n", privs)
	if rep.SampledOut > 0 {
		fmt.Fprintf(w, "  sampling   %d wakeups left out at random (%s)\n", rep.SampledOut, samplingDesc(o))
	}
	cmdErr := waitCommand(child, childDone, sigs) // the trace is done: this is for the exit status
	if cmdErr != nil && reason != "command exited" && stoppedBySignal(cmdErr) {
		fmt.Fprintf(stderr, "mlsched capture: the command was stopped with the capture (%v)\n", cmdErr)
	} else if cmdErr != nil {
		fmt.Fprintf(stderr, "mlsched capture: command: %v\n", cmdErr)
		// The command ended the capture by failing: the trace is kept (it is complete), but a
		// script must see that the traced workload failed. A command stopped by the capture's
		// end (the duration, Ctrl-C) is not a failure of the capture.
		if reason == "command exited" && !stoppedBySignal(cmdErr) {
			return errorf(exitFailure, "the command failed (%v); the trace %s is complete and kept", cmdErr, o.out)
		}
	}
	return nil
}

// openTrace starts the trace: a new file next to its destination, renamed into place when
// complete (features/outfile), so an existing file of that name survives a failed capture, no
// link planted at either name is followed, and a capture killed outright leaves a hidden
// ".NAME.tmp-*" file whose blocks are still readable.
func openTrace(out string) (*outfile.File, error) {
	if fi, err := os.Stat(out); err == nil && fi.IsDir() {
		return nil, errorf(exitUsage, "cannot write the trace: %s is a directory", out)
	}
	f, err := outfile.Create(out)
	if err != nil {
		return nil, errorf(exitFailure, "cannot write the trace: %v", err)
	}
	return f, nil
}

// checkCaptureOpts checks everything that can be checked before anything is attached, fills
// in the default duration and resolves the command's path.
func checkCaptureOpts(o *captureOpts, args []string) (cmdPath string, err error) {
	switch {
	case o.out == "":
		return "", errorf(exitUsage, "-o FILE is required")
	case o.horizon <= 0 || o.horizon > time.Duration(features.MaxHorizonNs):
		return "", errorf(exitUsage, "--horizon %v: must be in (0, 1m]", o.horizon)
	case o.ringMB == 0 || o.ringMB&(o.ringMB-1) != 0 || o.ringMB > 1024:
		return "", errorf(exitUsage, "--ringbuf-mb %d: must be a power of two, at most 1024", o.ringMB)
	case o.onlyCommand && len(args) == 0:
		return "", errorf(exitUsage, "--only-command needs a command after '--'")
	case o.sampleEvery == 0 || o.sampleEvery > 1<<20:
		return "", errorf(exitUsage, "--sample-every %d: must be in [1, 1048576]", o.sampleEvery)
	case o.maxRate > bpf.MaxRateLimit:
		return "", errorf(exitUsage, "--max-rate %d: must be at most %d (0: no limit)", o.maxRate, bpf.MaxRateLimit)
	case o.duration < 0:
		return "", errorf(exitUsage, "--duration %v: must be positive (or 0: the default)", o.duration)
	case o.progress != "auto" && o.progress != "always" && o.progress != "never":
		return "", errorf(exitUsage, "--progress %q: want auto, always or never", o.progress)
	}
	if o.maxTasks != 0 {
		if err := bpf.CheckFeatSlots(uint64(o.maxTasks)); err != nil {
			return "", errorf(exitUsage, "--max-tasks %d: %v (0: sized from pid_max)", o.maxTasks, err)
		}
	}
	if len(args) == 0 {
		if o.duration == 0 {
			o.duration = 10 * time.Second
		}
		return "", nil
	}
	p, err := exec.LookPath(args[0])
	if err != nil {
		return "", errorf(exitUsage, "command %q: %v", args[0], err)
	}
	return p, nil
}

// dropCapturePrivileges is least privilege from here on: the probes are attached, the trace
// is open and the command (started with the privileges mlsched was given) is running; what is
// left reads kernel data and writes one file. It returns the summary's line about it.
func dropCapturePrivileges(out string) string {
	keep := captureKeepCaps(out)
	if err := dropPrivileges(keep); err != nil {
		fmt.Fprintf(stderr, "mlsched capture: warning: could not drop privileges: %v\n", err)
		return fmt.Sprintf("kept all privileges: %v", err)
	}
	return keptCapsDesc(keep)
}

// captureStops delivers the reason the capture ends: the duration, a signal, or the command's
// exit (put back on childDone for waitCommand).
func captureStops(d time.Duration, sigs <-chan os.Signal, child *exec.Cmd, childDone chan error) <-chan string {
	stop := make(chan string, 1)
	go func() {
		var timeout <-chan time.Time
		if d > 0 {
			timeout = time.After(d)
		}
		select {
		case <-timeout:
			stop <- "duration elapsed" // the command runs on: waitCommand gives it 10 s
		case s := <-sigs:
			stop <- "signal " + s.String()
			if child != nil && child.Process != nil && s == syscall.SIGTERM {
				// A terminal's Ctrl-C (and its hangup) reaches the command too (same process
				// group): only SIGTERM, sent to mlsched alone, is passed on.
				child.Process.Signal(s)
			}
		case err := <-childDone:
			childDone <- err
			stop <- "command exited"
		}
	}()
	return stop
}

// stoppedBySignal: the command was ended by SIGINT or SIGTERM (a terminal's Ctrl-C reaches it
// and mlsched at once, and either may be seen first): the capture was stopped, the command did
// not fail.
func stoppedBySignal(err error) bool {
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		return false
	}
	ws, ok := ee.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && (ws.Signal() == syscall.SIGINT || ws.Signal() == syscall.SIGTERM)
}

// waitCommand gives the command 10 s to end once the capture has (the trace is complete by
// then: this is only for its exit status); another signal stops the wait at once.
func waitCommand(child *exec.Cmd, childDone <-chan error, sigs <-chan os.Signal) error {
	if child == nil {
		return nil
	}
	select {
	case err := <-childDone:
		return err
	case <-time.After(time.Second):
	}
	fmt.Fprintf(stderr, "mlsched capture: the trace is complete; waiting up to 10s for the command to exit (Ctrl-C again to leave it running)\n")
	select {
	case err := <-childDone:
		return err
	case s := <-sigs:
		return fmt.Errorf("still running when %v stopped the wait; left running", s)
	case <-time.After(9 * time.Second):
		return errors.New("still running 10s after the capture ended; left running")
	}
}

func printProgress(p sched.Progress) {
	fmt.Fprintf(stderr, "\r%7.1fs  samples %d  positives %s  ring drops %d  written %.1f MB   ",
		p.Elapsed.Seconds(), p.Samples, pct(p.Positive, p.Samples), p.RingDrops, float64(p.Bytes)/1e6)
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
	if s.WriteLost > 0 {
		fmt.Fprintf(w, "  lost       %d samples after the trace's last whole block: a write failed (full disk?)\n", s.WriteLost)
	}
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
func startCaptured(path string, args []string, filter bool, capt *bpf.Capture, stdout *os.File) (*exec.Cmd, error) {
	if !filter {
		cmd := exec.Command(path, args[1:]...)
		cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, stdout, os.Stderr
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
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, stdout, os.Stderr
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
