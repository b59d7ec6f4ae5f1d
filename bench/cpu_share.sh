#!/usr/bin/env bash
# bench/cpu_share.sh [ROUNDS] — does a sandbox spinning its vCPU starve a
# neighbour? Per configuration, `forkvm serve` runs with one per-VM CPU
# setting (jail.cpu_quota_percent: 0 = equal cgroup weights only, then a
# hard quota), and through the REST API:
#   1. sandbox B runs a fixed CPU-bound shell loop ROUNDS times alone
#      (baseline: the time of each exec call as the client sees it);
#   2. sandbox A starts `while :; do :; done` (exec in the background);
#   3. B runs the same loop ROUNDS times again, next to the spinner.
# Reported per configuration: B's median and p90 alone and next to A, and
# the slowdown (median next to A / median alone). Each VM process sits in a
# cgroup of its own (vmm/cgroup.hpp), so under contention B keeps its
# share; with a quota, no VM gets more than it even on an idle host.
# Run it where /dev/kvm works, or through scripts/with-kvm:
#   scripts/with-kvm --memory 8192 --timeout 3000 -- bench/cpu_share.sh 15
# Results: docs/benchmarks.md ("CPU share between sandboxes").
set -euo pipefail
rounds=${1:-15}
[[ $rounds =~ ^[0-9]+$ && $rounds -ge 3 ]] || { echo "usage: $0 [ROUNDS >= 3]" >&2; exit 2; }
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
forkvm=${FORKVM_BENCH_BUILD:-$repo/build}/forkvm
[[ -x $forkvm ]] || { echo "cpu_share: $forkvm is missing: build first" >&2; exit 2; }

work=$(mktemp -d /tmp/forkvm-bench-cpu.XXXXXX)
port=18099
key=bench-key-0123456789abcdef
url=http://127.0.0.1:$port
server=
spinner=
cleanup() {
    [[ -z $spinner ]] || kill "$spinner" 2>/dev/null || true
    [[ -z $server ]] || kill -KILL "$server" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
export FORKVM_API_KEYS=$key FORKVM_DATA_DIR=$work/data

api() { curl -sf -H "Authorization: Bearer $key" -H 'Content-Type: application/json' "$@"; }
# The CPU-bound probe: a fixed amount of shell arithmetic in the guest.
probe='{"shell":"i=0; while [ $i -lt 5000 ]; do i=$((i+1)); done; echo $i","timeout_ms":600000}'

# Prints one exec's wall time in ms (as the client sees it).
time_probe() {
    local id=$1 out
    out=$(api -o /dev/null -w '%{time_total}' -X POST "$url/v1/sandboxes/$id/exec" -d "$probe")
    python3 -c "print(round(float('$out') * 1000, 1))"
}

run_config() {
    local quota=$1 label=$2
    "$forkvm" serve --listen "127.0.0.1:$port" --min-warm 2 --max-warm 2 --rate-limit 0 --log-level warn \
        --vm-cpu-quota "$quota" >"$work/server-$quota.log" 2>&1 &
    server=$!
    for _ in $(seq 1200); do
        curl -sf "$url/readyz" >/dev/null 2>&1 && break
        kill -0 "$server" 2>/dev/null || { cat "$work/server-$quota.log" >&2; exit 1; }
        sleep 1
    done
    local a b
    a=$(api -X POST "$url/v1/sandboxes" -d '{}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
    b=$(api -X POST "$url/v1/sandboxes" -d '{}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
    time_probe "$b" >/dev/null  # warm the guest's page cache for the loop
    : >"$work/alone-$quota"
    for _ in $(seq "$rounds"); do time_probe "$b" >>"$work/alone-$quota"; done
    api -X POST "$url/v1/sandboxes/$a/exec" \
        -d '{"shell":"while :; do :; done","timeout_ms":600000}' >/dev/null 2>&1 &
    spinner=$!
    sleep 5  # let the spinner's exec reach the guest
    kill -0 "$spinner" 2>/dev/null || { echo "cpu_share: the spinner's exec ended at once" >&2; exit 1; }
    : >"$work/contended-$quota"
    for _ in $(seq "$rounds"); do time_probe "$b" >>"$work/contended-$quota"; done
    kill "$spinner" 2>/dev/null || true
    wait "$spinner" 2>/dev/null || true
    spinner=
    kill -TERM "$server"
    wait "$server" || true
    server=
    echo "$label" >"$work/label-$quota"
    echo "cpu_share: $label done" >&2
}

run_config 0 "equal weights, no quota"
run_config 50 "quota 50% of a CPU per VM"

python3 - "$work" <<'PY'
import statistics, sys, pathlib
work = pathlib.Path(sys.argv[1])
def load(name):
    return [float(x) for x in (work / name).read_text().split()]
def p90(v):
    v = sorted(v)
    return v[min(len(v) - 1, round(0.9 * (len(v) - 1)))]
print("| configuration | B alone p50 (ms) | B alone p90 | B next to a spinner p50 | p90 | slowdown (p50 ratio) |")
print("|---|---:|---:|---:|---:|---:|")
for quota in ("0", "50"):
    alone, busy = load(f"alone-{quota}"), load(f"contended-{quota}")
    label = (work / f"label-{quota}").read_text().strip()
    print(f"| {label} | {statistics.median(alone):.0f} | {p90(alone):.0f} | "
          f"{statistics.median(busy):.0f} | {p90(busy):.0f} | {statistics.median(busy) / statistics.median(alone):.2f} |")
PY
