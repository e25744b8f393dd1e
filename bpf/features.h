// SPDX-License-Identifier: GPL-2.0
// Per-task syscall-decay features, shared by the capture probes and the scheduler.
// The Go mirror is features/decay.go; the table and constants come from schema_table.h,
// generated from features/schema.go.
#pragma once

#include "schema_table.h"

// One task's state: a syscall counter and, per bucket, a decayed count (Q16) valid at the
// task's syscall number last[b]. Lazy decay keeps the syscall hook O(1).
struct task_feat {
	__u32 n;
	__u32 _pad;
	__u32 val[MLS_NUM_BUCKETS];
	__u32 last[MLS_NUM_BUCKETS];
};

// Feature state by thread id. A hash (not task storage) so that any hook can read the
// features of the task running on another CPU knowing only its tid, on any kernel >= 5.15.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536); // resized by the loader
	__type(key, __u32);
	__type(value, struct task_feat);
} task_feats SEC(".maps");

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
	f->val[b] = mls_decay(f->val[b], f->last[b], n) + MLS_FIXED_ONE;
	f->last[b] = n;
}

// Write f's counts, decayed to its current syscall number, into out.
static __always_inline void mls_feat_snapshot(const struct task_feat *f, __u32 *out)
{
	__u32 n = f->n;

	// Most buckets of a task are zero: skip their multiply and table load.
	for (int b = 0; b < MLS_NUM_BUCKETS; b++) {
		__u32 v = f->val[b];

		out[b] = v ? mls_decay(v, f->last[b], n) : 0;
	}
}
