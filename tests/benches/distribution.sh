#!/usr/bin/env bash
# Distribution benchmark on the netns testbed (needs root): one image of S bytes published on one
# host and fetched concurrently by N hosts, each host link shaped to B; vwnet side by side with a
# central HTTP server (every host curls the whole file from the publisher) and, for an update,
# rsync from the publisher. Prints a Markdown table (paste it into README.md) and keeps the raw
# JSON of every run.
#
#   sudo tests/benches/distribution.sh            # S = 256 MiB, about half an hour
#   SIZE_MIB=64 sudo tests/benches/distribution.sh   # a quicker, smaller run
#
# Scenarios (topologies in tests/benches/topologies/):
#   star-N     N = 4, 8, 16 pullers + the publisher, B = 100 Mbit/s: vwnet vs HTTP
#   two-sites  8 + 8 hosts, 50 Mbit/s WAN: vwnet, bytes over the WAN vs S
#   update     star-8, v2 differs from v1 in 2% of bytes (256 KiB runs): vwnet vs rsync
set -euo pipefail
cd "$(dirname "$0")/../.."

SIZE_MIB=${SIZE_MIB:-256}
RATE_MBIT=100
WAN_MBIT=50
TOPO=tests/benches/topologies
TARGET=${CARGO_TARGET_DIR:-target}
OUT=${OUT:-$(mktemp -d /tmp/vwnet-distribution-XXXXXX)}
mkdir -p "$OUT"

if ((EUID != 0)); then
    echo "distribution.sh: needs root (network namespaces, tc)" >&2
    exit 1
fi
command -v rsync >/dev/null || { echo "distribution.sh: rsync missing (scripts/install-deps.sh)" >&2; exit 1; }

# NO_BUILD=1 with VWNET_BIN / VWNET_TESTBED: use binaries built earlier (vwnet must be release).
if [[ -z ${NO_BUILD:-} ]]; then
    cargo build --release --locked -p vwnet -p vwnet-tests --bin vwnet --bin vwnet-testbed >&2
fi
TB=${VWNET_TESTBED:-$TARGET/release/vwnet-testbed}
VW=${VWNET_BIN:-$TARGET/release/vwnet}
"$TB" cleanup >&2

bench() {
    local name=$1
    shift
    echo "== $name" >&2
    "$TB" --json bench "$@" --size-mib "$SIZE_MIB" --vwnet "$VW" >"$OUT/$name.json"
}

# The headline scenario first, so that an interrupted run still has it.
bench vwnet-16 "$TOPO/star-16.toml" --strategy vwnet
bench http-16 "$TOPO/star-16.toml" --strategy http
bench vwnet-two-sites "$TOPO/two-sites.toml" --strategy vwnet
bench vwnet-update "$TOPO/star-8.toml" --strategy vwnet --update-pct 2
bench rsync-update "$TOPO/star-8.toml" --strategy rsync --update-pct 2
for n in 8 4; do
    bench "vwnet-$n" "$TOPO/star-$n.toml" --strategy vwnet
    bench "http-$n" "$TOPO/star-$n.toml" --strategy http
done

echo "raw results: $OUT" >&2
python3 - "$OUT" "$SIZE_MIB" "$RATE_MBIT" "$WAN_MBIT" <<'EOF'
import json, os, platform, sys, datetime

out, size_mib, rate_mbit, wan_mbit = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
def r(name):
    try:
        return json.load(open(os.path.join(out, name + ".json")))
    except (OSError, ValueError):
        return None
S = size_mib * 2**20
chunk = 64 * 1024  # average chunk: one chunk of pipeline delay
limit = lambda bps: (S + chunk) * 8 / bps
secs = lambda x: f"{x['wall_secs']:.1f} s" if x else "not run"
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
print(f"Measured {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC} on {cpu}, "
      f"{os.cpu_count()} cores, Linux {platform.release()}; S = {size_mib} MiB, "
      f"B = {rate_mbit} Mbit/s per host link; release build.")
first = next((x for x in map(r, ["vwnet-16", "vwnet-two-sites", "vwnet-8", "vwnet-4"]) if x), None)
if first and not first["delay_emulated"]:
    print("Link delays were not emulated (this kernel has no sch_netem); rates were.")
print()
print("| scenario | physical limit | vwnet | central HTTP | vwnet / limit | HTTP / vwnet |")
print("|---|---|---|---|---|---|")
for n in (4, 8, 16):
    v, h = r(f"vwnet-{n}"), r(f"http-{n}")
    lim = limit(rate_mbit * 1e6)
    ratio = f"{v['wall_secs'] / lim:.2f}" if v else "-"
    vs = f"{h['wall_secs'] / v['wall_secs']:.1f}" if v and h else "-"
    print(f"| N = {n} | {lim:.1f} s | {secs(v)} | {secs(h)} | {ratio} | {vs} |")
t = r("vwnet-two-sites")
lim = max(limit(rate_mbit * 1e6), limit(wan_mbit * 1e6))
if t:
    wan = sum(t["wan_bytes"].values())
    print(f"| two sites, 8 + 8 | {lim:.1f} s (WAN) | {secs(t)} | - | {t['wall_secs'] / lim:.2f} | - |")
    print()
    print(f"Two sites: {wan / 2**20:.0f} MiB crossed the WAN = {wan / S:.2f} x S (target <= 1.2).")
print()
u, s = r("vwnet-update"), r("rsync-update")
if u and s:
    print("| 2% update, 8 hosts | bytes on the wire | all done | publish v2 (before) |")
    print("|---|---|---|---|")
    print(f"| vwnet | {u['network_bytes'] / 2**20:.1f} MiB | {u['wall_secs']:.1f} s "
          f"| {u['publish_secs']:.1f} s |")
    print(f"| rsync | {s['network_bytes'] / 2**20:.1f} MiB | {s['wall_secs']:.1f} s | - |")
    print()
    print(f"Update: vwnet moves {u['network_bytes'] / s['network_bytes']:.2f} x rsync's bytes "
          f"(target <= 1.5) in {u['wall_secs'] / s['wall_secs']:.2f} x its time (target < 1).")
EOF
