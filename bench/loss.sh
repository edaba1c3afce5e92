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
#   LINES=2 sudo bench/loss.sh                  A/B: a second veth pair and group (line B,
#                                               pub/sub --line-b), each line dropping the
#                                               share on its own; adds each line's wins and
#                                               how far behind the other it ran (µs)
#   RECOVER=0 sudo bench/loss.sh                without --rerequest (what is lost stays lost)
#   IN_FLIGHT=256 sudo bench/loss.sh            the sub's --recovery-in-flight
#
# Needs root, ip (iproute2), nft (nftables) and a release build (cargo build --release
# -p multipoint-bench). Everything it makes (namespaces, their veths and rules) is removed
# on exit, also on Ctrl-C. Sends only inside the namespaces it creates.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/netns.sh

LOSSES=${LOSSES:-"0 1 5 20"}
COUNT=${COUNT:-1000000}
RATE=${RATE:-200000}
SIZE=${SIZE:-64}
ORDER=${ORDER:-in-order}
REREQUEST_RATE=${REREQUEST_RATE:-200000}
BIN=${BIN:-target/release/multipoint}
LINES=${LINES:-1}
RECOVER=${RECOVER:-1}
GROUP=239.255.77.1:31077
GROUP_B=239.255.77.2:31077
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
[ "$ORDER" = in-order ] && [ "$RECOVER" = 1 ] && order_flag=(--in-order)
sub_flags=("${order_flag[@]}")
pub_flags=()
if [ "$RECOVER" = 1 ]; then
    sub_flags+=(--rerequest "$SERVER")
    [ -n "${IN_FLIGHT:-}" ] && sub_flags+=(--recovery-in-flight "$IN_FLIGHT")
    pub_flags+=(--rerequest-server "$SERVER" --rerequest-rate "$REREQUEST_RATE" --linger 3)
fi
if [ "$LINES" = 2 ]; then
    sub_flags+=(--line-b "$GROUP_B" --iface-b eth1)
    pub_flags+=(--line-b "$GROUP_B" --iface-b eth1)
fi

# A JSON field of the sub's last line (a number, or a field of latency-like objects;
# a number in the path indexes a list: lines.0.wins).
field() { python3 -c "import json,sys; d=json.loads(sys.argv[1]); v=d
for k in sys.argv[2].split('.'):
    if isinstance(v, list) and k.isdigit() and int(k) < len(v): v = v[int(k)]
    else: v = v.get(k) if isinstance(v, dict) else None
print('-' if v is None else v)" "$1" "$2"; }


# Makes the two namespaces with `loss` % dropped on the subscriber's input.
lab() {
    local loss=$1
    cleanup
    netns_pair "$TAG-a" "$TAG-b"
    veth_pair "$TAG-a" "$TAG-b" eth0 10.77.0.1/24 eth0 10.77.0.2/24
    ip netns exec "$TAG-b" nft add table inet loss
    ip netns exec "$TAG-b" nft add chain inet loss input '{ type filter hook input priority 0 ; policy accept ; }'
    local ifs=(eth0)
    if [ "$LINES" = 2 ]; then
        veth_pair "$TAG-a" "$TAG-b" eth1 10.77.1.1/24 eth1 10.77.1.2/24
        ifs+=(eth1)
    fi
    # One rule per line: each drops its share on its own.
    for ifname in "${ifs[@]}"; do
        ip netns exec "$TAG-b" nft add rule inet loss input iifname "$ifname" udp dport "${GROUP##*:}" \
            numgen random mod 100 '<' "$loss" counter drop
    done
}

# One run at `rate` msgs/s: prints the sub's JSON line.
run() {
    local rate=$1 out sub
    out=$(mktemp)
    ip netns exec "$TAG-b" "$BIN" sub --group "$GROUP" --iface eth0 "${sub_flags[@]}" \
        --secs 120 --json >"$out" 2>/dev/null &
    sub=$!
    sleep 0.5
    ip netns exec "$TAG-a" "$BIN" pub --group "$GROUP" --iface eth0 "${pub_flags[@]}" \
        --count "$COUNT" --rate "$rate" --size "$SIZE" >/dev/null 2>&1
    wait "$sub" || true
    tail -n 1 "$out"
    rm -f "$out"
}

us() { awk '{ if ($1 == "-") print "-"; else printf "%.0f", $1 / 1000 }'; }

row() {
    local label=$1 json=$2
    printf '%-9s %12s %10s %10s %14s %12s %12s %12s' "$label" \
        "$(field "$json" messages)" "$(field "$json" missing)" "$(field "$json" recovered)" \
        "$(field "$json" msgs_per_sec)" \
        "$(field "$json" recovery_ns.p50 | us)" "$(field "$json" recovery_ns.p99 | us)" \
        "$(field "$json" recovery_ns.max | us)"
    if [ "$LINES" = 2 ]; then
        local l
        for l in 0 1; do
            printf ' %10s %10s %8s/%s/%s' "$(field "$json" "lines.$l.wins")" \
                "$(field "$json" "lines.$l.gaps_alone")" "$(field "$json" "lines.$l.behind_us.p50")" \
                "$(field "$json" "lines.$l.behind_us.p99")" "$(field "$json" "lines.$l.behind_us.max")"
        done
    fi
    printf '\n'
    [ "${JSON:-0}" = 1 ] && echo "$json"
    return 0
}

printf '%-9s %12s %10s %10s %14s %12s %12s %12s' loss delivered missing recovered goodput/s rec_p50_us rec_p99_us rec_max_us
[ "$LINES" = 2 ] && printf ' %10s %10s %s %10s %10s %s' A_wins A_alone A_behind_us_p50/p99/max B_wins B_alone B_behind_us_p50/p99/max
printf '\n'
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
