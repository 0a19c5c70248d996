#!/usr/bin/env bash
# Dedup and chunking throughput for several FastCDC settings on generated images (issue 3).
#
# usage: chunker/benches/dedup.sh [IMAGEDIR] [test|bench]
#   Builds the images with `cargo run --release -p vwnet-tests --example mkimages` unless
#   IMAGEDIR already holds them, then prints a markdown table: for each average size (min =
#   avg/4, max = avg*4), how much of v2 is new given v1 (ext4 raw and qcow2; 1% rewritten in
#   4 KiB / 64 KiB / 1 MiB runs; 1 KiB inserted at 100 MiB), and single-thread throughput.
# env: AVGS="16384 32768 65536 131072 262144"
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
DIR=${1:-/var/tmp/vwnet-images}
SCALE=${2:-bench}
AVGS=${AVGS:-16384 32768 65536 131072 262144}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
(cd "$ROOT" && CARGO_TARGET_DIR=$TARGET cargo build -q --release -p vwnet-chunker --example cdc_stats \
    && CARGO_TARGET_DIR=$TARGET cargo build -q --release -p vwnet-tests --example mkimages)
[[ -f "$DIR/ext4-$SCALE-v2.img" ]] || "$TARGET/release/examples/mkimages" "$DIR" "$SCALE" >&2
CDC=$TARGET/release/examples/cdc_stats
OUT=$(mktemp)
for avg in $AVGS; do
    echo "avg $avg..." >&2
    {
        "$CDC" --avg "$avg" "$DIR/ext4-$SCALE-v1.img" "$DIR/ext4-$SCALE-v2.img" | tail -n 1 | sed 's/^/ext4-raw\t/'
        "$CDC" --avg "$avg" "$DIR/ext4-$SCALE-v1.qcow2" "$DIR/ext4-$SCALE-v2.qcow2" | tail -n 1 | sed 's/^/ext4-qcow2\t/'
        for v in 1pct-4k 1pct-64k 1pct-1m insert; do
            "$CDC" --avg "$avg" "$DIR/random.img" "$DIR/random-$v.img" | tail -n 1 | sed "s/^/$v\t/"
        done
        "$CDC" --avg "$avg" --threads 1 --repeat 3 "$DIR/ext4-$SCALE-v1.img" | tail -n 1 | sed 's/^/speed-ext4\t/'
        "$CDC" --avg "$avg" --threads 1 --repeat 3 "$DIR/random.img" | tail -n 1 | sed 's/^/speed-random\t/'
    } >>"$OUT"
done
python3 - "$OUT" <<'PY'
import sys
rows = {}
for line in open(sys.argv[1]):
    (kind, _file, avg, _mode, size, chunks, zero, new_chunks, seen, _pct, _dpct, mbs, mbcpu) = line.split("\t")
    rows.setdefault(int(avg), {})[kind] = dict(size=int(size), chunks=int(chunks), zero=int(zero),
        new_chunks=int(new_chunks), seen=int(seen), mbs=float(mbs), mbcpu=float(mbcpu))
def new(r):  # share of v2's bytes whose chunk v1 lacks
    return 100 * (r["size"] - r["seen"]) / r["size"]
print("| avg (min/max = avg/4, avg*4) | ext4 v2 chunks | ext4 v1→v2 new (raw) | new MB raw / qcow2 | "
      "1% in 4 KiB runs | in 64 KiB runs | in 1 MiB runs | 1 KiB insert: new chunks | "
      "1 thread MB/s (CPU) ext4 / random |")
print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for avg in sorted(rows):
    r = rows[avg]
    raw, q = r["ext4-raw"], r["ext4-qcow2"]
    print(f"| {avg // 1024} KiB | {raw['chunks']} | {new(raw):.1f}% | "
          f"{(raw['size'] - raw['seen']) / 1e6:.0f} / {(q['size'] - q['seen']) / 1e6:.0f} | "
          f"{new(r['1pct-4k']):.1f}% | {new(r['1pct-64k']):.1f}% | {new(r['1pct-1m']):.1f}% | "
          f"{r['insert']['new_chunks']} | "
          f"{r['speed-ext4']['mbcpu']:.0f} / {r['speed-random']['mbcpu']:.0f} |")
PY
rm -f "$OUT"
