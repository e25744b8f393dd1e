package vmtest

import (
	"encoding/json"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// workloadArgs is the guest's mixed workload for d: spinners, 1 ms sleepers and pipe
// ping-pong pairs, more threads than the VM's 2 CPUs.
func workloadArgs(d time.Duration) []string {
	return []string{"/init", "workload", "-duration", d.String(), "-spin", "4", "-sleep", "4", "-pipes", "2"}
}

// decodeWorkload parses the workload's report and checks that every kind of thread made
// progress: a starved thread means the scheduler lost a task.
func decodeWorkload(t *testing.T, what, stdout string) workloadReport {
	t.Helper()
	var w workloadReport
	if err := json.Unmarshal([]byte(strings.TrimSpace(stdout)), &w); err != nil {
		t.Fatalf("%s: workload report %q: %v", what, stdout, err)
	}
	if w.SpinIters == 0 || w.SleepWakeups == 0 || w.PipeRoundTrips == 0 || w.MinThreadProgress == 0 {
		t.Errorf("%s: some workload thread made no progress: %+v", what, w)
	}
	return w
}

// workloadReport mirrors vmtest/guest's WorkloadReport.
type workloadReport struct {
	Threads           int     `json:"threads"`
	SpinIters         uint64  `json:"spin_iters"`
	SleepWakeups      uint64  `json:"sleep_wakeups"`
	PipeRoundTrips    uint64  `json:"pipe_round_trips"`
	ElapsedS          float64 `json:"elapsed_s"`
	MinThreadProgress uint64  `json:"min_thread_progress"`
}

// TestVMBoot: the harness itself. The sid kernel boots, offers sched_ext (idle), the agent
// reports, and the static mlsched binary runs in the guest. Also a baseline for the
// workload under the kernel's default scheduler.
func TestVMBoot(t *testing.T) {
	e := Setup(t)
	s := NewScenario("boot")
	state := s.Read(SCXState, "/sys/kernel/sched_ext/switch_all")
	version := s.Exec(10*time.Second, "/mlsched", "version")
	wl := s.Exec(30*time.Second, workloadArgs(2*time.Second)...)
	r := e.Boot(t, s)

	if !strings.HasPrefix(r.Hello.Kernel, "7.") && !strings.Contains(r.Hello.Kernel, e.Kernel) {
		t.Errorf("guest kernel %q, want the fetched %q", r.Hello.Kernel, e.Kernel)
	}
	if r.Hello.CPUs != 2 {
		t.Errorf("guest has %d CPUs, want 2", r.Hello.CPUs)
	}
	if r.Hello.Values["btf"] != "present" {
		t.Errorf("guest kernel has no /sys/kernel/btf/vmlinux")
	}
	if got := r.Step(state).Values[SCXState]; got != "disabled" {
		t.Errorf("%s = %q before any scheduler, want disabled", SCXState, got)
	}
	v := r.Step(version)
	if v.ExitCode != 0 || !strings.HasPrefix(v.Stdout, "mlsched ") || !strings.Contains(v.Stdout, "schema ") {
		t.Errorf("mlsched version in the guest: exit %d, stdout %q, stderr %q", v.ExitCode, v.Stdout, v.Stderr)
	}
	// Only a sanity check: the baseline's fairness is the kernel's business.
	var w workloadReport
	if err := json.Unmarshal([]byte(r.Step(wl).Stdout), &w); err != nil || r.Step(wl).ExitCode != 0 || w.SpinIters == 0 {
		t.Errorf("workload under the default scheduler: exit %d, report %q (%v), stderr %q", r.Step(wl).ExitCode, r.Step(wl).Stdout, err, r.Step(wl).Stderr)
	}
	t.Logf("boot-to-agent %.2fs (guest uptime), VM wall %v; workload under the default scheduler: %+v",
		r.Hello.UptimeS, r.Wall.Round(10*time.Millisecond), w)
}

// TestVMCapture: `mlsched capture` loads and attaches its raw_tp probes on the 7.2 kernel
// (a second kernel besides the host's) and records samples of a running workload; `inspect`
// reads them back.
func TestVMCapture(t *testing.T) { captureScenario(t, "capture", "", "cast hooks") }

// Capture on Debian's release kernel (bookworm's 6.1: no sched_ext, BTF): the probes load and
// sample on a kernel older than the host's 6.18 and the VM's 7.2 (CO-RE fallbacks included).
func TestVMCaptureOldKernel(t *testing.T) {
	e := Setup(t)
	out, err := exec.Command(filepath.Join(e.Root, "vmtest", "fetch-old-kernel.sh")).Output()
	if err != nil {
		t.Fatalf("fetch-old-kernel.sh: %v", err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	// 6.1: prev_state from the tracepoint (>= 5.18), no bpf_rdonly_cast (6.2).
	captureScenario(t, "capture-old", lines[len(lines)-1], "prev-state hooks")
}

// captureScenario captures 3 s of the workload in a VM booted on kernelDir ("" for the
// sched_ext kernel) and checks that samples were recorded and read back, with the hook
// variant the kernel should get (the summary's "probes" line starts with hooks).
func captureScenario(t *testing.T, name, kernelDir, hooks string) {
	e := Setup(t)
	if !e.HasCommand("capture", "-duration") {
		t.Skip("waiting for `mlsched capture`")
	}
	if !e.HasCommand("inspect", "-json") {
		t.Skip("waiting for `mlsched inspect --json`")
	}
	s := NewScenario(name)
	s.KernelDir = kernelDir
	s.Timeout = 120 * time.Second
	// Loading the probes takes many seconds under TCG (BTF, verifier), more with a busy
	// guest: let capture start the workload once it is attached (system-wide, not
	// --only-command), so the 3 s window sees it.
	capture := s.Exec(90*time.Second, append([]string{"/mlsched", "capture", "-o", "/tmp/t.trace", "--duration", "3s", "--progress", "never", "--"},
		workloadArgs(5*time.Second)...)...)
	inspect := s.Exec(30*time.Second, "/mlsched", "inspect", "/tmp/t.trace", "--json")
	r := e.Boot(t, s)

	c := r.Step(capture)
	if c.ExitCode != 0 {
		t.Fatalf("mlsched capture in the VM: exit %d\nstdout:\n%s\nstderr:\n%s", c.ExitCode, c.Stdout, c.Stderr)
	}
	if !strings.Contains(c.Stdout, "  probes     "+hooks) {
		t.Errorf("capture on kernel %s: want %q in the summary:\n%s", r.Hello.Kernel, hooks, c.Stdout)
	}
	// The workload's report is in capture's stdout, after capture's own summary.
	found := false
	for _, line := range strings.Split(c.Stdout, "\n") {
		if strings.HasPrefix(line, "{") && strings.Contains(line, `"pipe_round_trips"`) {
			decodeWorkload(t, "during capture", line)
			found = true
		}
	}
	if !found {
		t.Errorf("the workload under capture did not report:\n%s", c.Stdout)
	}
	in := r.Step(inspect)
	if in.ExitCode != 0 {
		t.Fatalf("mlsched inspect: exit %d\nstdout:\n%s\nstderr:\n%s", in.ExitCode, in.Stdout, in.Stderr)
	}
	var report map[string]any
	if err := json.Unmarshal([]byte(in.Stdout), &report); err != nil {
		t.Fatalf("mlsched inspect --json: %v\n%s", err, in.Stdout)
	}
	samples, ok := findNumber(report, "samples")
	if !ok {
		t.Fatalf("mlsched inspect --json has no \"samples\" count:\n%s", in.Stdout)
	}
	if samples <= 0 {
		t.Errorf("capture on kernel %s recorded %v samples, want > 0\ncapture stderr:\n%s\ninspect:\n%s", r.Hello.Kernel, samples, c.Stderr, in.Stdout)
	}
	t.Logf("capture on %s: %v samples in 3s (capture took %v)", r.Hello.Kernel, samples, c.Elapsed.Round(time.Millisecond))
}

// findNumber looks for key in a JSON object, at the top level or one level down.
func findNumber(m map[string]any, key string) (float64, bool) {
	if v, ok := m[key]; ok {
		return toFloat(v)
	}
	for _, v := range m {
		if sub, ok := v.(map[string]any); ok {
			if x, ok := sub[key]; ok {
				return toFloat(x)
			}
		}
	}
	return 0, false
}

func toFloat(v any) (float64, bool) {
	switch x := v.(type) {
	case float64:
		return x, true
	case string:
		f, err := strconv.ParseFloat(x, 64)
		return f, err == nil
	}
	return 0, false
}

func decodeJSON(s string, v any) bool {
	return json.Unmarshal([]byte(strings.TrimSpace(s)), v) == nil
}
