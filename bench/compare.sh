#!/usr/bin/env bash
# Side-by-side on loopback multicast: sockperf against the multipoint tool, same message
# size, one after the other on this machine, then one table of figures and ratios.
#
#   bench/compare.sh                 32- and 1024-byte messages, 5 s per run
#   SIZES="32" SECS=3 bench/compare.sh
#   MP=/elsewhere/multipoint bench/compare.sh   another build of the tool (not rebuilt),
#                                               e.g. to set two versions side by side
#   PLACE=same bench/compare.sh      where the two ping-pong ends run (see below)
#
# What is compared:
#   ping-pong   sockperf ping-pong --full-rtt   vs  multipoint pingpong      (round trip, p50 and p99)
#   throughput  sockperf throughput -> server   vs  multipoint throughput    (messages/s delivered
#               (messages the server received                                  to a subscriber)
#                per second of sending)
# Everything runs on 127.0.0.1; sockperf uses its own group and port, multipoint its own.
#
# Ping-pong placement (PLACE): both tools run their two ends as two processes, pinned alike
# with taskset, because where they run decides the figure more than either tool does. On
# a VM, waking a thread on another (halted) vCPU costs tens of microseconds, waking one on
# the same CPU a few: sockperf measured p50 5.0 us with both ends on CPU 0 and 49.6 us with
# them on CPUs 0 and 1, and left to the scheduler it mostly lands both on one CPU.
#   cross  (default) the echoing end (sockperf server, multipoint --role pong) on CPU 1, the
#          timing end (sockperf ping-pong, multipoint --role ping) on CPU 0: a feed's sender
#          and receiver on cores of their own
#   same   both ends on CPU 0
#   free   not pinned: wherever the scheduler puts them
set -euo pipefail
cd "$(dirname "$0")/.."

SIZES=${SIZES:-"32 1024"}
SECS=${SECS:-5}
IDLE=${IDLE:-block}
command -v python3 >/dev/null || { echo "python3 is needed (CPU list, JSON results)" >&2; exit 1; }
PLACE=${PLACE:-cross}
# The first two CPUs this process may run on ("CPU 0" and "CPU 1" below).
read -r CPU_A CPU_B _ <<<"$(python3 -c 'import os; print(*sorted(os.sched_getaffinity(0)))')"
case "$PLACE" in
    cross) ECHO_CPUS=${CPU_B:-}; TIMER_CPUS=$CPU_A ;;
    same) ECHO_CPUS=$CPU_A; TIMER_CPUS=$CPU_A ;;
    free) ECHO_CPUS=""; TIMER_CPUS="" ;;
    *) echo "PLACE is cross, same or free, not '$PLACE'" >&2; exit 2 ;;
esac
if [ "$PLACE" = cross ] && [ -z "$ECHO_CPUS" ]; then
    echo "PLACE=cross needs two CPUs; this process may use only CPU $CPU_A: PLACE=same or free" >&2
    exit 2
fi
IF=127.0.0.1
SP_GROUP=239.255.42.1
SP_PORT=${SP_PORT:-17071}
MP_GROUP=239.255.42.2
MP_PORT=${MP_PORT:-17081}

if ! command -v sockperf >/dev/null 2>&1; then
    echo "installing sockperf (apt-get)..." >&2
    if [ "$(id -u)" -ne 0 ]; then
        echo "sockperf is missing and this is not root: apt-get install sockperf, then rerun" >&2
        exit 1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq sockperf >/dev/null
fi

if [ -z "${MP:-}" ]; then
    cargo build --release -q -p multipoint-bench
    MP=target/release/multipoint
fi
TMP=$(mktemp -d)
server_pid=""
cleanup() {
    [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null || true
    rm -rf "$TMP"
}
trap cleanup EXIT

sp_common=(--mc-rx-if "$IF" --mc-tx-if "$IF" --mc-loopback-enable)

# The words that run a command on the CPUs in $1 (taskset, which becomes the command, so
# that $! of a background run is the command's own pid), or nothing when $1 is empty.
# Used unquoted: CPU lists have no spaces.
pin() {
    if [ -n "${1:-}" ]; then echo "taskset -c $1"; fi
}

start_server() {
    $(pin "${1:-}") sockperf server -i "$SP_GROUP" -p "$SP_PORT" "${sp_common[@]}" >"$TMP/server.log" 2>&1 &
    server_pid=$!
    sleep 1
}

stop_server() {
    kill -INT "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
    server_pid=""
}

# Prints the value of one percentile line of sockperf's report (in microseconds).
sp_percentile() {
    sed -n "s/.*percentile $2 = *\([0-9.]*\).*/\1/p" "$1" | tail -n 1
}

rows=()
for size in $SIZES; do
    # --- ping-pong -------------------------------------------------------------------
    start_server "$ECHO_CPUS"
    $(pin "$TIMER_CPUS") sockperf ping-pong -i "$SP_GROUP" -p "$SP_PORT" "${sp_common[@]}" \
        -m "$size" -t "$SECS" --full-rtt >"$TMP/pp.log" 2>&1
    stop_server
    sp_p50=$(sp_percentile "$TMP/pp.log" 50.000)
    sp_p99=$(sp_percentile "$TMP/pp.log" 99.000)
    # The pong follows the ping's session and stops at its end of session.
    $(pin "$ECHO_CPUS") "$MP" pingpong --role pong --session CMPPING \
        --group "$MP_GROUP:$MP_PORT" --iface "$IF" --size "$size" --secs "$((SECS + 30))" \
        --idle "$IDLE" --json >"$TMP/mp_pong.log" 2>&1 &
    server_pid=$!
    sleep 1
    $(pin "$TIMER_CPUS") "$MP" pingpong --role ping --session CMPPING \
        --group "$MP_GROUP:$MP_PORT" --iface "$IF" --size "$size" --secs "$SECS" \
        --idle "$IDLE" --json >"$TMP/mp_pp.log" 2>&1
    wait "$server_pid" 2>/dev/null || true
    server_pid=""
    mp_pp=$(tail -n 1 "$TMP/mp_pp.log")

    # --- throughput ------------------------------------------------------------------
    start_server
    sockperf throughput -i "$SP_GROUP" -p "$SP_PORT" "${sp_common[@]}" -m "$size" -t "$SECS" \
        >"$TMP/tp.log" 2>&1
    sleep 0.5
    stop_server
    sp_received=$(sed -n 's/.*Total \([0-9]*\) messages received.*/\1/p' "$TMP/server.log" | tail -n 1)
    sp_secs=$(sed -n 's/.*messages sent in \([0-9.]*\) sec.*/\1/p' "$TMP/tp.log" | tail -n 1)
    "$MP" throughput --group "$MP_GROUP:$MP_PORT" --iface "$IF" --size "$size" --secs "$SECS" \
        --idle "$IDLE" --json >"$TMP/mp_tp.log" 2>&1
    mp_tp=$(tail -n 1 "$TMP/mp_tp.log")

    rows+=("$(python3 - "$size" "$sp_p50" "$sp_p99" "$mp_pp" "${sp_received:-0}" "${sp_secs:-0}" "$mp_tp" <<'PY'
import json, sys
size, sp_p50, sp_p99, mp_pp, sp_rx, sp_secs, mp_tp = sys.argv[1:]
pp = json.loads(mp_pp)
tp = json.loads(mp_tp)
sp_rate = float(sp_rx) / float(sp_secs) if float(sp_secs) > 0 else 0.0
mp_p50 = pp["latency_ns"]["p50"] / 1000
mp_p99 = pp["latency_ns"]["p99"] / 1000
mp_rate = tp["msgs_per_sec"]
def ratio(a, b):
    return f"{a / b:.2f}" if b else "n/a"
print("\t".join([
    f"{size}", f"{float(sp_p50):.1f}", f"{mp_p50:.1f}", ratio(mp_p50, float(sp_p50)),
    f"{float(sp_p99):.1f}", f"{mp_p99:.1f}", ratio(mp_p99, float(sp_p99)),
    f"{sp_rate:,.0f}", f"{mp_rate:,.0f}", ratio(mp_rate, sp_rate),
    f"{tp.get('gaps', 0)}/{tp.get('kernel_drops', 0)}",
]))
PY
)")
done

printf '\nloopback multicast, %s s per run, multipoint idle=%s, ping-pong ends %s, %s\n' "$SECS" "$IDLE" \
    "$(case $PLACE in cross) echo "on CPUs $TIMER_CPUS and $ECHO_CPUS" ;; same) echo "both on CPU $CPU_A" ;; *) echo "unpinned" ;; esac)" "$(uname -r)"
printf '%-6s | %-28s | %-28s | %-40s | %s\n' "" "ping-pong RTT p50 (us)" "ping-pong RTT p99 (us)" "throughput (messages/s delivered)" "mp gaps/drops"
printf '%-6s | %8s %9s %8s | %8s %9s %8s | %13s %14s %10s | %s\n' "size" "sockperf" "multipnt" "ratio" "sockperf" "multipnt" "ratio" "sockperf" "multipoint" "ratio" ""
for row in "${rows[@]}"; do
    IFS=$'\t' read -r size a b c d e f g h i j <<<"$row"
    printf '%-6s | %8s %9s %8s | %8s %9s %8s | %13s %14s %10s | %s\n' "$size" "$a" "$b" "$c" "$d" "$e" "$f" "$g" "$h" "$i" "$j"
done
echo "(latency ratio: multipoint / sockperf, lower is better; throughput ratio: multipoint / sockperf, higher is better)"
