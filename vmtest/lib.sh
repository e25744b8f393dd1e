# Shared helpers for vmtest/*.sh (sourced, not executed).

log() { printf '[%s] %s\n' "${0##*/}" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# install PKG... with apt-get. A fresh machine may have stale or no package
# lists, so on failure we `apt-get update` once and retry rather than always
# paying for an update.
install() {
	[[ $(id -u) == 0 ]] || die "missing packages $* (need root to apt-get install)"
	log "installing $*"
	export DEBIAN_FRONTEND=noninteractive
	apt-get install -y -q --no-install-recommends "$@" >&2 ||
		{ apt-get update -q >&2 && apt-get install -y -q --no-install-recommends "$@" >&2; } ||
		die "apt-get install $* failed"
}

# need CMD:PKG... installs the packages whose commands are missing.
need() {
	local pkgs=() pair
	for pair in "$@"; do
		command -v "${pair%%:*}" >/dev/null 2>&1 || pkgs+=("${pair#*:}")
	done
	((${#pkgs[@]} == 0)) || install "${pkgs[@]}"
}
