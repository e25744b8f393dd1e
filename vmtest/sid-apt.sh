# Private apt for Debian sid (sourced by fetch-kernel.sh and fetch-peers.sh, after lib.sh).
# The machine's own apt sources and state are never touched: apt runs against a private
# sources list and private lists/cache dirs under $1.
#   sid_apt_init DIR   sets APTDIR=DIR and the apt options array APT, writes DIR/sources.list
# Env: MLSCHED_DEBIAN_MIRROR overrides the mirror (default: the machine's own).
sid_apt_init() {
	APTDIR=$1
	# Use the Debian mirror the machine already uses (it's the one we can reach);
	# snapshot.debian.org URIs are frozen in time, so skip them.
	local mirror=${MLSCHED_DEBIAN_MIRROR:-}
	if [[ -z $mirror ]]; then
		mirror=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null |
			sed -n -E 's/#.*//; s/\[[^]]*\]//; s/^[[:space:]]*(deb[[:space:]]+|URIs:[[:space:]]*)//p' | tr ' \t' '\n\n' |
			grep -E '^https?://[^ ]+/debian/?$' | grep -v snapshot.debian.org | head -1 || true)
		mirror=${mirror:-http://deb.debian.org/debian}
	fi
	local keyring=/usr/share/keyrings/debian-archive-keyring.gpg
	[[ -r $keyring ]] || install debian-archive-keyring
	log "sid mirror: $mirror"

	mkdir -p "$APTDIR"/{lists/partial,cache/archives/partial,sources.list.d,debs}
	echo "deb [signed-by=$keyring] $mirror sid main" >"$APTDIR/sources.list"
	# Every option points apt away from the machine's state; preferences are
	# blanked so local pinning can't change the candidate; DEP-11 (appstream) is
	# skipped since we only need Packages. As root apt drops to _apt for downloads,
	# which can't write into $HOME, so stay root there (avoids a noisy warning).
	APT=(-q
		-o "Dir::Etc::SourceList=$APTDIR/sources.list"
		-o "Dir::Etc::SourceParts=$APTDIR/sources.list.d"
		-o "Dir::State::Lists=$APTDIR/lists"
		-o "Dir::Cache=$APTDIR/cache"
		-o "Dir::Etc::Preferences=/dev/null" -o "Dir::Etc::PreferencesParts=/dev/null"
		-o "APT::Default-Release=" -o "Acquire::Languages=none"
		-o "Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false"
		-o "APT::Sandbox::User=$(id -un)")
}
