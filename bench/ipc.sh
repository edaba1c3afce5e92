#!/usr/bin/env bash
# Shared-memory rings against the network path on loopback, side by side in one run:
#
#   1. IPC throughput, 32-byte messages, `multipoint pub --ipc` as fast as it goes, to 1
#      and to 4 reader processes (`multipoint sub --ipc`): msgs/s at the writer and at
#      each reader, and what each reader lost to lapping;
#      and 4 readers again with the writer paced at RATE4 (default 20,000,000 msgs/s), the
#      rate of issue 15's goal: does every reader keep up, losing nothing;
#   2. IPC one-way latency at a moderate rate (stamps in the payload, --batch 1: each
#      message published at once), one spinning reader;
#   3. the network path on loopback: `multipoint throughput` (pub and sub in one process,
#      127.0.0.1 multicast) for msgs/s, `multipoint pub`/`sub` at the same moderate rate
#      for latency;
#   4. the writer's rate with one reader stopped by SIGSTOP against none stopped, in
#      STALL_ROUNDS (5) alternating pairs, and the median of their ratios.
#
#   bench/ipc.sh                        COUNT=20000000 messages per throughput run
#   COUNT=5000000 RATE=100000 bench/ipc.sh
#   JSON=1 bench/ipc.sh                 also each run's JSON lines
#
# Needs a release build (cargo build --release -p multipoint-bench). Loopback only; every
# process and /dev/shm file it makes is removed on exit, also on Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."

COUNT=${COUNT:-20000000}
RATE=${RATE:-100000}
RATE4=${RATE4:-20000000}
LAT_COUNT=${LAT_COUNT:-500000}
SIZE=${SIZE:-32}
BIN=${BIN:-target/release/multipoint}
TAG="ipcbench$$"
TMP=$(mktemp -d)
PIDS=()

[ -x "$BIN" ] || { echo "needs $BIN (cargo build --release -p multipoint-bench)" >&2; exit 1; }

cleanup() {
    for p in "${PIDS[@]}"; do kill -CONT "$p" 2>/dev/null || true; kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -f /dev/shm/multipoint-ipc-"$TAG"-* 2>/dev/null || true
    rm -rf "$TMP"
}
trap cleanup EXIT

# The value of key $2 in the JSON object on the last line of file $1 (a dotted path).
field() {
    python3 - "$1" "$2" <<'PY'
import json, sys
line = open(sys.argv[1]).read().strip().splitlines()[-1]
v = json.loads(line)
for k in sys.argv[2].split('.'):
    v = v.get(k) if isinstance(v, dict) else None
print('-' if v is None else (round(v) if isinstance(v, float) else v))
PY
}

# run NAME READERS STOPPED PUB_ARGS...: READERS readers (STOPPED of them SIGSTOPped once
# attached), then the writer; waits for all.
run() {
    local name=$1 readers=$2 stopped=$3; shift 3
    local ring="$TAG-$name"
    PIDS=()
    for i in $(seq 1 "$readers"); do
        "$BIN" sub --ipc "$ring" --secs 120 --json "${SUB_ARGS[@]}" >"$TMP/$name.r$i" 2>/dev/null &
        PIDS+=($!)
    done
    "$BIN" pub --ipc "$ring" --size "$SIZE" --json "$@" >"$TMP/$name.w" 2>/dev/null &
    local writer=$!
    # Stop the chosen readers once they are attached.
    for i in $(seq 1 "$stopped"); do
        until grep -q "reading the ipc ring" "$TMP/$name.r$i" 2>/dev/null; do sleep 0.01; done
        kill -STOP "${PIDS[$((i - 1))]}"
    done
    wait "$writer"
    for i in $(seq 1 "$stopped"); do kill -CONT "${PIDS[$((i - 1))]}"; done
    for p in "${PIDS[@]}"; do wait "$p" || true; done
    PIDS=()
    if [ "${JSON:-0}" = 1 ]; then
        tail -n1 "$TMP/$name.w"
        for i in $(seq 1 "$readers"); do tail -n1 "$TMP/$name.r$i"; done
    fi
}

readers_line() {
    local name=$1 readers=$2 out=""
    for i in $(seq 1 "$readers"); do
        out+=" $(field "$TMP/$name.r$i" msgs_per_sec)/s lost $(field "$TMP/$name.r$i" lost_to_lapping);"
    done
    echo "$out"
}

echo "multipoint ipc bench: $SIZE-byte messages, $(nproc) cores, load $(cut -d' ' -f1 /proc/loadavg)"
echo

SUB_ARGS=(--idle block)
run t1 1 0 --rate 0 --count "$COUNT"
echo "ipc throughput, 1 reader:   writer $(field "$TMP/t1.w" msgs_per_sec) msgs/s; reader$(readers_line t1 1)"
run t4 4 0 --rate 0 --count "$COUNT"
echo "ipc throughput, 4 readers:  writer $(field "$TMP/t4.w" msgs_per_sec) msgs/s; readers$(readers_line t4 4)"
run p4 4 0 --rate "$RATE4" --count "$COUNT"
echo "ipc paced at $RATE4, 4 readers: writer $(field "$TMP/p4.w" msgs_per_sec) msgs/s; readers$(readers_line p4 4)"

SUB_ARGS=(--idle spin)
run lat 1 0 --rate "$RATE" --count "$LAT_COUNT" --batch 1
echo "ipc latency at $RATE msgs/s (1 spinning reader): p50 $(field "$TMP/lat.r1" latency_ns.p50) ns  p99 $(field "$TMP/lat.r1" latency_ns.p99) ns  p99.9 $(field "$TMP/lat.r1" latency_ns.p999) ns  lost $(field "$TMP/lat.r1" lost_to_lapping)"

"$BIN" throughput --size "$SIZE" --secs 3 --json >"$TMP/net.t" 2>/dev/null || true
echo "network loopback throughput (multipoint throughput, 3 s): $(field "$TMP/net.t" msgs_per_sec) msgs/s, missing $(field "$TMP/net.t" missing)"
GROUP="239.255.77.$((RANDOM % 200 + 1)):$((31500 + RANDOM % 400))"
"$BIN" sub --group "$GROUP" --iface 127.0.0.1 --idle spin --secs 30 --json >"$TMP/net.s" 2>/dev/null &
PIDS=($!)
until grep -q "listening on" "$TMP/net.s" 2>/dev/null; do sleep 0.01; done
"$BIN" pub --group "$GROUP" --iface 127.0.0.1 --size "$SIZE" --rate "$RATE" --count "$LAT_COUNT" --batch 1 >/dev/null 2>&1
wait "${PIDS[0]}" || true
PIDS=()
echo "network loopback latency at $RATE msgs/s (spinning sub): p50 $(field "$TMP/net.s" latency_ns.p50) ns  p99 $(field "$TMP/net.s" latency_ns.p99) ns  p99.9 $(field "$TMP/net.s" latency_ns.p999) ns  missing $(field "$TMP/net.s" missing)"

# The writer's rate moves by a third between identical runs on a shared VM (how close the
# live reader runs behind it, where the scheduler puts them), so the stall comparison is
# STALL_ROUNDS alternating pairs and the median of their ratios.
SUB_ARGS=(--idle block)
ratios=()
for round in $(seq 1 "${STALL_ROUNDS:-5}"); do
    run free 1 0 --rate 0 --count "$COUNT"
    run stall 2 1 --rate 0 --count "$COUNT"
    free=$(field "$TMP/free.w" msgs_per_sec)
    stall=$(field "$TMP/stall.w" msgs_per_sec)
    ratio=$(python3 -c "print(round(100*$stall/$free))")
    ratios+=("$ratio")
    echo "writer with 1 reader: $free msgs/s; with 1 reader and 1 stopped (SIGSTOP): $stall msgs/s ($ratio%); the stopped one lost $(field "$TMP/stall.r1" lost_to_lapping), the other $(field "$TMP/stall.r2" lost_to_lapping)"
done
echo "writer with a stopped reader, median of ${#ratios[@]} rounds: $(python3 -c "import statistics, sys; print(round(statistics.median(map(int, sys.argv[1:]))))" "${ratios[@]}")% of its rate without"
