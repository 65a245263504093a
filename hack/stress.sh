#!/usr/bin/env bash
# Stress without leaks at full size: 200 rcrun create/start/kill/delete lifecycles, 8 at a time,
# and 50 pods with 2 containers each through rcri; then the leak checks of tests/tests/stress.rs
# (state dirs, mounts, cgroups, processes, fds, netns pins, monitors, rcri's fds and memory).
# Counts can be changed: STRESS_LIFECYCLES, STRESS_PARALLEL, STRESS_PODS, STRESS_POD_PARALLEL.
# Runs as root, from any directory.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
export PATH="$HOME/.cargo/bin:$PATH"

[ "$(id -u)" -eq 0 ] || { echo "stress: must run as root" >&2; exit 1; }

export STRESS_LIFECYCLES=${STRESS_LIFECYCLES:-200}
export STRESS_PARALLEL=${STRESS_PARALLEL:-8}
export STRESS_PODS=${STRESS_PODS:-50}
export STRESS_POD_PARALLEL=${STRESS_POD_PARALLEL:-4}

echo "==> build" >&2
cargo build -p rcrun -p rcri --quiet
[ -d target/e2e-image ] || hack/mkimage.sh "$repo/target/e2e-image"
export RCRUN_TEST_IMAGE=${RCRUN_TEST_IMAGE:-$repo/target/e2e-image}

echo "==> stress: $STRESS_LIFECYCLES lifecycles ($STRESS_PARALLEL parallel)," \
    "$STRESS_PODS pods x 2 containers ($STRESS_POD_PARALLEL parallel)" >&2
start=$SECONDS
log=$(mktemp /tmp/rcrun-stress-XXXXXX.log)
set +e
cargo test -p e2e --test stress -- --nocapture --test-threads=1 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# Timings and leak check results, as the test printed them.
echo "==> summary" >&2
grep -E '^(stress:|test .* \.\.\. |test result)' "$log" || true
rm -f "$log"
echo "==> stress: $((SECONDS - start)) s wall, exit status $status" >&2
exit "$status"
