#!/usr/bin/env bash
# Benchmark (not a test, needs root): one testbed distribution with two `vwnet` builds, A and B,
# alternated round by round in one run, so that a change is measured against its baseline under
# the same machine load. Per round: seconds until every host held a verified copy, CPU seconds
# (user + sys) of the whole run (the nodes are children of the testbed; image generation,
# publishing and the final copy check are included), bytes received per host as a multiple of S,
# bytes over WAN links, and the pulls' own counters (timeouts, duplicate bytes, endgame
# requests, requests, busy refusals) summed over the hosts.
#
#   sudo tests/benches/swarm_ab.sh TOPOLOGY VWNET_A VWNET_B [ROUNDS]
#   e.g. sudo tests/benches/swarm_ab.sh tests/benches/topologies/star-16.toml /tmp/vwnet-old target/release/vwnet
#
# SIZE_MIB (default 256) sets S; EXTRA passes more `vwnet-testbed bench` flags (e.g.
# EXTRA="--update-pct 2"); VWNET_TESTBED the testbed binary (default target/release/).
set -euo pipefail
cd "$(dirname "$0")/../.."

TOPOLOGY=${1:?topology file}
BINS=("$(realpath "${2:?vwnet A}")" "$(realpath "${3:?vwnet B}")")
ROUNDS=${4:-2}
TB=${VWNET_TESTBED:-${CARGO_TARGET_DIR:-target}/release/vwnet-testbed}
OUT=$(mktemp -d "${TMPDIR:-/tmp}/vwnet-swarm-ab.XXXXXX")

if ((EUID != 0)); then
    echo "swarm_ab.sh: needs root (network namespaces, tc)" >&2
    exit 1
fi

echo "raw results: $OUT" >&2
for round in $(seq 1 "$ROUNDS"); do
    for side in 0 1; do
        name=$([[ $side == 0 ]] && echo A || echo B)$round
        load=$(cut -d' ' -f1 /proc/loadavg)
        # shellcheck disable=SC2086 # EXTRA is a list of flags
        /usr/bin/time -f "%U %S" -o "$OUT/$name.time" "$TB" --json bench "$TOPOLOGY" \
            --size-mib "${SIZE_MIB:-256}" --vwnet "${BINS[$side]}" ${EXTRA:-} \
            >"$OUT/$name.json" 2>"$OUT/$name.err"
        python3 - "$OUT/$name" "$name" "$load" <<'EOF'
import json, sys
base, name, load = sys.argv[1:]
d = json.load(open(base + ".json"))
user, sys_ = map(float, open(base + ".time").read().split()[-2:])
hosts, size = d["hosts"], d["size_bytes"]
pulls = [h["pull"]["overhead"] for h in hosts if h.get("pull")]
total = lambda key: sum(p.get(key, 0) for p in pulls)
wan = sum(d["wan_bytes"].values()) / size
print(f"{name}: {d['wall_secs']:.1f} s, {user + sys_:.0f} CPU-s, "
      f"in/host {sum(h['bytes_in'] for h in hosts) / len(hosts) / size:.3f} x S, WAN {wan:.2f} x S, "
      f"timeouts {total('timeouts')}, duplicate {total('bytes_duplicate') / 2**20:.1f} MiB, "
      f"endgame {total('endgame_requests')}, requests {total('requests')}, busy {total('busy')}; "
      f"load before {load}",
      flush=True)
EOF
    done
done
