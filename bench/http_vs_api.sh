#!/usr/bin/env bash
# bench/http_vs_api.sh [SECONDS] [CONCURRENCY] — the sandbox cycle
# (create -> exec echo -> delete) through the REST API and through the same
# service in-process, back to back in one run, so the server's own overhead
# (HTTP, JSON, auth, the worker pool) shows.
#
#   1. `forkvm serve` (fresh data folder: the golden VM boots once; pool
#      min_warm 4 / max_warm 8, refill_concurrency 2) until /readyz, then
#      `forkvm bench http` against it for SECONDS with CONCURRENCY workers;
#      SIGTERM; the VM processes left are counted (must be 0).
#   2. `forkvm bench api` with the same settings and data folder (the golden
#      snapshot is reused), same SECONDS and CONCURRENCY.
# Run it where /dev/kvm works, or through scripts/with-kvm:
#   scripts/with-kvm --memory 8192 --timeout 3000 -- bench/http_vs_api.sh 60 4
# Output: both reports (JSON) and a Markdown table. Results: docs/benchmarks.md.
set -euo pipefail
seconds=${1:-60}
concurrency=${2:-4}
[[ $seconds =~ ^[0-9]+$ && $concurrency =~ ^[0-9]+$ ]] || { echo "usage: $0 [SECONDS] [CONCURRENCY]" >&2; exit 2; }
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
forkvm=${FORKVM_BENCH_BUILD:-$repo/build}/forkvm
[[ -x $forkvm ]] || { echo "http_vs_api: $forkvm is missing: build first" >&2; exit 2; }

work=$(mktemp -d /tmp/forkvm-bench-http.XXXXXX)
port=18098
key=bench-key-0123456789abcdef
server=
cleanup() {
    [[ -z $server ]] || kill -KILL "$server" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
settings=(--min-warm 4 --max-warm 8 --refill-concurrency 2 --max-sandboxes 64 --max-per-key 64 --rate-limit 0
    --log-level warn)
export FORKVM_API_KEYS=$key FORKVM_DATA_DIR=$work/data

"$forkvm" serve --listen "127.0.0.1:$port" "${settings[@]}" >"$work/server.log" 2>&1 &
server=$!
for _ in $(seq 1200); do
    curl -sf "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 &&
        [[ $(curl -s -H "Authorization: Bearer $key" "http://127.0.0.1:$port/v1/pools" | grep -o '"warm":[0-9]*' | head -1) == '"warm":4' ]] && break
    kill -0 "$server" 2>/dev/null || { cat "$work/server.log" >&2; exit 1; }
    sleep 1
done
echo "http_vs_api: server ready and warm; bench http for ${seconds}s x $concurrency" >&2
http_rc=0
"$forkvm" bench http --url "http://127.0.0.1:$port" --api-key "$key" --concurrency "$concurrency" \
    --duration "$seconds" --json >"$work/http.json" || http_rc=$?
kill -TERM "$server"
wait "$server" || true
server=
sleep 1
left=$(pgrep -c -f "forkvm vmm" || true)
echo "http_vs_api: VM processes left after the server's SIGTERM: $left" >&2

echo "http_vs_api: bench api for ${seconds}s x $concurrency" >&2
api_rc=0
"$forkvm" bench api --concurrency "$concurrency" --duration "$seconds" --json -- "${settings[@]}" \
    >"$work/api.json" 2>"$work/api.log" || api_rc=$?

cat "$work/http.json" "$work/api.json"
python3 - "$work/http.json" "$work/api.json" <<'PY'
import json, sys
http, api = (json.load(open(p)) for p in sys.argv[1:3])
print()
print("| step (ms) | HTTP p50 | API p50 | HTTP p90 | API p90 | HTTP p99 | API p99 | p50 ratio HTTP/API |")
print("|---|---:|---:|---:|---:|---:|---:|---:|")
for step in ("create_ms", "exec_ms", "delete_ms", "cycle_ms"):
    h, a = http[step], api[step]
    if not h or not a:
        print(f"| {step[:-3]} | - | - | - | - | - | - | - |")
        continue
    print(f"| {step[:-3]} | {h['p50']:.1f} | {a['p50']:.1f} | {h['p90']:.1f} | {a['p90']:.1f} | "
          f"{h['p99']:.1f} | {a['p99']:.1f} | {h['p50'] / a['p50']:.2f} |")
print(f"| cycles/s | {http['cycles_per_second']:.2f} | {api['cycles_per_second']:.2f} | | | | | |")
print(f"| cycles ok / errors | {http['cycles_ok']} / {sum(http['errors'].values())} | "
      f"{api['cycles_ok']} / {sum(api['errors'].values())} | | | | | |")
PY
echo "http_vs_api: exit codes http=$http_rc api=$api_rc; VM processes left after serve: $left" >&2
[[ $http_rc == 0 && $api_rc == 0 && $left == 0 ]]
