#!/usr/bin/env bash
# Host packages the VM tests need, installed (as root, with apt-get) only if missing:
# qemu for the VM; fetch-kernel.sh installs its own (dpkg-deb, zstd, binutils).
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need qemu-system-x86_64:qemu-system-x86 cpio:cpio gzip:gzip
# -cpu max / TCG needs the BIOS images; a half-installed qemu lacks them.
[[ -e /usr/share/seabios/bios-256k.bin || -e /usr/share/qemu/bios-256k.bin ]] || install seabios
