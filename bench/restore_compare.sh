#!/usr/bin/env bash
# bench/restore_compare.sh [N] — restore to agent ready: forkvm vs QEMU
# restoring its own saved state, side by side in one run.
#
# A benchmark, not a test: it asserts nothing about speed. It needs a working
# /dev/kvm, so on a machine without one run it as
#   scripts/with-kvm --memory 8192 --timeout 3000 -- bench/restore_compare.sh [N]
#
# One guest for all sides: the build's initramfs, Debian's kernel, the kernel
# command line of vmm/vm_config.cpp, 256 MiB, 1 vCPU. Each side saves the
# booted, idle guest once (its agent has sent Ready and answered one Ping),
# then restores it N times. "Ready" is the same everywhere: the guest agent
# answered a Ping frame on COM2.
#   forkvm      `forkvm snapshot create` once; each round
#               `forkvm snapshot run DIR --profile -- true`; ready = the moment
#               its "profile: total to agent answering" line (printed right
#               after the Pong) arrives here. memory.bin is mapped private.
#   qemu-full   microvm booted, `migrate "exec:cat > state"` (RAM in the
#               stream, ~85 MB), quit; each round QEMU with
#               `-incoming "exec:cat state"`: RAM is read and copied in whole.
#   qemu-file   microvm booted with its RAM in a file (memory-backend-file,
#               share=on), saved with the x-ignore-shared capability (device
#               state only, ~50 KB; RAM stays in the file), quit; each round
#               QEMU over the same file with share=off (a private mapping, as
#               forkvm maps memory.bin: the file is never written), with
#               `-incoming defer`, x-ignore-shared and `migrate-incoming`
#               over QMP.
# QEMU's ready = the moment bench/qemu_agent.py got the Pong (it pings every
# 20 ms from QEMU's start on; it and the QMP helper are started, and have
# loaded, before the clock starts). Every clock starts right before the fork of
# the VMM process, so all include exec and start-up of the VMM. The order of
# the three sides rotates every round, after one untimed warm-up of each.
#
# Environment:
#   FORKVM_BENCH_BUILD   build dir with forkvm and guest/rootfs.cpio.gz
#                        (default: <repo>/build); only read, never rebuilt
#   FORKVM_KERNEL        guest kernel (default: Debian's linux-image-amd64
#                        kernel, found as CMake finds it)
#   FORKVM_BENCH_QEMU_ACCEL  "kvm" (default) or "tcg" (QEMU sides only, to
#                        try the script on a machine without /dev/kvm)
#
# After the rounds, `forkvm bench fork` on the same snapshot (N clones, N
# restores) gives the forkvm-only numbers of the same run: fork call and
# fork-to-ready p50/p90/p99, forks per second, host memory per clone.
#
# Output (stdout): set-up lines, one line per round, then a Markdown summary
# in ms, then bench fork's report. Progress on stderr.
set -euo pipefail
export LC_ALL=C

die() {
    echo "restore_compare: $*" >&2
    exit 2
}

runs=${1:-8}
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
python=/usr/bin/python3
[[ -x $python ]] || die "no $python (Debian: python3)"

# The command line forkvm gives the kernel, as bench/boot_compare.sh reads it.
cmdline=$(sed -n '/kDefaultKernelArgs =/,/;/p' "$repo/vmm/vm_config.cpp" | grep -o '"[^"]*"' | tr -d '"\n')
[[ $cmdline == *rdinit=* ]] || die "could not read kDefaultKernelArgs from vmm/vm_config.cpp"
# Both sides use the UART agent channel (what vm_config.cpp appends for
# agent_channel uart): QEMU's agent talks on COM2, so forkvm runs with
# --agent-channel uart and the same command line.
cmdline+=" pci=off forkvm.agent=uart"

# Short: socket paths must fit in sun_path (108 bytes).
work=$(mktemp -d "${TMPDIR:-/tmp}/rc.XXXXXX")
qpid=
pingpid=
cleanup() {
    [[ -z $pingpid ]] || kill -KILL "$pingpid" 2>/dev/null || true
    [[ -z $qpid ]] || kill -KILL "$qpid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Private copies, as in boot_compare.sh: same bytes for every VMM, immune to a
# rebuild during the run. (forkvm's VM processes re-exec /proc/self/exe.)
cp "$kernel" "$work/vmlinuz"
cp "$build/guest/rootfs.cpio.gz" "$work/rootfs.cpio.gz"
cp "$repo/bench/qemu_agent.py" "$work/qemu_agent.py"
[[ $accel == tcg ]] || cp "$build/forkvm" "$work/forkvm"
agent_tool() { "$python" "$work/qemu_agent.py" "$@"; }

now_us() { echo "${EPOCHREALTIME/./}"; }
# Microseconds to milliseconds with one decimal.
ms() { printf '%d.%d' $(($1 / 1000)) $((($1 % 1000) / 100)); }

timeout_ms=300000 # one restore or boot that takes longer counts as failed

# ---------------------------------------------------------------- QEMU sides --

qemu_cpu=host
[[ $accel == kvm ]] || qemu_cpu=max
ignore_shared='{"execute":"migrate-set-capabilities","arguments":{"capabilities":[{"capability":"x-ignore-shared","state":true}]}}'

# start_qemu MODE TAG [ARGS...]: QEMU in the background (sets qpid). MODE:
# full (anonymous RAM), file-save (RAM in $work/qemu-ram, shared: the guest's
# RAM is the file), file (the same file mapped private).
start_qemu() {
    local mode=$1 tag=$2 machine=microvm
    shift 2
    local -a mem=()
    case $mode in
    full) ;;
    file-save) mem=(-object "memory-backend-file,id=mem,size=256M,mem-path=$work/qemu-ram,share=on") ;;
    file) mem=(-object "memory-backend-file,id=mem,size=256M,mem-path=$work/qemu-ram,share=off") ;;
    esac
    [[ $mode == full ]] || machine=microvm,memory-backend=mem
    # COM2 as in boot_compare.sh (microvm builds only COM1), on a socket so
    # that the host can write to it too.
    qemu-system-x86_64 -M "$machine" -accel "$accel" -cpu "$qemu_cpu" -m 256 -smp 1 \
        -nodefaults -no-user-config -display none -monitor none "${mem[@]}" \
        -kernel "$work/vmlinuz" -initrd "$work/rootfs.cpio.gz" -append "$cmdline" \
        -serial "file:$work/qemu-console-$tag.log" \
        -chardev "socket,id=agent,path=$work/agent.sock,server=on,wait=off" \
        -device isa-serial,chardev=agent,index=1 \
        -qmp "unix:$work/qmp.sock,server=on,wait=off" \
        "$@" </dev/null 2>"$work/qemu-stderr-$tag.log" &
    qpid=$!
}

stop_qemu() {
    [[ -z $qpid ]] || kill -KILL "$qpid" 2>/dev/null || true
    [[ -z $qpid ]] || wait "$qpid" 2>/dev/null || true
    qpid=
}

qemu_failed() {
    local tag=$1
    shift
    stop_qemu
    echo "--- qemu stderr ($tag):" >&2
    cat "$work/qemu-stderr-$tag.log" >&2 || true
    echo "--- guest console ($tag):" >&2
    tail -c 4096 "$work/qemu-console-$tag.log" >&2 || true
    die "qemu $tag: $*"
}

# qemu_save MODE STATE: boots, waits for Ready and one Pong, saves the
# running VM (the migration's last stage stops it, so a restored VM runs by
# itself) into $work/STATE and quits.
qemu_save() {
    local mode=$1 state=$work/$2 t0 t1 caps=()
    echo "qemu-$mode: booting to agent ready ..." >&2
    t0=$(now_us)
    rm -f "$work/agent.sock" "$work/qmp.sock"
    start_qemu "$([[ $mode == file ]] && echo file-save || echo full)" "save-$mode"
    agent_tool ping "$work/agent.sock" --pid "$qpid" --timeout-ms "$timeout_ms" --interval-ms 200 --after-ready \
        >/dev/null || qemu_failed "save-$mode" "the agent never answered"
    t1=$(now_us)
    [[ $mode == full ]] || caps=("$ignore_shared")
    agent_tool qmp "$work/qmp.sock" --pid "$qpid" --timeout-ms "$timeout_ms" "${caps[@]}" \
        "{\"execute\":\"migrate\",\"arguments\":{\"uri\":\"exec:cat > $state\"}}" wait-migration \
        '{"execute":"quit"}' >"$work/save-$mode.json" || qemu_failed "save-$mode" "saving failed"
    wait "$qpid" || true
    qpid=
    echo "qemu-$mode: boot to ready $(ms $((t1 - t0))) ms, save $(ms $(($(now_us) - t1))) ms; state $(stat -c %s "$state") bytes"
}

# One restore. Sets QEMU_READY_US.
run_qemu() {
    local mode=$1 tag=$2 t0 out qmppid=
    rm -f "$work/agent.sock" "$work/qmp.sock" "$work/qemu.pid" "$work/ping.started" "$work/qmp.started"
    # The helpers start first and wait for QEMU's sockets: the clock starts
    # only once the interpreter is up (slow in an emulated host), so that it
    # is not counted as QEMU's time. The pinger pings every 20 ms from the
    # moment COM2's socket exists; Pings that arrive before the state is loaded
    # are lost with the UART state they land in, so it keeps on until a Pong.
    agent_tool ping "$work/agent.sock" --pid-file "$work/qemu.pid" --started "$work/ping.started" \
        --timeout-ms "$timeout_ms" --interval-ms 20 >"$work/ping.out" 2>"$work/ping.err" &
    pingpid=$!
    if [[ $mode == file ]]; then
        # QEMU 7.2 takes the capability only over QMP (there is no
        # -global migration.x-ignore-shared), and the stream's format depends
        # on it, so it is set before migrate-incoming.
        agent_tool qmp "$work/qmp.sock" --pid-file "$work/qemu.pid" --started "$work/qmp.started" \
            --timeout-ms "$timeout_ms" "$ignore_shared" \
            "{\"execute\":\"migrate-incoming\",\"arguments\":{\"uri\":\"exec:cat $work/state-file\"}}" \
            >/dev/null 2>"$work/qmp.err" &
        qmppid=$!
    else
        : >"$work/qmp.started"
    fi
    local waited=0
    while [[ ! -e $work/ping.started || ! -e $work/qmp.started ]]; do
        # shellcheck disable=SC2015 # die unless every helper is still alive
        kill -0 "$pingpid" 2>/dev/null && { [[ -z $qmppid ]] || kill -0 "$qmppid" 2>/dev/null; } ||
            die "$tag: a helper exited before it started ($(cat "$work/ping.err" "$work/qmp.err" 2>/dev/null))"
        ((++waited < 6000)) || die "$tag: the helpers did not start within 60 s"
        sleep 0.01
    done
    t0=$(now_us)
    if [[ $mode == full ]]; then
        start_qemu full "$tag" -incoming "exec:cat $work/state-full"
    else
        start_qemu file "$tag" -incoming defer
    fi
    echo "$qpid" >"$work/qemu.pid"
    if [[ -n $qmppid ]] && ! wait "$qmppid"; then
        cat "$work/qmp.err" >&2
        qemu_failed "$tag" "migrate-incoming failed"
    fi
    if ! wait "$pingpid"; then
        pingpid=
        cat "$work/ping.err" >&2
        qemu_failed "$tag" "the agent never answered"
    fi
    pingpid=
    out=$(cat "$work/ping.out")
    QEMU_READY_US=$((${out##*realtime_us=} - t0))
    stop_qemu
}

# -------------------------------------------------------------- forkvm side --

forkvm_save() {
    local t0
    echo "forkvm: snapshot create ..." >&2
    t0=$(now_us)
    "$work/forkvm" snapshot create --out "$work/snap" --agent-channel uart --kernel "$work/vmlinuz" --initrd "$work/rootfs.cpio.gz" \
        >"$work/snapshot-create.out" 2>&1 || {
        cat "$work/snapshot-create.out" >&2
        die "forkvm snapshot create failed"
    }
    echo "forkvm: snapshot create $(ms $(($(now_us) - t0))) ms; $(tail -n1 "$work/snapshot-create.out");" \
        "$(du -sk "$work/snap" | cut -f1) kB allocated, files:" \
        "$(cd "$work/snap" && stat -c '%n=%s' -- * | tr '\n' ' ')"
}

# One restore. Sets FK_READY_US (our clock, process start to the profile
# line), FK_WALL_US (whole command: restore, run `true`, shut down) and
# FK_RESTORED_MS / FK_PING_MS / FK_TOTAL_MS (forkvm's own --profile stages).
run_forkvm() {
    local tag=$1 fifo=$work/forkvm-stderr line t0 ready=0 rc=0 fd
    rm -f "$fifo"
    mkfifo "$fifo"
    FK_RESTORED_MS='' FK_PING_MS='' FK_TOTAL_MS=''
    t0=$(now_us)
    "$work/forkvm" snapshot run "$work/snap" --profile -- true </dev/null >/dev/null 2>"$fifo" &
    local pid=$!
    exec {fd}<"$fifo"
    : >"$work/forkvm-stderr-$tag.log"
    while IFS= read -r -t $((timeout_ms / 1000)) -u "$fd" line; do
        case $line in
        "profile: total to agent answering:"*)
            ready=$(now_us)
            FK_TOTAL_MS=$(awk '{print $(NF-1)}' <<<"$line")
            ;;
        "profile: VM process spawned, snapshot restored:"*) FK_RESTORED_MS=$(awk '{print $(NF-1)}' <<<"$line") ;;
        "profile: restored to agent answering a ping:"*) FK_PING_MS=$(awk '{print $(NF-1)}' <<<"$line") ;;
        esac
        printf '%s\n' "$line" >>"$work/forkvm-stderr-$tag.log"
    done
    wait "$pid" || rc=$?
    FK_WALL_US=$(($(now_us) - t0))
    exec {fd}<&-
    if ((rc != 0 || ready == 0)) || [[ -z $FK_RESTORED_MS || -z $FK_PING_MS ]]; then
        cat "$work/forkvm-stderr-$tag.log" >&2
        die "forkvm run $tag failed (exit status $rc)"
    fi
    FK_READY_US=$((ready - t0))
}

# ------------------------------------------------------------------ report --

# min median p90 max of the numbers on stdin (p90: nearest rank), with $1
# decimals (default 1); as boot_compare.sh.
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
    echo "# restore_compare: $(date -u '+%Y-%m-%d %H:%M UTC'), N=$runs, accel=$accel"
    echo "# host: $(nproc) CPUs, $(awk '/MemTotal/ {printf "%d MiB", $2 / 1024}' /proc/meminfo), $(uname -r)," \
        "$(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //'); $TMPDIR_FS"
    echo "# kernel: $kernel ($(stat -c %s "$kernel") bytes); initramfs: $build/guest/rootfs.cpio.gz ($(stat -c %s "$work/rootfs.cpio.gz") bytes)"
    echo "# qemu: $(qemu-system-x86_64 --version | head -n1)"
    echo "# forkvm: $build/forkvm ($(sed -n 's/^CMAKE_BUILD_TYPE:STRING=//p' "$build/CMakeCache.txt" 2>/dev/null))"
    echo "# cmdline: $cmdline"
}
TMPDIR_FS="work dir on $(df --output=fstype "$work" | tail -n1)"

sides=(qemu-full qemu-file)
[[ $accel == tcg ]] || sides=(forkvm qemu-full qemu-file)

[[ $accel == tcg ]] || forkvm_save
qemu_save full state-full
qemu_save file state-file
echo "qemu-file: RAM file $(du -k "$work/qemu-ram" | cut -f1) kB allocated of $(stat -c %s "$work/qemu-ram") bytes"
ram_sum=$(md5sum <"$work/qemu-ram")

echo "warm-up (untimed) ..." >&2
[[ $accel == tcg ]] || run_forkvm warmup
run_qemu full warmup-full
run_qemu file warmup-file

for f in fk_ready fk_wall fk_restored fk_ping fk_total q_full q_file r_full r_file; do : >"$work/$f"; done
echo "round  order                     forkvm_ready_ms  forkvm_wall_ms  profile_restored_ms  profile_ping_ms  profile_total_ms  qemu_full_ready_ms  qemu_file_ready_ms"
for ((n = 1; n <= runs; n++)); do
    echo "round $n/$runs ..." >&2
    k=${#sides[@]}
    order=()
    for ((i = 0; i < k; i++)); do order+=("${sides[$(((i + n - 1) % k))]}"); done
    FK_READY_US=0 FK_WALL_US=0 FK_RESTORED_MS=- FK_PING_MS=- FK_TOTAL_MS=-
    for which in "${order[@]}"; do
        case $which in
        forkvm) run_forkvm "$n" ;;
        qemu-full)
            run_qemu full "full-$n"
            Q_FULL_US=$QEMU_READY_US
            ;;
        qemu-file)
            run_qemu file "file-$n"
            Q_FILE_US=$QEMU_READY_US
            ;;
        esac
    done
    printf '%5d  %-24s  %15s  %14s  %19s  %15s  %16s  %18s  %18s\n' "$n" "$(
        IFS=,
        echo "${order[*]}"
    )" "$(ms "$FK_READY_US")" "$(ms "$FK_WALL_US")" "$FK_RESTORED_MS" "$FK_PING_MS" "$FK_TOTAL_MS" \
        "$(ms "$Q_FULL_US")" "$(ms "$Q_FILE_US")"
    ms "$Q_FULL_US" >>"$work/q_full" && echo >>"$work/q_full"
    ms "$Q_FILE_US" >>"$work/q_file" && echo >>"$work/q_file"
    if [[ $accel == kvm ]]; then
        ms "$FK_READY_US" >>"$work/fk_ready" && echo >>"$work/fk_ready"
        ms "$FK_WALL_US" >>"$work/fk_wall" && echo >>"$work/fk_wall"
        echo "$FK_RESTORED_MS" >>"$work/fk_restored"
        echo "$FK_PING_MS" >>"$work/fk_ping"
        echo "$FK_TOTAL_MS" >>"$work/fk_total"
        # Each round's runs were back to back, so their ratio cancels most of
        # the drift in the load of a shared machine.
        awk -v f="$FK_READY_US" -v q="$Q_FULL_US" 'BEGIN {printf "%.3f\n", f / q}' >>"$work/r_full"
        awk -v f="$FK_READY_US" -v q="$Q_FILE_US" 'BEGIN {printf "%.3f\n", f / q}' >>"$work/r_file"
    fi
done

# share=off must have kept every restored guest's writes out of the file.
[[ $(md5sum <"$work/qemu-ram") == "$ram_sum" ]] || die "the qemu-file restores changed the RAM file"
echo "qemu-file: RAM file unchanged after all restores (md5)"

echo
header
echo
echo "| restore to agent ready (ms) | min | median | p90 | max |"
echo "|---|---:|---:|---:|---:|"
row() {
    local s
    s=$(stats <"$work/$2")
    # shellcheck disable=SC2086
    printf '| %s | %s | %s | %s | %s |\n' "$1" $s
}
if [[ $accel == kvm ]]; then
    row "forkvm \`snapshot run\`: start to agent answering (our clock)" fk_ready
    row "forkvm --profile: VM process spawned, snapshot restored" fk_restored
    row "forkvm --profile: restored to agent answering a ping" fk_ping
    row "forkvm --profile: total to agent answering" fk_total
    row "forkvm: whole \`snapshot run -- true\` (restore, exec, shut down)" fk_wall
fi
row "QEMU, RAM in the migration stream: start to agent answering" q_full
row "QEMU, x-ignore-shared, RAM file mapped private: start to agent answering" q_file
if [[ $accel == kvm ]]; then
    f=$(stats <"$work/fk_ready" | awk '{print $2}')
    echo
    for side in full file; do
        q=$(stats <"$work/q_$side" | awk '{print $2}')
        echo "forkvm / QEMU-$side: ratio of medians $(awk -v f="$f" -v q="$q" 'BEGIN {printf "%.2f", f / q}');" \
            "per-round ratios (min median p90 max): $(stats 2 <"$work/r_$side")"
    done
fi

# The forkvm-only numbers of the same run (QEMU has no fork): zero-copy
# forks of a zygote restored from the same snapshot, with memory per clone.
if [[ $accel == kvm ]]; then
    echo
    echo "forkvm bench fork on the same snapshot, same run (${runs} clones):"
    "$work/forkvm" bench fork --snapshot "$work/snap" --count "$runs" --restores "$runs" ||
        die "forkvm bench fork failed"
fi
