package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	abworkload "github.com/mlsched/mlsched/ab/workload"
	"github.com/mlsched/mlsched/vmtest/internal/proto"
)

var agentStart = time.Now()

// agent runs as PID 1. PID 1 must never return or exit (the kernel panics), so every path
// ends in powerOff.
func agent() {
	out := &reporter{w: os.Stderr}
	defer func() {
		if r := recover(); r != nil {
			out.send(proto.Result{Kind: "error", Error: fmt.Sprintf("agent panic: %v", r)})
		}
		out.drain()
		powerOff()
	}()

	mountAll(out)
	if port, err := openResultPort(); err != nil {
		fmt.Fprintf(os.Stderr, "agent: %v; results go to the console\n", err)
	} else {
		out.w, out.tty = port, port
	}
	// The scheduler's metrics server listens on 127.0.0.1.
	if err := abworkload.LoopbackUp(); err != nil {
		out.send(proto.Result{Kind: "error", Error: "bring up lo: " + err.Error()})
	}
	out.send(hello())

	script, err := readScript()
	if err != nil {
		out.send(proto.Result{Kind: "error", Error: err.Error()})
		return
	}
	a := &runner{procs: map[string]*proc{}, out: out}
	if script.Deadline > 0 {
		// A step that hangs (or a guest that crawls) must still end the VM with a
		// message before the host gives up on it.
		time.AfterFunc(script.Deadline, func() {
			out.send(proto.Result{Kind: "error", Error: fmt.Sprintf("script deadline %v passed; powering off", script.Deadline)})
			out.drain()
			powerOff()
		})
	}
	for i, st := range script.Steps {
		start := time.Now()
		r := a.step(st)
		r.Kind, r.Step, r.Op, r.Name = "step", i, st.Op, st.Name
		if r.Elapsed == 0 {
			r.Elapsed = time.Since(start)
		}
		r.At = time.Since(agentStart)
		out.send(r)
	}
	a.cleanup()
	out.send(proto.Result{Kind: "done", OK: true, At: time.Since(agentStart)})
}

func powerOff() {
	syscall.Sync()
	for {
		_ = syscall.Reboot(syscall.LINUX_REBOOT_CMD_POWER_OFF)
		time.Sleep(time.Second)
	}
}

// mountAll mounts the file systems the scheduler and the steps need. The initramfs root
// itself is a writable tmpfs, so /tmp needs nothing.
func mountAll(out *reporter) {
	for _, m := range []struct{ src, dst, typ string }{
		{"proc", "/proc", "proc"},
		{"sysfs", "/sys", "sysfs"},
		{"devtmpfs", "/dev", "devtmpfs"},
		{"bpf", "/sys/fs/bpf", "bpf"},
		{"tracefs", "/sys/kernel/tracing", "tracefs"},
		{"debugfs", "/sys/kernel/debug", "debugfs"},
		{"cgroup2", "/sys/fs/cgroup", "cgroup2"},
	} {
		_ = os.MkdirAll(m.dst, 0o755)
		if err := syscall.Mount(m.src, m.dst, m.typ, 0, ""); err != nil {
			out.send(proto.Result{Kind: "error", Error: fmt.Sprintf("mount %s: %v", m.dst, err)})
		}
	}
	_ = os.MkdirAll("/tmp", 0o1777)
}

// openResultPort opens ttyS1 in raw mode: no \n -> \r\n translation, no echo.
func openResultPort() (*os.File, error) {
	f, err := os.OpenFile(proto.ResultPort, os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		return nil, fmt.Errorf("open result port: %w", err)
	}
	fd := int(f.Fd())
	if t, err := unix.IoctlGetTermios(fd, unix.TCGETS); err == nil {
		t.Oflag &^= unix.OPOST
		t.Lflag &^= unix.ECHO | unix.ICANON | unix.ISIG | unix.IEXTEN
		t.Iflag &^= unix.ICRNL | unix.IXON
		t.Cflag = t.Cflag&^unix.CBAUD | unix.B4000000
		_ = unix.IoctlSetTermios(fd, unix.TCSETS, t)
	}
	return f, nil
}

func hello() proto.Result {
	r := proto.Result{Kind: "hello", OK: true, Kernel: readTrim("/proc/sys/kernel/osrelease"), CPUs: runtime.NumCPU()}
	if f := strings.Fields(readTrim("/proc/uptime")); len(f) > 0 {
		r.UptimeS, _ = strconv.ParseFloat(f[0], 64)
	}
	r.Values = map[string]string{"cmdline": readTrim("/proc/cmdline"), "btf": "missing"}
	if _, err := os.Stat("/sys/kernel/btf/vmlinux"); err == nil {
		r.Values["btf"] = "present"
	}
	return r
}

func readScript() (*proto.Script, error) {
	b, err := os.ReadFile(proto.ScriptPath)
	if err != nil {
		return nil, fmt.Errorf("read script: %w", err)
	}
	var s proto.Script
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("parse script %s: %w", proto.ScriptPath, err)
	}
	return &s, nil
}

// readTrim returns a file's trimmed content (at most 64 KiB: results go over a serial line),
// or "missing: <err>".
func readTrim(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return "missing: " + err.Error()
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, 64<<10))
	if err != nil {
		return "missing: " + err.Error()
	}
	return strings.TrimSpace(string(b))
}

// reporter writes result lines; safe for concurrent use (the deadline timer).
type reporter struct {
	mu  sync.Mutex
	w   io.Writer
	tty *os.File
}

func (r *reporter) send(res proto.Result) {
	b, err := json.Marshal(res)
	if err != nil {
		b = []byte(fmt.Sprintf(`{"kind":"error","error":%q}`, "marshal result: "+err.Error()))
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	_, _ = r.w.Write(append(b, '\n'))
}

// drain waits until the UART has sent everything: powering off with bytes still in the tty
// buffer would lose the last results.
func (r *reporter) drain() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.tty != nil {
		_ = unix.IoctlSetInt(int(r.tty.Fd()), unix.TCSBRK, 1) // tcdrain
	}
}

// proc is a background process started by OpStart.
type proc struct {
	cmd            *exec.Cmd
	stdout, stderr *capBuffer
	done           chan struct{}
	err            error
}

type runner struct {
	procs map[string]*proc
	out   *reporter
}

// step runs one script step. It is one switch over every operation of the script protocol
// (vmtest/internal/proto), one case per operation, on purpose: it reads as the protocol's table
// of what each operation does in the guest, and the cases share the result they fill.
func (a *runner) step(st proto.Step) (r proto.Result) {
	r.OK = true
	r.ExitCode = -1
	fail := func(format string, args ...any) proto.Result {
		r.OK = false
		r.Error = fmt.Sprintf(format, args...)
		return r
	}
	switch st.Op {
	case proto.OpExec:
		timeout := orDefault(st.Timeout, 30*time.Second)
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		if len(st.Args) == 0 {
			return fail("exec: no args")
		}
		cmd := exec.CommandContext(ctx, st.Args[0], st.Args[1:]...)
		cmd.Env = guestEnv()
		var stdout, stderr capBuffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		r.Stdout, r.Stderr = stdout.String(), stderr.String()
		fillExit(&r, cmd.ProcessState)
		if ctx.Err() != nil {
			r.TimedOut = true
			return fail("exec %v: timed out after %v", st.Args, timeout)
		}
		var ee *exec.ExitError
		if err != nil && !errors.As(err, &ee) {
			return fail("exec %v: %v", st.Args, err)
		}
	case proto.OpStart:
		if len(st.Args) == 0 || st.Name == "" {
			return fail("start: need name and args")
		}
		if _, dup := a.procs[st.Name]; dup {
			return fail("start: process %q already exists", st.Name)
		}
		p := &proc{cmd: exec.Command(st.Args[0], st.Args[1:]...), stdout: &capBuffer{}, stderr: &capBuffer{}, done: make(chan struct{})}
		p.cmd.Env = guestEnv()
		p.cmd.Stdout, p.cmd.Stderr = p.stdout, p.stderr
		if err := p.cmd.Start(); err != nil {
			return fail("start %v: %v", st.Args, err)
		}
		a.procs[st.Name] = p
		go func() { p.err = p.cmd.Wait(); close(p.done) }()
		r.Value = strconv.Itoa(p.cmd.Process.Pid)
	case proto.OpWait:
		p, ok := a.procs[st.Name]
		if !ok {
			return fail("wait: no process %q", st.Name)
		}
		timeout := orDefault(st.Timeout, 30*time.Second)
		select {
		case <-p.done:
			fillExit(&r, p.cmd.ProcessState)
		case <-time.After(timeout):
			r.TimedOut = true
			r.Stdout, r.Stderr = p.stdout.String(), p.stderr.String()
			return fail("wait %s: still running after %v", st.Name, timeout)
		}
		r.Stdout, r.Stderr = p.stdout.String(), p.stderr.String()
	case proto.OpAlive:
		p, ok := a.procs[st.Name]
		if !ok {
			return fail("alive: no process %q", st.Name)
		}
		select {
		case <-p.done:
			fillExit(&r, p.cmd.ProcessState)
		default:
			r.Running = true
		}
	case proto.OpSignal:
		p, ok := a.procs[st.Name]
		if !ok {
			return fail("signal: no process %q", st.Name)
		}
		sig, ok := signals[st.Signal]
		if !ok {
			return fail("signal: unknown signal %q", st.Signal)
		}
		if err := p.cmd.Process.Signal(sig); err != nil {
			return fail("signal %s %s: %v", st.Signal, st.Name, err)
		}
	case proto.OpWaitFile:
		timeout := orDefault(st.Timeout, 10*time.Second)
		start := time.Now()
		for {
			v := readTrim(st.Path)
			r.Value = v
			if (v == st.Value) != st.Negate {
				r.Elapsed = time.Since(start)
				return r
			}
			if time.Since(start) > timeout {
				r.Elapsed = time.Since(start)
				r.TimedOut = true
				return fail("wait_file %s: %q after %v, want %s%q", st.Path, v, timeout, map[bool]string{true: "not "}[st.Negate], st.Value)
			}
			time.Sleep(2 * time.Millisecond)
		}
	case proto.OpRead:
		r.Values = map[string]string{}
		for _, p := range st.Paths {
			r.Values[p] = readTrim(p)
		}
	case proto.OpSleep:
		time.Sleep(st.Duration)
	case proto.OpHTTPGet:
		timeout := orDefault(st.Timeout, 10*time.Second)
		client := &http.Client{Timeout: 2 * time.Second}
		deadline := time.Now().Add(timeout)
		for {
			resp, err := client.Get(st.URL)
			if err == nil {
				body, rerr := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
				resp.Body.Close()
				r.Status, r.Value = resp.StatusCode, string(body)
				if rerr != nil {
					return fail("http_get %s: read body: %v", st.URL, rerr)
				}
				return r
			}
			if time.Now().After(deadline) {
				return fail("http_get %s: %v (retried for %v)", st.URL, err, timeout)
			}
			time.Sleep(50 * time.Millisecond)
		}
	case proto.OpWriteFile:
		if err := os.WriteFile(st.Path, st.Data, 0o644); err != nil {
			return fail("write_file: %v", err)
		}
	default:
		return fail("unknown op %q", st.Op)
	}
	return r
}

// cleanup ends what the script left running so the VM powers off promptly: stopped
// processes are continued first, or SIGKILL would wait on them forever.
func (a *runner) cleanup() {
	for name, p := range a.procs {
		select {
		case <-p.done:
			continue
		default:
		}
		_ = p.cmd.Process.Signal(syscall.SIGCONT)
		_ = p.cmd.Process.Kill()
		select {
		case <-p.done:
		case <-time.After(5 * time.Second):
			a.out.send(proto.Result{Kind: "error", Error: fmt.Sprintf("cleanup: %s did not die after SIGKILL", name)})
		}
	}
}

var signals = map[string]syscall.Signal{
	"INT": syscall.SIGINT, "TERM": syscall.SIGTERM, "KILL": syscall.SIGKILL, "HUP": syscall.SIGHUP,
	"STOP": syscall.SIGSTOP, "CONT": syscall.SIGCONT, "USR1": syscall.SIGUSR1, "USR2": syscall.SIGUSR2,
}

func fillExit(r *proto.Result, ps *os.ProcessState) {
	if ps == nil {
		return
	}
	ws, _ := ps.Sys().(syscall.WaitStatus)
	switch {
	case ws.Signaled():
		r.ExitCode = -1
		r.Signaled = strings.ToUpper(strings.TrimPrefix(unix.SignalName(ws.Signal()), "SIG"))
	default:
		r.ExitCode = ps.ExitCode()
	}
}

func guestEnv() []string {
	return []string{"PATH=/:/bin", "HOME=/root", "TMPDIR=/tmp", "GOTRACEBACK=all"}
}

func orDefault(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}

// capBuffer keeps the first and the last capHalf bytes of a stream: enough for any report
// the tests read, and bounded whatever a broken program prints.
type capBuffer struct {
	mu         sync.Mutex
	head, tail bytes.Buffer
	dropped    int
}

const capHalf = 32 << 10

func (c *capBuffer) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := len(p)
	if room := capHalf - c.head.Len(); room > 0 {
		k := min(room, len(p))
		c.head.Write(p[:k])
		p = p[k:]
	}
	c.tail.Write(p)
	if over := c.tail.Len() - capHalf; over > 0 {
		c.dropped += over
		rest := append([]byte(nil), c.tail.Bytes()[over:]...)
		c.tail.Reset()
		c.tail.Write(rest)
	}
	return n, nil
}

func (c *capBuffer) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.dropped == 0 {
		return c.head.String() + c.tail.String()
	}
	return fmt.Sprintf("%s\n[... %d bytes dropped ...]\n%s", c.head.String(), c.dropped, c.tail.String())
}
