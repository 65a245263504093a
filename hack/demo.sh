#!/usr/bin/env bash
# The demo: builds rcrun, makes a busybox bundle and runs it the way runc would, showing what the
# container sees (hostname, pid, ids, capabilities, mounts) and its exit status.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
export PATH="$HOME/.cargo/bin:$PATH"

die() { echo "demo: $*" >&2; exit 1; }
step() { printf '\n==> %s\n' "$*"; }

[ "$(id -u)" -eq 0 ] || die "must run as root"

step "setup"
hack/setup.sh
step "cargo build --release -p rcrun"
cargo build --release --quiet -p rcrun
rcrun=$repo/target/release/rcrun
[ -x "$rcrun" ] || die "$rcrun was not built"
step "image"
hack/mkimage.sh "$repo/target/e2e-image"

work=$(mktemp -d /tmp/rcrun-demo.XXXXXX)
id=demo-$$
cleanup() {
    "$rcrun" --root "$work/root" delete --force "$id" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

# ---------------------------------------------------------------------------------------------
# Part 1: rcrun, the OCI runtime, used like runc.
# ---------------------------------------------------------------------------------------------
bundle=$work/bundle
mkdir -p "$bundle"
cp -a "$repo/target/e2e-image/rootfs" "$bundle/rootfs"
script='
echo "hostname: $(hostname)"
echo "pid: $$"
id
grep -E "Cap(Eff|Bnd)|NoNewPrivs" /proc/self/status
echo "mounts:"
cat /proc/self/mountinfo
exit 3
'
jq --arg script "$script" \
    '.process.args = ["sh", "-c", $script] | .hostname = "rcrun-demo"' \
    "$repo/target/e2e-image/config.json" >"$bundle/config.json"

step "rcrun --root $work/root run --bundle $bundle $id"
set +e
"$rcrun" --root "$work/root" run --bundle "$bundle" "$id"
status=$?
set -e
echo
echo "container exit status: $status (expected 3)"
[ "$status" -eq 3 ] || die "unexpected exit status $status"

# ---------------------------------------------------------------------------------------------
# Part 2: a pod through the CRI server rcri.
# TODO(rcri): start rcri on a socket in $work, run a pod manifest with rcrictl, show its
# output, stop it. Not written yet: rcri does not exist yet.
# ---------------------------------------------------------------------------------------------

step "demo passed"
