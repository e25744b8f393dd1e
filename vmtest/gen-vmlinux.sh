#!/usr/bin/env bash
# Regenerate bpf/vmlinux.h from the BTF of the sid sched_ext kernel (not the
# host's /sys/kernel/btf/vmlinux: the host kernel lacks sched_ext, so its BTF
# has no struct sched_ext_ops / scx_* types).
# Usage: vmtest/gen-vmlinux.sh [output, default bpf/vmlinux.h]
set -euo pipefail
here=$(dirname "${BASH_SOURCE[0]}")
. "$here/lib.sh"
out=${1:-$here/../bpf/vmlinux.h}

need bpftool:bpftool
kdir=$("$here/fetch-kernel.sh" | tail -1)

# Dump to a temp file and check it before replacing, so a failed run never
# leaves a truncated header behind. bpftool 7.1 prints a few harmless warnings.
tmp=$(mktemp "$out.XXXXXX")
trap 'rm -f "$tmp"' EXIT
bpftool btf dump file "$kdir/vmlinux.btf" format c >"$tmp"
for t in 'struct sched_ext_ops {' 'struct scx_exit_info {' 'enum scx_enq_flags {' 'struct task_struct {'; do
	grep -qF "$t" "$tmp" || die "generated vmlinux.h lacks '$t'"
done
chmod 644 "$tmp" && mv "$tmp" "$out" && trap - EXIT
log "wrote $out for kernel $(cat "$kdir/version") ($(wc -l <"$out") lines)"
