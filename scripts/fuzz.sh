#!/usr/bin/env bash
# Fuzzes every decoder: builds and runs each cargo-fuzz target of dataplane/fuzz and
# control/fuzz for a number of executions, one target at a time, and says per target how
# many executions were done, in how long, and whether anything crashed. Exits non-zero if
# any target crashed (or did not finish its runs). Not run by CI (.ci/run).
#
#   scripts/fuzz.sh                     every target, 10,000,000 executions each
#   FUZZ_RUNS=100000 scripts/fuzz.sh    fewer executions
#   scripts/fuzz.sh receive_state ...   only these targets
#
# Targets are whatever `cargo fuzz list` finds in each fuzz directory: a new target is its
# file in <crate>/fuzz/fuzz_targets/ and its line in the `bin` list of <crate>/fuzz/Cargo.toml.
#
# Needs cargo-fuzz (`cargo install cargo-fuzz`). cargo-fuzz passes nightly-only flags to
# rustc (-Zsanitizer, sancov); on a stable toolchain RUSTC_BOOTSTRAP=1, set below, lets
# it do so. Runs under `nice -n 10`, one fuzzer process at a time (-jobs=1 -workers=1),
# so as not to crowd a shared machine.
#
# Each target starts from a few valid inputs written below (seeds) and from what earlier
# runs kept in <crate>/fuzz/corpus/<target>/ (git-ignored). A crash leaves its input in
# <crate>/fuzz/artifacts/<target>/ (git-ignored, like the logs of the last run, in
# last-run/ there); replay it with
#   RUSTC_BOOTSTRAP=1 cargo fuzz run --fuzz-dir <crate>/fuzz -O -a <target> <file>
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

RUNS=${FUZZ_RUNS:-10000000}
FUZZ_DIRS=(dataplane/fuzz control/fuzz)
export RUSTC_BOOTSTRAP=1
# Large allocations straight from mmap: fresh pages are already zero, so a target that
# allocates a big zeroed buffer per run (receive_state) does not pay a memset of it each
# time (twice the executions per second).
export GLIBC_TUNABLES=${GLIBC_TUNABLES:-glibc.malloc.mmap_threshold=131072}

# No sanitizer by default: the code fuzzed (dataplane/src/wire, core/receive, sequence,
# reorder; control/src/rooted/proto.rs) has no `unsafe`, so AddressSanitizer finds nothing
# there that a panic would not, and it makes the runs three to five times slower
# (receive_state allocates a 2 MiB reorder arena and a latency histogram per run).
# Panics, failed assertions and overflow checks (-a: debug assertions on) are crashes.
# FUZZ_SANITIZER=address to use it anyway.
SANITIZER=${FUZZ_SANITIZER:-none}

# Longest input per target: enough for what each decodes (a re-request is 20 bytes; a
# MoldUDP64 datagram fits an Ethernet frame), so that no time goes to longer ones.
max_len() {
    case "$1" in
        moldudp64_request) echo 64 ;;
        moldudp64_parse) echo 1500 ;;
        frame_parse) echo 1600 ;;
        auth_exchange) echo 1024 ;;
        *) echo 4096 ;;
    esac
}

# Writes hex strings (spaces allowed) as files into directory $1.
write_seeds() {
    local dir=$1
    shift
    mkdir -p "$dir"
    local i=0 hex
    for hex in "$@"; do
        hex=${hex// /}
        if [ $((${#hex} % 2)) -ne 0 ]; then
            echo "seed for $dir has an odd number of hex digits: $hex" >&2
            exit 2
        fi
        printf "$(sed 's/../\\x&/g' <<<"$hex")" >"$dir/seed-$i"
        i=$((i + 1))
    done
}

# A MoldUDP64 data packet: session ABC, sequence 0x1_0000_0102, messages "hi", "", "xyz".
PACKET="4142432020202020202000000001000001020003 00026869 0000 000378797a"
HEARTBEAT="41424320202020202020 0000000000000007 0000"
END_OF_SESSION="41424320202020202020 000000000000002a ffff"
REREQUEST="41424320202020202020 0000000000000102 0304"

# Ethernet frames: 10.0.0.1:1234 -> 239.1.2.3:5000 and [fd00::1]:1234 -> [ff15::1:2]:5000,
# payload "abcd" (the hand-written frames of dataplane/src/wire/frame.rs's tests).
FRAME_V4="01005e010203 020000000001 0800 45000020 00004000 40113fc8 0a000001 ef010203 04d21388 000c27b0 61626364"
FRAME_V6="333300010002 020000000001 86dd 60000000 000c1140 fd000000000000000000000000000001 ff150000000000000000000000010002 04d21388 000c269b 61626364"

seeds() {
    local dir=$1 target=$2
    case "$target" in
        moldudp64_parse) write_seeds "$dir" "$PACKET" "$HEARTBEAT" "$END_OF_SESSION" \
            "41424320202020202020 0000000000000001 0001 0000" ;;
        # Two frames; the first behind a VLAN tag and padded to 60 bytes; and a recipe
        # (see the target's docs) for an IPv6 frame with a tag and a MoldUDP64 payload.
        frame_parse) write_seeds "$dir" "$FRAME_V4" "$FRAME_V6" \
            "01005e010203 020000000001 8100 002a 0800 45000020 00004000 40113fc8 0a000001 ef010203 04d21388 000c27b0 61626364 $(printf '00%.0s' {1..10})" \
            "03 333300010002 020000000001 fd000000000000000000000000000001 ff150000000000000000000000010002 04d2 1388 40 00 001f $PACKET 0030 01" ;;
        moldudp64_request) write_seeds "$dir" "$REREQUEST" "$PACKET" \
            "41424320202020202020 fffffffffffffff0 0010" ;;
        # The op layout is in the target's docs: synthesized packets with a gap, a raw
        # packet, a heartbeat, a timeout, an end of session; a reorder window with a GRO
        # batch; a configured session and another one.
        receive_state) write_seeds "$dir" \
            "00  02 02 04 00 0001  02 02 04 00 0005  00 001f $PACKET  02 00 00 00 0010  04 0100  02 7f 00 00 0012" \
            "30 0400  02 01 00 00 0001  02 01 00 00 0005  02 01 00 00 0003  03 02 01 03 00 0007 00 0009 00 000b  04 0800  02 7f 00 00 000d" \
            "05 01  02 01 00 01 0100  02 01 00 00 0200  02 00 00 01 0110" ;;
        # Mode byte, then a stream (Refuse "full", Heartbeat), a Join body, an Admit body,
        # or the fields of a Join to encode.
        rooted_decode) write_seeds "$dir" \
            "00 0000000801030004 66756c6c 0000000201 06" \
            "40 01 0102047f0000011388 0006 6c6561662d31" \
            "40 02 41424320202020202020 00000bb8 0000000000000001 01 047f0000011388 00" \
            "80 00 00 01 01 01" ;;
        # Side byte, then frames: a Join and a made-up Proof to a keyed root; a Challenge
        # and a made-up RootProof to a keyed leaf.
        auth_exchange) write_seeds "$dir" \
            "00 0000001101010102040a0000022328000466757a7a 0000004201 09$(printf '01%.0s' {1..32})$(printf '02%.0s' {1..32})" \
            "01 0000002201 08$(printf '09%.0s' {1..32}) 0000002201 0a$(printf '03%.0s' {1..32})" ;;
        # A store of 33 messages in 4 KiB, 248-byte datagrams, small buckets, 8 addresses;
        # then ten messages offered, a flush, requests from two sources (the second a few
        # ms later), one as raw bytes, and a run of quick ones that empties a bucket.
        rerequest_server) write_seeds "$dir" \
            "20 1000 00e2 04 0010 0400 0100 07  00 0a 05 00 10 20 03 07 00 30 01 02  03  01 00 00 0002 0005  6d 05 00 01 0001 0003  02 14 46555a5a534552564552 0000000000000001 0001 $(printf '01 00 00 0000 0001 %.0s' {1..8})" ;;
        *) write_seeds "$dir" "00" ;;
    esac
}

# Whether target $1 is among the targets asked for ($2...; none: every target).
wanted() {
    local target=$1
    shift
    [ $# -eq 0 ] && return 0
    local t
    for t in "$@"; do [ "$t" = "$target" ] && return 0; done
    return 1
}

failed=0
summary=()
for fuzz_dir in "${FUZZ_DIRS[@]}"; do
    for target in $(cd "$fuzz_dir" && cargo fuzz list); do
        wanted "$target" "$@" || continue
        dir="$root/$fuzz_dir"
        build=(--fuzz-dir "$dir" --target-dir "$dir/target/$SANITIZER" -O -a -s "$SANITIZER")
        corpus="$dir/corpus/$target"
        seed_dir="$dir/corpus/seeds-$target"
        artifacts="$dir/artifacts/$target"
        mkdir -p "$corpus" "$artifacts"
        rm -rf "$seed_dir"
        seeds "$seed_dir" "$target"

        echo "== $fuzz_dir $target: building (sanitizer $SANITIZER)" >&2
        nice -n 10 cargo fuzz build "${build[@]}" "$target"

        before=$(find "$artifacts" -maxdepth 1 -type f \
            \( -name 'crash-*' -o -name 'timeout-*' -o -name 'oom-*' -o -name 'leak-*' \) | wc -l)
        logs="$artifacts/last-run"
        rm -rf "$logs"
        mkdir -p "$logs"
        echo "== $fuzz_dir $target: $RUNS executions (log in $logs)" >&2
        start=$(date +%s)
        # -jobs=1 runs the fuzzer as one child process logging to fuzz-0.log in the
        # current directory, hence the cd.
        set +e
        (cd "$logs" && nice -n 10 cargo fuzz run "${build[@]}" "$target" "$corpus" "$seed_dir" \
            -- -runs="$RUNS" -jobs=1 -workers=1 -timeout=10 -max_len="$(max_len "$target")" >"$logs/cargo-fuzz.log" 2>&1)
        rc=$?
        set -e
        seconds=$(($(date +%s) - start))
        log="$logs/fuzz-0.log"
        [ -f "$log" ] || log="$logs/cargo-fuzz.log"
        done_runs=$(grep -o 'Done [0-9]* runs' "$log" | tail -1 | awk '{print $2}' || true)
        after=$(find "$artifacts" -maxdepth 1 -type f \
            \( -name 'crash-*' -o -name 'timeout-*' -o -name 'oom-*' -o -name 'leak-*' \) | wc -l)
        if [ "$rc" -eq 0 ] && [ "$after" -eq "$before" ] && [ "${done_runs:-0}" -ge "$RUNS" ] \
            && ! grep -qE 'ERROR: libFuzzer|panicked at|deadly signal' "$log"; then
            verdict="no crash"
        else
            verdict="CRASH or incomplete (exit $rc; see $log and $artifacts)"
            failed=1
        fi
        line=$(printf '%-18s %12s executions %6ss  %s' "$target" "${done_runs:-0}" "$seconds" "$verdict")
        echo "$line"
        summary+=("$line")
    done
done

echo "== summary ($(date -u +%Y-%m-%d), $RUNS executions asked per target)"
printf '%s\n' "${summary[@]}"
exit "$failed"
