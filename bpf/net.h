// SPDX-License-Identifier: GPL-2.0
// The net in BPF: the integer form of the model (struct mls_net, abi.h; written by
// model.KernelForm.MarshalBinary) evaluated on a task's features with no floating point.
// model.KernelForm.Logit is its Go reference, bit for bit (bpf/net_test.go). No object-specific
// code in here.
#pragma once

#include "abi.h"
#include "features.h"

// Table segments per octave: 2^MLS_NET_MANT (model.KernelTableMant).
#define MLS_NET_MANT 4
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

// Bit lengths (bits.Len) of 0..511: mls_net_input's segment in one table load and one select,
// where halving took five dependent steps (measured ~10% of a 12-bucket decision here).
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

// The quantised input of count v: log1p(min(v, MaxCount) / 2^16) * 2^13, interpolated between
// two table knots (model.KernelForm.input). Branch-free: v's segment s is the bit length of
// y = v >> (MLS_NET_MANT + 1) < 2^18 (v <= MLS_NET_MAX_COUNT = 2^22), read from mls_net_len9
// for y or, past 511, for y >> 9 (< 2^9) plus 9.
static __always_inline __s64 mls_net_input(const struct mls_net *net, __u32 count)
{
	__u64 v = count, d, y, s, t, i, frac;
	__s64 t0, t1;

	d = v - MLS_NET_MAX_COUNT; // negative (as s64) below the clamp
	v = MLS_NET_MAX_COUNT + (d & (__u64)((__s64)mls_net_opaque(d) >> 63));
	y = v >> (MLS_NET_MANT + 1);
	t = mls_net_gt(y, 511);
	t += t << 3; // 9 past 511, else 0
	s = mls_net_opaque(mls_net_len9[(y >> t) & 511]) + t;
	i = mls_net_opaque((s << MLS_NET_MANT) + (v >> s));
	frac = v & ((1ULL << s) - 1);
	t0 = net->table[i & (MLS_NET_TABLE_LEN - 1)];
	t1 = net->table[(i + 1) & (MLS_NET_TABLE_LEN - 1)];
	return t0 + (((t1 - t0) * (__s64)frac) >> s);
}

// The syscall part of the net's hidden layer for task state f, its counts decayed to its
// current syscall number as mls_feat_snapshot_sparse does, into acc: b1[k] plus the used
// buckets' terms. Only the buckets of f->mask are read, and only those whose count has not
// decayed to zero are evaluated. mls_net_finish adds the extras and gives the logit; the
// scheduler caches acc while R makes no syscall (struct task_feat).
//
// Cost (docs/BENCHMARKS.md, issue 12): per evaluated bucket ~1 ns per hidden unit's multiply-add
// (16 of them, about 60% of it), ~5 ns for the input quantisation, ~2 ns for the decay; a used
// bucket decayed to zero costs 2-3.5 ns (the bit scan, its two loads and the decay).
//
// Each weight is stored offset, w + 2^15 >= 0 as a u16 (model.KernelForm.MarshalBinary; a
// sign-extending load takes three instructions without -mcpu=v4, and flipping the top bit at
// every load was one more per multiply-add), and 2^15 times the sum of the inputs is taken off
// each accumulator at the end. Every sum stays below 2^63 (the bounds of
// model.KernelForm), so the result is the exact one.
static __always_inline void mls_net_counts(const struct mls_net *net, const struct task_feat *f, __s64 *acc)
{
	__u64 m = f->mask, xsum = 0;
	__u32 n = f->n;

#pragma unroll
	for (int k = 0; k < MLS_NET_HIDDEN; k++)
		acc[k] = net->b1[k];
	// The accumulators stay in memory, each read and written once per bucket, the weights
	// loaded one at a time: left to itself clang loads all 16 weights first and spills them.
	// (Two buckets per pass, halving the accumulators' loads and stores, measured the same.)
	asm volatile("" : "+r"(acc)::"memory");
	while (m && mls_can_loop) {
		__u64 low = m & -m, x;
		const __u16 *row;
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
		x = mls_net_input(net, c) << (net->x_shift[b] & 31);
		xsum += x;
		row = (const __u16 *)net->w1[b];
#pragma unroll
		for (int k = 0; k < MLS_NET_HIDDEN; k++) {
			acc[k] += (__s64)(mls_net_opaque(row[k]) * x);
			asm volatile("" ::: "memory");
		}
	}
	xsum <<= 15;
#pragma unroll
	for (int k = 0; k < MLS_NET_HIDDEN; k++)
		acc[k] -= (__s64)xsum;
}

// The logit from the syscall part acc (mls_net_counts) and the extra inputs x (MLS_NUM_EXTRAS
// of them, mls_extras): their terms, the ReLU and the output layer, one pass per hidden unit
// with the four inputs in registers (the weights offset u16, as in mls_net_counts).
// Keep local iff the result is >= net->bound (mls_net_decide).
static __always_inline __s64 mls_net_finish(const struct mls_net *net, const __s64 *acc, const __u32 *x)
{
	const __u16 *r0 = (const __u16 *)net->w1[MLS_NUM_BUCKETS], *r1 = (const __u16 *)net->w1[MLS_NUM_BUCKETS + 1];
	const __u16 *r2 = (const __u16 *)net->w1[MLS_NUM_BUCKETS + 2], *r3 = (const __u16 *)net->w1[MLS_NUM_BUCKETS + 3];
	__u64 x0 = (__u64)x[0] << (net->x_shift[MLS_NUM_BUCKETS] & 31);
	__u64 x1 = (__u64)x[1] << (net->x_shift[MLS_NUM_BUCKETS + 1] & 31);
	__u64 x2 = (__u64)x[2] << (net->x_shift[MLS_NUM_BUCKETS + 2] & 31);
	__u64 x3 = (__u64)x[3] << (net->x_shift[MLS_NUM_BUCKETS + 3] & 31);
	__s64 xsum = (__s64)((x0 + x1 + x2 + x3) << 15), out = 0;
	__u32 sh = net->shift & 63;

#pragma unroll
	for (int k = 0; k < MLS_NET_HIDDEN; k++) {
		__s64 a = acc[k] - xsum;

		a += (__s64)(mls_net_opaque(r0[k]) * x0 + mls_net_opaque(r1[k]) * x1 + mls_net_opaque(r2[k]) * x2 +
			     mls_net_opaque(r3[k]) * x3);
		a &= ~(__s64)mls_net_opaque((__u64)(a >> 63)); // max(a, 0)
		out += (__s64)net->w2[k] * (a >> sh);
	}
	return out;
}

// The whole logit for task state f with extra inputs x, uncached.
static __always_inline __s64 mls_net_logit(const struct mls_net *net, const struct task_feat *f, const __u32 *x)
{
	__s64 acc[MLS_NET_HIDDEN];

	mls_net_counts(net, f, acc);
	return mls_net_finish(net, acc, x);
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
