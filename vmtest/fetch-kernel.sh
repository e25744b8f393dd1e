#!/usr/bin/env bash
# Fetch Debian sid's kernel (the only Debian kernel with CONFIG_SCHED_CLASS_EXT)
# and cache vmlinuz, config, vmlinux.btf and version under
#   ${MLSCHED_CACHE:-$HOME/.cache/mlsched}/kernel/
# The machine's own apt sources/state are never touched (sid-apt.sh).
# Progress goes to stderr; the last stdout line is the cache dir.
# Env: MLSCHED_KERNEL_REFRESH=1 re-resolves even if the cache is valid (sid moves);
#      MLSCHED_DEBIAN_MIRROR overrides the mirror (default: the machine's own).
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
. "$(dirname "${BASH_SOURCE[0]}")/sid-apt.sh"

CACHE=${MLSCHED_CACHE:-$HOME/.cache/mlsched}
KDIR=$CACHE/kernel
APTDIR=$CACHE/apt-sid

# A cache is valid if every file is there and sane; checked before and after work.
valid() {
	local d=$1 f
	for f in vmlinuz config vmlinux.btf version; do [[ -s $d/$f ]] || return 1; done
	grep -qx 'CONFIG_SCHED_CLASS_EXT=y' "$d/config" || return 1
	[[ $(od -An -tx1 -N2 "$d/vmlinux.btf" | tr -d ' ') == 9feb ]] || return 1 # BTF magic 0xeB9F (LE)
	[[ $(od -An -c -j514 -N4 "$d/vmlinuz" | tr -d ' ') == HdrS ]] || return 1 # bzImage header
}

need dpkg-deb:dpkg zstd:zstd objcopy:binutils flock:util-linux od:coreutils
mkdir -p "$CACHE"
# Serialise concurrent runs (e.g. parallel make targets) on the same cache.
exec 9>"$CACHE/.kernel.lock"
flock 9

if [[ ${MLSCHED_KERNEL_REFRESH:-0} != 1 ]] && valid "$KDIR"; then
	log "cached kernel $(cat "$KDIR/version") is valid"
	echo "$KDIR"
	exit 0
fi

sid_apt_init "$APTDIR"
log "apt-get update (sid, private lists)"
apt-get "${APT[@]}" update >&2

# linux-image-amd64 -> linux-image-<ver>; that package (a small metapackage
# since 7.x) depends on linux-binary-<ver> (vmlinuz) and linux-base-<ver> (config).
image=$(apt-cache "${APT[@]}" depends linux-image-amd64 | sed -n -E 's/^ *Depends: (linux-image-[0-9][^ ]*)$/\1/p' | head -1)
[[ -n $image ]] || die "cannot resolve linux-image-amd64 in sid"
ver=${image#linux-image-}
# Download the image package and its same-version deps except the (large,
# unneeded) modules; then look for the files by path, so a layout change
# (e.g. back to /boot/vmlinuz-<ver> in linux-image-<ver>) still works.
pkgs=("$image" $(apt-cache "${APT[@]}" depends "$image" | sed -n -E 's/^ *Depends: (linux-[^ ]*)$/\1/p' |
	grep -F -- "$ver" | grep -v '^linux-modules-' || true))
log "kernel $ver: downloading ${pkgs[*]}"
rm -rf "$APTDIR/debs" && mkdir -p "$APTDIR/debs"
(cd "$APTDIR/debs" && apt-get "${APT[@]}" download "${pkgs[@]}" >&2)

tmp=$(mktemp -d "$CACHE/kernel.tmp.XXXXXX") && chmod 755 "$tmp"
trap 'rm -rf "$tmp"' EXIT
for deb in "$APTDIR"/debs/*.deb; do dpkg-deb -x "$deb" "$tmp/root"; done
pick() { for f in "$@"; do [[ -s $f ]] && { echo "$f"; return; }; done; die "none of $* in ${pkgs[*]}"; }
cp "$(pick "$tmp/root/usr/lib/modules/$ver/vmlinuz" "$tmp/root/boot/vmlinuz-$ver")" "$tmp/vmlinuz"
cp "$(pick "$tmp/root/usr/lib/modules/$ver/config" "$tmp/root/boot/config-$ver")" "$tmp/config"
grep -qx 'CONFIG_SCHED_CLASS_EXT=y' "$tmp/config" ||
	die "sid kernel $ver does NOT have CONFIG_SCHED_CLASS_EXT=y; pin an older one with MLSCHED_DEBIAN_MIRROR=<snapshot.debian.org URL>"
grep -qx 'CONFIG_DEBUG_INFO_BTF=y' "$tmp/config" || die "kernel $ver has no BTF (CONFIG_DEBUG_INFO_BTF)"

# BTF: the bzImage payload is a zstd frame starting at a `28 b5 2f fd` magic.
# The first match may be a false positive, so try each until one decompresses
# to an ELF with a .BTF section. zstd exits 1 on the trailing bytes after the
# frame (the appended size), so its status is ignored and the output checked.
for off in $(LC_ALL=C grep -obUaP '\x28\xb5\x2f\xfd' "$tmp/vmlinuz" | cut -d: -f1 | head -5); do
	tail -c +$((off + 1)) "$tmp/vmlinuz" | zstd -dcq >"$tmp/vmlinux" 2>/dev/null || true
	objcopy -O binary --only-section=.BTF "$tmp/vmlinux" "$tmp/vmlinux.btf" 2>/dev/null && break
done
rm -f "$tmp/vmlinux" && chmod 644 "$tmp/vmlinux.btf"
echo "$ver" >"$tmp/version"
rm -rf "$tmp/root" "$APTDIR/debs" # keep only the (small) lists
valid "$tmp" || die "could not extract a valid BTF from vmlinuz of $ver (not zstd?)"

rm -rf "$KDIR" && mv "$tmp" "$KDIR" && trap - EXIT
log "cached kernel $ver in $KDIR"
echo "$KDIR"
