#!/usr/bin/env bash
# Ingest and export benchmark for issue 3, all tools side by side in one run:
#   vwnet image add, cp+sync (same filesystem), b3sum, chunk_file alone, vwnet image export, cp.
#
# usage: chunker/benches/ingest.sh [WORKDIR]
#   WORKDIR   where the input, the copies and the store go (default: a new dir under /var/tmp);
#             it must be on the filesystem you want to measure.
# env:
#   ROUNDS=3        rounds; each tool runs once per round, interleaved; the table shows medians
#   SIZE_MIB=1024   input size (seeded random bytes: nothing dedups, nothing is zero)
#   IMAGE=path      use this file instead of generating one (e.g. an ext4 image from mkimages)
#   VWNET=path      a vwnet binary to use instead of building the workspace's (release)
#   BIG_GIB=0       if > 0, also ingest and export an image of this many GiB once, for peak RSS
#   THREADS=nproc   chunk_file threads for the chunk-only row
#   CHUNK_ONLY=1    skip the vwnet rows (chunking vs b3sum vs cp+sync only)
# needs: /usr/bin/time (Debian package `time`), b3sum (Debian package `b3sum`), python3.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
WORK=${1:-$(mktemp -d /var/tmp/vwnet-bench.XXXXXX)}
ROUNDS=${ROUNDS:-3}
SIZE_MIB=${SIZE_MIB:-1024}
BIG_GIB=${BIG_GIB:-0}
THREADS=${THREADS:-$(nproc)}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
mkdir -p "$WORK"
for tool in /usr/bin/time b3sum python3; do
    command -v "$tool" >/dev/null || { echo "missing $tool (apt-get install time b3sum python3)" >&2; exit 1; }
done

echo "building (release)..." >&2
(cd "$ROOT" && CARGO_TARGET_DIR=$TARGET cargo build -q --release -p vwnet-chunker --example cdc_stats)
CDC=$TARGET/release/examples/cdc_stats
CHUNK_ONLY=${CHUNK_ONLY:-0}
if [[ "$CHUNK_ONLY" == 1 ]]; then
    VWNET=
elif [[ -z "${VWNET:-}" ]]; then
    (cd "$ROOT" && CARGO_TARGET_DIR=$TARGET cargo build -q --release -p vwnet --bin vwnet)
    VWNET=$TARGET/release/vwnet
fi

IN=${IMAGE:-$WORK/input.img}
if [[ -z "${IMAGE:-}" && ! -f "$IN" ]]; then
    echo "writing $SIZE_MIB MiB of random input..." >&2
    head -c $((SIZE_MIB << 20)) /dev/urandom >"$IN"
fi
BYTES=$(stat -c %s "$IN")
RESULTS=$WORK/results.tsv
: >"$RESULTS"

# measure NAME CMD...: runs CMD under /usr/bin/time, appends "NAME seconds maxrss_kib" to RESULTS.
measure() {
    local name=$1
    shift
    /usr/bin/time -f "%e %M" -o "$WORK/time.out" "$@" >"$WORK/cmd.out" 2>"$WORK/cmd.err" || {
        echo "$name failed:" >&2
        cat "$WORK/cmd.err" >&2
        return 1
    }
    echo "$name $(cat "$WORK/time.out")" >>"$RESULTS"
}

# Outputs are deleted (and the deletion synced) outside the timed region, so that no run pays for
# the previous one's writeback or discard.
clean() {
    rm -rf "$WORK/home" "$WORK/copy.img" "$WORK/export.img" "$WORK/export-cp.img"
    sync
}

for round in $(seq "$ROUNDS"); do
    echo "round $round/$ROUNDS" >&2
    cat "$IN" >/dev/null # from the page cache, as the issue asks
    clean
    measure "cp+sync" sh -c "cp '$IN' '$WORK/copy.img' && sync"
    clean
    if [[ -n "$VWNET" ]]; then
        measure "vwnet image add (+sync)" sh -c "'$VWNET' --home '$WORK/home' --json image add '$IN' && sync"
        ID=$(grep -oE '[0-9a-f]{64}' "$WORK/cmd.out" | head -n 1)
        sync
    fi
    measure "b3sum (all cores)" b3sum "$IN"
    measure "b3sum --num-threads 1" b3sum --num-threads 1 "$IN"
    measure "chunk_file only ($THREADS threads)" "$CDC" --threads "$THREADS" "$IN"
    if [[ -n "$VWNET" ]]; then
        measure "vwnet image export (+sync)" sh -c "'$VWNET' --home '$WORK/home' image export '$ID' -o '$WORK/export.img' && sync"
        cmp -s "$IN" "$WORK/export.img" || { echo "export differs from the input!" >&2; exit 1; }
        rm -f "$WORK/copy.img"
        sync
        measure "cp (+sync), export's baseline" sh -c "cp '$IN' '$WORK/export-cp.img' && sync"
    fi
done

if ((BIG_GIB > 0)) && [[ -n "$VWNET" ]]; then
    echo "peak RSS with a $BIG_GIB GiB image..." >&2
    BIG=$WORK/big.img
    [[ -f "$BIG" ]] || head -c $((BIG_GIB << 30)) /dev/urandom >"$BIG"
    clean
    measure "vwnet image add ${BIG_GIB} GiB (+sync)" sh -c "'$VWNET' --home '$WORK/home' --json image add '$BIG' && sync"
    ID=$(grep -oE '[0-9a-f]{64}' "$WORK/cmd.out" | head -n 1)
    measure "vwnet image export ${BIG_GIB} GiB (+sync)" sh -c "'$VWNET' --home '$WORK/home' image export '$ID' -o '$WORK/export.img' && sync"
    clean
fi

python3 - "$RESULTS" "$BYTES" <<'EOF'
import statistics, sys
rows, size = {}, int(sys.argv[2])
for line in open(sys.argv[1]):
    *name, secs, rss = line.split()
    rows.setdefault(" ".join(name), []).append((float(secs), int(rss)))
base = statistics.median(s for s, _ in rows["cp+sync"])
print(f"input: {size / 2**20:.0f} MiB; median of {len(rows['cp+sync'])} rounds; ratio = cp+sync time / tool time")
print()
print("| tool | seconds | MB/s | vs cp+sync | peak RSS MiB |")
print("|---|---:|---:|---:|---:|")
for name, runs in rows.items():
    secs = statistics.median(s for s, _ in runs)
    rss = max(r for _, r in runs) / 1024
    big = name.split(" GiB")[0].split()[-1] if " GiB" in name else None
    nbytes = int(big) << 30 if big else size
    ratio = f"{base / secs:.2f}" if not big else "-"
    print(f"| {name} | {secs:.2f} | {nbytes / secs / 1e6:.0f} | {ratio} | {rss:.0f} |")
EOF
