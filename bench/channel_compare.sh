#!/usr/bin/env bash
# bench/channel_compare.sh — the agent channel: the virtio console vs the
# COM2 UART, side by side in one run (`forkvm bench channel` once per device,
# same kernel, initramfs, 256 MiB, 1 vCPU).
#
# A benchmark, not a test: it asserts nothing about speed. It needs a
# working /dev/kvm, so on a machine without one run it as
#   scripts/with-kvm --timeout 3000 -- bench/channel_compare.sh
#
# Sizes are chosen so each timed transfer lasts several seconds on its
# device in the emulated KVM host (the UART moves about 2.6 KB/s there):
#   FORKVM_BENCH_VIRTIO_BYTES  bytes per virtio transfer (default 4 MiB)
#   FORKVM_BENCH_UART_BYTES    bytes per UART transfer (default 16 KiB)
#   FORKVM_BENCH_ROUNDS        transfers each way per device (default 5)
#   FORKVM_BENCH_EXECS         exec round trips per device (default 20)
#   FORKVM_BENCH_BUILD         build dir with forkvm (default <repo>/build)
# Prints each device's numbers and the virtio/UART ratios; the JSON of both
# runs is kept in $FORKVM_BENCH_OUT (default a temporary directory).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
build=${FORKVM_BENCH_BUILD:-$here/../build}
out=${FORKVM_BENCH_OUT:-$(mktemp -d /tmp/forkvm-channel-bench.XXXXXX)}
rounds=${FORKVM_BENCH_ROUNDS:-5}
execs=${FORKVM_BENCH_EXECS:-20}
mkdir -p "$out"

run() {  # channel bytes
    echo "== $1: $2 bytes x $rounds rounds each way, $execs execs" >&2
    "$build/forkvm" bench channel --agent-channel "$1" --bytes "$2" --rounds "$rounds" --execs "$execs" --json \
        >"$out/$1.json"
}
run virtio "${FORKVM_BENCH_VIRTIO_BYTES:-4194304}"
run uart "${FORKVM_BENCH_UART_BYTES:-16384}"

python3 - "$out" <<'PY'
import json, sys
out = sys.argv[1]
r = {c: json.load(open(f"{out}/{c}.json")) for c in ("virtio", "uart")}
def row(name, key, unit, better_high):
    v, u = r["virtio"][key], r["uart"][key]
    ratio = v["p50"] / u["p50"] if better_high else u["p50"] / v["p50"]
    print(f"| {name} ({unit}) | {v['p50']:.3f} ({v['min']:.3f}-{v['max']:.3f}) | "
          f"{u['p50']:.3f} ({u['min']:.3f}-{u['max']:.3f}) | {ratio:.0f}x |")
print(f"transfer size: virtio {r['virtio']['bytes']} bytes, uart {r['uart']['bytes']} bytes; "
      f"{r['virtio']['rounds']} rounds each way")
print("| measure | virtio p50 (min-max) | uart p50 (min-max) | virtio advantage |")
print("|---|---|---|---|")
row("upload", "upload_mb_per_s", "MB/s", True)
row("download", "download_mb_per_s", "MB/s", True)
row("exec round trip", "exec_round_trip_ms", "ms", False)
for key, name in (("exits_upload_64k", "64 KiB upload"), ("exits_download_64k", "64 KiB download"),
                  ("exits_exec", "one exec")):
    v, u = r["virtio"][key], r["uart"][key]
    print(f"| device exits, {name} | {v['total']} (io {v['io']}, mmio {v['mmio']}) | "
          f"{u['total']} (io {u['io']}, mmio {u['mmio']}) | {u['total'] / max(v['total'], 1):.0f}x |")
print(f"(JSON in {out})")
PY
