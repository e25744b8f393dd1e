// SPDX-License-Identifier: GPL-2.0
// Events and counters of the capture probes. The Go decoder (features/event.go) reads these
// layouts by offset; a test checks the sizes against the BTF of the compiled object.
#pragma once

#define MLS_MAX_CPUS 4096
#define MLS_NR_SCHED_YIELD 24 // x86_64

enum mls_event_type {
	MLS_EV_WAKE = 1,        // dense layout, struct mls_wake_event (the scheduler's, type 3)
	MLS_EV_SWITCH = 2,
	MLS_EV_WAKE_SPARSE = 5, // what the capture probes emit: struct mls_wake_sparse
};

// W wakes while its previous CPU runs R: one sample, R's features at this moment.
struct mls_wake_event {
	__u8 type;
	__u8 _pad;
	__u16 prev_cpu;
	__u16 waker_cpu;
	__u16 _pad2;
	__u32 w_tid;
	__u32 r_tid;
	__u64 ts_ns;
	__u64 r_oncpu_ns;
	__u32 feats[MLS_NUM_BUCKETS];
};

// The capture probes' sample: the same fields, then only the counts of the buckets R has used
// (typically 5-15 of 64), so a record is ~90 bytes instead of 288: writing the full array into
// ever-new ring-buffer lines was most of the wakeup hook's time. The record's length is
// sizeof(struct mls_wake_sparse) - 4*64 + 4*nvals. A listed count may be 0 (decayed).
struct mls_wake_sparse {
	__u8 type;
	__u8 nvals; // popcount(mask)
	__u16 prev_cpu;
	__u16 waker_cpu;
	__u16 _pad;
	__u32 w_tid;
	__u32 r_tid;
	__u64 ts_ns;
	__u64 r_oncpu_ns;
	__u64 mask;                  // bit b: bucket b's count is in vals
	__u32 vals[MLS_NUM_BUCKETS]; // those counts, in increasing bucket order
};

// A CPU with a pending sample switched tasks.
struct mls_switch_event {
	__u8 type;
	__u8 voluntary; // prev left without being preempted: blocked, slept, yielded or exited
	__u16 cpu;
	__u32 prev_tid;
	__u32 next_tid;
	__u32 _pad;
	__u64 ts_ns;
};

enum mls_counter {
	MLS_CNT_WAKE_TOTAL,
	MLS_CNT_WAKE_IDLE,
	MLS_CNT_WAKE_SELF,
	MLS_CNT_WAKE_OURS,
	MLS_CNT_WAKE_FILTERED,
	MLS_CNT_WAKE_EMITTED,
	MLS_CNT_WAKE_DROP,
	MLS_CNT_SWITCH_EMITTED,
	MLS_CNT_SWITCH_DROP,
	MLS_CNT_FEAT_TAKEOVER,
	MLS_CNT_WAKE_SAMPLED_OUT,
	MLS_CNT_MAX,
};
