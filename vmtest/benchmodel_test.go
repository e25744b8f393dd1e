package vmtest

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/mlsched/mlsched/features/outfile"
)

// `make vmbench-model`: a model trained on captures of vmbench's own workloads, made inside the
// VM the benchmark runs in (Debian sid's 7.2 sched_ext kernel under qemu TCG), for the arm
// "mlsched vm-model" (vmbench.go's mlschedArms). The default model was trained on this host's
// workloads and trips the live-accuracy guard on vmbench's; this one says what the net does
// with a model of the workload it schedules.
//
// Two VM boots, "train" and "heldout", each capture every workload of benchWorkloads ROUNDS
// times (`mlsched capture --max-rate 0 --only-command -- WORKLOAD`, the default horizon), by default
// while `mlsched run --policy vtime` schedules (the base queue the model arm runs over: under
// sched_ext nothing preempts R when W wakes, under EEVDF a wakeup may, and that changes the
// label). The guest has no disk and no shell: the traces leave it as one tar archive written
// by GNU tar to a third serial port (/dev/ttyS2, put in raw mode with stty first), checked
// against the guest's sha256sum. On the host, `mlsched train` (hidden 16, the traces' horizon)
// learns from the "train" captures only (its own validation: the last --val-frac of each by
// time), and `mlsched eval --infer kernel` scores the model, and the default model beside it,
// on the "heldout" captures, which the training never saw. Outputs: vmtest/testdata/
// vmbench-model.bin and vmbench-model.txt (the report), and in vmtest/out/vmbench-model/ the
// traces, the logs and the VM consoles.
//
// Knobs (MLSCHED_VMBENCH_MODEL_<name>): ROUNDS (2: captures of each workload per boot),
// HACKBENCH_LOOPS (6000), STRESS_DURATION (20s), POOL_DURATION (20s), WORKLOADS (all), ACCEL (tcg,thread=multi, as vmbench), UNDER (vtime or
// default: the kernel's EEVDF), EPOCHS (20), SEED (1), THRESHOLD_FOR (accuracy: the guard
// compares live accuracy with the majority class, so the threshold is the one that maximises
// accuracy on the validation data; balanced is train's default), REUSE=1 (train again on the
// traces already in the out dir, no VM).
func TestVMBenchModel(t *testing.T) {
	if os.Getenv("MLSCHED_VMBENCH_MODEL") == "" {
		t.Skip("makes vmtest/testdata/vmbench-model.bin: run `make vmbench-model` (MLSCHED_VMBENCH_MODEL=1)")
	}
	t.Setenv("CI", "true") // asked for: an environment that cannot be prepared fails
	cfg, err := benchModelConfigFrom(os.Getenv)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	e := Setup(t)
	mls := filepath.Join(e.BinDir, "mlsched") // static: runs on the host too
	if !e.HasCommand("capture", "-only-command", "-max-rate") || !e.HasCommand("train", "-hidden", "-threshold-for") ||
		!e.HasCommand("eval", "-infer", "-json") {
		t.Fatal("this mlsched lacks capture --only-command/--max-rate, train --threshold-for or eval --infer --json")
	}
	outDir := filepath.Join(e.OutDir, "vmbench-model")
	works := benchWorkloads(cfg.Bench)
	if len(works) == 0 {
		t.Fatalf("no workloads (MLSCHED_VMBENCH_MODEL_WORKLOADS=%q)", strings.Join(cfg.Bench.Workloads, ","))
	}
	binary := "built from the working tree (" + gitCommit(e.Root) + ")"
	if p := os.Getenv("MLSCHED_VMTEST_MLSCHED"); p != "" {
		v, _ := exec.Command(mls, "version").Output()
		first, _, _ := strings.Cut(string(v), "\n")
		binary = fmt.Sprintf("MLSCHED_VMTEST_MLSCHED=%s (%s)", p, strings.TrimSpace(first))
	}
	info := benchModelInfo{Binary: binary, Commit: gitCommit(e.Root), Qemu: qemuVersion(e.Qemu), Kernel: e.Kernel, Date: start.UTC().Format(time.RFC3339), Cfg: cfg}
	passes := []string{"train", "heldout"}
	traces := map[string][]string{} // pass -> host trace paths, round by round in works order
	if cfg.Reuse {
		for _, pass := range passes {
			for r := range cfg.Rounds {
				for _, w := range works {
					p := filepath.Join(outDir, benchTraceName(pass, w, r))
					if _, err := os.Stat(p); err != nil {
						t.Fatalf("MLSCHED_VMBENCH_MODEL_REUSE: %v", err)
					}
					traces[pass] = append(traces[pass], p)
				}
			}
		}
		if b, err := os.ReadFile(filepath.Join(outDir, "captures.json")); err == nil {
			_ = json.Unmarshal(b, &info.Captures)
		}
		info.Reused = true
	} else {
		if out, err := runCmd(e.Root, nil, filepath.Join(e.Root, "vmtest", "vmbench-deps.sh")); err != nil {
			t.Fatalf("vmtest/vmbench-deps.sh: %v\n%s", err, out)
		}
		progs := map[string]string{}
		for _, p := range []string{"hackbench", "stress-ng", "tar", "stty", "sha256sum"} {
			path, err := exec.LookPath(p)
			if err != nil {
				t.Fatal(err)
			}
			progs["/usr/bin/"+p] = path
		}
		programs, err := hostPrograms(progs)
		if err != nil {
			t.Fatal(err)
		}
		_ = os.RemoveAll(outDir)
		if err := os.MkdirAll(outDir, 0o755); err != nil {
			t.Fatal(err)
		}
		for _, pass := range passes {
			paths, caps := captureBenchWorkloads(t, e, cfg, works, programs, pass, outDir)
			traces[pass] = paths
			info.Captures = append(info.Captures, caps...)
		}
		if js, err := json.MarshalIndent(info.Captures, "", "  "); err == nil {
			_ = outfile.WriteFile(filepath.Join(outDir, "captures.json"), append(js, '\n'))
		}
	}
	for _, pass := range passes {
		for _, p := range traces[pass] {
			var in struct {
				Samples   int64   `json:"samples"`
				Positives int64   `json:"positives"`
				Ratio     float64 `json:"positive_ratio"`
				Drops     int64   `json:"drops"`
				Complete  bool    `json:"complete"`
			}
			out, err := exec.Command(mls, "inspect", "--json", p).Output()
			if err != nil || json.Unmarshal(out, &in) != nil || !in.Complete || in.Samples == 0 {
				t.Fatalf("mlsched inspect --json %s: %v, %+v\n%s", p, err, in, out)
			}
			info.Traces = append(info.Traces, benchTraceInfo{Pass: pass, File: filepath.Base(p), Samples: in.Samples, Positives: in.Positives, Drops: in.Drops})
		}
	}

	// Train on the first boot's captures only.
	model := filepath.Join(outDir, "vmbench-model.bin")
	info.TrainArgs = []string{"train", "-o", model, "--hidden", "16", "--seed", strconv.FormatUint(cfg.Seed, 10),
		"--epochs", strconv.Itoa(cfg.Epochs), "--threshold-for", cfg.ThresholdFor, "--plot", filepath.Join(outDir, "curves.svg")}
	info.TrainArgs = append(info.TrainArgs, traces["train"]...)
	t0 := time.Now()
	trainOut, err := exec.Command(mls, info.TrainArgs...).CombinedOutput()
	_ = outfile.WriteFile(filepath.Join(outDir, "train.log"), trainOut)
	if err != nil {
		t.Fatalf("mlsched train: %v\n%s", err, tail(string(trainOut), 40))
	}
	info.TrainTime = time.Since(t0)
	info.TrainTable = trainSummary(string(trainOut))
	var inspected struct {
		Accuracy  *float64 `json:"accuracy"`
		Balanced  *float64 `json:"balanced_accuracy"`
		AUC       *float64 `json:"auc"`
		Threshold float64  `json:"threshold"`
		Bytes     int      `json:"bytes"`
		Notes     map[string]string
	}
	if out, err := exec.Command(mls, "inspect", "--json", model).Output(); err != nil || json.Unmarshal(out, &inspected) != nil {
		t.Fatalf("mlsched inspect --json %s: %v\n%s", model, err, out)
	}
	info.Threshold, info.ModelBytes, info.BestEpoch = inspected.Threshold, inspected.Bytes, inspected.Notes["best_epoch"]

	// Score it, and the default model, on the second boot's captures.
	evalOn := func(m string, paths []string) (benchEval, error) {
		args := append([]string{"eval", "--json", "--infer", "kernel", "--model", m}, paths...)
		out, err := exec.Command(mls, args...).Output()
		var ev benchEval
		if err == nil {
			err = json.Unmarshal(out, &ev)
		}
		if err != nil {
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				err = fmt.Errorf("%v: %s", err, ee.Stderr)
			}
			return ev, fmt.Errorf("mlsched %s: %w", strings.Join(args, " "), err)
		}
		return ev, nil
	}
	defaultModel := filepath.Join(e.Root, "model", "default.bin")
	for i := range len(works) + 1 {
		set, name := traces["heldout"], "all four"
		if i < len(works) {
			name, set = works[i].Name, nil
			for r := range cfg.Rounds {
				set = append(set, traces["heldout"][r*len(works)+i])
			}
		}
		row := benchEvalRow{Name: name}
		if row.VM, err = evalOn(model, set); err != nil {
			t.Fatal(err)
		}
		if row.Default, err = evalOn(defaultModel, set); err != nil {
			t.Fatal(err)
		}
		info.Heldout = append(info.Heldout, row)
	}
	text := info.report()
	fmt.Printf("\n%s\n", text)
	bin, err := os.ReadFile(model)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(e.Root, filepath.Dir(benchModelFile)), 0o755); err != nil {
		t.Fatal(err)
	}
	for p, data := range map[string][]byte{benchModelFile: bin, benchModelReport: []byte(text)} {
		if err := outfile.WriteFile(filepath.Join(e.Root, p), data); err != nil {
			t.Fatal(err)
		}
		fmt.Printf("vmbench-model: wrote %s\n", p)
	}
	fmt.Printf("vmbench-model: done in %v; traces and logs in %s\n", time.Since(start).Round(time.Second), outDir)
}

// benchModelReport is the report next to benchModelFile (module-relative).
const benchModelReport = "vmtest/testdata/vmbench-model.txt"

// benchModelConfig is what MLSCHED_VMBENCH_MODEL_* may change.
type benchModelConfig struct {
	Bench        benchConfig // the workloads (HACKBENCH_LOOPS, STRESS_DURATION, POOL_DURATION, WORKLOADS, ACCEL)
	Rounds       int         // captures of each workload per boot
	Under        string      // the scheduler during the captures: vtime (mlsched --policy vtime) or default (EEVDF)
	Epochs       int
	Seed         uint64
	ThresholdFor string
	Reuse        bool
}

// benchModelConfigFrom reads the knobs: the workload ones through benchConfigFrom (the same
// names with MODEL_ after MLSCHED_VMBENCH_), with longer defaults than a benchmark round.
func benchModelConfigFrom(getenv func(string) string) (benchModelConfig, error) {
	defaults := map[string]string{"HACKBENCH_LOOPS": "6000", "STRESS_DURATION": "20s", "POOL_DURATION": "20s"}
	get := func(name string) string {
		if v := getenv("MLSCHED_VMBENCH_MODEL_" + name); v != "" {
			return v
		}
		return defaults[name]
	}
	bc, err := benchConfigFrom(func(n string) string { return get(strings.TrimPrefix(n, "MLSCHED_VMBENCH_")) }, 1)
	c := benchModelConfig{Bench: bc, Rounds: 2, Under: "vtime", Epochs: 20, Seed: 1, ThresholdFor: "accuracy"}
	errs := []error{err}
	if v := get("UNDER"); v != "" {
		c.Under = v
	}
	if c.Under != "vtime" && c.Under != "default" {
		errs = append(errs, fmt.Errorf("MLSCHED_VMBENCH_MODEL_UNDER=%q: want vtime or default", c.Under))
	}
	if v := get("ROUNDS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			errs = append(errs, fmt.Errorf("MLSCHED_VMBENCH_MODEL_ROUNDS=%q: want an integer >= 1", v))
		}
		c.Rounds = n
	}
	if v := get("EPOCHS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			errs = append(errs, fmt.Errorf("MLSCHED_VMBENCH_MODEL_EPOCHS=%q: want an integer >= 1", v))
		}
		c.Epochs = n
	}
	if v := get("SEED"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			errs = append(errs, fmt.Errorf("MLSCHED_VMBENCH_MODEL_SEED=%q: want an unsigned integer", v))
		}
		c.Seed = n
	}
	if v := get("THRESHOLD_FOR"); v != "" {
		c.ThresholdFor = v
	}
	if c.ThresholdFor != "accuracy" && c.ThresholdFor != "balanced" {
		errs = append(errs, fmt.Errorf("MLSCHED_VMBENCH_MODEL_THRESHOLD_FOR=%q: want accuracy or balanced", c.ThresholdFor))
	}
	c.Reuse = get("REUSE") != "" && get("REUSE") != "0"
	return c, errors.Join(errs...)
}

// benchTraceName is a capture's file name, in the guest's /tmp, in the archive and on the host.
func benchTraceName(pass string, w benchWorkload, round int) string {
	return fmt.Sprintf("%s-%s-%d.trace", pass, w.Name, round+1)
}

// traceSerial is the guest's third serial port, where the archive of the traces goes.
const traceSerial = "/dev/ttyS2"

// benchCapture is one capture run in the guest, as the report shows it.
type benchCapture struct {
	Pass     string        `json:"pass"`
	Workload string        `json:"workload"`
	Round    int           `json:"round"` // 1-based
	Command  string        `json:"command"`
	Elapsed  time.Duration `json:"elapsed"`
	Summary  string        `json:"summary"` // capture's samples line
	Boot     int           `json:"boot"`    // attempts this pass's VM took
}

// captureBenchWorkloads boots one VM that captures every workload once and sends the traces
// out; it returns their host paths (works order) and what each capture said.
func captureBenchWorkloads(t *testing.T, e *Env, cfg benchModelConfig, works []benchWorkload, programs map[string][]byte, pass, outDir string) ([]string, []benchCapture) {
	t.Helper()
	s := NewScenario("vmbench-model-" + pass)
	s.Programs = programs
	s.Timeout = bootTimeout + 10*time.Minute // the archive over the serial port, at the end
	sched := cfg.Under == "vtime"
	var enabled int
	if sched {
		s.Start("sched", "/mlsched", "run", "--metrics-addr", "", "--policy", "vtime")
		enabled = s.WaitFile(SCXState, "enabled", attachTimeout)
		s.Sleep(settle)
		s.Timeout += attachTimeout + settle + 45*time.Second
	}
	var caps, states []int
	var names, guest []string
	for r := range cfg.Rounds {
		for _, w := range works {
			name := benchTraceName(pass, w, r)
			names, guest = append(names, name), append(guest, "/tmp/"+name)
			// Loading the probes takes seconds to tens of seconds under TCG; capture starts the
			// workload once they are attached.
			args := []string{"/mlsched", "capture", "-o", "/tmp/" + name, "--max-rate", "0", "--only-command", "--progress", "never", "--"}
			timeout := 2*time.Minute + 2*w.Timeout
			caps = append(caps, s.Exec(timeout, append(args, w.Cmd...)...))
			states = append(states, s.Read(SCXState))
			s.Timeout += timeout
		}
	}
	if sched {
		s.Signal("sched", "INT")
		s.Wait("sched", 30*time.Second)
		s.WaitFile(SCXState, "disabled", 15*time.Second)
	}
	sums := s.Exec(2*time.Minute, append([]string{"/usr/bin/sha256sum"}, guest...)...)
	raw := s.Exec(10*time.Second, "/usr/bin/stty", "-F", traceSerial, "raw", "-echo")
	send := s.Exec(8*time.Minute, append([]string{"/usr/bin/tar", "-cf", traceSerial, "-C", "/tmp"}, names...)...)

	dir := filepath.Join(outDir, "boot-"+pass)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	vm, err := e.prepare(s, dir)
	if err != nil {
		t.Fatal(err)
	}
	for i, a := range vm.args {
		if a == "-accel" {
			vm.args[i+1] = cfg.Bench.Accel
		}
	}
	archive := filepath.Join(dir, "traces.tar")
	vm.args = append(vm.args, "-serial", "file:"+archive) // ttyS2
	defer os.Remove(vm.initrd)
	var a *attempt
	for n := 1; ; n++ {
		a = vm.boot(n, nil)
		flake := int3Oops.MatchString(a.run.Console) || a.run.Hello.Kind == ""
		if !flake || n == 3 {
			break
		}
		_ = outfile.WriteFile(filepath.Join(dir, fmt.Sprintf("console.attempt%d.log", n)), []byte(a.run.Console))
		t.Logf("vmbench-model %s: RETRY: %s (attempt %d of 3)", pass, bootEnd(a), n)
	}
	r := a.run
	t.Logf("vmbench-model %s: %v wall; logs in %s", pass, r.Wall.Round(time.Second), dir)
	if e.report(t, s, a) || t.Failed() {
		t.FailNow()
	}
	if sched && r.Step(enabled).Value != "enabled" {
		t.Fatalf("mlsched run --policy vtime never enabled: %+v", r.Step(enabled))
	}
	var out []benchCapture
	for i := range caps {
		w, round := works[i%len(works)], i/len(works)
		c := r.Step(caps[i])
		if c.ExitCode != 0 {
			t.Fatalf("%s capture of %s: exit %d\nstdout:\n%s\nstderr:\n%s", pass, w.Name, c.ExitCode, c.Stdout, c.Stderr)
		}
		want := "disabled"
		if sched {
			want = "enabled"
		}
		if got := r.Step(states[i]).Values[SCXState]; got != want {
			t.Fatalf("%s capture of %s: sched_ext state %q after it, want %s (the scheduler was ejected?)", pass, w.Name, got, want)
		}
		summary := ""
		if m := captureSamplesLine.FindStringSubmatch(c.Stdout + "\n" + c.Stderr); m != nil {
			summary = strings.TrimSpace(m[1])
		}
		out = append(out, benchCapture{Pass: pass, Workload: w.Name, Round: round + 1, Command: shellJoinArgs(w.Cmd), Elapsed: c.Elapsed, Summary: summary, Boot: r.Attempts})
	}
	for _, st := range []struct {
		i    int
		what string
	}{{sums, "sha256sum"}, {raw, "stty"}, {send, "tar"}} {
		if x := r.Step(st.i); x.ExitCode != 0 {
			t.Fatalf("%s in the guest: exit %d\n%s%s", st.what, x.ExitCode, x.Stdout, x.Stderr)
		}
	}
	t.Logf("vmbench-model %s: the archive took %v over %s", pass, r.Step(send).Elapsed.Round(time.Millisecond), traceSerial)
	data, err := os.ReadFile(archive)
	if err != nil {
		t.Fatal(err)
	}
	files, err := unpackTraces(data, r.Step(sums).Stdout, names)
	if err != nil {
		t.Fatalf("the traces from the guest (%s, %d bytes): %v", archive, len(data), err)
	}
	var paths []string
	for _, name := range names {
		p := filepath.Join(outDir, name)
		if err := outfile.WriteFile(p, files[name]); err != nil {
			t.Fatal(err)
		}
		paths = append(paths, p)
	}
	_ = os.Remove(archive)
	return paths, out
}

// captureSamplesLine is capture's summary line "samples N (positives P, x%)".
var captureSamplesLine = regexp.MustCompile(`(?m)^\s*samples\s+(.*)$`)

// unpackTraces reads the archive tar wrote to the serial port and checks each wanted file
// against sha256sum's output from the guest ("<hex>  /tmp/<name>" lines).
func unpackTraces(archive []byte, sums string, want []string) (map[string][]byte, error) {
	sum := map[string]string{}
	for _, l := range strings.Split(strings.ReplaceAll(sums, "\r", ""), "\n") {
		if f := strings.Fields(l); len(f) == 2 {
			sum[filepath.Base(f[1])] = f[0]
		}
	}
	files := map[string][]byte{}
	tr := tar.NewReader(bytes.NewReader(archive))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return files, fmt.Errorf("tar: %w (after %d files)", err, len(files))
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			return files, fmt.Errorf("tar: %s: %w", h.Name, err)
		}
		files[filepath.Base(h.Name)] = b
	}
	var errs []error
	for _, name := range want {
		b, ok := files[name]
		switch h := sha256.Sum256(b); {
		case !ok:
			errs = append(errs, fmt.Errorf("%s: not in the archive", name))
		case sum[name] == "":
			errs = append(errs, fmt.Errorf("%s: no checksum from the guest", name))
		case hex.EncodeToString(h[:]) != sum[name]:
			errs = append(errs, fmt.Errorf("%s: sha256 %x, the guest's %s (%d bytes)", name, h, sum[name], len(b)))
		}
	}
	return files, errors.Join(errs...)
}

// trainSummary is train's output from its metrics table on (the per-epoch lines left out).
func trainSummary(out string) string {
	lines := strings.Split(strings.ReplaceAll(out, "\r", ""), "\n")
	for i, l := range lines {
		if strings.Contains(strings.ToLower(l), "majority") {
			for j := i; j > 0; j-- { // back to the blank line before the table
				if strings.TrimSpace(lines[j-1]) == "" {
					return strings.TrimRight(strings.Join(slices.DeleteFunc(lines[j:], isWrote), "\n"), "\n")
				}
			}
			return strings.TrimRight(strings.Join(slices.DeleteFunc(lines[i:], isWrote), "\n"), "\n")
		}
	}
	return tail(out, 15)
}

func isWrote(l string) bool { return strings.HasPrefix(l, "wrote ") }

// benchEval is the part of `mlsched eval --json --infer kernel` the report shows.
type benchEval struct {
	N          int64    `json:"n"`
	Positives  int64    `json:"positives"`
	Accuracy   *float64 `json:"accuracy"`
	Balanced   *float64 `json:"balanced_accuracy"`
	AUC        *float64 `json:"auc"`
	Majority   *float64 `json:"baseline_accuracy"`
	HeurAcc    *float64 `json:"heuristic_accuracy"`
	HeurBal    *float64 `json:"heuristic_balanced_accuracy"`
	KernelAgr  *float64 `json:"kernel_agreement"`
	Margin     *float64 `json:"abstain_margin"` // absent before abstention existed
	Coverage   *float64 `json:"coverage"`
	ConfAcc    *float64 `json:"confident_accuracy"`
	ConfBase   *float64 `json:"confident_baseline_accuracy"`
	KernelAcc  *float64 `json:"kernel_accuracy"`
	KeepLocal  int64    `json:"kernel_keep_local"`
	TP, FP, TN int64
	FN         int64
}

type benchEvalRow struct {
	Name        string
	VM, Default benchEval
}

type benchTraceInfo struct {
	Pass, File         string
	Samples, Positives int64
	Drops              int64
}

// benchModelInfo is what the report says.
type benchModelInfo struct {
	Commit, Qemu, Kernel, Date string
	Binary                     string // which mlsched captured, trained and evaluated
	Cfg                        benchModelConfig
	Reused                     bool
	Captures                   []benchCapture
	Traces                     []benchTraceInfo
	TrainArgs                  []string
	TrainTime                  time.Duration
	TrainTable                 string
	Threshold                  float64
	ModelBytes                 int
	BestEpoch                  string
	Heldout                    []benchEvalRow
}

func f3(p *float64) string {
	if p == nil {
		return "-"
	}
	return strconv.FormatFloat(*p, 'f', 4, 64)
}

// report is vmbench-model.txt.
func (in *benchModelInfo) report() string {
	var b strings.Builder
	under := "mlsched run --policy vtime (the base queue the model arm runs over)"
	if in.Cfg.Under == "default" {
		under = "the kernel's default scheduler (EEVDF)"
	}
	fmt.Fprintf(&b, "vmbench-model.bin: a model trained on captures of vmbench's workloads made in the VM.\n"+
		"Made by `make vmbench-model` (vmtest/benchmodel_test.go, TestVMBenchModel), %s, commit %s.\n"+
		"mlsched (capture, train, eval): %s.\n"+
		"VM: kernel %s, %s, -accel %s -cpu max -smp 2 -m 1G.\n"+
		"Captures: mlsched capture --max-rate 0 --only-command (every wakeup of the workload's process tree,\n"+
		"the default horizon), under %s.\n"+
		"Two boots, each capturing every workload %d time(s): \"train\" (the training data) and \"heldout\" (a\n"+
		"separate capture run of the same workloads, never seen by training, for the evaluation below).\n", in.Date, in.Commit, in.Binary, in.Kernel, in.Qemu, in.Cfg.Bench.Accel, under, in.Cfg.Rounds)
	if in.Reused {
		b.WriteString("(Trained again on the traces of an earlier run: MLSCHED_VMBENCH_MODEL_REUSE.)\n")
	}
	b.WriteString("\nworkloads:\n")
	seen := map[string]bool{}
	for _, c := range in.Captures {
		if !seen[c.Workload] {
			seen[c.Workload] = true
			fmt.Fprintf(&b, "  %s: %s\n", c.Workload, c.Command)
		}
	}
	b.WriteString("\ncaptures:\n")
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "trace\tsamples\tpositive\tdrops\tcapture run\t\n")
	for _, tr := range in.Traces {
		run := "-"
		for _, c := range in.Captures {
			if benchTraceNameOf(c) == tr.File {
				run = c.Elapsed.Round(100 * time.Millisecond).String()
			}
		}
		fmt.Fprintf(tw, "%s\t%d\t%.1f%%\t%d\t%s\t\n", tr.File, tr.Samples, 100*float64(tr.Positives)/float64(max(tr.Samples, 1)), tr.Drops, run)
	}
	tw.Flush()
	args := make([]string, len(in.TrainArgs))
	for i, a := range in.TrainArgs {
		args[i] = filepath.Base(a)
		if !strings.Contains(a, "/") {
			args[i] = a
		}
	}
	fmt.Fprintf(&b, "\ntraining: mlsched %s  (%v)\n", strings.Join(args, " "), in.TrainTime.Round(time.Second))
	margin := "none"
	if len(in.Heldout) > 0 && in.Heldout[0].VM.Margin != nil {
		margin = fmt.Sprintf("%.4f (logit units)", *in.Heldout[0].VM.Margin)
	}
	fmt.Fprintf(&b, "  kept epoch %s, threshold %.4f (chosen on validation for %s), abstention margin %s, model %d bytes.\n",
		in.BestEpoch, in.Threshold, in.Cfg.ThresholdFor, margin, in.ModelBytes)
	b.WriteString("  train's validation (the last 20% by time of each \"train\" capture):\n")
	for _, l := range strings.Split(in.TrainTable, "\n") {
		fmt.Fprintf(&b, "    %s\n", l)
	}
	b.WriteString("\nheld-out evaluation: mlsched eval --infer kernel on the \"heldout\" captures, this model (vm) and\n" +
		"model/default.bin (default) on the same samples. majority: always the more frequent label of those\n" +
		"samples (what the live guard compares with: below it, in points, the guard would trip on that workload);\n" +
		"heuristic: on-CPU < t with each model's own t; keep: the share of samples the kernel form keeps local;\n" +
		"kernel agr.: the BPF integer form decides as the float net; decided: the share outside the abstention\n" +
		"margin, conf. acc / its maj.: accuracy over those and their own majority class's. vmbench runs one workload at a time, so the\n" +
		"per-workload rows are the ones that matter; \"all four\" pools them (and rewards telling them apart).\n")
	tw = tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "workload\tmodel\tn\tpositive\taccuracy\tbalanced\tROC AUC\tmajority\tvs majority\theuristic acc\tkeep\tkernel agr.\tdecided\tconf. acc\tits maj.\t\n")
	for _, row := range in.Heldout {
		for _, m := range []struct {
			name string
			ev   benchEval
		}{{"vm", row.VM}, {"default", row.Default}} {
			ev := m.ev
			vs := "-"
			if ev.Accuracy != nil && ev.Majority != nil {
				vs = fmt.Sprintf("%+.1f", 100*(*ev.Accuracy-*ev.Majority))
			}
			decided := "-"
			if ev.Coverage != nil {
				decided = fmt.Sprintf("%.1f%%", 100**ev.Coverage)
			}
			fmt.Fprintf(tw, "%s\t%s\t%d\t%.1f%%\t%s\t%s\t%s\t%s\t%s\t%s\t%.1f%%\t%s\t%s\t%s\t%s\t\n", row.Name, m.name, ev.N,
				100*float64(ev.Positives)/float64(max(ev.N, 1)), f3(ev.Accuracy), f3(ev.Balanced), f3(ev.AUC), f3(ev.Majority),
				vs, f3(ev.HeurAcc), 100*float64(ev.KeepLocal)/float64(max(ev.N, 1)), f3(ev.KernelAgr), decided, f3(ev.ConfAcc), f3(ev.ConfBase))
		}
	}
	tw.Flush()
	b.WriteString("\nNOTE: " + tcgNoteBench + ".\n")
	return b.String()
}

func benchTraceNameOf(c benchCapture) string {
	return fmt.Sprintf("%s-%s-%d.trace", c.Pass, c.Workload, c.Round)
}

// The knobs: longer workloads than a benchmark round by default, the MODEL_ names override them.
func TestBenchModelConfig(t *testing.T) {
	c, err := benchModelConfigFrom(func(string) string { return "" })
	if err != nil || c.Rounds != 2 || c.Bench.HackbenchLoops != 6000 || c.Bench.StressDur != 20*time.Second ||
		c.Bench.PoolDur != 20*time.Second || c.Under != "vtime" || c.ThresholdFor != "accuracy" || c.Epochs != 20 || c.Reuse ||
		c.Bench.Accel != "tcg,thread=multi" || len(benchWorkloads(c.Bench)) != 4 {
		t.Fatalf("defaults: %+v, %v", c, err)
	}
	env := map[string]string{"MLSCHED_VMBENCH_MODEL_HACKBENCH_LOOPS": "100", "MLSCHED_VMBENCH_MODEL_WORKLOADS": "pool",
		"MLSCHED_VMBENCH_MODEL_UNDER": "default", "MLSCHED_VMBENCH_MODEL_REUSE": "1", "MLSCHED_VMBENCH_HACKBENCH_LOOPS": "7"}
	c, err = benchModelConfigFrom(func(k string) string { return env[k] })
	if err != nil || c.Bench.HackbenchLoops != 100 || c.Under != "default" || !c.Reuse || len(benchWorkloads(c.Bench)) != 1 {
		t.Fatalf("overridden: %+v, %v", c, err)
	}
	for k, v := range map[string]string{"UNDER": "eevdf", "THRESHOLD_FOR": "auc", "ROUNDS": "0", "EPOCHS": "x", "POOL_DURATION": "1ms"} {
		if _, err := benchModelConfigFrom(func(n string) string {
			if n == "MLSCHED_VMBENCH_MODEL_"+k {
				return v
			}
			return ""
		}); err == nil {
			t.Errorf("%s=%s: no error", k, v)
		}
	}
}

// The traces come out of the guest as a tar archive and are checked against the guest's
// sha256sum lines.
func TestBenchModelUnpack(t *testing.T) {
	files := map[string][]byte{"a.trace": []byte("first\r\n\x00\xff"), "b.trace": bytes.Repeat([]byte{'\n'}, 3000)}
	var archive bytes.Buffer
	tw := tar.NewWriter(&archive)
	var sums strings.Builder
	for _, name := range []string{"a.trace", "b.trace"} {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(files[name]))}); err != nil {
			t.Fatal(err)
		}
		tw.Write(files[name])
		h := sha256.Sum256(files[name])
		fmt.Fprintf(&sums, "%x  /tmp/%s\n", h, name)
	}
	tw.Close()
	got, err := unpackTraces(archive.Bytes(), sums.String(), []string{"a.trace", "b.trace"})
	if err != nil || !bytes.Equal(got["a.trace"], files["a.trace"]) || !bytes.Equal(got["b.trace"], files["b.trace"]) {
		t.Fatalf("unpack: %v", err)
	}
	if _, err := unpackTraces(archive.Bytes(), sums.String(), []string{"a.trace", "c.trace"}); err == nil || !strings.Contains(err.Error(), "c.trace: not in the archive") {
		t.Errorf("a missing trace: %v", err)
	}
	// What the serial line's \n -> \r\n would have done: caught by the checksum.
	cooked := bytes.ReplaceAll(archive.Bytes(), []byte("first\r\n"), []byte("first\r\r\n"))
	if _, err := unpackTraces(cooked, sums.String(), []string{"a.trace"}); err == nil {
		t.Error("a changed trace: no error")
	}
	if _, err := unpackTraces(archive.Bytes(), "", []string{"a.trace"}); err == nil || !strings.Contains(err.Error(), "no checksum") {
		t.Errorf("no checksum: %v", err)
	}
}
