#!/usr/bin/env bash
# The README's test command: installs the system packages the build needs (when missing), then
# checks formatting and lints and runs the whole test suite. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/install-deps.sh

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== cargo test"
cargo test --workspace --locked
