#!/usr/bin/env bash
# Host programs `make vmbench` copies into the VM (with their shared libraries), installed (as
# root, with apt-get, from the machine's own release) only if missing. deps.sh has qemu.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need hackbench:rt-tests stress-ng:stress-ng ldd:libc-bin
