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

# The binary as shipped (hack/build-release.sh: static, hot functions ordered, packed
# relocations) through the lifecycle, the CVE-2019-5736 defence and exec, which the debug build
# above does not prove for it.
step "release rcrun (hack/build-release.sh): lifecycle, security, exec tests"
hack/build-release.sh --quiet -p rcrun
RCRUN_BIN="$repo/target/release/rcrun" RCRUN_TEST_IMAGE="$repo/target/e2e-image" \
    cargo test -p e2e --test lifecycle --test security --test exec --quiet

# The cgroup v2 proof: this host is v1/hybrid, so tests/tests/cgroup_v2.rs (which skips itself
# above) runs again inside hack/vmtest.sh's VM, on a pure cgroup v2 hierarchy.
step "cgroup v2 tests in a VM (hack/vmtest.sh)"
vm_start=$SECONDS
hack/vmtest.sh --build
cgroup_v2_test=$(cargo test -p e2e --test cgroup_v2 --no-run --message-format=json --quiet \
    | jq -r 'select(.reason == "compiler-artifact" and .target.name == "cgroup_v2" and .profile.test) | .executable')
[ -x "$cgroup_v2_test" ] || { echo "test: no test binary for tests/tests/cgroup_v2.rs" >&2; exit 1; }
vm_status=0
RCRUN_TEST_IMAGE="$repo/target/e2e-image" hack/vmtest.sh --timeout 1800 -- "$cgroup_v2_test" || vm_status=$?
echo "test: cgroup v2 VM step: $((SECONDS - vm_start)) s wall, exit status $vm_status" >&2
[ "$vm_status" -eq 0 ] || exit "$vm_status"

# A short bounded fuzzing pass (issue 10): each cargo-fuzz target under fuzz/ for 20 s, built
# unoptimised (a cold optimised build of the targets takes longer than the fuzzing); a crash
# fails the run (the input is left in fuzz/artifacts/<target>/). Longer runs: hack/fuzz.sh 600.
step "fuzzing, 20 s per target (hack/fuzz.sh)"
fuzz_start=$SECONDS
FUZZ_DEV=1 hack/fuzz.sh 20
echo "test: fuzzing step: $((SECONDS - fuzz_start)) s wall" >&2
