#!/usr/bin/env bash
# Installs the Debian packages that building and testing vwnet need, and only those that are
# missing: `apt-get update` runs only when something has to be installed, so a second run is a
# no-op that does not touch the network.
#
#   libvirt-dev   headers + libvirt.so for the `virt` crate (the node's hypervisor backend); it
#                 pulls in libvirt0, whose built-in `test:///default` driver the tests use
#   pkg-config    how `virt-sys` finds libvirt at build time
#   qemu-utils    `qemu-img`, which the opt-in real-QEMU tests use to make blank disks (any
#                 version: a newer backport is fine here; scripts/setup-libvirtd.sh pins it to
#                 match qemu-system-x86 when real QEMU is wanted)
#   rsync         the baseline that tests/benches/distribution.sh compares vwnet's updates with
#
# Usage: scripts/install-deps.sh        (root, or a user with sudo)
set -euo pipefail

packages=(libvirt-dev pkg-config qemu-utils rsync)

# `dpkg-query` says "install ok installed" only for a fully installed package; anything else
# (absent, half-configured, removed with config left) counts as missing.
missing=()
for pkg in "${packages[@]}"; do
    status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
    if [[ "$status" != "install ok installed" ]]; then
        missing+=("$pkg")
    fi
done

if ((${#missing[@]} == 0)); then
    echo "install-deps: all present (${packages[*]})"
    exit 0
fi

if ((EUID == 0)); then
    sudo=()
elif command -v sudo >/dev/null; then
    sudo=(sudo)
else
    echo "install-deps: missing ${missing[*]} and not root (no sudo to install them)" >&2
    exit 1
fi

echo "install-deps: installing ${missing[*]}"
"${sudo[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends \
    "${missing[@]}"
