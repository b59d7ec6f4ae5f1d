#!/usr/bin/env bash
# bench/boot_compare.sh [N] — boot-to-agent-ready, forkvm vs QEMU microvm.
#
# A benchmark, not a test: it asserts nothing about speed. It needs a working
# /dev/kvm, so on a machine without one run it as
#   scripts/with-kvm --memory 8192 --timeout 3000 -- bench/boot_compare.sh [N]
#
# Both VMMs boot the same kernel and initramfs (build/guest/rootfs.cpio.gz)
# with the same kernel command line (vmm/vm_config.cpp kDefaultKernelArgs),
# 256 MiB and 1 vCPU, to the same point: the guest agent (PID 1) has written
# its complete Ready frame ("FKVM" header + payload) on COM2.
#   forkvm  `forkvm run --profile -- true`; "ready" is the moment its
#           "profile: total to agent ready" line arrives on our end of its
#           stderr (printed right after the Ready frame was decoded).
#   qemu    `qemu-system-x86_64 -M microvm -accel kvm`, COM1 = console (to a
#           file), COM2 = a second isa-serial (microvm has only one built in)
#           writing into a FIFO that this script reads; "ready" is the moment
#           the last byte of the Ready frame has been read. QEMU is then killed.
# Both clocks start right before the fork of the VMM process, so both numbers
# include exec, dynamic loading, VMM set-up, firmware (QEMU: qboot) and the
# kernel's boot. Runs alternate (forkvm first in odd rounds, QEMU first in even
# ones) after one untimed warm-up run of each (page cache, 9p).
#
# Environment:
#   FORKVM_BENCH_BUILD   build dir with forkvm and guest/rootfs.cpio.gz
#                        (default: <repo>/build); only read, never rebuilt
#   FORKVM_KERNEL        guest kernel (default: Debian's linux-image-amd64
#                        kernel, found as CMake finds it)
#   FORKVM_BENCH_QEMU_ACCEL  "kvm" (default) or "tcg" (to try the QEMU side
#                        on a machine without /dev/kvm; forkvm runs are then
#                        skipped)
#
# Output (stdout): one line per run, then a Markdown summary table in ms.
set -euo pipefail
export LC_ALL=C

die() {
    echo "boot_compare: $*" >&2
    exit 2
}

runs=${1:-5}
if ! [[ $runs =~ ^[0-9]+$ ]] || ((runs < 1 || runs > 1000)); then die "N must be an integer in 1..1000, got '$runs'"; fi

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${FORKVM_BENCH_BUILD:-$repo/build}
accel=${FORKVM_BENCH_QEMU_ACCEL:-kvm}
[[ $accel == kvm || $accel == tcg ]] || die "FORKVM_BENCH_QEMU_ACCEL must be kvm or tcg"

kernel=${FORKVM_KERNEL:-}
if [[ -z $kernel ]]; then
    release=$(dpkg-query -W -f='${Depends}' linux-image-amd64 2>/dev/null | grep -o 'linux-image-[^ ,]*' | head -n1 || true)
    kernel=/boot/vmlinuz-${release#linux-image-}
fi
[[ -r $kernel ]] || die "no readable kernel at '$kernel' (set FORKVM_KERNEL)"
[[ -r $build/guest/rootfs.cpio.gz ]] || die "no $build/guest/rootfs.cpio.gz: build the project first"
[[ $accel == tcg || -x $build/forkvm ]] || die "no $build/forkvm: build the project first"
command -v qemu-system-x86_64 >/dev/null || die "qemu-system-x86_64 is not installed (Debian: qemu-system-x86)"

# The command line forkvm gives the kernel, taken from its source so that the
# two can never drift apart (the literal is split over several lines).
cmdline=$(sed -n '/kDefaultKernelArgs =/,/;/p' "$repo/vmm/vm_config.cpp" | grep -o '"[^"]*"' | tr -d '"\n')
[[ $cmdline == *rdinit=* ]] || die "could not read kDefaultKernelArgs from vmm/vm_config.cpp"
# Both sides use the UART agent channel (what vm_config.cpp appends for
# agent_channel uart): QEMU's agent talks on COM2, so forkvm runs with
# --agent-channel uart and the same command line.
cmdline+=" pci=off forkvm.agent=uart"

work=$(mktemp -d "${TMPDIR:-/tmp}/boot_compare.XXXXXX")
qpid=
cleanup() {
    [[ -z $qpid ]] || kill -KILL "$qpid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Private copies: both VMMs read the same bytes from the same (tmpfs) place,
# and a rebuild of the build dir during the run cannot change them.
cp "$kernel" "$work/vmlinuz"
cp "$build/guest/rootfs.cpio.gz" "$work/rootfs.cpio.gz"
if [[ $accel == kvm ]]; then
    cp "$build/forkvm" "$work/forkvm"
fi

now_us() { echo "${EPOCHREALTIME/./}"; }
# Microseconds to milliseconds with one decimal.
ms() { printf '%d.%d' $(($1 / 1000)) $((($1 % 1000) / 100)); }

read_timeout=300 # seconds without a byte before a run counts as failed

# Reads one byte from fd $1 into B (0..255). Fails on EOF or timeout.
read_byte() {
    local c
    IFS= read -r -d '' -n 1 -t "$read_timeout" -u "$1" c || return 1
    if [[ -z $c ]]; then
        B=0 # the NUL delimiter itself
    else
        printf -v B '%d' "'$c"
    fi
}

# Reads from fd $1 up to the end of the first complete frame whose magic is
# "FKVM" (see guest/protocol/frame.hpp); fails unless it is a Ready frame.
read_ready_frame() {
    local fd=$1 window=0 i len type
    # "FKVM" as a little-endian u32 window over the byte stream.
    while ((window != 0x4D564B46)); do
        read_byte "$fd" || return 1
        window=$(((window >> 8) | (B << 24)))
    done
    local -a header=()
    for ((i = 4; i < 20; i++)); do
        read_byte "$fd" || return 1
        header[i]=$B
    done
    type=${header[5]}
    len=$((header[12] | header[13] << 8 | header[14] << 16 | header[15] << 24))
    ((len <= 65536)) || return 1
    for ((i = 0; i < len; i++)); do
        read_byte "$fd" || return 1
    done
    ((type == 1))
}

# One QEMU boot. Sets QEMU_READY_US.
run_qemu() {
    local tag=$1 fifo=$work/com2 fd t0 cpu=host
    [[ $accel == kvm ]] || cpu=max
    rm -f "$fifo"
    mkfifo "$fifo"
    # O_RDWR never blocks on a FIFO, and QEMU's O_WRONLY open then finds a
    # reader at once.
    exec {fd}<>"$fifo"
    t0=$(now_us)
    qemu-system-x86_64 -M microvm -accel "$accel" -cpu "$cpu" -m 256 -smp 1 \
        -nodefaults -no-user-config -display none -monitor none \
        -kernel "$work/vmlinuz" -initrd "$work/rootfs.cpio.gz" -append "$cmdline" \
        -serial "file:$work/qemu-console-$tag.log" \
        -chardev "file,id=agent,path=$fifo" -device isa-serial,chardev=agent,index=1 \
        </dev/null 2>"$work/qemu-stderr-$tag.log" &
    qpid=$!
    if ! read_ready_frame "$fd"; then
        kill -KILL "$qpid" 2>/dev/null || true
        wait "$qpid" 2>/dev/null || true
        qpid=
        exec {fd}<&-
        echo "--- qemu stderr:" >&2
        cat "$work/qemu-stderr-$tag.log" >&2
        echo "--- guest console:" >&2
        tail -c 4096 "$work/qemu-console-$tag.log" >&2
        die "qemu run $tag: no Ready frame on COM2"
    fi
    QEMU_READY_US=$(($(now_us) - t0))
    kill -KILL "$qpid" 2>/dev/null || true
    wait "$qpid" 2>/dev/null || true
    qpid=
    exec {fd}<&-
}

# One forkvm boot. Sets FK_READY_US (our clock, process start to the profile
# line), FK_WALL_US (whole command: boot, run `true`, shut down), and
# FK_SPAWN_MS / FK_BOOT_MS / FK_TOTAL_MS (forkvm's own --profile stages).
run_forkvm() {
    local tag=$1 fifo=$work/forkvm-stderr line t0 ready=0 rc=0 fd
    rm -f "$fifo"
    mkfifo "$fifo"
    FK_SPAWN_MS='' FK_BOOT_MS='' FK_TOTAL_MS=''
    t0=$(now_us)
    "$work/forkvm" run --profile --agent-channel uart --kernel "$work/vmlinuz" --initrd "$work/rootfs.cpio.gz" -- true \
        </dev/null >/dev/null 2>"$fifo" &
    local pid=$!
    # A read-only open blocks until forkvm's end is open, and the FIFO then
    # reads EOF once every process holding stderr has exited.
    exec {fd}<"$fifo"
    : >"$work/forkvm-stderr-$tag.log"
    while IFS= read -r -t "$read_timeout" -u "$fd" line; do
        case $line in
        "profile: total to agent ready:"*)
            ready=$(now_us)
            FK_TOTAL_MS=$(awk '{print $(NF-1)}' <<<"$line")
            ;;
        "profile: VM process spawned"*) FK_SPAWN_MS=$(awk '{print $(NF-1)}' <<<"$line") ;;
        "profile: kernel boot to agent ready:"*) FK_BOOT_MS=$(awk '{print $(NF-1)}' <<<"$line") ;;
        esac
        printf '%s\n' "$line" >>"$work/forkvm-stderr-$tag.log"
    done
    wait "$pid" || rc=$?
    FK_WALL_US=$(($(now_us) - t0))
    exec {fd}<&-
    if ((rc != 0 || ready == 0)) || [[ -z $FK_SPAWN_MS || -z $FK_BOOT_MS ]]; then
        cat "$work/forkvm-stderr-$tag.log" >&2
        die "forkvm run $tag failed (exit status $rc)"
    fi
    FK_READY_US=$((ready - t0))
}

# min median p90 max of the numbers on stdin (p90: nearest rank), with $1
# decimals (default 1).
stats() {
    sort -g | awk -v d="${1:-1}" '{v[NR] = $1}
        END {
            if (NR == 0) exit 1
            med = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
            r = int(0.9 * NR); if (r < 0.9 * NR) r++
            f = "%." d "f"
            printf f " " f " " f " " f "\n", v[1], med, v[r], v[NR]
        }'
}

header() {
    echo "# boot_compare: $(date -u '+%Y-%m-%d %H:%M UTC'), N=$runs, accel=$accel"
    echo "# host: $(nproc) CPUs, $(awk '/MemTotal/ {printf "%d MiB", $2 / 1024}' /proc/meminfo), $(uname -r)," \
        "$(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //')"
    echo "# kernel: $kernel ($(stat -c %s "$kernel") bytes); initramfs: $build/guest/rootfs.cpio.gz ($(stat -c %s "$work/rootfs.cpio.gz") bytes)"
    echo "# qemu: $(qemu-system-x86_64 --version | head -n1)"
    echo "# forkvm: $build/forkvm ($(sed -n 's/^CMAKE_BUILD_TYPE:STRING=//p' "$build/CMakeCache.txt" 2>/dev/null))"
    echo "# cmdline: $cmdline"
}

echo "warm-up (untimed) ..." >&2
[[ $accel == tcg ]] || run_forkvm warmup
run_qemu warmup

for f in fk_ready fk_wall fk_spawn fk_boot fk_total qemu_ready ratio; do : >"$work/$f"; done
echo "run  forkvm_ready_ms  forkvm_wall_ms  profile_spawn_ms  profile_boot_ms  profile_total_ms  qemu_ready_ms"
for ((n = 1; n <= runs; n++)); do
    echo "run $n/$runs ..." >&2
    order=(forkvm qemu)
    ((n % 2)) || order=(qemu forkvm)
    for which in "${order[@]}"; do
        if [[ $which == qemu ]]; then
            run_qemu "$n"
        elif [[ $accel == kvm ]]; then
            run_forkvm "$n"
        fi
    done
    if [[ $accel == kvm ]]; then
        printf '%3d  %15s  %14s  %16s  %15s  %16s  %13s\n' "$n" "$(ms "$FK_READY_US")" "$(ms "$FK_WALL_US")" \
            "$FK_SPAWN_MS" "$FK_BOOT_MS" "$FK_TOTAL_MS" "$(ms "$QEMU_READY_US")"
        ms "$FK_READY_US" >>"$work/fk_ready" && echo >>"$work/fk_ready"
        ms "$FK_WALL_US" >>"$work/fk_wall" && echo >>"$work/fk_wall"
        echo "$FK_SPAWN_MS" >>"$work/fk_spawn"
        echo "$FK_BOOT_MS" >>"$work/fk_boot"
        echo "$FK_TOTAL_MS" >>"$work/fk_total"
        awk -v f="$FK_READY_US" -v q="$QEMU_READY_US" 'BEGIN {printf "%.3f\n", f / q}' >>"$work/ratio"
    else
        printf '%3d  %15s  %14s  %16s  %15s  %16s  %13s\n' "$n" - - - - - "$(ms "$QEMU_READY_US")"
    fi
    ms "$QEMU_READY_US" >>"$work/qemu_ready" && echo >>"$work/qemu_ready"
done

echo
header
echo
echo "| measure (ms) | min | median | p90 | max |"
echo "|---|---:|---:|---:|---:|"
row() {
    local s
    s=$(stats <"$work/$2")
    # shellcheck disable=SC2086
    printf '| %s | %s | %s | %s | %s |\n' "$1" $s
}
if [[ $accel == kvm ]]; then
    row "forkvm: start to agent ready (our clock)" fk_ready
    row "forkvm --profile: VM process spawned, kernel+initramfs loaded" fk_spawn
    row "forkvm --profile: kernel boot to agent ready" fk_boot
    row "forkvm --profile: total to agent ready" fk_total
    row "forkvm: whole \`run -- true\` (boot, exec, shut down)" fk_wall
fi
row "QEMU microvm: start to agent ready" qemu_ready
if [[ $accel == kvm ]]; then
    f=$(stats <"$work/fk_ready" | awk '{print $2}')
    q=$(stats <"$work/qemu_ready" | awk '{print $2}')
    echo
    echo "ratio of medians, forkvm / QEMU (start to agent ready): $(awk -v f="$f" -v q="$q" 'BEGIN {printf "%.2f", f / q}')"
    # Each round's two boots ran back to back, so their ratio cancels most of
    # the drift in the load of a shared machine.
    echo "per-round ratios forkvm / QEMU (min median p90 max): $(stats 2 <"$work/ratio")"
fi
