#!/usr/bin/env bash
# Workspace manager benchmark (not a test): prints a Markdown table.
#   1. deploy of a cached workspace (every chunk already in the node's store), on the embedded
#      test:///default hypervisor and on real QEMU (define only: pull check + materialise + define);
#   2. cold start vs hot restore on real QEMU: deploy+start of a cold image against deploy
#      (restore, paused)+unpause of the hot image saved from it;
#   3. migration of a paused 128 MiB-RAM workspace between two nodes on this machine
#      (save, publish, undeploy, remote deploy + resume), with the bytes that moved.
#
# Usage: node/benches/deploy.sh [RUNS]      (default 3 runs per row; median shown)
# Needs root and libvirtd for the QEMU rows (scripts/setup-libvirtd.sh start); without them only
# the test:///default row is measured. VWNET_BIN picks the binary (default: a release build).
set -euo pipefail
cd "$(dirname "$0")/../.."

RUNS="${1:-3}"
QEMU=qemu:///system
if [[ -z "${VWNET_BIN:-}" ]]; then
    cargo build --release -q -p vwnet
    VWNET_BIN="${CARGO_TARGET_DIR:-target}/release/vwnet"
fi
BIN="$VWNET_BIN"
WORK="$(mktemp -d /var/tmp/vwnet-deploy-bench.XXXXXX)"
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    if virsh -c "$QEMU" list --all --name >/dev/null 2>&1; then
        for d in $(virsh -c "$QEMU" list --all --name | grep '^vwnet-' || true); do
            if [[ -n "${BENCH_WS:-}" && "$d" == vwnet-"${BENCH_WS:0:8}"-* ]]; then
                virsh -c "$QEMU" destroy "$d" >/dev/null 2>&1 || true
                virsh -c "$QEMU" undefine "$d" >/dev/null 2>&1 || true
            fi
        done
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

v() { "$BIN" --home "$1" --json "${@:2}"; }
now_ms() { date +%s%3N; }
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : int((a[NR/2]+a[NR/2+1])/2))}'; }

# start_node NAME HYPERVISOR [EXTRA...]: starts a node, waits until it answers.
start_node() {
    local home="$WORK/$1" uri="$2"
    shift 2
    mkdir -p "$home"
    "$BIN" --home "$home" node run --listen /ip4/127.0.0.1/tcp/0 --no-mdns --hypervisor "$uri" "$@" \
        2>"$WORK/$(basename "$home").log" &
    PIDS+=($!)
    for _ in $(seq 200); do
        v "$home" node status >/dev/null 2>&1 && return 0
        sleep 0.05
    done
    echo "node $home did not start" >&2
    exit 1
}
addr() {
    v "$1" node status | jq -r '(.listen[] | select(contains("/tcp/"))) + "/p2p/" + .peer_id' | head -1
}

# new_workspace HOME NAME: a 128 MiB / 1 vCPU / raw 64 MiB (8 MiB data) workspace; prints its id.
new_workspace() {
    local home="$1" name="$2"
    [[ -f "$home/identity.key" ]] || v "$home" key new >/dev/null
    v "$home" desc new -o "$home/$name.toml" >/dev/null
    sed -i -e "s/\"my-workspace\"/\"$name\"/" -e 's/min = 512/min = 128/' -e 's/max = 2048/max = 128/' \
        -e 's/type = "qcow2"/type = "raw"/' -e 's/access = "copy-on-write"/access = "read-write"/' \
        "$home/$name.toml"
    sed -i -e '/^\[hardware.vcpus\]/,/^max/ s/^max = 2/max = 1/' "$home/$name.toml"
    head -c $((8 << 20)) /dev/urandom >"$WORK/$name.raw"
    truncate -s 64M "$WORK/$name.raw"
    v "$home" publish --desc "$home/$name.toml" --image "$WORK/$name.raw" | jq -r .workspace
}

ROWS=()
row() { ROWS+=("| $1 | $2 | $3 |"); }

# 1. Cached deploy on the test driver.
start_node t test:///default
WS=$(new_workspace "$WORK/t" cached)
ms=()
for _ in $(seq "$RUNS"); do
    ms+=("$(v "$WORK/t" deploy "$WS" | jq .total_millis)")
    v "$WORK/t" undeploy "$WS" >/dev/null
done
row "deploy, cached 64 MiB image (test:///default)" "$(printf '%s\n' "${ms[@]}" | median) ms" \
    "pull check + sparse materialise + define; median of $RUNS"

if virsh -c "$QEMU" uri >/dev/null 2>&1; then
    start_node a "$QEMU"
    start_node b "$QEMU" --bootstrap "$(addr "$WORK/a")"
    WS=$(new_workspace "$WORK/a" bench)
    BENCH_WS=$WS
    # The owner signs each next version wherever the workspace leaves from (migrating back).
    cp "$WORK/a/identity.key" "$WORK/b/identity.key"
    ms=()
    cold=()
    hot=()
    for _ in $(seq "$RUNS"); do
        t0=$(now_ms)
        ms+=("$(v "$WORK/a" deploy "$WS" | jq .total_millis)")
        v "$WORK/a" start "$WS" >/dev/null
        cold+=($(($(now_ms) - t0)))
        v "$WORK/a" save "$WS" >/dev/null
        v "$WORK/a" undeploy "$WS" --publish >/dev/null
        t0=$(now_ms)
        v "$WORK/a" deploy "$WS" >/dev/null
        v "$WORK/a" unpause "$WS" >/dev/null
        hot+=($(($(now_ms) - t0)))
        v "$WORK/a" stop "$WS" --force >/dev/null
        v "$WORK/a" undeploy "$WS" --publish >/dev/null
    done
    row "deploy, cached 64 MiB image (qemu:///system)" "$(printf '%s\n' "${ms[@]}" | median) ms" \
        "median of $RUNS"
    row "cold: deploy + start (QEMU/KVM, 128 MiB)" "$(printf '%s\n' "${cold[@]}" | median) ms" \
        "wall clock of the two CLI calls"
    row "hot: deploy (restore) + unpause (QEMU/KVM)" "$(printf '%s\n' "${hot[@]}" | median) ms" \
        "wall clock; memory state pulled from the local store"

    # 3. Migration of a paused workspace A -> B (B has never held it).
    v "$WORK/a" deploy "$WS" >/dev/null
    v "$WORK/a" start "$WS" >/dev/null
    v "$WORK/a" pause "$WS" >/dev/null
    for _ in $(seq 200); do
        v "$WORK/b" ls --remote | jq -e --arg ws "$WS" 'any(.[]; .workspace == $ws)' >/dev/null && break
        sleep 0.1
    done
    M=$(v "$WORK/a" migrate "$WS" --to "$(v "$WORK/b" node status | jq -r .peer_id)")
    row "migrate paused 128 MiB workspace A→B (B held nothing)" "$(jq .total_millis <<<"$M") ms" \
        "moved $(jq .bytes_moved <<<"$M") B; save $(jq .save_millis <<<"$M") ms, publish $(jq .publish_millis <<<"$M") ms, remote deploy+resume $(jq .remote_deploy_millis <<<"$M") ms"
    # And back: A still holds every chunk but the new memory state.
    v "$WORK/b" pause "$WS" >/dev/null
    M=$(v "$WORK/b" migrate "$WS" --to "$(v "$WORK/a" node status | jq -r .peer_id)")
    row "migrate back B→A (A held the disk)" "$(jq .total_millis <<<"$M") ms" \
        "moved $(jq .bytes_moved <<<"$M") B ($(jq .bytes_local <<<"$M") B already there); remote deploy+resume $(jq .remote_deploy_millis <<<"$M") ms"
    v "$WORK/a" stop "$WS" --force >/dev/null
    v "$WORK/a" undeploy "$WS" >/dev/null
else
    echo "qemu:///system not reachable: QEMU rows skipped (run scripts/setup-libvirtd.sh start)" >&2
fi

echo "| step | time | notes |"
echo "|---|---:|---|"
printf '%s\n' "${ROWS[@]}"
