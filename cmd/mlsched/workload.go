package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/mlsched/mlsched/ab/workload"
)

func init() {
	var list strings.Builder
	for _, w := range workload.All() {
		fmt.Fprintf(&list, "  %-10s %s (%s)\n", w.Name, w.Summary, w.Unit)
	}
	register(&command{
		name:    "workload",
		summary: "run a built-in benchmark workload (for ab); prints one JSON line",
		exits:   "1 failed, 2 usage",
		usage:   "NAME [--duration D] [--threads N] [workload flags]",
		help: `
Run one of mlsched's built-in workloads for a fixed time and print its throughput as one JSON
line, {"workload": ..., "throughput": X, "unit": ..., ...}, the line 'mlsched ab' reads. They
are plain Go, in this binary, so they run wherever mlsched does (the test VM too); the threads
that matter are locked to OS threads and sleep and wake in the kernel (pipes, sockets).

Workloads:
` + list.String() + `
'mlsched workload NAME --help' shows a workload's own flags. What --threads counts depends on
the workload: all threads for hackbench, workers for pool, client connections for http.`,
		flags: workloadFlags,
	})
}

func workloadFlags(fs *flag.FlagSet) func([]string) error {
	o := workload.Options{Duration: 5 * time.Second}
	fs.DurationVar(&o.Duration, "duration", o.Duration, "run for `D`")
	fs.IntVar(&o.Threads, "threads", 0, "threads `N` (0: the workload's default)")
	return func(args []string) error { return runWorkload(o, args) }
}

func runWorkload(o workload.Options, args []string) error {
	if len(args) == 0 {
		return errorf(exitUsage, "which workload? (see mlsched workload --help)")
	}
	w := workload.Lookup(args[0])
	if w == nil {
		var names []string
		for _, w := range workload.All() {
			names = append(names, w.Name)
		}
		return errorf(exitUsage, "unknown workload %q (have %s)", args[0], strings.Join(names, ", "))
	}
	fs := flag.NewFlagSet("mlsched workload "+w.Name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.DurationVar(&o.Duration, "duration", o.Duration, "run for `D`")
	fs.IntVar(&o.Threads, "threads", o.Threads, "threads `N` (0: the workload's default)")
	runFn := w.Flags(fs)
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprintf(stdout, "Usage: mlsched workload %s [flags]\n\n%s; throughput in %s.\n\nFlags:\n", w.Name, w.Summary, w.Unit)
			fs.SetOutput(stdout)
			fs.PrintDefaults()
			return nil
		}
		return errorf(exitUsage, "%s: %v", w.Name, err)
	}
	if fs.NArg() > 0 {
		return errorf(exitUsage, "unexpected arguments %q", fs.Args())
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	r, err := runFn(ctx, o)
	if err != nil {
		if ctx.Err() != nil {
			return errorf(exitFailure, "%s: interrupted", w.Name)
		}
		return withCode(exitFailure, err)
	}
	return r.WriteJSON(stdout)
}
