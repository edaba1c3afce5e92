#!/usr/bin/env bash
# Two builds' criterion benches side by side: rounds that alternate which build goes
# first (before, after, after, before, ...), then one table of medians and ratios.
#
#   BEFORE=/path/to/other/checkout bench/ab.sh
#   BEFORE=... ROUNDS=8 BENCHES="loopback" FILTER='^loopback_32B/' bench/ab.sh
#   BEFORE=... CRITERION="--warm-up-time 2 --measurement-time 6" bench/ab.sh
#
# BEFORE is another checkout of this repository (a `git worktree add` of an older commit,
# say); "after" is this one. Both trees' bench binaries are built first (cargo bench
# --no-run, release profile), then run directly, so that no build runs between rounds.
#
# Why rounds and medians: on a shared 2-core VM one criterion run of a two-thread bench
# (publisher and shard) moves by up to 1.8x from one run to the next, far more than
# criterion's own interval says. Rounds close together in time, alternating the order,
# put both builds through the same minutes; the table gives each row's median per build,
# the ratio of the medians, and the median of the per-round ratios (after / before of the
# same round), which cancels what a slow minute does to both builds alike, with a 90%
# bootstrap interval for that median (rounds resampled with replacement, a fixed seed): a
# row whose interval reaches above 0.95 shows no loss of more than 5% that this many
# rounds can tell from the noise; one whose interval lies wholly below it does.
#
# Output: the table on stdout (markdown); every round's raw criterion output stays in
# $OUT (default a fresh directory under /tmp), with one "id elements/s" file per round
# and build. TABLE=<such a directory> bench/ab.sh prints its table again, running nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v python3 >/dev/null || { echo "python3 is needed (the table)" >&2; exit 1; }
TABLE=${TABLE:-}
if [ -n "$TABLE" ]; then
    OUT=$TABLE
    ROUNDS=$(find "$OUT" -maxdepth 1 -name 'before.*.rows' | wc -l)
    [ "$ROUNDS" -gt 0 ] || { echo "TABLE=$TABLE holds no rounds (before.N.rows)" >&2; exit 2; }
else
    BEFORE=${BEFORE:?"BEFORE=<the other checkout> (for example: git worktree add /tmp/before <commit>)"}
    ROUNDS=${ROUNDS:-4}
    BENCHES=${BENCHES:-"loopback fanout wire"}
    FILTER=${FILTER:-}
    CRITERION=${CRITERION:-"--warm-up-time 1 --measurement-time 2"}
    OUT=${OUT:-$(mktemp -d /tmp/multipoint-ab.XXXXXX)}
    [ -d "$BEFORE" ] || { echo "BEFORE=$BEFORE is not a directory" >&2; exit 2; }
    case "$ROUNDS" in '' | *[!0-9]* | 0) echo "ROUNDS is a count of rounds, not '$ROUNDS'" >&2; exit 2 ;; esac
    mkdir -p "$OUT"

    # The bench binary cargo builds for bench $2 in tree $1 (its path, on stdout).
    build() {
        local tree=$1 bench=$2 exe
        exe=$(cd "$tree" && cargo bench -p multipoint-bench --bench "$bench" --no-run 2>&1 |
            sed -n 's/.*Executable .*(\(.*\)).*/\1/p' | tail -n 1)
        [ -n "$exe" ] || { echo "no bench binary '$bench' in $tree" >&2; return 1; }
        case "$exe" in /*) echo "$exe" ;; *) echo "$tree/$exe" ;; esac
    }

    declare -A BIN
    for side in before after; do
        tree=$BEFORE
        [ "$side" = after ] && tree=$PWD
        for bench in $BENCHES; do
            if [ -f "$tree/bench/benches/$bench.rs" ]; then
                echo "building $side: $bench ($tree)" >&2
                BIN[$side.$bench]=$(build "$tree" "$bench")
            else
                echo "$side has no bench '$bench': its rows are only in the other build" >&2
            fi
        done
    done

    # Runs every bench of build $1 once, round $2: raw output and "id elements/s" rows.
    run_side() {
        local side=$1 round=$2 bench exe raw=$OUT/$1.$2.txt
        : >"$raw"
        for bench in $BENCHES; do
            exe=${BIN[$side.$bench]:-}
            [ -n "$exe" ] || continue
            echo "round $round: $side $bench" >&2
            # Each build keeps its own criterion baselines, out of both trees.
            # shellcheck disable=SC2086
            CRITERION_HOME="$OUT/criterion-$side" "$exe" --bench --noplot $CRITERION ${FILTER:+"$FILTER"} \
                >>"$raw" 2>>"$OUT/$side.$round.err"
        done
        # An id line starts in column 0; its "thrpt:" line has [low estimate high]; the
        # estimate, in elements per second. Long ids stand alone on their line.
        awk '
            /^[^ \t]/ && $1 ~ /\// { id = $1 }
            /thrpt:/ && id != "" && $0 !~ /%/ {
                sub(/.*\[/, ""); v = $3; u = $4
                m = (u ~ /^G/) ? 1e9 : (u ~ /^M/) ? 1e6 : (u ~ /^K/) ? 1e3 : 1
                printf "%s %.0f\n", id, v * m; id = ""
            }' "$raw" >"$OUT/$side.$round.rows"
    }

    for ((r = 1; r <= ROUNDS; r++)); do
        if ((r % 2)); then order="before after"; else order="after before"; fi
        for side in $order; do run_side "$side" "$r"; done
    done
fi

python3 - "$OUT" "$ROUNDS" <<'EOF'
import os, random, statistics, sys
out, rounds = sys.argv[1], int(sys.argv[2])
def rows(side, r):
    d = {}
    path = os.path.join(out, f"{side}.{r}.rows")
    if os.path.exists(path):
        for line in open(path):
            k, v = line.split()
            d[k] = float(v)
    return d
runs = {s: [rows(s, r) for r in range(1, rounds + 1)] for s in ("before", "after")}
ids = []
for s in ("before", "after"):
    for d in runs[s]:
        ids += [k for k in d if k not in ids]
def fmt(v):
    for div, unit in ((1e9, " G"), (1e6, " M"), (1e3, " k")):
        if v >= div:
            return f"{v / div:.2f}{unit}"
    return f"{v:.0f}"
print(f"criterion, {rounds} rounds (before first in odd rounds), elements per second")
print()
print("| bench | before (median) | after (median) | after / before | median of round ratios | its 90% interval | lowest round ratio | rounds |")
print("|---|---:|---:|---:|---:|---:|---:|---:|")
rng = random.Random(1)
def interval(pairs):
    meds = sorted(statistics.median(rng.choices(pairs, k=len(pairs))) for _ in range(2000))
    return meds[len(meds) // 20], meds[len(meds) - 1 - len(meds) // 20]
for k in ids:
    b = [d[k] for d in runs["before"] if k in d]
    a = [d[k] for d in runs["after"] if k in d]
    if not b or not a:
        only = "before" if b else "after"
        v = statistics.median(b or a)
        print(f"| `{k}` | {fmt(v) if b else ''} | {fmt(v) if a else ''} | (only {only}) | | | | {len(b or a)} |")
        continue
    pairs = [ra[k] / rb[k] for rb, ra in zip(runs["before"], runs["after"]) if rb.get(k) and k in ra]
    mb, ma = statistics.median(b), statistics.median(a)
    if not pairs or not mb:
        print(f"| `{k}` | {fmt(mb)} | {fmt(ma)} | | | | | 0 |")
        continue
    lo, hi = interval(pairs)
    print(f"| `{k}` | {fmt(mb)} | {fmt(ma)} | {ma / mb:.2f} | {statistics.median(pairs):.2f} | {lo:.2f}–{hi:.2f} | {min(pairs):.2f} | {len(pairs)} |")
print()
print(f"raw output: {out}")
EOF
