#!/usr/bin/env bash
# Benchmarks rcrun side by side with runc and crun on one busybox bundle and prints a markdown
# table of medians, ranges and ratios. Runtimes are interleaved run by run so that machine
# drift hits all of them alike.
#
#   hack/bench.sh [--runs N] [--quick] [--pull-runs N] [--pull-only | --no-pull] [--rcri BIN]
#
# Everything runs inside a private mount namespace in which the hybrid host's cgroup2
# "unified" mount is hidden: crun 1.8.1 refuses hybrid hosts otherwise. Nothing changes on the
# host.
#
# Then image pulls: rcri against Debian's containerd (its CRI plugin), both driven by rcrictl's
# PullImage, pulling one multi-layer image from a docker-registry on 127.0.0.1, cold (each run
# starts the daemon on empty stores), interleaved, medians and the ratio rcri/containerd.
# `--rcri BIN` measures another rcri build (e.g. target/debug/rcri); the default is the
# release build.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export PATH="$HOME/.cargo/bin:$PATH"
runs=60
pull_runs=10
pull=yes
rcri_bin=$repo/target/release/rcri
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) runs=$2; shift 2 ;;
    --quick) runs=10; pull_runs=5; shift ;;
    --pull-runs) pull_runs=$2; shift 2 ;;
    --pull-only) pull=only; shift ;;
    --no-pull) pull=no; shift ;;
    --rcri) rcri_bin=$(realpath "$2"); shift 2 ;;
    --inner) shift; inner=1 ;;
    *) echo "bench: unknown argument $1" >&2; exit 2 ;;
  esac
done

if [ -z "${inner:-}" ]; then
  [ "$(id -u)" -eq 0 ] || { echo "bench: must run as root" >&2; exit 1; }
  "$repo/hack/setup.sh"
  missing=()
  for p in runc crun time; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  if [ ${#missing[@]} -gt 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
  (cd "$repo" && cargo build --release -p rcrun --quiet)
  if [ "$pull" != no ] && [ "$rcri_bin" = "$repo/target/release/rcri" ]; then
    (cd "$repo" && cargo build --release -p rcri --quiet)
  fi
  "$repo/hack/mkimage.sh" "$repo/target/e2e-image" >/dev/null
  pass=(--runs "$runs" --pull-runs "$pull_runs" --rcri "$rcri_bin")
  case $pull in only) pass+=(--pull-only) ;; no) pass+=(--no-pull) ;; esac
  exec unshare --mount --propagation private "$0" --inner "${pass[@]}"
fi

# Inside the private mount namespace from here on.
if mountpoint -q /sys/fs/cgroup/unified 2>/dev/null; then
  umount -l /sys/fs/cgroup/unified
fi

work=$(mktemp -d /tmp/rcrun-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT
bundle="$work/bundle"
mkdir -p "$bundle"
cp -a "$repo/target/e2e-image/rootfs" "$bundle/rootfs"
# crun 1.8.1 accepts only ociVersion 1.0.x.
jq '.ociVersion = "1.0.2" | .process.terminal = false | .process.args = ["/bin/true"]' \
  "$repo/target/e2e-image/config.json" >"$bundle/config.json"

declare -A bin=([rcrun]="$repo/target/release/rcrun" [crun]=/usr/bin/crun [runc]=/usr/sbin/runc)
runtimes=(rcrun crun runc)

now() { date +%s%N; }
ms() { awk -v ns="$1" 'BEGIN { printf "%.2f", ns / 1e6 }'; }

# One timed command; appends milliseconds to the given file. Fails loudly.
timed() {
  local out=$1; shift
  local t0 t1
  t0=$(now)
  "$@" >/dev/null 2>"$work/err" || { echo "bench: failed: $*" >&2; cat "$work/err" >&2; exit 1; }
  t1=$(now)
  ms $((t1 - t0)) >>"$out"
  echo >>"$out"
}

# median min max of a file of numbers
stats() { sort -n "$1" | awk '{ v[NR] = $1 } END { m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2; printf "%.2f %.2f %.2f\n", m, v[1], v[NR] }'; }

# ---- Image pulls: rcri vs containerd --------------------------------------------------------

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
    hex=$(sha256sum "$work/layer.tar.gz" | cut -d' ' -f1)
    size=$(stat -c %s "$work/layer.tar.gz")
    mv "$work/layer.tar.gz" "$out/blobs/sha256/$hex"
    layers="$layers,{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+gzip\",\"digest\":\"sha256:$hex\",\"size\":$size}"
  done
  rm -rf "$dir" "$work/layer.tar"
  jq -c --argjson d "[$diffs]" '.rootfs.diff_ids = $d | .history = []' "$src/blobs/sha256/$c" >"$work/cfg.json"
  hex=$(sha256sum "$work/cfg.json" | cut -d' ' -f1)
  size=$(stat -c %s "$work/cfg.json")
  mv "$work/cfg.json" "$out/blobs/sha256/$hex"
  printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[%s]}' \
    "$hex" "$size" "$layers" >"$work/manifest.json"
  hex=$(sha256sum "$work/manifest.json" | cut -d' ' -f1)
  size=$(stat -c %s "$work/manifest.json")
  mv "$work/manifest.json" "$out/blobs/sha256/$hex"
  printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"annotations":{"org.opencontainers.image.ref.name":"latest"}}]}\n' \
    "$hex" "$size" >"$out/index.json"
  echo '{"imageLayoutVersion":"1.0.0"}' >"$out/oci-layout"
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

# start_daemon rcri|containerd DIR: a daemon on empty stores under DIR; sets daemon_pid.
start_daemon() {
  local kind=$1 d=$2
  mkdir -p "$d"
  case $kind in
    rcri)
      printf '[registry]\ninsecure = ["%s"]\n' "$registry" >"$d/rcri.toml"
      "$rcri_bin" serve --config "$d/rcri.toml" --listen "$d/cri.sock" --root "$d/root" \
        --state "$d/state" --runtime-root "$d/rt" --cni-conf-dir "$d/net.d" \
        --log-level warn >"$d/log" 2>&1 &
      ;;
    containerd)
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
[plugins."io.containerd.grpc.v1.cri".cni]
  bin_dir = "$d/cni/bin"
  conf_dir = "$d/cni/net.d"
[plugins."io.containerd.grpc.v1.cri".registry.mirrors."$registry"]
  endpoint = ["http://$registry"]
TOML
      # A /run of its own: containerd keeps state there that must not meet the host's.
      unshare --mount --propagation private -- sh -c \
        'mount -t tmpfs -o mode=0755 tmpfs /run && mkdir -p /run/containerd && exec containerd --config "$1"' \
        sh "$d/config.toml" >"$d/log" 2>&1 &
      ;;
  esac
  daemon_pid=$!
  wait_cri "$d/cri.sock" "$daemon_pid" "$d/log"
}

stop_daemon() {
  kill "$daemon_pid" 2>/dev/null || true
  wait "$daemon_pid" 2>/dev/null || true
  daemon_pid=
}

pull_bench() {
  local layout=$work/bench-oci image i kind d
  rcrictl=$(dirname "$rcri_bin")/rcrictl
  for f in "$rcri_bin" "$rcrictl" /usr/bin/containerd /usr/bin/docker-registry /usr/bin/skopeo; do
    [ -x "$f" ] || { echo "bench: $f missing (hack/setup.sh, cargo build -p rcri)" >&2; exit 1; }
  done
  make_bench_image "$layout"
  local port
  while :; do
    port=$((20000 + RANDOM % 20000))
    ss -Hltn "sport = :$port" | grep -q . || break
  done
  registry=127.0.0.1:$port
  mkdir -p "$work/registry"
  printf 'version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: %s\n' \
    "$work/registry/storage" "$registry" >"$work/registry/config.yml"
  docker-registry serve "$work/registry/config.yml" >"$work/registry/log" 2>&1 &
  reg_pid=$!
  daemon_pid=
  trap 'stop_daemon; kill $reg_pid 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT
  image=$registry/bench/layers:latest
  for _ in $(seq 1 100); do
    skopeo --insecure-policy copy --dest-tls-verify=false "oci:$layout:latest" "docker://$image" \
      >/dev/null 2>"$work/err" && break
    sleep 0.1
  done
  grep -q . "$work/err" && { echo "bench: pushing the bench image failed:" >&2; cat "$work/err" >&2; exit 1; }
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

if [ "$pull" = only ]; then
  pull_bench
  exit 0
fi

echo "measuring: $runs runs each, interleaved" >&2
for i in $(seq 1 "$runs"); do
  for rt in "${runtimes[@]}"; do
    root="$work/root-$rt"
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

for rt in "${runtimes[@]}"; do
  root="$work/root-$rt"
  t0=$(now)
  for i in $(seq 1 100); do
    "${bin[$rt]}" --root "$root" run --bundle "$bundle" "s$i" >/dev/null
  done
  ms $(($(now) - t0)) >"$work/seq100.$rt"
  t0=$(now)
  seq 1 20 | xargs -P 20 -I{} "${bin[$rt]}" --root "$root" run --bundle "$bundle" "c{}" >/dev/null
  ms $(($(now) - t0)) >"$work/par20.$rt"
  for i in $(seq 1 5); do
    /usr/bin/time -f %M -o "$work/rss1" "${bin[$rt]}" --root "$root" run --bundle "$bundle" "m$i" >/dev/null
    cat "$work/rss1" >>"$work/rss.$rt"
  done
  stat -L -c %s "${bin[$rt]}" >"$work/size.$rt"
done

for i in $(seq 1 "$runs"); do
  timed "$work/floor" unshare --fork --pid --mount --uts --ipc --net true
done

row() { # name unit file-prefix
  local name=$1 prefix=$2
  local base
  base=$(stats "$work/$prefix.rcrun" | cut -d' ' -f1)
  printf '| %s |' "$name"
  for rt in "${runtimes[@]}"; do
    read -r med lo hi < <(stats "$work/$prefix.$rt")
    printf ' %s (%s–%s) |' "$med" "$lo" "$hi"
  done
  for rt in crun runc; do
    printf ' %s |' "$(awk -v a="$base" -v b="$(stats "$work/$prefix.$rt" | cut -d' ' -f1)" 'BEGIN { printf "%.2f×", a / b }')"
  done
  echo
}

echo
echo "## rcrun vs crun vs runc — $(date -u +%Y-%m-%d), $(nproc) cores, $runs runs each"
echo
echo "| what (ms, median (min–max)) | rcrun | crun | runc | rcrun/crun | rcrun/runc |"
echo "| --- | --- | --- | --- | --- | --- |"
row "run /bin/true" run
row "create" create
row "start" start
row "delete" delete
row "100 runs one after another (total)" seq100
row "20 runs at once (total)" par20
row "peak RSS (KiB)" rss
row "binary size (bytes)" size
read -r fmed flo fhi < <(stats "$work/floor")
echo
echo "Floor (\`unshare --fork --pid --mount --uts --ipc --net true\`): $fmed ms ($flo–$fhi)."

if [ "$pull" = yes ]; then
  pull_bench
fi
