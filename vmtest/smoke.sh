#!/usr/bin/env bash
# Smoke test: boot the cached sid kernel under qemu with a tiny Go /init
# (vmtest/smoke/init) and check it reports sched_ext state "disabled" (i.e.
# sched_ext is built in and idle) and kernel BTF. Prints the report and the
# boot-to-poweroff time. Exit status 0 only if both checks pass.
set -euo pipefail
here=$(dirname "${BASH_SOURCE[0]}")
. "$here/lib.sh"
root=$(cd "$here/.." && pwd)

need qemu-system-x86_64:qemu-system-x86 cpio:cpio gzip:gzip timeout:coreutils
command -v go >/dev/null || die "go toolchain not found"
kdir=$("$here/fetch-kernel.sh" | tail -1)

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/rootfs"/{dev,proc,sys}
# Static: the initramfs has no libc or loader.
(cd "$root" && CGO_ENABLED=0 go build -trimpath -ldflags=-s -o "$work/rootfs/init" ./vmtest/smoke/init)
# newc is the only cpio format the kernel unpacks; owner root so /init is root's.
(cd "$work/rootfs" && find . | cpio -o -H newc -R 0:0 --quiet | gzip -1 >"$work/initrd.gz")

# TCG only: /dev/kvm here can't run guests (see ENVIRONMENT.md). -nodefaults
# drops the default NIC/VGA (less to probe, faster boot). ttyS0 = kernel
# console (kept for debugging), ttyS1 = the report. -no-reboot + panic=-1 make
# any panic end qemu instead of hanging; timeout is the last resort.
log "booting $(cat "$kdir/version") under qemu (TCG)"
t0=$(date +%s.%N)
timeout "${SMOKE_TIMEOUT:-180}" qemu-system-x86_64 -nodefaults -no-user-config \
	-accel tcg,thread=multi -cpu max -m 1G -smp 2 \
	-kernel "$kdir/vmlinuz" -initrd "$work/initrd.gz" \
	-append "console=ttyS0 quiet panic=-1" \
	-display none -monitor none -no-reboot \
	-serial "file:$work/console.log" -serial "file:$work/out.txt" ||
	{ tail -n 30 "$work/console.log" >&2; die "qemu failed or timed out"; }
t1=$(date +%s.%N)

# The guest tty turns \n into \r\n: strip the \r before matching whole lines.
tr -d '\r' <"$work/out.txt" >"$work/report.txt"
cat "$work/report.txt"
awk -v a="$t0" -v b="$t1" 'BEGIN { printf "boot_to_poweroff_s=%.2f\n", b - a }'
grep -qx 'sched_ext_state=disabled' "$work/report.txt" && grep -qx 'btf_vmlinux=true' "$work/report.txt" ||
	{ tail -n 30 "$work/console.log" >&2; die "smoke test failed"; }
log "OK: sched_ext present and disabled, BTF present"
