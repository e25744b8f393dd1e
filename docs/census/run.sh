#!/usr/bin/env bash
# Syscall census behind the feature table (docs/FEATURES.md): counts every syscall of a few
# common server workloads with `strace -c -f` and writes one table per workload here.
# Needs root, strace, nginx-light, wrk, stress-ng, go (Debian packages but go).
set -euo pipefail
out=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d)
chmod 755 "$tmp" # nginx workers run as www-data
trap 'rm -rf "$tmp"' EXIT

# nginx serving a 4 KiB file to wrk (2 workers, 64 connections, 5 s).
mkdir -p "$tmp/www" "$tmp/logs"
head -c 4096 /dev/urandom > "$tmp/www/index.html"
cat > "$tmp/nginx.conf" <<CONF
daemon off; worker_processes 2; pid $tmp/nginx.pid; error_log $tmp/logs/error.log;
events { worker_connections 1024; }
http { access_log off; server { listen 127.0.0.1:18080; root $tmp/www; } }
CONF
strace -f -c -o "$out/nginx.txt" nginx -c "$tmp/nginx.conf" -p "$tmp" &
sleep 1
strace -f -c -o "$out/wrk.txt" wrk -t2 -c64 -d5s http://127.0.0.1:18080/index.html
kill -QUIT "$(cat "$tmp/nginx.pid")"; wait || true

# stress-ng message passing and synchronisation stressors, 5 s.
strace -f -c -o "$out/stress-ng.txt" stress-ng --pipe 1 --futex 1 --poll 1 --sock 1 --timeout 5 -q || true

# A Go build from an empty cache: compiler, linker, many short processes.
GOCACHE="$tmp/gocache" strace -f -c -o "$out/go-build.txt" go build -o /dev/null ./features
echo "census written to $out"
