#!/usr/bin/env bash
# Reproduces model/default.bin: captures traces of a documented mix of workloads on this
# machine, trains on them and writes the model (docs/TRAINING.md, "The default model").
#   training/default-model.sh             capture every workload, train, write model/default.bin
#   training/default-model.sh capture     capture only (the workloads in $WORKLOADS)
#   training/default-model.sh train       train again on the traces already captured
#   training/default-model.sh lopo        leave-one-program-out table of the captured traces
#                                         ($OUT/lopo.md; LOPO_EPOCHS, default 6, and
#                                         LOPO_PER_TRACE training samples per trace, 150000;
#                                         LOPO_TRAIN_FLAGS more train flags, LOPO_NAME the
#                                         name of the table and directory, default lopo)
#   training/default-model.sh list        the workloads, one a line: name, then what it runs
#   training/default-model.sh prepare NAME DIR
#                                         set up workload NAME in the empty directory DIR
#   training/default-model.sh NAME [DIR]  (internal) run workload NAME's load for DURATION s
# Each workload is captured as `mlsched capture --only-command -- training/default-model.sh NAME
# DIR`: its programs (servers included) run as children of the script, so the trace holds
# exactly that program tree. Its setup (initdb and pgbench -i, unpacking a source tree, a git
# clone, warming the page cache) runs before, outside the capture, in DIR (a fresh directory
# under ${TMPDIR:-/tmp}, removed afterwards, servers stopped). `NAME` without DIR sets up in a
# temporary directory itself, and that setup is then part of whatever captures it.
# The workloads (see `list`): nginx-wrk, pgbench (PostgreSQL), memcached (memcached +
# memcaslap), make-c (make -j of uClibc-ng, from Debian's uclibc-source), zstd-gzip, git,
# stress-ng and go-build. Needs root (capture uses BPF), Go, and the Debian packages that
# `make deps-default-model` (run by `make default-model`) installs; a workload whose program
# is missing fails, naming it. Traces and logs go to $OUT (default .cache/default-model).
# Knobs: DURATION (s of load per workload), HORIZON, EPOCHS, SEED, TRAIN_FLAGS (more `train`
# flags for the model, e.g. "--count-dropout 0.5"; default none, as model/default.bin was
# made), MODEL, MLSCHED, OUT, and WORKLOADS (space-separated names to capture and train on;
# default all of them).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
self=$root/training/default-model.sh
OUT=${OUT:-$root/.cache/default-model}
DURATION=${DURATION:-20}
HORIZON=${HORIZON:-1ms}
EPOCHS=${EPOCHS:-15}
SEED=${SEED:-1}
TRAIN_FLAGS=${TRAIN_FLAGS:-}
MODEL=${MODEL:-$root/model/default.bin}
MLSCHED=${MLSCHED:-$root/mlsched}
ALL_WORKLOADS="nginx-wrk pgbench memcached make-c zstd-gzip git stress-ng go-build"
# Programs never in the default mix, for checking generalisation (eval, eval --online on a
# program the model has not seen): captured only when named in WORKLOADS.
HELDOUT_WORKLOADS="redis lighttpd-ab"
WORKLOADS=${WORKLOADS:-$ALL_WORKLOADS}
# Relative paths are relative to the repository (as they were before any cd below).
abs() { case $1 in /*) echo "$1" ;; *) echo "$root/$1" ;; esac; }
OUT=$(abs "$OUT") MODEL=$(abs "$MODEL") MLSCHED=$(abs "$MLSCHED")
export OUT DURATION HORIZON EPOCHS SEED TRAIN_FLAGS MODEL MLSCHED WORKLOADS

die() {
	echo "default-model: $*" >&2
	exit 1
}

[[ $DURATION =~ ^[1-9][0-9]*$ ]] || die "DURATION=$DURATION: want a whole number of seconds"

# need WORKLOAD PACKAGE PROGRAM...: each PROGRAM is on PATH (or an executable path).
need() {
	local w=$1 pkg=$2 p
	shift 2
	for p; do
		command -v "$p" >/dev/null 2>&1 ||
			die "$w: $p not found (Debian package $pkg; \`make deps-default-model\` installs it)"
	done
}

# for_duration NAME COMMAND...: runs COMMAND (a loop that only ends when cut) for DURATION
# seconds; the cut is success, any other exit (a failed step ended the loop) is NAME's failure.
for_duration() {
	local name=$1 rc=0
	shift
	timeout --kill-after=5 "$DURATION" "$@" || rc=$?
	[ "$rc" = 124 ] && return 0
	echo "default-model: $name: the load loop ended early (exit $rc)" >&2
	[ "$rc" != 0 ] || rc=1
	return "$rc"
}

# Servers a load started: stopped when the load's process exits, however it exits.
servers=()
stop_servers() {
	local s
	for s in "${servers[@]}"; do
		kill "-${s%%:*}" "${s#*:}" 2>/dev/null || continue
		wait "${s#*:}" 2>/dev/null || true
	done
	servers=()
}
trap stop_servers EXIT

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
# wait_port PORT PID: until something listens on 127.0.0.1:PORT (PID must stay alive).
wait_port() {
	local _
	for _ in $(seq 100); do
		port_free "$1" || return 0
		kill -0 "$2" 2>/dev/null || die "the server (pid $2) for port $1 exited"
		sleep 0.1
	done
	die "nothing listens on 127.0.0.1:$1 after 10 s"
}

# --- nginx-wrk: nginx serving a 4 KiB file to wrk: 2 nginx workers, 2 wrk threads, 64
# connections, on 127.0.0.1:18081.
check_nginx_wrk() { need nginx-wrk "nginx-light (or nginx)" nginx && need nginx-wrk wrk wrk; }
prepare_nginx_wrk() {
	local dir=$1
	chmod 755 "$dir"
	mkdir -p "$dir/www" "$dir/logs"
	head -c 4096 /dev/urandom >"$dir/www/index.html"
	cat >"$dir/nginx.conf" <<CONF
daemon off; worker_processes 2; pid $dir/nginx.pid; error_log $dir/logs/error.log;
events { worker_connections 1024; }
http { access_log off; server { listen 127.0.0.1:18081; root $dir/www; } }
CONF
}
load_nginx_wrk() {
	local dir=$1
	port_free 18081 || die "nginx-wrk: 127.0.0.1:18081 is already in use"
	nginx -c "$dir/nginx.conf" -p "$dir" &
	servers+=("QUIT:$!")
	wait_port 18081 "$!"
	wrk -t2 -c64 -d"${DURATION}s" http://127.0.0.1:18081/index.html
	stop_servers
}
cleanup_nginx_wrk() { if [ -s "$1/nginx.pid" ]; then kill -QUIT "$(cat "$1/nginx.pid")" 2>/dev/null || true; fi; }

# --- pgbench: PostgreSQL (run as user postgres) on a private data directory, listening only
# on a private unix socket directory (no TCP), port 15432, shared_buffers=64MB. Setup:
# initdb and `pgbench -i -s 10`, then the server stops. Load: the server starts (so its
# postmaster and backends are in the tree), `pgbench -c 8 -j 2 -T DURATION` (TPC-B-like), the
# server stops.
pg_bin() {
	local d
	d=$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin 2>/dev/null | sort -V | tail -n 1)
	if [ -z "$d" ] || [ ! -x "$d/postgres" ]; then
		die "pgbench: no /usr/lib/postgresql/*/bin/postgres (Debian package postgresql; \`make deps-default-model\` installs it)"
	fi
	echo "$d"
}
# Runs COMMAND as postgres, from / (the tools want a working directory that they can read).
as_postgres() { (cd / && exec setpriv --reuid=postgres --regid=postgres --init-groups --reset-env -- "$@"); }
check_pgbench() {
	local b
	b=$(pg_bin)
	need pgbench postgresql "$b/initdb" "$b/pgbench" "$b/pg_isready" "$b/pg_ctl"
	need pgbench util-linux setpriv
	id postgres >/dev/null 2>&1 || die "pgbench: no user postgres (Debian package postgresql)"
}
pg_start() {
	local dir=$1
	# Fast shutdown on SIGINT. The subshell execs setpriv, which execs postgres: $! is postgres.
	(cd / && exec setpriv --reuid=postgres --regid=postgres --init-groups --reset-env -- \
		"$(pg_bin)/postgres" -D "$dir/data" -k "$dir/sock" -p 15432 \
		-c listen_addresses= -c shared_buffers=64MB) 2>>"$dir/postgres.log" &
	servers+=("INT:$!")
	local _
	for _ in $(seq 300); do
		as_postgres "$(pg_bin)/pg_isready" -q -h "$dir/sock" -p 15432 && return 0
		kill -0 "$!" 2>/dev/null || { tail -n 20 "$dir/postgres.log" >&2; die "pgbench: postgres exited"; }
		sleep 0.1
	done
	die "pgbench: postgres not ready after 30 s ($dir/postgres.log)"
}
prepare_pgbench() {
	local dir=$1 b
	b=$(pg_bin)
	chmod 755 "$dir"
	mkdir -m 700 "$dir/data"
	mkdir -m 755 "$dir/sock"
	chown postgres: "$dir/data" "$dir/sock"
	(as_postgres "$b/initdb" -D "$dir/data" -U postgres -A trust -E UTF8 --locale=C --no-sync) \
		>"$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log" >&2; die "pgbench: initdb failed"; }
	pg_start "$dir"
	as_postgres "$b/pgbench" -h "$dir/sock" -p 15432 -U postgres -i -s 10 -q postgres 2>&1 | tail -n 1 >&2
	stop_servers
}
load_pgbench() {
	local dir=$1
	pg_start "$dir"
	as_postgres "$(pg_bin)/pgbench" -h "$dir/sock" -p 15432 -U postgres -c 8 -j 2 -T "$DURATION" postgres
	stop_servers
}
cleanup_pgbench() {
	local dir=$1
	[ -s "$dir/data/postmaster.pid" ] || return 0
	as_postgres "$(pg_bin)/pg_ctl" -D "$dir/data" -m immediate -s stop 2>/dev/null || true
}

# --- redis (held out): redis-server (no persistence) on 127.0.0.1:16379, loaded by
# redis-benchmark (32 clients, SET/GET/LPUSH/LPOP), cut at DURATION s.
check_redis() { need redis redis-server redis-server && need redis redis-tools redis-benchmark; }
prepare_redis() { :; }
load_redis() {
	port_free 16379 || die "redis: 127.0.0.1:16379 is already in use"
	redis-server --bind 127.0.0.1 --port 16379 --save '' --appendonly no --dir "$1" --daemonize no >"$1/redis.log" &
	servers+=("TERM:$!")
	wait_port 16379 "$!"
	timeout "$DURATION" redis-benchmark -h 127.0.0.1 -p 16379 -c 32 -n 1000000000 -t set,get,lpush,lpop -q >/dev/null || [ $? = 124 ]
	stop_servers
}
cleanup_redis() { :; }

# --- lighttpd-ab (held out): lighttpd serving a 4 KiB file on 127.0.0.1:18082 to ab (32
# keep-alive connections) for DURATION s.
check_lighttpd_ab() { need lighttpd-ab lighttpd lighttpd && need lighttpd-ab apache2-utils ab; }
prepare_lighttpd_ab() {
	local dir=$1
	chmod 755 "$dir"
	mkdir -p "$dir/www"
	head -c 4096 /dev/urandom >"$dir/www/index.html"
	chmod 644 "$dir/www/index.html"
	cat >"$dir/lighttpd.conf" <<CONF
server.document-root = "$dir/www"
server.bind = "127.0.0.1"
server.port = 18082
server.errorlog = "$dir/error.log"
CONF
}
load_lighttpd_ab() {
	local dir=$1
	port_free 18082 || die "lighttpd-ab: 127.0.0.1:18082 is already in use"
	lighttpd -D -f "$dir/lighttpd.conf" &
	servers+=("TERM:$!")
	wait_port 18082 "$!"
	ab -q -k -c 32 -t "$DURATION" -n 100000000 http://127.0.0.1:18082/index.html >"$dir/ab.log" || true
	stop_servers
}
cleanup_lighttpd_ab() { :; }

# --- memcached: memcached (2 threads, 256 MiB, as nobody) on 127.0.0.1:11311, loaded by
# memcaslap (libmemcached's memaslap: 2 threads, 32 connections, 90% get / 10% set).
memcaslap_bin() { command -v memcaslap || command -v memaslap || echo memcaslap; }
check_memcached() { need memcached memcached memcached && need memcached libmemcached-tools "$(memcaslap_bin)"; }
prepare_memcached() { :; }
load_memcached() {
	port_free 11311 || die "memcached: 127.0.0.1:11311 is already in use"
	memcached -l 127.0.0.1 -p 11311 -t 2 -m 256 -u nobody &
	servers+=("TERM:$!")
	echo "$!" >"$1/memcached.pid"
	wait_port 11311 "$!"
	"$(memcaslap_bin)" -s 127.0.0.1:11311 -T 2 -c 32 -t "${DURATION}s"
	stop_servers
}
cleanup_memcached() { if [ -s "$1/memcached.pid" ]; then kill "$(cat "$1/memcached.pid")" 2>/dev/null || true; fi; }

# --- make-c: `make -j$(nproc)` of uClibc-ng (a C library: ~1,600 small C files through
# Kbuild-style makefiles), from the tarball in Debian's uclibc-source, then `make clean`, again
# and again for DURATION s. Setup: unpack, `make defconfig`, point it at linux-libc-dev's
# headers.
check_make_c() {
	need make-c make make && need make-c gcc gcc && need make-c xz-utils xz
	uclibc_tarball >/dev/null
	[ -e /usr/include/linux/version.h ] || die "make-c: no /usr/include/linux (Debian package linux-libc-dev)"
}
uclibc_tarball() {
	local t
	t=$(find /usr/src -maxdepth 1 -name 'uClibc-ng-*.tar.xz' 2>/dev/null | sort -V | tail -n 1)
	[ -n "$t" ] || die "make-c: no /usr/src/uClibc-ng-*.tar.xz (Debian package uclibc-source; \`make deps-default-model\` installs it)"
	echo "$t"
}
prepare_make_c() {
	local dir=$1 e asm
	tar -C "$dir" -xJf "$(uclibc_tarball)"
	# uClibc wants one kernel-headers directory; Debian splits asm/ into the multiarch directory.
	mkdir "$dir/kernel-headers"
	for e in /usr/include/{linux,asm-generic,mtd,rdma,scsi,sound,video,xen,misc,drm}; do
		[ -e "$e" ] && ln -s "$e" "$dir/kernel-headers/"
	done
	asm=/usr/include/$(gcc -print-multiarch)/asm
	[ -d "$asm" ] || asm=/usr/include/asm
	ln -s "$asm" "$dir/kernel-headers/asm"
	mv "$dir"/uClibc-ng-* "$dir/src"
	(cd "$dir/src" && make -s defconfig &&
		sed -i "s|^KERNEL_HEADERS=.*|KERNEL_HEADERS=\"$dir/kernel-headers\"|" .config &&
		{ yes '' || true; } | make -s oldconfig) >"$dir/config.log" 2>&1 ||
		{ tail -n 20 "$dir/config.log" >&2; die "make-c: uClibc configuration failed"; }
}
load_make_c() {
	local dir=$1
	# shellcheck disable=SC2016 # expanded by the inner shell
	for_duration make-c bash -c 'cd "$1/src" || exit 1
		while :; do
			make -j"$(nproc)" >>"$1/make.log" 2>&1 || { tail -n 20 "$1/make.log" >&2; exit 1; }
			make clean >>"$1/make.log" 2>&1 || exit 1
		done' make-c "$dir"
}

# --- zstd-gzip: tar of /usr/lib/<multiarch> and /usr/share/doc piped through zstd -3 -T2,
# zstd -d, gzip -1, gzip -d, again and again for DURATION s. Setup: read the files once, so
# the load is the same whether the page cache was warm or not.
multiarch_lib() {
	local d
	d=usr/lib/$(uname -m)-linux-gnu
	[ -d "/$d" ] || die "zstd-gzip: no /$d"
	echo "$d"
}
check_zstd_gzip() { need zstd-gzip tar tar && need zstd-gzip zstd zstd && need zstd-gzip gzip gzip; }
prepare_zstd_gzip() { tar -C / -cf - "$(multiarch_lib)" usr/share/doc 2>/dev/null | cat >/dev/null; }
load_zstd_gzip() {
	# shellcheck disable=SC2016 # expanded by the inner shell
	for_duration zstd-gzip bash -c 'while :; do
			tar -C / -cf - "$1" usr/share/doc 2>/dev/null | zstd -3 -T2 -q -c | zstd -d -q -c |
				gzip -1 -c | gzip -d -c | cat >/dev/null
			s=("${PIPESTATUS[@]}")
			# tar: 1 = a file changed while read, fine; anything else, or a failed filter, is not.
			[ "${s[0]}" -le 1 ] && [ "${s[*]:1}" = "0 0 0 0 0" ] || { echo "zstd-gzip: pipeline exit ${s[*]}" >&2; exit 1; }
		done' zstd-gzip "$(multiarch_lib)"
}

# --- git: in a clone of this repository (`git clone --no-local`, the setup), again and again
# for DURATION s: git log -p -n 1000, git grep -n -e func HEAD~20, git repack -adf -q,
# git fsck (git 2.39 has no -q: --no-progress, stdout discarded), git status.
check_git() { need git git git; }
prepare_git() {
	local dir=$1
	git -C "$root" rev-parse --git-dir >/dev/null 2>&1 || die "git: $root is not a git repository"
	git -c safe.directory="$root" clone -q --no-local "$root" "$dir/repo"
	git -C "$dir/repo" rev-parse -q --verify 'HEAD~20^{commit}' >/dev/null ||
		die "git: the clone of $root has fewer than 21 commits on HEAD"
}
load_git() {
	local dir=$1
	# shellcheck disable=SC2016 # expanded by the inner shell
	for_duration git bash -c 'set -e; cd "$1/repo"
		while :; do
			git log -p -n 1000 >/dev/null
			git grep -n -e func HEAD~20 >/dev/null
			git repack -adf -q
			git fsck --no-progress >/dev/null
			git status >/dev/null
		done' git "$dir"
}

# --- stress-ng: message passing and synchronisation (blocking often) next to a CPU hog
# (never blocking).
check_stress_ng() { need stress-ng stress-ng stress-ng; }
prepare_stress_ng() { :; }
load_stress_ng() { stress-ng --pipe 1 --futex 1 --poll 1 --sock 1 --cpu 1 --timeout "${DURATION}s"; }

# --- go-build: a Go build of this repository from an empty cache (the compiler, the linker
# and many short processes), cut at 3 x DURATION.
check_go_build() { command -v go >/dev/null || die "go-build: go not found (the Go toolchain, on PATH)"; }
prepare_go_build() { mkdir "$1/gocache"; }
load_go_build() {
	local rc=0
	cd "$root"
	timeout --kill-after=5 "$((DURATION * 3))" env GOCACHE="$1/gocache" GOFLAGS=-buildvcs=false \
		go build -o /dev/null ./features ./model ./bpf ./cmd/mlsched || rc=$?
	[ "$rc" = 124 ] && { echo "go-build: cut at $((DURATION * 3)) s" >&2; rc=0; }
	return "$rc"
}

describe() {
	case $1 in
	nginx-wrk) echo "nginx (2 workers, 4 KiB file) on 127.0.0.1:18081, wrk -t2 -c64 -d\${DURATION}s" ;;
	pgbench) echo "PostgreSQL (unix socket, port 15432, shared_buffers=64MB; pgbench -i -s 10 beforehand), pgbench -c 8 -j 2 -T \$DURATION" ;;
	memcached) echo "memcached -t 2 -m 256 on 127.0.0.1:11311, memcaslap -T 2 -c 32 -t \${DURATION}s" ;;
	make-c) echo "make -j\$(nproc) then make clean of uClibc-ng (uclibc-source), looped for \$DURATION s" ;;
	zstd-gzip) echo "tar /usr/lib/<multiarch> /usr/share/doc | zstd -3 -T2 | zstd -d | gzip -1 | gzip -d, looped for \$DURATION s" ;;
	git) echo "in a clone of this repository: git log -p, grep, repack -adf, fsck, status, looped for \$DURATION s" ;;
	stress-ng) echo "stress-ng --pipe 1 --futex 1 --poll 1 --sock 1 --cpu 1 --timeout \${DURATION}s" ;;
	redis) echo "(held out) redis-server on 127.0.0.1:16379, redis-benchmark -c 32 -t set,get,lpush,lpop for \$DURATION s" ;;
	lighttpd-ab) echo "(held out) lighttpd (4 KiB file) on 127.0.0.1:18082, ab -k -c 32 -t \$DURATION" ;;
	go-build) echo "go build of ./features ./model ./bpf ./cmd/mlsched from an empty GOCACHE, cut at 3 x \$DURATION s" ;;
	esac
}

known() { [[ " $ALL_WORKLOADS $HELDOUT_WORKLOADS " == *" $1 "* ]]; }
fn() { echo "${1//-/_}"; }

selected() {
	local w
	for w in $WORKLOADS; do
		known "$w" || die "WORKLOADS: unknown workload $w (known: $ALL_WORKLOADS $HELDOUT_WORKLOADS)"
	done
	echo "$WORKLOADS"
}

# The load of workload NAME in DIR (set up by prepare); without DIR, sets up a temporary one.
run_workload() {
	local name=$1 f
	f=$(fn "$name")
	"check_$f"
	if [ $# -ge 2 ]; then
		cd "$2"
		"load_$f" "$2"
		return
	fi
	local dir
	dir=$(mktemp -d "${TMPDIR:-/tmp}/default-model-$name.XXXXXX")
	# shellcheck disable=SC2064 # the values now
	trap "stop_servers; cleanup_dir $name $dir" EXIT
	"prepare_$f" "$dir"
	cd "$dir"
	"load_$f" "$dir"
}

cleanup_dir() {
	local f
	f=$(fn "$1")
	if declare -F "cleanup_$f" >/dev/null; then "cleanup_$f" "$2"; fi
	rm -rf "$2"
}

capture() {
	local name=$1
	shift
	echo "== capture $name" >&2
	"$MLSCHED" capture -o "$OUT/$name.trace" --horizon "$HORIZON" --max-rate 0 --progress never --only-command "$@" \
		2>&1 | tee "$OUT/$name.capture.log" | grep -v '^stress-ng: info' >&2
	# capture itself succeeds when its command fails: the workload's failure is in the log.
	if grep -q '^mlsched capture: command:' "$OUT/$name.capture.log"; then
		die "$name: the workload failed (its trace is incomplete; log: $OUT/$name.capture.log)"
	fi
}

capture_all() {
	[ "$(id -u)" = 0 ] || die "capture needs root"
	mkdir -p "$OUT"
	[ -x "$MLSCHED" ] || die "$MLSCHED not built (make build)"
	local ws w f dir
	ws=$(selected)
	for w in $ws; do "check_$(fn "$w")"; done
	for w in $ws; do
		f=$(fn "$w")
		dir=$(mktemp -d "${TMPDIR:-/tmp}/default-model-$w.XXXXXX")
		# shellcheck disable=SC2064 # the values now
		trap "stop_servers; cleanup_dir $w $dir" EXIT
		echo "== prepare $w in $dir" >&2
		"prepare_$f" "$dir"
		capture "$w" -- "$self" "$w" "$dir"
		cleanup_dir "$w" "$dir"
		trap stop_servers EXIT
	done
}

train() {
	local ws w traces=() missing=() flags=()
	ws=$(selected)
	read -r -a flags <<<"$TRAIN_FLAGS"
	# Relative names: the model records them, and they should not depend on where this ran.
	cd "$OUT"
	for w in $ws; do
		if [ -f "$w.trace" ]; then traces+=("$w.trace"); else missing+=("$w"); fi
	done
	[ ${#missing[@]} = 0 ] || die "no trace in $OUT for ${missing[*]} (capture it: WORKLOADS=\"${missing[*]}\" $0 capture)"
	echo "== train on ${traces[*]} in $OUT" >&2
	"$MLSCHED" train -o "$MODEL" --epochs "$EPOCHS" --seed "$SEED" "${flags[@]}" --plot "$OUT/curves.svg" "${traces[@]}" |
		tee "$OUT/train.log"
	for t in "${traces[@]}"; do
		"$MLSCHED" eval --model "$MODEL" --json "$t" >"$(basename "$t" .trace).eval.json"
	done
	echo "model: $MODEL; log, curves and per-workload evals: $OUT" >&2
}

# Leave-one-program-out: for each captured workload, a model trained (LOPO_EPOCHS epochs) on
# the others and evaluated on every sample of it; the table (Markdown) goes to $OUT/lopo.md and
# stdout, the models and evals to $OUT/lopo/. Goals (issue 13): coverage >= 0.5, confident
# accuracy >= the majority class over the same samples, balanced accuracy >= 0.70.
lopo() {
	local ws w o traces=() d=${LOPO_NAME:-lopo} flags=()
	ws=$(selected)
	need lopo python3 python3
	read -r -a flags <<<"${LOPO_TRAIN_FLAGS:-}"
	cd "$OUT"
	mkdir -p "$d"
	for w in $ws; do
		[ -f "$w.trace" ] || die "no trace in $OUT for $w (capture it: WORKLOADS=\"$w\" $0 capture)"
	done
	for w in $ws; do
		traces=()
		for o in $ws; do [ "$o" = "$w" ] || traces+=("$o.trace"); done
		echo "== lopo: $w held out, train on ${traces[*]}" >&2
		"$MLSCHED" train -o "$d/without-$w.bin" --epochs "${LOPO_EPOCHS:-6}" --per-trace "${LOPO_PER_TRACE:-150000}" \
			--seed "$SEED" "${flags[@]}" "${traces[@]}" >"$d/without-$w.train.log"
		"$MLSCHED" eval --model "$d/without-$w.bin" --json "$w.trace" >"$d/$w.eval.json"
	done
	{
		echo "| held out | samples | majority | accuracy | balanced | AUC | coverage | confident acc. | its majority | goals |"
		echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"
		for w in $ws; do
			python3 - "$w" "$d/$w.eval.json" <<'PY'
import json, sys
w, e = sys.argv[1], json.load(open(sys.argv[2]))
ok = e["coverage"] >= 0.5 and e["confident_accuracy"] >= e["confident_baseline_accuracy"] and e["balanced_accuracy"] >= 0.70
print(f"| {w} | {e['n']} | {e['baseline_accuracy']:.3f} | {e['accuracy']:.3f} | {e['balanced_accuracy']:.3f} | {e['auc']:.3f} | "
      f"{e['coverage']:.3f} | {e['confident_accuracy']:.3f} | {e['confident_baseline_accuracy']:.3f} | {'met' if ok else 'not met'} |")
PY
		done
	} | tee "$d.md"
}

usage() {
	echo "usage: $0 [all|capture|train|lopo|list|prepare NAME DIR|NAME [DIR]]  (NAME: ${ALL_WORKLOADS// /|})" >&2
	exit 2
}

case ${1:-all} in
all)
	capture_all
	train
	;;
capture) capture_all ;;
train) train ;;
lopo) lopo ;;
list)
	for w in $ALL_WORKLOADS; do printf '%s\t%s\n' "$w" "$(describe "$w")"; done
	;;
prepare)
	if [ $# != 3 ] || ! known "$2" || [ ! -d "$3" ]; then usage; fi
	"check_$(fn "$2")"
	"prepare_$(fn "$2")" "$(cd "$3" && pwd)"
	;;
*)
	if ! known "$1" || [ $# -gt 2 ]; then usage; fi
	run_workload "$@"
	;;
esac
