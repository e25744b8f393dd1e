// SPDX-License-Identifier: GPL-2.0
// Events, decisions and counters of the sched_ext scheduler (sched.bpf.c). The Go side
// (bpf/sched.go, sched/) reads and writes these layouts by offset; a test checks the sizes
// against the BTF of the compiled objects.
#pragma once

#define MLS_SCHED_MAX_CPUS 4096

// Event types on the scheduler's ring buffer. 1 and 2 are the capture probes' (capture.h).
enum mls_sched_event_type {
	MLS_EV_SCHED_WAKE = 3,
	MLS_EV_SCHED_OUTCOME = 4,
};

// W wakes while its previous CPU runs R: a decision is wanted. The first 32 + 4*64 bytes are
// laid out as capture's mls_wake_event (features.DecodeWake reads them); nr_allowed sits in
// capture's padding, seq follows the features.
#define MLS_WAKE_NO_DECISION 1 // flags: informational (guard at FIFO), do not answer

struct mls_sched_wake {
	__u8 type;
	__u8 flags; // MLS_WAKE_*
	__u16 prev_cpu;
	__u16 waker_cpu;
	__u16 nr_allowed; // CPUs W may run on
	__u32 w_tid;
	__u32 r_tid;
	__u64 ts_ns;
	__u64 r_oncpu_ns;
	__u32 feats[MLS_NUM_BUCKETS];
	__u64 seq; // names this wakeup in the decision and the outcome
};

// R, named by a wake event, left its CPU: the observed label of that sample.
struct mls_sched_outcome {
	__u8 type;
	__u8 voluntary; // blocked, slept, exited or yielded; 0: preempted or slice expired
	__u16 cpu;
	__u32 r_tid;
	__u64 seq;
	__u64 leave_ns; // from the wakeup to R leaving the CPU
	__u64 ts_ns;
};

// What user space wants done with a waking task.
enum mls_action {
	MLS_ACT_FIFO = 0, // no opinion: the base queue (vtime or FIFO, whichever runs)
	MLS_ACT_KEEP_LOCAL = 1,
	MLS_ACT_MIGRATE_IDLE = 2,
};

// One decision on the user ring buffer.
struct mls_decision {
	__u64 seq;
	__u32 w_tid;
	__u16 cpu; // KEEP_LOCAL: W's previous CPU
	__u8 action;
	__u8 _pad;
};

// Exit info, copied from struct scx_exit_info in ops.exit(); kind is written last.
struct mls_exit_info {
	__s32 kind;
	__s32 exit_cpu;
	__s64 exit_code;
	char reason[128];
	char msg[1024];
};

// Per-CPU counters; bpf/sched.go mirrors the order.
enum mls_sched_counter {
	MLS_SC_ENQUEUE,       // ops.enqueue calls
	MLS_SC_SELECT_DIRECT, // select_cpu found an idle CPU and dispatched directly
	MLS_SC_OURS,          // mlsched's own threads, dispatched directly at enqueue
	MLS_SC_KTHREAD,       // per-CPU kthreads, kept local
	MLS_SC_FIFO_POLICY,   // --policy fifo: shared FIFO, no event
	MLS_SC_REENQ,         // not a wakeup (slice expired, preempted...): shared FIFO
	MLS_SC_NO_RUNNING,    // W's previous CPU runs no sched_ext task of interest: FIFO
	MLS_SC_EVENT,         // sent to user space, W waits in the pending queue
	MLS_SC_RING_FULL,     // event ring full: FIFO in BPF
	MLS_SC_NO_CTX,        // no task storage: FIFO in BPF
	MLS_SC_DEC_RX,        // decisions read from the user ring buffer
	MLS_SC_DEC_STALE,     // decision for a task that was re-enqueued or already handled
	MLS_SC_DEC_GONE,      // decision for a task that exited
	MLS_SC_DEC_BAD,       // malformed decision record
	MLS_SC_KEEP,          // applied: KEEP_LOCAL
	MLS_SC_MIGRATE,       // applied: MIGRATE_IDLE to an idle CPU
	MLS_SC_FIFO,          // applied: FIFO
	MLS_SC_BAD_CPU,       // KEEP_LOCAL named a CPU outside W's cpumask: FIFO
	MLS_SC_NO_IDLE,       // MIGRATE_IDLE found no idle CPU: FIFO
	MLS_SC_TIMEOUT,       // no decision within pending_timeout_ns: FIFO
	MLS_SC_MOVE_FAIL,     // the task left the pending queue while being moved
	MLS_SC_OUTCOME,       // outcome events sent
	MLS_SC_OUTCOME_DROP,  // outcome lost: ring full
	MLS_SC_DISPATCH,      // ops.dispatch calls
	MLS_SC_TIMER_KICK,    // the stall timer kicked idle CPUs for pending work
	MLS_SC_DRAIN_ERR,     // bpf_user_ringbuf_drain failed
	MLS_SC_DRAIN_BUSY,    // another CPU was draining the decisions
	MLS_SC_RTT_NS,        // sum over applied decisions of enqueue -> applied, ns
	MLS_SC_APPLY_RUN,     // user space ran mls_apply after a batch
	MLS_SC_ORPHAN,        // found in the pending queue without a pending state: FIFO
	MLS_SC_GUARD_FIFO,    // the model guard tripped: base queue in BPF, event sent for scoring
	MLS_SC_VTIME_POLICY,  // --policy vtime: shared weighted-vtime queue, no event
	MLS_SC_MAX,
};
