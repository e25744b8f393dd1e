package vmtest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mlsched/mlsched/features/outfile"
	"github.com/mlsched/mlsched/vmtest/internal/proto"
)

// TestVMBench is `make vmbench`, the project's yardstick: in one VM (booted again only when
// TCG's int3 race or a hang ends it), every arm — no sched_ext scheduler (EEVDF), the kernel's
// example schedulers built from the booted kernel's own source (scx_simple, scx_simple -f,
// scx_userland) and mlsched's policies — runs every workload (rt-tests hackbench with pipes and
// processes and with sockets and threads, a stress-ng mix, mlsched's pool workload), for
// MLSCHED_VMBENCH_ROUNDS rounds (5), the arms' order shuffled per round from a recorded seed.
// It prints a table per metric (median, spread, ratio of medians to default and to scx_simple
// with a bootstrap interval) and writes vmbench.json, vmbench.svg and vmbench.txt to the
// harness's out dir. A measurement, not a claim: opt-in with MLSCHED_VMBENCH=1.
//
// TCG does not model caches: the numbers show cost and fairness, never the cache benefit of
// keeping a task local.
func TestVMBench(t *testing.T) {
	if os.Getenv("MLSCHED_VMBENCH") == "" {
		t.Skip("a measurement, not a claim: run `make vmbench` (MLSCHED_VMBENCH=1)")
	}
	// The user asked for the benchmark: an environment that cannot be prepared fails.
	t.Setenv("CI", "true")
	cfg, err := benchConfigFrom(os.Getenv, uint64(time.Now().UnixNano()))
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	e := Setup(t)
	be := *e
	be.Accel = cfg.Accel

	if out, err := runCmd(e.Root, nil, filepath.Join(e.Root, "vmtest", "vmbench-deps.sh")); err != nil {
		t.Fatalf("vmtest/vmbench-deps.sh: %v\n%s", err, out)
	}
	progs := map[string]string{}
	for _, p := range []string{"hackbench", "stress-ng"} {
		path, err := exec.LookPath(p)
		if err != nil {
			t.Fatal(err)
		}
		progs["/usr/bin/"+p] = path
	}
	arms := []benchArm{{Name: refDefault}}
	skipped := map[string]string{}
	peerDir, peerSource, err := fetchPeers(e.Root, e.KernelDir)
	if err != nil {
		t.Errorf("the kernel's example schedulers: %v", err)
		for _, a := range peerArms() {
			skipped[a.Name] = "not built: " + err.Error()
		}
	} else {
		arms = append(arms, peerArms()...)
		for _, p := range []string{"scx_simple", "scx_userland"} {
			progs["/"+p] = filepath.Join(peerDir, p)
		}
	}
	code, usage := e.Probe("run", "--help")
	if code != 0 && !strings.Contains(usage, "-policy") {
		t.Fatalf("mlsched run --help: exit %d\n%s", code, usage)
	}
	// The model trained on captures of these workloads in this VM (`make vmbench-model`), for
	// the arm "mlsched vm-model": in the guest as benchModelGuest, root-owned 0644 like
	// /default.bin (run refuses a model a non-root user could change).
	vmModel, vmModelErr := os.ReadFile(filepath.Join(e.Root, benchModelFile))
	if vmModelErr != nil && !errors.Is(vmModelErr, fs.ErrNotExist) {
		t.Fatal(vmModelErr)
	}
	mlArms, mlSkipped := mlschedArms(usage, modelSource(e), vmModelErr == nil)
	arms = append(arms, mlArms...)
	for k, v := range mlSkipped {
		skipped[k] = v
	}
	arms = keepNamed(arms, cfg.Arms, func(a benchArm) string { return a.Name })
	if len(cfg.Arms) == 0 { // the cost arms only when asked for by name
		arms = slices.DeleteFunc(arms, func(a benchArm) bool { return a.Extra })
	}
	works := benchWorkloads(cfg)
	if len(arms) == 0 || len(works) == 0 {
		t.Fatalf("nothing to run: arms %v, workloads %v (MLSCHED_VMBENCH_ARMS, MLSCHED_VMBENCH_WORKLOADS)", cfg.Arms, cfg.Workloads)
	}
	programs, err := hostPrograms(progs)
	if err != nil {
		t.Fatal(err)
	}

	rep := newBenchReport(arms, works)
	rep.Commit, rep.Qemu, rep.Accel = gitCommit(e.Root), qemuVersion(e.Qemu), cfg.Accel
	rep.Kernel, rep.Seed, rep.Rounds, rep.Peers = e.Kernel, cfg.Seed, cfg.Rounds, peerSource
	rep.Date = start.UTC().Format(time.RFC3339)
	for k, v := range skipped {
		rep.Skipped[k] = v
		fmt.Printf("vmbench: SKIP arm %s: %s\n", k, v)
	}
	plan := benchPlan(len(arms), cfg.Rounds, cfg.Seed)
	rep.Order = make([][]string, cfg.Rounds)
	for _, u := range plan {
		rep.Order[u.Round] = append(rep.Order[u.Round], arms[u.Arm].Name)
	}
	fmt.Printf("vmbench: %d arms x %d workloads x %d rounds in one VM (%s -accel %s), seed %d (MLSCHED_VMBENCH_SEED to repeat)\n",
		len(arms), len(works), cfg.Rounds, e.Kernel, cfg.Accel, cfg.Seed)

	outDir := filepath.Join(e.OutDir, "vmbench")
	_ = os.RemoveAll(outDir)
	again := map[int]bool{} // units run again after a VM restart cut them short
	for next, boot := 0, 1; next < len(plan); boot++ {
		s := NewScenario(fmt.Sprintf("vmbench-%d", boot))
		s.Programs = programs
		if vmModelErr == nil {
			s.Files[benchModelGuest] = vmModel
		}
		s.Timeout = bootTimeout + time.Minute
		var units []unitSteps
		for p := next; p < len(plan); p++ {
			arm := arms[plan[p].Arm]
			units = append(units, addUnit(s, p, arm, works))
			s.Timeout += unitBudget(arm, works)
		}
		dir := filepath.Join(outDir, fmt.Sprintf("boot%d", boot))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		vm, err := be.prepare(s, dir)
		if err != nil {
			t.Fatal(err)
		}
		f := &benchFollower{start: start, boot: boot, plan: plan, arms: arms, works: works, units: units,
			steps: make([]proto.Result, len(s.steps)), stall: maxStepTimeout(s) + 90*time.Second}
		a := vm.boot(boot, f.watch)
		_ = os.Remove(vm.initrd)
		if a.run.Hello.Kernel != "" {
			rep.Kernel = a.run.Hello.Kernel
		}
		var cut int
		next, cut = resumeAt(a.run.Steps, units, again)
		for _, u := range units {
			if u.Plan >= next {
				break
			}
			unit := plan[u.Plan]
			arm := arms[unit.Arm]
			res := collectUnit(a.run.Steps, u, arm, works)
			if arm.Ops == "mlsched" && u.Exit >= 0 {
				rep.account(arm.Name, a.run.Steps[u.Exit].Stdout)
			}
			for metric, v := range res.Values {
				rep.add(metric, arm.Name, benchSample{Round: unit.Round, Value: v})
			}
			for _, p := range res.Problems {
				rep.Problems = append(rep.Problems, fmt.Sprintf("round %d, %s: %s", unit.Round+1, arm.Name, p))
			}
		}
		// After TCG's int3 oops the console is that oops' splat and the panic.
		console := a.run.Console
		if loc := int3Oops.FindStringIndex(console); loc != nil {
			console = console[:loc[0]]
		}
		for _, fnd := range checkKernelLog(console, nil) {
			rep.KernelLog = append(rep.KernelLog, fmt.Sprintf("boot %d: %s", boot, strings.TrimSpace(fnd.text)))
		}
		if cut < 0 {
			fmt.Printf("vmbench: boot %d ran its %d units in %v\n", boot, len(units), a.run.Wall.Round(time.Second))
			break
		}
		cutUnit := plan[units[cut].Plan]
		if next == units[cut].Plan && a.run.Steps[units[cut].First].Kind != "" {
			again[next] = true
		} else if next != units[cut].Plan && !slices.ContainsFunc(units[cut].Work, func(w int) bool { return a.run.Steps[w].Kind != "" }) {
			rep.Problems = append(rep.Problems, fmt.Sprintf("round %d, %s: cut short by a VM restart twice, not run again", cutUnit.Round+1, arms[cutUnit.Arm].Name))
		}
		why := bootEnd(a)
		if next >= len(plan) {
			// The last unit's workloads were done: nothing is left to boot again for.
			rep.Notes = append(rep.Notes, fmt.Sprintf("boot %d ended early in the last unit (round %d, %s) after its workloads: %s",
				boot, cutUnit.Round+1, arms[cutUnit.Arm].Name, why))
			fmt.Printf("vmbench: boot %d ended early (%s) in the last unit, after its workloads; nothing left to run\n", boot, why)
			break
		}
		rep.Restarts++
		rep.RestartReasons = append(rep.RestartReasons, fmt.Sprintf("boot %d: %s", boot, why))
		_ = outfile.WriteFile(filepath.Join(dir, "why-restarted.txt"), []byte(why+"\n"))
		if rep.Restarts > cfg.MaxRestarts {
			for _, u := range plan[next:] {
				rep.Problems = append(rep.Problems, fmt.Sprintf("round %d, %s: not run (more than %d VM restarts)", u.Round+1, arms[u.Arm].Name, cfg.MaxRestarts))
			}
			t.Errorf("vmbench: gave up after %d VM restarts (MLSCHED_VMBENCH_MAX_RESTARTS); last: %s", rep.Restarts, why)
			break
		}
		fmt.Printf("vmbench: RESTART %d: boot %d ended early (%s) after %v in unit %d (round %d, %s); resuming at unit %d of %d (logs in %s)\n",
			rep.Restarts, boot, why, a.run.Wall.Round(time.Second), units[cut].Plan+1, cutUnit.Round+1, arms[cutUnit.Arm].Name, next+1, len(plan), dir)
	}

	rep.fillStats()
	text := rep.tables()
	fmt.Printf("\n%s\n", text)
	js, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	var svg bytes.Buffer
	if err := rep.writeSVG(&svg); err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string][]byte{"vmbench.json": append(js, '\n'), "vmbench.svg": svg.Bytes(), "vmbench.txt": []byte(text)} {
		p := filepath.Join(e.OutDir, name)
		if err := outfile.WriteFile(p, data); err != nil {
			t.Error(err)
		}
		fmt.Printf("vmbench: wrote %s\n", p)
	}
	fmt.Printf("vmbench: done in %v; VM logs in %s\n", time.Since(start).Round(time.Second), outDir)
	for _, name := range rep.Arms {
		if n := len(rep.Workloads[rep.Metrics[0]].Arms[name].Runs); n == 0 {
			t.Errorf("arm %s: no run counts (see \"runs that do not count\" above)", name)
		}
	}
}

// bootEnd says why a VM stopped before its script's end.
func bootEnd(a *attempt) string {
	switch {
	case int3Oops.MatchString(a.run.Console):
		return "TCG int3 oops (a stale int3 right after the kernel patched a static key)"
	case a.aborted != "":
		return a.aborted
	case a.bootHung:
		return fmt.Sprintf("the boot hung (no hello from the guest agent within %v)", bootTimeout)
	case a.timedOut:
		return "the VM's timeout passed"
	case a.run.Hello.Kind == "":
		return "the kernel died before the guest agent started: " + strings.TrimSpace(tail(a.run.Console, 3))
	}
	if f := checkKernelLog(a.run.Console, nil); len(f) > 0 {
		return "the guest died: " + strings.TrimSpace(f[0].text)
	}
	return fmt.Sprintf("the VM stopped early (qemu: %v; agent: %s)", a.qerr, strings.Join(a.run.Errors, "; "))
}

// maxStepTimeout is the longest any one step may take.
func maxStepTimeout(s *Scenario) time.Duration {
	d := attachTimeout
	for _, st := range s.steps {
		d = max(d, st.Timeout, st.Duration)
	}
	return d
}

// benchFollower watches a VM as it runs: it stops it on TCG's int3 oops (the guest cannot be
// trusted after it) or when no step has reported for longer than any step may take, and
// prints a line per finished unit.
type benchFollower struct {
	start    time.Time
	boot     int
	plan     []benchUnit
	arms     []benchArm
	works    []benchWorkload
	units    []unitSteps
	steps    []proto.Result
	stall    time.Duration
	read     int // bytes of the results file parsed
	lastStep time.Time
	nextUnit int
}

func (f *benchFollower) watch(console, results []byte) string {
	if f.lastStep.IsZero() {
		f.lastStep = time.Now()
	}
	if int3Oops.Match(console) {
		return "int3"
	}
	for {
		nl := bytes.IndexByte(results[f.read:], '\n')
		if nl < 0 {
			break
		}
		line := bytes.TrimSpace(results[f.read : f.read+nl])
		f.read += nl + 1
		var r proto.Result
		if json.Unmarshal(line, &r) != nil || r.Kind != "step" || r.Step < 0 || r.Step >= len(f.steps) {
			continue
		}
		f.steps[r.Step] = r
		f.lastStep = time.Now()
	}
	for f.nextUnit < len(f.units) && f.steps[f.units[f.nextUnit].Last].Kind != "" {
		f.report(f.units[f.nextUnit])
		f.nextUnit++
	}
	if time.Since(f.lastStep) > f.stall {
		return fmt.Sprintf("no step reported for %v: the guest hung", f.stall)
	}
	return ""
}

func (f *benchFollower) report(u unitSteps) {
	unit := f.plan[u.Plan]
	arm := f.arms[unit.Arm]
	res := collectUnit(f.steps, u, arm, f.works)
	var parts []string
	for _, w := range f.works {
		for _, m := range w.Metrics {
			if v, ok := res.Values[m.Name]; ok {
				parts = append(parts, fmt.Sprintf("%s %s", strings.TrimPrefix(m.Name, "stress-ng/"), num(v)))
			}
		}
	}
	status := strings.Join(parts, ", ")
	if len(res.Problems) > 0 {
		status += " | " + strings.Join(res.Problems, "; ")
	}
	fmt.Printf("  [%s] boot %d, round %d, unit %d/%d, %s: %s\n", clock(time.Since(f.start)), f.boot, unit.Round+1,
		u.Plan+1, len(f.plan), arm.Name, status)
}

// gitCommit is HEAD, with "+dirty" if tracked files differ from it (the binary under test is
// built from the working tree).
func gitCommit(root string) string {
	out, err := exec.Command("git", "-C", root, "rev-parse", "--short=12", "HEAD").Output()
	if err != nil {
		return "unknown"
	}
	c := strings.TrimSpace(string(out))
	if st, err := exec.Command("git", "-C", root, "status", "--porcelain", "--untracked-files=no").Output(); err == nil && len(bytes.TrimSpace(st)) > 0 {
		c += "+dirty"
	}
	return c
}

func qemuVersion(qemu string) string {
	out, err := exec.Command(qemu, "--version").Output()
	if err != nil {
		return "qemu (version unknown)"
	}
	first, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	return "qemu " + strings.TrimPrefix(first, "QEMU emulator version ")
}
