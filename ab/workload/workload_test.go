package workload

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"testing"
	"time"
)

// Every workload runs briefly, does work, and prints one JSON line ab can read.
func TestWorkloadsRun(t *testing.T) {
	for _, w := range All() {
		t.Run(w.Name, func(t *testing.T) {
			fs := flag.NewFlagSet(w.Name, flag.ContinueOnError)
			run := w.Flags(fs)
			if err := fs.Parse(nil); err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			r, err := run(context.Background(), Options{Duration: 300 * time.Millisecond, Threads: 4})
			if err != nil {
				t.Fatal(err)
			}
			if took := time.Since(start); took > 5*time.Second {
				t.Errorf("a 300ms run took %v to finish", took)
			}
			if r.Workload != w.Name || r.Unit != w.Unit || r.Ops == 0 || r.Throughput <= 0 || r.ElapsedS < 0.29 {
				t.Errorf("result %+v", r)
			}
			var b bytes.Buffer
			r.WriteJSON(&b)
			var back map[string]any
			if err := json.Unmarshal(b.Bytes(), &back); err != nil || bytes.Count(b.Bytes(), []byte("\n")) != 1 {
				t.Fatalf("not one JSON line: %q (%v)", b.String(), err)
			}
			if tp, ok := back["throughput"].(float64); !ok || tp != r.Throughput {
				t.Errorf("throughput in JSON %v, want %v", back["throughput"], r.Throughput)
			}
			t.Logf("%s", bytes.TrimSpace(b.Bytes()))
		})
	}
}

func TestHackbenchPipesAndThreads(t *testing.T) {
	fs := flag.NewFlagSet("hackbench", flag.ContinueOnError)
	run := hackbenchFlags(fs)
	if err := fs.Parse([]string{"--pipe", "--fanout", "3"}); err != nil {
		t.Fatal(err)
	}
	r, err := run(context.Background(), Options{Duration: 200 * time.Millisecond, Threads: 12})
	if err != nil {
		t.Fatal(err)
	}
	if r.Params["groups"] != 2 || r.Threads != 12 || r.Params["transport"] != "pipe" {
		t.Errorf("12 threads at fanout 3 should be 2 groups of 3+3 over pipes: %+v", r)
	}
}

func TestCancelStopsEarly(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	fs := flag.NewFlagSet("pool", flag.ContinueOnError)
	run := poolFlags(fs)
	start := time.Now()
	if _, err := run(ctx, Options{Duration: time.Minute}); err == nil {
		t.Error("a cancelled run reported a result")
	}
	if time.Since(start) > 5*time.Second {
		t.Errorf("cancel took %v", time.Since(start))
	}
}

func TestBadOptions(t *testing.T) {
	for _, w := range All() {
		fs := flag.NewFlagSet(w.Name, flag.ContinueOnError)
		if _, err := w.Flags(fs)(context.Background(), Options{Duration: 0}); err == nil {
			t.Errorf("%s: zero duration accepted", w.Name)
		}
	}
}
