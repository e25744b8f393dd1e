package ab

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Config is one A/B experiment.
type Config struct {
	Arms     []Arm
	Workload []string // argv; a bare "mlsched" means Self
	Runs     int      // measured runs per arm
	Warmup   int      // discarded runs per arm, in the first rounds
	// Duration, if set, is how long each run should take: built-in workloads get --duration,
	// external ones {duration} in their arguments and MLSCHED_AB_DURATION in the environment.
	Duration time.Duration
	Timeout  time.Duration  // per workload run (0: 3*Duration+60s, or 10 minutes)
	Metric   *regexp.Regexp // nil: the last JSON line with a "throughput" number
	Seed     uint64         // the run order; the bootstrap uses it too

	AttachTimeout time.Duration // how long a scheduler may take to show up as enabled
	DetachTimeout time.Duration // how long it may take to exit after SIGINT, and sched_ext to disable

	Self  string // the mlsched binary for fifo and model arms and built-in workloads
	Sysfs string // sched_ext's sysfs directory ("" = DefaultSysfs)

	Note    string    // a caveat printed with the report and on the plot (e.g. "qemu TCG")
	Log     io.Writer // progress lines (nil: none)
	Verbose bool      // also the workload's and the scheduler's output after each run
}

// Run is one workload execution.
type Run struct {
	Seq        int     `json:"seq"`   // 1-based position in the run order
	Round      int     `json:"round"` // 1-based; rounds <= Warmup are warm-up
	Arm        string  `json:"arm"`
	Warmup     bool    `json:"warmup"`
	Throughput float64 `json:"throughput"`
	ElapsedS   float64 `json:"elapsed_s"`
	Ops        string  `json:"ops,omitempty"` // the sched_ext scheduler that was attached
}

// Result is every run of an experiment, in the order they ran.
type Result struct {
	Arms     []Arm     `json:"arms"`
	Workload []string  `json:"workload"`
	Unit     string    `json:"unit,omitempty"`
	Runs     []Run     `json:"runs"`
	Seed     uint64    `json:"seed"`
	Warmup   int       `json:"warmup"`
	PerArm   int       `json:"runs_per_arm"`
	Started  time.Time `json:"started"`
	Finished time.Time `json:"finished"`
	Kernel   string    `json:"kernel,omitempty"`
	CPUs     int       `json:"cpus"`
	Duration string    `json:"duration,omitempty"`
	Note     string    `json:"note,omitempty"`
}

// Values returns the measured (non-warm-up) throughputs of an arm in run order.
func (r *Result) Values(arm string) []float64 {
	var xs []float64
	for _, run := range r.Runs {
		if run.Arm == arm && !run.Warmup {
			xs = append(xs, run.Throughput)
		}
	}
	return xs
}

func (c *Config) sysfs() sysfs {
	if c.Sysfs == "" {
		return sysfs{DefaultSysfs}
	}
	return sysfs{c.Sysfs}
}

// Check validates the experiment before any run: at least two distinct arms, the workload and
// scheduler binaries found, model files readable, and for arms that attach a scheduler,
// sched_ext present (ErrNoSchedExt) and root (ErrNotRoot). It fails at once, so a machine that
// cannot run an arm never prints numbers for the others.
func (c *Config) Check() error {
	if len(c.Arms) < 2 {
		return fmt.Errorf("need two or more arms (--arm NAME=SPEC), got %d", len(c.Arms))
	}
	if c.Runs < 2 {
		return fmt.Errorf("need two or more runs per arm for a spread, got %d", c.Runs)
	}
	if c.Warmup < 0 {
		return fmt.Errorf("warm-up runs must be >= 0, got %d", c.Warmup)
	}
	if len(c.Workload) == 0 {
		return errors.New("no workload: give its command after --")
	}
	seen := map[string]bool{}
	var needing []string
	for _, a := range c.Arms {
		if seen[a.Name] {
			return fmt.Errorf("two arms named %q", a.Name)
		}
		seen[a.Name] = true
		if a.NeedsSchedExt() {
			needing = append(needing, a.Name)
		}
	}
	if len(needing) > 0 {
		fs := c.sysfs()
		if !fs.present() {
			who := "arm " + needing[0] + " needs"
			if len(needing) > 1 {
				who = "arms " + strings.Join(needing, ", ") + " need"
			}
			return fmt.Errorf("%s sched_ext, but %s is missing: %w", who, fs.root, ErrNoSchedExt)
		}
		if c.Sysfs == "" && os.Geteuid() != 0 {
			return fmt.Errorf("arm %s: %w", strings.Join(needing, ", "), ErrNotRoot)
		}
	}
	for _, a := range c.Arms {
		switch a.Kind {
		case KindFIFO, KindVtime, KindModel:
			if c.Self == "" {
				return fmt.Errorf("arm %s: no mlsched binary to run the scheduler", a.Name)
			}
			if a.Kind == KindModel && a.Model != "" {
				f, err := os.Open(a.Model)
				if err != nil {
					return fmt.Errorf("arm %s: model: %w", a.Name, err)
				}
				f.Close()
			}
		case KindCmd:
			if _, err := exec.LookPath(a.Command[0]); err != nil {
				return fmt.Errorf("arm %s: scheduler command: %w", a.Name, err)
			}
		}
	}
	argv := c.workloadArgv()
	if _, err := exec.LookPath(argv[0]); err != nil {
		return fmt.Errorf("workload: %w", err)
	}
	return nil
}

// schedulerArgv is the command that attaches the arm's scheduler.
func (c *Config) schedulerArgv(a Arm) []string {
	switch a.Kind {
	case KindFIFO, KindVtime:
		return []string{c.Self, "run", "--policy", string(a.Kind), "--metrics-addr", ""}
	case KindModel:
		if a.Model == "" {
			return []string{c.Self, "run", "--policy", "model", "--metrics-addr", ""}
		}
		return []string{c.Self, "run", "--policy", "model", "--model", a.Model, "--metrics-addr", ""}
	}
	return a.Command
}

// workloadArgv resolves "mlsched" to Self and applies Duration.
func (c *Config) workloadArgv() []string {
	argv := slices.Clone(c.Workload)
	if argv[0] == "mlsched" && c.Self != "" {
		argv[0] = c.Self
	}
	if c.Duration <= 0 {
		return argv
	}
	d := c.Duration.String()
	for i := range argv {
		argv[i] = strings.ReplaceAll(argv[i], "{duration}", d)
	}
	if len(argv) >= 3 && argv[0] == c.Self && argv[1] == "workload" && !slices.ContainsFunc(argv, isDurationFlag) {
		argv = append(argv[:3:3], append([]string{"--duration", d}, argv[3:]...)...)
	}
	return argv
}

func isDurationFlag(s string) bool {
	return s == "--duration" || s == "-duration" || strings.HasPrefix(s, "--duration=") || strings.HasPrefix(s, "-duration=")
}

func (c *Config) timeout() time.Duration {
	switch {
	case c.Timeout > 0:
		return c.Timeout
	case c.Duration > 0:
		return 3*c.Duration + time.Minute
	}
	return 10 * time.Minute
}

// slot is one planned run.
type slot struct {
	round, arm int
	warmup     bool
}

// Order plans the runs: warmup+runs rounds, each a seeded random permutation of the arms, so
// every arm sees the same drift (thermal, page cache, background load) and no arm always runs
// right after another.
func Order(arms, warmup, runs int, seed uint64) []slot {
	rng := rand.New(rand.NewPCG(seed, 0x61622d6f72646572)) // "ab-order"
	var plan []slot
	for r := 0; r < warmup+runs; r++ {
		for _, a := range rng.Perm(arms) {
			plan = append(plan, slot{round: r + 1, arm: a, warmup: r < warmup})
		}
	}
	return plan
}

// Execute runs the experiment. It calls Check first. On error the result holds the runs done
// so far.
func Execute(ctx context.Context, c Config) (*Result, error) {
	if c.AttachTimeout <= 0 {
		c.AttachTimeout = 30 * time.Second
	}
	if c.DetachTimeout <= 0 {
		c.DetachTimeout = 5 * time.Second
	}
	if c.Log == nil {
		c.Log = io.Discard
	}
	var shown []string // as run, with "mlsched" as the user wrote it
	if len(c.Workload) > 0 {
		shown = c.workloadArgv()
		shown[0] = c.Workload[0]
	}
	res := &Result{Arms: c.Arms, Workload: shown, Seed: c.Seed, Warmup: c.Warmup, PerArm: c.Runs,
		Started: time.Now(), Kernel: kernelRelease(), CPUs: runtime.NumCPU(), Note: c.Note}
	if c.Duration > 0 {
		res.Duration = c.Duration.String()
	}
	if err := c.Check(); err != nil {
		return res, err
	}
	fs := c.sysfs()
	argv := c.workloadArgv()
	plan := Order(len(c.Arms), c.Warmup, c.Runs, c.Seed)
	width := 0
	for _, a := range c.Arms {
		width = max(width, len(a.Name))
	}
	for i, s := range plan {
		arm := c.Arms[s.arm]
		run := Run{Seq: i + 1, Round: s.round, Arm: arm.Name, Warmup: s.warmup}
		tp, unit, elapsed, ops, err := c.runOne(ctx, fs, arm, argv, run)
		if err != nil {
			res.Finished = time.Now()
			return res, fmt.Errorf("run %d/%d (%s): %w", i+1, len(plan), arm.Name, err)
		}
		run.Throughput, run.ElapsedS, run.Ops = tp, elapsed.Seconds(), ops
		if res.Unit == "" {
			res.Unit = unit
		}
		res.Runs = append(res.Runs, run)
		tag := ""
		if s.warmup {
			tag = "  (warm-up, discarded)"
		}
		fmt.Fprintf(c.Log, "[%*d/%d] %-*s %14s %s  %6.2fs%s\n", len(strconv.Itoa(len(plan))), i+1, len(plan),
			width, arm.Name, formatValue(tp), unit, elapsed.Seconds(), tag)
	}
	res.Finished = time.Now()
	return res, nil
}

// runOne attaches the arm's scheduler (if any), runs the workload once, checks the scheduler
// stayed attached throughout, and detaches it.
func (c *Config) runOne(ctx context.Context, fs sysfs, arm Arm, argv []string, run Run) (tp float64, unit string, elapsed time.Duration, ops string, err error) {
	var s *scheduler
	if arm.NeedsSchedExt() {
		if !fs.present() {
			return 0, "", 0, "", fmt.Errorf("%s is missing: %w", fs.root, ErrNoSchedExt)
		}
		s, err = startScheduler(ctx, fs, arm, c.schedulerArgv(arm), c.AttachTimeout, c.DetachTimeout)
		if err != nil {
			return 0, "", 0, "", err
		}
		ops = s.ops
		defer func() {
			if serr := s.stop(fs, c.DetachTimeout); serr != nil && err == nil {
				err = serr
			}
			if c.Verbose {
				fmt.Fprintf(c.Log, "--- %s scheduler output:\n%s", arm.Name, s.out.String())
			}
		}()
	} else if !fs.idle() {
		return 0, "", 0, "", fmt.Errorf("arm %s runs without a sched_ext scheduler, but %q is enabled: %w", arm.Name, fs.ops(), ErrBusy)
	}

	out, elapsed, err := c.runWorkload(ctx, argv, run)
	if err != nil {
		return 0, "", elapsed, ops, err
	}
	if s != nil {
		if err := s.check(fs); err != nil {
			return 0, "", elapsed, ops, err
		}
	} else if !fs.idle() {
		return 0, "", elapsed, ops, fmt.Errorf("arm %s: a sched_ext scheduler (%q) was enabled during the run: %w", arm.Name, fs.ops(), ErrBusy)
	}
	tp, unit, err = ParseThroughput(out, c.Metric)
	if err != nil {
		return 0, "", elapsed, ops, fmt.Errorf("workload output: %w%s", err, tailOf(out))
	}
	return tp, unit, elapsed, ops, nil
}

func (c *Config) runWorkload(ctx context.Context, argv []string, run Run) ([]byte, time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout())
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	var out bytes.Buffer
	errOut := &tailBuffer{max: 4 << 10}
	cmd.Stdout = &out
	cmd.Stderr = errOut
	if c.Verbose {
		cmd.Stdout = io.MultiWriter(&out, c.Log)
		cmd.Stderr = io.MultiWriter(errOut, c.Log)
	}
	cmd.Env = append(os.Environ(),
		"MLSCHED_AB_ARM="+run.Arm,
		"MLSCHED_AB_RUN="+strconv.Itoa(run.Seq),
		"MLSCHED_AB_WARMUP="+strconv.FormatBool(run.Warmup))
	if c.Duration > 0 {
		cmd.Env = append(cmd.Env, "MLSCHED_AB_DURATION="+c.Duration.String())
	}
	// The workload's whole process group goes on timeout or ^C: shells leave children behind.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 2 * time.Second
	start := time.Now()
	err := cmd.Run()
	elapsed := time.Since(start)
	switch {
	case ctx.Err() == context.DeadlineExceeded:
		return nil, elapsed, fmt.Errorf("workload did not finish within %v (--timeout)", c.timeout())
	case ctx.Err() != nil:
		return nil, elapsed, ctx.Err()
	case err != nil:
		return nil, elapsed, fmt.Errorf("workload %s: %w%s", argv[0], err, errOut.indented())
	}
	return out.Bytes(), elapsed, nil
}

// ParseThroughput reads the throughput from a workload's output. With re, the last match's
// first capture group is the value (commas and underscores ignored). Without, the last line
// that is a JSON object with a numeric "throughput" (and optionally a "unit" string).
func ParseThroughput(out []byte, re *regexp.Regexp) (float64, string, error) {
	if re != nil {
		ms := re.FindAllSubmatch(out, -1)
		if len(ms) == 0 {
			return 0, "", fmt.Errorf("--metric-regexp %q does not match", re)
		}
		m := ms[len(ms)-1]
		if len(m) < 2 {
			return 0, "", fmt.Errorf("--metric-regexp %q has no capture group", re)
		}
		s := strings.NewReplacer(",", "", "_", "").Replace(strings.TrimSpace(string(m[1])))
		v, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return 0, "", fmt.Errorf("--metric-regexp %q captured %q: not a number", re, m[1])
		}
		if !(v > 0) || math.IsInf(v, 0) {
			return 0, "", fmt.Errorf("--metric-regexp %q captured %q: want a positive finite number (ratios between arms need one)", re, m[1])
		}
		return v, "", nil
	}
	lines := bytes.Split(out, []byte("\n"))
	for i := len(lines) - 1; i >= 0; i-- {
		l := bytes.TrimSpace(lines[i])
		if len(l) == 0 || l[0] != '{' {
			continue
		}
		var rec struct {
			Throughput *float64 `json:"throughput"`
			Unit       string   `json:"unit"`
		}
		if json.Unmarshal(l, &rec) != nil || rec.Throughput == nil {
			continue
		}
		if v := *rec.Throughput; !(v > 0) || math.IsInf(v, 0) {
			return 0, "", fmt.Errorf("throughput %v in %s: want a positive finite number (ratios between arms need one)", v, l)
		}
		return *rec.Throughput, rec.Unit, nil
	}
	return 0, "", errors.New(`no {"throughput": X} JSON line (print one, or pass --metric-regexp)`)
}

func tailOf(out []byte) string {
	t := &tailBuffer{max: 2 << 10}
	t.Write(out)
	return t.indented()
}

func kernelRelease() string {
	var u syscall.Utsname
	if syscall.Uname(&u) != nil {
		return ""
	}
	var b strings.Builder
	for _, c := range u.Release {
		if c == 0 {
			break
		}
		b.WriteByte(byte(c))
	}
	return b.String()
}

// formatValue prints a throughput with 4-5 significant digits and thousands separators.
func formatValue(v float64) string {
	switch a := abs(v); {
	case a >= 1000:
		return groupThousands(strconv.FormatFloat(v, 'f', 0, 64))
	case a >= 100:
		return strconv.FormatFloat(v, 'f', 1, 64)
	case a >= 1:
		return strconv.FormatFloat(v, 'f', 3, 64)
	}
	return strconv.FormatFloat(v, 'g', 4, 64)
}

func groupThousands(s string) string {
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

func abs(x float64) float64 {
	if x < 0 {
		return -x
	}
	return x
}
