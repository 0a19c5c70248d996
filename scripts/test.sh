#!/usr/bin/env bash
# The README's test command: installs the system packages the build needs (when missing), then
# checks formatting and lints and runs the whole test suite. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/install-deps.sh

# A cold debug build takes about 9 GiB and the swarm tests write images to the temp dir: say so
# up front when space is short, instead of a "No space left on device" deep in a test.
need_gib=12
for dir in "${CARGO_TARGET_DIR:-target}" "${TMPDIR:-/tmp}"; do
  mkdir -p "$dir"
  free_gib=$(( $(df -Pk "$dir" | awk 'NR == 2 { print $4 }') / 1024 / 1024 ))
  if (( free_gib < need_gib )); then
    echo "test.sh: warning: only ${free_gib} GiB free for $dir; a cold build and the tests need about ${need_gib} GiB" >&2
  fi
done

# Real QEMU/KVM through a local libvirtd, for the tests that need a real hypervisor. As root (CI,
# a fresh machine) it is set up and required; elsewhere those tests skip and say why.
if [[ $EUID -eq 0 && "${VWNET_QEMU_TESTS:-1}" != 0 ]]; then
  ./scripts/setup-libvirtd.sh start
  export VWNET_QEMU_TESTS=1
  trap './scripts/setup-libvirtd.sh stop --force >/dev/null 2>&1 || true' EXIT
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== cargo test"
cargo test --workspace --locked
