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
vwnet="$repo/target/release/vwnet"

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

printf '\n== done: every step above ran against the real binary.\n'
