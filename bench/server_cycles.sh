#!/usr/bin/env bash
# bench/server_cycles.sh [CYCLES] [CONCURRENCY] — sandbox cycles over HTTP.
#
# Starts `forkvm serve` (golden snapshot in a temporary data folder, pool
# min_warm 4 / max_warm 8), waits for /readyz, runs bench/server_cycles.py
# (create -> exec echo -> delete per cycle, CONCURRENCY workers), then stops
# the server with SIGTERM and counts the VM processes left (must be 0).
# Run it where /dev/kvm works, or through scripts/with-kvm:
#   scripts/with-kvm --memory 8192 --timeout 3000 -- bench/server_cycles.sh 500 8
# Results: docs/benchmarks.md ("Sandbox cycles over the REST API").
set -euo pipefail
cycles=${1:-500}
concurrency=${2:-8}
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
forkvm=${FORKVM_BENCH_BUILD:-$repo/build}/forkvm
[[ -x $forkvm ]] || { echo "server_cycles: $forkvm is missing: build first" >&2; exit 2; }

work=$(mktemp -d /tmp/forkvm-bench-cycles.XXXXXX)
port=18097
key=bench-key-0123456789abcdef
server=
cleanup() {
    [[ -z $server ]] || kill -KILL "$server" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

FORKVM_API_KEYS=$key FORKVM_DATA_DIR=$work/data "$forkvm" serve --listen "127.0.0.1:$port" \
    --min-warm 4 --max-warm 8 --max-sandboxes 64 --max-per-key 64 >"$work/server.log" 2>&1 &
server=$!
for _ in $(seq 600); do
    python3 -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:$port/readyz', timeout=2).status == 200 else 1)" \
        2>/dev/null && break
    kill -0 "$server" 2>/dev/null || { cat "$work/server.log" >&2; exit 1; }
    sleep 1
done
echo "server ready: $(grep -c 'pool warming' "$work/server.log") warming steps; $(grep -o 'golden VM ready after [0-9.]* s' "$work/server.log")" >&2

rc=0
python3 "$repo/bench/server_cycles.py" --url "http://127.0.0.1:$port" --key "$key" \
    --cycles "$cycles" --concurrency "$concurrency" || rc=$?

vms_before=$(pgrep -c -P "$server" || true)
kill -TERM "$server"
wait "$server" || true
server=
sleep 1
left=$(pgrep -c -f "forkvm vmm" || true)
echo "VM processes of the server before stopping it: $vms_before (the warm pool + zygote); left after SIGTERM: $left"
exit "$rc"
