#!/usr/bin/env bash
# One receive shard on AF_XDP against io_uring and recvmmsg, between two network
# namespaces joined by a veth pair, side by side in one run (the backends alternate in
# each round):
#
#   1. throughput: `multipoint pub` in one namespace as fast as it goes for SECS seconds,
#      `multipoint sub --backend B` (one shard, spinning) in the other; what the shard
#      received: datagrams/s and msgs/s, what it missed, and the CPU it used: its own
#      process's (it blocks when idle, so its CPU time is its work: the receiving
#      core's cost per datagram), and the whole machine's, both cores, from /proc/stat
#      (on veth the kernel's receive work up to the socket, or up to the XDP program,
#      runs in the sender's softirq, on the other core: the machine's CPU per datagram
#      is the whole cost);
#      once with one 32-byte message per datagram (`--max-datagram 54`: per-datagram
#      cost) and once with full 1472-byte datagrams (per-message cost);
#   2. one-way latency at a moderate rate, one message per datagram: p50 and p99, with
#      the sub spinning and blocking.
#
#   bench/xdp.sh                         ROUNDS=3 SECS=5 RATE=100000
#   XDP_MODE=generic bench/xdp.sh        the XDP program in generic (skb) mode
#   JSON=1 bench/xdp.sh                  also each run's JSON lines
#
# Needs root, ethtool and a release build (cargo build --release -p multipoint-bench).
# Everything it makes (two namespaces, a veth pair, processes) is removed on exit, also on
# Ctrl-C. Traffic stays in the namespaces.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/netns.sh

ROUNDS=${ROUNDS:-3}
SECS=${SECS:-5}
RATE=${RATE:-100000}
XDP_MODE=${XDP_MODE:-auto}
BIN=${BIN:-$PWD/target/release/multipoint}
NS_P="mpxb$$p"
NS_S="mpxb$$s"
GROUP=239.232.0.1:42000
TMP=$(mktemp -d)

[ "$(id -u)" -eq 0 ] || { echo "needs root (network namespaces, XDP)" >&2; exit 1; }
[ -x "$BIN" ] || { echo "needs $BIN (cargo build --release -p multipoint-bench)" >&2; exit 1; }
command -v ethtool >/dev/null || { echo "needs ethtool" >&2; exit 1; }

cleanup() {
    ip netns pids "$NS_S" 2>/dev/null | xargs -r kill 2>/dev/null || true
    ip netns pids "$NS_P" 2>/dev/null | xargs -r kill 2>/dev/null || true
    wait 2>/dev/null || true
    ip netns del "$NS_P" 2>/dev/null || true
    ip netns del "$NS_S" 2>/dev/null || true
    rm -rf "$TMP"
}
trap cleanup EXIT

netns_pair "$NS_P" "$NS_S"
veth_pair "$NS_P" "$NS_S" xbp0 10.232.0.1/24 xbs0 10.232.0.2/24
ip -n "$NS_P" route add 224.0.0.0/4 dev xbp0
ip -n "$NS_S" route add 224.0.0.0/4 dev xbs0
# veth would leave the UDP checksum to "hardware" that never computes it; a raw reader
# (AF_XDP) would see it wrong. The kernel computes it in software instead, as a NIC would
# on the wire.
ip netns exec "$NS_P" ethtool -K xbp0 tx off >/dev/null

# The value of key $2 (a dotted path) in the JSON object on the last line of file $1.
field() {
    python3 - "$1" "$2" <<'PY'
import json, sys
lines = [l for l in open(sys.argv[1]).read().splitlines() if l.startswith('{')]
v = json.loads(lines[-1]) if lines else {}
for k in sys.argv[2].split('.'):
    v = v.get(k) if isinstance(v, dict) else None
print('-' if v is None else (round(v) if isinstance(v, float) else v))
PY
}

# Busy and total jiffies of the whole machine (all cores), from /proc/stat.
machine_jiffies() {
    awk '/^cpu /{print $2+$3+$4+$7+$8, $2+$3+$4+$5+$6+$7+$8}' /proc/stat
}

# run NAME BACKEND IDLE PUB_ARGS...: one sub on BACKEND idling as IDLE, and one pub with
# PUB_ARGS; leaves the sub's JSON in $TMP/NAME.json and the CPU used in $TMP/NAME.cpu
# ("sub_ms machine_ms": the sub's own user+system time, from its rusage, and the whole
# machine's busy time while the pub ran).
run() {
    local name=$1 backend=$2 idle=$3; shift 3
    local extra=()
    [ "$backend" = xdp ] && extra=(--xdp-mode "$XDP_MODE")
    # The sub's rusage (user + system seconds) goes to $TMP/NAME.rusage when it exits.
    ip netns exec "$NS_S" python3 -c '
import resource, subprocess, sys
subprocess.call(sys.argv[2:])
u = resource.getrusage(resource.RUSAGE_CHILDREN)
open(sys.argv[1], "w").write("%d\n" % round((u.ru_utime + u.ru_stime) * 1000))
' "$TMP/$name.rusage" "$BIN" sub --backend "$backend" "${extra[@]}" --iface xbs0 \
        --group "$GROUP" --session XBENCH --idle "$idle" --json --secs $((SECS + 30)) \
        >"$TMP/$name.json" 2>"$TMP/$name.err" &
    local sub=$!
    for _ in $(seq 100); do
        grep -q "listening on" "$TMP/$name.json" 2>/dev/null && break
        sleep 0.05
    done
    local m0 t0 m1 t1
    read -r m0 t0 < <(machine_jiffies)
    ip netns exec "$NS_P" "$BIN" pub --iface xbp0 --group "$GROUP" --session XBENCH \
        --ttl 4 --json "$@" >"$TMP/$name.pub" 2>&1
    read -r m1 t1 < <(machine_jiffies)
    wait "$sub" || true
    local hz
    hz=$(getconf CLK_TCK)
    echo "$(cat "$TMP/$name.rusage" 2>/dev/null || echo 0) $(( (m1 - m0) * 1000 / hz ))" \
        >"$TMP/$name.cpu"
    if [ -n "${JSON:-}" ]; then
        tail -n1 "$TMP/$name.pub"
        tail -n1 "$TMP/$name.json"
    fi
}

report() {
    local name=$1 label=$2
    local secs pk ms miss cpu_p cpu_m
    secs=$(field "$TMP/$name.json" secs)
    pk=$(field "$TMP/$name.json" packets)
    ms=$(field "$TMP/$name.json" messages)
    miss=$(field "$TMP/$name.json" missing)
    read -r cpu_p cpu_m <"$TMP/$name.cpu"
    python3 - "$label" "$secs" "$pk" "$ms" "$miss" "$cpu_p" "$cpu_m" <<'PY'
import sys
label, secs, pk, ms, miss, cpu_p, cpu_m = sys.argv[1:]
secs = float(secs) if secs not in ('-', '0') else float('nan')
pk, ms, miss, cpu_p, cpu_m = (int(x) if x != '-' else 0 for x in (pk, ms, miss, cpu_p, cpu_m))
dgs = pk / secs
per = lambda ms_cpu: (ms_cpu * 1e3 / pk) if pk else float('nan')
print(f"  {label:<24} {dgs/1e6:6.3f} M datagrams/s  {ms/secs/1e6:7.3f} M msgs/s  "
      f"missing {miss:>9,}  sub CPU {cpu_p/1e3:5.2f} s ({per(cpu_p):5.2f} us/datagram)  "
      f"machine CPU {cpu_m/1e3:5.2f} s ({per(cpu_m):5.2f} us/datagram)")
PY
}

latency() {
    local name=$1 label=$2
    printf "  %-24s p50 %s ns  p99 %s ns  messages %s  missing %s\n" "$label" \
        "$(field "$TMP/$name.json" latency_ns.p50)" "$(field "$TMP/$name.json" latency_ns.p99)" \
        "$(field "$TMP/$name.json" messages)" "$(field "$TMP/$name.json" missing)"
}

echo "== veth between two namespaces; XDP mode $XDP_MODE; $(nproc) cores; $(uname -r)"
for r in $(seq 1 "$ROUNDS"); do
    echo "round $r: one message (32 B) per datagram, as fast as the publisher goes, ${SECS} s"
    for b in xdp uring mmsg; do
        run "small-$b-$r" "$b" block --size 32 --max-datagram 54 --rate 0 --secs "$SECS"
        report "small-$b-$r" "$b"
    done
    [ -f "$TMP/small-xdp-$r.json" ] && echo "    xdp setup: $(field "$TMP/small-xdp-$r.json" backend_reason)"
    echo "round $r: 1472-byte datagrams of 32-byte messages, as fast as the publisher goes, ${SECS} s"
    for b in xdp uring mmsg; do
        run "full-$b-$r" "$b" block --size 32 --rate 0 --secs "$SECS"
        report "full-$b-$r" "$b"
    done
    for idle in spin block; do
        echo "round $r: one-way latency at $RATE msgs/s, one message per datagram, ${SECS} s, sub idle $idle"
        for b in xdp uring mmsg; do
            run "lat-$b-$idle-$r" "$b" "$idle" --size 32 --max-datagram 54 --batch 1 \
                --rate "$RATE" --secs "$SECS"
            latency "lat-$b-$idle-$r" "$b"
        done
    done
done
