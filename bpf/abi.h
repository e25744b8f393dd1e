// SPDX-License-Identifier: GPL-2.0
// The BPF/Go contract: every record and enum that crosses the boundary, for every object
// (the capture probes, the scheduler, the test programs). Nothing else may define one.
//
// Go mirrors it in one place per kind: features/abi.go (records, event types, actions, wake
// flags) and bpf/counters.go (the two counter enums). bpf/abi_test.go checks every Go offset,
// size and enum value against the BTF of every object, field by field and value by name, so a
// Go mirror or an object that disagrees with this header fails a test. What to touch to add a
// field, a counter or an event: docs/DEVELOPING.md.
#pragma once

#include "schema_table.h"

#define MLS_MAX_CPUS 4096
#define MLS_NR_SCHED_YIELD 24 // x86_64

enum mls_event_type {
	MLS_EV_SWITCH = 2,        // struct mls_switch_event (capture)
	MLS_EV_SCHED_WAKE = 3,    // struct mls_wake from the scheduler: seq names it, a decision is wanted
	MLS_EV_SCHED_OUTCOME = 4, // struct mls_sched_outcome
	MLS_EV_WAKE = 5,          // struct mls_wake from the capture probes
};

enum mls_wake_flags {
	MLS_WAKE_NO_DECISION = 1, // informational (BPF placed W already): score it, do not answer
	MLS_WAKE_VERDICT = 2,     // BPF decided at the wakeup (--infer kernel, a fixed placement): MLS_WAKE_KEEP is its verdict
	MLS_WAKE_KEEP = 4,        // that verdict was keep on prev_cpu (absent: migrate)
	MLS_WAKE_BASE = 8,        // W went to the base queue whatever the verdict (--shadow, guard, no idle CPU)
	MLS_WAKE_EXPLORE = 16,    // --explore: the action was taken at random, not by the verdict
	MLS_WAKE_ACT_KEEP = 32,   // the action taken: W waits in prev_cpu's keep queue (absent: elsewhere)
	MLS_WAKE_ABSTAIN = 64,    // the net had no opinion (inside the model's abstention band): base queue
};

// What decides a wakeup in BPF (the scheduler's `placement`): the net, or a fixed rule.
enum mls_placement {
	MLS_PLACE_NET = 0,     // the net in `nets` (--policy model --infer kernel)
	MLS_PLACE_KEEP = 1,    // --policy keep: always keep W on prev_cpu
	MLS_PLACE_MIGRATE = 2, // --policy migrate: always an idle CPU (else the base queue)
	MLS_PLACE_ONCPU = 3,   // --policy oncpu: keep while R has been on the CPU less than oncpu_ns
};

// W wakes while its previous CPU runs R: one sample, R's features at this moment. Both the
// capture probes and the scheduler emit it (features.h fills it). Only the counts of the buckets
// R has used follow (typically 5-15 of 64): the record's length is
// sizeof(struct mls_wake) - 4*64 + 4*nvals. A listed count may be 0 (decayed).
struct mls_wake {
	__u8 type;  // MLS_EV_WAKE or MLS_EV_SCHED_WAKE
	__u8 nvals; // popcount(mask)
	__u8 flags; // enum mls_wake_flags
	__u8 _pad0;
	__u16 prev_cpu;
	__u16 waker_cpu;
	__u32 w_tid;
	__u32 r_tid;
	__u64 ts_ns;
	__u64 r_oncpu_ns; // how long R has been on prev_cpu
	__u64 seq;        // scheduler: names this wakeup in its decision and outcome (capture: 0)
	__u16 nr_allowed; // scheduler: CPUs W may run on (capture: 0)
	__u16 _pad1;
	// R's scheduling state (schema v2, features.SchedState; features.h keeps it per task):
	__u32 r_vol;       // the average of R's voluntary leaves, Q16 (MLS_VOL_UNKNOWN before its first stint)
	__u64 r_stint_ns;  // the average of R's stints (0 before its first)
	__u64 r_gap_ns;    // how long R was off the CPU before its current stint (0: unknown)
	__u64 mask;                  // bit b: bucket b's count is in vals
	__u32 vals[MLS_NUM_BUCKETS]; // those counts, in increasing bucket order
};

// A CPU with a pending capture sample switched tasks.
struct mls_switch_event {
	__u8 type;
	__u8 voluntary; // mls_left_voluntarily (features.h)
	__u16 cpu;
	__u32 prev_tid;
	__u32 next_tid;
	__u32 _pad;
	__u64 ts_ns;
};

// R, named by a scheduler wake event, left its CPU: the observed label of that sample.
struct mls_sched_outcome {
	__u8 type;
	__u8 voluntary; // mls_left_voluntarily (features.h)
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

// The capture probes' per-CPU counters. Each counts one thing.
enum mls_counter {
	MLS_CNT_WAKE_TOTAL,       // sched_waking calls
	MLS_CNT_WAKE_IDLE,        // the wakee's previous CPU ran nothing
	MLS_CNT_WAKE_SELF,        // the wakee is the task running there
	MLS_CNT_WAKE_OURS,        // mlsched's own threads, waking or running
	MLS_CNT_WAKE_FILTERED,    // outside the captured process tree
	MLS_CNT_WAKE_EMITTED,     // samples written to the ring buffer
	MLS_CNT_WAKE_DROP,        // samples lost: ring buffer full
	MLS_CNT_SWITCH_EMITTED,   // switch events written
	MLS_CNT_SWITCH_DROP,      // switch events lost: ring buffer full
	MLS_CNT_FEAT_TAKEOVER,    // a feature slot taken from a live thread (its state was lost)
	MLS_CNT_WAKE_SAMPLED_OUT, // left out by --max-rate or --sample-every
	MLS_CNT_MAX,
};

// The scheduler's per-CPU counters. Each counts one thing.
enum mls_sched_counter {
	MLS_SC_ENQUEUE,       // ops.enqueue calls
	MLS_SC_SELECT_DIRECT, // select_cpu found an idle CPU and dispatched directly
	MLS_SC_OURS,          // mlsched's own threads, dispatched directly at enqueue
	MLS_SC_KTHREAD,       // per-CPU kthreads, kept local
	MLS_SC_FIFO_POLICY,   // --policy fifo: shared FIFO, no event
	MLS_SC_REENQ,         // not a wakeup (slice expired, preempted...): base queue
	MLS_SC_NO_RUNNING,    // W's previous CPU runs no sched_ext task of interest: base queue
	MLS_SC_EVENT,         // sent to user space, W waits in the pending queue
	MLS_SC_RING_FULL,     // event ring full: base queue in BPF
	MLS_SC_NO_CTX,        // enqueue: no task storage for W: base queue in BPF
	MLS_SC_DEC_RX,        // decisions read from the user ring buffer
	MLS_SC_DEC_STALE,     // decision for a task that was re-enqueued or already handled
	MLS_SC_DEC_GONE,      // decision for a task that exited
	MLS_SC_DEC_BAD,       // malformed decision record
	MLS_SC_KEEP,          // applied: KEEP_LOCAL
	MLS_SC_MIGRATE,       // applied: MIGRATE_IDLE to an idle CPU
	MLS_SC_FIFO,          // applied: no opinion, the base queue
	MLS_SC_BAD_CPU,       // KEEP_LOCAL named a CPU outside W's cpumask: base queue
	MLS_SC_NO_IDLE,       // MIGRATE_IDLE found no idle CPU: base queue
	MLS_SC_TIMEOUT,       // no decision within pending_timeout_ns: base queue
	MLS_SC_MOVE_FAIL,     // the task left the pending queue while being moved
	MLS_SC_OUTCOME,       // outcome events sent
	MLS_SC_OUTCOME_DROP,  // outcome lost: ring full
	MLS_SC_DISPATCH,      // ops.dispatch calls
	MLS_SC_TIMER_KICK,    // the stall timer kicked idle CPUs for pending work
	MLS_SC_DRAIN_ERR,     // bpf_user_ringbuf_drain failed
	MLS_SC_DRAIN_BUSY,    // another CPU was draining the decisions
	MLS_SC_RTT_NS,        // sum over applied decisions of enqueue -> applied, ns
	MLS_SC_APPLY_RUN,     // user space ran mls_apply after a batch
	MLS_SC_ORPHAN,        // found in the pending queue without a pending state: base queue
	MLS_SC_GUARD_FIFO,    // the model guard tripped: base queue in BPF, event sent for scoring
	MLS_SC_VTIME_POLICY,  // --policy vtime: shared weighted-vtime queue, no event
	MLS_SC_APPLY_NO_CTX,  // apply: a pending task had no task storage: base queue
	MLS_SC_FEAT_TAKEOVER, // a feature slot taken from a live thread (its state was lost)
	MLS_SC_KERNEL_KEEP,    // --infer kernel: the net kept W on prev_cpu (its keep queue)
	MLS_SC_KERNEL_MIGRATE, // --infer kernel: the net moved W to an idle CPU
	MLS_SC_KERNEL_NO_IDLE, // --infer kernel: the net said migrate, no idle CPU: base queue
	MLS_SC_KERNEL_NO_NET,  // --infer kernel: no usable net in the map: base queue
	MLS_SC_KEEP_STOLEN,    // a kept task waited past --keep-budget and another CPU took it
	MLS_SC_KERNEL_SAMPLE_DROP, // --infer kernel: the decided sample was lost (ring full), not scored
	MLS_SC_KERNEL_CACHED,  // --infer kernel: R made no syscall since the net's last verdict on it: reused
	MLS_SC_BUSY_PREV,      // a wakeup whose prev_cpu runs another task: the placement's question (not a path)
	MLS_SC_SHADOW,         // --shadow: the net decided and is scored, W went to the base queue
	MLS_SC_KERNEL_FORCED,  // of kernel_keep/migrate/no_idle: W's affinity overrode the verdict (not a path)
	MLS_SC_NET_RUNS,       // --bpf-stats: evaluations of the net timed in BPF
	MLS_SC_NET_NS,         // --bpf-stats: their summed run time, ns
	MLS_SC_SELECT_KEEP,    // select_cpu: the placement kept W (prev_cpu's keep queue), no enqueue
	MLS_SC_SELECT_MIGRATE, // select_cpu: the placement moved W to an idle CPU, no enqueue
	MLS_SC_SELECT_NO_IDLE, // select_cpu: the placement said migrate, no idle CPU: base queue, no enqueue
	MLS_SC_EXPLORE,        // --explore: a scored decision taken at random (of kernel_keep/migrate/no_idle; not a path)
	MLS_SC_ABSTAIN,        // enqueue: the net had no opinion (the model's margin): base queue
	MLS_SC_SELECT_ABSTAIN, // select_cpu: the same, placed as the base queue places (an idle CPU or the queue), no enqueue
	MLS_SC_KEEP_TIMER,     // a task was kept while the stall timer was on its long period: aimed at its budget (not a path)
	MLS_SC_MAX,
};

// The net in integer form (model.KernelForm, whose MarshalBinary writes this image; net.h
// evaluates it): keep local iff sum_k w2[k] * (max(acc_k, 0) >> shift) >= bound, with
//   acc_k = b1[k] + (sum over R's live buckets b of c[b][level(count_b)], unit k's lane) << c_shift
//         + sum over the extras j of w1[j][k] * (x_j << x_shift[j]).
// A bucket's count is quantised to its nearest knot (level, net.h: 2^MLS_NET_MANT per octave),
// and c holds every bucket's terms at every level for all the units, two per u64: unit 2p is
// the low s32 lane of c[b][i][p] (as a signed value: the u64 is hi * 2^32 + lo), unit 2p + 1
// the high one; every lane's sum over all buckets fits an s32 by construction, so the lanes
// add as one u64. The extras' inputs are the integers of mls_extras. Hidden units past hidden
// are all zero. Its Go mirror is model.NetRecord (model/kernelform.go, which documents the
// arithmetic's bounds). Version 2: schema v2's extra inputs; 3: w1 stored offset by 2^15; 4:
// the counts' terms tabulated per level (c), no multiply per bucket.
#define MLS_NET_VERSION 4
#define MLS_NET_HIDDEN 16
#define MLS_NET_PAIRS (MLS_NET_HIDDEN / 2)
// Count levels: a count v's level is (s << MLS_NET_MANT) + (v >> s), rounded to the nearest,
// with s the bit length of v >> (MLS_NET_MANT + 1); counts are clamped to 64.0 (2^22 in Q16),
// whose level is 576, the last.
#define MLS_NET_MANT 5
#define MLS_NET_LEVELS 577
struct mls_net {
	__u32 version;    // MLS_NET_VERSION
	__u32 hidden;     // the model's hidden units, 1..MLS_NET_HIDDEN
	__u64 generation; // names this net: a reader that sees it change knows the net was swapped
	__s64 bound;      // keep local iff logit >= bound
	__s64 lower;      // abstention band: lower <= logit < upper is no opinion (lower == upper:
	__s64 upper;      // none)
	__u32 shift;      // right shift of the ReLU outputs
	__u32 _pad;
	__s64 b1[MLS_NET_HIDDEN];
	__s32 w2[MLS_NET_HIDDEN];
	__u32 c_shift;                             // every unit's lane of the counts' sum is shifted left by this
	__u8 x_shift[MLS_NUM_EXTRAS];              // per extra: x_j is shifted left by this
	__u16 w1[MLS_NUM_EXTRAS][MLS_NET_HIDDEN];  // the extras' rows, each weight + 2^15 (c follows at a multiple of 8)
	__u64 c[MLS_NUM_BUCKETS][MLS_NET_LEVELS][MLS_NET_PAIRS]; // the counts' terms, two units per u64
};

// Every object keeps every record and enum of this header in its BTF (an otherwise unused
// global), so that the ABI test can check each of them in each object. The records are
// zero-length arrays: BTF then describes them whole (a pointer would leave only a forward
// declaration) and the global costs nothing but its enums.
struct mls_abi_types {
	enum mls_event_type event_type;
	enum mls_wake_flags wake_flags;
	enum mls_placement placement;
	enum mls_action action;
	enum mls_counter counter;
	enum mls_sched_counter sched_counter;
	struct mls_wake wake[0];
	struct mls_switch_event switch_event[0];
	struct mls_sched_outcome outcome[0];
	struct mls_decision decision[0];
	struct mls_exit_info exit_info[0];
	struct mls_net net[0];
};
struct mls_abi_types mls_abi_types __attribute__((unused));
