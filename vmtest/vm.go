// Package vmtest boots a real sched_ext kernel (Debian sid's, fetched and cached by
// fetch-kernel.sh) under qemu (TCG) and runs scenarios against the mlsched binary inside it.
//
// A scenario is a script of steps (internal/proto) built by a Go test on the host; the
// guest agent (vmtest/guest, the VM's /init) runs it and reports one JSON line per step on
// the second serial port. The host checks the results and the kernel console: any BUG,
// WARNING, stall, Oops, panic or sched_ext error line fails the test, with its context.
//
// The VM tests are opt-in (MLSCHED_VMTEST=1, as `make vmtest` sets it) because each boots a
// VM; `make test` runs them. Missing qemu or kernel skips with the reason on a dev box and
// fails under CI=true. This package must not import the scheduler: it tests the binary (the
// tests use model/ only to write fixture files in the documented format).
package vmtest

import (
	"bufio"
	"bytes"
	"cmp"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mlsched/mlsched/features/outfile"
	"github.com/mlsched/mlsched/vmtest/internal/proto"
)

// defaultAccel runs both vCPUs on one emulator thread. With one thread per vCPU
// (tcg,thread=multi, faster) a vCPU now and then runs a stale int3 right after the kernel
// patched a static key (TCG's cross-modifying-code race) and the guest oopses: at boot, and
// whenever a tracepoint or sched_ext is switched on or off, which every scenario does. On a
// quiet host it hit three boots in a row of one scenario; with thread=single, none in dozens
// of attach/detach cycles. MLSCHED_VMTEST_ACCEL overrides it; the harness still retries a VM
// that oopses that way (up to three boots).
const defaultAccel = "tcg,thread=single"

// Env is what every VM shares: the kernel, qemu and the base initramfs with the binaries.
type Env struct {
	Root       string // the module root
	KernelDir  string // vmlinuz, config, version
	Kernel     string // kernel version
	Qemu       string
	Accel      string // qemu -accel: see defaultAccel
	OutDir     string // per-scenario logs are kept here
	BinDir     string // the static binaries that go into the initramfs
	ModelFile  bool   // model/default.bin is in the initramfs as /default.bin
	baseInitrd []byte
}

var (
	envOnce sync.Once
	env     *Env
	envErr  error
)

// inCI reports whether skips must become failures.
func inCI() bool {
	v := strings.ToLower(os.Getenv("CI"))
	return v != "" && v != "0" && v != "false"
}

// Enabled reports whether the VM scenarios were asked for.
func Enabled() bool {
	v := os.Getenv("MLSCHED_VMTEST")
	return v != "" && v != "0"
}

// Setup returns the shared environment, preparing it on first use (fetch the kernel, install
// qemu if missing and root, build the binaries and the base initramfs). It skips the test if
// the VM tests are not enabled; if they are and the environment cannot be prepared, it skips
// with the reason on a dev box and fails under CI.
func Setup(t testing.TB) *Env {
	t.Helper()
	if !Enabled() {
		t.Skip("VM scenarios are opt-in: run `make vmtest` (or set MLSCHED_VMTEST=1); `make test` runs them")
	}
	envOnce.Do(func() { env, envErr = setup(t) })
	if envErr != nil {
		if inCI() {
			t.Fatalf("VM environment (CI=true, so this is a failure, not a skip): %v", envErr)
		}
		t.Skipf("VM environment unavailable: %v", envErr)
	}
	return env
}

// attachTimeout: loading the scheduler in the VM parses the kernel's BTF and runs the verifier
// under TCG, several seconds on a busy host.
const attachTimeout = 45 * time.Second

func setup(t testing.TB) (*Env, error) {
	start := time.Now()
	root, err := moduleRoot()
	if err != nil {
		return nil, err
	}
	e := &Env{Root: root}
	e.OutDir = os.Getenv("MLSCHED_VMTEST_OUT")
	if e.OutDir == "" {
		e.OutDir = filepath.Join(root, "vmtest", "out")
	}
	if err := os.MkdirAll(e.OutDir, 0o755); err != nil {
		return nil, err
	}

	// Host packages (qemu, cpio); installs them as root if missing.
	if out, err := runCmd(root, nil, filepath.Join(root, "vmtest", "deps.sh")); err != nil {
		return nil, fmt.Errorf("vmtest/deps.sh: %v\n%s", err, out)
	}
	e.Accel = cmp.Or(os.Getenv("MLSCHED_VMTEST_ACCEL"), defaultAccel)
	if e.Qemu, err = exec.LookPath("qemu-system-x86_64"); err != nil {
		return nil, fmt.Errorf("qemu-system-x86_64 not found (apt-get install qemu-system-x86): %w", err)
	}

	if err := e.fetchKernel(); err != nil {
		return nil, err
	}
	t.Logf("vmtest: kernel %s from %s (%v)", e.Kernel, e.KernelDir, time.Since(start).Round(time.Millisecond))
	t0 := time.Now()
	if err := e.buildInitrd(); err != nil {
		return nil, err
	}
	t.Logf("vmtest: built mlsched + guest agent, initramfs %.1f MB (%v)", float64(len(e.baseInitrd))/1e6, time.Since(t0).Round(time.Millisecond))
	return e, nil
}

// fetchKernel runs fetch-kernel.sh (Debian sid's sched_ext kernel, cached) and records it.
func (e *Env) fetchKernel() error {
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(filepath.Join(e.Root, "vmtest", "fetch-kernel.sh"))
	cmd.Dir = e.Root
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("fetch-kernel.sh: %v\n%s", err, stderr.String())
	}
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	e.KernelDir = lines[len(lines)-1]
	if b, err := os.ReadFile(filepath.Join(e.KernelDir, "version")); err == nil {
		e.Kernel = strings.TrimSpace(string(b))
	}
	return nil
}

// buildInitrd builds the static mlsched and the guest agent and packs them (and the
// repository's default model) into the base initramfs every scenario starts from.
func (e *Env) buildInitrd() error {
	root := e.Root
	bin := filepath.Join(e.OutDir, "bin")
	e.BinDir = bin
	if err := os.MkdirAll(bin, 0o755); err != nil {
		return err
	}
	builds := []struct{ out, pkg, ldflags string }{
		{"mlsched", "./cmd/mlsched", "-s -w -X main.version=vmtest"},
		{"init", "./vmtest/guest", "-s -w"},
	}
	for _, b := range builds {
		if b.out == "mlsched" && os.Getenv("MLSCHED_VMTEST_MLSCHED") != "" {
			// A prebuilt static binary (e.g. from a clean worktree while the tree is mid-edit).
			if out, err := runCmd(root, nil, "cp", os.Getenv("MLSCHED_VMTEST_MLSCHED"), filepath.Join(bin, b.out)); err != nil {
				return fmt.Errorf("MLSCHED_VMTEST_MLSCHED: %v\n%s", err, out)
			}
			continue
		}
		env := []string{"CGO_ENABLED=0"}
		if out, err := runCmd(root, env, goTool(), "build", "-trimpath", "-ldflags", b.ldflags,
			"-o", filepath.Join(bin, b.out), b.pkg); err != nil {
			return fmt.Errorf("build %s: %v\n%s", b.pkg, err, out)
		}
	}
	files := map[string]cpioData{}
	for _, b := range builds {
		data, err := os.ReadFile(filepath.Join(bin, b.out))
		if err != nil {
			return err
		}
		files[b.out] = cpioData{perm: 0o755, data: data}
	}
	// The repository's default model, for the model policy before (or besides) the binary
	// embedding it.
	if data, err := os.ReadFile(filepath.Join(root, "model", "default.bin")); err == nil {
		files["default.bin"] = cpioData{perm: 0o644, data: data}
		e.ModelFile = true
	}
	var raw bytes.Buffer
	cw := newCpioWriter(&raw)
	writeTree(cw, []string{"dev", "proc", "sys", "tmp", "root", "bin", "run"}, files)
	cw.CharDev("dev/console", 5, 1) // init's stdio before devtmpfs is mounted
	if err := cw.Close(); err != nil {
		return err
	}
	// gzip -1: a few MB smaller than raw at a fraction of a second either side.
	var gz bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&gz, gzip.BestSpeed)
	zw.Write(raw.Bytes())
	if err := zw.Close(); err != nil {
		return err
	}
	e.baseInitrd = gz.Bytes()
	return nil
}

// HasCommand reports whether the mlsched under test has subcommand name, and, if flags are
// given, whether its help mentions each of them: how a scenario waits for its feature.
func (e *Env) HasCommand(name string, flags ...string) bool {
	cmd := exec.Command(filepath.Join(e.BinDir, "mlsched"), name, "--help")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return false
	}
	for _, f := range flags {
		if !bytes.Contains(out, []byte(f)) {
			return false
		}
	}
	return true
}

// Probe runs the mlsched under test on the host and returns its exit code and output: how a
// scenario learns, before booting, whether a feature is in (e.g. an embedded default model).
func (e *Env) Probe(args ...string) (int, string) {
	cmd := exec.Command(filepath.Join(e.BinDir, "mlsched"), args...)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode(), string(out)
	}
	if err != nil {
		return -1, err.Error()
	}
	return 0, string(out)
}

func goTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return filepath.Join(os.Getenv("GOROOT"), "bin", "go")
}

func runCmd(dir string, env []string, name string, args ...string) (string, error) {
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("go.mod not found above the working directory")
		}
		dir = parent
	}
}

// Scenario is a script under construction plus what the host expects of the VM.
type Scenario struct {
	Name string
	// Timeout bounds the VM on the host (qemu is killed when it passes). The guest's own
	// deadline is set a little shorter so that it can still report.
	Timeout time.Duration
	// AllowKernelLog lists console lines this scenario provokes on purpose.
	AllowKernelLog []*regexp.Regexp
	// ExpectKernelLog lists console lines that must appear (they are also allowed).
	ExpectKernelLog []*regexp.Regexp
	// AllowDetachedStalls excuses RCU stall reports that belong to the kernel's default
	// scheduler (see detachedStalls): for scenarios that leave the machine on it for long
	// stretches under load (a restart in place with one CPU left, under TCG).
	AllowDetachedStalls bool
	// Files are added to the initramfs (absolute guest paths); Programs too, executable.
	Files    map[string][]byte
	Programs map[string][]byte
	// KernelDir boots another kernel (a directory with vmlinuz) instead of the sched_ext one.
	KernelDir string

	steps   []proto.Step
	mayFail map[int]bool
}

// NewScenario starts a script. Names become file names and kernel parameters.
func NewScenario(name string) *Scenario {
	return &Scenario{Name: name, Timeout: 90 * time.Second, mayFail: map[int]bool{}, Files: map[string][]byte{}}
}

// Step adds a step and returns its index for Run.Step.
func (s *Scenario) Step(st proto.Step) int {
	s.steps = append(s.steps, st)
	return len(s.steps) - 1
}

// MayFail marks a step whose failure (timeout, refusal) the test checks itself.
func (s *Scenario) MayFail(i int) int { s.mayFail[i] = true; return i }

// Exec runs a command to completion in the guest.
func (s *Scenario) Exec(timeout time.Duration, args ...string) int {
	return s.Step(proto.Step{Op: proto.OpExec, Args: args, Timeout: timeout})
}

// Start starts a background process called name.
func (s *Scenario) Start(name string, args ...string) int {
	return s.Step(proto.Step{Op: proto.OpStart, Name: name, Args: args})
}

// Wait waits for process name to exit.
func (s *Scenario) Wait(name string, timeout time.Duration) int {
	return s.Step(proto.Step{Op: proto.OpWait, Name: name, Timeout: timeout})
}

// Signal sends sig ("INT", "KILL", "STOP", ...) to process name.
func (s *Scenario) Signal(name, sig string) int {
	return s.Step(proto.Step{Op: proto.OpSignal, Name: name, Signal: sig})
}

// Alive reports whether process name is still running.
func (s *Scenario) Alive(name string) int { return s.Step(proto.Step{Op: proto.OpAlive, Name: name}) }

// WaitFile waits until path reads value.
func (s *Scenario) WaitFile(path, value string, timeout time.Duration) int {
	return s.Step(proto.Step{Op: proto.OpWaitFile, Path: path, Value: value, Timeout: timeout})
}

// WaitFileNot waits until path no longer reads value.
func (s *Scenario) WaitFileNot(path, value string, timeout time.Duration) int {
	return s.Step(proto.Step{Op: proto.OpWaitFile, Path: path, Value: value, Negate: true, Timeout: timeout})
}

// Read reads files.
func (s *Scenario) Read(paths ...string) int {
	return s.Step(proto.Step{Op: proto.OpRead, Paths: paths})
}

// Sleep pauses the script.
func (s *Scenario) Sleep(d time.Duration) int {
	return s.Step(proto.Step{Op: proto.OpSleep, Duration: d})
}

// HTTPGet fetches a URL in the guest, retrying until timeout.
func (s *Scenario) HTTPGet(url string, timeout time.Duration) int {
	return s.Step(proto.Step{Op: proto.OpHTTPGet, URL: url, Timeout: timeout})
}

// sched_ext's sysfs files.
const (
	SCXState = "/sys/kernel/sched_ext/state"
	SCXOps   = "/sys/kernel/sched_ext/root/ops"
)

// bootTimeout bounds qemu start -> the agent's hello (normally 5-20 s under TCG).
const bootTimeout = 75 * time.Second

// kernelArgs: the console on ttyS0 with KERN_INFO (sched_ext's enable/disable lines) and
// above; a panic powers off at once (with -no-reboot). Under TCG the crypto self-tests and
// the speculation mitigations cost seconds of boot and a slower guest; neither is what these
// tests are about, and every arm of a VM comparison runs with the same arguments.
const kernelArgs = "console=ttyS0 loglevel=7 panic=-1 cryptomgr.notests mitigations=off"

// Run is a finished VM: what the agent reported and what the kernel printed.
type Run struct {
	Hello   proto.Result
	Steps   []proto.Result // indexed like the script; Kind "" if never reported
	Errors  []string       // agent errors outside steps
	Console string
	Wall    time.Duration // qemu start to exit
	Dir     string        // logs kept here
	// Attempts counts boots: more than 1 if the emulator flaked (see Boot).
	Attempts int
}

// Step returns the result of step i.
func (r *Run) Step(i int) proto.Result { return r.Steps[i] }

// Boot runs the scenario in a fresh VM and returns its results. It fails the test if the VM
// times out, the agent does not finish, a step fails unexpectedly, or the kernel log shows a
// problem; in every case the failure shows the relevant console and result lines.
func (e *Env) Boot(t testing.TB, s *Scenario) *Run {
	t.Helper()
	dir := filepath.Join(e.OutDir, sanitize(t.Name()))
	_ = os.RemoveAll(dir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	vm, err := e.prepare(s, dir)
	if err != nil {
		t.Fatal(err)
	}
	defer os.Remove(vm.initrd) // large, and rebuilt each time
	// Two failures are the emulator's, not the code under test's, and get another boot
	// (said loudly in the log, first console kept): a kernel that dies before the agent even
	// starts (it has not met mlsched yet), and an "Oops: int3" in kernel text, which is TCG's
	// cross-modifying-code race with several vCPU threads (-accel tcg,thread=multi): a vCPU
	// runs a stale int3 right after the kernel patched a static key (at boot, or when a
	// tracepoint or sched_ext is enabled). It hit about one boot in fifteen on a loaded host;
	// a real bug would come back on every attempt.
	const maxAttempts = 3
	var a *attempt
	for n := 1; ; n++ {
		a = vm.boot(n, nil)
		run := a.run
		noAgent := run.Hello.Kind == ""
		int3 := int3Oops.MatchString(run.Console)
		if !noAgent && !int3 || n == maxAttempts || noAgent && !int3 && n == 2 {
			break
		}
		findings := checkKernelLog(run.Console, nil)
		var first string
		if len(findings) > 0 {
			first = findings[0].context
		} else {
			first = tail(run.Console, 30)
		}
		_ = outfile.WriteFile(filepath.Join(dir, fmt.Sprintf("console.attempt%d.log", n)), []byte(run.Console))
		why := "the kernel failed before the guest agent started"
		if a.bootHung {
			why = fmt.Sprintf("the boot hung: no hello from the guest agent within %v", bootTimeout)
		}
		if int3 {
			why = "TCG int3 flake (Oops: int3 at a patched static key)"
		}
		t.Logf("vmtest %s: RETRY: %s (attempt %d of %d, %v wall; timed out: %t); booting again. This attempt:\n%s",
			s.Name, why, n, maxAttempts, run.Wall.Round(10*time.Millisecond), a.timedOut, first)
	}
	run := a.run
	t.Logf("vmtest %s: %v wall, guest uptime %.1fs at agent start; logs in %s", s.Name, run.Wall.Round(10*time.Millisecond), run.Hello.UptimeS, dir)
	if e.report(t, s, a) {
		t.FailNow()
	}
	return run
}

// report fails the test for everything that went wrong in a boot: the VM itself, the agent,
// the steps that were not allowed to fail, and the kernel log (checked whatever else
// happened: a splat explains most failures). It returns whether the failure is fatal.
func (e *Env) report(t testing.TB, s *Scenario, a *attempt) (fatal bool) {
	t.Helper()
	run := a.run
	if a.bootHung {
		t.Errorf("VM %s: the boot hung (no hello from the guest agent within %v; attempt %d). Console tail:\n%s", s.Name, bootTimeout, run.Attempts, tail(run.Console, 40))
		fatal = true
	} else if a.timedOut {
		t.Errorf("VM %s timed out after %v (killed). Last results:\n%s\nConsole tail:\n%s", s.Name, s.Timeout, run.resultTail(), tail(run.Console, 40))
		fatal = true
	} else if a.qerr != nil {
		t.Errorf("qemu: %v\n%s\nConsole tail:\n%s", a.qerr, a.qout.String(), tail(run.Console, 40))
		fatal = true
	}
	for _, msg := range run.Errors {
		t.Errorf("guest agent: %s", msg)
	}
	if run.Hello.Kind == "" {
		t.Errorf("the guest agent never reported (no hello on ttyS1). Console tail:\n%s", tail(run.Console, 60))
		fatal = true
	}
	for i, r := range run.Steps {
		st := s.steps[i]
		switch {
		case r.Kind == "":
			if !fatal {
				t.Errorf("step %d (%s %s%v) never reported", i, st.Op, st.Name, st.Args)
			}
		case !r.OK && !s.mayFail[i]:
			t.Errorf("step %d (%s %s%v) failed: %s\nstdout:\n%s\nstderr:\n%s", i, st.Op, st.Name, st.Args, r.Error, r.Stdout, r.Stderr)
		}
	}
	allow := append(append([]*regexp.Regexp(nil), s.AllowKernelLog...), s.ExpectKernelLog...)
	lines := consoleLines(run.Console)
	var excused map[int]bool
	if s.AllowDetachedStalls {
		hz := e.kernelHZ(s)
		excused = detachedStalls(lines, hz)
		for _, f := range checkKernelLines(lines, allow, nil) {
			if excused[f.line] && f.context != "" {
				t.Logf("kernel console line %d: an RCU stall while no sched_ext scheduler was enabled, its grace period begun after the disable (HZ %d): the default scheduler's, not the code under test's:\n%s", f.line+1, hz, f.context)
			}
		}
	}
	for _, f := range checkKernelLines(lines, allow, excused) {
		if f.context == "" {
			t.Errorf("kernel console line %d: %s", f.line+1, f.text)
		} else {
			t.Errorf("kernel console line %d: %s\n%s", f.line+1, f.text, f.context)
		}
	}
	for _, re := range s.ExpectKernelLog {
		if !re.MatchString(run.Console) {
			t.Errorf("kernel console never printed a line matching %q. Tail:\n%s", re, tail(run.Console, 30))
		}
	}
	return fatal
}

// kernelHZ is CONFIG_HZ of the kernel s boots, from its config; 100 (the smallest, which
// makes a stall's grace period the oldest) when the config does not say.
func (e *Env) kernelHZ(s *Scenario) int {
	b, err := os.ReadFile(filepath.Join(cmp.Or(s.KernelDir, e.KernelDir), "config"))
	if err != nil {
		return 100
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "CONFIG_HZ="); ok {
			if n, err := strconv.Atoi(strings.TrimSpace(v)); err == nil && n > 0 {
				return n
			}
		}
	}
	return 100
}

// vmFiles is one scenario's VM, ready to boot: its initramfs and qemu command line.
type vmFiles struct {
	e                        *Env
	s                        *Scenario
	dir                      string
	initrd                   string
	consolePath, resultsPath string
	args                     []string
}

// prepare writes the scenario's initramfs (the shared base plus an archive with the script
// and the scenario's files) into dir and builds qemu's command line; logs go to dir.
func (e *Env) prepare(s *Scenario, dir string) (*vmFiles, error) {
	// The agent's clock starts 5-20 s after qemu's (the boot), and it needs a moment to report
	// and power off: its deadline leaves 35 s of the host's timeout for both.
	script := proto.Script{Name: s.Name, Steps: s.steps, Deadline: s.Timeout - 35*time.Second}
	if script.Deadline < s.Timeout/3 {
		script.Deadline = s.Timeout / 3
	}
	js, err := json.MarshalIndent(script, "", "  ")
	if err != nil {
		return nil, err
	}
	files := map[string]cpioData{proto.ScriptPath: {perm: 0o644, data: js}}
	for p, d := range s.Files {
		files[p] = cpioData{perm: 0o644, data: d}
	}
	for p, d := range s.Programs {
		files[p] = cpioData{perm: 0o755, data: d}
	}
	var extra bytes.Buffer
	cw := newCpioWriter(&extra)
	writeTree(cw, nil, files)
	if err := cw.Close(); err != nil {
		return nil, err
	}
	vm := &vmFiles{e: e, s: s, dir: dir, initrd: filepath.Join(dir, "initrd"),
		consolePath: filepath.Join(dir, "console.log"), resultsPath: filepath.Join(dir, "results.jsonl")}
	// The kernel looks for a following uncompressed archive only at 4-byte aligned offsets
	// (zeros in between are skipped): pad the compressed base.
	img := append([]byte(nil), e.baseInitrd...)
	img = append(img, make([]byte, (512-len(img)%512)%512)...)
	if err := outfile.WriteFile(vm.initrd, append(img, extra.Bytes()...)); err != nil {
		return nil, err
	}
	// TCG only (ENVIRONMENT.md: /dev/kvm cannot run guests here). -nodefaults: no NIC or VGA
	// to probe. ttyS0 = console, ttyS1 = results. panic=-1 + -no-reboot: a panic ends qemu.
	vm.args = []string{"-nodefaults", "-no-user-config",
		"-accel", e.Accel, "-cpu", "max", "-m", "1G", "-smp", "2",
		"-kernel", filepath.Join(cmp.Or(s.KernelDir, e.KernelDir), "vmlinuz"), "-initrd", vm.initrd,
		"-append", strings.TrimSpace(kernelArgs + " " + os.Getenv("MLSCHED_VMTEST_APPEND") + " mlsched.scenario=" + s.Name),
		"-display", "none", "-monitor", "none", "-no-reboot",
		"-serial", "file:" + vm.consolePath, "-serial", "file:" + vm.resultsPath,
	}
	return vm, nil
}

// attempt is one boot of a prepared VM.
type attempt struct {
	run      *Run
	qerr     error
	qout     bytes.Buffer
	timedOut bool   // the scenario's timeout passed and qemu was killed
	bootHung bool   // no hello from the agent within bootTimeout: qemu was killed
	aborted  string // why boot's watch stopped qemu ("" if it did not)
}

// boot runs qemu once (the console and results files of an earlier attempt are replaced) and
// parses what the VM reported. A boot that hangs is cut short. watch (nil: none) sees the
// console and the results so far every 250 ms; an answer other than "" stops qemu (a caller's
// way to end a VM that can no longer be trusted) and is kept as attempt.aborted.
func (vm *vmFiles) boot(n int, watch func(console, results []byte) string) *attempt {
	_ = os.Remove(vm.consolePath)
	_ = os.Remove(vm.resultsPath)
	a := &attempt{}
	ctx, cancel := context.WithTimeout(context.Background(), vm.s.Timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, vm.e.Qemu, vm.args...)
	cmd.Stdout, cmd.Stderr = &a.qout, &a.qout
	start := time.Now()
	// A boot that hangs (TCG sometimes stalls early, e.g. right after SMP bring-up) is
	// cut short: the agent says hello within seconds of a good boot.
	var bootHung atomic.Bool
	var aborted atomic.Value
	aborted.Store("")
	stopWatch := make(chan struct{})
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		deadline := time.After(bootTimeout)
		tick := time.NewTicker(250 * time.Millisecond)
		defer tick.Stop()
		hello := false
		for {
			select {
			case <-stopWatch:
				return
			case <-tick.C:
				if !hello {
					if b, err := os.ReadFile(vm.resultsPath); err == nil && bytes.Contains(b, []byte(`"kind":"hello"`)) {
						hello, deadline = true, nil
					}
				}
				if watch != nil {
					con, _ := os.ReadFile(vm.consolePath)
					res, _ := os.ReadFile(vm.resultsPath)
					if why := watch(con, res); why != "" {
						aborted.Store(why)
						cancel()
						return
					}
				} else if hello {
					return
				}
			case <-deadline:
				bootHung.Store(true)
				cancel()
				return
			}
		}
	}()
	a.qerr = cmd.Run()
	close(stopWatch)
	<-watched
	a.bootHung, a.aborted = bootHung.Load(), aborted.Load().(string)
	a.timedOut = ctx.Err() != nil && !a.bootHung && a.aborted == ""
	run := &Run{Wall: time.Since(start), Dir: vm.dir, Steps: make([]proto.Result, len(vm.s.steps)), Attempts: n}
	con, _ := os.ReadFile(vm.consolePath)
	run.Console = strings.ReplaceAll(string(con), "\r", "")
	if err := run.parseResults(vm.resultsPath); err != nil {
		run.Errors = append(run.Errors, "results: "+err.Error())
	}
	a.run = run
	return a
}

func (r *Run) parseResults(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	done := false
	for sc.Scan() {
		line := bytes.TrimSpace(bytes.ReplaceAll(sc.Bytes(), []byte("\r"), nil))
		if len(line) == 0 {
			continue
		}
		var res proto.Result
		if err := json.Unmarshal(line, &res); err != nil {
			r.Errors = append(r.Errors, fmt.Sprintf("unparsable result line %q: %v", truncate(string(line), 200), err))
			continue
		}
		switch res.Kind {
		case "hello":
			r.Hello = res
		case "step":
			if res.Step >= 0 && res.Step < len(r.Steps) {
				r.Steps[res.Step] = res
			}
		case "error":
			r.Errors = append(r.Errors, res.Error)
		case "done":
			done = true
		}
	}
	if err := sc.Err(); err != nil {
		return err
	}
	if !done && r.Hello.Kind != "" {
		return errors.New("the guest agent did not report done")
	}
	return nil
}

func (r *Run) resultTail() string {
	var b strings.Builder
	for i, s := range r.Steps {
		if s.Kind == "" {
			fmt.Fprintf(&b, "  step %d: (no result)\n", i)
			continue
		}
		fmt.Fprintf(&b, "  step %d %s %s ok=%t at=%v %s\n", i, s.Op, s.Name, s.OK, s.At.Round(time.Millisecond), s.Error)
	}
	return b.String()
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return "  " + strings.Join(lines, "\n  ")
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

func sanitize(name string) string {
	return strings.Map(func(r rune) rune {
		if r == '/' || r == ' ' || r == ':' {
			return '_'
		}
		return r
	}, name)
}
