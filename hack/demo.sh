#!/usr/bin/env bash
# The demo: builds rcrun, makes a busybox bundle and runs it the way runc would, showing what the
# container sees (hostname, pid, ids, capabilities, mounts) and its exit status; then starts the
# CRI server rcri in a network namespace of its own and runs the Pod manifests of examples/
# through it with `rcrictl run` (a small kubelet): a two-container web pod with a ConfigMap and a
# Secret, a crashing container being restarted, a liveness probe killing a container, the pod's
# IP answering, and a graceful deletion that leaves nothing behind.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
export PATH="$HOME/.cargo/bin:$PATH"

die() { echo "demo: $*" >&2; exit 1; }
step() { printf '\n==> %s\n' "$*"; }

[ "$(id -u)" -eq 0 ] || die "must run as root"

step "setup"
hack/setup.sh
# rcrun in release mode, linked static as shipped (it is what runs the containers); rcri and
# rcrictl in the dev profile, because a release build of rcri (fat LTO over gRPC and TLS) takes
# ~10 minutes on 2 cores and the server's speed does not matter here.
step "hack/build-release.sh -p rcrun; cargo build -p rcri"
hack/build-release.sh --quiet -p rcrun
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
kubelet_pid=
cleanup() {
    "$rcrun" --root "$work/root" delete --force "$id" >/dev/null 2>&1 || true
    if [ -n "$kubelet_pid" ] && kill -0 "$kubelet_pid" 2>/dev/null; then
        # SIGTERM: `rcrictl run` deletes its pods gracefully, then exits.
        kill -TERM "$kubelet_pid" 2>/dev/null || true
        for _ in $(seq 1 300); do kill -0 "$kubelet_pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$kubelet_pid" 2>/dev/null || true
        wait "$kubelet_pid" 2>/dev/null || true
    fi
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
# Part 2: the CRI server rcri. It runs in network and mount namespaces of its own (unshare), so
# the CNI bridge, the pod IPs and the pods' mounts exist only there; its socket is a file in $work
# that rcrictl reaches from here.
# ---------------------------------------------------------------------------------------------
mkdir -p "$work/net.d"
cat >"$work/net.d/10-demo.conflist" <<EOF
{"cniVersion": "1.0.0", "name": "rcri-demo",
 "plugins": [
   {"type": "bridge", "bridge": "cni0", "isGateway": true,
    "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.88.0.0/16"}]],
             "routes": [{"dst": "0.0.0.0/0"}], "dataDir": "$work/ipam"}},
   {"type": "portmap", "capabilities": {"portMappings": true}}]}
EOF
step "rcri serve (in its own network and mount namespaces)"
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

# ---------------------------------------------------------------------------------------------
# Part 3: Kubernetes Pods from examples/ through rcri with `rcrictl run`, a small kubelet.
# It runs inside rcri's namespaces (nsenter), as kubelet runs beside its runtime on a node: the
# tmpfs it mounts for the Secret volume must be where rcri bind-mounts volumes from. Records
# (status, logs) live under --root-dir; `rcrictl get` and `rcrictl delete` read them from here.
# Short back-offs (2 s doubling to 10 s instead of kubelet's 10 s to 5 min) keep the demo quick.
# ---------------------------------------------------------------------------------------------
kube_root=$work/kubelet
kctl() { ctl "$@" --root-dir "$kube_root"; }
# The examples' hostPath (where pod-web's preStop hook writes) goes into $work.
mkdir -p "$work/examples"
for f in pod-web pod-crash pod-liveness; do
    sed "s|/tmp/rcrictl-examples|$work/hostpath|g" "examples/$f.yaml" >"$work/examples/$f.yaml"
done
step "rcrictl run examples/pod-web.yaml examples/pod-crash.yaml examples/pod-liveness.yaml --config-dir examples/config (in the background)"
nsenter -t "$rcri_pid" -m -n "$rcrictl" -r "unix://$work/rcri.sock" run \
    "$work/examples/pod-web.yaml" "$work/examples/pod-crash.yaml" \
    "$work/examples/pod-liveness.yaml" --config-dir "$repo/examples/config" \
    --root-dir "$kube_root" --restart-backoff 2s --max-backoff 10s >"$work/kubelet.log" 2>&1 &
kubelet_pid=$!

shown=0
# Prints what `rcrictl run` logged since the last call.
show_run_log() {
    local total
    total=$(wc -l <"$work/kubelet.log")
    if [ "$total" -gt "$shown" ]; then
        sed -n "$((shown + 1)),${total}p" "$work/kubelet.log" | sed 's/^/  run | /'
        shown=$total
    fi
}
# pod_json NAME: the v1 Pod as `rcrictl get pod NAME -o json` prints it.
pod_json() { kctl get pod "$1" -o json 2>/dev/null; }
# wait_pod NAME JQ-CONDITION WHAT: polls the pod's JSON until the condition holds (120 s).
wait_pod() {
    for _ in $(seq 1 600); do
        pod_json "$1" | jq -e "$2" >/dev/null 2>&1 && return 0
        kill -0 "$kubelet_pid" 2>/dev/null || { show_run_log; die "rcrictl run exited"; }
        sleep 0.2
    done
    show_run_log
    pod_json "$1" | jq .status >&2 || true
    die "pod $1: timed out waiting for $3"
}
container_id() {
    pod_json "$1" | jq -r --arg c "$2" \
        '.status.containerStatuses[] | select(.name == $c) | .containerID | sub(".*://"; "")'
}

wait_pod web '.status.conditions[] | select(.type == "Ready") | .status == "True"' "Ready"
show_run_log
step "rcrictl get pods -o wide"
kctl get pods -o wide

web=$(container_id web web)
step "the configMap value and the secret file, seen inside container web (rcrictl exec)"
# shellcheck disable=SC2016 # expanded by the container's shell
ctl exec "$web" sh -c 'echo "env GREETING=$GREETING  POD_NAME=$POD_NAME  POD_IP=$POD_IP"
    echo "/etc/web/greeting: $(cat /etc/web/greeting)"
    ls -lL /etc/secret
    echo "/etc/secret/password: $(cat /etc/secret/password)"
    (echo leak >/etc/secret/password) 2>/dev/null || echo "writing the secret fails: read-only"'
secret=$(ctl exec "$web" cat /etc/secret/password)
[ "$secret" = "$(cat examples/config/secrets/web-secret/password)" ] ||
    die "the container sees the secret as '$secret'"
# shellcheck disable=SC2016 # expanded by the container's shell
greeting=$(ctl exec "$web" sh -c 'echo "$GREETING"')
[ "$greeting" = "hello from a ConfigMap" ] || die "GREETING is '$greeting'"

ip=$(pod_json web | jq -r .status.podIP)
step "the pod IP answers: wget http://$ip:8080/ (from rcri's network namespace)"
# (busybox-static's wget -T crashes on bookworm: timeout(1) bounds it instead)
page=$(timeout 10 nsenter -t "$rcri_pid" -n busybox wget -q -O - "http://$ip:8080/")
echo "$page"
case $page in *"hello from pod web"*) ;; *) die "unexpected page from $ip" ;; esac

step "pod crash: exits 1 a second after it starts; restarted with back-off"
wait_pod crash '.status.containerStatuses[0].restartCount >= 2' "2 restarts"
wait_pod crash '.status.containerStatuses[0].state.waiting.reason == "CrashLoopBackOff"' \
    "CrashLoopBackOff"
kctl get pod crash
pod_json crash | jq '.status.containerStatuses[0] | {restartCount, state, lastState}'
pod_json crash | jq -e '.status.containerStatuses[0].lastState.terminated.exitCode == 1' \
    >/dev/null || die "the crash container's last exit code is not 1"

step "pod liveness: its probe fails after 5 s; the container is killed and restarted"
wait_pod liveness '.status.containerStatuses[0].restartCount >= 1' "a liveness restart"
show_run_log
kctl get pod liveness
grep -q "liveness probe" "$work/kubelet.log" || die "no liveness probe failure in the run log"

step "rcrictl delete pod web (graceful: its preStop hook runs first)"
kctl delete pod web
echo "preStop wrote: $(cat "$work/hostpath/web/prestop.log")"
kctl get pods

step "SIGTERM to rcrictl run: it deletes its other pods and exits"
kill -TERM "$kubelet_pid"
status=0
wait "$kubelet_pid" || status=$?
kubelet_pid=
show_run_log
[ "$status" -eq 0 ] || die "rcrictl run exited with $status"

step "nothing is left: no sandbox in rcri, no pod record, no mount"
kctl get pods
left=$(ctl pods -q)
[ -z "$left" ] || die "sandboxes left: $left"
[ -z "$(ls -A "$kube_root/pods" 2>/dev/null)" ] || die "pod records left: $(ls "$kube_root/pods")"
if nsenter -t "$rcri_pid" -m grep -q " $kube_root" /proc/self/mountinfo; then
    die "mounts left under $kube_root"
fi
echo "none"

step "demo passed"
