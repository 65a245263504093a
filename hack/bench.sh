#!/usr/bin/env bash
# Benchmarks rcrun side by side with runc and crun, and rcri side by side with containerd's CRI,
# on this machine, and prints markdown tables of medians, ranges and ratios. Runtimes are
# interleaved run by run so that machine drift hits all of them alike.
#
#   hack/bench.sh [--runs N] [--quick] [--pull-runs N] [--pods N] [--rcri BIN]
#                 [--only PARTS] [--no-pull] [--no-pods] [--pull-only]
#
# PARTS, comma-separated (default all, in this order):
#   run   rcrun vs crun vs runc on one busybox bundle: `run` of /bin/true, create/start/delete,
#         100 in a row, 20 at once, peak RSS, binary size, and the kernel's floor (unshare);
#   mem   the smallest memory limit (cgroup v1 memory.limit_in_bytes, from the bundle's
#         linux.resources.memory.limit) under which `run` of /bin/true still succeeds, bisected
#         between 64 KiB and 16 MiB for each runtime;
#   pull  cold PullImage of a 7-layer image from a docker-registry on 127.0.0.1, rcri vs
#         containerd, both driven by rcrictl, each run on empty stores;
#   pods  RunPodSandbox + CreateContainer + StartContainer until running, p50/p99 over N pods
#         (default 50), rcri vs containerd's CRI with runc, interleaved pod by pod through rcrictl,
#         the image pulled from the same local registry beforehand; then the daemons' RSS idle and
#         with the N pods, alone and with their per-pod processes (rcri's monitors, containerd's
#         shims), and one monitor's VmRSS and PSS.
#
# `--rcri BIN` measures another rcri build (e.g. target/debug/rcri, with the rcrictl and
# rcri-monitor beside it); the default is the release build, built here. Release binaries are
# built with hack/build-release.sh, the way they are shipped.
#
# Everything runs inside a private mount namespace in which the hybrid host's cgroup2
# "unified" mount is hidden: crun 1.8.1 refuses hybrid hosts otherwise. The registry and both CRI
# daemons run in a network namespace this script creates (the CNI bridges and the pod IPs live only
# there). Containers' cgroups go under rcrun-bench-<pid> below the cgroup the runtime runs in (a
# relative cgroupsPath: runc and rcrun put it under their own cgroup, crun under each hierarchy's
# root). Everything the script starts or creates (daemons, registry, containers, netns, mounts,
# cgroups, temp dirs) is removed on exit, also on failure.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export PATH="$HOME/.cargo/bin:$PATH"
runs=60
pull_runs=10
pods=50
parts=run,mem,pull,pods
rcri_bin=$repo/target/release/rcri
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) runs=$2; shift 2 ;;
    --quick) runs=10; pull_runs=5; pods=10; shift ;;
    --pull-runs) pull_runs=$2; shift 2 ;;
    --pods) pods=$2; shift 2 ;;
    --only) parts=$2; shift 2 ;;
    --pull-only) parts=pull; shift ;;
    --no-pull) parts=$(tr , '\n' <<<"$parts" | grep -vx pull | paste -sd,); shift ;;
    --no-pods) parts=$(tr , '\n' <<<"$parts" | grep -vx pods | paste -sd,); shift ;;
    --rcri) rcri_bin=$(realpath "$2"); shift 2 ;;
    --inner) shift; inner=1 ;;
    *) echo "bench: unknown argument $1" >&2; exit 2 ;;
  esac
done
for part in ${parts//,/ }; do
  case $part in run | mem | pull | pods) ;; *) echo "bench: unknown part $part" >&2; exit 2 ;; esac
done
want() { [[ ",$parts," == *",$1,"* ]]; }

if [ -z "${inner:-}" ]; then
  [ "$(id -u)" -eq 0 ] || { echo "bench: must run as root" >&2; exit 1; }
  "$repo/hack/setup.sh"
  missing=()
  for p in runc crun time; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  if [ ${#missing[@]} -gt 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
  # rcri's pods run on the release rcrun too, whichever rcri is measured.
  build=(-p rcrun)
  if { want pull || want pods; } && [ "$rcri_bin" = "$repo/target/release/rcri" ]; then
    build+=(-p rcri)
  fi
  "$repo/hack/build-release.sh" --quiet "${build[@]}"
  "$repo/hack/mkimage.sh" "$repo/target/e2e-image" >/dev/null
  exec unshare --mount --propagation private "$0" --inner --runs "$runs" --pull-runs "$pull_runs" \
    --pods "$pods" --only "$parts" --rcri "$rcri_bin"
fi

# Inside the private mount namespace from here on.
# A throwaway tmpfs goes where the cgroup2 mount was: crun treats the bare directory as a named
# hierarchy and makes a directory with a cgroup.procs file per container in it, which would
# otherwise land on the host's /sys/fs/cgroup tmpfs, hidden under its unified mount.
if mountpoint -q /sys/fs/cgroup/unified 2>/dev/null; then
  umount -l /sys/fs/cgroup/unified
  mount -t tmpfs -o size=4m,mode=0755 rcrun-bench /sys/fs/cgroup/unified
fi

declare -A bin=([rcrun]="$repo/target/release/rcrun" [crun]=/usr/bin/crun [runc]=/usr/sbin/runc)
runtimes=(rcrun crun runc)

# The cgroup dirs named $tag that this run's containers made: below each v1 hierarchy's root
# (crun) and below this process's own cgroup there (runc, rcrun).
bench_cgroups() {
  local ctrl own mnt dir
  while IFS=: read -r _ ctrl own; do
    [ -n "$ctrl" ] || continue
    mnt=/sys/fs/cgroup/${ctrl#name=}
    [ -d "$mnt" ] || continue
    for dir in "$mnt/$tag" "$mnt${own%/}/$tag"; do
      [ -d "$dir" ] && echo "$dir"
    done
  done </proc/self/cgroup | sort -u
}

# SIGTERM, then SIGKILL after 10 s.
stop_pid() {
  local pid=$1
  kill "$pid" 2>/dev/null || return 0
  for _ in $(seq 1 200); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.05
  done
  kill -9 "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

# Processes this run started indirectly (rcri's monitors, containerd's shims: their command
# lines name the work dir), by pid.
our_helpers() {
  local pid
  for pid in /proc/[0-9]*; do
    pid=${pid#/proc/}
    [ "$pid" = $$ ] && continue
    tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" | grep -qF "$work/" && echo "$pid"
  done
  return 0
}

cleanup() {
  local pid dir rt id root ns
  set +eu
  for pid in "${daemon_pids[@]}"; do stop_pid "$pid"; done
  [ -n "$reg_pid" ] && stop_pid "$reg_pid"
  for pid in $(our_helpers); do kill -9 "$pid" 2>/dev/null; done
  # Containers left by a failed run: every process in our cgroups, then the runtimes' records.
  for dir in $(bench_cgroups); do
    find "$dir" -name cgroup.procs -exec cat {} + 2>/dev/null | while read -r pid; do kill -9 "$pid"; done
  done
  for rt in "${runtimes[@]}"; do
    for root in "$work/state/root-$rt" "$work/state/mem-root-$rt"; do
      for id in "$root"/*; do
        [ -e "$id" ] && "${bin[$rt]}" --root "$root" delete --force "${id##*/}" >/dev/null 2>&1
      done
    done
  done
  for dir in $(bench_cgroups); do
    for _ in $(seq 1 50); do
      find "$dir" -depth -type d -exec rmdir {} \; 2>/dev/null
      [ -d "$dir" ] || break
      sleep 0.1
    done
    [ -d "$dir" ] && echo "bench: could not remove cgroup $dir" >&2
  done
  grep -F " $work/" /proc/self/mountinfo | awk '{ print $5 }' | sort -r |
    while read -r m; do umount -l "$m"; done
  for ns in "${netns_made[@]}"; do ip netns del "$ns"; done
  rm -rf "$work"
}

work=$(mktemp -d /tmp/rcrun-bench.XXXXXX)
# The parent of every container cgroup this run makes (relative cgroupsPath / cgroup_parent).
tag=rcrun-bench-$$
daemon_pids=()
reg_pid=
netns_made=()
trap cleanup EXIT
trap 'exit 130' INT TERM
# The runtimes' state directories on a tmpfs, where they live when installed (/run/runc,
# /run/crun, /run/rcrun), not on this disk: ext4's inode allocation after thousands of deleted
# state files was a cost of the test machine, not of any runtime.
mkdir -p "$work/state"
mount -t tmpfs -o mode=0700 rcrun-bench-state "$work/state"
bundle="$work/bundle"
mkdir -p "$bundle"
cp -a "$repo/target/e2e-image/rootfs" "$bundle/rootfs"
# crun 1.8.1 accepts only ociVersion 1.0.x.
jq '.ociVersion = "1.0.2" | .process.terminal = false | .process.args = ["/bin/true"]' \
  "$repo/target/e2e-image/config.json" >"$bundle/config.json"

now() { date +%s%N; }
ms() { awk -v ns="$1" 'BEGIN { printf "%.2f", ns / 1e6 }'; }
# add_ms FILE NS: appends NS nanoseconds to FILE as a line of milliseconds.
add_ms() { echo "$(ms "$2")" >>"$1"; }

# One timed command; appends milliseconds to the given file. Fails loudly.
timed() {
  local out=$1; shift
  local t0 t1
  t0=$(now)
  "$@" >/dev/null 2>"$work/err" || { echo "bench: failed: $*" >&2; cat "$work/err" >&2; exit 1; }
  t1=$(now)
  add_ms "$out" $((t1 - t0))
}

# median min max of a file of numbers
stats() { sort -n "$1" | awk '{ v[NR] = $1 } END { m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2; printf "%.2f %.2f %.2f\n", m, v[1], v[NR] }'; }

# ---- Image pulls: rcri vs containerd --------------------------------------------------------

# The OCI layouts the bench pushes. put_blob FILE OUT moves FILE into layout OUT as a blob and
# sets hex and size (its digest and length) in the caller; finish_layout OUT names the last blob
# put (a manifest) as "latest" in index.json and marks the layout.
put_blob() {
  hex=$(sha256sum "$1" | cut -d' ' -f1)
  size=$(stat -c %s "$1")
  mv "$1" "$2/blobs/sha256/$hex"
}
finish_layout() {
  printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"annotations":{"org.opencontainers.image.ref.name":"latest"}}]}\n' \
    "$hex" "$size" >"$1/index.json"
  echo '{"imageLayoutVersion":"1.0.0"}' >"$1/oci-layout"
}

# The bench image, an OCI layout: the busybox layer plus six gzip layers of 300 text files
# (24 KiB each, about 7 MiB per layer, 2.5 MiB compressed), so that download, gunzip, sha256
# and unpacking all count. Reproducible (perl's rand with a fixed seed).
make_bench_image() {
  local out=$1 src=$repo/target/e2e-image/oci l dir hex size diffs="" layers=""
  mkdir -p "$out/blobs/sha256"
  local m c base
  m=$(jq -r '.manifests[0].digest' "$src/index.json" | cut -d: -f2)
  c=$(jq -r '.config.digest' "$src/blobs/sha256/$m" | cut -d: -f2)
  base=$(jq -c '.layers[0]' "$src/blobs/sha256/$m")
  cp "$src/blobs/sha256/$(jq -r .digest <<<"$base" | cut -d: -f2)" "$out/blobs/sha256/"
  diffs=$(jq -c '.rootfs.diff_ids[0]' "$src/blobs/sha256/$c")
  layers=$base
  for l in 1 2 3 4 5 6; do
    dir=$work/bench-layer
    rm -rf "$dir"
    mkdir -p "$dir/usr/share/bench$l"
    perl -e '
      my ($dir, $seed) = @ARGV; srand($seed);
      my @w = map { join "", map { chr(97 + int(rand(26))) } 1 .. (3 + int(rand(8))) } 1 .. 512;
      for my $f (0 .. 299) {
        open(my $fh, ">", sprintf("%s/f%04d.txt", $dir, $f)) or die "$dir: $!";
        my $n = 0;
        while ($n < 24576) { my $line = join(" ", map { $w[int(rand(@w))] } 1 .. 12) . "\n"; print $fh $line; $n += length $line }
        close $fh;
      }' "$dir/usr/share/bench$l" "$l"
    tar --sort=name --mtime=@0 --numeric-owner --format=posix \
      --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
      -C "$dir" -cf "$work/layer.tar" .
    diffs="$diffs,\"sha256:$(sha256sum "$work/layer.tar" | cut -d' ' -f1)\""
    gzip -n -6 <"$work/layer.tar" >"$work/layer.tar.gz"
    put_blob "$work/layer.tar.gz" "$out"
    layers="$layers,{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+gzip\",\"digest\":\"sha256:$hex\",\"size\":$size}"
  done
  rm -rf "$dir" "$work/layer.tar"
  jq -c --argjson d "[$diffs]" '.rootfs.diff_ids = $d | .history = []' "$src/blobs/sha256/$c" >"$work/cfg.json"
  put_blob "$work/cfg.json" "$out"
  printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[%s]}' \
    "$hex" "$size" "$layers" >"$work/manifest.json"
  put_blob "$work/manifest.json" "$out"
  finish_layout "$out"
}

# Waits until `rcrictl -r unix://SOCK version` answers (the daemon is up), or fails.
wait_cri() {
  local sock=$1 pid=$2 log=$3
  for _ in $(seq 1 400); do
    if [ -S "$sock" ] && "$rcrictl" -r "unix://$sock" version >/dev/null 2>&1; then return 0; fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.05
  done
  echo "bench: CRI server on $sock did not come up" >&2
  tail -20 "$log" >&2
  exit 1
}

# The network namespace the registry and both CRI daemons run in (the daemons' CNI bridges and
# pod IPs exist only there), made once.
make_netns() {
  [ ${#netns_made[@]} -gt 0 ] && return 0
  ip netns add "$tag"
  netns_made+=("$tag")
  ip -n "$tag" link set lo up
}
in_netns() { nsenter "--net=/run/netns/$tag" "$@"; }

# start_daemon rcri|containerd DIR: a daemon on empty stores under DIR, in our network
# namespace, its CNI configs in DIR/net.d; sets daemon_pid.
start_daemon() {
  local kind=$1 d=$2 enter=(nsenter "--net=/run/netns/$tag")
  mkdir -p "$d/net.d"
  case $kind in
    rcri)
      printf '[registry]\ninsecure = ["%s"]\n' "$registry" >"$d/rcri.toml"
      "${enter[@]}" "$rcri_bin" serve --config "$d/rcri.toml" --listen "$d/cri.sock" --root "$d/root" \
        --state "$d/state" --runtime "${bin[rcrun]}" --runtime-root "$d/rt" \
        --cni-conf-dir "$d/net.d" --cni-bin-dir /usr/lib/cni --log-level warn >"$d/log" 2>&1 &
      ;;
    containerd)
      local cap_eff restrict_oom=false
      cap_eff=$(awk '$1 == "CapEff:" { print $2 }' /proc/self/status)
      (((0x$cap_eff >> 24) & 1)) || restrict_oom=true # CAP_SYS_RESOURCE
      # The sandbox image: containerd runs it as each pod's infra process (rcri has its own).
      cat >"$d/config.toml" <<TOML
version = 2
root = "$d/root"
state = "$d/state"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]
[grpc]
  address = "$d/cri.sock"
[ttrpc]
  address = "$d/cri.sock.ttrpc"
[debug]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "$d/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$registry/bench/pause:latest"
  # Loading containerd's AppArmor profile would change the host's kernel policy.
  disable_apparmor = true
  # Without CAP_SYS_RESOURCE no runtime can lower a sandbox's oom_score_adj (runc fails).
  restrict_oom_score_adj = $restrict_oom
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
[plugins."io.containerd.grpc.v1.cri".cni]
  bin_dir = "/usr/lib/cni"
  conf_dir = "$d/net.d"
[plugins."io.containerd.grpc.v1.cri".registry.mirrors."$registry"]
  endpoint = ["http://$registry"]
TOML
      # A /run of its own: containerd keeps state there (and its pods' netns pins) that must not
      # meet the host's.
      "${enter[@]}" unshare --mount --propagation private -- sh -c \
        'mount -t tmpfs -o mode=0755 tmpfs /run && mkdir -p /run/containerd && exec containerd --config "$1"' \
        sh "$d/config.toml" >"$d/log" 2>&1 &
      ;;
  esac
  daemon_pid=$!
  daemon_pids+=("$daemon_pid")
  wait_cri "$d/cri.sock" "$daemon_pid" "$d/log"
}

stop_daemon() {
  stop_pid "$daemon_pid"
  daemon_pid=
}

# A docker-registry on 127.0.0.1 of our network namespace, once; sets registry (host:port).
start_registry() {
  [ -n "$reg_pid" ] && return 0
  make_netns
  registry=127.0.0.1:5000
  mkdir -p "$work/registry"
  printf 'version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: %s\n' \
    "$work/registry/storage" "$registry" >"$work/registry/config.yml"
  in_netns docker-registry serve "$work/registry/config.yml" >"$work/registry/log" 2>&1 &
  reg_pid=$!
}

# push LAYOUT:TAG NAME: copies an OCI layout's image into the registry as $registry/NAME.
push() {
  for _ in $(seq 1 100); do
    in_netns skopeo --insecure-policy copy --dest-tls-verify=false "oci:$1" "docker://$registry/$2" \
      >/dev/null 2>"$work/err" && return 0
    sleep 0.1
  done
  echo "bench: pushing $2 failed:" >&2
  cat "$work/err" >&2
  exit 1
}

need() {
  for f in "$@"; do
    [ -x "$f" ] || { echo "bench: $f missing (hack/setup.sh, cargo build -p rcri)" >&2; exit 1; }
  done
}

pull_bench() {
  local layout=$work/bench-oci image i kind d
  rcrictl=$(dirname "$rcri_bin")/rcrictl
  need "$rcri_bin" "$rcrictl" /usr/bin/containerd /usr/bin/docker-registry /usr/bin/skopeo
  make_bench_image "$layout"
  start_registry
  push "$layout:latest" bench/layers:latest
  image=$registry/bench/layers:latest
  local manifest total nlayers
  manifest=$layout/blobs/sha256/$(jq -r '.manifests[0].digest' "$layout/index.json" | cut -d: -f2)
  total=$(jq '[.layers[].size] | add' "$manifest")
  nlayers=$(jq '.layers | length' "$manifest")
  echo "measuring pulls: $pull_runs cold runs each, interleaved ($nlayers layers, $total bytes)" >&2
  for i in $(seq 1 "$pull_runs"); do
    for kind in rcri containerd; do
      d=$work/pull-$kind-$i
      start_daemon "$kind" "$d"
      sync
      timed "$work/pull.$kind" "$rcrictl" -r "unix://$d/cri.sock" pull "$image"
      stop_daemon
      rm -rf "$d"
    done
  done
  local r c
  read -r r rlo rhi < <(stats "$work/pull.rcri")
  read -r c clo chi < <(stats "$work/pull.containerd")
  echo
  echo "## image pull: rcri ($(basename "$(dirname "$rcri_bin")") build) vs containerd $(containerd --version | awk '{print $3}') — $(date -u +%Y-%m-%d), $(nproc) cores, $pull_runs cold runs each"
  echo
  echo "| what (ms, median (min–max)) | rcri | containerd | rcri/containerd |"
  echo "| --- | --- | --- | --- |"
  printf '| PullImage %s (%s layers, %s bytes) | %s (%s–%s) | %s (%s–%s) | %s |\n' \
    "bench/layers" "$nlayers" "$total" "$r" "$rlo" "$rhi" "$c" "$clo" "$chi" \
    "$(awk -v a="$r" -v b="$c" 'BEGIN { printf "%.2f×", a / b }')"
}

# ---- Smallest memory limit under which `run` of /bin/true succeeds -------------------------

# mem_ok RUNTIME KIB: whether $mem_tries runs in a row succeed under that memory limit.
mem_tries=3
mem_n=0
mem_ok() {
  local rt=$1 kib=$2 root=$work/state/mem-root-$1 id cg dir ok=0
  for _ in $(seq 1 "$mem_tries"); do
    mem_n=$((mem_n + 1))
    id=m$mem_n
    cg=$tag/mem-$rt-$mem_n
    jq --arg cg "$cg" --argjson lim $((kib * 1024)) --arg root "$bundle/rootfs" \
      '.root.path = $root | .linux.cgroupsPath = $cg | .linux.resources.memory = {limit: $lim}' \
      "$bundle/config.json" >"$work/mem/config.json"
    timeout 20 "${bin[$rt]}" --root "$root" run --bundle "$work/mem" "$id" >/dev/null 2>&1 || ok=1
    "${bin[$rt]}" --root "$root" delete --force "$id" >/dev/null 2>&1 || true
    # A failed start may leave the container's cgroup behind; it is empty by now.
    for dir in $(bench_cgroups); do
      [ -d "$dir/mem-$rt-$mem_n" ] && rmdir "$dir/mem-$rt-$mem_n" 2>/dev/null
    done
    [ $ok -eq 0 ] || return 1
  done
}

mem_bench() {
  local rt lo hi mid
  declare -A mlo mhi
  mkdir -p "$work/mem"
  echo "measuring the smallest memory limit: bisecting 64 KiB..16 MiB, $mem_tries runs per step" >&2
  for rt in "${runtimes[@]}"; do
    mlo[$rt]=64
    mhi[$rt]=16384
    if ! mem_ok "$rt" 16384; then mlo[$rt]=16384; mhi[$rt]=">16384"; fi
    if mem_ok "$rt" 64; then mhi[$rt]="≤64"; fi
  done
  # Interleaved: one bisection step for each runtime in turn, down to one page.
  for _ in $(seq 1 16); do
    for rt in "${runtimes[@]}"; do
      lo=${mlo[$rt]} hi=${mhi[$rt]}
      [[ $hi =~ ^[0-9]+$ ]] && [ $((hi - lo)) -gt 4 ] || continue
      mid=$(((lo + hi) / 8 * 4))
      if mem_ok "$rt" "$mid"; then mhi[$rt]=$mid; else mlo[$rt]=$mid; fi
    done
  done
  echo
  echo "## smallest memory limit for \`run\` of /bin/true — $(date -u +%Y-%m-%d), cgroup v1 memory.limit_in_bytes, $mem_tries runs in a row must succeed"
  echo
  echo "| what (KiB) | rcrun | crun | runc | rcrun/crun | rcrun/runc |"
  echo "| --- | --- | --- | --- | --- | --- |"
  printf '| smallest memory limit |'
  for rt in "${runtimes[@]}"; do printf ' %s |' "${mhi[$rt]}"; done
  for rt in crun runc; do
    printf ' %s |' "$(awk -v a="${mhi[rcrun]}" -v b="${mhi[$rt]}" \
      'BEGIN { if (a ~ /^[0-9]+$/ && b ~ /^[0-9]+$/) printf "%.2f×", a / b; else printf "–" }')"
  done
  echo
}

# ---- Pods: rcri vs containerd's CRI ---------------------------------------------------------

# containerd's pod infra image: the busybox image running `sleep` (the real pause image is not
# to be had offline). An OCI layout at $1, tag latest.
make_pause_image() {
  local out=$1 src=$repo/target/e2e-image/oci m c hex size
  mkdir -p "$out/blobs/sha256"
  m=$(jq -r '.manifests[0].digest' "$src/index.json" | cut -d: -f2)
  c=$(jq -r '.config.digest' "$src/blobs/sha256/$m" | cut -d: -f2)
  cp "$src/blobs/sha256/"* "$out/blobs/sha256/"
  jq -c '.config.Entrypoint = ["/bin/sleep", "2147483647"] | .config.Cmd = null' \
    "$src/blobs/sha256/$c" >"$work/cfg.json"
  put_blob "$work/cfg.json" "$out"
  jq -c --arg d "sha256:$hex" --argjson s "$size" '.config.digest = $d | .config.size = $s' \
    "$src/blobs/sha256/$m" >"$work/manifest.json"
  put_blob "$work/manifest.json" "$out"
  finish_layout "$out"
}

kib_of() { awk -v f="$2" '$1 == f ":" { print $2 }' "$1" 2>/dev/null; }
# VmRSS of a pid in KiB (0 when it is gone).
rss() { kib_of "/proc/$1/status" VmRSS || echo 0; }
# Proportional set size (shared pages split among their users), KiB.
pss() { kib_of "/proc/$1/smaps_rollup" Pss || echo 0; }
sum() { awk '{ s += $1 } END { print s + 0 }'; }
# nearest-rank percentile P of a file of numbers
pct() { sort -n "$2" | awk -v p="$1" '{ v[NR] = $1 } END { i = int(NR * p / 100 + 0.999); if (i < 1) i = 1; printf "%.1f", v[i] }'; }

# The per-pod processes of a daemon: rcri's monitors (rcri-monitor, their command line names the
# bundle in rcri's state dir) or containerd's shims (-address names its socket).
per_pod_pids() {
  local kind=$1 d=$2 pid cmd
  for pid in $(our_helpers); do
    cmd=$(tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline") || continue
    case $kind in
      rcri) [[ $cmd == *monitor* && $cmd == *"$d/state"* ]] && echo "$pid" ;;
      containerd) [[ $cmd == *containerd-shim* && $cmd == *"$d/cri.sock"* ]] && echo "$pid" ;;
    esac
  done
  return 0
}

# pod_start KIND I: RunPodSandbox + CreateContainer + StartContainer of pod I, timed until the
# container is listed as running.
pod_start() {
  local kind=$1 i=$2 d=$work/pods-$1 pod ctr t0 st
  local ctl=("$rcrictl" -r "unix://$d/cri.sock")
  mkdir -p "$d/logs/$i"
  jq -n --arg i "$i" --arg kind "$kind" --arg logs "$d/logs/$i" --arg cg "$tag/$kind" '{
    metadata: {name: ("bench-" + $i), namespace: "default", uid: ("bench-" + $kind + "-" + $i)},
    hostname: ("bench-" + $i), log_directory: $logs, linux: {cgroup_parent: $cg}}' >"$d/pod-$i.json"
  local t1 t2 t3
  t0=$(now)
  pod=$("${ctl[@]}" runp "$d/pod-$i.json" 2>"$work/err") || fail_pod "$kind runp" "$d"
  t1=$(now)
  echo "$pod" >>"$d/pods"
  ctr=$("${ctl[@]}" create --no-pull "$pod" "$d/ctr.json" "$d/pod-$i.json" 2>"$work/err") ||
    fail_pod "$kind create" "$d"
  t2=$(now)
  "${ctl[@]}" start "$ctr" >/dev/null 2>"$work/err" || fail_pod "$kind start" "$d"
  t3=$(now)
  # Each phase as the client saw it (one rcrictl run each), to tell where the time goes.
  add_ms "$work/runp.$kind" $((t1 - t0))
  add_ms "$work/createc.$kind" $((t2 - t1))
  add_ms "$work/startc.$kind" $((t3 - t2))
  for _ in $(seq 1 200); do
    st=$("${ctl[@]}" ps --id "$ctr" -s running -q 2>"$work/err") || fail_pod "$kind ps" "$d"
    [ -n "$st" ] && break
    sleep 0.01
  done
  [ -n "$st" ] || { echo "bench: $kind: container $ctr of pod $i never ran" >&2; fail_pod "$kind" "$d"; }
  add_ms "$work/pod.$kind" $(($(now) - t0))
  # The client's own cost, untimed above: a round trip that asks the daemon nothing (Version).
  t1=$(now)
  "${ctl[@]}" version >/dev/null 2>"$work/err" || fail_pod "$kind version" "$d"
  add_ms "$work/client.$kind" $(($(now) - t1))
}

fail_pod() {
  echo "bench: failed: $1" >&2
  cat "$work/err" >&2
  tail -20 "$2/log" >&2
  exit 1
}

pods_bench() {
  local kind d i n=0 pid
  declare -A dpid idle busy helpers mon_rss mon_pss nhelpers
  rcrictl=$(dirname "$rcri_bin")/rcrictl
  need "$rcri_bin" "$rcrictl" /usr/bin/containerd /usr/bin/containerd-shim-runc-v2 \
    /usr/bin/docker-registry /usr/bin/skopeo /usr/lib/cni/bridge /usr/lib/cni/host-local \
    /usr/lib/cni/loopback
  start_registry
  push "$repo/target/e2e-image/oci:latest" bench/busybox:latest
  make_pause_image "$work/pause-oci"
  push "$work/pause-oci:latest" bench/pause:latest
  for kind in rcri containerd; do
    n=$((n + 1))
    d=$work/pods-$kind
    mkdir -p "$d/net.d"
    jq -n --arg subnet "10.77.$n.0/24" --arg ipam "$d/ipam" --arg br "bench-$kind" '{
      cniVersion: "0.4.0", name: "bench",
      plugins: [{type: "bridge", bridge: $br[:15], isGateway: true, ipMasq: false,
        ipam: {type: "host-local", ranges: [[{subnet: $subnet}]], routes: [{dst: "0.0.0.0/0"}],
          dataDir: $ipam}}]}' >"$d/net.d/10-bench.conflist"
    start_daemon "$kind" "$d"
    dpid[$kind]=$daemon_pid
    jq -n --arg image "$registry/bench/busybox:latest" '{metadata: {name: "sleep"},
      image: {image: $image}, command: ["/bin/sleep", "3600"], log_path: "sleep.log"}' >"$d/ctr.json"
    # Both have the images locally before anything is timed.
    "$rcrictl" -r "unix://$d/cri.sock" pull "$registry/bench/busybox:latest" >/dev/null
    if [ "$kind" = containerd ]; then
      "$rcrictl" -r "unix://$d/cri.sock" pull "$registry/bench/pause:latest" >/dev/null
    fi
  done
  sleep 2
  for kind in rcri containerd; do idle[$kind]=$(rss "${dpid[$kind]}"); done
  echo "measuring pod starts: $pods pods each, interleaved" >&2
  for i in $(seq 1 "$pods"); do
    for kind in rcri containerd; do pod_start "$kind" "$i"; done
  done
  sleep 2
  for kind in rcri containerd; do
    d=$work/pods-$kind
    busy[$kind]=$(rss "${dpid[$kind]}")
    per_pod_pids "$kind" "$d" >"$work/helpers.$kind"
    nhelpers[$kind]=$(wc -l <"$work/helpers.$kind")
    helpers[$kind]=$(for pid in $(cat "$work/helpers.$kind"); do rss "$pid"; done | sum)
    for pid in $(cat "$work/helpers.$kind"); do rss "$pid"; done >"$work/helper-rss.$kind"
    for pid in $(cat "$work/helpers.$kind"); do pss "$pid"; done >"$work/helper-pss.$kind"
    mon_rss[$kind]=$(stats "$work/helper-rss.$kind" | awk '{ printf "%.0f", $1 }')
    mon_pss[$kind]=$(stats "$work/helper-pss.$kind" | awk '{ printf "%.0f", $1 }')
  done
  for kind in rcri containerd; do
    d=$work/pods-$kind
    # shellcheck disable=SC2046
    "$rcrictl" -r "unix://$d/cri.sock" stopp $(cat "$d/pods") >/dev/null
    # shellcheck disable=SC2046
    "$rcrictl" -r "unix://$d/cri.sock" rmp $(cat "$d/pods") >/dev/null
    daemon_pid=${dpid[$kind]}
    stop_daemon
  done
  ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f×", a / b }'; }
  local r50 r99 c50 c99
  r50=$(pct 50 "$work/pod.rcri") r99=$(pct 99 "$work/pod.rcri")
  c50=$(pct 50 "$work/pod.containerd") c99=$(pct 99 "$work/pod.containerd")
  echo
  echo "## pods: rcri ($(basename "$(dirname "$rcri_bin")") build, on rcrun) vs containerd $(containerd --version | awk '{print $3}') (runc $(runc --version | awk 'NR == 1 { print $3 }')) — $(date -u +%Y-%m-%d), $(nproc) cores, $pods pods each"
  echo
  echo "| what | rcri | containerd | rcri/containerd |"
  echo "| --- | --- | --- | --- |"
  printf '| pod start p50 (ms): RunPodSandbox + CreateContainer + StartContainer until running | %s | %s | %s |\n' "$r50" "$c50" "$(ratio "$r50" "$c50")"
  printf '| pod start p99 (ms) | %s | %s | %s |\n' "$r99" "$c99" "$(ratio "$r99" "$c99")"
  local phase label a b
  for phase in runp:RunPodSandbox createc:CreateContainer startc:StartContainer \
    client:"the client alone (Version round trip)"; do
    label=${phase#*:}
    a=$(pct 50 "$work/${phase%%:*}.rcri") b=$(pct 50 "$work/${phase%%:*}.containerd")
    printf '| p50 of %s, one rcrictl run (ms) | %s | %s | %s |\n' "$label" "$a" "$b" "$(ratio "$a" "$b")"
  done
  printf '| daemon RSS idle, image pulled (KiB) | %s | %s | %s |\n' "${idle[rcri]}" "${idle[containerd]}" "$(ratio "${idle[rcri]}" "${idle[containerd]}")"
  printf '| daemon RSS with %s pods (KiB) | %s | %s | %s |\n' "$pods" "${busy[rcri]}" "${busy[containerd]}" "$(ratio "${busy[rcri]}" "${busy[containerd]}")"
  printf '| daemon + monitors (rcri: %s) / shims (containerd: %s), RSS sum with %s pods (KiB) | %s | %s | %s |\n' \
    "${nhelpers[rcri]}" "${nhelpers[containerd]}" "$pods" \
    "$((busy[rcri] + helpers[rcri]))" "$((busy[containerd] + helpers[containerd]))" \
    "$(ratio "$((busy[rcri] + helpers[rcri]))" "$((busy[containerd] + helpers[containerd]))")"
  printf '| one monitor / shim, VmRSS median (KiB) | %s | %s | %s |\n' "${mon_rss[rcri]}" "${mon_rss[containerd]}" "$(ratio "${mon_rss[rcri]}" "${mon_rss[containerd]}")"
  printf '| one monitor / shim, PSS median (KiB) | %s | %s | %s |\n' "${mon_pss[rcri]}" "${mon_pss[containerd]}" "$(ratio "${mon_pss[rcri]}" "${mon_pss[containerd]}")"
}

# ---- rcrun vs crun vs runc ------------------------------------------------------------------

run_bench() {
  echo "measuring: $runs runs each, interleaved" >&2
  for i in $(seq 1 "$runs"); do
    for rt in "${runtimes[@]}"; do
      root="$work/state/root-$rt"
      id="b$i"
      timed "$work/run.$rt" "${bin[$rt]}" --root "$root" run --bundle "$bundle" "$id"
      "${bin[$rt]}" --root "$root" delete --force "$id" >/dev/null 2>&1 || true
      id="p$i"
      timed "$work/create.$rt" "${bin[$rt]}" --root "$root" create --bundle "$bundle" "$id"
      timed "$work/start.$rt" "${bin[$rt]}" --root "$root" start "$id"
      # /bin/true exits at once; wait until the runtime says so before timing delete.
      for _ in $(seq 1 200); do
        st=$("${bin[$rt]}" --root "$root" state "$id" 2>/dev/null | jq -r .status || true)
        [ "$st" = stopped ] && break
        sleep 0.005
      done
      timed "$work/delete.$rt" "${bin[$rt]}" --root "$root" delete "$id"
    done
  done

  # The bursts are repeated, interleaved like the single runs: one burst of 20 is over in
  # ~100 ms, so a single sample is at the mercy of whatever else the machine does.
  for round in $(seq 1 5); do
    for rt in "${runtimes[@]}"; do
      root="$work/state/root-$rt"
      t0=$(now)
      for i in $(seq 1 100); do
        "${bin[$rt]}" --root "$root" run --bundle "$bundle" "s$round-$i" >/dev/null
      done
      add_ms "$work/seq100.$rt" $(($(now) - t0))
      t0=$(now)
      seq 1 20 | xargs -P 20 -I{} "${bin[$rt]}" --root "$root" run --bundle "$bundle" "c$round-{}" >/dev/null
      add_ms "$work/par20.$rt" $(($(now) - t0))
    done
  done
  for rt in "${runtimes[@]}"; do
    root="$work/state/root-$rt"
    for i in $(seq 1 5); do
      /usr/bin/time -f %M -o "$work/rss1" "${bin[$rt]}" --root "$root" run --bundle "$bundle" "m$i" >/dev/null
      cat "$work/rss1" >>"$work/rss.$rt"
    done
    stat -L -c %s "${bin[$rt]}" >"$work/size.$rt"
  done

  for i in $(seq 1 "$runs"); do
    timed "$work/floor" unshare --fork --pid --mount --uts --ipc --net true
  done

  echo
  local link=dynamic
  ldd "${bin[rcrun]}" 2>&1 | grep -q -e 'statically linked' -e 'not a dynamic executable' && link=static
  echo "## rcrun ($link) vs crun $(crun --version | awk 'NR == 1 { print $3 }') vs runc $(runc --version | awk 'NR == 1 { print $3 }') — $(date -u +%Y-%m-%d), $(nproc) cores, $runs runs each"
  echo
  echo "| what (ms, median (min–max)) | rcrun | crun | runc | rcrun/crun | rcrun/runc |"
  echo "| --- | --- | --- | --- | --- | --- |"
  row "run /bin/true" run
  row "create" create
  row "start" start
  row "delete" delete
  row "100 runs one after another (total, 5 rounds)" seq100
  row "20 runs at once (total, 5 rounds)" par20
  row "peak RSS (KiB)" rss
  row "binary size (bytes)" size
  read -r fmed flo fhi < <(stats "$work/floor")
  echo
  echo "Floor (\`unshare --fork --pid --mount --uts --ipc --net true\`): $fmed ms ($flo–$fhi)."
}

row() { # name file-prefix
  local name=$1 prefix=$2
  local base
  base=$(stats "$work/$prefix.rcrun" | cut -d' ' -f1)
  printf '| %s |' "$name"
  for rt in "${runtimes[@]}"; do
    read -r med lo hi < <(stats "$work/$prefix.$rt")
    # One sample (totals, sizes) has no range; whole numbers (KiB, bytes) need no decimals.
    if [ "$lo" = "$hi" ]; then printf ' %s |' "${med%.00}"; else printf ' %s (%s–%s) |' "${med%.00}" "${lo%.00}" "${hi%.00}"; fi
  done
  for rt in crun runc; do
    printf ' %s |' "$(awk -v a="$base" -v b="$(stats "$work/$prefix.$rt" | cut -d' ' -f1)" 'BEGIN { printf "%.2f×", a / b }')"
  done
  echo
}

want run && run_bench
want mem && mem_bench
want pull && pull_bench
want pods && pods_bench
exit 0
