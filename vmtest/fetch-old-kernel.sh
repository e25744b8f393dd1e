#!/usr/bin/env bash
# Fetches the machine's own Debian release kernel (bookworm: 6.1, no sched_ext, with BTF) to
# show that `mlsched capture` works on kernels older than the host's. Caches vmlinuz, config
# and version in ${MLSCHED_CACHE:-$HOME/.cache/mlsched}/kernel-old/ and prints that path last.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
source "$here/lib.sh"

cache=${MLSCHED_CACHE:-$HOME/.cache/mlsched}/kernel-old
if [[ -s $cache/vmlinuz && -s $cache/version ]] && grep -q '^CONFIG_DEBUG_INFO_BTF=y' "$cache/config" 2>/dev/null; then
	echo "$cache"
	exit 0
fi
need apt-get dpkg-deb
pkg=$(apt-cache depends linux-image-amd64 2>/dev/null | sed -n 's/^ *Depends: \(linux-image-[0-9].*-amd64\)$/\1/p' | head -1)
if [[ -z $pkg ]]; then
	apt-get update -qq >&2
	pkg=$(apt-cache depends linux-image-amd64 | sed -n 's/^ *Depends: \(linux-image-[0-9].*-amd64\)$/\1/p' | head -1)
fi
[[ -n $pkg ]] || die "cannot resolve the release kernel from linux-image-amd64"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
log "downloading $pkg"
(cd "$tmp" && apt-get download -q "$pkg" >&2)
dpkg-deb -x "$tmp"/*.deb "$tmp/x"
vmlinuz=$(ls "$tmp"/x/boot/vmlinuz-* | head -1)
config=$(ls "$tmp"/x/boot/config-* | head -1)
grep -q '^CONFIG_DEBUG_INFO_BTF=y' "$config" || die "$pkg has no BTF"
mkdir -p "$cache.tmp"
cp "$vmlinuz" "$cache.tmp/vmlinuz"
cp "$config" "$cache.tmp/config"
basename "$vmlinuz" | sed 's/^vmlinuz-//' > "$cache.tmp/version"
rm -rf "$cache" && mv "$cache.tmp" "$cache"
echo "$cache"
