package bpf

import "fmt"

// The counter enums of bpf/abi.h (enum mls_counter, enum mls_sched_counter), mirrored with
// their C names so that bpf/abi_test.go can check every value by name in every object.

// Counter indexes the capture probes' per-CPU counters.
type Counter int

const (
	CntWakeTotal Counter = iota
	CntWakeIdle
	CntWakeSelf
	CntWakeOurs
	CntWakeFiltered
	CntWakeEmitted
	CntWakeDrop
	CntSwitchEmitted
	CntSwitchDrop
	CntFeatTakeover
	CntWakeSampledOut
	NumCounters
)

// captureCounterC names each Counter as abi.h does.
var captureCounterC = [NumCounters]string{
	"MLS_CNT_WAKE_TOTAL", "MLS_CNT_WAKE_IDLE", "MLS_CNT_WAKE_SELF", "MLS_CNT_WAKE_OURS",
	"MLS_CNT_WAKE_FILTERED", "MLS_CNT_WAKE_EMITTED", "MLS_CNT_WAKE_DROP", "MLS_CNT_SWITCH_EMITTED",
	"MLS_CNT_SWITCH_DROP", "MLS_CNT_FEAT_TAKEOVER", "MLS_CNT_WAKE_SAMPLED_OUT",
}

// Counters are the probes' counters summed over CPUs.
type Counters [NumCounters]uint64

// SchedCounter indexes the scheduler's per-CPU counters.
type SchedCounter int

const (
	SCEnqueue SchedCounter = iota
	SCSelectDirect
	SCOurs
	SCKthread
	SCFIFOPolicy
	SCReenq
	SCNoRunning
	SCEvent
	SCRingFull
	SCNoCtx
	SCDecRx
	SCDecStale
	SCDecGone
	SCDecBad
	SCKeep
	SCMigrate
	SCFIFO
	SCBadCPU
	SCNoIdle
	SCTimeout
	SCMoveFail
	SCOutcome
	SCOutcomeDrop
	SCDispatch
	SCTimerKick
	SCDrainErr
	SCDrainBusy
	SCRTTNs
	SCApplyRun
	SCOrphan
	SCGuardFIFO
	SCVtimePolicy
	SCApplyNoCtx
	SCFeatTakeover
	SCKernelKeep
	SCKernelMigrate
	SCKernelNoIdle
	SCKernelNoNet
	SCKeepStolen
	SCKernelSampleDrop
	SCKernelCached
	SCBusyPrev
	SCShadow
	SCKernelForced
	SCNetRuns
	SCNetNs
	SCSelectKeep
	SCSelectMigrate
	SCSelectNoIdle
	SCExplore
	SCAbstain
	SCSelectAbstain
	SCKeepTimer
	NumSchedCounters
)

// schedCounters gives each SchedCounter its C name and its name in TOTALS, --stats and the
// metrics' counter label (snake case; kept when the C name changes, as dashboards use them).
var schedCounters = [NumSchedCounters]struct{ c, name string }{
	{"MLS_SC_ENQUEUE", "enqueue"}, {"MLS_SC_SELECT_DIRECT", "select_direct"}, {"MLS_SC_OURS", "ours"},
	{"MLS_SC_KTHREAD", "kthread"}, {"MLS_SC_FIFO_POLICY", "fifo_policy"}, {"MLS_SC_REENQ", "reenqueue"},
	{"MLS_SC_NO_RUNNING", "no_running"}, {"MLS_SC_EVENT", "event"}, {"MLS_SC_RING_FULL", "ring_full"},
	{"MLS_SC_NO_CTX", "no_ctx"}, {"MLS_SC_DEC_RX", "decision_rx"}, {"MLS_SC_DEC_STALE", "decision_stale"},
	{"MLS_SC_DEC_GONE", "decision_gone"}, {"MLS_SC_DEC_BAD", "decision_bad"}, {"MLS_SC_KEEP", "keep"},
	{"MLS_SC_MIGRATE", "migrate"}, {"MLS_SC_FIFO", "fifo"}, {"MLS_SC_BAD_CPU", "bad_cpu"},
	{"MLS_SC_NO_IDLE", "no_idle"}, {"MLS_SC_TIMEOUT", "timeout"}, {"MLS_SC_MOVE_FAIL", "move_fail"},
	{"MLS_SC_OUTCOME", "outcome"}, {"MLS_SC_OUTCOME_DROP", "outcome_drop"}, {"MLS_SC_DISPATCH", "dispatch"},
	{"MLS_SC_TIMER_KICK", "timer_kick"}, {"MLS_SC_DRAIN_ERR", "drain_error"}, {"MLS_SC_DRAIN_BUSY", "drain_busy"},
	{"MLS_SC_RTT_NS", "rtt_ns"}, {"MLS_SC_APPLY_RUN", "apply_run"}, {"MLS_SC_ORPHAN", "orphan"},
	{"MLS_SC_GUARD_FIFO", "guard_fifo"}, {"MLS_SC_VTIME_POLICY", "vtime_policy"},
	{"MLS_SC_APPLY_NO_CTX", "apply_no_ctx"}, {"MLS_SC_FEAT_TAKEOVER", "feat_takeover"},
	{"MLS_SC_KERNEL_KEEP", "kernel_keep"}, {"MLS_SC_KERNEL_MIGRATE", "kernel_migrate"},
	{"MLS_SC_KERNEL_NO_IDLE", "kernel_no_idle"}, {"MLS_SC_KERNEL_NO_NET", "kernel_no_net"},
	{"MLS_SC_KEEP_STOLEN", "keep_stolen"}, {"MLS_SC_KERNEL_SAMPLE_DROP", "kernel_sample_drop"},
	{"MLS_SC_KERNEL_CACHED", "kernel_cached"},
	{"MLS_SC_BUSY_PREV", "busy_prev"},
	{"MLS_SC_SHADOW", "shadow"},
	{"MLS_SC_KERNEL_FORCED", "kernel_forced"},
	{"MLS_SC_NET_RUNS", "net_runs"},
	{"MLS_SC_NET_NS", "net_ns"},
	{"MLS_SC_SELECT_KEEP", "select_keep"},
	{"MLS_SC_SELECT_MIGRATE", "select_migrate"},
	{"MLS_SC_SELECT_NO_IDLE", "select_no_idle"},
	{"MLS_SC_EXPLORE", "explore"},
	{"MLS_SC_ABSTAIN", "abstain"},
	{"MLS_SC_SELECT_ABSTAIN", "select_abstain"},
	{"MLS_SC_KEEP_TIMER", "keep_timer"},
}

// String names a counter in snake case (metric labels, --stats).
func (c SchedCounter) String() string {
	if c < 0 || c >= NumSchedCounters {
		return fmt.Sprintf("counter%d", int(c))
	}
	return schedCounters[c].name
}

// SchedCounters are the scheduler's counters summed over CPUs.
type SchedCounters [NumSchedCounters]uint64

// ABICounterEnums lists both counter enums by C name and value, for the ABI test.
func ABICounterEnums() map[string]map[string]int64 {
	capture := map[string]int64{"MLS_CNT_MAX": int64(NumCounters)}
	for i, n := range captureCounterC {
		capture[n] = int64(i)
	}
	sched := map[string]int64{"MLS_SC_MAX": int64(NumSchedCounters)}
	for i, c := range schedCounters {
		sched[c.c] = int64(i)
	}
	return map[string]map[string]int64{"mls_counter": capture, "mls_sched_counter": sched}
}
