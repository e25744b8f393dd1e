package ab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/mlsched/mlsched/bpf"
)

// DefaultSysfs is where the kernel shows sched_ext's state.
const DefaultSysfs = "/sys/kernel/sched_ext"

// Errors the CLI maps to exit codes: the kernel's (defined once, in bpf) and the runner's own.
var (
	ErrNoSchedExt = bpf.ErrNoSchedExt
	ErrNotRoot    = bpf.ErrNotRoot
	ErrBusy       = bpf.ErrBusy
	ErrAttach     = errors.New("scheduler did not attach")
	ErrDetached   = errors.New("scheduler detached during the run")
)

// sysfs reads sched_ext's state files under root (a fake directory in tests).
type sysfs struct{ root string }

func (s sysfs) present() bool {
	_, err := os.Stat(s.root)
	return err == nil
}

func (s sysfs) read(name string) string {
	b, _ := os.ReadFile(filepath.Join(s.root, name))
	return strings.TrimSpace(string(b))
}

// state is "enabled", "disabled", a transition ("enabling", "disabling"), or "" if absent.
func (s sysfs) state() string { return s.read("state") }

// ops is the name of the attached scheduler ("" when none).
func (s sysfs) ops() string { return s.read("root/ops") }

// enableSeq counts how often a scheduler was enabled since boot (0 if the kernel lacks it): a
// change during a run means the scheduler was replaced or re-attached.
func (s sysfs) enableSeq() uint64 {
	n, _ := strconv.ParseUint(s.read("enable_seq"), 10, 64)
	return n
}

// idle reports whether no sched_ext scheduler is attached.
func (s sysfs) idle() bool {
	st := s.state()
	return st == "" || st == "disabled"
}

// waitFor polls cond every 20 ms until it holds, the timeout passes or ctx ends.
func waitFor(ctx context.Context, timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return cond()
		}
		select {
		case <-ctx.Done():
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// scheduler is one attached instance of an arm's scheduler process.
type scheduler struct {
	arm  Arm
	cmd  *exec.Cmd
	out  *tailBuffer
	done chan struct{} // closed when the process has exited
	err  error         // its exit status, valid after done
	ops  string
	seq  uint64
}

// startScheduler starts argv and waits until sysfs shows a scheduler enabled under the arm's
// name. On failure the process is stopped and the error says why, with its output's tail.
func startScheduler(ctx context.Context, fs sysfs, arm Arm, argv []string, attach, detach time.Duration) (*scheduler, error) {
	if st := fs.state(); st != "disabled" && st != "" {
		return nil, fmt.Errorf("arm %s: %w: %q (state %s); stop it first", arm.Name, ErrBusy, fs.ops(), st)
	}
	before := fs.enableSeq()
	s := &scheduler{arm: arm, out: &tailBuffer{max: 8 << 10}, done: make(chan struct{})}
	s.cmd = exec.Command(argv[0], argv[1:]...)
	s.cmd.Stdout, s.cmd.Stderr = s.out, s.out
	// Its own process group: a terminal's ^C reaches only ab, which stops the scheduler in order.
	// If ab dies, SIGTERM lets the scheduler detach cleanly (the kernel would anyway on exit).
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := s.cmd.Start(); err != nil {
		return nil, fmt.Errorf("arm %s: start scheduler: %w", arm.Name, err)
	}
	go func() { s.err = s.cmd.Wait(); close(s.done) }()

	// enable_seq (if the kernel has it) proves the scheduler we see enabled is a new one; the
	// kernel bumps it just after the state turns "enabled", so wait for both.
	_, seqErr := os.Stat(filepath.Join(fs.root, "enable_seq"))
	haveSeq := seqErr == nil
	var exited bool
	attached := waitFor(ctx, attach, func() bool {
		select {
		case <-s.done:
			exited = true
			return true
		default:
		}
		if fs.state() != "enabled" {
			return false
		}
		ops := fs.ops()
		return ops != "" && strings.HasPrefix(ops, arm.opsPrefix()) && (!haveSeq || fs.enableSeq() != before)
	})
	switch {
	case exited:
		return nil, fmt.Errorf("arm %s: %w: %s exited (%v) before sched_ext was enabled%s", arm.Name, ErrAttach, argv[0], s.err, s.out.indented())
	case ctx.Err() != nil:
		s.stop(fs, detach)
		return nil, ctx.Err()
	case !attached:
		st, ops := fs.state(), fs.ops()
		s.stop(fs, detach)
		why := fmt.Sprintf("state %q after %v", st, attach)
		if st == "enabled" && !strings.HasPrefix(ops, arm.opsPrefix()) {
			why = fmt.Sprintf("the enabled scheduler is %q, want %s*", ops, arm.opsPrefix())
		} else if st == "enabled" {
			why = fmt.Sprintf("%q is enabled but sched_ext's enable_seq stayed %d: not a new attach", ops, before)
		}
		return nil, fmt.Errorf("arm %s: %w: %s%s", arm.Name, ErrAttach, why, s.out.indented())
	}
	s.ops, s.seq = fs.ops(), fs.enableSeq()
	return s, nil
}

// check verifies that this scheduler is still the attached one.
func (s *scheduler) check(fs sysfs) error {
	select {
	case <-s.done:
		return fmt.Errorf("arm %s: %w: the scheduler process exited (%v)%s", s.arm.Name, ErrDetached, s.err, s.out.indented())
	default:
	}
	if st, ops := fs.state(), fs.ops(); st != "enabled" || ops != s.ops {
		return fmt.Errorf("arm %s: %w: sched_ext state %q, ops %q (attached as %q)%s", s.arm.Name, ErrDetached, st, ops, s.ops, s.out.indented())
	}
	if seq := fs.enableSeq(); seq != s.seq {
		return fmt.Errorf("arm %s: %w: sched_ext was re-enabled (enable_seq %d -> %d)", s.arm.Name, ErrDetached, s.seq, seq)
	}
	return nil
}

// stop sends SIGINT, waits up to timeout, then SIGKILLs the process group, and waits until
// sched_ext is disabled again.
func (s *scheduler) stop(fs sysfs, timeout time.Duration) error {
	_ = s.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-s.done:
	case <-time.After(timeout):
		_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
		<-s.done
	}
	if !waitFor(context.Background(), timeout, fs.idle) {
		return fmt.Errorf("arm %s: sched_ext still %q %v after the scheduler stopped", s.arm.Name, fs.state(), timeout)
	}
	return nil
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	buf []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if len(t.buf) > t.max {
		t.buf = append(t.buf[:0], t.buf[len(t.buf)-t.max:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.buf)
}

// indented is the output's last lines, indented, after a colon and newline ("" if none).
func (t *tailBuffer) indented() string {
	s := strings.TrimSpace(t.String())
	if s == "" {
		return ""
	}
	lines := strings.Split(s, "\n")
	if len(lines) > 12 {
		lines = lines[len(lines)-12:]
	}
	var b bytes.Buffer
	b.WriteString("; its output:")
	for _, l := range lines {
		b.WriteString("\n    ")
		b.WriteString(l)
	}
	return b.String()
}
