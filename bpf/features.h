// SPDX-License-Identifier: GPL-2.0
// The one BPF feature pipeline, shared by the capture probes and the scheduler (and the test
// programs): per-task syscall-decay features (the sys_enter update), the per-CPU "who runs here
// since when" state, the voluntary-leave rule, and the wake sample fill. No object-specific code
// in here: each object decides when to call what and counts with its own counter enum.
// The Go mirror of the decay is features/decay.go; the table and constants come from
// schema_table.h, generated from features/schema.go; the records are abi.h's.
#pragma once

#include "schema_table.h"
#include "abi.h"

// One task's state: a syscall counter and, per bucket, a decayed count (Q16) valid at the
// task's syscall number recorded with it. Lazy decay keeps the syscall hook O(1).
struct task_feat {
	__u32 n;
	__u32 tid;  // owner of this slot (0: free)
	__u64 mask; // bit b: bucket b was counted since the slot was claimed
	// Per bucket, the count and its syscall number side by side: a syscall touches one
	// cache line of them, not two.
	struct {
		__u32 val;
		__u32 last;
	} b[MLS_NUM_BUCKETS];
	// The task's scheduling state (schema v2, features/extras.go), updated at the start and
	// the end of every stint on a CPU (mls_feat_stint_start, mls_feat_stint_end):
	__u64 stop_ns;   // when it last left a CPU (0: not since the slot was claimed)
	__u64 gap_ns;    // how long it was off the CPU before its current stint (0: unknown)
	__u64 stint_avg; // the average of its stints, ns: moves by 1/2^MLS_EWMA_SHIFT per stint
	__u32 vol_avg;   // the average of "left the CPU voluntarily", Q16, the same way
	__u32 stints;    // stints accounted, saturating (0: the averages start at the next)
	// The scheduler's verdict cache (--infer kernel): the syscall part of the net's hidden
	// layer for this state (net.h, mls_net_counts: the counts' lanes, two units per u64),
	// valid while the task makes no syscall (n unchanged) and the net is the same (its
	// generation). The scheduling-state inputs change without syscalls (the on-CPU time,
	// continuously): they are added at every decision.
	__u64 verdict_gen;
	__u32 verdict_n; // n + 1 when cached (0: nothing cached)
	__u32 _pad;
	__u64 lanes[MLS_NET_PAIRS];
};

// Feature state in slots indexed by tid & mls_feat_mask. An array, not a hash or task
// storage: its lookup is inlined by the verifier and costs next to nothing on every syscall
// (a hash lookup measured ~25 ns here), and any hook can find the state of the task running on
// another CPU knowing only its tid, on any kernel >= 5.15. The loader sizes it to a power of
// two >= pid_max where that is affordable, so that two live threads never share a slot;
// otherwise a slot taken over from a live thread is counted (MLS_FEAT_TAKEOVER).
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 32768); // resized by the loader
	__type(key, __u32);
	__type(value, struct task_feat);
} task_feat_slots SEC(".maps");

const volatile __u32 mls_feat_mask = 32767; // set by the loader: slots - 1

// Add v to counter idx of an object's per-CPU counter map.
static __always_inline void mls_count_add(void *counters, __u32 idx, __u64 v)
{
	__u64 *c = bpf_map_lookup_elem(counters, &idx);

	if (c)
		*c += v;
}

enum mls_feat_claim {
	MLS_FEAT_OWNED,    // the slot was already this task's
	MLS_FEAT_NEW,      // a free slot (or a dead task's) was claimed
	MLS_FEAT_TAKEOVER, // the slot belonged to a live task: its state was lost
};

// The state of the running task tid, claiming its slot if needed. NULL only if the map is
// missing an entry, which a correctly sized array never is.
static __always_inline struct task_feat *mls_feat_own(__u32 tid, enum mls_feat_claim *claim)
{
	__u32 slot = tid & mls_feat_mask;
	struct task_feat *f = bpf_map_lookup_elem(&task_feat_slots, &slot);

	*claim = MLS_FEAT_OWNED;
	if (!f)
		return NULL;
	if (f->tid != tid) {
		*claim = f->tid ? MLS_FEAT_TAKEOVER : MLS_FEAT_NEW;
		__builtin_memset(f, 0, sizeof(*f));
		f->tid = tid;
	}
	return f;
}

// The state of task tid for reading, or NULL if it has none.
static __always_inline struct task_feat *mls_feat_peek(__u32 tid)
{
	__u32 slot = tid & mls_feat_mask;
	struct task_feat *f = bpf_map_lookup_elem(&task_feat_slots, &slot);

	if (!f || f->tid != tid)
		return NULL;
	return f;
}

// Free task tid's slot when it exits, so that a later takeover means a real collision.
static __always_inline void mls_feat_forget(__u32 tid)
{
	struct task_feat *f = mls_feat_peek(tid);

	if (f)
		f->tid = 0;
}

static __always_inline __u32 mls_decay(__u32 v, __u32 last, __u32 n)
{
	__u32 k = n - last;

	if (k >= MLS_POW_LEN)
		return 0;
	return (__u32)(((__u64)v * mls_pow[k]) >> MLS_POW_SHIFT);
}

static __always_inline __u32 mls_bucket(__u64 nr)
{
	if (nr >= MLS_SC_TABLE_LEN)
		return MLS_OTHER_BUCKET;
	return mls_sc_bucket[nr] & (MLS_NUM_BUCKETS - 1);
}

// Record syscall nr for state f: decays and bumps one bucket.
static __always_inline void mls_feat_syscall(struct task_feat *f, __u64 nr)
{
	__u32 b = mls_bucket(nr);
	__u32 n = f->n + 1;

	f->n = n;
	f->mask |= 1ULL << b;
	f->b[b].val = mls_decay(f->b[b].val, f->b[b].last, n) + MLS_FIXED_ONE;
	f->b[b].last = n;
}

// Write f's counts, decayed to its current syscall number, into out.
static __always_inline void mls_feat_snapshot(const struct task_feat *f, __u32 *out)
{
	__u32 n = f->n;

	// Most buckets of a task are zero: skip their multiply and table load.
	for (int b = 0; b < MLS_NUM_BUCKETS; b++) {
		__u32 v = f->b[b].val;

		out[b] = v ? mls_decay(v, f->b[b].last, n) : 0;
	}
}

// Bucket numbers by de Bruijn sequence: mls_debruijn[(x * MLS_DEBRUIJN) >> 58] is the position
// of x's only set bit. BPF has no count-trailing-zeros instruction, and a branch per bit would
// make the verifier walk every combination of a mask's bits.
#define MLS_DEBRUIJN 0x03f79d71b4ca8b09ULL
static const __u8 mls_debruijn[64] = {
	0, 1, 56, 2, 57, 49, 28, 3, 61, 58, 42, 50, 38, 29, 17, 4, 62, 47, 59, 36, 45, 43, 51, 22,
	53, 39, 33, 30, 24, 18, 12, 5, 63, 55, 48, 27, 60, 41, 37, 16, 46, 35, 44, 21, 52, 32, 23, 11,
	54, 26, 40, 15, 34, 20, 31, 10, 25, 14, 19, 9, 13, 8, 7, 6,
};

// Write the counts of the buckets f has used (f->mask, into *mask), decayed to its current
// syscall number, in increasing bucket order into vals; return how many. A count may have
// decayed to 0. Only those buckets are read: a task's state is ~540 bytes, of which it uses a
// few cache lines.
static __always_inline __u32 mls_feat_snapshot_sparse(const struct task_feat *f, __u32 *vals, __u64 *mask)
{
	__u64 m = f->mask;
	__u32 n = f->n, i;

	*mask = m;
	for (i = 0; i < MLS_NUM_BUCKETS; i++) {
		__u64 low;
		__u32 b;

		if (!m)
			break;
		low = m & -m;
		m ^= low;
		b = mls_debruijn[(low * MLS_DEBRUIJN) >> 58];
		// clang knows the table's values are < 64 and would drop the mask the verifier needs.
		asm volatile("" : "+r"(b));
		b &= MLS_NUM_BUCKETS - 1;
		vals[i] = mls_decay(f->b[b].val, f->b[b].last, n);
	}
	return i;
}

// A stint of the task of f starts at now: its gap is the time since its last stint ended.
static __always_inline void mls_feat_stint_start(struct task_feat *f, __u64 now)
{
	f->gap_ns = f->stop_ns && now > f->stop_ns ? now - f->stop_ns : 0;
}

// The stint of the task of f, started at start, ends at now, voluntarily or not
// (mls_left_voluntarily): both averages move by 1/2^MLS_EWMA_SHIFT towards it (the first stint
// sets them). Go's mirror: features.TaskSched.StintEnd.
static __always_inline void mls_feat_stint_end(struct task_feat *f, __u64 start, __u64 now, bool voluntary)
{
	__u64 len = now > start && start ? now - start : 0;
	__u32 vol = voluntary ? MLS_VOL_ONE : 0;

	if (!f->stints) {
		f->stint_avg = len;
		f->vol_avg = vol;
	} else {
		f->stint_avg += (__s64)(len - f->stint_avg) >> MLS_EWMA_SHIFT;
		f->vol_avg += (__s32)(vol - f->vol_avg) >> MLS_EWMA_SHIFT;
	}
	if (f->stints != ~0U)
		f->stints++;
	f->stop_ns = now;
}

// The state of task tid for a stint's start or end: its slot, or with claim one claimed for it
// (a task that makes no syscall, a CPU hog, has a scheduling state too: counted as
// mls_on_sys_enter counts a takeover). NULL: none.
static __always_inline struct task_feat *mls_feat_sched_slot(__u32 tid, bool claim, void *counters, __u32 takeover_idx)
{
	struct task_feat *f = mls_feat_peek(tid);
	enum mls_feat_claim c;

	if (f || !claim)
		return f;
	f = mls_feat_own(tid, &c);
	if (f && c == MLS_FEAT_TAKEOVER)
		mls_count_add(counters, takeover_idx, 1);
	return f;
}

// Task tid's stint on this CPU starts at now, or ends (started at start) at now.
static __always_inline void mls_on_stint_start(__u32 tid, __u64 now, bool claim, void *counters, __u32 takeover_idx)
{
	struct task_feat *f = mls_feat_sched_slot(tid, claim, counters, takeover_idx);

	if (f)
		mls_feat_stint_start(f, now);
}

static __always_inline void mls_on_stint_end(__u32 tid, __u64 start, __u64 now, bool voluntary, bool claim, void *counters,
					     __u32 takeover_idx)
{
	struct task_feat *f = mls_feat_sched_slot(tid, claim, counters, takeover_idx);

	if (f)
		mls_feat_stint_end(f, start, now, voluntary);
}

// A time's input to the net: features.LogTime, log2(1 + ns/2^10) with MLS_LOGT_FRAC fractional
// bits, linear between powers of two. The leading bit by smearing and the de Bruijn table (BPF
// has no count-leading-zeros instruction).
static __always_inline __u32 mls_log_time(__u64 ns)
{
	__u64 y, top, e, frac;

	if (ns > MLS_LOGT_MAX_NS)
		ns = MLS_LOGT_MAX_NS;
	y = (ns >> MLS_LOGT_UNIT_SHIFT) + 1; // < 2^31
	top = y;
	top |= top >> 1;
	top |= top >> 2;
	top |= top >> 4;
	top |= top >> 8;
	top |= top >> 16;
	top ^= top >> 1; // y's leading bit alone
	e = mls_debruijn[(top * MLS_DEBRUIJN) >> 58];
	asm volatile("" : "+r"(e));
	e &= 31;
	if (e >= MLS_LOGT_FRAC)
		frac = y >> (e - MLS_LOGT_FRAC);
	else
		frac = y << (MLS_LOGT_FRAC - e);
	return (__u32)((e << MLS_LOGT_FRAC) | (frac & ((1U << MLS_LOGT_FRAC) - 1)));
}

// The extra inputs of a wake sample's scheduling state (features.SetExtras).
static __always_inline void mls_extras(const struct mls_wake *e, __u32 *x)
{
	__u32 vol = e->r_vol < MLS_VOL_ONE ? e->r_vol : MLS_VOL_ONE;

	x[0] = mls_log_time(e->r_oncpu_ns);
	x[1] = mls_log_time(e->r_stint_ns);
	x[2] = vol >> MLS_VOL_INPUT_SHIFT;
	x[3] = mls_log_time(e->r_gap_ns);
}

// R's scheduling state at now (the task of f, on its CPU since start; f may be NULL) into e.
static __always_inline void mls_state_fill(struct mls_wake *e, const struct task_feat *f, __u64 start, __u64 now)
{
	e->r_oncpu_ns = now > start ? now - start : 0;
	e->r_stint_ns = f ? f->stint_avg : 0;
	e->r_vol = f && f->stints ? f->vol_avg : MLS_VOL_UNKNOWN;
	e->r_gap_ns = f ? f->gap_ns : 0;
}

// What runs on a CPU, since when, and the pending sample that names it. Each object's per-CPU
// state starts with it (the object keeps its own extras behind).
struct mls_cpu_run {
	__u32 tid; // the task running on this CPU (0: idle, or not known yet)
	__u32 tgid;
	__u64 start_ns;   // when it started running here
	__u64 sample_seq; // the pending sample's seq (the scheduler's; 0 in capture)
	__u64 sample_ns;  // when that sample was taken
	__u32 sample_tid; // the task the pending sample names (0: none pending)
	__u32 yielding;   // the running task called sched_yield
};

static __always_inline struct mls_cpu_run *mls_cpu_run_of(void *cpu_map, __u32 cpu)
{
	return bpf_map_lookup_elem(cpu_map, &cpu);
}

// sys_enter of task tid (pid_tgid's low half), syscall id: one decayed bucket bumped; a
// sched_yield marks the CPU's running task, so that its leave counts as voluntary. cpu_map is
// the object's per-CPU state map (looked up only for sched_yield); a feature slot taken from a
// live thread adds one to counter takeover_idx of the object's per-CPU counter map (in the
// branch that claims the slot, off the common path).
static __always_inline void mls_on_sys_enter(void *cpu_map, void *counters, __u32 takeover_idx, __u32 tid, __u64 id)
{
	enum mls_feat_claim claim;
	struct task_feat *f = mls_feat_own(tid, &claim);

	if (!f)
		return;
	if (claim == MLS_FEAT_TAKEOVER)
		mls_count_add(counters, takeover_idx, 1);
	mls_feat_syscall(f, id);
	if (id == MLS_NR_SCHED_YIELD) {
		struct mls_cpu_run *r = mls_cpu_run_of(cpu_map, bpf_get_smp_processor_id());

		if (r)
			r->yielding = 1;
	}
}

// A task starts running on the CPU r describes (tid 0: the idle task).
static __always_inline void mls_run_start(struct mls_cpu_run *r, __u32 tid, __u32 tgid, __u64 start_ns)
{
	r->tid = tid;
	r->tgid = tgid;
	r->start_ns = start_ns;
	r->yielding = 0;
}

// The task leaving the CPU r describes: true if a pending sample names it (which is then
// resolved, and cleared either way).
static __always_inline bool mls_run_take_sample(struct mls_cpu_run *r, __u32 leaving_tid)
{
	bool named = r->sample_tid && r->sample_tid == leaving_tid;

	r->sample_tid = 0;
	return named;
}

// The label's rule (features.LeftVoluntarily in Go), over the two facts both hooks have: a task
// left its CPU voluntarily when it is no longer runnable (it slept, waited or exited) or it
// yielded. sched_ext's stopping() gives runnable; the capture probes derive it from
// sched_switch: preempted, or prev_state TASK_RUNNING (a task preempted in user mode leaves
// through a plain schedule() with preempt false). sched_switch's preempt flag alone is not used:
// stopping() cannot see it, and a task that entered sched_yield but was preempted before it
// got to yield is about to yield either way.
static __always_inline bool mls_left_voluntarily(bool runnable, __u32 yielding)
{
	return !runnable || yielding;
}

// Fill the wake sample e, W (w_tid) waking while prev_cpu runs R (r->tid), and mark it pending
// on r (the caller clears r->sample_tid if the sample is not emitted after all). The caller sets
// the scheduler's fields (nr_allowed, flags).
static __always_inline void mls_wake_fill(struct mls_wake *e, struct mls_cpu_run *r, __u8 type, __u16 prev_cpu,
					  __u32 w_tid, __u64 now, __u64 seq)
{
	struct task_feat *f;
	__u32 nvals = 0;

	e->type = type;
	e->flags = 0;
	e->_pad0 = 0;
	e->prev_cpu = prev_cpu;
	e->waker_cpu = bpf_get_smp_processor_id();
	e->w_tid = w_tid;
	e->r_tid = r->tid;
	e->ts_ns = now;
	e->seq = seq;
	e->nr_allowed = 0;
	e->_pad1 = 0;
	e->mask = 0;
	f = mls_feat_peek(r->tid);
	mls_state_fill(e, f, r->start_ns, now);
	if (f)
		nvals = mls_feat_snapshot_sparse(f, e->vals, &e->mask);
	if (nvals > MLS_NUM_BUCKETS)
		nvals = MLS_NUM_BUCKETS;
	e->nvals = nvals;
	r->sample_seq = seq;
	r->sample_ns = now;
	r->sample_tid = r->tid;
}

// The length of a filled sample: the header and its nvals counts.
static __always_inline __u32 mls_wake_len(const struct mls_wake *e)
{
	__u32 n = e->nvals;

	if (n > MLS_NUM_BUCKETS)
		n = MLS_NUM_BUCKETS;
	return sizeof(*e) - sizeof(e->vals) + n * sizeof(e->vals[0]);
}
