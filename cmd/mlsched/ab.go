package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"regexp"
	"strings"
	"syscall"
	"time"

	"github.com/mlsched/mlsched/ab"
	"github.com/mlsched/mlsched/features/outfile"
)

func init() {
	register(&command{
		name:    "ab",
		summary: "A/B test schedulers on a workload: interleaved runs, CIs, verdict",
		usage:   "--arm NAME=SPEC --arm NAME=SPEC... [--runs N] [--warmup N] [--duration D] [--json FILE] [--plot FILE] -- WORKLOAD...",
		help: `
Is a scheduler faster on my workload, and how sure are we? Run the workload under two or
more arms, interleaved in random order (each round runs every arm once, in a seeded shuffle,
so drift hits every arm alike), discard the warm-up rounds, and compare each arm with the
first: mean ratio with a 95% bootstrap confidence interval, Welch's t-test, and a verdict.

Arms (SPEC):
  default         no sched_ext scheduler: the kernel's own
  fifo            mlsched run --policy fifo (this binary)
  vtime           mlsched run --policy vtime (the weighted-vtime queue, no model)
  model:PATH      mlsched run --model PATH
  model           mlsched run with the model built into the binary
  cmd:COMMAND     any sched_ext scheduler, e.g. cmd:"scx_simple" or cmd:"scx_rusty -v",
                  started before and stopped (SIGINT) after each of its runs

For an arm with a scheduler, ab checks that /sys/kernel/sched_ext/state is "enabled" and
root/ops names it (mlsched for fifo, vtime and model) before the run, that it stayed attached through
it, and that sched_ext is disabled again after; the default arm checks no scheduler is
attached. On a kernel without sched_ext, an arm that needs it fails before any run.

The workload is any command that prints its throughput: a JSON line {"throughput": X} (the
last one counts; a "unit" field is shown), or a number matched by --metric-regexp (first
capture group, last match). A bare "mlsched" is this binary, so the built-ins run as
'-- mlsched workload hackbench' (see mlsched workload --help). --duration D is passed to a
built-in workload as --duration, and to other commands as {duration} in their arguments and
MLSCHED_AB_DURATION in their environment; MLSCHED_AB_ARM and MLSCHED_AB_RUN are set too.

Output: one progress line per run on stderr, the report on stdout, --json FILE for machines,
--plot FILE an SVG (runs per arm, change vs the first arm with its CI, runs in order).

Exit codes: 2 usage, 3 not root, 4 no sched_ext, 5 another scheduler is attached,
1 an arm failed to attach or the workload failed.`,
		flags: abFlags,
	})
}

type armList []ab.Arm

func (l *armList) String() string {
	var s []string
	for _, a := range *l {
		s = append(s, a.Name+"="+a.Spec)
	}
	return strings.Join(s, " ")
}

func (l *armList) Set(v string) error {
	a, err := ab.ParseArm(v)
	if err != nil {
		return err
	}
	*l = append(*l, a)
	return nil
}

type abOpts struct {
	arms          armList
	runs, warmup  int
	duration      time.Duration
	timeout       time.Duration
	attachTimeout time.Duration
	jsonPath      string
	plotPath      string
	metricRegexp  string
	lowerIsBetter bool
	seed          uint64
	resamples     int
	verbose       bool
	note          string
}

func abFlags(fs *flag.FlagSet) func([]string) error {
	o := &abOpts{}
	fs.Var(&o.arms, "arm", "`NAME=SPEC`: an arm (repeat; the first is the baseline); SPEC is default, fifo, vtime, model, model:PATH or cmd:COMMAND")
	fs.IntVar(&o.runs, "runs", 10, "measured runs per arm `N`")
	fs.IntVar(&o.warmup, "warmup", 1, "warm-up runs per arm `N`, discarded")
	fs.DurationVar(&o.duration, "duration", 0, "length of each run `D` (see above; 0: the workload's own)")
	fs.DurationVar(&o.timeout, "timeout", 0, "kill a workload run after `D` (0: 3x --duration + 1m, or 10m)")
	fs.DurationVar(&o.attachTimeout, "attach-timeout", 30*time.Second, "an arm's scheduler must be enabled within `D` (loading takes ~5 s under qemu TCG)")
	fs.StringVar(&o.jsonPath, "json", "", "write the report and every run as JSON to `FILE` (- for stdout, the text report then goes to stderr)")
	fs.StringVar(&o.plotPath, "plot", "", "write an SVG plot to `FILE`")
	fs.StringVar(&o.metricRegexp, "metric-regexp", "", "read the throughput from the workload's output with `RE` (first group)")
	fs.BoolVar(&o.lowerIsBetter, "lower-is-better", false, "the metric is a time or a latency: lower wins")
	fs.Uint64Var(&o.seed, "seed", 0, "seed `N` for the run order and the bootstrap (0: from the clock; the report shows it)")
	fs.IntVar(&o.resamples, "resamples", 10000, "bootstrap resamples `N`")
	fs.StringVar(&o.note, "note", "", "a caveat `TEXT` shown with the report and on the plot, e.g. \"qemu TCG: overhead, not speedups\"")
	fs.BoolVar(&o.verbose, "v", false, "verbose: show the workload's and the schedulers' output")
	return func(args []string) error { return runAB(o, args) }
}

func runAB(o *abOpts, args []string) error {
	switch {
	case len(o.arms) < 2:
		return errorf(exitUsage, "need two or more arms, e.g. --arm default=default --arm fifo=fifo")
	case o.runs < 2:
		return errorf(exitUsage, "--runs must be >= 2 (a spread needs two runs), got %d", o.runs)
	case o.warmup < 0:
		return errorf(exitUsage, "--warmup must be >= 0")
	case o.resamples < 100:
		return errorf(exitUsage, "--resamples must be >= 100")
	case o.duration < 0 || o.timeout < 0:
		return errorf(exitUsage, "--duration and --timeout must be >= 0 (0: the workload's own, the default timeout)")
	case len(args) == 0:
		return errorf(exitUsage, "no workload: give its command after --, e.g. -- mlsched workload hackbench")
	}
	cfg := ab.Config{Arms: o.arms, Workload: args, Runs: o.runs, Warmup: o.warmup, Duration: o.duration,
		Timeout: o.timeout, Seed: o.seed, Note: o.note, AttachTimeout: o.attachTimeout, Log: stderr, Verbose: o.verbose}
	if o.metricRegexp != "" {
		re, err := regexp.Compile(o.metricRegexp)
		if err != nil {
			return errorf(exitUsage, "--metric-regexp: %v", err)
		}
		if re.NumSubexp() < 1 {
			return errorf(exitUsage, "--metric-regexp %q needs a capture group around the number", o.metricRegexp)
		}
		cfg.Metric = re
	}
	if cfg.Seed == 0 {
		cfg.Seed = uint64(time.Now().UnixNano()) % 1_000_000
	}
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find own binary: %w", err)
	}
	cfg.Self = self
	if err := cfg.Check(); err != nil {
		return abError(err)
	}
	// Fail before the first run, not after an hour, if an output file cannot be written.
	if err := checkOutputsDistinct([]output{{"--json", o.jsonPath}, {"--plot", o.plotPath}}, nil); err != nil {
		return err
	}
	for _, p := range []string{o.jsonPath, o.plotPath} {
		if p == "" {
			continue
		}
		if err := outfile.CheckWritable(p); err != nil {
			return errorf(exitUsage, "output: %v", err)
		}
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	fmt.Fprintf(stderr, "ab: %d arms x (%d + %d warm-up) runs of %s, seed %d\n", len(cfg.Arms), o.runs, o.warmup, strings.Join(args, " "), cfg.Seed)
	res, err := ab.Execute(ctx, cfg)
	interrupted := false
	if err != nil {
		if ctx.Err() == nil {
			return abError(err)
		}
		// Ctrl-C: the finished runs are still a report if every arm has two of them (a spread).
		if !everyArmHas(res, 2) { // Execute returns its result whatever the error
			return errorf(exitFailure, "interrupted after %d runs; no report (an arm has fewer than 2 measured runs)", len(res.Runs))
		}
		interrupted = true
		res.Note = strings.TrimSpace(res.Note + fmt.Sprintf(" interrupted after %d runs: a partial report", len(res.Runs)))
		fmt.Fprintf(stderr, "ab: interrupted after %d runs: reporting those\n", len(res.Runs))
	}
	rep := ab.Analyze(res, ab.AnalyzeOptions{LowerIsBetter: o.lowerIsBetter, Resamples: o.resamples})
	w := reportWriter(o.jsonPath, o.plotPath)
	fmt.Fprintln(w)
	if err := rep.WriteText(w); err != nil {
		return err
	}
	if o.jsonPath != "" {
		if err := outfile.WriteWith(o.jsonPath, rep.WriteJSON); err != nil {
			return err
		}
		fmt.Fprintf(stderr, "ab: report and runs in %s\n", o.jsonPath)
	}
	if o.plotPath != "" {
		if err := outfile.WriteWith(o.plotPath, rep.WriteSVG); err != nil {
			return err
		}
		fmt.Fprintf(stderr, "ab: plot in %s\n", o.plotPath)
	}
	if interrupted {
		return errorf(exitFailure, "interrupted: the report covers the %d runs that finished", len(res.Runs))
	}
	return nil
}

// everyArmHas: every arm of res has at least n measured (not warm-up) runs.
func everyArmHas(res *ab.Result, n int) bool {
	for _, a := range res.Arms {
		if len(res.Values(a.Name)) < n {
			return false
		}
	}
	return len(res.Arms) > 0
}

// abError gives ab's errors their exit codes.
func abError(err error) error {
	switch {
	case errors.Is(err, ab.ErrNoSchedExt):
		return withCode(exitNoKernel, err)
	case errors.Is(err, ab.ErrNotRoot):
		return withCode(exitNotRoot, err)
	case errors.Is(err, ab.ErrBusy):
		return withCode(exitBusy, err)
	}
	return withCode(exitFailure, err)
}
