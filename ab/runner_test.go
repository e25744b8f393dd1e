package ab

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// fakeSysfs makes a sched_ext sysfs directory with no scheduler attached.
func fakeSysfs(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "root"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "state"), "disabled\n")
	writeFile(t, filepath.Join(dir, "root", "ops"), "")
	return dir
}

func writeFile(t *testing.T, path, s string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(s), 0o755); err != nil {
		t.Fatal(err)
	}
}

// fakeScheduler is a script that acts like a sched_ext scheduler on a fake sysfs: after a short
// load it shows itself enabled under $FAKE_OPS (default "fakesched"), and on SIGINT it
// detaches; like the kernel, it bumps enable_seq (if present) a little after "enabled".
// FAKE_MODE=never never attaches; eject detaches itself after 0.2 s; noseq leaves enable_seq.
const fakeScheduler = `#!/bin/sh
d=%SYSFS%
# put writes a file whole (a reader never sees it truncated and empty, as sysfs reads never are).
put() { echo "$2" > "$1.tmp" && mv "$1.tmp" "$1"; }
trap 'echo disabled > $d/state; : > $d/root/ops; exit 0' INT TERM
sleep 0.05
if [ "$FAKE_MODE" = never ]; then while :; do sleep 0.05; done; fi
put $d/root/ops "${FAKE_OPS:-fakesched}"
put $d/state enabled
if [ -f $d/enable_seq ] && [ "$FAKE_MODE" != noseq ]; then sleep 0.1; put $d/enable_seq $(( $(cat $d/enable_seq) + 1 )); fi
if [ "$FAKE_MODE" = eject ]; then sleep 0.2; echo disabled > $d/state; : > $d/root/ops; exit 1; fi
while :; do sleep 0.05; done
`

func fakeSchedulerScript(t *testing.T, sysfs string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "fakesched")
	writeFile(t, path, strings.ReplaceAll(fakeScheduler, "%SYSFS%", sysfs))
	return path
}

// stateWorkload prints throughput 2 while a scheduler is enabled on the fake sysfs, else 1.
func stateWorkload(sysfs string, extra string) []string {
	return []string{"sh", "-c", extra + `if [ "$(cat ` + sysfs + `/state)" = enabled ]; then echo '{"throughput": 2}'; else echo '{"throughput": 1}'; fi`}
}

func mustArm(t *testing.T, s string) Arm {
	t.Helper()
	a, err := ParseArm(s)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// Two default arms and a shell workload, on this host's real (absent or idle) sched_ext.
func TestExecuteDefaultArms(t *testing.T) {
	var log bytes.Buffer
	cfg := Config{
		Arms: []Arm{mustArm(t, "base=default"), mustArm(t, "b=default")},
		// b is 10% faster, with a little spread from the run number.
		Workload: []string{"sh", "-c", `v=100; [ "$MLSCHED_AB_ARM" = b ] && v=110; echo "noise"; echo "{\"throughput\": $((v + MLSCHED_AB_RUN % 3)), \"unit\": \"ops/s\"}"`},
		Runs:     4, Warmup: 1, Seed: 3, Log: &log,
	}
	res, err := Execute(context.Background(), cfg)
	if err != nil {
		t.Fatalf("%v\n%s", err, log.String())
	}
	if len(res.Runs) != 10 || res.Unit != "ops/s" {
		t.Fatalf("%d runs, unit %q; want 10 runs of ops/s", len(res.Runs), res.Unit)
	}
	for round := 1; round <= 5; round++ { // every round runs each arm once
		var arms []string
		for _, r := range res.Runs {
			if r.Round == round {
				arms = append(arms, r.Arm)
				if r.Warmup != (round == 1) {
					t.Errorf("run %d: warmup %v in round %d", r.Seq, r.Warmup, round)
				}
			}
		}
		slices.Sort(arms)
		if !slices.Equal(arms, []string{"b", "base"}) {
			t.Errorf("round %d ran %v", round, arms)
		}
	}
	if got := len(res.Values("b")); got != 4 {
		t.Errorf("b has %d measured values, want 4 (warm-up excluded)", got)
	}
	rep := Analyze(res, AnalyzeOptions{})
	if len(rep.Comparisons) != 1 {
		t.Fatalf("comparisons: %+v", rep.Comparisons)
	}
	c := rep.Comparisons[0]
	if c.Arm != "b" || c.Baseline != "base" || !c.Significant || !c.Better || c.CI.Ratio < 1.05 || c.CI.Ratio > 1.15 {
		t.Errorf("comparison %+v", c)
	}
	if !strings.HasPrefix(c.Verdict, "b is ") || !strings.Contains(c.Verdict, "faster than base, 95% CI [") {
		t.Errorf("verdict %q", c.Verdict)
	}
	var text bytes.Buffer
	rep.WriteText(&text)
	for _, want := range []string{"base", "ops/s", "median", "stdev", "Welch", c.Verdict, "seed 3"} {
		if !strings.Contains(text.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, text.String())
		}
	}
	if strings.Count(log.String(), "\n") != 10 || !strings.Contains(log.String(), "warm-up") {
		t.Errorf("progress log:\n%s", log.String())
	}
	checkJSONAndSVG(t, rep)
}

func checkJSONAndSVG(t *testing.T, rep *Report) {
	t.Helper()
	var js bytes.Buffer
	if err := rep.WriteJSON(&js); err != nil {
		t.Fatal(err)
	}
	var back struct {
		Runs        []Run `json:"runs"`
		Comparisons []struct {
			Verdict string `json:"verdict"`
			Ratio   struct{ Ratio, Low, High *float64 }
			Welch   struct{ P *float64 }
		} `json:"comparisons"`
		Summaries []struct {
			Summary struct {
				N    int      `json:"n"`
				Mean *float64 `json:"mean"`
			} `json:"summary"`
		} `json:"summaries"`
		Seed uint64 `json:"seed"`
	}
	if err := json.Unmarshal(js.Bytes(), &back); err != nil {
		t.Fatalf("JSON: %v\n%s", err, js.String())
	}
	if len(back.Runs) != len(rep.Runs) || len(back.Summaries) != len(rep.Arms) || back.Seed != rep.Seed {
		t.Errorf("JSON round trip lost data: %s", js.String())
	}
	for i, c := range back.Comparisons {
		if c.Verdict != rep.Comparisons[i].Verdict || c.Ratio.Ratio == nil {
			t.Errorf("JSON comparison %d: %+v", i, c)
		}
	}
	var svg bytes.Buffer
	if err := rep.WriteSVG(&svg); err != nil {
		t.Fatal(err)
	}
	svgTexts(t, svg.Bytes()) // fails unless well-formed
}

// A cmd: arm on a fake sysfs: attached during its runs (the workload sees "enabled"), detached
// after each, its ops name recorded.
func TestExecuteCmdArmFakeSysfs(t *testing.T) {
	sys := fakeSysfs(t)
	writeFile(t, filepath.Join(sys, "enable_seq"), "7\n")
	script := fakeSchedulerScript(t, sys)
	cfg := Config{
		Arms:     []Arm{mustArm(t, "default"), mustArm(t, "fake=cmd:"+script)},
		Workload: stateWorkload(sys, ""),
		Runs:     2, Warmup: 0, Seed: 1, Sysfs: sys, AttachTimeout: 3 * time.Second, DetachTimeout: 2 * time.Second,
	}
	res, err := Execute(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range res.Runs {
		want := 1.0
		if r.Arm == "fake" {
			want = 2
			if r.Ops != "fakesched" {
				t.Errorf("run %d: ops %q", r.Seq, r.Ops)
			}
		}
		if r.Throughput != want {
			t.Errorf("run %d (%s): workload saw throughput %v, want %v", r.Seq, r.Arm, r.Throughput, want)
		}
	}
	if st, seq := (sysfs{sys}).state(), (sysfs{sys}).enableSeq(); st != "disabled" || seq != 9 {
		t.Errorf("after the experiment: state %q, enable_seq %d; want disabled, 9 (two attaches)", st, seq)
	}
	rep := Analyze(res, AnalyzeOptions{})
	if rep.Arms[1].Ops != "fakesched" {
		t.Errorf("summary ops %q", rep.Arms[1].Ops)
	}
	checkJSONAndSVG(t, rep) // zero spread: Welch t is infinite, JSON must still encode
}

// The fifo arm runs `SELF run --policy fifo` and must show up as mlsched*.
func TestFIFOArmWrongOps(t *testing.T) {
	sys := fakeSysfs(t)
	t.Setenv("FAKE_OPS", "scx_other")
	cfg := Config{
		Arms: []Arm{mustArm(t, "default"), mustArm(t, "fifo")}, Workload: stateWorkload(sys, ""),
		Runs: 2, Sysfs: sys, Self: fakeSchedulerScript(t, sys), AttachTimeout: 500 * time.Millisecond, DetachTimeout: 2 * time.Second,
	}
	_, err := Execute(context.Background(), cfg)
	if !errors.Is(err, ErrAttach) || !strings.Contains(err.Error(), `"scx_other"`) || !strings.Contains(err.Error(), "mlsched") {
		t.Fatalf("err = %v, want ErrAttach naming scx_other and mlsched", err)
	}
	if st := (sysfs{sys}).state(); st != "disabled" {
		t.Errorf("the failed scheduler was left attached: state %q", st)
	}

	t.Setenv("FAKE_OPS", "mlsched")
	res, err := Execute(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if got := res.Values("fifo"); !slices.Equal(got, []float64{2, 2}) {
		t.Errorf("fifo values %v", got)
	}
}

func TestAttachFailures(t *testing.T) {
	sys := fakeSysfs(t)
	script := fakeSchedulerScript(t, sys)
	marker := filepath.Join(t.TempDir(), "ran")
	base := Config{Workload: []string{"sh", "-c", "touch " + marker + `; echo '{"throughput": 1}'`},
		Runs: 2, Sysfs: sys, AttachTimeout: 400 * time.Millisecond, DetachTimeout: time.Second, Seed: 5}
	for _, c := range []struct {
		name, arm, mode string
		want            error
		msg             string
	}{
		{"never attaches", "x=cmd:" + script, "never", ErrAttach, `state "disabled" after 400ms`},
		{"exits at once", "x=cmd:false", "", ErrAttach, "exited"},
		{"ejected mid-run", "x=cmd:" + script, "eject", ErrDetached, "detached during the run"},
		{"stale enable_seq", "x=cmd:" + script, "noseq", ErrAttach, "not a new attach"},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Setenv("FAKE_MODE", c.mode)
			cfg := base
			cfg.Arms = []Arm{mustArm(t, c.arm), mustArm(t, "y=default")}
			os.Remove(filepath.Join(sys, "enable_seq"))
			if c.mode == "noseq" {
				writeFile(t, filepath.Join(sys, "enable_seq"), "1\n")
			}
			if c.mode == "eject" {
				cfg.Workload = stateWorkload(sys, "sleep 0.5; ")
				cfg.Seed = 2 // x runs first
			}
			start := time.Now()
			_, err := Execute(context.Background(), cfg)
			if !errors.Is(err, c.want) || !strings.Contains(err.Error(), c.msg) {
				t.Fatalf("err = %v, want %v containing %q", err, c.want, c.msg)
			}
			if took := time.Since(start); took > 4*time.Second {
				t.Errorf("took %v to give up", took)
			}
			if st := (sysfs{sys}).state(); st != "disabled" {
				t.Errorf("state left %q", st)
			}
		})
	}
}

func TestBusy(t *testing.T) {
	sys := fakeSysfs(t)
	writeFile(t, filepath.Join(sys, "state"), "enabled\n")
	writeFile(t, filepath.Join(sys, "root", "ops"), "scx_rusty\n")
	for _, arm := range []string{"default", "cmd:true"} {
		cfg := Config{Arms: []Arm{mustArm(t, "a="+arm), mustArm(t, "b="+arm)}, Workload: []string{"true"}, Runs: 2, Sysfs: sys}
		_, err := Execute(context.Background(), cfg)
		if !errors.Is(err, ErrBusy) || !strings.Contains(err.Error(), "scx_rusty") {
			t.Errorf("%s: err = %v, want ErrBusy naming scx_rusty", arm, err)
		}
	}
}

// An arm that needs sched_ext on a kernel without it fails in Check: no run happens at all.
func TestNoSchedExtFailsAtOnce(t *testing.T) {
	marker := filepath.Join(t.TempDir(), "ran")
	cfg := Config{Arms: []Arm{mustArm(t, "default"), mustArm(t, "fifo"), mustArm(t, "m=model:/nonexistent")},
		Workload: []string{"sh", "-c", "touch " + marker}, Runs: 3, Self: "/bin/true",
		Sysfs: filepath.Join(t.TempDir(), "no-sched_ext")}
	_, err := Execute(context.Background(), cfg)
	if !errors.Is(err, ErrNoSchedExt) {
		t.Fatalf("err = %v, want ErrNoSchedExt", err)
	}
	for _, want := range []string{"CONFIG_SCHED_CLASS_EXT", "6.12", "fifo, m", "missing"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("message %q lacks %q", err, want)
		}
	}
	if _, err := os.Stat(marker); err == nil {
		t.Error("the workload ran")
	}
}

func TestWorkloadFailures(t *testing.T) {
	cfg := Config{Arms: []Arm{mustArm(t, "a=default"), mustArm(t, "b=default")}, Runs: 2}
	cfg.Workload = []string{"sh", "-c", "echo boom >&2; exit 3"}
	if _, err := Execute(context.Background(), cfg); err == nil || !strings.Contains(err.Error(), "boom") || !strings.Contains(err.Error(), "exit status 3") {
		t.Errorf("failing workload: %v", err)
	}
	cfg.Workload = []string{"sh", "-c", "echo no number here"}
	if _, err := Execute(context.Background(), cfg); err == nil || !strings.Contains(err.Error(), "no number here") {
		t.Errorf("no throughput: %v", err)
	}
	cfg.Workload = []string{"sh", "-c", "sleep 30 & sleep 30"}
	cfg.Timeout = 300 * time.Millisecond
	start := time.Now()
	if _, err := Execute(context.Background(), cfg); err == nil || !strings.Contains(err.Error(), "did not finish within 300ms") {
		t.Errorf("timeout: %v", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("timeout took %v (the process group was not killed?)", took)
	}
	cfg.Workload = []string{"/nonexistent/workload"}
	if _, err := Execute(context.Background(), cfg); err == nil || !strings.Contains(err.Error(), "workload") {
		t.Errorf("missing workload: %v", err)
	}
	cfg.Arms = cfg.Arms[:1]
	cfg.Workload = []string{"true"}
	if _, err := Execute(context.Background(), cfg); err == nil || !strings.Contains(err.Error(), "two or more arms") {
		t.Errorf("one arm: %v", err)
	}
}

func TestParseThroughput(t *testing.T) {
	for _, c := range []struct {
		out, re string
		want    float64
		unit    string
		err     string
	}{
		{`{"throughput": 12.5, "unit": "req/s"}`, "", 12.5, "req/s", ""},
		{"log line\n{\"throughput\": 1}\n{\"other\": 2}\n{\"throughput\": 3e3}\ntrailer\n", "", 3000, "", ""},
		{`{"throughput": "fast"}`, "", 0, "", "no {"},
		{"Time: 1.25\nTime: 2.50\n", `Time: ([0-9.]+)`, 2.5, "", ""},
		{"Requests/sec:  12,345.67\n", `Requests/sec:\s+([0-9.,]+)`, 12345.67, "", ""},
		{"nothing\n", `x=(\d+)`, 0, "", "does not match"},
		{"x=abc\n", `x=(\w+)`, 0, "", "not a number"},
		// A ratio between arms needs a positive finite number.
		{`{"throughput": -100}`, "", 0, "", "positive finite"},
		{`{"throughput": 0}`, "", 0, "", "positive finite"},
		{"x=inf\n", `x=(\S+)`, 0, "", "positive finite"},
		{"x=NaN\n", `x=(\S+)`, 0, "", "positive finite"},
		{"x=0\n", `x=(\S+)`, 0, "", "positive finite"},
	} {
		var re *regexp.Regexp
		if c.re != "" {
			re = regexp.MustCompile(c.re)
		}
		v, unit, err := ParseThroughput([]byte(c.out), re)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%q: err %v, want %q", c.out, err, c.err)
			}
			continue
		}
		if err != nil || v != c.want || unit != c.unit {
			t.Errorf("%q: %v %q %v, want %v %q", c.out, v, unit, err, c.want, c.unit)
		}
	}
}

func TestParseArm(t *testing.T) {
	for _, c := range []struct {
		in    string
		name  string
		kind  Kind
		model string
		cmd   []string
		err   string
	}{
		{in: "default", name: "default", kind: KindDefault},
		{in: "base=default", name: "base", kind: KindDefault},
		{in: "fifo", name: "fifo", kind: KindFIFO},
		{in: "fair=vtime", name: "fair", kind: KindVtime},
		{in: "x=vtime:1", err: "no argument"},
		{in: "m=model:out/model.bin", name: "m", kind: KindModel, model: "out/model.bin"},
		{in: "model", name: "model", kind: KindModel},
		{in: "model:/a=b.bin", name: "model", kind: KindModel, model: "/a=b.bin"},
		{in: `rusty=cmd:scx_rusty --slice-us=2000 -v`, name: "rusty", kind: KindCmd, cmd: []string{"scx_rusty", "--slice-us=2000", "-v"}},
		{in: `cmd:sh -c 'echo "a b"; exit 0'`, name: "cmd", kind: KindCmd, cmd: []string{"sh", "-c", `echo "a b"; exit 0`}},
		{in: `x=cmd:a\ b "c\"d" e`, name: "x", kind: KindCmd, cmd: []string{"a b", `c"d`, "e"}},
		{in: "x=cfs", err: "unknown scheduler"},
		{in: "x=model:", err: "needs a model"},
		{in: "x=cmd:", err: "needs a command"},
		{in: "x=fifo:3", err: "no argument"},
		{in: `x=cmd:'unterminated`, err: "unterminated"},
		{in: "a b=fifo", err: "spaces"},
	} {
		a, err := ParseArm(c.in)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%q: err %v, want %q", c.in, err, c.err)
			}
			continue
		}
		if err != nil || a.Name != c.name || a.Kind != c.kind || a.Model != c.model || !slices.Equal(a.Command, c.cmd) {
			t.Errorf("%q: %+v %v", c.in, a, err)
		}
	}
}

func TestOrder(t *testing.T) {
	plan := Order(3, 1, 5, 9)
	if len(plan) != 18 {
		t.Fatalf("%d slots", len(plan))
	}
	perms := map[string]bool{}
	for r := 0; r < 6; r++ {
		var key []byte
		seen := map[int]bool{}
		for _, s := range plan[3*r : 3*r+3] {
			seen[s.arm] = true
			key = append(key, byte('0'+s.arm))
			if s.round != r+1 || s.warmup != (r == 0) {
				t.Errorf("slot %+v in round %d", s, r+1)
			}
		}
		if len(seen) != 3 {
			t.Errorf("round %d is not a permutation: %v", r+1, key)
		}
		perms[string(key)] = true
	}
	if len(perms) < 2 {
		t.Errorf("every round in the same order: %v", perms)
	}
	if !slices.Equal(Order(3, 1, 5, 9), plan) {
		t.Error("same seed, different order")
	}
}

func TestWorkloadArgv(t *testing.T) {
	c := Config{Self: "/bin/mlsched", Duration: 2 * time.Second}
	for _, tc := range []struct{ in, want []string }{
		{[]string{"mlsched", "workload", "hackbench"}, []string{"/bin/mlsched", "workload", "hackbench", "--duration", "2s"}},
		{[]string{"mlsched", "workload", "pool", "--threads", "4"}, []string{"/bin/mlsched", "workload", "pool", "--duration", "2s", "--threads", "4"}},
		{[]string{"mlsched", "workload", "http", "--duration=1s"}, []string{"/bin/mlsched", "workload", "http", "--duration=1s"}},
		{[]string{"stress-ng", "--timeout", "{duration}"}, []string{"stress-ng", "--timeout", "2s"}},
	} {
		c.Workload = tc.in
		if got := c.workloadArgv(); !slices.Equal(got, tc.want) {
			t.Errorf("%q -> %q, want %q", tc.in, got, tc.want)
		}
	}
	c.Duration = 0
	c.Workload = []string{"mlsched", "workload", "hackbench"}
	if got := c.workloadArgv(); !slices.Equal(got, []string{"/bin/mlsched", "workload", "hackbench"}) {
		t.Errorf("no duration: %q", got)
	}
}

func TestVerdictWording(t *testing.T) {
	a := []float64{100, 101, 99, 100, 102, 98, 100, 101, 99, 100}
	faster := make([]float64, len(a))
	slower := make([]float64, len(a))
	for i, x := range a {
		faster[i], slower[i] = x*1.031, x*0.95
	}
	if v := Compare("default", "fifo", a, faster, true, 0.95, 2000, 1).Verdict; !strings.HasPrefix(v, "fifo is 3.1% faster than default, 95% CI [") {
		t.Errorf("faster: %q", v)
	}
	if v := Compare("default", "fifo", a, slower, true, 0.95, 2000, 1).Verdict; !strings.HasPrefix(v, "fifo is 5.0% slower than default, 95% CI [-") {
		t.Errorf("slower: %q", v)
	}
	if v := Compare("default", "fifo", a, slower, false, 0.95, 2000, 1).Verdict; !strings.HasPrefix(v, "fifo is better than default: 5.0% lower") {
		t.Errorf("lower is better: %q", v)
	}
	if v := Compare("default", "fifo", a, a, true, 0.95, 2000, 1).Verdict; !strings.HasPrefix(v, "fifo vs default: no significant difference (+0.0%") {
		t.Errorf("same: %q", v)
	}
}

// Each mlsched arm runs this binary's `run` with its policy; the metrics server stays off so
// that arms never fight over the port.
func TestSchedulerArgv(t *testing.T) {
	c := &Config{Self: "/bin/mlsched"}
	for spec, want := range map[string]string{
		"fifo":              "/bin/mlsched run --policy fifo --metrics-addr ",
		"vtime":             "/bin/mlsched run --policy vtime --metrics-addr ",
		"model":             "/bin/mlsched run --policy model --metrics-addr ",
		"model:/m.bin":      "/bin/mlsched run --policy model --model /m.bin --metrics-addr ",
		"cmd:scx_simple -f": "scx_simple -f",
	} {
		if got := strings.Join(c.schedulerArgv(mustArm(t, spec)), " "); got != want {
			t.Errorf("%s: %q, want %q", spec, got, want)
		}
	}
}

// Every arm that runs mlsched (fifo, vtime, model) needs its binary: without one, Check says
// so before any run.
func TestMlschedArmsNeedBinary(t *testing.T) {
	sys := fakeSysfs(t)
	for _, arm := range []string{"fifo", "vtime", "model"} {
		marker := filepath.Join(t.TempDir(), "ran")
		cfg := Config{Arms: []Arm{mustArm(t, "default"), mustArm(t, arm)}, Workload: []string{"sh", "-c", "touch " + marker},
			Runs: 2, Sysfs: sys}
		_, err := Execute(context.Background(), cfg)
		if err == nil || !strings.Contains(err.Error(), "no mlsched binary") || !strings.Contains(err.Error(), arm) {
			t.Errorf("%s arm without a binary: err = %v, want one naming the arm and the missing binary", arm, err)
		}
		if _, err := os.Stat(marker); err == nil {
			t.Errorf("%s: the workload ran", arm)
		}
	}
}
