package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/mlsched/mlsched/features"
	"github.com/mlsched/mlsched/features/outfile"
	"github.com/mlsched/mlsched/model"
	"github.com/mlsched/mlsched/training"
)

func init() {
	register(&command{
		name:    "train",
		summary: "train the yield predictor on captured traces and write a model file",
		exits:   "1 failed (a file could not be read or written), or interrupted (Ctrl-C while training writes the best epoch so far), 2 usage, 6 a bad, truncated or mismatched trace",
		usage:   "-o MODEL [--hidden 16] [--epochs N] [--seed N] [--val-frac F] [--plot FILE] TRACE...",
		help: `Trains the 68 -> hidden (ReLU) -> 1 (sigmoid) net that predicts whether the running task R
leaves its CPU voluntarily within the traces' horizon, and writes it to MODEL.

Inputs (feature schema v2) are log1p of R's 64 decayed syscall counts and four of R's
scheduling state: its on-CPU time at the wakeup, the averages of its CPU stints and of its
voluntary leaves, and its time off the CPU before this stint (docs/FEATURES.md); each is
standardised with the training data's mean and standard deviation (stored in the model).
With --per-trace N, at most N training samples of each trace are used (drawn at random), so
that a program with many wakeups does not outweigh the others. The last --val-frac of each trace, by time, is
held out for validation: the reported figures are about the future of each workload, not a
random shuffle of its past. The loss weighs both classes equally; the epoch with the lowest
validation loss is kept, and the decision threshold is the one that maximises balanced
accuracy (or, with --threshold-for accuracy, accuracy) on the validation data. Same traces,
same flags, same --seed: same model.

It prints a line per epoch, then the validation metrics of the net next to two baselines:
the majority class (of the validation data) and "R yields if it has been on the CPU for less
than t", with t chosen on the training data.

All traces must have this binary's feature schema and the same horizon; --horizon H relabels
them for a shorter common H (a trace stores when R left the CPU, so "yields within H" can be
recomputed for any H up to the capture's). Samples are held in memory (about 280 bytes
each); more than --max-samples (default 20,000,000, ~5.6 GB) is refused.

See docs/TRAINING.md.

Examples:
  mlsched train -o m.bin nginx.trace build.trace
  mlsched train -o m.bin --epochs 40 --plot curves.svg t.trace
  mlsched eval --model m.bin new.trace`,
		flags: trainFlags,
	})
}

type trainOpts struct {
	out        string
	plot       string
	hidden     int
	epochs     int
	batch      int
	lr         float64
	seed       uint64
	valFrac    float64
	maxSamples int
	perTrace   int
	horizon    time.Duration
	thrFor     string
	coverage   float64
	dropout    float64
}

func trainFlags(fs *flag.FlagSet) func([]string) error {
	var o trainOpts
	fs.StringVar(&o.out, "o", "", "write the model to `MODEL` (required; - for stdout, the report then goes to stderr)")
	fs.StringVar(&o.plot, "plot", "", "write the training curves to `FILE` (SVG)")
	fs.IntVar(&o.hidden, "hidden", model.DefaultHidden, fmt.Sprintf("hidden units (the net in BPF, run's default --infer kernel, holds at most %d)", model.KernelMaxHidden))
	fs.IntVar(&o.epochs, "epochs", 20, "training epochs")
	fs.IntVar(&o.batch, "batch", 256, "minibatch size")
	fs.Float64Var(&o.lr, "lr", 0.003, "Adam learning rate")
	fs.Uint64Var(&o.seed, "seed", 1, "random seed (initial weights, minibatch order)")
	fs.Float64Var(&o.valFrac, "val-frac", 0.2, "fraction of each trace, at its end, held out for validation")
	fs.StringVar(&o.thrFor, "threshold-for", "balanced", "the decision threshold maximises `balanced` accuracy or plain `accuracy` on validation")
	fs.Float64Var(&o.coverage, "abstain-coverage", training.DefaultMinCoverage, "the abstention margin (no opinion near the threshold) leaves at least fraction `F` of the validation samples decided; 1: no margin")
	fs.DurationVar(&o.horizon, "horizon", 0, "label for horizon `H` instead of the traces' own (relabels traces captured with H or longer)")
	fs.IntVar(&o.maxSamples, "max-samples", training.DefaultMaxSamples, "refuse more samples than `N` (memory: ~280 bytes each)")
	fs.Float64Var(&o.dropout, "count-dropout", 0, "hide a training sample's 64 syscall counts from the net with probability `P` (0 <= P < 1), so that it leans less on them: they carry least to programs it has not seen; 0: off")
	fs.IntVar(&o.perTrace, "per-trace", 0, "train on at most `N` samples of each trace, at random (each program weighs at most alike; validation keeps all); 0: all")
	return func(args []string) error { return runTrain(o, args, reportWriter(o.out, o.plot)) }
}

func runTrain(o trainOpts, traces []string, w io.Writer) error {
	switch {
	case o.out == "":
		return errorf(exitUsage, "-o MODEL is required")
	case len(traces) == 0:
		return errorf(exitUsage, "no traces: give at least one TRACE (see mlsched capture)")
	case o.hidden < 1 || o.hidden > model.MaxHidden:
		return errorf(exitUsage, "--hidden %d: want 1..%d", o.hidden, model.MaxHidden)
	case o.epochs < 1 || o.batch < 1 || !(o.lr > 0):
		return errorf(exitUsage, "--epochs, --batch and --lr must be positive")
	case !(o.dropout >= 0 && o.dropout < 1):
		return errorf(exitUsage, "--count-dropout %v: want 0 <= P < 1", o.dropout)
	case o.perTrace < 0:
		return errorf(exitUsage, "--per-trace %d: want >= 0 (0: every sample)", o.perTrace)
	case o.thrFor != "balanced" && o.thrFor != "accuracy":
		return errorf(exitUsage, "--threshold-for %q: want balanced or accuracy", o.thrFor)
	case !(o.coverage >= 0.5 && o.coverage <= 1):
		return errorf(exitUsage, "--abstain-coverage %v: want 0.5..1 (a model that decides less than half is no model)", o.coverage)
	case o.horizon < 0 || o.horizon > time.Duration(features.MaxHorizonNs):
		return errorf(exitUsage, "--horizon %v: must be in (0, 1m] (0 or unset: the traces' own)", o.horizon)
	case !(o.valFrac >= 0 && o.valFrac < 1):
		return errorf(exitUsage, "--val-frac %v: want 0 <= F < 1", o.valFrac)
	}
	if o.hidden > model.KernelMaxHidden {
		fmt.Fprintf(stderr, "mlsched train: note: --hidden %d is more than the %d units the kernel form holds: `mlsched run` will need --infer user for this model (the default --infer kernel refuses it)\n", o.hidden, model.KernelMaxHidden)
	}
	// Find out now, not after an hour of training, that the results cannot be written.
	if err := checkOutputsDistinct([]output{{"-o", o.out}, {"--plot", o.plot}}, traces); err != nil {
		return err
	}
	if err := checkNotTerminal("-o", o.out); err != nil {
		return err
	}
	if err := checkWritable(o.out); err != nil {
		return err
	}
	if o.plot != "" {
		if err := checkWritable(o.plot); err != nil {
			return err
		}
	}

	// Ctrl-C (or SIGTERM) while training ends it after the current epoch, with the best epoch
	// so far written; a second one quits at once (the default action, restored).
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	var interrupted atomic.Bool
	done := make(chan struct{})
	defer func() { signal.Stop(sigs); close(done) }()
	go func() {
		select {
		case <-sigs:
			interrupted.Store(true)
			signal.Stop(sigs)
			fmt.Fprintf(stderr, "\nmlsched train: interrupted: finishing this epoch, then writing the best so far (Ctrl-C again to quit now, writing nothing)\n")
		case <-done:
		}
	}()

	start := time.Now()
	ds, err := training.LoadTracesPerTrace(traces, o.valFrac, o.maxSamples, uint64(o.horizon), o.perTrace)
	if err != nil {
		return traceErr(err)
	}
	if interrupted.Load() {
		return errorf(exitFailure, "interrupted while loading the traces: nothing written")
	}
	pos := ds.Positives(nil)
	fmt.Fprintf(w, "loaded %d samples from %d trace(s) in %.1fs: %.1f%% positive (R yields within %v), schema %s\n",
		ds.Len(), len(traces), time.Since(start).Seconds(), percent(pos, ds.Len()),
		time.Duration(ds.HorizonNs), features.FormatSchemaID(features.SchemaID()))
	fmt.Fprintf(w, "split by time: %d training, %d validation (the last %g%% of each trace)\n",
		len(ds.Train), len(ds.Val), 100*o.valFrac)

	cfg := training.Config{
		Hidden: o.hidden, Epochs: o.epochs, BatchSize: o.batch, LearnRate: o.lr, Seed: o.seed, ThresholdFor: o.thrFor,
		MinCoverage: o.coverage, CountDropout: o.dropout,
		Progress: func(s training.EpochStats) {
			fmt.Fprintf(w, "epoch %3d/%d  loss %.4f  val loss %.4f  val acc %.4f  bal %.4f  auc %.4f  %6.0f samples/s\n",
				s.Epoch, o.epochs, s.TrainLoss, s.ValLoss, s.ValAccuracy, s.ValBalancedAccuracy, s.ValAUC, s.SamplesPerSec)
		},
		Stop: interrupted.Load,
	}
	res, err := training.Train(ds, cfg)
	if err != nil {
		return withCode(exitBadInput, err)
	}
	where := "validation"
	if res.OnTraining {
		where = "training data (--val-frac 0: no held-out data, figures are optimistic)"
	}
	if res.Stopped > 0 {
		fmt.Fprintf(w, "interrupted after epoch %d of %d: the model is the best of those (note stopped_after_epoch)\n", res.Stopped, o.epochs)
	}
	fmt.Fprintf(w, "kept epoch %d (lowest validation loss); threshold %.4f (max %s on %s)\n",
		res.BestEpoch, res.Report.Threshold, map[string]string{"balanced": "balanced accuracy", "accuracy": "accuracy"}[o.thrFor], where)
	fmt.Fprintf(w, "training throughput: %.0f samples/s (%d hidden, batch %d)\n\n", res.SamplesPerSec, o.hidden, o.batch)
	r := res.Report
	fmt.Fprintf(w, "%s: %d samples, %.1f%% positive\n", where, r.Net.N, percent(r.Net.Positives, r.Net.N))
	printMetricsTable(w, []metricsRow{
		{"net", r.Net},
		{"majority class", r.Majority},
		{fmt.Sprintf("on-CPU < %v", time.Duration(r.HeuristicNs)), r.Heuristic},
	})
	printGoal(w, r.Net, r.Majority)
	printConfident(w, r.Confident)

	if err := res.Model.Save(o.out); err != nil {
		return err
	}
	fmt.Fprintf(w, "\nwrote %s\n", o.out)
	if o.plot != "" {
		title := fmt.Sprintf("mlsched train: %d samples, hidden %d, seed %d", ds.Len(), o.hidden, o.seed)
		if err := writePlot(o.plot, title, res); err != nil {
			return err
		}
		fmt.Fprintf(w, "wrote %s\n", o.plot)
	}
	if res.Stopped > 0 {
		return errorf(exitFailure, "interrupted after epoch %d of %d; %s holds the best of them", res.Stopped, o.epochs, o.out)
	}
	return nil
}

func writePlot(path, title string, res *training.Result) error {
	err := outfile.WriteWith(path, func(w io.Writer) error {
		return training.WriteSVG(w, title, res.History, res.BestEpoch)
	})
	if err != nil {
		return fmt.Errorf("write plot: %w", err)
	}
	return nil
}

// checkWritable fails unless a file can be created at path: its directory exists and is
// writable, and path is not a directory. It leaves nothing behind.
func checkWritable(path string) error {
	if st, err := os.Stat(path); err == nil && st.IsDir() {
		return errorf(exitUsage, "output %s is a directory", path)
	}
	if err := outfile.CheckWritable(path); err != nil {
		return errorf(exitFailure, "cannot write %s: %w", path, err)
	}
	return nil
}

// traceErr gives bad or mismatched input traces the bad-input exit code.
func traceErr(err error) error {
	var te *features.TraceError
	if errors.As(err, &te) || errors.Is(err, training.ErrHorizonMismatch) || errors.Is(err, training.ErrTooLarge) {
		return withCode(exitBadInput, err)
	}
	return err
}

type metricsRow struct {
	name string
	m    training.Metrics
}

func printMetricsTable(w io.Writer, rows []metricsRow) {
	fmt.Fprintf(w, "%-22s %9s %9s %9s %9s %9s\n", "", "accuracy", "balanced", "precision", "recall", "ROC AUC")
	for _, r := range rows {
		fmt.Fprintf(w, "%-22s %9s %9s %9s %9s %9s\n", r.name,
			f4(r.m.Accuracy), f4(r.m.BalancedAccuracy), f4(r.m.Precision), f4(r.m.Recall), f4(r.m.AUC))
	}
}

// printGoal states whether the project's quality goal (issue 13: time-held-out accuracy >= 0.90
// and >= the majority class + 5 points, balanced accuracy >= 0.85) is met on these figures.
func printGoal(w io.Writer, net, majority training.Metrics) {
	lift := 100 * (net.Accuracy - majority.Accuracy)
	ok := net.Accuracy >= 0.90 && lift >= 5 && net.BalancedAccuracy >= 0.85
	verdict := "met"
	if !ok {
		verdict = "NOT met"
	}
	fmt.Fprintf(w, "goal (accuracy >= 0.90, >= 5 points above majority, balanced >= 0.85): %s (%.1f points above majority)\n",
		verdict, lift)
}

func f4(x float64) string {
	if x != x {
		return "-"
	}
	return fmt.Sprintf("%.4f", x)
}

func percent(a, n int) float64 {
	if n == 0 {
		return 0
	}
	return 100 * float64(a) / float64(n)
}
