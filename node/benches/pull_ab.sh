#!/usr/bin/env bash
# Benchmark (not a test): the same single-peer loopback pull with two `vwnet` builds, A and B,
# alternated round by round in one run, so that a change is measured against its baseline under
# the same machine load. Reports per round: wall seconds, MiB/s, CPU seconds (user + sys) of the
# serving and the pulling node per GiB pulled, and both nodes' peak RSS.
#
#   node/benches/pull_ab.sh SIZE_MIB VWNET_A VWNET_B [ROUNDS]
#
# e.g. build the baseline from a worktree of the old commit, copy its target/release/vwnet aside,
# then build the change. Everything runs on 127.0.0.1 with mDNS off, homes under $TMPDIR.
set -euo pipefail

SIZE_MIB=${1:?size in MiB}
BINS=("$(realpath "${2:?vwnet A}")" "$(realpath "${3:?vwnet B}")")
ROUNDS=${4:-3}
DIR=$(mktemp -d "${TMPDIR:-/tmp}/vwnet-ab.XXXXXX")
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$DIR"
}
trap cleanup EXIT

wait_for() { # wait_for SECONDS COMMAND...
    local deadline=$((SECONDS + $1)); shift
    until "$@" >/dev/null 2>&1; do
        if ((SECONDS > deadline)); then echo "timed out: $*" >&2; exit 1; fi
        sleep 0.1
    done
}
cpu_s() { awk '{print ($14+$15)/100}' "/proc/$1/stat"; }
peak_rss_mib() { awk '/VmHWM/ {printf "%.0f", $2/1024}' "/proc/$1/status"; }

head -c "$((SIZE_MIB << 20))" /dev/urandom >"$DIR/image.raw"

one_round() { # one_round LABEL VWNET
    local label=$1 vwnet=$2 run="$DIR/run"
    rm -rf "$run"; mkdir -p "$run/seed" "$run/puller"
    RUST_LOG=warn "$vwnet" --home "$run/seed" node run --listen /ip4/127.0.0.1/tcp/0 --no-mdns \
        2>"$run/seed.log" &
    local seed=$!; PIDS+=("$seed")
    wait_for 30 "$vwnet" --home "$run/seed" node status
    "$vwnet" --home "$run/seed" key new >/dev/null
    "$vwnet" --home "$run/seed" desc new -o "$run/desc.toml" 2>/dev/null
    local ws addr
    ws=$("$vwnet" --home "$run/seed" --json publish --desc "$run/desc.toml" --image "$DIR/image.raw" |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["workspace"])')
    addr=$("$vwnet" --home "$run/seed" --json node status | python3 -c \
        'import json,sys; s=json.load(sys.stdin); print([a for a in s["listen"] if "/tcp/" in a][0]+"/p2p/"+s["peer_id"])')
    RUST_LOG=warn "$vwnet" --home "$run/puller" node run --listen /ip4/127.0.0.1/tcp/0 --no-mdns \
        --bootstrap "$addr" 2>"$run/puller.log" &
    local puller=$!; PIDS+=("$puller")
    wait_for 30 bash -c "'$vwnet' --home '$run/puller' --json ls --remote | grep -q $ws"
    sync
    local c0s c0p start end
    c0s=$(cpu_s "$seed"); c0p=$(cpu_s "$puller")
    start=$(date +%s.%N)
    "$vwnet" --home "$run/puller" --json pull "$ws" >/dev/null
    end=$(date +%s.%N)
    python3 -c "
s=$end-$start; mib=$SIZE_MIB; gib=mib/1024
seed=$(cpu_s "$seed")-$c0s; pull=$(cpu_s "$puller")-$c0p
print(f'| $label | {s:.2f} | {mib/s:.0f} | {seed/gib:.2f} | {pull/gib:.2f} | {(seed+pull)/gib:.2f} | $(peak_rss_mib "$seed") | $(peak_rss_mib "$puller") |')"
    kill "$seed" "$puller"; wait "$seed" "$puller" 2>/dev/null || true
}

echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "| build | seconds | MiB/s | seed CPU-s/GiB | puller CPU-s/GiB | total CPU-s/GiB | seed RSS MiB | puller RSS MiB |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|"
for ((r = 1; r <= ROUNDS; r++)); do
    one_round "A (round $r)" "${BINS[0]}"
    one_round "B (round $r)" "${BINS[1]}"
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
