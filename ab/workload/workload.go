// Package workload holds mlsched's built-in benchmark workloads for `mlsched ab`: in-process
// Go, no external programs, so they run anywhere a static mlsched binary does (the test VM
// too). Each runs for a fixed time and reports one throughput. The threads that matter are
// locked to OS threads and block in the kernel (pipes, sockets), so the kernel's scheduler sees
// real sleeps and wakeups, not Go runtime handoffs.
//
// This package imports only the standard library and golang.org/x/sys.
package workload

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"sort"
	"time"
)

// Options are the flags every workload has.
type Options struct {
	Duration time.Duration
	Threads  int // 0: the workload's default; what a thread is depends on the workload
}

// Result is what a workload prints: one JSON line that `mlsched ab` reads.
type Result struct {
	Workload   string         `json:"workload"`
	Throughput float64        `json:"throughput"`
	Unit       string         `json:"unit"`
	Ops        uint64         `json:"ops"` // the operations counted in Throughput
	ElapsedS   float64        `json:"elapsed_s"`
	Threads    int            `json:"threads"`
	Params     map[string]any `json:"params,omitempty"`
}

// WriteJSON prints r as one JSON line.
func (r Result) WriteJSON(w io.Writer) error { return json.NewEncoder(w).Encode(r) }

// Workload is one built-in workload.
type Workload struct {
	Name    string
	Summary string
	Unit    string
	// Flags declares the workload's own flags and returns the function that runs it.
	Flags func(fs *flag.FlagSet) func(ctx context.Context, o Options) (Result, error)
}

var registry = map[string]*Workload{}

func register(w *Workload) { registry[w.Name] = w }

// Lookup returns the named workload or nil.
func Lookup(name string) *Workload { return registry[name] }

// All returns the workloads sorted by name.
func All() []*Workload {
	ws := make([]*Workload, 0, len(registry))
	for _, w := range registry {
		ws = append(ws, w)
	}
	sort.Slice(ws, func(i, j int) bool { return ws[i].Name < ws[j].Name })
	return ws
}

// validate rejects options no workload can run with.
func (o Options) validate() error {
	if o.Duration <= 0 {
		return fmt.Errorf("--duration must be > 0, got %v", o.Duration)
	}
	if o.Threads < 0 {
		return fmt.Errorf("--threads must be >= 0, got %d", o.Threads)
	}
	return nil
}

// sleepCtx sleeps for d or until ctx ends.
func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
