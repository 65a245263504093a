#!/usr/bin/env bash
# Benchmarks rcrun side by side with runc and crun on one busybox bundle and prints a markdown
# table of medians, ranges and ratios. Runtimes are interleaved run by run so that machine
# drift hits all of them alike.
#
#   hack/bench.sh [--runs N] [--quick]
#
# Everything runs inside a private mount namespace in which the hybrid host's cgroup2
# "unified" mount is hidden: crun 1.8.1 refuses hybrid hosts otherwise. Nothing changes on the
# host. The rcri/containerd part of the benchmark comes with the CRI server.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export PATH="$HOME/.cargo/bin:$PATH"
runs=60
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) runs=$2; shift 2 ;;
    --quick) runs=10; shift ;;
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
  "$repo/hack/mkimage.sh" "$repo/target/e2e-image" >/dev/null
  exec unshare --mount --propagation private "$0" --inner --runs "$runs"
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
