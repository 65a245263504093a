#!/usr/bin/env bash
# The demo: builds rcrun, makes a busybox bundle and runs it the way runc would, showing what the
# container sees (hostname, pid, ids, capabilities, mounts) and its exit status; then starts the
# CRI server rcri in a network namespace of its own and runs a pod through it with rcrictl.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
export PATH="$HOME/.cargo/bin:$PATH"

die() { echo "demo: $*" >&2; exit 1; }
step() { printf '\n==> %s\n' "$*"; }

[ "$(id -u)" -eq 0 ] || die "must run as root"

step "setup"
hack/setup.sh
# rcrun in release mode (it is what runs the containers); rcri and rcrictl in the dev profile,
# because a release build of rcri (fat LTO over gRPC and TLS) takes ~10 minutes on 2 cores and
# the server's speed does not matter here.
step "cargo build --release -p rcrun; cargo build -p rcri"
cargo build --release --quiet -p rcrun
cargo build --quiet -p rcri
rcrun=$repo/target/release/rcrun
rcri=$repo/target/debug/rcri
rcrictl=$repo/target/debug/rcrictl
[ -x "$rcrun" ] || die "$rcrun was not built"
step "image"
hack/mkimage.sh "$repo/target/e2e-image"

work=$(mktemp -d /tmp/rcrun-demo.XXXXXX)
id=demo-$$
rcri_pid=
cleanup() {
    "$rcrun" --root "$work/root" delete --force "$id" >/dev/null 2>&1 || true
    if [ -n "$rcri_pid" ]; then
        # Pods first (their monitors, netns and mounts), then the server itself.
        for pod in $("$rcrictl" -r "unix://$work/rcri.sock" pods -q 2>/dev/null); do
            "$rcrictl" -r "unix://$work/rcri.sock" stopp "$pod" >/dev/null 2>&1 || true
            "$rcrictl" -r "unix://$work/rcri.sock" rmp "$pod" >/dev/null 2>&1 || true
        done
        kill "$rcri_pid" 2>/dev/null || true
        wait "$rcri_pid" 2>/dev/null || true
    fi
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
# Part 2: a pod through the CRI server rcri, as a kubelet would run it.
# rcri runs in a network namespace of its own (unshare -n), so the CNI bridge and the pod's IP
# exist only there; its socket is a file in $work that rcrictl reaches from here.
# ---------------------------------------------------------------------------------------------
mkdir -p "$work/net.d" "$work/logs"
cat >"$work/net.d/10-demo.conflist" <<EOF
{"cniVersion": "1.0.0", "name": "rcri-demo",
 "plugins": [
   {"type": "bridge", "bridge": "cni0", "isGateway": true,
    "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.88.0.0/16"}]],
             "routes": [{"dst": "0.0.0.0/0"}], "dataDir": "$work/ipam"}},
   {"type": "portmap", "capabilities": {"portMappings": true}}]}
EOF
step "rcri serve (in its own network namespace)"
unshare -n -m --propagation private sh -c "ip link set lo up && exec '$rcri' serve \
    --listen '$work/rcri.sock' --root '$work/rcri-root' --state '$work/rcri-state' \
    --runtime '$rcrun' \
    --runtime-root '$work/rcri-runtime' --cni-conf-dir '$work/net.d' \
    --import-layout '$repo/target/e2e-image/oci' --log-level warn" 2>"$work/rcri.log" &
rcri_pid=$!
ctl() { "$rcrictl" -r "unix://$work/rcri.sock" "$@"; }
for _ in $(seq 1 100); do
    [ -S "$work/rcri.sock" ] && ctl version >/dev/null 2>&1 && break
    kill -0 "$rcri_pid" 2>/dev/null || { cat "$work/rcri.log" >&2; die "rcri exited"; }
    sleep 0.1
done
ctl version
ctl images

cat >"$work/pod.yaml" <<EOF
metadata:
  name: demo
  namespace: default
  uid: demo-uid
hostname: demo-pod
logDirectory: $work/logs
EOF
cat >"$work/container.yaml" <<'EOF'
metadata:
  name: hello
image:
  image: busybox
command: ["sh", "-c"]
args:
  - 'echo "hello from $(hostname), pid $$"; ip -4 addr show eth0 | grep inet; sleep 300'
log_path: hello.0.log
EOF
step "rcrictl runp pod.yaml"
pod=$(ctl runp "$work/pod.yaml")
echo "$pod"
step "rcrictl create + start"
ctr=$(ctl create "$pod" "$work/container.yaml" "$work/pod.yaml")
ctl start "$ctr"
ctl pods
ctl ps
step "rcrictl exec $ctr cat /etc/hostname"
ctl exec "$ctr" cat /etc/hostname
for _ in $(seq 1 50); do
    ctl logs "$ctr" 2>/dev/null | grep -q inet && break
    sleep 0.1
done
step "rcrictl logs $ctr"
ctl logs "$ctr"
ctl logs "$ctr" | grep -q "hello from demo-pod" || die "the container's log is not as expected"
step "rcrictl stopp + rmp"
ctl stopp "$pod"
ctl rmp "$pod"
ctl pods

step "demo passed"
