#!/usr/bin/env bash
# Regenerates runtime/symbol-order.txt: the functions rcrun executes on its hot paths, which
# hack/build-release.sh has the linker place first and together (see there why).
#
#   hack/symbol-order.sh [--rounds N]          (as root)
#
# An rcrun linked with its symbol table (in target/symbol-order, so target/release is left
# alone) runs a workload on the test bundle — run; create, start, state, exec, list, kill,
# delete —
# 1. under valgrind's callgrind, which names every function executed, in rcrun and in the
#    container's init up to its exec. Valgrind models another CPU, so glibc picks other variants
#    of its string functions there: every variant of a listed one is listed too;
# 2. then, linked with that list, for real under `perf record -e page-faults -d`: a page fault
#    on an instruction fetch outside the listed code names a function the list lacks (the
#    binary's sealed re-exec and the rlimits, which cannot run under valgrind, are found so).
#    Those are added and the round repeated until none is new (at most N rounds, default 3).
# Run it after changing the hot paths or the toolchain; a stale list only costs memory, and
# names it has that the code no longer has are ignored by the linker.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export PATH="$HOME/.cargo/bin:$PATH"
rounds=3
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) rounds=$2; shift 2 ;;
    -h | --help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "symbol-order: unknown argument $1" >&2; exit 2 ;;
  esac
done
[ "$(id -u)" -eq 0 ] || { echo "symbol-order: must run as root (it runs containers)" >&2; exit 1; }

"$repo/hack/setup.sh"
missing=()
for p in valgrind linux-perf python3; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
"$repo/hack/mkimage.sh" "$repo/target/e2e-image" >/dev/null

out=$repo/runtime/symbol-order.txt
export CARGO_TARGET_DIR=$repo/target/symbol-order
work=$(mktemp -d /tmp/rcrun-symbol-order.XXXXXX)
root=$work/state
# Containers' cgroups go under this, below our own cgroup (a relative cgroupsPath).
tag=rcrun-symbol-order-$$

cleanup() {
  set +e
  local id ctrl own dir
  for id in "$root"/*; do
    [ -e "$id" ] && "$work/rcrun" --root "$root" delete --force "${id##*/}" >/dev/null 2>&1
  done
  while IFS=: read -r _ ctrl own; do
    dir=/sys/fs/cgroup/${ctrl#name=}${own%/}/$tag
    [ -n "$ctrl" ] && [ -d "$dir" ] && find "$dir" -depth -type d -exec rmdir {} \; 2>/dev/null
  done </proc/self/cgroup
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Bundles: /bin/true to `run`, a sleeper to create, exec into and kill. `rlimits` only in the
# real runs: under valgrind, which keeps file descriptors of its own, setting RLIMIT_NOFILE fails.
bundle() { # dir args-json valgrind?
  mkdir -p "$1"
  cp -a "$repo/target/e2e-image/rootfs" "$1/rootfs"
  jq --argjson args "$2" --arg cg "$tag/$(basename "$1")" --argjson vg "$3" \
    '.process.args = $args | .process.terminal = false | .linux.cgroupsPath = $cg
     | if $vg then del(.process.rlimits) else . end' \
    "$repo/target/e2e-image/config.json" >"$1/config.json"
}
for vg in true false; do
  bundle "$work/$vg-true" '["/bin/true"]' "$vg"
  bundle "$work/$vg-sleep" '["/bin/sleep", "60"]' "$vg"
done

# workload VALGRIND? [PREFIX...]: the commands containerd and rcri use, each run with PREFIX.
workload() {
  local vg=$1 rt=("${@:2}" "$work/rcrun" --root "$root")
  "${rt[@]}" run --bundle "$work/$vg-true" w-run >/dev/null
  "${rt[@]}" create --bundle "$work/$vg-sleep" w-ctr
  "${rt[@]}" start w-ctr
  "${rt[@]}" state w-ctr >/dev/null
  "${rt[@]}" exec w-ctr /bin/true
  "${rt[@]}" list >/dev/null
  "${rt[@]}" kill w-ctr KILL
  for _ in $(seq 1 200); do
    "$work/rcrun" --root "$root" state w-ctr | grep -q '"stopped"' && break
    sleep 0.05
  done
  "${rt[@]}" delete w-ctr
}

build() { # order-file
  "$repo/hack/build-release.sh" --quiet --symbols --order "$1" -p rcrun
  # A copy on this (writable) file system: rcrun seals itself by re-executing, as it would
  # installed.
  cp "$CARGO_TARGET_DIR/release/rcrun" "$work/rcrun"
}

# Every function named in callgrind's profiles ("fn=(id) name", "cfn=(id) name").
callgrind_functions() {
  sed -n -E 's/^c?fn=\([0-9]+\) (.+)$/\1/p' "$work"/cg.* | grep -v -e '^0x' -e '^(below main)' | sort -u
}

# Adds every variant of the glibc string functions listed ("__memmove_avx_unaligned_erms" brings
# "__memmove_evex_unaligned_erms", ...): another CPU picks another one at start.
with_variants() { # list binary
  python3 - "$1" "$2" <<'PY'
import re, subprocess, sys
names = set(open(sys.argv[1]).read().split())
syms = subprocess.run(["nm", "--defined-only", sys.argv[2]], capture_output=True, text=True,
                      check=True).stdout.split("\n")
text = [l.split()[2] for l in syms if len(l.split()) == 3 and l.split()[1] in "tTwWiI"]
variant = re.compile(r"^(__\w+?)_(sse2|ssse3|sse4_1|sse4_2|avx|avx2|evex|avx512\w*)(_|$)")
bases = {m.group(1) for n in names if (m := variant.match(n))}
for n in text:
    m = variant.match(n)
    if m and m.group(1) in bases:
        names.add(n)
print("\n".join(sorted(names)))
PY
}

# Functions of the binary in which an instruction fetch faulted, from `perf script` of a
# page-fault recording (fields pid, addr, ip; mmap and task events shown).
faulting_functions() { # perf-script-output binary
  python3 - "$1" "$2" <<'PY'
import bisect, os, re, subprocess, sys
script, binary = sys.argv[1], sys.argv[2]
phdrs = subprocess.run(["readelf", "-lW", binary], capture_output=True, text=True, check=True).stdout
# The executable LOAD segment: file offset -> virtual address.
for l in phdrs.split("\n"):
    f = l.split()
    if f and f[0] == "LOAD" and "E" in f[6:-1]:
        delta = int(f[2], 16) - int(f[1], 16)
syms = []
for l in subprocess.run(["nm", "-S", "-n", "--defined-only", binary], capture_output=True,
                        text=True, check=True).stdout.split("\n"):
    f = l.split()
    if len(f) == 4 and f[2] in "tTwWiI":
        syms.append((int(f[0], 16), int(f[1], 16), f[3]))
starts = [s[0] for s in syms]
maps = {}  # pid -> [(start, end, pgoff)] of the binary's executable mappings
# The binary's executable mappings, known by inode: the sealed re-exec maps it through a
# detached mount whose path reads "/".
ino = os.stat(binary).st_ino
mmap = re.compile(r"PERF_RECORD_MMAP2 (\d+)/\d+: \[0x([0-9a-f]+)\(0x([0-9a-f]+)\) @ 0x([0-9a-f]+) [0-9a-f]+:[0-9a-f]+ (\d+) \d+\]: r-xp ")
fork = re.compile(r"PERF_RECORD_FORK\((\d+):\d+\):\((\d+):\d+\)")
execd = re.compile(r"^\s*(\d+) PERF_RECORD_COMM exec:")
sample = re.compile(r"^\s*(\d+)\s+([0-9a-f]+)\s+([0-9a-f]+)\s*$")
found = set()
for line in open(script):
    if m := mmap.search(line):
        if int(m.group(5)) == ino:
            s, n, off = (int(m.group(i), 16) for i in (2, 3, 4))
            maps.setdefault(int(m.group(1)), []).append((s, s + n, off))
    elif m := fork.search(line):
        maps[int(m.group(1))] = list(maps.get(int(m.group(2)), []))
    elif m := execd.match(line):
        maps[int(m.group(1))] = []
    elif m := sample.match(line):
        pid, addr, ip = int(m.group(1)), int(m.group(2), 16), int(m.group(3), 16)
        if addr != ip:
            continue
        for s, e, off in maps.get(pid, []):
            if s <= addr < e:
                va = addr - s + off + delta
                i = bisect.bisect_right(starts, va) - 1
                if i >= 0 and va < syms[i][0] + max(syms[i][1], 1):
                    found.add(syms[i][2])
print("\n".join(sorted(found)))
PY
}

echo "symbol-order: building rcrun with symbols (target/symbol-order)" >&2
# The first build takes the current list, if any; it changes only where code is placed.
[ -f "$out" ] || : >"$out"
build "$out"
echo "symbol-order: workload under callgrind" >&2
# The seal re-executes from a mount valgrind cannot make (fsopen): skipped here, found below.
_RCRUN_SEALED=1 workload true valgrind -q --tool=callgrind --trace-children=yes \
  --trace-children-skip='/bin/*' --demangle=no --callgrind-out-file="$work/cg.%p" 2>"$work/valgrind.log" ||
  { cat "$work/valgrind.log" >&2; exit 1; }
callgrind_functions >"$work/order.txt"
with_variants "$work/order.txt" "$work/rcrun" >"$work/order.next"
mv "$work/order.next" "$work/order.txt"
echo "symbol-order: $(wc -l <"$work/order.txt") functions from callgrind" >&2

for round in $(seq 1 "$rounds"); do
  build "$work/order.txt"
  perf record -q -e page-faults -c 1 -d -o "$work/pf.data" -- \
    bash -c "$(declare -f workload); work=$work root=$root; workload false" >/dev/null 2>"$work/perf.log" ||
    { cat "$work/perf.log" >&2; exit 1; }
  perf script -i "$work/pf.data" --show-mmap-events --show-task-events -F pid,addr,ip \
    >"$work/pf.txt" 2>/dev/null
  faulting_functions "$work/pf.txt" "$work/rcrun" | sort >"$work/faulting.txt"
  new=$(comm -13 "$work/order.txt" "$work/faulting.txt")
  echo "symbol-order: round $round: $(echo -n "$new" | grep -c . || true) functions faulted outside the list" >&2
  [ -n "$new" ] || break
  sort -u "$work/order.txt" - <<<"$new" >"$work/order.next"
  mv "$work/order.next" "$work/order.txt"
done

{
  echo "# Functions rcrun runs on its hot paths, placed first and together by hack/build-release.sh."
  echo "# Generated by hack/symbol-order.sh ($(rustc --version)); do not edit by hand."
  cat "$work/order.txt"
} >"$out"
echo "symbol-order: wrote $(grep -vc '^#' "$out") names to ${out#"$repo"/}" >&2
