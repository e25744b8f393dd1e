package sched

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestMetricsLint(t *testing.T) {
	st := &Stats{}
	st.Inference.Observe(50)
	st.setLiveAccuracy(0.9)
	c := newCollector(st)
	problems, err := testutil.CollectAndLint(c)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint %s: %s", p.Metric, p.Text)
	}
	reg := newRegistry(c)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, mf := range mfs {
		names[mf.GetName()] = true
	}
	for _, n := range []string{metricDecisions, metricFallbacks, metricInference, metricLiveAccuracy, metricRingDrops,
		metricBPFEvents, metricGuardActive, metricGuardTrips, metricOutcomes, metricRoundTrip, metricEventAge,
		metricPromotions, metricExploration, metricExploreOutcomes, metricCandidateAcc, metricLiveMajority, metricLearned, metricAdaptDropped, metricAdaptCPU,
		"go_goroutines", "process_resident_memory_bytes", "process_cpu_seconds_total"} {
		if !names[n] {
			t.Errorf("metric %s missing", n)
		}
	}
	if n := testutil.CollectAndCount(c, metricDecisions); n != 5 { // keep, migrate, fifo; the kernel's keep and migrate
		t.Errorf("%d decision series, want 5", n)
	}
	if err := testutil.CollectAndCompare(c, strings.NewReader(`
# HELP mlsched_live_accuracy_ratio Model accuracy over the guard's sliding window of observed outcomes.
# TYPE mlsched_live_accuracy_ratio gauge
mlsched_live_accuracy_ratio 0.9
`), metricLiveAccuracy); err != nil {
		t.Error(err)
	}
	// Adaptation: the candidate's accuracy has its own name (the active net's stays the
	// unlabelled live accuracy, which the dashboard reads).
	st.setCandidateAccuracy(0.8125)
	st.Promotions.Store(3)
	if err := testutil.CollectAndCompare(c, strings.NewReader(`
# HELP mlsched_candidate_accuracy_ratio --adapt: the candidate net's accuracy (its kernel form) on the last slice of outcomes it was scored on, later than it learned from.
# TYPE mlsched_candidate_accuracy_ratio gauge
mlsched_candidate_accuracy_ratio 0.8125
# HELP mlsched_promotions_total --adapt: adapted nets promoted into BPF.
# TYPE mlsched_promotions_total counter
mlsched_promotions_total 3
`), metricCandidateAcc, metricPromotions); err != nil {
		t.Error(err)
	}
}

func TestMetricsServer(t *testing.T) {
	st := &Stats{}
	m, err := startMetrics("127.0.0.1:0", st)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	// The listener's port is chosen by the kernel: ask the server.
	addr := m.addr
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if !strings.Contains(string(body), metricDecisions+`{decision="keep_local"} 0`) {
		t.Fatalf("scrape lacks decisions:\n%.500s", body)
	}
}
