#!/usr/bin/env bash
# The README's main command: a walk through vwnet on the embedded defaults, in a scratch directory
# that is removed afterwards. Installs missing system packages, builds the `vwnet` binary, then
# runs each step and prints what it did and how long it took.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

./scripts/install-deps.sh
echo "== building vwnet (release)"
cargo build --release --locked -p vwnet
vwnet="${CARGO_TARGET_DIR:-$repo/target}/release/vwnet"

work=$(mktemp -d -t vwnet-demo.XXXXXX)
cleanup() { rm -rf "$work"; }
trap cleanup EXIT
cd "$work"

step() {
  local title=$1; shift
  printf '\n== %s\n$ vwnet %s\n' "$title" "$*"
  local start end
  start=$(date +%s%N)
  "$vwnet" "$@"
  end=$(date +%s%N)
  printf -- '-- %s: %d ms\n' "$title" $(((end - start) / 1000000))
}

export VWNET_HOME="$work/alice"

step "a signing key for Alice" key new
step "a workspace description from the template" desc new -o workspace.toml
step "check it" desc check workspace.toml
step "sign it with Alice's key" desc sign workspace.toml -o workspace.signed
step "verify the signature" desc verify workspace.signed
step "narrow its RAM range into version 2" \
  desc refine workspace.toml --set hardware.ram=1024-2048 --set 'software.programs+=blast@2.2' -o workspace-v2.toml
step "clone it as a new workspace" desc clone workspace-v2.toml --name blast-lab -o blast-lab.toml

cat > host.toml <<'HOST'
ram_mib = 4096
vcpus = 4
disk_free_bytes = 100_000_000_000
hypervisors = ["kvm", "qemu"]
devices = ["cdrom"]
[networks]
dhcp = true
pools = []
HOST
step "does version 2 fit a 4 GiB KVM host?" desc match workspace-v2.toml --host host.toml

sed -e 's/^ram_mib = .*/ram_mib = 512/' host.toml > small-host.toml
printf '\n== does it fit a 512 MiB host? (it must not)\n'
if "$vwnet" desc match workspace-v2.toml --host small-host.toml; then
  echo "unexpected: version 2 fits a 512 MiB host" >&2
  exit 1
fi

printf '\n== tampering with one byte of the signed description\n'
python3 - workspace.signed <<'PY'
import sys
p = sys.argv[1]
b = bytearray(open(p, 'rb').read())
b[len(b) // 2] ^= 1
open('tampered.signed', 'wb').write(bytes(b))
PY
if "$vwnet" desc verify tampered.signed; then
  echo "unexpected: a tampered description verified" >&2
  exit 1
fi

# ---------------------------------------------------------------------------------------------
# Part 2: a swarm of three nodes on loopback. Alice publishes a workspace image on node A; B and
# C pull it, fetching only the chunks they miss, from every peer that has them.
nodes=()
stop_nodes() {
  for pid in "${nodes[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${nodes[@]}"; do wait "$pid" 2>/dev/null || true; done
}
cleanup() { stop_nodes; rm -rf "$work"; }

start_node() { # name [flags...]
  local name=$1; shift
  mkdir -p "$work/$name"
  RUST_LOG=warn "$vwnet" --home "$work/$name" node run --listen /ip4/127.0.0.1/tcp/0 --no-mdns "$@" \
    2>"$work/$name.log" &
  nodes+=($!)
  for _ in $(seq 1 100); do
    "$vwnet" --home "$work/$name" node status >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "node $name did not start; its log:" >&2
  cat "$work/$name.log" >&2
  exit 1
}

node_addr() { # name -> /ip4/127.0.0.1/tcp/PORT/p2p/PEER
  "$vwnet" --home "$work/$1" --json node status | python3 -c '
import json, sys
s = json.load(sys.stdin)
tcp = next(a for a in s["listen"] if "/tcp/" in a)
print(tcp + "/p2p/" + s["peer_id"])'
}

printf '\n== building a sample workspace disk: a 48 MiB ext4 file system of real files\n'
truncate -s 48M disk-v1.img
for src in /usr/share/perl /usr/share/i18n /usr/share/zoneinfo; do
  [[ -d $src ]] && mkfs.ext4 -q -F -d "$src" -E root_owner=0:0 disk-v1.img 2>/dev/null && break
done
echo "disk-v1.img: 48 MiB, files from $src"

start_node alice
a_addr=$(node_addr alice)
echo "A listens on $a_addr"
start_node bob --bootstrap "$a_addr"
start_node carol --bootstrap "$a_addr"
echo "B and C joined through A"

step "Alice publishes the workspace on A (ingest, sign, gossip, provide)" \
  publish --desc workspace.toml --image disk-v1.img
ws=$("$vwnet" --json desc check workspace.toml | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')

wait_known() { # home version
  for _ in $(seq 1 150); do
    if "$vwnet" --home "$work/$1" --json ls --remote | python3 -c "
import json, sys
ws = json.load(sys.stdin)
ws = ws if isinstance(ws, list) else ws.get('workspaces', [])
sys.exit(0 if any(w['workspace'] == '$ws' and w['version'] >= $2 for w in ws) else 1)"; then
      return 0
    fi
    sleep 0.2
  done
  echo "node $1 never learned version $2 of $ws" >&2
  exit 1
}
wait_known bob 1
step "B sees it (learned by gossip / catalog exchange)" --home "$work/bob" ls --remote
step "B pulls version 1: every chunk is new to B" --home "$work/bob" pull "$ws"

printf '\n== Alice changes 1 MiB of the disk and publishes version 2\n'
cp disk-v1.img disk-v2.img
dd if=/dev/urandom of=disk-v2.img bs=1M count=1 seek=20 conv=notrunc status=none
step "version 2 of the description" \
  desc refine workspace.toml --set 'software.programs+=blast@2.2' -o workspace-v2.toml --force
step "publish version 2 on A" publish --desc workspace-v2.toml --image disk-v2.img
wait_known bob 2
wait_known carol 2
step "B pulls version 2: only the changed chunks move" --home "$work/bob" --json pull "$ws"
step "C pulls version 2 from A and B at once" --home "$work/carol" --json pull "$ws"

printf '\n== C exports the image and checks it is byte-identical to what Alice published\n'
disk2=$("$vwnet" --home "$work/carol" --json inspect "$ws" | python3 -c '
import json, sys
d = json.load(sys.stdin)
print(d["images"][0]["image"])')
"$vwnet" --home "$work/carol" node export "$disk2" --out carol-export.img
cmp disk-v2.img carol-export.img && echo "identical: $(sha256sum < carol-export.img | cut -c1-16)..."

# ---------------------------------------------------------------------------------------------
# Part 3: the workspace runs. B deploys it on the embedded test:///default hypervisor (policy,
# host match, lock from A, the lock authority; define), starts and pauses it, then migrates it to
# C: save the memory state, publish the next version (only new chunks), release the lock, and C
# deploys and resumes it.
state_of() { # name -> the workspace's live state on that node
  "$vwnet" --home "$work/$1" --json ws-state "$ws" | python3 -c '
import json, sys
s = json.load(sys.stdin)
print(s["state"] if s.get("deployed") else "not deployed")'
}
step "B deploys version 2 (policy, host match, lease from A, define)" --home "$work/bob" deploy "$ws"
echo "state on B: $(state_of bob)"
step "B starts it" --home "$work/bob" start "$ws"
echo "state on B: $(state_of bob)"
step "C asks who holds the lock (a signed lock record, learned by gossip)" --home "$work/carol" lock show "$ws"
step "B pauses it" --home "$work/bob" pause "$ws"
echo "state on B: $(state_of bob)"
step "B unpauses it" --home "$work/bob" unpause "$ws"
echo "state on B: $(state_of bob)"
# Alice operates B too: her key signs the version the migration publishes.
cp "$work/alice/identity.key" "$work/bob/identity.key"
c_peer=$("$vwnet" --home "$work/carol" --json node status | python3 -c 'import json,sys; print(json.load(sys.stdin)["peer_id"])')
step "migrate it from B to C (save, publish v3 with only the new chunks, release, C resumes)" \
  --home "$work/bob" --json migrate "$ws" --to "$c_peer"
echo "state on B: $(state_of bob); state on C: $(state_of carol)"
step "C stops it" --home "$work/carol" stop "$ws" --force
step "C undeploys it (the lock is released)" --home "$work/carol" undeploy "$ws"
echo "state on C: $(state_of carol)"

stop_nodes
nodes=()
printf '\n== done: every step above ran against the real binary; all nodes stopped.\n'
