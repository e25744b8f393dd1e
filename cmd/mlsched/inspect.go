package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/mlsched/mlsched/features"
	"github.com/mlsched/mlsched/model"
)

func init() {
	register(&command{
		name:    "inspect",
		summary: "summarise a trace or a model file",
		exits:   "2 usage (or no such file), 6 not a readable trace or model file",
		usage:   "FILE [--json]",
		help: `Reads a trace (from 'mlsched capture') or a model (from 'mlsched train') and prints a summary.

For a trace: the capture's header (schema id, horizon, kernel, host, command), samples, label
balance, per-bucket means, every drop counted during capture, and the duration. A damaged or
truncated trace is read up to the damage, then the error names the byte offset.

--json prints one JSON object; for a trace it has at least samples, positives, drops,
schema_id and horizon_ns.`,
		flags: func(fs *flag.FlagSet) func([]string) error {
			jsonOut := fs.Bool("json", false, "print one JSON object")
			return func(args []string) error {
				args, jsonFlag := splitTrailingFlag(args, "--json")
				if len(args) != 1 {
					return errorf(exitUsage, "want exactly one FILE")
				}
				return inspectFile(args[0], *jsonOut || jsonFlag, stdout)
			}
		},
	})
}

// splitTrailingFlag lets a boolean flag follow the positional argument ("inspect FILE --json").
func splitTrailingFlag(args []string, name string) ([]string, bool) {
	out := args[:0:0]
	found := false
	for _, a := range args {
		if a == name || a == "-"+name[2:] {
			found = true
			continue
		}
		out = append(out, a)
	}
	return out, found
}

func inspectFile(path string, jsonOut bool, w io.Writer) error {
	f, err := os.Open(path)
	if err != nil {
		return errorf(exitUsage, "%v", err)
	}
	defer f.Close()
	var magic [8]byte
	n, err := io.ReadFull(f, magic[:])
	if err != nil && err != io.EOF && err != io.ErrUnexpectedEOF {
		return errorf(exitBadInput, "read %s: %v", path, err)
	}
	if n == 0 {
		return errorf(exitBadInput, "%s is empty: neither a trace nor a model (a capture killed before its first write leaves one)", path)
	}
	if head := string(magic[:n]); n < len(magic) {
		kind := ""
		switch isTrace, isModel := strings.HasPrefix(features.TraceMagic, head), strings.HasPrefix(model.Magic, head); {
		case isTrace && isModel:
			kind = "a trace or a model"
		case isTrace:
			kind = "a trace"
		case isModel:
			kind = "a model"
		}
		if kind != "" {
			return errorf(exitBadInput, "%s is %d bytes: %s cut before the end of its header (nothing in it can be read)", path, n, kind)
		}
	}
	if string(magic[:n]) == features.TraceMagic {
		f.Seek(0, io.SeekStart)
		return inspectTrace(f, path, jsonOut, w)
	}
	f.Close()
	return inspectModel(path, jsonOut, w)
}

// TraceReport is what `inspect --json` prints for a trace.
type TraceReport struct {
	File          string                 `json:"file"`
	SchemaID      string                 `json:"schema_id"`
	SchemaMatches bool                   `json:"schema_matches"`
	HorizonNs     uint64                 `json:"horizon_ns"`
	Kernel        string                 `json:"kernel"`
	Host          string                 `json:"host"`
	NumCPU        uint32                 `json:"cpus"`
	Command       string                 `json:"command"`
	Start         time.Time              `json:"start"`
	DurationNs    uint64                 `json:"duration_ns"`
	Samples       uint64                 `json:"samples"`
	Positives     uint64                 `json:"positives"`
	PositiveRatio float64                `json:"positive_ratio"`
	Drops         uint64                 `json:"drops"`
	Complete      bool                   `json:"complete"`
	Error         string                 `json:"error,omitempty"`
	Summary       *features.TraceSummary `json:"trailer,omitempty"`
	Outcomes      map[string]uint64      `json:"outcomes"`
	BucketMeans   []BucketMean           `json:"bucket_means"`
	// SchedMeans are the means of R's scheduling state over the samples (schema v2).
	SchedMeans SchedMeans `json:"sched_means"`
}

// SchedMeans are a trace's mean scheduling state of R.
type SchedMeans struct {
	OnCPUUs float64 `json:"oncpu_us"`
	StintUs float64 `json:"stint_us"`
	Vol     float64 `json:"vol"`
	GapUs   float64 `json:"gap_us"`
}

// BucketMean is one feature's mean value over the trace, in decayed-count units.
type BucketMean struct {
	Bucket  int     `json:"bucket"`
	Syscall string  `json:"syscall"`
	Mean    float64 `json:"mean"`
}

func inspectTrace(r io.Reader, path string, jsonOut bool, w io.Writer) error {
	tr, err := features.NewTraceReaderAnySchema(r)
	if err != nil {
		return withCode(exitBadInput, err)
	}
	h := tr.Header()
	rep := TraceReport{
		File: path, SchemaID: features.FormatSchemaID(h.SchemaID), SchemaMatches: h.SchemaID == features.SchemaID(),
		HorizonNs: h.HorizonNs, Kernel: h.KernelRelease, Host: h.Hostname, NumCPU: h.NumCPU,
		Command: h.Command, Start: time.Unix(0, h.StartUnixNs).UTC(),
		Outcomes: map[string]uint64{},
	}
	var sums [features.NumBuckets]float64
	var sm SchedMeans
	var s features.Sample
	var lastTs uint64
	var readErr error
	for {
		err := tr.Next(&s)
		if err == io.EOF {
			break
		}
		if err != nil {
			readErr = err
			break
		}
		rep.Samples++
		rep.Positives += uint64(s.Label)
		rep.Outcomes[s.Outcome.String()]++
		for i, v := range features.Counts(&s.Feats) {
			sums[i] += float64(v)
		}
		sm.OnCPUUs += float64(s.ROnCPUNs) / 1e3
		sm.StintUs += float64(s.RStintNs) / 1e3
		sm.Vol += float64(s.RVol) / features.VolOne
		sm.GapUs += float64(s.RGapNs) / 1e3
		if s.TsNs > lastTs {
			lastTs = s.TsNs
		}
	}
	if rep.Samples > 0 {
		rep.PositiveRatio = float64(rep.Positives) / float64(rep.Samples)
		n := float64(rep.Samples)
		rep.SchedMeans = SchedMeans{OnCPUUs: sm.OnCPUUs / n, StintUs: sm.StintUs / n, Vol: sm.Vol / n, GapUs: sm.GapUs / n}
	}
	for i, v := range sums {
		m := 0.0
		if rep.Samples > 0 {
			m = v / float64(rep.Samples) / features.FixedOne
		}
		rep.BucketMeans = append(rep.BucketMeans, BucketMean{Bucket: i, Syscall: features.BucketName(i), Mean: m})
	}
	if sum := tr.Summary(); sum != nil {
		rep.Complete = true
		rep.Summary = sum
		rep.DurationNs = sum.DurationNs
		rep.Drops = sum.RingDrops + sum.SwitchDrops + sum.LostSwitch + sum.Unresolved + sum.WriteLost
	} else if lastTs > h.StartKtimeNs {
		rep.DurationNs = lastTs - h.StartKtimeNs
	}
	if readErr != nil {
		rep.Error = readErr.Error()
	}
	if jsonOut {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			return err
		}
	} else {
		printTraceReport(w, &rep)
	}
	if readErr != nil {
		var te *features.TraceError
		if errors.As(readErr, &te) {
			return withCode(exitBadInput, fmt.Errorf("%w (%d samples before it are intact)", readErr, rep.Samples))
		}
		return withCode(exitBadInput, readErr)
	}
	return nil
}

func printTraceReport(w io.Writer, r *TraceReport) {
	match := "matches this mlsched"
	if !r.SchemaMatches {
		match = "DIFFERS from this mlsched's " + features.FormatSchemaID(features.SchemaID())
	}
	fmt.Fprintf(w, "trace     schema %s (%s)\n", r.SchemaID, match)
	fmt.Fprintf(w, "captured  %s on %s, kernel %s, %d CPUs, for %.1fs\n",
		r.Start.Format(time.RFC3339), r.Host, r.Kernel, r.NumCPU, float64(r.DurationNs)/1e9)
	if r.Command != "" {
		fmt.Fprintf(w, "command   %s\n", r.Command)
	}
	fmt.Fprintf(w, "horizon   %v\n", time.Duration(r.HorizonNs))
	fmt.Fprintf(w, "samples   %d: %d positive (%s), %d negative; outcomes voluntary %d, preempted %d, timeout %d\n",
		r.Samples, r.Positives, pct(r.Positives, r.Samples), r.Samples-r.Positives,
		r.Outcomes["voluntary"], r.Outcomes["preempted"], r.Outcomes["timeout"])
	if r.Samples > 0 {
		m := r.SchedMeans
		fmt.Fprintf(w, "R's state mean on-CPU %.0f µs, stint %.0f µs, voluntary %.2f, gap %.0f µs\n", m.OnCPUUs, m.StintUs, m.Vol, m.GapUs)
	}
	if s := r.Summary; s != nil {
		fmt.Fprintf(w, "wakeups   %d seen, %d to an idle CPU, %d skipped\n", s.WakeTotal, s.WakeIdle, s.WakeSkipped)
		fmt.Fprintf(w, "drops     %d total: ring buffer %d wake + %d switch, switch-out missed %d, unresolved %d",
			r.Drops, s.RingDrops, s.SwitchDrops, s.LostSwitch, s.Unresolved)
		if s.WriteLost > 0 {
			fmt.Fprintf(w, ", lost to a failed write %d (the capture ran out of disk; the trace ends early)", s.WriteLost)
		}
		fmt.Fprintln(w)
	} else {
		fmt.Fprintf(w, "drops     unknown: the trace has no trailer\n")
	}
	fmt.Fprintf(w, "bucket means (decayed counts, top 12):\n")
	top := append([]BucketMean(nil), r.BucketMeans...)
	sort.SliceStable(top, func(i, j int) bool { return top[i].Mean > top[j].Mean })
	for _, b := range top[:min(12, len(top))] {
		if b.Mean == 0 {
			break
		}
		fmt.Fprintf(w, "  %2d %-16s %6.2f\n", b.Bucket, b.Syscall, b.Mean)
	}
	if r.Error != "" {
		fmt.Fprintf(w, "error     %s\n", r.Error)
	}
}
