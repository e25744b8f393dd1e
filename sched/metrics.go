package sched

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/mlsched/mlsched/bpf"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// DefaultMetricsAddr listens on loopback only: metrics reveal workload behaviour.
const DefaultMetricsAddr = "127.0.0.1:9617"

// Metric names, linted in metrics_test.go.
const (
	metricDecisions    = "mlsched_decisions_total"
	metricFallbacks    = "mlsched_fallbacks_total"
	metricInference    = "mlsched_inference_duration_seconds"
	metricLiveAccuracy = "mlsched_live_accuracy_ratio"
	metricRingDrops    = "mlsched_ringbuf_drops_total"
	metricBPFEvents    = "mlsched_bpf_events_total"
	metricGuardActive  = "mlsched_guard_fifo_active"
	metricGuardTrips   = "mlsched_guard_trips_total"
	metricOutcomes     = "mlsched_outcomes_total"
	metricRoundTrip    = "mlsched_decision_roundtrip_seconds"
	metricEventAge     = "mlsched_event_age_seconds"
	metricPolicy       = "mlsched_policy_info"
	metricProgRun      = "mlsched_bpf_prog_run_seconds_total"
	metricProgRuns     = "mlsched_bpf_prog_runs_total"
	// Exploration and online adaptation (adapt.go). The active net's live accuracy stays
	// mlsched_live_accuracy_ratio (the guard's, unlabelled); the candidate's has its own name.
	metricPromotions      = "mlsched_promotions_total"
	metricExploration     = "mlsched_exploration_ratio"
	metricExploreOutcomes = "mlsched_exploration_outcomes_total"
	metricCandidateAcc    = "mlsched_candidate_accuracy_ratio"
	metricLiveMajority    = "mlsched_live_majority_ratio"
	metricLearned         = "mlsched_adapt_learned_total"
	metricAdaptDropped    = "mlsched_adapt_dropped_total"
	metricAdaptCPU        = "mlsched_adapt_cpu_seconds_total"
)

// fallbackReasons maps fallback label values to the BPF counters behind them.
var fallbackReasons = []struct {
	reason string
	c      bpf.SchedCounter
}{
	{"ring_full", bpf.SCRingFull},
	{"timeout", bpf.SCTimeout},
	{"no_idle", bpf.SCNoIdle},
	{"bad_cpu", bpf.SCBadCPU},
	{"stale", bpf.SCDecStale},
	{"task_gone", bpf.SCDecGone},
	{"no_ctx", bpf.SCNoCtx},
	{"apply_no_ctx", bpf.SCApplyNoCtx},
	{"kernel_no_idle", bpf.SCKernelNoIdle},
	{"select_no_idle", bpf.SCSelectNoIdle},
	{"kernel_no_net", bpf.SCKernelNoNet},
	{"move_fail", bpf.SCMoveFail},
	{"orphan", bpf.SCOrphan},
	{"guard_fifo", bpf.SCGuardFIFO},
	{"reenqueue", bpf.SCReenq},
	{"no_running", bpf.SCNoRunning},
	{"kthread", bpf.SCKthread},
	{"own_tgid", bpf.SCOurs},
}

// collector reads BPF counters at scrape time and the loop's Stats.
type collector struct {
	mu    sync.Mutex
	sched *bpf.Sched
	st    *Stats

	decisions, fallbacks, inference, accuracy, drops, bpfEvents, guardActive, guardTrips, outcomes, roundTrip, eventAge, policy, progRun, progRuns *prometheus.Desc

	promotions, exploration, exploreOutcomes, candidateAcc, liveMajority, learned, adaptDropped, adaptCPU *prometheus.Desc
}

func newCollector(st *Stats) *collector {
	return &collector{
		st:          st,
		decisions:   prometheus.NewDesc(metricDecisions, "Decisions applied by the BPF scheduler, by decision.", []string{"decision"}, nil),
		fallbacks:   prometheus.NewDesc(metricFallbacks, "Wakeups handled without a model decision, by reason.", []string{"reason"}, nil),
		inference:   prometheus.NewDesc(metricInference, "Model inference time per decision (sampled).", nil, nil),
		accuracy:    prometheus.NewDesc(metricLiveAccuracy, "Model accuracy over the guard's sliding window of observed outcomes.", nil, nil),
		drops:       prometheus.NewDesc(metricRingDrops, "Records lost to full ring buffers, by ring.", []string{"ring"}, nil),
		bpfEvents:   prometheus.NewDesc(metricBPFEvents, "Raw BPF scheduler counters, by counter.", []string{"counter"}, nil),
		guardActive: prometheus.NewDesc(metricGuardActive, "1 while the model guard holds the policy at the base queue (the name keeps its first meaning, FIFO).", nil, nil),
		guardTrips:  prometheus.NewDesc(metricGuardTrips, "Times the model guard switched to the base queue.", nil, nil),
		outcomes:    prometheus.NewDesc(metricOutcomes, "Outcomes observed for model decisions, by label.", []string{"label"}, nil),
		roundTrip:   prometheus.NewDesc(metricRoundTrip, "Time from enqueue to the decision being applied in BPF.", nil, nil),
		eventAge:    prometheus.NewDesc(metricEventAge, "Time from enqueue in BPF to user space reading the wake event (sampled).", nil, nil),
		policy:      prometheus.NewDesc(metricPolicy, "1, labelled with the policy and the base queue every fallback goes to.", []string{"policy", "queue"}, nil),
		progRun:     prometheus.NewDesc(metricProgRun, "--bpf-stats: run time of each of the scheduler's BPF programs (kernel.bpf_stats_enabled).", []string{"prog"}, nil),
		progRuns:    prometheus.NewDesc(metricProgRuns, "--bpf-stats: runs of each of the scheduler's BPF programs.", []string{"prog"}, nil),

		promotions:      prometheus.NewDesc(metricPromotions, "--adapt: adapted nets promoted into BPF.", nil, nil),
		exploration:     prometheus.NewDesc(metricExploration, "--explore: share of the placement's decisions taken at random (BPF counter explore over keep, migrate and no-idle decisions).", nil, nil),
		exploreOutcomes: prometheus.NewDesc(metricExploreOutcomes, "--explore: scored outcomes of decisions taken at random.", nil, nil),
		candidateAcc:    prometheus.NewDesc(metricCandidateAcc, "--adapt: the candidate net's accuracy (its kernel form) on the last slice of outcomes it was scored on, later than it learned from.", nil, nil),
		liveMajority:    prometheus.NewDesc(metricLiveMajority, "The majority-class rate over the guard's window: what the live accuracy is compared with.", nil, nil),
		learned:         prometheus.NewDesc(metricLearned, "--adapt: outcomes the online learner learned from.", nil, nil),
		adaptDropped:    prometheus.NewDesc(metricAdaptDropped, "--adapt: outcomes the adapter lost, by reason: ring_full (it fell behind), cpu (its CPU governor shed them).", []string{"reason"}, nil),
		adaptCPU:        prometheus.NewDesc(metricAdaptCPU, "--adapt: CPU time of the adapter's thread.", nil, nil),
	}
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.decisions, c.fallbacks, c.inference, c.accuracy, c.drops, c.bpfEvents, c.guardActive, c.guardTrips, c.outcomes, c.roundTrip, c.eventAge, c.policy, c.progRun, c.progRuns,
		c.promotions, c.exploration, c.exploreOutcomes, c.candidateAcc, c.liveMajority, c.learned, c.adaptDropped, c.adaptCPU} {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	// The BPF reads under the lock: setSched(nil), before the scheduler's maps are closed,
	// waits for a scrape in flight.
	var cnt bpf.SchedCounters
	var progs map[string]bpf.ProgStat
	c.mu.Lock()
	if s := c.sched; s != nil {
		if v, err := s.Counters(); err == nil {
			cnt = v
		}
		if c.st.BPFStats {
			progs, _ = s.ProgStats()
		}
	}
	c.mu.Unlock()
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	counter(c.decisions, cnt[bpf.SCKeep], "keep_local")
	counter(c.decisions, cnt[bpf.SCMigrate], "migrate_idle")
	counter(c.decisions, cnt[bpf.SCFIFO], "fifo")
	counter(c.decisions, cnt[bpf.SCKernelKeep]+cnt[bpf.SCSelectKeep], "kernel_keep_local")
	counter(c.decisions, cnt[bpf.SCKernelMigrate]+cnt[bpf.SCSelectMigrate], "kernel_migrate_idle")
	for _, f := range fallbackReasons {
		counter(c.fallbacks, cnt[f.c], f.reason)
	}
	counter(c.fallbacks, c.st.RingFull.Load(), "user_ring_full")
	for i, v := range cnt {
		if bpf.SchedCounter(i) != bpf.SCRTTNs {
			counter(c.bpfEvents, v, bpf.SchedCounter(i).String())
		}
	}
	applied := cnt[bpf.SCKeep] + cnt[bpf.SCMigrate] + cnt[bpf.SCFIFO] + cnt[bpf.SCNoIdle] + cnt[bpf.SCBadCPU]
	ch <- prometheus.MustNewConstSummary(c.roundTrip, applied, float64(cnt[bpf.SCRTTNs])/1e9, nil)
	counter(c.drops, cnt[bpf.SCRingFull]+cnt[bpf.SCOutcomeDrop], "events")
	counter(c.drops, c.st.RingFull.Load(), "decisions")
	buckets, n, sum := c.st.Inference.Snapshot()
	ch <- prometheus.MustNewConstHistogram(c.inference, n, sum, buckets)
	buckets, n, sum = c.st.EventAge.Snapshot()
	ch <- prometheus.MustNewConstHistogram(c.eventAge, n, sum, buckets)
	ch <- prometheus.MustNewConstMetric(c.accuracy, prometheus.GaugeValue, c.st.LiveAccuracy())
	active := 0.0
	if c.st.GuardActive.Load() {
		active = 1
	}
	ch <- prometheus.MustNewConstMetric(c.guardActive, prometheus.GaugeValue, active)
	counter(c.guardTrips, c.st.GuardTrips.Load())
	ch <- prometheus.MustNewConstMetric(c.policy, prometheus.GaugeValue, 1, c.st.Policy, c.st.Queue)
	counter(c.outcomes, c.st.Positives.Load(), "1")
	counter(c.outcomes, c.st.Negatives.Load(), "0")
	counter(c.promotions, c.st.Promotions.Load())
	ch <- prometheus.MustNewConstMetric(c.exploration, prometheus.GaugeValue,
		ExplorationRatio(func(i bpf.SchedCounter) float64 { return float64(cnt[i]) }))
	counter(c.exploreOutcomes, c.st.ExploreOutcomes.Load())
	ch <- prometheus.MustNewConstMetric(c.candidateAcc, prometheus.GaugeValue, c.st.CandidateAccuracy())
	ch <- prometheus.MustNewConstMetric(c.liveMajority, prometheus.GaugeValue, c.st.LiveMajority())
	counter(c.learned, c.st.Learned.Load())
	counter(c.adaptDropped, c.st.AdaptDropped.Load(), "ring_full")
	counter(c.adaptDropped, c.st.AdaptShed.Load(), "cpu")
	ch <- prometheus.MustNewConstMetric(c.adaptCPU, prometheus.CounterValue, float64(c.st.AdaptCPUNs.Load())/1e9)
	for name, p := range progs {
		ch <- prometheus.MustNewConstMetric(c.progRun, prometheus.CounterValue, p.Runtime.Seconds(), name)
		counter(c.progRuns, p.Runs, name)
	}
}

// newRegistry returns a registry with mlsched's collector and the Go runtime's metrics.
func newRegistry(c *collector) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(c, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

type metricsServer struct {
	c    *collector
	srv  *http.Server
	addr string
}

func startMetrics(addr string, st *Stats) (*metricsServer, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics: listen %s: %w", addr, err)
	}
	c := newCollector(st)
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(newRegistry(c), promhttp.HandlerOpts{}))
	m := &metricsServer{c: c, srv: &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}, addr: ln.Addr().String()}
	go func() {
		if err := m.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			_ = err // the scheduler keeps running without metrics
		}
	}()
	return m, nil
}

func (m *metricsServer) setSched(s *bpf.Sched) {
	m.c.mu.Lock()
	m.c.sched = s
	m.c.mu.Unlock()
}

func (m *metricsServer) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = m.srv.Shutdown(ctx)
}
