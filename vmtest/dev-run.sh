#!/usr/bin/env bash
# Developer loop for the scheduler (not a test): boot the sched_ext kernel with ./mlsched and a
# small mixed workload, run `mlsched run ARGS...` around it, print the guest's report.
#   vmtest/dev-run.sh --policy fifo --stats 1s -v
#   DURATION=20s SIGNAL=KILL vmtest/dev-run.sh --model m.bin
# Extra files for the guest: DEVRUN_FILES="host/path:guest/name ...".
set -euo pipefail
here=$(dirname "${BASH_SOURCE[0]}")
. "$here/lib.sh"
root=$(cd "$here/.." && pwd)
need qemu-system-x86_64:qemu-system-x86 cpio:cpio gzip:gzip timeout:coreutils
kdir=$("$here/fetch-kernel.sh" | tail -1)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/rootfs"/{dev,proc,sys,tmp}
(cd "$root" && CGO_ENABLED=0 go build -trimpath -o "$work/rootfs/init" ./vmtest/devrun &&
	CGO_ENABLED=0 go build -trimpath -o "$work/rootfs/mlsched" ./cmd/mlsched)
printf '%s\n' run "$@" >"$work/rootfs/devrun.args"
printf 'DURATION=%s\nSIGNAL=%s\nBASELINE=%s\nWORKLOAD=%s\nHOTPLUG=%s\n' "${DURATION:-10s}" "${SIGNAL:-INT}" "${BASELINE:-0}" "${WORKLOAD:-mixed}" "${HOTPLUG:-0}" >"$work/rootfs/devrun.env"
for f in ${DEVRUN_FILES:-}; do cp "${f%%:*}" "$work/rootfs/${f#*:}"; done
(cd "$work/rootfs" && find . | cpio -o -H newc -R 0:0 --quiet | gzip -1 >"$work/initrd.gz")
timeout "${DEVRUN_TIMEOUT:-240}" qemu-system-x86_64 -nodefaults -no-user-config \
	-accel tcg,thread=multi -cpu "${QEMU_CPU:-max}" -m 1G -smp "${SMP:-2}" \
	-kernel "$kdir/vmlinuz" -initrd "$work/initrd.gz" \
	-append "console=ttyS0 quiet panic=-1" \
	-display none -monitor none -no-reboot \
	-serial "file:$work/console.log" -serial "file:$work/out.txt" || log "qemu failed or timed out"
tr -d '\r' <"$work/out.txt"
grep -iE 'BUG|WARNING|stall|sched_ext|error' "$work/console.log" | head -40 >&2 || true
