#!/usr/bin/env bash
# Benchmark (not a test): single-peer pull of an image over loopback, side by side with curl
# fetching the same bytes from a static HTTP server on loopback, plus the peak RSS of the
# serving and the pulling node.
#
#   cargo build --release -p vwnet
#   node/benches/pull_vs_curl.sh [SIZE_MIB] [path/to/vwnet]
#
# Prints a Markdown table. Everything runs on 127.0.0.1 with mDNS off.
set -euo pipefail

SIZE_MIB=${1:-1024}
VWNET=${2:-target/release/vwnet}
VWNET=$(realpath "$VWNET")
DIR=$(mktemp -d /tmp/vwnet-bench.XXXXXX)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$DIR"
}
trap cleanup EXIT

wait_for() { # wait_for SECONDS COMMAND...: poll until COMMAND succeeds
    local deadline=$((SECONDS + $1)); shift
    until "$@" >/dev/null 2>&1; do
        if ((SECONDS > deadline)); then echo "timed out: $*" >&2; exit 1; fi
        sleep 0.1
    done
}

start_node() { # start_node NAME EXTRA...
    local name=$1; shift
    mkdir -p "$DIR/$name"
    RUST_LOG=warn "$VWNET" --home "$DIR/$name" node run --listen /ip4/127.0.0.1/tcp/0 --no-mdns "$@" \
        2>"$DIR/$name.log" &
    PIDS+=($!)
    eval "PID_$name=$!"
    wait_for 30 "$VWNET" --home "$DIR/$name" node status
}

addr_of() {
    "$VWNET" --home "$DIR/$1" --json node status |
        python3 -c 'import json,sys; s=json.load(sys.stdin); print([a for a in s["listen"] if "/tcp/" in a][0]+"/p2p/"+s["peer_id"])'
}

peak_rss_mib() { awk '/VmHWM/ {printf "%.0f", $2/1024}' "/proc/$1/status"; }

echo "generating a ${SIZE_MIB} MiB image..." >&2
head -c "$((SIZE_MIB * 1024 * 1024))" /dev/urandom >"$DIR/image.raw"

start_node seed
"$VWNET" --home "$DIR/seed" key new >/dev/null
"$VWNET" --home "$DIR/seed" desc new -o "$DIR/desc.toml" 2>/dev/null
echo "publishing (ingest)..." >&2
WS=$("$VWNET" --home "$DIR/seed" --json publish --desc "$DIR/desc.toml" --image "$DIR/image.raw" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["workspace"])')

start_node puller --bootstrap "$(addr_of seed)"
wait_for 30 bash -c "'$VWNET' --home '$DIR/puller' --json ls --remote | grep -q $WS"

cpu_of_nodes() { awk '{print ($14+$15)/100}' "/proc/$PID_seed/stat" "/proc/$PID_puller/stat" | paste -sd+ | bc -l; }
CPU0=$(cpu_of_nodes)
echo "pulling..." >&2
START=$(date +%s.%N)
"$VWNET" --home "$DIR/puller" --json pull "$WS" >"$DIR/pull.json"
END=$(date +%s.%N)
PULL_S=$(echo "$END - $START" | bc -l)
CPU_S=$(echo "$(cpu_of_nodes) - $CPU0" | bc -l)

python3 -m http.server --bind 127.0.0.1 --directory "$DIR" 18731 >/dev/null 2>&1 &
PIDS+=($!)
wait_for 10 curl -sf -o /dev/null http://127.0.0.1:18731/desc.toml
CURL_S=$(curl -s -o /dev/null -w '%{time_total}' http://127.0.0.1:18731/image.raw)
# The same download kept on disk as a pull keeps it: written to a file and flushed.
START=$(date +%s.%N)
curl -s -o "$DIR/curl.raw" http://127.0.0.1:18731/image.raw
sync -f "$DIR/curl.raw"
END=$(date +%s.%N)
CURL_FILE_S=$(echo "$END - $START" | bc -l)

MIB=$SIZE_MIB
printf '| transfer (%s MiB, loopback) | seconds | MiB/s |\n|---|---|---|\n' "$MIB"
printf '| vwnet pull, 1 peer | %.2f | %.0f |\n' "$PULL_S" "$(echo "$MIB / $PULL_S" | bc -l)"
printf '| curl from python http.server to /dev/null | %.2f | %.0f |\n' "$CURL_S" "$(echo "$MIB / $CURL_S" | bc -l)"
printf '| curl from python http.server to a file, then sync | %.2f | %.0f |\n' "$CURL_FILE_S" "$(echo "$MIB / $CURL_FILE_S" | bc -l)"
printf '\nratio vwnet/curl throughput: %.2f (to /dev/null), %.2f (to a synced file)\n' \
    "$(echo "$CURL_S / $PULL_S" | bc -l)" "$(echo "$CURL_FILE_S / $PULL_S" | bc -l)"
printf 'CPU (user+sys) of both nodes during the pull: %.2f s (%.2f CPU-s per GiB)\n' "$CPU_S" "$(echo "$CPU_S * 1024 / $MIB" | bc -l)"
printf 'peak RSS: seed %s MiB, puller %s MiB\n' "$(peak_rss_mib "$PID_seed")" "$(peak_rss_mib "$PID_puller")"
