// SPDX-License-Identifier: GPL-2.0
// The net in BPF: the integer form of the model (struct mls_net, abi.h; written by
// model.KernelForm.MarshalBinary) evaluated on a task's features with no floating point.
// model.KernelForm.Logit is its Go reference, bit for bit (bpf/net_test.go). No object-specific
// code in here.
#pragma once

#include "abi.h"
#include "features.h"

// Counts are clamped to features.MaxCount, 64.0 in Q16.
#define MLS_NET_MAX_COUNT (64 * MLS_FIXED_ONE)

// A may_goto loop condition (the kernel's bpf_experimental.h can_loop, kernels >= 6.9): the
// verifier checks the body once per distinct state, not once per iteration, and the kernel
// bounds the iterations at run time.
#define mls_can_loop                                                                   \
	({                                                                             \
		__label__ l_break, l_continue;                                         \
		bool ret = true;                                                       \
		asm volatile goto("may_goto %l[l_break]" :::: l_break);                \
		goto l_continue;                                                       \
	l_break:                                                                       \
		ret = false;                                                           \
	l_continue:;                                                                   \
		ret;                                                                   \
	})

// x, with clang not knowing anything about it: it keeps arithmetic as written (a select turned
// back into a branch, or a mask dropped, would cost the verifier or the branch predictor).
static __always_inline __u64 mls_net_opaque(__u64 x)
{
	asm volatile("" : "+r"(x));
	return x;
}

// 1 if y > c, for y, c < 2^63, without a branch.
static __always_inline __u64 mls_net_gt(__u64 y, __u64 c)
{
	return mls_net_opaque(c - y) >> 63;
}

// Bit lengths (bits.Len) of 0..511: mls_net_level's segment in one table load and one select,
// where halving took five dependent steps.
#define MLS_NET_R2(n) n, n
#define MLS_NET_R4(n) MLS_NET_R2(n), MLS_NET_R2(n)
#define MLS_NET_R8(n) MLS_NET_R4(n), MLS_NET_R4(n)
#define MLS_NET_R16(n) MLS_NET_R8(n), MLS_NET_R8(n)
#define MLS_NET_R32(n) MLS_NET_R16(n), MLS_NET_R16(n)
#define MLS_NET_R64(n) MLS_NET_R32(n), MLS_NET_R32(n)
#define MLS_NET_R128(n) MLS_NET_R64(n), MLS_NET_R64(n)
#define MLS_NET_R256(n) MLS_NET_R128(n), MLS_NET_R128(n)
static const __u8 mls_net_len9[512] = {
	0, 1, MLS_NET_R2(2), MLS_NET_R4(3), MLS_NET_R8(4), MLS_NET_R16(5), MLS_NET_R32(6), MLS_NET_R64(7),
	MLS_NET_R128(8), MLS_NET_R256(9),
};

// The level of count v (model.KernelLevel): v clamped to MLS_NET_MAX_COUNT, its segment s the
// bit length of y = v >> (MLS_NET_MANT + 1) < 2^17, read from mls_net_len9 for y or, past 511,
// for y >> 9 plus 9; then (s << MLS_NET_MANT) + (v >> s), plus one if the bit below v >> s is
// set (the nearest knot). Branch-free; at most MLS_NET_LEVELS - 1.
static __always_inline __u64 mls_net_level(__u32 count)
{
	__u64 v = count, d, y, s, t;

	d = v - MLS_NET_MAX_COUNT; // negative (as s64) below the clamp
	v = MLS_NET_MAX_COUNT + (d & (__u64)((__s64)mls_net_opaque(d) >> 63));
	y = v >> (MLS_NET_MANT + 1);
	t = mls_net_gt(y, 511);
	t += t << 3; // 9 past 511, else 0
	s = mls_net_opaque(mls_net_len9[(y >> t) & 511]) + t;
	return (s << MLS_NET_MANT) + (v >> s) + (((v << 1) >> s) & 1);
}

// The syscall part of the net's hidden layer for task state f, its counts decayed to its
// current syscall number as mls_feat_snapshot_sparse does, into lane: the used buckets' terms,
// two units per u64 (struct mls_net: unit 2p in the low s32 of lane[p], 2p + 1 in the high).
// Only the buckets of f->mask are read, and only those whose count has not decayed to zero are
// evaluated: each adds its level's row of net->c, eight u64 additions and no multiply.
// mls_net_finish splits the lanes and adds b1, the extras, the ReLU and the output layer; the
// scheduler caches the lanes while R makes no syscall (struct task_feat).
//
// Cost (docs/BENCHMARKS.md, issue 12): per evaluated bucket the bit scan, the decay, the level
// and the eight additions; a used bucket decayed to zero costs only the first two.
static __always_inline void mls_net_counts(const struct mls_net *net, const struct task_feat *f, __u64 *lane)
{
	__u64 m = f->mask;
	__u32 n = f->n;

#pragma unroll
	for (int p = 0; p < MLS_NET_PAIRS; p++)
		lane[p] = 0;
	while (m && mls_can_loop) {
		__u64 low = m & -m, i;
		const __u64 *row;
		__u32 b, c;

		m ^= low;
		b = mls_debruijn[(low * MLS_DEBRUIJN) >> 58];
		// clang knows the table's values are < 64 and would drop the mask the verifier needs.
		asm volatile("" : "+r"(b));
		b &= MLS_NUM_BUCKETS - 1;
		c = mls_decay(f->b[b].val, f->b[b].last, n);
		// A bucket decayed to zero adds nothing: most of a long-lived task's used buckets
		// (its mask keeps every bucket since its slot was claimed) cost only this far.
		if (!c)
			continue;
		i = mls_net_opaque(mls_net_level(c));
		if (i >= MLS_NET_LEVELS) // never (the clamp); for the verifier
			continue;
		row = net->c[b][i];
#pragma unroll
		for (int p = 0; p < MLS_NET_PAIRS; p++)
			lane[p] += row[p];
	}
}

// Hidden unit k's output term, w2 * (max(acc, 0) >> shift), from its counts' lane (already split
// and shifted), b1 and the extras' terms for the shifted extras x0..x3; xsum is 2^15 times their
// sum, which the weights' offset (w + 2^15, struct mls_net) adds to every unit.
static __always_inline __s64 mls_net_unit(const struct mls_net *net, int k, __s64 counts, __s64 xsum, __u64 x0,
					  __u64 x1, __u64 x2, __u64 x3, __u32 sh)
{
	__s64 a = net->b1[k] + counts - xsum;

	a += (__s64)(mls_net_opaque(net->w1[0][k]) * x0 + mls_net_opaque(net->w1[1][k]) * x1 +
		     mls_net_opaque(net->w1[2][k]) * x2 + mls_net_opaque(net->w1[3][k]) * x3);
	a &= ~(__s64)mls_net_opaque((__u64)(a >> 63)); // max(a, 0)
	return (__s64)net->w2[k] * (a >> sh);
}

// The logit from the counts' lanes (mls_net_counts; all zero for a task with no counts) and
// the extra inputs x (MLS_NUM_EXTRAS of them, mls_extras): each lane split back to its two
// units (lo = its low 32 bits as an s32, hi = (u - lo) / 2^32) and shifted by c_shift, then
// each unit's b1, extras' terms (the four inputs in registers), ReLU and output term
// (mls_net_unit), one pass per pair of units.
// Keep local iff the result is >= net->bound (mls_net_decide).
static __always_inline __s64 mls_net_finish(const struct mls_net *net, const __u64 *lane, const __u32 *x)
{
	__u64 x0 = (__u64)x[0] << (net->x_shift[0] & 31);
	__u64 x1 = (__u64)x[1] << (net->x_shift[1] & 31);
	__u64 x2 = (__u64)x[2] << (net->x_shift[2] & 31);
	__u64 x3 = (__u64)x[3] << (net->x_shift[3] & 31);
	__s64 xsum = (__s64)((x0 + x1 + x2 + x3) << 15), out = 0;
	__u32 sh = net->shift & 63, cs = net->c_shift & 63;

#pragma unroll
	for (int p = 0; p < MLS_NET_PAIRS; p++) {
		__s64 lo = (__s32)lane[p], hi = ((__s64)lane[p] - lo) >> 32;

		out += mls_net_unit(net, 2 * p, (__s64)((__u64)lo << cs), xsum, x0, x1, x2, x3, sh);
		out += mls_net_unit(net, 2 * p + 1, (__s64)((__u64)hi << cs), xsum, x0, x1, x2, x3, sh);
	}
	return out;
}

// The whole logit for task state f with extra inputs x, uncached.
static __always_inline __s64 mls_net_logit(const struct mls_net *net, const struct task_feat *f, const __u32 *x)
{
	__u64 lane[MLS_NET_PAIRS];

	mls_net_counts(net, f, lane);
	return mls_net_finish(net, lane, x);
}

static __always_inline bool mls_net_keep_local(const struct mls_net *net, __s64 logit)
{
	return logit >= net->bound;
}

// The net's answers (mls_net_decide).
#define MLS_NET_MIGRATE 0
#define MLS_NET_KEEP 1
#define MLS_NET_ABSTAIN 2 // inside the model's abstention band: no opinion

// The whole answer from a logit: no opinion inside [lower, upper) (lower == upper: never), else
// keep local iff logit >= bound.
static __always_inline int mls_net_decide(const struct mls_net *net, __s64 logit)
{
	if (logit >= net->lower && logit < net->upper)
		return MLS_NET_ABSTAIN;
	return logit >= net->bound ? MLS_NET_KEEP : MLS_NET_MIGRATE;
}

// Whether net is a record of this layout (a zeroed map value, or one from another version of
// mlsched, is not).
static __always_inline bool mls_net_usable(const struct mls_net *net)
{
	return net->version == MLS_NET_VERSION && net->hidden >= 1 && net->hidden <= MLS_NET_HIDDEN;
}
