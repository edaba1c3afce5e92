#!/usr/bin/env bash
# Goodput and recovery times under real loss, side by side in one run: for each loss rate,
# two network namespaces joined by a veth pair, nftables on the subscriber's input
# dropping that share of the stream's packets at random, `multipoint pub` with a
# re-request server in one and `multipoint sub --rerequest` in the other. Prints one
# table row per loss rate (delivered, missing, recovered, goodput, recovery-time
# percentiles) and, with JSON=1, each sub's JSON line.
#
#   sudo bench/loss.sh                          0 1 5 20 % loss, 1,000,000 64-byte messages
#   LOSSES="5" RATE=400000 sudo bench/loss.sh   other loss rates or offered rate
#   ORDER=as-they-come sudo bench/loss.sh       without --in-order
#   SEARCH=1 LOSSES="0 5" sudo bench/loss.sh    per loss rate, the highest offered rate at
#                                               which every message arrives (bisection from
#                                               HIGH=4000000 down, TRIALS=7 runs of COUNT)
#
# Needs root, ip (iproute2), nft (nftables) and a release build (cargo build --release
# -p multipoint-bench). Everything it makes (namespaces, their veths and rules) is removed
# on exit, also on Ctrl-C. Sends only inside the namespaces it creates.
set -euo pipefail
cd "$(dirname "$0")/.."

LOSSES=${LOSSES:-"0 1 5 20"}
COUNT=${COUNT:-1000000}
RATE=${RATE:-200000}
SIZE=${SIZE:-64}
ORDER=${ORDER:-in-order}
REREQUEST_RATE=${REREQUEST_RATE:-200000}
BIN=${BIN:-target/release/multipoint}
GROUP=239.255.77.1:31077
SERVER=10.77.0.1:31078
TAG="mploss$$"

[ "$(id -u)" -eq 0 ] || { echo "needs root (network namespaces)" >&2; exit 1; }
command -v nft >/dev/null || { echo "needs nft (apt-get install nftables)" >&2; exit 1; }
[ -x "$BIN" ] || { echo "needs $BIN (cargo build --release -p multipoint-bench)" >&2; exit 1; }

cleanup() {
    ip netns del "$TAG-a" 2>/dev/null || true
    ip netns del "$TAG-b" 2>/dev/null || true
}
trap cleanup EXIT

order_flag=()
[ "$ORDER" = in-order ] && order_flag=(--in-order)

# A JSON field of the sub's last line (a number, or a field of latency-like objects).
field() { python3 -c "import json,sys; d=json.loads(sys.argv[1]); v=d
for k in sys.argv[2].split('.'):
    v = v.get(k) if isinstance(v, dict) else None
print('-' if v is None else v)" "$1" "$2"; }


# Makes the two namespaces with `loss` % dropped on the subscriber's input.
lab() {
    local loss=$1
    cleanup
    ip netns add "$TAG-a"
    ip netns add "$TAG-b"
    ip -n "$TAG-a" link set lo up
    ip -n "$TAG-b" link set lo up
    ip -n "$TAG-a" link add eth0 type veth peer name eth0 netns "$TAG-b"
    ip -n "$TAG-a" addr add 10.77.0.1/24 dev eth0
    ip -n "$TAG-b" addr add 10.77.0.2/24 dev eth0
    ip -n "$TAG-a" link set eth0 up
    ip -n "$TAG-b" link set eth0 up
    ip netns exec "$TAG-b" nft add table inet loss
    ip netns exec "$TAG-b" nft add chain inet loss input '{ type filter hook input priority 0 ; policy accept ; }'
    ip netns exec "$TAG-b" nft add rule inet loss input udp dport "${GROUP##*:}" numgen random mod 100 '<' "$loss" counter drop
}

# One run at `rate` msgs/s: prints the sub's JSON line.
run() {
    local rate=$1 out sub
    out=$(mktemp)
    ip netns exec "$TAG-b" "$BIN" sub --group "$GROUP" --iface eth0 --rerequest "$SERVER" \
        "${order_flag[@]}" --secs 120 --json >"$out" 2>/dev/null &
    sub=$!
    sleep 0.5
    ip netns exec "$TAG-a" "$BIN" pub --group "$GROUP" --iface eth0 --rerequest-server "$SERVER" \
        --rerequest-rate "$REREQUEST_RATE" --count "$COUNT" --rate "$rate" --size "$SIZE" \
        --linger 3 >/dev/null 2>&1
    wait "$sub" || true
    tail -n 1 "$out"
    rm -f "$out"
}

us() { awk '{ if ($1 == "-") print "-"; else printf "%.0f", $1 / 1000 }'; }

row() {
    local label=$1 json=$2
    printf '%-9s %12s %10s %10s %14s %12s %12s %12s\n' "$label" \
        "$(field "$json" messages)" "$(field "$json" missing)" "$(field "$json" recovered)" \
        "$(field "$json" msgs_per_sec)" \
        "$(field "$json" recovery_ns.p50 | us)" "$(field "$json" recovery_ns.p99 | us)" \
        "$(field "$json" recovery_ns.max | us)"
    [ "${JSON:-0}" = 1 ] && echo "$json"
    return 0
}

printf '%-9s %12s %10s %10s %14s %12s %12s %12s\n' loss delivered missing recovered goodput/s rec_p50_us rec_p99_us rec_max_us
for loss in $LOSSES; do
    lab "$loss"
    if [ "${SEARCH:-0}" != 1 ]; then
        row "$loss%" "$(run "$RATE")"
        continue
    fi
    lo=0 hi=${HIGH:-4000000}
    for _ in $(seq "${TRIALS:-7}"); do
        mid=$(( (lo + hi) / 2 ))
        json=$(run "$mid")
        row "$loss%@$mid" "$json"
        if [ "$(field "$json" messages)" = "$COUNT" ] && [ "$(field "$json" missing)" = 0 ]; then
            lo=$mid
        else
            hi=$mid
        fi
    done
    echo "loss $loss%: highest lossless offered rate found: $lo msgs/s"
done
