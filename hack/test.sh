#!/usr/bin/env bash
# Everything CI checks: formatting, lints, build, the test image, then all tests (as root).
# Runnable from any directory.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
export PATH="$HOME/.cargo/bin:$PATH"

step() { echo "==> $*" >&2; }

[ "$(id -u)" -eq 0 ] || { echo "test: must run as root" >&2; exit 1; }

step "setup"
hack/setup.sh
step "cargo fmt --check"
cargo fmt --all -- --check
step "cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings
step "cargo build"
cargo build --workspace --quiet
step "test image"
hack/mkimage.sh "$repo/target/e2e-image"
step "cargo test"
RCRUN_TEST_IMAGE="$repo/target/e2e-image" cargo test --workspace --no-fail-fast
