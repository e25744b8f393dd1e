#!/usr/bin/env bash
# Build the kernel's example sched_ext schedulers (scx_simple, scx_userland) from Debian sid's
# linux-source-<series> of the same kernel the VM boots, against that kernel's BTF, for
# `make vmbench` (vmbench_test.go). Cached under
#   ${MLSCHED_CACHE:-$HOME/.cache/mlsched}/peers/<kernel version>/
# with the binaries and a file `source` naming the source package and version.
# Usage: vmtest/fetch-peers.sh KERNEL_DIR   (fetch-kernel.sh's cache dir: version, vmlinux.btf)
# Progress goes to stderr; the last stdout line is the cache dir.
# The machine's apt sources are never touched (sid-apt.sh); the build tools (clang-19, llvm-19,
# libelf-dev, zlib1g-dev, make) come from the machine's own release, installed as root if missing.
# Env: MLSCHED_PEERS_REBUILD=1 builds again even if the cache is valid.
set -euo pipefail
here=$(dirname "${BASH_SOURCE[0]}")
. "$here/lib.sh"
. "$here/sid-apt.sh"

kdir=${1:?usage: fetch-peers.sh KERNEL_DIR}
kver=$(cat "$kdir/version")
[[ -s $kdir/vmlinux.btf ]] || die "$kdir/vmlinux.btf missing (run fetch-kernel.sh)"
CACHE=${MLSCHED_CACHE:-$HOME/.cache/mlsched}
PDIR=$CACHE/peers/$kver
PEERS=(scx_simple scx_userland)

valid() {
	local p
	for p in "${PEERS[@]}"; do [[ -x $1/$p ]] || return 1; done
	[[ -s $1/source ]]
}

mkdir -p "$CACHE/peers"
exec 8>"$CACHE/.peers.lock"
flock 8
if [[ ${MLSCHED_PEERS_REBUILD:-0} != 1 ]] && valid "$PDIR"; then
	log "cached peers for $kver: $(cat "$PDIR/source")"
	echo "$PDIR"
	exit 0
fi

need clang-19:clang-19 llvm-strip-19:llvm-19 make:make cc:gcc xz:xz-utils dpkg-deb:dpkg flock:util-linux
[[ -e /usr/include/gelf.h ]] || install libelf-dev
[[ -e /usr/include/zlib.h ]] || install zlib1g-dev

# 7.2.13+deb14-amd64 (or 7.2.13-amd64) -> upstream 7.2.13, series 7.2.
up=${kver%%[+-]*}
IFS=. read -r major minor _ <<<"$up"
series=$major.$minor
pkg=linux-source-$series

# The apt lists are shared with fetch-kernel.sh: hold its lock while apt runs.
sid_apt_init "$CACHE/apt-sid"
exec 9>"$CACHE/.kernel.lock"
flock 9
versions() { apt-cache "${APT[@]}" madison "$pkg" 2>/dev/null | awk -F'|' '{gsub(/ /, "", $2); print $2}'; }
if [[ -z $(versions) ]]; then
	log "apt-get update (sid, private lists)"
	apt-get "${APT[@]}" update >&2
fi
all=$(versions)
[[ -n $all ]] || die "$pkg is not in sid (kernel $kver)"
# The source of exactly the booted kernel if sid still has it; else sid's current one, said loudly
# (only the example schedulers are built from it, against the booted kernel's own BTF).
ver=$(grep -m1 -E "^$up-" <<<"$all" || true)
if [[ -z $ver ]]; then
	ver=$(head -1 <<<"$all")
	log "WARNING: sid has no $pkg for $up (kernel $kver), only $(tr '\n' ' ' <<<"$all"); using $ver." \
		"MLSCHED_KERNEL_REFRESH=1 vmtest/fetch-kernel.sh moves the kernel to sid's current one."
fi
tmp=$(mktemp -d "$CACHE/peers/build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
log "downloading $pkg=$ver (~160 MB)"
(cd "$tmp" && apt-get "${APT[@]}" download "$pkg=$ver" >&2)
flock -u 9

# Only what tools/sched_ext's build reads: tools/ (libbpf, bpftool, headers, build rules), the
# verifier's disassembler that bpftool compiles in, and the top-level headers and scripts.
src=linux-source-$series
log "extracting $src/tools from $pkg"
dpkg-deb --fsys-tarfile "$tmp"/${pkg}_*.deb | tar -xO "./usr/src/$src.tar.xz" |
	tar -xJ -C "$tmp" "$src/tools" "$src/kernel/bpf" "$src/include" "$src/scripts" "$src/arch/x86/include" "$src/Makefile"
rm -f "$tmp"/*.deb
log "building ${PEERS[*]} with clang-19 against $kver's BTF"
make -C "$tmp/$src/tools/sched_ext" -j"$(nproc)" CLANG=clang-19 LLVM_STRIP=llvm-strip-19 \
	BPF_STRIP=llvm-strip-19 VMLINUX_BTF="$(realpath "$kdir/vmlinux.btf")" "${PEERS[@]}" >"$tmp/build.log" 2>&1 ||
	{ tail -40 "$tmp/build.log" >&2; die "make -C tools/sched_ext failed (log above)"; }
mkdir -p "$tmp/out"
for p in "${PEERS[@]}"; do
	cp "$tmp/$src/tools/sched_ext/build/bin/$p" "$tmp/out/$p"
done
echo "$pkg $ver" >"$tmp/out/source"
valid "$tmp/out" || die "built peers incomplete"
rm -rf "$PDIR" && mv "$tmp/out" "$PDIR"
log "cached ${PEERS[*]} for $kver in $PDIR ($pkg $ver)"
echo "$PDIR"
